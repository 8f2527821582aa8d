"""What every per-session stage shares: session selection, outcomes, execution, summary.

A stage is a module-level function ``fn(job) -> SessionOutcome`` over jobs
``(catalog row as dict, Connection, stage options)``. :func:`run_jobs` maps it with the
executor (serial, processes or Dask) and the parent assembles the tables, so every way
of running writes the same outputs.
"""

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


def failed(eid, error):
    """Outcome of a session stopped by ``error`` before anything was produced."""
    return SessionOutcome(
        eid, errors=[v.make_log_entry(eid, error=error)], fatal=type(error).__name__
    )


def select_sessions(catalog, upstream_logs=(), blockers=frozenset(),
                    session_types=config.SESSION_TYPES_TO_ANALYZE,
                    exclude_subjects=config.SUBJECTS_TO_EXCLUDE):  # fmt: skip
    """Sessions of analysable types and subjects whose upstream logs hold no blocker.

    A logged error blocks when its type or one of its base classes is in ``blockers``
    (:func:`iblnm.validation.is_blocked`).
    """
    df = catalog[catalog['session_type'].isin(session_types)]
    df = df[~df['subject'].isin(exclude_subjects)]
    if not blockers:
        return df
    df = util.collect_session_errors(df, upstream_logs)
    blocked = df['logged_errors'].map(lambda errors: v.is_blocked(errors, blockers))
    return df[~blocked].drop(columns='logged_errors')


def stage_sessions(one, catalog, sessions_fpath, upstream_logs=(), blockers=frozenset(),
                   redo=False):  # fmt: skip
    """A stage's ONE connection and selected sessions (see :func:`select_sessions`).

    ``one`` defaults to :func:`iblnm.io.get_connection` (cached per process); ``catalog``
    (a DataFrame) defaults to the parquet file at ``sessions_fpath``. The run's provenance
    is started here (:func:`iblnm.provenance.start_run`): a catalog read from a file is
    checked against its output root's record (``redo`` adopts a new one).
    """
    from iblnm import provenance
    from iblnm.io import _get_default_connection

    one = one or _get_default_connection()
    root = Path(sessions_fpath).parent if catalog is None else None
    provenance.start_run(one, metadata_dir=root, allow_change=redo)
    catalog = pd.read_parquet(sessions_fpath) if catalog is None else catalog
    return one, select_sessions(catalog, upstream_logs, blockers=blockers)


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


def run_jobs(fn, jobs, workers=1, scheduler=None, desc=None, progress=True,
             cost=session_length):  # fmt: skip
    """Run a stage function over jobs, costliest first; outcomes in the jobs' order.

    ``cost(row)`` estimates a session's relative cost for the scheduling (any unit).
    """
    order = {job[0]['eid']: i for i, job in enumerate(jobs)}
    outcomes = list(map_sessions(fn, longest_first(jobs, cost), workers=workers,
                                 scheduler=scheduler, desc=desc, progress=progress))  # fmt: skip
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

    def summary(self):
        """Processed / skipped / failed by type, and logged (non-fatal) errors by type."""
        fatal = Counter(o.fatal for o in self.outcomes if o.fatal)
        n_failed = sum(fatal.values())
        logged = Counter(self.log['error_type']) - fatal
        lines = [
            f'{self.name}: sessions selected {self.n_selected}, processed now '
            f'{len(self.outcomes)}, skipped (already done) {self.n_skipped}',
            f'  completed {len(self.outcomes) - n_failed}, failed {n_failed}',
        ]
        lines += [f'  failed  {etype}: {n}' for etype, n in fatal.most_common()]
        lines += [f'  logged  {etype}: {n}' for etype, n in logged.most_common() if n > 0]
        return '\n'.join(lines)


def gather(outcomes):
    """(table of all rows, log of all errors) from outcomes."""
    table = pd.DataFrame([row for o in outcomes for row in o.rows])
    log = util.concat_logs([[entry for o in outcomes for entry in o.errors]])
    return table, log
