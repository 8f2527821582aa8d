"""Stage 2: QC, preprocess and extract peri-event responses for every catalog session.

Usage: python scripts/photometry.py [--redo] [--workers N | --scheduler ADDRESS]
Sessions with an HDF5 file in data/sessions are skipped unless --redo.
"""

import argparse
import sys

from iblnm import config
from iblnm.pipeline.photometry import run_photometry_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--redo', action='store_true', help='reprocess sessions already done')
    parser.add_argument('--workers', type=int, default=1, help='local worker processes')
    parser.add_argument('--scheduler', default=None, help='Dask distributed scheduler address')
    args = parser.parse_args(argv)
    if not config.SESSIONS_FPATH.exists():
        print(
            f'{config.SESSIONS_FPATH} not found: run scripts/query_database.py first',
            file=sys.stderr,
        )
        return 1
    result = run_photometry_stage(redo=args.redo, workers=args.workers, scheduler=args.scheduler)
    print(result.summary())
    print(
        f'outputs: {config.SESSIONS_H5_DIR}, {config.QCPHOTOMETRY_FPATH}, {config.PHOTOMETRY_LOG_FPATH}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
