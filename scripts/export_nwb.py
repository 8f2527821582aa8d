"""Export every processed session as one NWB file (ndx-fiber-photometry, DANDI layout).

The script interface: the code is :mod:`iblnm.cli.export_nwb`, the same command as
``iblnm export-nwb`` (``python -m iblnm export-nwb``). Arguments: ``--help``.
"""

from iblnm.cli.export_nwb import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
