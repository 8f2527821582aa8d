"""QC overview: distributions, per-target violins, PCA and temporal trends of the QC metrics.

The original script interface: the code is :mod:`iblnm.cli.qc_overview`, the same command as
``iblnm qc-overview`` (``python -m iblnm qc-overview``). Arguments: ``--help``.
"""

from iblnm.cli.qc_overview import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
