"""Example: load one session and plot its signal, feedback responses and choices.

The original script interface: the code is :mod:`iblnm.cli.example_session`, the same command as
``iblnm example-session`` (``python -m iblnm example-session``). Arguments: ``--help``.
"""

from iblnm.cli.example_session import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
