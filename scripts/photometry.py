"""Stage 2: QC, preprocess and extract peri-event responses for every catalog session.

The original script interface: the code is :mod:`iblnm.cli.photometry`, the same command as
``iblnm photometry`` (``python -m iblnm photometry``). Arguments: ``--help``.
"""

from iblnm.cli.photometry import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
