"""Stage 3: task performance and psychometric fits (data/performance.pqt).

Usage: python scripts/task.py [--workers N | --scheduler ADDRESS]
"""

from iblnm import config
from iblnm.pipeline.cli import exit_now, require_catalog, run_stage_safely, stage_parser
from iblnm.pipeline.task import run_task_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    if require_catalog():
        return 1
    result = run_stage_safely(run_task_stage, workers=args.workers, scheduler=args.scheduler)
    if result is None:
        return 1
    print(result.summary())
    print(f'outputs: {config.PERFORMANCE_FPATH}, {config.TASK_LOG_FPATH}')
    return result.exit_code


if __name__ == '__main__':
    exit_now(main())
