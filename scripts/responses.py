"""Responses analysis: trial magnitudes, mixed models, response vectors, similarity, decoding.

The original script interface: the code is :mod:`iblnm.cli.responses`, the same command as
``iblnm responses`` (``python -m iblnm responses``). Arguments: ``--help``.
"""

from iblnm.cli.responses import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
