"""Task encoding: per-recording GLM coefficients, PCA/ICA, and per-cohort CCA with psychometrics.

The original script interface: the code is :mod:`iblnm.cli.task_encoding`, the same command as
``iblnm task-encoding`` (``python -m iblnm task-encoding``). Arguments: ``--help``.
"""

from iblnm.cli.task_encoding import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
