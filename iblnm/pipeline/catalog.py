"""Stage 1, query_database: the session catalog (``metadata/sessions.pqt``).

Lists the sessions of the project, enriches each one with subject information, brain
regions, hemispheres, datasets, session type, target-NMs and length, validates every
field and logs each failure as a typed error. A bad field never stops the run and a
bad session is never dropped: it stays in the catalog with its errors in the log, and
downstream stages filter on the logged error types.

Dependent checks are skipped when their inputs already failed, so that one fault gives
its root-cause error only (e.g. an unknown region gives InvalidBrainRegion, not also
InvalidTargetNM and MissingInsertion).
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from iblnm import config, io, provenance, recordings, util
from iblnm import validation as v

LIST_COLUMNS = [c for c, (t, _) in config.SESSION_SCHEMA.items() if t is list]
CATALOG_COLUMNS = [
    'eid',
    'subject',
    'start_time',
    'end_time',
    'number',
    'lab',
    'projects',
    'users',
    'task_protocol',
    'session_type',
    'strain',
    'line',
    'genotype',
    'NM',
    'brain_region',
    'hemisphere',
    'target_NM',
    'datasets',
    'session_length',
    'day_n',
    'session_n',
]

# text columns (the schema's str columns), missing values as None; eids are never missing
TEXT_COLUMNS = [c for c, (t, _) in config.SESSION_SCHEMA.items() if t is str and c != 'eid']


@dataclass
class CatalogContext:
    """What every session of one catalog run shares (fetched once)."""

    one: object
    metadata: object
    fiber_lookup: dict
    subjects: dict = field(default_factory=dict)

    def subject_records(self, nickname):
        """Subject records for a nickname (cached: one query per subject)."""
        if nickname not in self.subjects:
            self.subjects[nickname] = self.metadata.list_subjects(nickname=nickname)
        return self.subjects[nickname]


class _CachedSubjects:
    """Adapter giving ``get_subject_info`` the context's cached subject records."""

    def __init__(self, context):
        self.context = context

    def list_subjects(self, nickname=None):
        return self.context.subject_records(nickname)


def _errors_of(log, start):
    return {entry['error_type'] for entry in log[start:]}


def _add_subject_info(session, ctx, log):
    start = len(log)
    session = io.get_subject_info(session, metadata=_CachedSubjects(ctx), exlog=log)
    if _errors_of(log, start):  # no subject record: strain/line/NM unknown
        return session, False
    v.validate_subject(session, exlog=log)
    v.validate_strain(session, exlog=log)
    v.validate_line(session, exlog=log)
    v.validate_neuromodulator(session, exlog=log)
    return session, 'InvalidNeuromodulator' not in _errors_of(log, start)


def _add_regions(session, ctx, log):
    start = len(log)
    session = io.get_brain_region(session, one=ctx.one, exlog=log)
    if _errors_of(log, start):
        session['brain_region'], session['hemisphere'], session['roi'] = [], [], []
        return session, False
    hemis = [h or None for h in session['hemisphere']]
    session['hemisphere'] = hemis
    session = v.fill_hemisphere_from_fiber_insertion_table(session, ctx.fiber_lookup)
    v.validate_brain_region(session, exlog=log)
    regions_ok = not _errors_of(log, start)
    valid = [i for i, r in enumerate(session['brain_region']) if r in config.VALID_TARGETS]
    if valid:
        subset = session.copy()
        subset['brain_region'] = [session['brain_region'][i] for i in valid]
        subset['hemisphere'] = [session['hemisphere'][i] for i in valid]
        v.validate_hemisphere(subset, fiber_lookup=ctx.fiber_lookup, exlog=log)
    session['hemisphere'] = [h or '' for h in session['hemisphere']]
    return session, regions_ok


def build_session_record(record, ctx):
    """Enrich and validate one Alyx session record.

    Parameters
    ----------
    record : dict
        An Alyx ``sessions/list`` record (``id``, ``subject``, ``start_time`` ...).
    ctx : CatalogContext

    Returns
    -------
    row : dict
        One catalog row (columns of :data:`CATALOG_COLUMNS`, without day_n/session_n) and
        ``roi``, the fibers' ROI column names (for the recordings table, not the catalog).
    log : list of dict
        Error-log entries for this session.
    """
    log = []
    session = pd.Series({**record, 'eid': record_eid(record)})
    session = session.drop(labels=['id'], errors='ignore')
    session = util.enforce_schema(session.to_frame().T).iloc[0].copy()
    session, nm_ok = _add_subject_info(session, ctx, log)
    session = io.get_session_dict(session, metadata=ctx.metadata, exlog=log)
    session, regions_ok = _add_regions(session, ctx, log)
    session = io.get_datasets(session, one=ctx.one, exlog=log)
    v.validate_datasets(session, exlog=log)
    session = util.get_session_type(session, exlog=log)
    if nm_ok and regions_ok:
        session = util.get_targetNM(session, exlog=log)
    else:  # keep the parallel lists aligned without a redundant InvalidTargetNM
        session['target_NM'] = util.target_nm_labels(session['brain_region'], session['NM'])
    session = util.get_session_length(session, exlog=log)
    row = {col: session.get(col) for col in CATALOG_COLUMNS if col not in ('day_n', 'session_n')}
    row['roi'] = session.get('roi')
    return row, log


def _finalise(df):
    """Schema, types and day/session numbers over the whole catalog."""
    df = util.enforce_schema(df).drop(columns=['_datasets_from_session_dict'])
    df = util.add_day_and_session_numbers(df)
    df['number'] = df['number'].astype('Int64')
    df['session_length'] = pd.to_numeric(df['session_length'], errors='coerce').astype(float)
    for col in TEXT_COLUMNS:
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    cols = CATALOG_COLUMNS + [c for c in df.columns if c not in CATALOG_COLUMNS]
    return df[cols].sort_values(['subject', 'start_time']).reset_index(drop=True)


def _recordings_table(catalog, rows, recordings_fpath, fibers):
    """The recordings of the whole catalog: ROI names of the new rows, else of the last table."""
    rois = {}
    if Path(recordings_fpath).exists():
        old = pd.read_parquet(recordings_fpath)
        for eid, recs in old.sort_values('fiber_idx').groupby('eid', sort=False):
            rois[eid] = None if recs['roi'].isna().any() else list(recs['roi'])
    rois.update({row['eid']: row.get('roi') for row in rows})
    return recordings.recordings_table(catalog, rois=rois, fibers=fibers)


def list_new_records(records, existing, redownload):
    """Records whose eid is not in the existing catalog (all of them with ``redownload``)."""
    if redownload or existing is None or len(existing) == 0:
        return records
    known = set(existing['eid'])
    return [r for r in records if record_eid(r) not in known]


def record_eid(record):
    """A record's eid as the catalog stores it: lower case (Alyx UUIDs in any case)."""
    return str(record.get('id', record.get('eid'))).strip().lower()


def _permanent_error_types():
    """Error types that describe the data (kept in the catalog), not a failed request."""
    from one.alf import exceptions as alf_exceptions

    transient = {cls.__name__ for cls in (v.TransientError, *_all_subclasses(v.TransientError))}
    names = {cls.__name__ for cls in _all_subclasses(v.IblnmError)} - transient
    alf = {name for name, obj in vars(alf_exceptions).items() if isinstance(obj, type)}
    return names | alf | {'ValueError'}


def entry_kind(entry, permanent):
    """'data', 'transient' (a request failed: retried next run) or 'unexpected' (a bug)."""
    etype = entry['error_type']
    if etype in permanent:
        return 'data'
    if etype in v.request_error_names() or v.failure_kind(etype) == 'transient':
        return 'transient'
    return 'unexpected'


def as_unexpected(entry):
    """A log entry re-typed as UnexpectedError, the original type first in the message."""
    if entry['error_type'] == v.UnexpectedError.__name__:
        return entry
    message = f'{entry["error_type"]}: {entry["error_message"]}'
    return {**entry, 'error_type': v.UnexpectedError.__name__, 'error_message': message}


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


@dataclass
class CatalogResult:
    """Outcome of one catalog run."""

    catalog: pd.DataFrame
    log: pd.DataFrame
    n_found: int
    n_new: int
    deferred: list
    qc: pd.DataFrame | None = None
    recordings: pd.DataFrame | None = None  # one row per session x fiber (iblnm.recordings)
    unexpected: list = field(default_factory=list)  # eids deferred by a bug (UnexpectedError)

    def summary(self):
        """Human-readable end-of-run summary."""
        logged = set(self.log['eid'])
        n_valid = int((~self.catalog['eid'].isin(logged)).sum())
        counts = Counter(self.log['error_type'])
        lines = [
            f'sessions found: {self.n_found}, new: {self.n_new}, in catalog: {len(self.catalog)}',
            f'valid (no logged error): {n_valid}, with errors: {len(self.catalog) - n_valid}',
        ]
        n_requests = len(self.deferred) - len(self.unexpected)
        if n_requests:
            lines.append(f'deferred to the next run (request failed): {n_requests}')
        if self.unexpected:
            lines.append(
                f'UNEXPECTED errors (bugs, tracebacks in the log; retried by the next '
                f'run): {len(self.unexpected)}'
            )
        lines += [f'  {etype}: {n}' for etype, n in counts.most_common()]
        return '\n'.join(lines)


def _query_records(records, ctx, progress):
    rows, log, deferred, unexpected = [], [], [], []
    permanent = _permanent_error_types()
    for rec in tqdm(records, desc='query_database', disable=not progress, unit='session'):
        try:
            row, entries = build_session_record(rec, ctx)
        except Exception as error:  # noqa: BLE001 - a bug outside the validators
            eid = record_eid(rec)
            row = {'eid': eid}
            entries = [v.make_log_entry(eid, error=v.classify(error))]
        kinds = [entry_kind(e, permanent) for e in entries]
        if 'unexpected' in kinds or 'transient' in kinds:
            # a request failed or a bug: retry on the next run (a bug is also reported and
            # makes the stage exit non-zero); checks that ran on missing answers would mislead
            deferred.append(row['eid'])
            if 'unexpected' in kinds:
                unexpected.append(row['eid'])
            log.extend(
                as_unexpected(e) if k == 'unexpected' else e
                for e, k in zip(entries, kinds)
                if k != 'data'
            )
        else:
            rows.append(row)
            log.extend(entries)
    return rows, log, deferred, unexpected


def _extended_qc_table(catalog, ctx, log, progress):
    rows = []
    for _, session in tqdm(
        catalog.iterrows(), total=len(catalog), desc='extended QC', disable=not progress
    ):
        qc = io.get_extended_qc(session[['eid']].copy(), metadata=ctx.metadata, exlog=log)
        rows.append(qc.to_dict())
    return pd.DataFrame(rows)


def query_database(
    one=None,
    redownload=False,
    extended_qc=False,
    sessions_fpath=config.SESSIONS_FPATH,
    log_fpath=config.QUERY_DATABASE_LOG_FPATH,
    qc_fpath=config.SESSIONS_QC_FPATH,
    fibers_fpath=config.FIBERS_FPATH,
    project=config.PROJECT_NAME,
    progress=True,
    recordings_fpath=config.RECORDINGS_FPATH,
):
    """Build or update the session catalog; write it, its recordings and its error log.

    Every file is written atomically: the catalog (``sessions_fpath``, one row per session),
    the recordings table (``recordings_fpath``, one row per session x fiber:
    :mod:`iblnm.recordings`) and the error log.

    Parameters
    ----------
    one : ONE, optional
        Default :func:`iblnm.io.get_connection` (local or remote, cached per process).
    redownload : bool
        Re-query every session instead of only the eids not yet in the catalog.
    extended_qc : bool
        Also write the sessions' extended QC to ``qc_fpath``.

    Returns
    -------
    CatalogResult
    """
    one = one or io._get_default_connection()
    # the catalog's folder remembers its source and parameters: another source stops here
    provenance.start_run(one, metadata_dir=Path(sessions_fpath).parent, allow_change=redownload)
    metadata = io.get_metadata_source(one, no_cache=redownload)
    records = metadata.list_sessions(project)  # raises when nothing can be read
    existing = (
        None if redownload or not sessions_fpath.exists() else pd.read_parquet(sessions_fpath)
    )
    new_records = list_new_records(records, existing, redownload)
    subjects = {r.get('subject') for r in records}
    fibers = io.get_fiber_table(fibers_fpath=fibers_fpath, subjects=subjects, metadata=metadata)
    ctx = CatalogContext(one=one, metadata=metadata, fiber_lookup=v.fiber_hemisphere_lookup(fibers))
    rows, new_log, deferred, unexpected = _query_records(new_records, ctx, progress)
    queried = {record_eid(r) for r in new_records}
    keep = existing[~existing['eid'].isin(queried)] if existing is not None else None
    new_rows = pd.DataFrame(rows).drop(columns='roi', errors='ignore')  # roi: recordings only
    frames = [f for f in (keep, new_rows) if f is not None and len(f)]
    catalog = (
        _finalise(pd.concat(frames, ignore_index=True))
        if frames
        else _finalise(pd.DataFrame(columns=CATALOG_COLUMNS[:-2]))
    )
    old_log = util.read_log(log_fpath) if existing is not None else util.empty_log()
    log = util.concat_logs([old_log[~old_log['eid'].isin(queried)], new_log])
    recs = _recordings_table(catalog, rows, recordings_fpath, fibers)
    util.df2pqt(catalog, sessions_fpath)
    util.df2pqt(recs, recordings_fpath)
    util.write_log(log, log_fpath)
    result = CatalogResult(
        catalog, log, len(records), len(new_records), deferred, unexpected=unexpected
    )
    result.recordings = recs
    if extended_qc:
        qc_log = []
        result.qc = _extended_qc_table(catalog, ctx, qc_log, progress)
        util.df2pqt(result.qc, qc_fpath)
        if qc_log:  # a session whose QC cannot be read is a row of the stage's log
            log = util.concat_logs([log, qc_log])
            log = log.drop_duplicates(['eid', 'error_type', 'error_message'], ignore_index=True)
            result.log = log
            util.write_log(log, log_fpath)
    return result
