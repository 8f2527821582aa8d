"""Stage 2, photometry: load → validate → QC → preprocess → responses → HDF5, per session.

Tiers (what stops a session, what is only logged):

=======================================================  ====================================
step                                                     on failure
=======================================================  ====================================
load trials and photometry                               fatal
validate_trials_in_photometry_time                       fatal
run_raw_qc, validate_qc (band inversions, early frames)  fatal (BandInversion, EarlySamples)
detect_artefacts (masks, segments, QC fractions)         fatal
run_sliding_qc                                           fatal
validate_few_unique_samples                              logged only
preprocess                                               fatal
validate_n_trials                                        fatal: no responses
validate_event_completeness                              logged; incomplete events dropped
extract_responses (z-scores; ΔF/F when present)          logged
fit_event_kernels                                        logged
=======================================================  ====================================

Every QC row carries the recording's ``verdict`` (PASS / WARNING / FAIL) and
``verdict_reasons`` (:mod:`iblnm.signal.verdict`); a FAIL is never fatal here: the session
keeps its H5 file and table rows, and group analyses leave the recording out.
The raw QC counts are in the QC rows also when ``validate_qc`` stopped the session.

Every processed session gets an HDF5 file (written atomically once, at the end) with
its metadata, its errors and whatever data it reached, so the file's existence means
"done" and a killed run resumes where it stopped. Not "done": a session whose last attempt
failed transiently (request, download, I/O: no file is written, the next run retries it)
or on a bug (UnexpectedError, likewise), and a session whose inputs changed since its
file was written (size, mtime and ONE hash of the input files are recorded in the file).
Rewriting a file keeps the groups other stages wrote (the wheel) when the trials they were
computed from are unchanged. An HDF5 file is written only with ``config.MIN_FREE_BYTES``
free on its disk; a write that fails is an ``OutputWriteError`` and stops the stage. The stage tables
(``qc_photometry.pqt``, ``photometry_log.pqt``) are assembled by the parent from the
sessions' results and, for sessions done earlier, from their HDF5 files.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from iblnm import config, h5, util
from iblnm import validation as v
from iblnm.data import DFF_BAND, QC_COLUMNS, PhotometrySession
from iblnm.pipeline.stage import (
    SessionOutcome,
    failed,
    run_stage,
)
from iblnm.signal import verdict as sv

STAGE = 'photometry'


def _run_tiers(ps):
    """Run the tiers on a session; raise on a fatal failure, log the non-fatal ones."""
    ps.load_trials()
    ps.load_photometry()
    ps.validate_trials_in_photometry_time()
    ps.run_raw_qc()
    ps.validate_qc()
    ps.detect_artefacts()
    ps.run_sliding_qc()
    try:
        ps.validate_few_unique_samples()
    except v.FewUniqueSamples as error:
        ps.log_error(error)
    try:
        ps.preprocess()
    except (np.linalg.LinAlgError, FloatingPointError, ValueError) as error:
        raise v.wrap(v.PreprocessingFailed, error, 'preprocess') from error
    ps.validate_n_trials()
    events = list(config.RESPONSE_EVENTS)
    try:
        ps.validate_event_completeness()
    except v.IncompleteEventTimes as error:
        ps.log_error(error)
        events = [e for e in events if e not in error.missing_events]
    try:
        ps.extract_responses(events=events)
        if DFF_BAND in ps.photometry:  # ΔF/F responses beside the z-scored ones (issue 12)
            ps.extract_responses(events=events, band=DFF_BAND)
    except Exception as error:  # noqa: BLE001 - responses failing must not lose the signal
        ps.log_error(error)
    try:
        ps.fit_event_kernels(events=events)
    except Exception as error:  # noqa: BLE001 - nor the kernels the responses
        ps.log_error(error)


INPUT_FILES = (
    '_ibl_trials.table.pqt',
    'photometry.signal.pqt',
    'photometryROI.locations.pqt',
    '_neurophotometrics_fpData.raw.pqt',
)
FINGERPRINT_KEY = 'input_fingerprint'


def input_fingerprint(one, eid, names=INPUT_FILES):
    """What the stage read for a session: ``{rel_path: [size, mtime_ns, hash]}`` (JSON).

    Size and hash come from ONE's datasets table. With a local cache, size and mtime (ns)
    of the file on disk replace them, so a file fixed or replaced in the cache changes the
    fingerprint; in remote mode the database's record (size, hash: a new revision) decides,
    not when a file happened to be downloaded.
    """
    from iblnm.io import is_local

    datasets = one.list_datasets(eid, details=True)
    root = Path(one.eid2path(eid)) if is_local(one) else None
    out = {}
    for rel_path, size, digest in zip(
        datasets['rel_path'], datasets['file_size'], datasets['hash']
    ):
        if Path(rel_path).name not in names:
            continue
        entry = [None if size is None or size != size else int(size), None, digest]
        if root is not None and (root / rel_path).exists():
            stat = (root / rel_path).stat()
            entry[:2] = [stat.st_size, stat.st_mtime_ns]
        out[str(rel_path)] = entry
    return json.dumps(out, sort_keys=True)


def _kept_groups(ps):
    """Groups of an existing HDF5 file that other stages wrote and that are still valid:
    the wheel group when the trials it was cut from are unchanged. {} otherwise."""
    try:
        data = h5.load_h5(ps.h5_path, groups=['wheel', 'trials'])
    except (v.MissingH5, v.CorruptH5):
        return {}
    old, new = data.get('trials'), ps.trials
    if 'wheel' not in data or old is None or new is None or len(old) != len(new):
        return {}
    for col in ('stimOn_times', 'feedback_times'):
        if (
            col in old
            and col in new
            and not np.array_equal(
                old[col].to_numpy(float), new[col].to_numpy(float), equal_nan=True
            )
        ):
            return {}
    return {'wheel': data['wheel']}


def check_free_space(directory, needed=None):
    """Raise :class:`OutputWriteError` when ``directory``'s disk has less than ``needed``
    bytes free (default ``config.MIN_FREE_BYTES``)."""
    needed = config.MIN_FREE_BYTES if needed is None else needed
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise v.OutputWriteError(
            f'{directory}: {free / 1e6:.0f} MB free, {needed / 1e6:.0f} MB needed (disk full?)'
        )


def save_session(ps):
    """Write a session's HDF5 file; any failure becomes :class:`OutputWriteError`."""
    try:
        check_free_space(ps.h5_dir)
        kept = _kept_groups(ps)
        if 'wheel' in kept:
            ps.wheel_velocity = kept['wheel']
        ps.save_h5(mode='w')
    except v.OutputWriteError:
        raise
    except Exception as error:  # noqa: BLE001 - OSError (ENOSPC, EACCES), h5py errors ...
        raise v.wrap(v.OutputWriteError, error, f'{ps.h5_path.name}') from error


def process_session(job):
    """Process one session; never raises. ``job = (row dict, Connection, {'h5_dir': ...})``."""
    row, connection, options = job
    eid = str(row['eid'])
    try:
        one = connection.connect()
        ps = PhotometrySession(row, one=one, h5_dir=options['h5_dir'])
        ps.metadata[FINGERPRINT_KEY] = input_fingerprint(one, ps.eid)
    except Exception as error:  # noqa: BLE001 - e.g. InvalidEid: nothing may be written
        return failed(eid, error)
    fatal = None
    try:
        _run_tiers(ps)
    except Exception as error:  # noqa: BLE001 - every failure becomes a typed log row
        error = v.classify(error)
        ps.log_error(error)
        fatal = type(error).__name__
    if fatal is None or v.failure_kind(fatal) == 'data':  # else: not done, the next run retries
        try:
            save_session(ps)
        except v.OutputWriteError as error:
            ps.log_error(error)
            fatal = type(error).__name__
    # raw counts are kept also when validate_qc stopped the session (one row per region x band)
    qc = ps.qc.to_dict('records') if ps._has_qc_rows or ps._raw_qc else []
    return SessionOutcome(eid, rows=qc, errors=list(ps.errors), fatal=fatal)


def outcome_from_h5(eid, h5_dir):
    """Rebuild a finished session's outcome from its HDF5 file (for resumed runs)."""
    data = h5.load_h5(Path(h5_dir) / f'{eid}.h5', groups=['errors', 'photometry'], parts=('qc',))
    qc = [
        row
        for part in data.get('photometry', {}).values()
        if 'qc' in part
        for row in part['qc'].to_dict('records')
    ]
    errors = data['errors'].to_dict('records') if 'errors' in data else []
    return SessionOutcome(eid, rows=qc, errors=errors)


TEXT_COLUMNS = ('eid', 'brain_region', 'band', *sv.VERDICT_COLUMNS)


def order_qc_columns(qc):
    """QC table with the columns in :data:`iblnm.data.QC_COLUMNS` order (the one definition,
    that of :attr:`PhotometrySession.qc`), then unknown ones, then ``verdict`` and
    ``verdict_reasons``.

    Metrics are float64 (counts included: NaN where a metric could not be computed) and each
    session's rows are sorted by region and band (sessions stay in their order), so the table
    is the same whether its rows were computed now or read back from HDF5 files (which hold
    regions in name order). The verdicts are scored from the metrics with the rules in force,
    also for the rows of sessions done by an earlier run (whose files may hold verdicts of
    other rules: :data:`iblnm.provenance.SCORING_PARAMETERS`).
    """
    if len(qc):
        qc = sv.add_verdicts(qc)
    if len(qc) and {'eid', 'brain_region', 'band'} <= set(qc.columns):
        session = pd.Series(pd.factorize(qc['eid'])[0], index=qc.index, name='_session')
        order = pd.concat([session, qc[['brain_region', 'band']].astype(str)], axis=1)
        qc = qc.loc[order.sort_values(list(order.columns), kind='stable').index]
        qc = qc.reset_index(drop=True)
    known = [c for c in QC_COLUMNS if c in qc.columns]
    rest = [c for c in qc.columns if c not in known and c not in sv.VERDICT_COLUMNS]
    qc = qc[known + rest + [c for c in sv.VERDICT_COLUMNS if c in qc.columns]]
    metrics = [c for c in qc.columns if c not in TEXT_COLUMNS]
    return qc.astype(dict.fromkeys(metrics, 'float64'))


def is_done(eid, h5_dir, fingerprint=None):
    """True when the session has a readable HDF5 file written by this stage (and, given
    ``fingerprint``, from the same inputs: see :func:`input_fingerprint`). A file written
    before fingerprints were recorded counts as done (``--redo`` reprocesses it), so that an
    upgrade does not reprocess a whole dataset."""
    fpath = Path(h5_dir) / f'{eid}.h5'
    try:
        if 'errors' not in h5.h5_groups(fpath):
            return False
        recorded = None if fingerprint is None else h5.read_metadata_attr(fpath, FINGERPRINT_KEY)
    except (v.CorruptH5, OSError):
        return False
    return recorded is None or recorded == fingerprint  # None: a file from before fingerprints


def _done_sessions(eids, h5_dir, one):
    done = set()
    for eid in eids:
        try:
            fingerprint = input_fingerprint(one, eid)
        except Exception:  # noqa: BLE001 - cannot tell: process the session again
            continue
        if is_done(eid, h5_dir, fingerprint):
            done.add(eid)
    return done


def run_photometry_stage(
    one=None,
    catalog=None,
    redo=False,
    workers=1,
    scheduler=None,
    h5_dir=config.SESSIONS_H5_DIR,
    qc_fpath=config.QCPHOTOMETRY_FPATH,
    log_fpath=config.PHOTOMETRY_LOG_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    upstream_logs=(config.QUERY_DATABASE_LOG_FPATH,),
    progress=True,
):
    """Run the photometry stage over the catalog and write its tables atomically.

    Sessions with a readable HDF5 file written from the same inputs are skipped unless
    ``redo``; their QC rows and errors are read back from the file so the tables always
    cover every session.
    """

    def resume(selected, one):
        done = _done_sessions(list(selected['eid']), h5_dir, one)
        return {eid: outcome_from_h5(eid, h5_dir) for eid in selected['eid'] if eid in done}

    return run_stage(
        STAGE,
        process_session,
        one,
        catalog,
        sessions_fpath,
        outputs=[(util.df2pqt, 'table', qc_fpath), (util.write_log, 'log', log_fpath)],
        upstream_logs=upstream_logs,
        blockers=v.PHOTOMETRY_BLOCKERS,
        redo=redo,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        options={'h5_dir': str(h5_dir)},
        temporaries=h5_dir,
        resume=resume,
        finish=order_qc_columns,
    )
