"""Export every processed session as one NWB file (ndx-fiber-photometry, DANDI layout).

Usage: iblnm export-nwb [--redo] [--out DIR] [--workers N | --scheduler ADDRESS]
Needs the photometry stage's HDF5 files (make run). Files already exported are skipped
unless --redo. Outputs: data/nwb/sub-*/...nwb, data/nwb_export.pqt, metadata/export_nwb_log.pqt.
"""

from pathlib import Path

from iblnm import config
from iblnm.pipeline.cli import require_catalog, stage_parser
from iblnm.pipeline.export_nwb import run_export_stage, summary


def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument('--redo', action='store_true', help='re-export sessions already done')
    parser.add_argument('--out', type=Path, default=None, help='output folder (default data/nwb)')
    args = parser.parse_args(argv)
    if require_catalog():
        return 1
    out = args.out or Path(config.NWB_DIR)
    result = run_export_stage(
        redo=args.redo, workers=args.workers, scheduler=args.scheduler, out_dir=out
    )
    print(summary(result))
    print(f'outputs: {out}, {config.NWB_EXPORT_FPATH}, {config.NWB_LOG_FPATH}')
    return 0
