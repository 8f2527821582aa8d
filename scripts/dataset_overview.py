"""Stage 5: dataset overview (metadata/errors.pqt and figures/dataset_overview/).

The original script interface: the code is :mod:`iblnm.cli.dataset_overview`, the same command as
``iblnm dataset-overview`` (``python -m iblnm dataset-overview``). Arguments: ``--help``.
"""

from iblnm.cli.dataset_overview import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
