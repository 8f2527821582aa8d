"""Stage 4: per-trial wheel velocity, appended to each session's HDF5 file.

Usage: python scripts/wheel.py [--workers N | --scheduler ADDRESS]
"""

from iblnm import config
from iblnm.pipeline.cli import exit_now, require_catalog, run_stage_safely, stage_parser
from iblnm.pipeline.wheel import run_wheel_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    if require_catalog():
        return 1
    result = run_stage_safely(run_wheel_stage, workers=args.workers, scheduler=args.scheduler)
    if result is None:
        return 1
    print(result.summary())
    print(f'outputs: wheel/ group of {config.SESSIONS_H5_DIR}/*.h5, {config.WHEEL_LOG_FPATH}')
    return result.exit_code


if __name__ == '__main__':
    exit_now(main())
