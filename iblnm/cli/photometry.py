"""Stage 2: QC, preprocess and extract peri-event responses for every catalog session.

Usage: python scripts/photometry.py [--redo] [--workers N | --scheduler ADDRESS]
Sessions that already have an HDF5 file in data/sessions are skipped unless --redo.
"""

from iblnm import config
from iblnm.pipeline.cli import exit_now, require_catalog, run_stage_safely, stage_parser
from iblnm.pipeline.photometry import run_photometry_stage


def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument('--redo', action='store_true', help='reprocess sessions already done')
    args = parser.parse_args(argv)
    if require_catalog():
        return 1
    result = run_stage_safely(
        run_photometry_stage, redo=args.redo, workers=args.workers, scheduler=args.scheduler
    )
    if result is None:
        return 1
    print(result.summary())
    print(
        f'outputs: {config.SESSIONS_H5_DIR}, {config.QCPHOTOMETRY_FPATH}, {config.PHOTOMETRY_LOG_FPATH}'
    )
    return result.exit_code


if __name__ == '__main__':
    exit_now(main())
