"""Run the pipeline stages in order: each is the ``main(argv)`` of :mod:`iblnm.cli.{stage}`.

Exit codes: 0 when every stage succeeded (sessions may have failed on their data, or
transiently: they are retried by the next run); 1 when a stage failed (an unexpected
error, an output that could not be written, a crash) or its script is missing (the runner
stops at the first failure unless ``skip_errors``); 130 after SIGINT, 143 after SIGTERM
(the pool workers are terminated first; see :mod:`iblnm.pipeline.executor`).
"""

import importlib
import sys
import time
import traceback
from collections import Counter

from iblnm import config
from iblnm import validation as v
from iblnm.pipeline.executor import Terminated, terminate_on_signals

STAGES = ['query_database', 'photometry', 'task', 'wheel', 'video', 'dataset_overview']
COMMAND_PACKAGE = 'iblnm.cli'  # a stage is the main(argv) of COMMAND_PACKAGE.{stage}
PARALLEL_STAGES = ('photometry', 'task', 'wheel', 'video')


def select_stages(start=None, only=None, stages=STAGES):
    """Stages to run: all, from ``start`` on, or only ``only``."""
    if start and only:
        raise ValueError('--from and --only are mutually exclusive')
    for name in (start, only):
        if name and name not in stages:
            raise ValueError(f'unknown stage {name!r}; stages: {", ".join(stages)}')
    if only:
        return [only]
    return stages[stages.index(start) :] if start else list(stages)


def _stage_main(stage):
    """The ``main(argv)`` of a stage's command module (None when there is no such module)."""
    name = f'{COMMAND_PACKAGE}.{stage}'
    try:
        return importlib.import_module(name).main
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        return None


def run_stage(stage, extra_args=()):
    """Run one stage's command ``main(argv)`` in this process.

    Returns (status, seconds) with status 'ok', 'failed' or 'missing'. Stages share this
    process so the heavy imports (ONE, brainbox, ibllib) are paid once per run, not once per
    stage; an exception or a non-zero exit of a stage is reported as 'failed' and never
    propagates.
    """
    t0 = time.perf_counter()
    try:
        main = _stage_main(stage)
        if main is None:
            return 'missing', 0.0
        code = main(list(extra_args))
    except SystemExit as exit_:
        code = exit_.code
    except Exception:  # noqa: BLE001 - a crashing stage is a failed stage, not a crashed runner
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    return ('ok' if code in (0, None) else 'failed'), time.perf_counter() - t0


def run_pipeline(start=None, only=None, skip_errors=False, stage_args=None, stages=None):
    """Run the selected stages, print per-stage times and a summary; return the exit code.

    ``stages`` (default :data:`STAGES`) is the ordered list ``start``/``only`` refer to.
    """
    stage_args = stage_args or {}
    results, interrupted = [], None
    with terminate_on_signals():
        try:
            for stage in select_stages(start, only, stages or STAGES):
                print(f'\n=== {stage} ===', flush=True)
                started = time.time()
                status, seconds = run_stage(stage, stage_args.get(stage, ()))
                results.append((stage, status, seconds, started))
                if status == 'missing':
                    print(f'SKIP {stage}: {COMMAND_PACKAGE}.{stage} is missing')
                print(f'--- {stage}: {status} ({seconds:.1f} s)', flush=True)
                if status != 'ok' and not skip_errors:
                    break
        except KeyboardInterrupt as error:  # SIGINT, or SIGTERM (Terminated): workers are gone
            interrupted = error
    print('\nPipeline summary')
    for stage, status, seconds, started in results:
        print(
            f'  {stage:<18} {status:<8} {seconds:7.1f} s  {failure_summary(stage, since=started)}'
        )
    if interrupted is not None:
        print(f'  interrupted ({interrupted or "SIGINT"}): the next run resumes')
        return 143 if isinstance(interrupted, Terminated) else 130
    return 1 if any(status != 'ok' for _, status, _, _ in results) else 0


def failure_summary(stage, logs=config.STAGE_LOG_FPATHS, since=None):
    """'N sessions with errors: Type n, ...' from a stage's log ('' when it has none).

    Counts are sessions per error type (a session logging a type twice counts once). With
    ``since`` (a ``time.time()``), a log file older than that was not written by this run
    (the stage failed before writing it) and is not read.
    """
    from iblnm import util

    if stage not in logs:
        return ''
    path = logs[stage]
    if since is not None and (not path.exists() or path.stat().st_mtime < since - 1):
        return 'no log written by this run'
    log = util.read_log(path).drop_duplicates(['eid', 'error_type'])
    if log.empty:
        return 'no errors'
    counts = log['error_type'].value_counts()
    detail = ', '.join(f'{etype} {n}' for etype, n in counts.items())
    text = f'{log["eid"].nunique()} sessions with errors: {detail}'
    kinds = Counter(v.failure_kind(etype) for etype in log['error_type'])
    if kinds['transient']:
        text += f' [transient {kinds["transient"]}: retried by the next run]'
    if kinds['unexpected']:
        text += f' [UNEXPECTED {kinds["unexpected"]}: bugs, see the tracebacks in the log]'
    return text


def executor_args(workers=1, scheduler=None):
    """Per-stage extra arguments forwarding the executor options to the parallel stages."""
    args = ['--scheduler', scheduler] if scheduler else ['--workers', str(workers)]
    return {stage: args for stage in PARALLEL_STAGES}
