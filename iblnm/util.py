"""Table utilities: atomic parquet I/O, schema enforcement, error logs, catalog derivations."""

import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iblnm import config, provenance
from iblnm.validation import (
    LOG_COLUMNS,
    InvalidSessionLength,
    InvalidSessionType,
    InvalidTargetNM,
    TrueDuplicateSession,
    exception_logger,
    strip_hemisphere_suffix,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Atomic file writes
# ---------------------------------------------------------------------------
SESSION_THREADS_ENV = 'IBLNM_SESSION_THREADS'


def session_threads():
    """Threads one session may use for its independent per-(region, band) kernels.

    ``IBLNM_SESSION_THREADS`` when set (the pipeline's local worker processes set 1: the runner
    already runs one session per core), else the cores this process may use. Read at each call.

    Returns
    -------
    int
        ≥ 1.
    """
    value = os.environ.get(SESSION_THREADS_ENV, '').strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f'{SESSION_THREADS_ENV} must be a positive integer, got {value!r}')
        return threads
    if hasattr(os, 'sched_getaffinity'):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def thread_map(fn, items, threads=None):
    """``[fn(item) for item in items]``, on up to ``threads`` threads, results in item order.

    For kernels that spend their time in numpy calls that release the GIL (sorts, partitions:
    the sliding-window QC), so that a session uses the cores a lone user has. One thread (or one
    item) runs in this thread. The first exception, in item order, is raised.

    Parameters
    ----------
    fn : callable
    items : sequence
    threads : int, optional
        Default :func:`session_threads`.

    Returns
    -------
    list
    """
    items = list(items)
    threads = min(session_threads() if threads is None else int(threads), len(items))
    if threads <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    # warnings.catch_warnings is not thread-safe before Python 3.14: blocks that overlap in
    # two threads can leave the process with a filter of one of them ('ignore' for good);
    # the caller's filters are put back when the pool ends
    filters = list(warnings.filters)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix='iblnm-session') as pool:
            return list(pool.map(fn, items))
    finally:
        warnings.filters[:] = filters
        warnings._filters_mutated()


@functools.lru_cache(maxsize=1)
def _native_pools(n_modules):
    """``(per_thread, shared)`` controllers of the native pools loaded now (finding them costs
    ~5 ms): kept until ``n_modules`` (the number of imported modules) changes, as an import
    may load a library.

    ``per_thread``: OpenMP runtimes and BLAS on an OpenMP threading layer, whose limit is the
    calling thread's; ``shared``: the other BLAS pools (OpenBLAS on pthreads, MKL, BLIS),
    one per process.
    """
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    per_thread = controller.select(user_api='openmp', threading_layer='openmp')
    own = {lib.filepath for lib in per_thread.lib_controllers}
    shared = controller.select(
        filepath=[lib.filepath for lib in controller.lib_controllers if lib.filepath not in own]
    )
    return per_thread, shared


_native_lock = threading.RLock()
_native_open = []  # the limits of the native_threads blocks open now, in any thread
_native_saved = {}  # filepath -> threads of each shared pool before the first open block


def _apply_shared_limits():
    """Set the shared pools to the smallest open limit, or back to their saved state.

    Called under ``_native_lock``. A pool loaded while blocks are open is saved when first
    seen. threadpoolctl lets one "controlling" thread at a time set a process-wide OpenBLAS
    pool (another thread's call is ignored); the calls here are serialised by the lock, so
    the thread that opens or closes a block takes the control for the call and leaves it free.
    """
    from threadpoolctl import OpenBLASController

    release = getattr(OpenBLASController, 'clear_controlling_thread', None)
    if release is not None:
        release(force=True)
    try:
        for lib in _native_pools(len(sys.modules))[1].lib_controllers:
            if _native_open:
                _native_saved.setdefault(lib.filepath, lib.get_num_threads())
                lib.set_num_threads(min(_native_open))
            elif lib.filepath in _native_saved:
                lib.set_num_threads(_native_saved[lib.filepath])
        if not _native_open:
            _native_saved.clear()
    finally:
        if release is not None:
            release(force=True)


@contextlib.contextmanager
def _shared_limit(limits):
    """The process-wide pools at ``limits`` while this block (and any other) is open."""
    with _native_lock:
        _native_open.append(limits)
        try:
            _apply_shared_limits()
        except BaseException:
            _native_open.remove(limits)
            _apply_shared_limits()
            raise
    try:
        yield
    finally:
        with _native_lock:
            _native_open.remove(limits)
            _apply_shared_limits()


@contextlib.contextmanager
def native_threads(limits=1):
    """Context manager: the native thread pools (BLAS, OpenMP) limited to ``limits`` threads.

    For the many small dense problems of a session (event-kernel fits, mixed models at each
    time point), where a second BLAS thread costs more than it saves. ``None`` leaves the
    pools as they are. Through cached ``threadpoolctl`` controllers, renewed after an import
    (entering then costs ~0.03 ms instead of ~5 ms for ``threadpool_limits``).

    A pool whose limit is per thread (OpenMP) is limited and restored by the calling thread.
    A process-wide pool (OpenBLAS on pthreads, MKL) is shared, so the blocks open in all
    threads are counted: while any is open it runs the smallest of their limits, and its
    state from before the first block comes back when the last one closes, whatever order
    the threads close them in (one ``threadpool_limits`` per thread would restore another
    thread's limit).

    Parameters
    ----------
    limits : int or None
        Threads per native pool (≥ 1).
    """
    if limits is None:
        yield
        return
    if isinstance(limits, bool) or not isinstance(limits, int) or limits < 1:
        raise ValueError(f'native_threads takes a number of threads ≥ 1 or None, not {limits!r}')
    per_thread = _native_pools(len(sys.modules))[0]
    with per_thread.limit(limits=limits), _shared_limit(limits):
        yield


def atomic_write(fpath, write_fn, suffix=None):
    """Write a file atomically: ``write_fn(tmp_path)`` then rename over ``fpath``.

    A run killed mid-write leaves at most a stray ``*.tmp`` file, never a half-written
    output under the final name.
    """
    fpath = Path(fpath)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=fpath.parent, prefix=f'.{fpath.name}.', suffix=suffix or '.tmp')
    os.close(fd)
    try:
        write_fn(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        os.replace(tmp, fpath)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return fpath


def write_csv(df, fpath):
    """Write a table as CSV (no index) atomically (:func:`atomic_write`); return the path."""
    return atomic_write(fpath, lambda tmp: df.to_csv(tmp, index=False), suffix='.csv.tmp')


def remove_stale_temporaries(directory, pattern='.*.tmp'):
    """Delete temporary files left in ``directory`` by a killed :func:`atomic_write`.

    Call at the start of a stage, before any worker writes (one run per output directory).
    Returns the number of files removed.
    """
    stale = list(Path(directory).glob(pattern)) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_list_value(value):
    return isinstance(value, list | tuple | np.ndarray)


def _stringify_mixed_columns(df):
    """Convert object columns that mix scalar types to str (lists and NAs are kept)."""
    df = df.copy()
    for col in df.select_dtypes(include=object).columns:
        values = df[col]
        if values.map(_is_list_value).any():
            df[col] = values.map(lambda v: list(v) if _is_list_value(v) else v)
            continue
        kinds = {type(v) for v in values if not (v is None or (np.isscalar(v) and pd.isna(v)))}
        if len(kinds) > 1:
            df[col] = values.map(lambda v: v if v is None or pd.isna(v) else str(v))
    return df


def df2pqt(df, fpath, timestamp=None):
    """Write a DataFrame to parquet atomically (``index=False``).

    Object columns mixing scalar types are stored as strings; list columns stay lists.
    With ``timestamp``, the file name gets a ``_{timestamp}`` suffix.
    """
    fpath = Path(fpath)
    if timestamp:
        fpath = fpath.with_name(f'{fpath.stem}_{timestamp}{fpath.suffix}')
    table = _stringify_mixed_columns(df)
    record = provenance.current()

    def write(tmp):
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if record:  # the run's source, version and parameter hash (iblnm.provenance)
            metadata = {**(arrow.schema.metadata or {}), b'iblnm': json.dumps(record).encode()}
            arrow = arrow.replace_schema_metadata(metadata)
        pq.write_table(arrow, tmp)

    return atomic_write(fpath, write, suffix='.pqt.tmp')


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------
def enforce_schema(df, schema=config.SESSION_SCHEMA):
    """Return a copy of ``df`` with every schema column present and list columns as lists.

    Missing columns get the default (a fresh list per row for list columns); existing
    list columns convert arrays/tuples to lists and anything else (NaN, None) to a fresh
    copy of the default. Columns outside the schema are untouched.
    """
    df = df.copy()
    for col, (dtype, default) in schema.items():
        if dtype is list:
            if col not in df:
                df[col] = [list(default) for _ in range(len(df))]
            else:
                df[col] = [list(v) if _is_list_value(v) else list(default) for v in df[col]]
        elif col not in df:
            df[col] = default
    return df


# ---------------------------------------------------------------------------
# Error logs
# ---------------------------------------------------------------------------
def empty_log():
    """An empty error log with the :data:`LOG_COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LOG_COLUMNS})


def concat_logs(logs):
    """Stack logs (DataFrames or lists of entries), keeping exactly :data:`LOG_COLUMNS`."""
    frames = []
    for log in logs:
        if log is None:
            continue
        frame = pd.DataFrame(log) if isinstance(log, list) else log
        if len(frame):
            frames.append(frame.reindex(columns=LOG_COLUMNS))
    if not frames:
        return empty_log()
    return pd.concat(frames, ignore_index=True)[LOG_COLUMNS]


def deduplicate_log(df):
    """Drop duplicate (eid, error_type, error_message) rows."""
    return df.drop_duplicates(subset=['eid', 'error_type', 'error_message'], ignore_index=True)


def read_log(source):
    """Read a log from a path (missing file -> empty log) or pass a DataFrame through."""
    if isinstance(source, pd.DataFrame):
        return source.reindex(columns=LOG_COLUMNS)
    path = Path(source)
    if not path.exists():
        return empty_log()
    return pd.read_parquet(path).reindex(columns=LOG_COLUMNS)


def write_log(entries, fpath):
    """Write log entries (list of dicts or DataFrame) atomically, even when empty."""
    return df2pqt(concat_logs([entries]).astype(object), fpath)


def collect_session_errors(df_sessions, log_sources):
    """Attach ``logged_errors`` (list of error types per eid) from upstream logs.

    Parameters
    ----------
    df_sessions : pandas.DataFrame
        Must have an ``eid`` column.
    log_sources : iterable of path or DataFrame
        Missing files are ignored.
    """
    logs = deduplicate_log(concat_logs([read_log(s) for s in log_sources]))
    per_eid = logs.groupby('eid')['error_type'].agg(list)
    df = df_sessions.copy()
    df['logged_errors'] = [list(per_eid.get(eid, [])) for eid in df['eid']]
    return df


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------
def has_dataset(session, name):
    """True when ``name`` is in the session's ``datasets`` list."""
    datasets = session.get('datasets')
    return _is_list_value(datasets) and name in list(datasets)


def has_dataset_category(session, category):
    """True when any accepted path of the category is listed for the session."""
    return any(has_dataset(session, p) for p in config.DATASET_CATEGORIES[category])


def add_dataset_flags(df):
    """Add one boolean ``has_{category}`` column per dataset category."""
    df = df.copy()
    for category in config.DATASET_CATEGORIES:
        df[f'has_{category}'] = [has_dataset_category(row, category) for _, row in df.iterrows()]
    return df


# ---------------------------------------------------------------------------
# Derived catalog fields
# ---------------------------------------------------------------------------
@exception_logger
def get_session_type(session):
    """Set ``session_type`` from ``task_protocol`` (``<type>ChoiceWorld`` or 'Histology')."""
    protocol = session.get('task_protocol') or ''
    *choice_types, last = config.SESSION_TYPES
    matches = [t for t in choice_types if f'{t}ChoiceWorld' in protocol]
    matches += [last] if 'Histology' in protocol else []
    # neuroModulatorChoiceWorld is spelled with a capital M by some rig versions
    if 'neuroModulatorChoiceWorld' in protocol and 'neuromodulator' not in matches:
        matches.append('neuromodulator')
    if not matches:
        raise InvalidSessionType(f'{protocol!r} does not match any recognized session type')
    if any(flag in protocol for flag in config.PROTOCOL_RED_FLAGS):
        raise InvalidSessionType(f'{protocol!r} contains red flags {config.PROTOCOL_RED_FLAGS}')
    if len(matches) > 1:
        raise InvalidSessionType(f'{protocol!r} matches multiple session types {matches}')
    session['session_type'] = matches[0]
    return session


def target_nm_labels(regions, nm):
    """``['VTA-r', 'SNc']``, ``'DA'`` -> ``['VTA-DA', 'SNc-DA']`` (None for an empty region)."""
    regions = list(regions) if _is_list_value(regions) else []
    return [f'{strip_hemisphere_suffix(r)}-{nm}' if r else None for r in regions]


@exception_logger
def get_targetNM(session):  # noqa: N802 - name from the original API
    """Set ``target_NM`` = bare region + '-' + NM per region (None for an empty region).

    ``target_NM`` is assigned before validation so the parallel lists stay aligned;
    any label outside ``VALID_TARGETNMS`` then raises :class:`InvalidTargetNM`.
    """
    targets = target_nm_labels(session.get('brain_region'), session.get('NM'))
    session['target_NM'] = targets
    invalid = [t for t in targets if t is not None and t not in config.VALID_TARGETNMS]
    if invalid:
        raise InvalidTargetNM(f'invalid target-NM(s): {", ".join(invalid)}')
    return session


@exception_logger
def get_session_length(session):
    """Set ``session_length`` (s) from ISO start/end times on the same calendar day."""
    try:
        start = pd.Timestamp(session.get('start_time'))
        end = pd.Timestamp(session.get('end_time'))
    except (ValueError, TypeError) as error:
        raise InvalidSessionLength(f'cannot parse start/end time: {error}') from None
    if pd.isna(start) or pd.isna(end):
        raise InvalidSessionLength('start or end time missing')
    if start.date() != end.date():
        raise InvalidSessionLength(f'start {start} and end {end} fall on different days')
    session['session_length'] = (end - start).total_seconds()
    return session


def add_day_and_session_numbers(df):
    """Add ``day_n`` (days since the subject's first session) and ``session_n``.

    ``session_n`` is the dense rank of the start time within the subject (1-based).
    Always computed over the whole catalog passed in.
    """
    df = df.copy()
    start = pd.to_datetime(df['start_time'], format='ISO8601')
    day = start.dt.normalize()
    first = day.groupby(df['subject']).transform('min')
    df['day_n'] = (day - first).dt.days.astype(int)
    df['session_n'] = start.groupby(df['subject']).rank(method='dense').astype(float)
    return df


def validate_parallel_lists(df, columns=config.PARALLEL_LIST_COLUMNS, verbose=True):
    """Drop rows whose parallel list columns differ in length (a scalar counts as 1)."""

    def length(v):
        return len(v) if _is_list_value(v) else 1

    lengths = np.array([[length(v) for v in df[c]] for c in columns])
    ok = (lengths == lengths[0]).all(axis=0) if len(df) else np.array([], bool)
    if verbose and (~ok).any():
        log.warning(f'validate_parallel_lists: dropped {(~ok).sum()} rows with mismatched lists')
    return df[ok].copy()


@exception_logger
def resolve_duplicate_group(group, disqualifying_errors=None):
    """Pick one session among sessions sharing (subject, day_n).

    Rows whose ``logged_errors`` contain a disqualifying type are "bad". One good row
    wins; none -> the first row; several -> :class:`TrueDuplicateSession` with the first
    good row as ``fallback_row``.
    """
    if disqualifying_errors is None:
        disqualifying_errors = {'MissingRawData', 'InsufficientTrials', 'TrialsNotInPhotometryTime'}
    if len(group) == 1:
        return group.iloc[0]
    good = group[[not set(e).intersection(disqualifying_errors) for e in group['logged_errors']]]
    if len(good) == 0:
        return group.iloc[0]
    if len(good) == 1:
        return good.iloc[0]
    raise TrueDuplicateSession(
        f'{len(good)} valid sessions for {group["subject"].iloc[0]} on one day',
        fallback_row=good.iloc[0],
    )


def clean_sessions(
    df,
    exclude_subjects=config.SUBJECTS_TO_EXCLUDE,
    exclude_session_types=config.EXCLUDE_SESSION_TYPES,
    verbose=True,
):
    """Drop excluded subjects and session types, logging how many were removed."""
    keep_subject = ~df['subject'].isin(exclude_subjects)
    keep_type = ~df['session_type'].isin(exclude_session_types)
    if verbose:
        log.info(
            f'clean_sessions: {(~keep_subject).sum()} excluded subjects, '
            f'{(keep_subject & ~keep_type).sum()} excluded session types'
        )
    return df[keep_subject & keep_type].copy()
