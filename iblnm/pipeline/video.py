"""Video QC of the left camera: timestamps, dropped frames, length, pin state and a score.

Per analysable session (upstream logs free of ``validation.VIDEO_BLOCKERS``):

1. Load the left-camera frame times (``*leftCamera.times.npy``); missing -> the session
   is logged as MissingVideoTimestamps and gets score -1.
2. From the timestamps: number of frames, video length (last - first frame, s), the
   median inter-frame interval and the frame rate, gaps (intervals longer than
   ``VIDEO_GAP_FACTOR`` x the median) and the frames they lost, and the length
   discrepancy ``video_length - session_length`` (s, session length from Alyx start/end).
   The timestamps QC fails for non-finite or non-increasing times; the dropped-frames QC
   fails when more than ``VIDEO_MAX_DROPPED_PCT`` % of the frames are lost or a single
   gap lasts ``VIDEO_MAX_GAP_FRAMES`` frames or more.
3. Extended QC (``qc_videoLeft_*``) from ``metadata/sessions_qc.pqt`` when it exists,
   else from the session's Alyx record. The timestamps and dropped-frames columns hold
   the worse of the Alyx outcome and ours (ours alone when Alyx has none); the pin state
   is only known from Alyx, and is checked only when known.
4. Validators (typed errors, logged, never fatal): VideoLengthError (video longer than
   the session by ``LENGTH_MISMATCH_THRESHOLD`` s, the original's signed check, or
   shorter by as much: a camera that stopped early), VideoTimestampsQCError,
   VideoDroppedFramesQCError, VideoPinStateQCError.
5. ``video_qc_score`` = mean of the 5 quality columns (PASS 1, WARNING 0.66,
   CRITICAL 0.33, FAIL 0; NOT_SET/missing ignored); -1 for a session with any error.

Writes ``metadata/video.pqt`` (sorted by score, then ephys, biased, training) and
``metadata/video_log.pqt``.
"""

import numpy as np
import pandas as pd

from iblnm import config, util
from iblnm import validation as v
from iblnm.pipeline.stage import (
    SessionOutcome,
    run_stage,
)

STAGE = 'video'
CAMERA_TIMES_PATTERN = '*leftCamera.times*'
TIMESTAMP_QC = {
    'timestamps': 'qc_videoLeft_timestamps',
    'dropped_frames': 'qc_videoLeft_dropped_frames',
}
PIN_STATE_COLUMN = 'qc_videoLeft_pin_state'
METRIC_COLUMNS = [
    'session_length',
    'video_length',
    'length_discrepancy',
    'n_tpts',
    'frame_interval',
    'framerate_from_tpts',
    'n_gaps',
    'n_dropped_frames',
    'max_gap_frames',
    'dropped_pct',
]
VIDEO_COLUMNS = [
    'eid',
    'subject',
    'session_type',
    'video_qc_score',
    *config.VIDEO_QC_COLS,
    *METRIC_COLUMNS,
    'n_errors',
]
UPSTREAM_LOGS = (
    config.QUERY_DATABASE_LOG_FPATH,
    config.PHOTOMETRY_LOG_FPATH,
    config.TASK_LOG_FPATH,
)
_KNOWN = ('PASS', 'WARNING', 'CRITICAL', 'FAIL')  # worst last


# ---------------------------------------------------------------------------
# Pure functions of the timestamps and QC values
# ---------------------------------------------------------------------------
def camera_timestamp_metrics(times, session_length=np.nan):
    """Frame-clock metrics of one camera.

    Parameters
    ----------
    times : array-like, shape (n_frames,)
        Frame times (s).
    session_length : float
        Session duration from the Alyx start/end times (s); NaN when unknown.

    Returns
    -------
    dict
        ``n_tpts`` (frames), ``video_length`` (s, last - first frame), ``frame_interval``
        (s, median inter-frame interval), ``framerate_from_tpts`` (Hz, its inverse; the
        original stored the interval under this name), ``n_gaps`` (intervals longer than
        ``VIDEO_GAP_FACTOR`` x the median), ``n_dropped_frames`` (frames lost in the gaps),
        ``max_gap_frames``, ``dropped_pct`` (% of the expected frames), ``monotonic``
        (finite and strictly increasing), ``session_length`` and ``length_discrepancy``
        (s, video - session).
    """
    times = np.asarray(times, dtype=float).ravel()
    dt = np.diff(times)
    finite = dt[np.isfinite(dt)]
    interval = float(np.median(finite)) if finite.size else np.nan
    valid = np.isfinite(interval) and interval > 0
    lost = np.round(finite / interval) - 1 if valid else np.zeros(0)
    lost = np.where(finite > config.VIDEO_GAP_FACTOR * interval, lost, 0) if valid else lost
    n_dropped = int(lost.sum())
    video_length = float(times[-1] - times[0]) if times.size > 1 else np.nan
    session_length = float(session_length) if session_length is not None else np.nan
    return {
        'n_tpts': int(times.size),
        'video_length': video_length,
        'frame_interval': interval,
        'framerate_from_tpts': 1.0 / interval if valid else np.nan,
        'n_gaps': int((lost > 0).sum()),
        'n_dropped_frames': n_dropped,
        'max_gap_frames': int(lost.max()) if lost.size else 0,
        'dropped_pct': 100.0 * n_dropped / (times.size + n_dropped) if times.size else np.nan,
        'monotonic': bool(times.size > 1 and np.all(np.isfinite(times)) and np.all(dt > 0)),
        'session_length': session_length,
        'length_discrepancy': video_length - session_length,
    }


def timestamp_qc_outcomes(metrics):
    """QC outcomes derived from :func:`camera_timestamp_metrics`.

    Returns
    -------
    dict
        ``{'timestamps': 'PASS'|'FAIL', 'dropped_frames': 'PASS'|'FAIL'}``.
    """
    stalled = metrics['max_gap_frames'] >= config.VIDEO_MAX_GAP_FRAMES
    too_many = metrics['dropped_pct'] > config.VIDEO_MAX_DROPPED_PCT
    return {
        'timestamps': 'PASS' if metrics['monotonic'] else 'FAIL',
        'dropped_frames': 'FAIL' if (stalled or too_many or not metrics['monotonic']) else 'PASS',
    }


def _known(value):
    return value if isinstance(value, str) and value in _KNOWN else None


def worst_outcome(*values):
    """The worst known QC outcome (PASS < WARNING < CRITICAL < FAIL); 'NOT_SET' if none."""
    known = [_known(value) for value in values]
    known = [value for value in known if value is not None]
    return max(known, key=_KNOWN.index) if known else 'NOT_SET'


def video_qc_score(row, n_errors=0):
    """Mean score of the 5 quality columns (NaN when none is known); -1 with any error."""
    if n_errors:
        return -1.0
    scores = [config.VIDEO_QC2SCORE.get(row.get(col)) for col in config.VIDEO_QUALITY_COLS]
    scores = [s for s in scores if s is not None]
    return float(np.mean(scores)) if scores else np.nan


def validate_video(entry):
    """Run the video validators on one row; returns the log entries (list of dict)."""
    log = []
    series = pd.Series(entry)
    v.validate_video_length(series, exlog=log)
    v.validate_video_covers_session(series, exlog=log)
    v.validate_video_timestamps_qc(series, exlog=log)
    v.validate_video_dropped_frames_qc(series, exlog=log)
    if _known(entry.get(PIN_STATE_COLUMN)):  # pin state only where the data have it
        v.validate_video_pin_state_qc(series, exlog=log)
    return log


# ---------------------------------------------------------------------------
# One session
# ---------------------------------------------------------------------------
def load_camera_times(one, eid):
    """Left-camera frame times (s) of a session, or :class:`MissingVideoTimestamps`."""
    datasets = [str(d) for d in one.list_datasets(eid, filename=CAMERA_TIMES_PATTERN)]
    if not datasets:
        raise v.MissingVideoTimestamps('no left-camera timestamps (*leftCamera.times*)')
    try:
        return np.asarray(one.load_dataset(eid, sorted(datasets)[0]), dtype=float)
    except Exception as error:  # noqa: BLE001 - an unreadable file is missing data
        transient = v.as_transient(error, datasets[0])
        raise (transient or v.wrap(v.MissingVideoTimestamps, error, datasets[0])) from error


def extended_video_qc(row, one):
    """The 8 ``qc_videoLeft_*`` values of a session: from the row, else its Alyx record."""
    if any(col in row for col in config.VIDEO_QC_COLS):
        return {col: row.get(col) for col in config.VIDEO_QC_COLS}
    from iblnm import io

    record = io.get_extended_qc(pd.Series({'eid': row['eid']}), one=one, exlog=[])
    return {col: record.get(col) for col in config.VIDEO_QC_COLS}


def _base_row(row):
    return {
        'eid': str(row['eid']),
        'subject': row.get('subject'),
        'session_type': row.get('session_type'),
    }


def process_session(job):
    """Video QC row and errors of one session; never raises."""
    row, connection, _ = job
    entry = _base_row(row)
    try:
        one = connection.connect()
        times = load_camera_times(one, entry['eid'])
        qc = extended_video_qc(row, one)
    except Exception as error:  # noqa: BLE001 - every failure becomes a typed log row
        error = v.classify(error)
        log = [v.make_log_entry(entry['eid'], error=error)]
        entry.update({'video_qc_score': -1.0, 'n_errors': 1})
        return SessionOutcome(entry['eid'], rows=[entry], errors=log, fatal=type(error).__name__)
    metrics = camera_timestamp_metrics(times, row.get('session_length', np.nan))
    derived = timestamp_qc_outcomes(metrics)
    for key, column in TIMESTAMP_QC.items():
        qc[column] = worst_outcome(qc.get(column), derived[key])
    qc = {col: _known(value) or 'NOT_SET' for col, value in qc.items()}
    entry.update(qc)
    entry.update({key: metrics[key] for key in METRIC_COLUMNS})
    log = validate_video(entry)
    entry['n_errors'] = len(log)
    entry['video_qc_score'] = video_qc_score(entry, len(log))
    return SessionOutcome(entry['eid'], rows=[entry], errors=log)


# ---------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------
def sort_video_table(table):
    """Rows by score (descending), then session type (ephys, biased, training), then eid."""
    table = table.reindex(columns=VIDEO_COLUMNS)
    order = table['session_type'].map(config.VIDEO_SESSION_TYPE_ORDER).fillna(99)
    key = pd.DataFrame(
        {'score': -table['video_qc_score'].fillna(-np.inf), 'type': order, 'eid': table['eid']}
    )
    return table.loc[key.sort_values(['score', 'type', 'eid']).index].reset_index(drop=True)


def _with_extended_qc(catalog, qc_fpath):
    """Merge the video columns of ``sessions_qc.pqt`` (query_database --extended-qc)."""
    if qc_fpath is None or not qc_fpath.exists():
        return catalog
    qc = pd.read_parquet(qc_fpath)
    columns = [c for c in config.VIDEO_QC_COLS if c in qc]
    if 'eid' not in qc or not columns:
        return catalog
    return catalog.merge(qc[['eid', *columns]], on='eid', how='left')


def run_video_stage(
    one=None,
    catalog=None,
    workers=1,
    scheduler=None,
    video_fpath=config.VIDEO_FPATH,
    log_fpath=config.VIDEO_LOG_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    qc_fpath=config.SESSIONS_QC_FPATH,
    upstream_logs=UPSTREAM_LOGS,
    progress=True,
):
    """Run the video QC over the analysable sessions and write its outputs atomically.

    Returns
    -------
    StageResult
        ``table`` is what was written to ``video_fpath`` (columns :data:`VIDEO_COLUMNS`).
    """
    return run_stage(
        STAGE,
        process_session,
        one,
        catalog,
        sessions_fpath,
        outputs=[(util.df2pqt, 'table', video_fpath), (util.write_log, 'log', log_fpath)],
        upstream_logs=upstream_logs,
        blockers=v.VIDEO_BLOCKERS,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        prepare=lambda selected, one: _with_extended_qc(selected, qc_fpath),
        finish=sort_video_table,
    )
