"""What every per-session stage shares: session selection, outcomes, execution, summary.

A stage is a module-level function ``fn(job) -> SessionOutcome`` over jobs
``(catalog row as dict, Connection, stage options)``. :func:`run_jobs` maps it with the
executor (serial, processes or Dask) and the parent assembles the tables, so every way
of running writes the same outputs.
"""

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from iblnm import config, util
from iblnm import validation as v
from iblnm.pipeline.executor import Connection, map_sessions


@dataclass
class SessionOutcome:
    """One session's result, returned to the parent (plain, picklable data).

    Attributes
    ----------
    eid : str
    rows : list of dict
        Table rows this session contributes (QC rows, a performance row ...).
    errors : list of dict
        Error-log entries (:data:`iblnm.validation.LOG_COLUMNS`).
    fatal : str or None
        Type of the error that stopped the session, if any.
    """

    eid: str
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    fatal: str | None = None
    attempts: int = 1

    @property
    def kind(self):
        """None (completed), or the failure kind of :func:`iblnm.validation.failure_kind`."""
        return None if self.fatal is None else v.failure_kind(self.fatal)


def failed(eid, error):
    """Outcome of a session stopped by ``error`` before anything was produced.

    ``error`` is classified (:func:`iblnm.validation.classify`): a bug is logged as
    ``UnexpectedError``, a request/I/O failure as a transient error.
    """
    error = v.classify(error)
    return SessionOutcome(
        eid, errors=[v.make_log_entry(eid, error=error)], fatal=type(error).__name__
    )


def select_sessions(
    catalog,
    upstream_logs=(),
    blockers=frozenset(),
    session_types=config.SESSION_TYPES_TO_ANALYZE,
    exclude_subjects=config.SUBJECTS_TO_EXCLUDE,
):
    """Sessions of analysable types and subjects whose upstream logs hold no blocker.

    A logged error blocks when its type or one of its base classes is in ``blockers``
    (:func:`iblnm.validation.is_blocked`). ``catalog`` must have passed :func:`iblnm.validation.validate_catalog` (schema columns
    present); an empty catalog gives an empty selection.
    """
    df = catalog[catalog['session_type'].isin(session_types).to_numpy(bool)]
    df = df[~df['subject'].isin(exclude_subjects).to_numpy(bool)]
    if not blockers:
        return df
    df = util.collect_session_errors(df, upstream_logs)
    blocked = [bool(v.is_blocked(errors, blockers)) for errors in df['logged_errors']]
    return df[~pd.Series(blocked, index=df.index, dtype=bool)].drop(columns='logged_errors')


def read_catalog(sessions_fpath):
    """The catalog parquet file; an unreadable file raises :class:`InvalidCatalog`."""
    try:
        return pd.read_parquet(sessions_fpath)
    except Exception as error:  # noqa: BLE001 - pyarrow/OS errors: the library's name is kept
        raise v.wrap(v.InvalidCatalog, error, str(sessions_fpath)) from error


def stage_sessions(
    one, catalog, sessions_fpath, upstream_logs=(), blockers=frozenset(), redo=False
):
    """A stage's ONE connection, selected sessions and the catalog's log entries.

    ``one`` defaults to :func:`iblnm.io.get_connection` (cached per process); ``catalog``
    (a DataFrame) defaults to the parquet file at ``sessions_fpath``. The run's provenance
    is started here (:func:`iblnm.provenance.start_run`): a catalog read from a file is
    checked against its output root's record (``redo`` adopts a new one). The catalog is
    validated at this boundary (:func:`iblnm.validation.validate_catalog`: lower-case eids,
    one row per eid, aligned parallel lists); sessions it logs are not selected and its
    entries go into the stage's log. Raises :class:`InvalidCatalog` when the catalog cannot
    be used at all.
    """
    from iblnm import provenance
    from iblnm.io import _get_default_connection

    one = one or _get_default_connection()
    root = Path(sessions_fpath).parent if catalog is None else None
    provenance.start_run(one, metadata_dir=root, allow_change=redo)
    catalog = read_catalog(sessions_fpath) if catalog is None else catalog
    catalog, catalog_log = v.validate_catalog(catalog)
    return one, select_sessions(catalog, upstream_logs, blockers=blockers), catalog_log


def make_jobs(sessions, one, options=None):
    """One job per session: (row dict, Connection, options)."""
    connection = Connection.from_one(one)
    return [(row.to_dict(), connection, options or {}) for _, row in sessions.iterrows()]


def session_length(row):
    """Default cost of a session's job: the recording's length (s, NaN when unknown)."""
    return row.get('session_length')


def longest_first(jobs, cost=session_length):
    """Jobs ordered by decreasing ``cost(row)`` (unknown costs last, catalog order kept).

    Starting the expensive sessions first leaves cheap ones to fill the end of a parallel
    run instead of one long session running alone (longest-processing-time-first).
    """

    def key(job):
        value = pd.to_numeric(cost(job[0]), errors='coerce')
        return -value if pd.notna(value) else float('inf')

    return sorted(jobs, key=key)


def with_retries(fn, job, attempts=None, backoff=None):
    """``fn(job)``, run again after a transient failure (request, download, I/O).

    Up to ``attempts`` runs (default ``config.RETRY_ATTEMPTS``), waiting ``backoff`` s
    (default ``config.RETRY_BACKOFF_S``), doubled after every failed attempt. Returns the
    last outcome, with :attr:`SessionOutcome.attempts` set.
    """
    attempts = config.RETRY_ATTEMPTS if attempts is None else attempts
    delay = config.RETRY_BACKOFF_S if backoff is None else backoff
    for attempt in range(1, max(attempts, 1) + 1):
        outcome = fn(job)
        outcome.attempts = attempt
        if outcome.kind != 'transient' or attempt >= attempts:
            return outcome
        time.sleep(delay)
        delay *= 2
    return outcome


def run_context():
    """``(settings, provenance record)`` of the run in progress, for its workers."""
    from iblnm import provenance, settings

    return settings.current(), provenance.current()


def in_run_context(context, fn, job):
    """``fn(job)`` under the run's settings and provenance record (:func:`run_context`).

    A local worker process is forked from the run and has both already; a Dask worker is a
    process of its own, which would otherwise resolve the settings from its own environment
    (another settings file, no ``[qc_rules]``) and record those in the session's files. The
    worker's own state is restored afterwards.
    """
    from iblnm import provenance, settings

    run_settings, record = context
    with settings.using(run_settings), provenance.recording(record):
        return fn(job)


def run_jobs(
    fn,
    jobs,
    workers=1,
    scheduler=None,
    desc=None,
    progress=True,
    cost=session_length,
    stop_on=(v.OutputWriteError.__name__,),
):
    """Run a stage function over jobs, costliest first; outcomes in the jobs' order.

    ``cost(row)`` estimates a session's relative cost for the scheduling (any unit). A
    transient failure is retried (:func:`with_retries`). An outcome whose fatal error is in
    ``stop_on`` (an output that cannot be written: disk full, permissions) stops the run:
    the sessions not started yet get no outcome, and the next run does them. A worker
    process that dies (``BrokenProcessPool``) stops the run the same way, its sessions
    logged as ``UnexpectedError``.
    """
    from concurrent.futures.process import BrokenProcessPool

    order = {job[0]['eid']: i for i, job in enumerate(jobs)}
    outcomes = []
    results = map_sessions(
        functools.partial(in_run_context, run_context(), functools.partial(with_retries, fn)),
        longest_first(jobs, cost),
        workers=workers,
        scheduler=scheduler,
        desc=desc,
        progress=progress,
    )
    try:
        for outcome in results:
            outcomes.append(outcome)
            if outcome.fatal in stop_on:
                break
    except BrokenProcessPool as error:
        done = {o.eid for o in outcomes}
        lost = v.UnexpectedError(f'a worker process died: {v.describe(error)}')
        outcomes += [failed(job[0]['eid'], lost) for job in jobs if job[0]['eid'] not in done]
    finally:
        results.close()
    return sorted(outcomes, key=lambda o: order.get(o.eid, len(order)))


@dataclass
class StageResult:
    """Outcome of one stage run; ``table`` and ``log`` are what was written."""

    name: str
    outcomes: list
    n_selected: int
    table: pd.DataFrame
    log: pd.DataFrame
    n_skipped: int = 0
    write_error: str | None = None  # the stage's tables could not be written

    def of_kind(self, kind):
        """Outcomes whose fatal error is of ``kind`` ('data', 'transient', 'unexpected' ...)."""
        return [o for o in self.outcomes if o.kind == kind]

    @property
    def n_not_run(self):
        """Sessions to process that got no outcome (the stage stopped early)."""
        return max(self.n_selected - self.n_skipped - len(self.outcomes), 0)

    @property
    def exit_code(self):
        """0 when only sessions failed on their data (or transiently, to be retried next run);
        1 for a bug (UnexpectedError), an output that could not be written, or a stop."""
        stopped = self.of_kind('output') or self.write_error or self.n_not_run
        return 1 if (self.of_kind('unexpected') or stopped) else 0

    def summary(self):
        """Processed / skipped / failed by type, and logged (non-fatal) errors by type.

        Transient failures (retried by the next run) and unexpected errors (bugs) are
        counted apart from the data failures.
        """
        fatal = Counter(o.fatal for o in self.outcomes if o.fatal)
        n_failed = sum(fatal.values())
        logged = Counter(self.log['error_type']) - fatal
        lines = [
            f'{self.name}: sessions selected {self.n_selected}, processed now '
            f'{len(self.outcomes)}, skipped (already done) {self.n_skipped}',
            f'  completed {len(self.outcomes) - n_failed}, failed {n_failed}',
        ]
        data = Counter(o.fatal for o in self.of_kind('data'))
        lines += [f'  failed  {etype}: {n}' for etype, n in data.most_common()]
        transient = Counter(o.fatal for o in self.of_kind('transient'))
        if transient:
            detail = ', '.join(f'{etype} {n}' for etype, n in transient.most_common())
            lines.append(
                f'  transient (retried {config.RETRY_ATTEMPTS}x, not done: the next run '
                f'retries them): {sum(transient.values())} ({detail})'
            )
        unexpected = self.of_kind('unexpected')
        if unexpected:
            lines.append(
                f'  UNEXPECTED errors (bugs, tracebacks in the log; retried by the next '
                f'run): {len(unexpected)}'
            )
        for outcome in self.of_kind('output'):
            message = next(
                (e['error_message'] for e in outcome.errors if e['error_type'] == outcome.fatal), ''
            )
            lines.append(f'  STOPPED: output could not be written ({outcome.eid}): {message}')
        if self.n_not_run:
            lines.append(f'  not run (stage stopped; the next run does them): {self.n_not_run}')
        if self.write_error:
            lines.append(f'  STOPPED: the stage tables could not be written: {self.write_error}')
        lines += [f'  logged  {etype}: {n}' for etype, n in logged.most_common() if n > 0]
        return '\n'.join(lines)


def gather(outcomes, catalog_log=()):
    """(table of all rows, log of all errors) from outcomes (catalog entries first)."""
    table = pd.DataFrame([row for o in outcomes for row in o.rows])
    log = util.concat_logs([list(catalog_log), [entry for o in outcomes for entry in o.errors]])
    return table, log


def run_stage(
    name,
    fn,
    one=None,
    catalog=None,
    sessions_fpath=config.SESSIONS_FPATH,
    *,
    outputs,
    upstream_logs=(),
    blockers=frozenset(),
    redo=False,
    workers=1,
    scheduler=None,
    progress=True,
    options=None,
    cost=session_length,
    temporaries=None,
    prepare=None,
    resume=None,
    finish=None,
):
    """The sequence of every per-session stage: select, skip what is done, run, gather, write.

    :func:`stage_sessions` (connection, provenance, validated catalog, selection) ->
    stale temporaries removed -> ``prepare`` -> the sessions ``resume`` finds done are not run again (unless ``redo``) ->
    :func:`make_jobs` / :func:`run_jobs` over the others -> :func:`gather` (catalog log
    first, then every session in catalog order, the resumed ones included) -> ``finish`` ->
    :func:`write_outputs`. Each stage module calls it with its own parts.

    Parameters
    ----------
    name : str
        The stage's name (progress bar, summary).
    fn : callable
        ``fn(job) -> SessionOutcome``, module-level (picklable for worker processes).
    outputs : list of (callable, {'table', 'log'}, path)
        Written in order by ``write(frame, path)`` (each atomic); a failed write stops the
        others and is reported in :attr:`StageResult.write_error`.
    upstream_logs, blockers, redo
        See :func:`stage_sessions` (``redo`` also runs the sessions ``resume`` finds done).
    options : dict or callable, optional
        The jobs' stage options, or ``options(todo, one) -> dict`` of the sessions to run.
    cost : callable
        ``cost(row)``, the scheduling order of :func:`run_jobs`.
    temporaries : path, optional
        Folder whose temporary files left by a killed run are removed first (they are never
        read as valid outputs; :func:`iblnm.util.remove_stale_temporaries`).
    prepare : callable, optional
        ``prepare(selected, one) -> selected`` before anything runs (columns to add, stale
        temporary files to remove).
    resume : callable, optional
        ``resume(selected, one) -> {eid: SessionOutcome}`` of the sessions already done,
        read back from their outputs so that the tables always cover every session.
    finish : callable, optional
        ``finish(table) -> table`` before writing (column order, sorting).

    Returns
    -------
    StageResult
    """
    one, selected, catalog_log = stage_sessions(
        one, catalog, sessions_fpath, upstream_logs, blockers=blockers, redo=redo
    )
    if temporaries is not None:
        util.remove_stale_temporaries(temporaries)
    if prepare is not None:
        selected = prepare(selected, one)
    previous = {} if redo or resume is None else resume(selected, one)
    todo = selected[~selected['eid'].isin(list(previous))]
    jobs = make_jobs(todo, one, options(todo, one) if callable(options) else options)
    outcomes = run_jobs(fn, jobs, workers, scheduler, name, progress, cost=cost)
    position = {eid: i for i, eid in enumerate(selected['eid'])}  # catalog order
    everything = sorted([*outcomes, *previous.values()], key=lambda o: position[o.eid])
    table, log = gather(everything, catalog_log)
    table = table if finish is None else finish(table)
    frames = {'table': table, 'log': log}
    problem = write_outputs([(write, frames[what], path) for write, what, path in outputs])
    return StageResult(
        name, outcomes, len(selected), table, log, n_skipped=len(previous), write_error=problem
    )


def write_outputs(writes):
    """Run ``[(write_fn, table, path), ...]``; return None, or the message of the first
    write that failed (:class:`OutputWriteError`: disk full, permissions ...)."""
    for write, table, path in writes:
        try:
            write(table, path)
        except Exception as error:  # noqa: BLE001 - reported in the summary, the stage stops
            return f'{path}: {v.describe(error)}'
    return None
