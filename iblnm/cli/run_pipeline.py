"""Run the whole iblnm pipeline, or resume from / run a single stage.

Usage: python scripts/run_pipeline.py [--from STAGE | --only STAGE] [--skip-errors]
                                     [--workers N | --scheduler ADDRESS]
"""

import argparse

from iblnm import config
from iblnm.io import get_connection
from iblnm.pipeline.cli import exit_now
from iblnm.pipeline.runner import STAGES, executor_args, run_pipeline


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--from', dest='start', choices=STAGES, help='resume from this stage')
    group.add_argument('--only', choices=STAGES, help='run this stage only')
    parser.add_argument('--skip-errors', action='store_true', help='continue past failed stages')
    parser.add_argument('--workers', type=int, default=1, help='worker processes per stage')
    parser.add_argument('--scheduler', default=None, help='Dask distributed scheduler address')
    args = parser.parse_args(argv)
    one = get_connection()  # builds the demo dataset on first use when no Alyx is configured
    print(f'data source: {"local cache " + str(one.cache_dir) if one.offline else "Alyx"}')
    stage_args = executor_args(args.workers, args.scheduler)
    code = run_pipeline(
        start=args.start, only=args.only, skip_errors=args.skip_errors, stage_args=stage_args
    )
    print(f'outputs: {config.METADATA_DIR}, {config.DATA_DIR}, figures in {config.FIGURES_DIR}')
    return code


if __name__ == '__main__':
    exit_now(main())
