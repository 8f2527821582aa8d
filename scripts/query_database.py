"""Stage 1: build or update the session catalog (metadata/sessions.pqt).

The original script interface: the code is :mod:`iblnm.cli.query_database`, the same command as
``iblnm query-database`` (``python -m iblnm query-database``). Arguments: ``--help``.
"""

from iblnm.cli.query_database import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
