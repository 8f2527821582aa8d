"""Interactive viewer of one session: raw bands, preprocessed signal, PSTHs per event.

The original script interface: the code is :mod:`iblnm.cli.session_viewer`, the same command as
``iblnm session-viewer`` (``python -m iblnm session-viewer``). Arguments: ``--help``.
"""

from iblnm.cli.session_viewer import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
