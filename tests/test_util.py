"""Parquet I/O, schema enforcement, logs and catalog derivations (spec §5, §15)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iblnm import util
from iblnm.validation import LOG_COLUMNS, InvalidSessionType, InvalidTargetNM, make_log_entry


def test_enforce_schema():
    schema = {'eid': (str, None), 'brain_region': (list, []), 'hemisphere': (list, [])}
    df = pd.DataFrame(
        {
            'eid': ['a', 'b', 'c', 'd'],
            'brain_region': [['VTA'], np.nan, np.array(['DR', 'LC']), None],
            'extra': [1, 2, 3, 4],
        }
    )
    out = util.enforce_schema(df, schema)
    assert out['brain_region'].tolist() == [['VTA'], [], ['DR', 'LC'], []]
    assert out['hemisphere'].tolist() == [[], [], [], []]
    out.loc[0, 'hemisphere'].append('x')
    assert out.loc[1, 'hemisphere'] == []  # no shared list objects
    assert 'extra' in out and df['brain_region'].iloc[1] is np.nan  # input untouched
    missing_scalar = util.enforce_schema(pd.DataFrame({'x': [1]}), {'lab': (str, None)})
    assert missing_scalar['lab'].iloc[0] is None


def test_df2pqt_roundtrip_and_atomic(tmp_path):
    df = pd.DataFrame({'eid': ['a', 'b'], 'lists': [['x'], []], 'mixed': [1, 'two']})
    path = util.df2pqt(df, tmp_path / 'out.pqt')
    back = pd.read_parquet(path)
    assert back['mixed'].tolist() == ['1', 'two']
    assert [list(v) for v in back['lists']] == [['x'], []]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.pqt']  # no temp file left

    def boom(tmp):
        tmp.write_text('partial')
        raise RuntimeError('killed')

    with pytest.raises(RuntimeError):
        util.atomic_write(tmp_path / 'out.pqt', boom)
    assert pd.read_parquet(path)['eid'].tolist() == ['a', 'b']  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.pqt']


def test_csv_and_figure_writers_are_atomic(tmp_path, monkeypatch):
    """The one CSV writer and the one figure saver: complete files or none, no temp left."""
    import matplotlib.pyplot as plt

    from iblnm import vis

    df = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})
    path = util.write_csv(df, tmp_path / 'sub' / 't.csv')
    pd.testing.assert_frame_equal(pd.read_csv(path), df)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title('a title')
    paths = vis.save_figure_formats(fig, tmp_path / 'figs' / 'pL0.5_curve')  # a dot in the stem
    assert [p.name for p in paths] == ['pL0.5_curve.svg', 'pL0.5_curve.png']
    assert 'a title' in paths[0].read_text() and plt.imread(paths[1]).ndim == 3
    assert not plt.fignum_exists(fig.number)  # closed
    assert vis.save_figure_formats(None, tmp_path / 'none') == []

    def fail(*args, **kwargs):  # writes part of the file, then the disk is full
        target = next(a for a in args if isinstance(a, str | os.PathLike))
        Path(target).write_bytes(b'part')
        raise OSError('disk full')

    fig, _ = plt.subplots()
    monkeypatch.setattr(fig, 'savefig', fail)
    with pytest.raises(OSError):
        vis.save_figure_formats(fig, tmp_path / 'figs' / 'broken')
    with pytest.raises(OSError):
        monkeypatch.setattr(pd.DataFrame, 'to_csv', lambda self, path, **kw: fail(path))
        util.write_csv(df, tmp_path / 'sub' / 'broken.csv')
    names = sorted(p.name for p in tmp_path.rglob('*') if p.is_file())
    assert names == ['pL0.5_curve.png', 'pL0.5_curve.svg', 't.csv']
    plt.close('all')


def test_concat_and_collect_logs(tmp_path):
    e1 = make_log_entry('a', error_type='InvalidStrain', error_message='m')
    e2 = make_log_entry('a', error_type='InvalidLine', error_message='m')
    e3 = {**make_log_entry('b', error_type='X', error_message='m'), 'extra': 1}
    log = util.concat_logs([[e1, e2], None, pd.DataFrame([e3]), pd.DataFrame([e1])])
    assert list(log.columns) == LOG_COLUMNS and len(log) == 4  # duplicates kept
    assert len(util.deduplicate_log(log)) == 3
    assert list(util.concat_logs([]).columns) == LOG_COLUMNS
    util.write_log([e1, e2], tmp_path / 'log.pqt')
    sessions = pd.DataFrame({'eid': ['a', 'b', 'c']})
    out = util.collect_session_errors(
        sessions, [tmp_path / 'log.pqt', pd.DataFrame([e3]), tmp_path / 'missing.pqt']
    )
    assert out['logged_errors'].tolist() == [['InvalidStrain', 'InvalidLine'], ['X'], []]
    util.write_log([], tmp_path / 'empty.pqt')
    assert list(pd.read_parquet(tmp_path / 'empty.pqt').columns) == LOG_COLUMNS


def test_dataset_flags():
    s = pd.Series({'datasets': ['alf/task_00/_ibl_trials.table.pqt']})
    assert util.has_dataset(s, 'alf/task_00/_ibl_trials.table.pqt')
    assert not util.has_dataset(pd.Series({'datasets': 'alf/x'}), 'alf/x')
    assert not util.has_dataset(pd.Series({'datasets': []}), 'alf/x')
    assert util.has_dataset(pd.Series({'datasets': np.array(['alf/x'])}), 'alf/x')
    df = util.add_dataset_flags(
        pd.DataFrame(
            {
                'datasets': [
                    ['alf/task_00/_ibl_trials.table.pqt', 'alf/photometry/photometry.signal.pqt'],
                    ['raw_photometry_data/_neurophotometrics_fpData.raw.pqt'],
                ]
            }
        )
    )
    assert df['has_extracted_task'].tolist() == [True, False]
    assert df['has_extracted_photometry_signal'].tolist() == [True, False]
    assert df['has_raw_photometry_signals'].tolist() == [False, True]


@pytest.mark.parametrize(
    'protocol,expected',
    [
        ('_iblrig_tasks_biasedChoiceWorld6.4.2', 'biased'),
        ('_iblrig_tasks_trainingChoiceWorld6.4.2', 'training'),
        ('_iblrig_tasks_ephysChoiceWorld6.4.2', 'ephys'),
        ('_iblrig_tasks_habituationChoiceWorld6.4.2', 'habituation'),
        ('Histology', 'histology'),
        ('_iblrig_tasks_biasedChoiceWorld_ephyssessions7.0.4', 'biased'),
        ('_iblrig_tasks_neuroModulatorChoiceWorld8.1', 'neuromodulator'),
    ],
)
def test_get_session_type(protocol, expected):
    s = util.get_session_type(pd.Series({'eid': 'e', 'task_protocol': protocol}))
    assert s['session_type'] == expected


@pytest.mark.parametrize(
    'protocol,message',
    [
        ('_iblrig_tasks_biasedChoiceWorld_RPE6.4', 'red flags'),
        ('_iblrig_tasks_biasedChoiceWorld_DELAY6.4', 'red flags'),
        ('_iblrig_tasks_trainingPhaseChoiceWorld8.0', 'does not match'),
        ('something_else', 'does not match'),
        (None, 'does not match'),
    ],
)
def test_get_session_type_raises(protocol, message):
    with pytest.raises(InvalidSessionType, match=message):
        util.get_session_type(pd.Series({'eid': 'e', 'task_protocol': protocol}))


def test_get_target_nm_keeps_lists_aligned():
    s = util.get_targetNM(pd.Series({'brain_region': ['VTA', 'SNc'], 'NM': 'DA'}))
    assert s['target_NM'] == ['VTA-DA', 'SNc-DA']
    bad = pd.Series({'eid': 'e', 'brain_region': ['VTA', 'DR'], 'NM': 'DA'})
    with pytest.raises(InvalidTargetNM, match='DR-DA'):
        util.get_targetNM(bad)
    log = []
    out = util.get_targetNM(bad, exlog=log)
    assert out['target_NM'] == ['VTA-DA', 'DR-DA'] and len(out['target_NM']) == 2


def test_session_length_and_day_numbers():
    s = util.get_session_length(
        pd.Series({'start_time': '2024-01-01T10:00:00', 'end_time': '2024-01-01T11:00:30'})
    )
    assert s['session_length'] == 3630.0
    with pytest.raises(Exception, match='different days'):
        util.get_session_length(
            pd.Series({'start_time': '2024-01-01T23:00:00', 'end_time': '2024-01-02T00:30:00'})
        )
    df = pd.DataFrame(
        {
            'subject': ['m', 'm', 'm', 'k'],
            'start_time': [
                '2024-01-03T10:00:00',
                '2024-01-01T09:00:00',
                '2024-01-03T15:00:00',
                '2024-02-01T09:00:00',
            ],
        }
    )
    out = util.add_day_and_session_numbers(df)
    assert out['day_n'].tolist() == [2, 0, 2, 0]
    assert out['session_n'].tolist() == [2.0, 1.0, 3.0, 1.0]


def test_validate_parallel_lists():
    df = pd.DataFrame(
        {
            'brain_region': [['VTA'], ['VTA', 'DR']],
            'hemisphere': [['l'], ['l']],
            'target_NM': [['VTA-DA'], ['VTA-DA', 'DR-5HT']],
        }
    )
    out = util.validate_parallel_lists(df, verbose=False)
    assert len(out) == 1


def test_resolve_duplicate_group():
    group = pd.DataFrame(
        {
            'eid': ['a', 'b', 'c'],
            'subject': ['m'] * 3,
            'logged_errors': [['InsufficientTrials'], [], []],
        }
    )
    log = []
    out = util.resolve_duplicate_group(group, exlog=log)
    assert out['eid'] == 'b' and log[0]['error_type'] == 'TrueDuplicateSession'
    one_good = group.iloc[:2]
    assert util.resolve_duplicate_group(one_good)['eid'] == 'b'
    none_good = group.iloc[:1]
    assert util.resolve_duplicate_group(none_good)['eid'] == 'a'


def test_session_threads_reads_the_environment_at_each_call(monkeypatch):
    monkeypatch.delenv(util.SESSION_THREADS_ENV, raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    assert util.session_threads() == cores
    monkeypatch.setenv(util.SESSION_THREADS_ENV, '3')
    assert util.session_threads() == 3
    for bad in ('0', '-1', 'two'):
        monkeypatch.setenv(util.SESSION_THREADS_ENV, bad)
        with pytest.raises(ValueError, match=util.SESSION_THREADS_ENV):
            util.session_threads()


def test_thread_map_keeps_item_order_and_uses_threads():
    import threading
    import time

    def work(x):
        time.sleep(0.02 * (5 - x))  # the first items finish last
        return x * 10, threading.current_thread().name

    out = util.thread_map(work, range(5), threads=2)
    assert [v for v, _ in out] == [0, 10, 20, 30, 40]
    assert all(name.startswith('iblnm-session') for _, name in out)
    serial = util.thread_map(work, range(3), threads=1)
    assert {name for _, name in serial} == {threading.current_thread().name}
    with pytest.raises(ZeroDivisionError):
        util.thread_map(lambda x: 1 / x, [1, 0, 2], threads=2)


def test_thread_map_puts_back_the_warning_filters_that_overlapping_threads_leave():
    import time
    import warnings

    def silenced(delay):  # thread 0: enters at 0, leaves at 0.1; thread 1: 0.05 to 0.15
        time.sleep(delay)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            time.sleep(0.1)

    before = list(warnings.filters)
    util.thread_map(silenced, [0.0, 0.05], threads=2)
    assert warnings.filters == before  # without the fix: ('ignore', …) first, for good


def _two_fiber_session(seed=0):
    """The example session with a second fiber (another simulated recording, an artefact-laden
    one) so that per-fiber work has two items to share out."""
    from iblnm.simulate import example_session

    ps = example_session(seed=seed)
    other = example_session(seed=seed + 1, quality='large_artefacts')
    for band, frame in ps.photometry.items():
        values = other.photometry[band]['VTA'].to_numpy()
        n = min(len(frame), len(values))
        ps.photometry[band] = frame.iloc[:n].assign(NAc=values[:n])
    return ps


def test_session_is_the_same_on_one_and_two_threads(monkeypatch):
    outputs = []
    for threads in ('1', '2'):
        monkeypatch.setenv(util.SESSION_THREADS_ENV, threads)
        ps = _two_fiber_session()
        assert ps.regions == ['VTA', 'NAc']
        ps.run_sliding_qc()
        ps.detect_artefacts()
        ps.preprocess()
        outputs.append((ps.qc, ps.segments, {k: v.copy() for k, v in ps.photometry.items()}))
    (qc1, seg1, ph1), (qc2, seg2, ph2) = outputs
    pd.testing.assert_frame_equal(qc1, qc2, check_exact=True)
    pd.testing.assert_frame_equal(seg1, seg2, check_exact=True)
    assert ph1.keys() == ph2.keys()
    for band in ph1:
        pd.testing.assert_frame_equal(ph1[band], ph2[band], check_exact=True)
    # the fibers differ (the test would not see fibers swapped between threads otherwise)
    assert not np.allclose(ph1['GCaMP_preprocessed']['VTA'], ph1['GCaMP_preprocessed']['NAc'])


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {info['num_threads'] for info in threadpool_info() if info['user_api'] == 'blas'}


def test_native_threads_limits_the_pools_and_restores_them():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        if _blas_threads() != {2}:
            pytest.skip('no BLAS pool of this process can run 2 threads')
        with util.native_threads(1):
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}
        with util.native_threads(None):
            assert _blas_threads() == {2}


def test_native_threads_overlapping_in_two_threads_restore_the_pools_last():
    """Thread A opens, B opens, A closes, B closes: BLAS stays at 1 until B closes, then 2.

    (One ``threadpool_limits`` per thread left the pools at 1: B saved A's limit as the
    original and restored it last.)"""
    import threading

    from threadpoolctl import threadpool_limits

    steps = {name: threading.Event() for name in ('a_in', 'b_in', 'a_out', 'b_check')}
    seen = {}

    def a():
        with util.native_threads(1):
            steps['a_in'].set()
            steps['b_in'].wait(5)
        steps['a_out'].set()

    def b():
        steps['a_in'].wait(5)
        with util.native_threads(1):
            steps['b_in'].set()
            steps['a_out'].wait(5)
            seen['after_a_closed'] = _blas_threads()

    with threadpool_limits(2):
        if _blas_threads() != {2}:
            pytest.skip('no BLAS pool of this process can run 2 threads')
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert seen['after_a_closed'] == {1}
        assert _blas_threads() == {2}
        with util.native_threads(1), util.native_threads(3):  # the smallest open limit
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_native_threads_restores_each_threads_openmp_limit():
    """OpenMP limits are per thread: each thread gets its own back, in any closing order."""
    import threading

    pytest.importorskip('sklearn')  # loads an OpenMP runtime (libgomp)
    from threadpoolctl import threadpool_info, threadpool_limits

    def omp():
        return {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'openmp'}

    a_in, a_out, b_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with threadpool_limits(2, user_api='openmp'):
            seen['a_before'] = omp()
            with util.native_threads(1):
                seen['a_inside'] = omp()
                a_in.set()
                b_out.wait(5)  # B opened while A's block is open (below), then A closes first
            a_out.set()
            seen['a_after'] = omp()

    def b():
        with threadpool_limits(2, user_api='openmp'):
            a_in.wait(5)
            with util.native_threads(1):
                b_out.set()
                a_out.wait(5)
            seen['b_after'] = omp()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    if seen.get('a_before') != {2}:
        pytest.skip('no OpenMP pool of this process can run 2 threads')
    assert seen['a_inside'] == {1}
    assert seen['a_after'] == {2} and seen['b_after'] == {2}


def test_native_threads_failing_to_enter_leaves_no_block_open(monkeypatch):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        if _blas_threads() != {2}:
            pytest.skip('no BLAS pool of this process can run 2 threads')
        real, calls = util._apply_shared_limits, []

        def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise OSError('the pool could not be set')
            real()

        monkeypatch.setattr(util, '_apply_shared_limits', flaky)
        with pytest.raises(OSError), util.native_threads(1):
            pass
        assert util._native_open == [] and _blas_threads() == {2}
        with util.native_threads(1):
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}
    for bad in (0, 1.5, True, {'blas': 1}):
        with pytest.raises(ValueError, match='number of threads'), util.native_threads(bad):
            pass


def test_event_kernels_are_fitted_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_limits

    from iblnm.signal import event_kernels as ek
    from iblnm.simulate import example_session

    ps = example_session()
    ps.run_sliding_qc()
    ps.preprocess()
    seen, fit = [], ek.fit_event_kernels

    def recording_fit(*args, **kwargs):
        seen.append(_blas_threads())
        return fit(*args, **kwargs)

    monkeypatch.setattr(ek, 'fit_event_kernels', recording_fit)
    with threadpool_limits(2):
        if _blas_threads() != {2}:
            pytest.skip('no BLAS pool of this process can run 2 threads')
        kernels = ps.fit_event_kernels()
        assert _blas_threads() == {2}  # restored
    assert list(kernels) == ['VTA'] and seen == [{1}]
