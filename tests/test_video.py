"""Video QC: timestamp metrics on arrays with known answers, and the stage on the ``small``
preset checked against the generator's manifest (camera faults)."""

import numpy as np
import pandas as pd
import pytest

from iblnm import config
from iblnm.pipeline import video
from iblnm.simulate import load_manifest


def clock(n=36000, fs=60.0, jitter=3e-4, seed=0):
    rng = np.random.default_rng(seed)
    return np.arange(n) / fs + rng.normal(0, jitter, n)


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------
def test_clean_clock_has_no_dropped_frames():
    m = video.camera_timestamp_metrics(clock(), session_length=650.0)
    assert m['n_tpts'] == 36000 and m['n_dropped_frames'] == 0 and m['n_gaps'] == 0
    assert m['framerate_from_tpts'] == pytest.approx(60.0, rel=1e-3)
    assert m['frame_interval'] == pytest.approx(1 / 60, rel=1e-3)
    assert m['video_length'] == pytest.approx(35999 / 60, abs=0.01)
    assert m['length_discrepancy'] == pytest.approx(35999 / 60 - 650.0, abs=0.01)
    assert video.timestamp_qc_outcomes(m) == {'timestamps': 'PASS', 'dropped_frames': 'PASS'}


def test_gaps_are_counted_in_frames():
    times = np.delete(clock(), np.r_[1000:1010, 5000:5003, 9000])  # 10 + 3 + 1 frames lost
    m = video.camera_timestamp_metrics(times)
    assert (m['n_gaps'], m['n_dropped_frames'], m['max_gap_frames']) == (3, 14, 10)
    assert m['dropped_pct'] == pytest.approx(100 * 14 / 36000)
    assert np.isnan(m['length_discrepancy'])  # session length unknown
    assert video.timestamp_qc_outcomes(m)['dropped_frames'] == 'FAIL'  # a 10-frame stall


def test_sparse_single_frame_drops_pass_and_many_fail():
    single = np.delete(clock(), [2000, 9000, 20000])
    assert video.timestamp_qc_outcomes(video.camera_timestamp_metrics(single)) == {
        'timestamps': 'PASS',
        'dropped_frames': 'PASS',
    }
    many = np.delete(clock(), np.arange(100, 36000, 500))  # 72 single drops = 0.2 %
    m = video.camera_timestamp_metrics(many)
    assert m['max_gap_frames'] == 1 and m['dropped_pct'] > config.VIDEO_MAX_DROPPED_PCT
    assert video.timestamp_qc_outcomes(m)['dropped_frames'] == 'FAIL'


def test_non_monotonic_timestamps_fail():
    times = clock(1000)
    times[500] = times[100]
    m = video.camera_timestamp_metrics(times)
    assert video.timestamp_qc_outcomes(m) == {'timestamps': 'FAIL', 'dropped_frames': 'FAIL'}
    assert video.camera_timestamp_metrics([])['n_tpts'] == 0


def test_worst_outcome_and_score():
    assert video.worst_outcome('PASS', 'FAIL') == 'FAIL'
    assert video.worst_outcome(None, 'PASS') == 'PASS'
    assert video.worst_outcome('NOT_SET', np.nan) == 'NOT_SET'
    assert video.worst_outcome('WARNING', 'PASS') == 'WARNING'
    row = dict.fromkeys(config.VIDEO_QUALITY_COLS, 'PASS')
    row['qc_videoLeft_focus'] = 'FAIL'
    assert video.video_qc_score(row) == pytest.approx(0.8)
    row['qc_videoLeft_position'] = 'NOT_SET'  # unknown: ignored
    assert video.video_qc_score(row) == pytest.approx(0.75)
    assert video.video_qc_score(row, n_errors=1) == -1.0
    assert np.isnan(video.video_qc_score({}))


def test_validators_flag_both_length_directions_and_skip_unknown_pin_state():
    entry = {
        'eid': 'e',
        'length_discrepancy': -30.0,
        'qc_videoLeft_timestamps': 'PASS',
        'qc_videoLeft_dropped_frames': 'PASS',
        'qc_videoLeft_pin_state': 'NOT_SET',
    }
    assert video.validate_video(entry) == []
    for discrepancy in (-200.0, 200.0):
        log = video.validate_video({**entry, 'length_discrepancy': discrepancy})
        assert [e['error_type'] for e in log] == ['VideoLengthError']
    log = video.validate_video(
        {**entry, 'qc_videoLeft_pin_state': 'FAIL', 'qc_videoLeft_dropped_frames': 'WARNING'}
    )
    assert sorted(e['error_type'] for e in log) == [
        'VideoDroppedFramesQCError',
        'VideoPinStateQCError',
    ]


def test_missing_camera_times_is_a_typed_error():
    class NoCamera:
        def list_datasets(self, eid, filename=None):
            return []

    with pytest.raises(video.v.MissingVideoTimestamps):
        video.load_camera_times(NoCamera(), 'e')


def test_sort_order():
    table = pd.DataFrame(
        {
            'eid': list('abcd'),
            'session_type': ['training', 'ephys', 'biased', 'ephys'],
            'video_qc_score': [1.0, 1.0, -1.0, np.nan],
        }
    )
    assert list(video.sort_video_table(table)['eid']) == ['b', 'a', 'c', 'd']


# ---------------------------------------------------------------------------
# The stage on the small preset (run by the pipeline runner)
# ---------------------------------------------------------------------------
def test_video_qc_flags_exactly_the_injected_camera_faults(small_cache, small_pipeline):
    manifest = load_manifest(small_cache)
    table = pd.read_parquet(small_pipeline / 'metadata' / 'video.pqt')
    log = pd.read_parquet(small_pipeline / 'metadata' / 'video_log.pqt')
    assert list(log.columns) == ['eid', 'error_type', 'error_message', 'traceback']
    expected = {
        s['eid']: s['expected_errors']['video']
        for s in manifest['sessions']
        if s['expected_errors']['video']
    }
    assert expected, 'the small preset injects no camera fault'
    got = log.groupby('eid')['error_type'].agg(lambda x: sorted(set(x))).to_dict()
    assert got == expected
    assert set(expected) <= set(table['eid'])
    flagged = table.set_index('eid')['video_qc_score'] == -1
    assert set(flagged[flagged].index) == set(expected)
    assert list(table.columns) == video.VIDEO_COLUMNS
    assert table['framerate_from_tpts'].between(59, 61).all()


def test_video_stage_reads_extended_qc_table(small_one, small_pipeline, tmp_path):
    """With query_database --extended-qc's table, its values (pin state) are checked."""
    catalog = pd.read_parquet(small_pipeline / 'metadata' / 'sessions.pqt')
    table = pd.read_parquet(small_pipeline / 'metadata' / 'video.pqt')
    eid = table.loc[table['video_qc_score'] >= 0, 'eid'].iloc[0]
    qc = pd.DataFrame({'eid': catalog['eid']})
    for col in config.VIDEO_QC_COLS:
        qc[col] = 'PASS'
    qc.loc[qc['eid'] == eid, 'qc_videoLeft_pin_state'] = 'FAIL'
    qc.to_parquet(tmp_path / 'sessions_qc.pqt')
    logs = [
        small_pipeline / 'metadata' / f'{s}_log.pqt'
        for s in ('query_database', 'photometry', 'task')
    ]
    result = video.run_video_stage(
        one=small_one,
        catalog=catalog,
        video_fpath=tmp_path / 'video.pqt',
        log_fpath=tmp_path / 'video_log.pqt',
        qc_fpath=tmp_path / 'sessions_qc.pqt',
        upstream_logs=logs,
        progress=False,
    )
    pin = result.log[result.log['error_type'] == 'VideoPinStateQCError']
    assert list(pin['eid']) == [eid]
    row = result.table.set_index('eid').loc[eid]
    assert row['video_qc_score'] == -1 and row['qc_videoLeft_pin_state'] == 'FAIL'
    assert (tmp_path / 'video.pqt').exists() and (tmp_path / 'video_log.pqt').exists()
    assert 'video' in result.summary()
