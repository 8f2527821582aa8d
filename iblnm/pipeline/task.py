"""Stage 3, task: behavioural performance and psychometric fits per session.

Per session: load trials (fatal when missing), validate the trial count (fatal) and the
event completeness (logged), compute the basic performance and the 50/50 psychometric
fit, check the block structure (BlockStructureBug is logged) and, for biased/ephys
sessions, fit each block and the bias shift. Writes ``data/performance.pqt`` (one row
per session that got past the fatal checks) and ``metadata/task_log.pqt``.
"""

from iblnm import config, task, util
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.pipeline.stage import (
    SessionOutcome,
    failed,
    run_stage,
)

STAGE = 'task'


def process_session(job):
    """Performance row and errors of one session; never raises.

    The trials table is validated when loaded (required columns and types:
    :func:`iblnm.validation.validate_trials_table`); any other failure is classified
    (:func:`iblnm.validation.classify`: a bug is an ``UnexpectedError``) and costs this
    session its row, never the stage.
    """
    row, connection, _ = job
    eid = str(row['eid'])
    ps = None
    try:
        ps = PhotometrySession(row, one=connection.connect())
        ps.load_trials()
        ps.validate_n_trials()
        for check in (ps.validate_event_completeness, ps.validate_block_structure):
            try:
                check()
            except v.IblnmError as error:
                ps.log_error(error)
        performance = {
            'eid': eid,
            'n_trials': len(ps.trials),
            'contrasts': task.get_contrast_set(ps.trials),
            **ps.basic_performance(),
        }
        performance.update(ps.block_performance())
    except Exception as error:  # noqa: BLE001 - fatal: no performance row
        outcome = failed(eid, error)
        outcome.errors = (ps.errors if ps is not None else []) + outcome.errors
        return outcome
    return SessionOutcome(eid, rows=[performance], errors=list(ps.errors))


def expected_cost(row):
    """Relative cost of a session: its length (s), x3 for the two extra block fits of a
    biased/ephys session (psychometric fits dominate this stage: measured 0.35-0.67 s vs
    0.11-0.19 s for training sessions on the demo)."""
    n_fits = 3 if row.get('session_type') in config.BLOCK_SESSION_TYPES else 1
    length = row.get('session_length')
    return float('nan') if length is None else n_fits * float(length)


def run_task_stage(
    one=None,
    catalog=None,
    workers=1,
    scheduler=None,
    performance_fpath=config.PERFORMANCE_FPATH,
    log_fpath=config.TASK_LOG_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    progress=True,
):
    """Run the task stage over the analysable sessions and write its outputs atomically."""
    return run_stage(
        STAGE,
        process_session,
        one,
        catalog,
        sessions_fpath,
        outputs=[(util.df2pqt, 'table', performance_fpath), (util.write_log, 'log', log_fpath)],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        cost=expected_cost,
    )
