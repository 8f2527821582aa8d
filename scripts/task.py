"""Stage 3: task performance and psychometric fits (data/performance.pqt).

The original script interface: the code is :mod:`iblnm.cli.task`, the same command as
``iblnm task`` (``python -m iblnm task``). Arguments: ``--help``.
"""

from iblnm.cli.task import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
