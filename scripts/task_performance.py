"""Task performance: learning curves and psychometric trajectories per target-NM.

The original script interface: the code is :mod:`iblnm.cli.task_performance`, the same command as
``iblnm task-performance`` (``python -m iblnm task-performance``). Arguments: ``--help``.
"""

from iblnm.cli.task_performance import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
