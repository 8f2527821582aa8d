"""QC overview: distributions, per-target violins, PCA and temporal trends of the QC metrics.

Usage: python scripts/qc_overview.py

Reads data/qc_photometry.pqt and metadata/sessions.pqt; writes figures to
figures/qc_overview/ and tables to results/qc_overview/ (see iblnm.workflows.qc_overview).
"""

import argparse
import sys

from iblnm import config
from iblnm.workflows.qc_overview import run_qc_overview


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    for path in (config.QCPHOTOMETRY_FPATH, config.SESSIONS_FPATH):
        if not path.exists():
            print(f'{path} not found: run scripts/run_pipeline.py first', file=sys.stderr)
            return 1
    print(run_qc_overview().summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())
