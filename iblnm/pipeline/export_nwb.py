"""Export every processed session as one NWB file (DANDI layout), see :mod:`iblnm.nwb`.

Per session with a preprocessed signal in its HDF5 file: the trials (all columns) and the
raw bands are reloaded through ONE (the HDF5 file keeps neither), the processed signals,
QC table and error log come from the HDF5 file, the wheel (velocity and raw position) from
ONE when present (a missing wheel is logged, the session is still exported). The file is
written atomically to ``{out_dir}/sub-<subject>/sub-<subject>_ses-<...>_ophys.nwb``.

Sessions without an HDF5 file or without a preprocessed signal (stopped by the photometry
stage) are skipped with the reason in the table; files already exported are skipped unless
``redo``. Writes ``data/nwb_export.pqt`` (one row per session: status, path, size, seconds)
and ``metadata/export_nwb_log.pqt`` (typed errors).
"""

import time
from pathlib import Path

import pandas as pd

from iblnm import config, io, nwb, util
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.pipeline.stage import (
    SessionOutcome,
    StageResult,
    failed,
    gather,
    make_jobs,
    run_jobs,
    stage_sessions,
)

STAGE = 'export_nwb'
EXPORT_COLUMNS = ['eid', 'subject', 'status', 'reason', 'path', 'size_mb', 'seconds']


def _row(
    eid, status, reason=None, path=None, size_mb=float('nan'), seconds=float('nan'), subject=None
):
    return {
        'eid': eid,
        'subject': subject,
        'status': status,
        'reason': reason,
        'path': None if path is None else str(path),
        'size_mb': size_mb,
        'seconds': seconds,
    }


def _wheel_position(ps):
    """(times, position) of the raw wheel (s, rad), through ONE."""
    collection = ps.loader._find_behaviour_collection('wheel')
    raw = ps.one.load_object(ps.eid, 'wheel', collection=collection)
    return raw['timestamps'], raw['position']


def load_for_export(ps):
    """Fill a session for export: ONE's trials and raw bands, the HDF5 file's results.

    Returns ``(wheel_position or None, [non-fatal error entries])``.
    """
    ps.load_trials()
    ps.load_photometry()
    ps.load_h5(groups=['metadata', 'errors', 'photometry'], parts=('preprocessed', 'qc'))
    notes, position = [], None
    try:
        ps.load_wheel()
        position = _wheel_position(ps)
    except Exception as error:  # noqa: BLE001 - no wheel: export the photometry anyway
        ps.wheel = None
        notes.append(v.make_log_entry(ps.eid, error=error))
    return position, notes


def export_session(job):
    """Export one session; never raises. ``job = (row, Connection, options)``."""
    row, connection, options = job
    eid = str(row['eid'])
    subject = row.get('subject')
    try:
        ps = PhotometrySession(row, one=connection.connect(), h5_dir=options['h5_dir'])
    except Exception as error:  # noqa: BLE001 - e.g. InvalidEid
        return failed(eid, error)
    if not Path(ps.h5_path).exists():
        return SessionOutcome(eid, rows=[_row(eid, 'skipped', 'no HDF5 file', subject=subject)])
    try:
        processed = has_preprocessed(ps.h5_path)
    except v.CorruptH5 as error:
        return failed(eid, error)
    if not processed:
        return SessionOutcome(
            eid, rows=[_row(eid, 'skipped', 'no preprocessed signal', subject=subject)]
        )
    path = Path(options['out_dir']) / nwb.nwb_relpath(ps)
    t0 = time.perf_counter()
    try:
        position, notes = load_for_export(ps)
        nwb.write_nwb(ps, path, fibers=options.get('fibers'), wheel_position=position)
    except Exception as error:  # noqa: BLE001 - every failure becomes a typed log row
        outcome = failed(eid, error)
        outcome.rows = [_row(eid, 'failed', type(error).__name__, subject=subject)]
        return outcome
    seconds = time.perf_counter() - t0
    size = path.stat().st_size / 1e6
    return SessionOutcome(
        eid, rows=[_row(eid, 'exported', None, path, size, seconds, subject)], errors=notes
    )


def has_preprocessed(h5_path):
    """True when the HDF5 file holds a preprocessed signal for at least one region."""
    from iblnm import h5

    data = h5.load_h5(h5_path, groups=['photometry'], parts=('preprocessed',))
    return any('preprocessed' in part for part in data.get('photometry', {}).values())


def exported_path(row, out_dir):
    """Where a catalog row's NWB file goes (the same name as :func:`nwb.nwb_relpath`)."""
    return Path(out_dir) / nwb.nwb_relpath(PhotometrySession(row, one=object()))


def run_export_stage(
    one=None,
    catalog=None,
    redo=False,
    workers=1,
    scheduler=None,
    h5_dir=config.SESSIONS_H5_DIR,
    out_dir=config.NWB_DIR,
    table_fpath=config.NWB_EXPORT_FPATH,
    log_fpath=config.NWB_LOG_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    progress=True,
):
    """Export the analysable sessions' NWB files; always writes the table and the log.

    Returns
    -------
    StageResult
        ``table``: one row per session (status 'exported', 'skipped' or 'failed').
    """
    one, selected, _catalog_log = stage_sessions(one, catalog, sessions_fpath)
    out_dir = Path(out_dir)
    for folder in out_dir.glob('sub-*'):
        util.remove_stale_temporaries(folder, pattern=f'.*{nwb.TMP_SUFFIX}')
    rows = [r for _, r in selected.iterrows()]
    done = set() if redo else {r['eid'] for r in rows if exported_path(r, out_dir).exists()}
    todo = selected[~selected['eid'].isin(done)]
    fibers = io.get_fiber_table(one, subjects=set(todo['subject']))
    jobs = make_jobs(todo, one, {'h5_dir': str(h5_dir), 'out_dir': str(out_dir), 'fibers': fibers})
    outcomes = run_jobs(export_session, jobs, workers, scheduler, STAGE, progress)
    table, log = gather(outcomes)
    previous = [
        _row(
            r['eid'],
            'skipped',
            'already exported',
            exported_path(r, out_dir),
            subject=r.get('subject'),
        )
        for r in rows
        if r['eid'] in done
    ]
    table = pd.concat([table, pd.DataFrame(previous)], ignore_index=True).reindex(
        columns=EXPORT_COLUMNS
    )
    util.df2pqt(table, table_fpath)
    util.write_log(log, log_fpath)
    return StageResult(STAGE, outcomes, len(selected), table, log, n_skipped=len(done))


def summary(result):
    """The stage summary plus the counts of the export table's statuses and reasons."""
    counts = result.table.fillna({'reason': ''}).groupby(['status', 'reason']).size()
    lines = [result.summary(), '  sessions by status:']
    lines += [f'    {status:<9} {reason or "-"}: {n}' for (status, reason), n in counts.items()]
    exported = result.table[result.table['status'] == 'exported']
    if len(exported):
        lines.append(
            f'  export time {exported["seconds"].median():.2f} s/session (median), '
            f'size {exported["size_mb"].median():.2f} MB (median)'
        )
    return '\n'.join(lines)
