"""The executor and job scheduling shared by the per-session stages."""

import os

import numpy as np
import pytest

from iblnm.pipeline.executor import map_sessions
from iblnm.pipeline.stage import SessionOutcome, longest_first, run_jobs


def _blas_threads_and_pid(_item):
    """(largest BLAS/OpenMP pool size, pid) of the process running the item."""
    from threadpoolctl import threadpool_info

    return max((pool['num_threads'] for pool in threadpool_info()), default=1), os.getpid()


def _outcome(job):
    return SessionOutcome(job[0]['eid'], rows=[{'eid': job[0]['eid']}])


def _job(eid, length):
    return ({'eid': eid, 'session_length': length}, None, {})


def test_local_workers_use_one_blas_thread_each():
    results = list(map_sessions(_blas_threads_and_pid, range(4), workers=2, progress=False))
    threads, pids = zip(*results)
    assert os.getpid() not in pids  # the items ran in worker processes
    assert set(threads) == {1}


def test_serial_map_runs_in_this_process_in_order():
    assert list(map_sessions(lambda x: x * 2, [3, 1, 2], workers=1, progress=False)) == [6, 2, 4]


def test_the_serial_map_uses_one_blas_thread_and_restores_the_pools():
    """As in the workers (small per-session problems; serial and parallel alike), only while
    the map runs. Skipped where this process has a single thread anyway."""
    before, pid = _blas_threads_and_pid(None)
    if before == 1:
        pytest.skip('the BLAS pools of this process already have one thread')
    results = list(map_sessions(_blas_threads_and_pid, range(2), workers=1, progress=False))
    assert results == [(1, pid), (1, pid)]
    assert _blas_threads_and_pid(None) == (before, pid)


def test_longest_sessions_are_scheduled_first():
    jobs = [
        _job('a', 600.0),
        _job('b', np.nan),
        _job('c', 4000.0),
        _job('d', None),
        _job('e', 1800.0),
    ]
    assert [job[0]['eid'] for job in longest_first(jobs)] == ['c', 'e', 'a', 'b', 'd']
    no_length = [({'eid': 'x'}, None, {}), ({'eid': 'y'}, None, {})]
    assert [job[0]['eid'] for job in longest_first(no_length)] == ['x', 'y']


def test_outcomes_come_back_in_job_order_whatever_the_schedule():
    jobs = [_job(eid, length) for eid, length in zip('abcdef', [10, 60, 30, 50, 20, 40])]
    for workers in (1, 2):
        outcomes = run_jobs(_outcome, jobs, workers=workers, progress=False)
        assert [o.eid for o in outcomes] == list('abcdef')


def test_task_stage_schedules_block_sessions_first():
    from iblnm.pipeline.task import expected_cost

    jobs = [
        ({'eid': 'train', 'session_type': 'training', 'session_length': 5000.0}, None, {}),
        ({'eid': 'biased', 'session_type': 'biased', 'session_length': 2000.0}, None, {}),
    ]
    assert [job[0]['eid'] for job in longest_first(jobs)] == ['train', 'biased']
    assert [job[0]['eid'] for job in longest_first(jobs, expected_cost)] == ['biased', 'train']


def _dies_on_b(job):
    if job[0]['eid'] == 'b':
        os._exit(139)  # like a segfault inside a native library
    return _outcome(job)


def test_a_dead_worker_stops_the_run_with_unexpected_errors():
    jobs = [_job(eid, length) for eid, length in zip('abcd', [40, 30, 20, 10])]
    outcomes = run_jobs(_dies_on_b, jobs, workers=2, progress=False)
    assert sorted(o.eid for o in outcomes) == list('abcd')  # every session accounted for
    lost = [o for o in outcomes if o.fatal]
    assert lost and all(o.fatal == 'UnexpectedError' for o in lost)
    assert 'b' in {o.eid for o in lost}
    assert 'BrokenProcessPool' in lost[0].errors[0]['error_message']


def test_transient_failures_are_retried_with_backoff(monkeypatch):
    from iblnm import config
    from iblnm.pipeline import stage

    calls, sleeps = [], []
    monkeypatch.setattr(stage.time, 'sleep', sleeps.append)

    def flaky(job):
        calls.append(job[0]['eid'])
        if len(calls) < 3:
            return stage.failed(job[0]['eid'], ConnectionError('reset by peer'))
        return _outcome(job)

    outcome = stage.with_retries(flaky, _job('a', 1.0), attempts=3, backoff=0.5)
    assert outcome.fatal is None and outcome.attempts == 3 and sleeps == [0.5, 1.0]
    calls.clear()
    always = stage.with_retries(
        lambda job: stage.failed('a', TimeoutError()),
        _job('a', 1.0),
        attempts=config.RETRY_ATTEMPTS,
        backoff=0,
    )
    assert always.fatal == 'RequestFailed' and always.attempts == config.RETRY_ATTEMPTS
    bug = stage.with_retries(lambda job: stage.failed('a', KeyError('x')), _job('a', 1.0))
    assert bug.fatal == 'UnexpectedError' and bug.attempts == 1  # bugs are not retried


def test_run_stage_resumes_orders_finishes_and_writes(monkeypatch, tmp_path):
    """The one stage sequence: sessions found done are not run but enter the tables, in
    catalog order with the catalog's log first; ``finish`` shapes the table; a failed
    write is reported, not raised."""
    import pandas as pd

    from iblnm import util
    from iblnm.pipeline import stage

    selected = pd.DataFrame({'eid': list('dcba'), 'session_length': [10.0, 40.0, 20.0, 30.0]})
    catalog_log = [{'eid': 'x', 'error_type': 'InvalidSessionType', 'error_message': 'm'}]
    monkeypatch.setattr(stage, 'stage_sessions', lambda *a, **k: (None, selected, catalog_log))
    monkeypatch.setattr(
        stage,
        'make_jobs',
        lambda todo, one, options: [(row.to_dict(), None, options) for _, row in todo.iterrows()],
    )
    ran, cleaned = [], []
    monkeypatch.setattr(stage.util, 'remove_stale_temporaries', cleaned.append)

    def fn(job):
        ran.append(job[0]['eid'])
        assert job[2] == {'k': 1}
        return SessionOutcome(job[0]['eid'], rows=[{'eid': job[0]['eid'], 'how': 'run'}])

    def resume(sel, one):
        return {'c': SessionOutcome('c', rows=[{'eid': 'c', 'how': 'resumed'}])}

    def finish(table):
        return table[['how', 'eid']]

    outputs = [
        (util.df2pqt, 'table', tmp_path / 't.pqt'),
        (util.write_log, 'log', tmp_path / 'l.pqt'),
    ]
    result = stage.run_stage(
        'demo',
        fn,
        outputs=outputs,
        options={'k': 1},
        temporaries=tmp_path,
        resume=resume,
        finish=finish,
    )
    assert sorted(ran) == ['a', 'b', 'd'] and cleaned == [tmp_path]
    assert list(result.table['eid']) == list('dcba')  # catalog order, the resumed one included
    assert list(result.table.columns) == ['how', 'eid']
    assert result.table.set_index('eid').loc['c', 'how'] == 'resumed'
    assert result.n_selected == 4 and result.n_skipped == 1 and len(result.outcomes) == 3
    assert list(result.log['eid'])[0] == 'x' and result.write_error is None
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / 't.pqt'), result.table)
    redo = stage.run_stage('demo', fn, outputs=[], options={'k': 1}, resume=resume, redo=True)
    assert redo.n_skipped == 0 and redo.table['how'].eq('run').all()

    def full(table, path):
        raise OSError('disk full')

    broken = [(full, 'table', tmp_path / 't.pqt'), (util.write_log, 'log', tmp_path / 'l2.pqt')]
    failed = stage.run_stage('demo', fn, outputs=broken, options={'k': 1})
    assert 'disk full' in failed.write_error and failed.exit_code == 1
    assert not (tmp_path / 'l2.pqt').exists()  # the writes after a failed one are not tried


def _session_threads(_item):
    from iblnm.util import session_threads

    return session_threads()


def test_local_workers_run_each_session_on_one_thread(monkeypatch):
    from iblnm.util import SESSION_THREADS_ENV

    monkeypatch.delenv(SESSION_THREADS_ENV, raising=False)
    assert set(map_sessions(_session_threads, range(2), workers=2, progress=False)) == {1}


def test_jobs_run_in_the_runs_settings_and_record_as_a_dask_worker_would(tmp_path):
    """A Dask worker is not forked from the run: the run's settings and provenance record
    travel with the jobs (pickled) and are in force while a job runs, then undone."""
    import pickle

    from iblnm import provenance, settings
    from iblnm.pipeline.stage import in_run_context, run_context

    fpath = tmp_path / 'iblnm.toml'
    fpath.write_text('[qc_rules.weak_signal]\nthreshold = 1.5\n')
    earlier = list(settings._ACTIVE), provenance.current()  # of tests run before, in-process
    try:
        settings.use(settings.resolve(config_file=fpath, root=tmp_path / 'run_root'))
        provenance._CURRENT.clear()
        provenance._CURRENT.update({'source': 'demo', 'params_hash': 'abc'})
        context = pickle.loads(pickle.dumps(run_context()))
        settings.reset()  # a worker process of its own: nothing of the run
        provenance._CURRENT.clear()

        def job(_):
            from iblnm.signal.verdict import active_rules

            rule = next(r for r in active_rules() if r['name'] == 'weak_signal')
            return settings.current().root, provenance.current(), rule['threshold']

        seen = in_run_context(context, job, None)
        assert seen == (
            (tmp_path / 'run_root').resolve(),
            {'source': 'demo', 'params_hash': 'abc'},
            1.5,
        )
        assert settings._ACTIVE == [] and provenance.current() == {}  # the worker's own state back
    finally:
        settings._ACTIVE[:] = earlier[0]
        provenance._CURRENT.clear()
        provenance._CURRENT.update(earlier[1])
