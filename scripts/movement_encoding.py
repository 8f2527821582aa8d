"""Movement encoding: are stimulus responses explained by contrast or by movement timing?

The original script interface: the code is :mod:`iblnm.cli.movement_encoding`, the same command as
``iblnm movement-encoding`` (``python -m iblnm movement-encoding``). Arguments: ``--help``.
"""

from iblnm.cli.movement_encoding import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
