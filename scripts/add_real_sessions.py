"""Add the real IBL test recordings to a local ONE cache.

The original script interface: the code is :mod:`iblnm.cli.add_real_sessions`, the same command as
``iblnm add-real-sessions`` (``python -m iblnm add-real-sessions``). Arguments: ``--help``.
"""

from iblnm.cli.add_real_sessions import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
