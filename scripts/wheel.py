"""Stage 4: per-trial wheel velocity, appended to each session's HDF5 file.

The original script interface: the code is :mod:`iblnm.cli.wheel`, the same command as
``iblnm wheel`` (``python -m iblnm wheel``). Arguments: ``--help``.
"""

from iblnm.cli.wheel import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
