"""Stage 5: dataset overview (metadata/errors.pqt and figures/dataset_overview/).

Usage: python scripts/dataset_overview.py
"""

from iblnm.pipeline.cli import exit_now, require_catalog, run_stage_safely, stage_parser
from iblnm.pipeline.overview import run_dataset_overview


def main(argv=None):
    stage_parser(__doc__, parallel=False).parse_args(argv)
    if require_catalog():
        return 1
    result = run_stage_safely(run_dataset_overview)
    if result is None:
        return 1
    print(result.summary())
    return 0


if __name__ == '__main__':
    exit_now(main())
