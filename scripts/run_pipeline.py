"""Run the whole iblnm pipeline, or resume from / run a single stage.

The original script interface: the code is :mod:`iblnm.cli.run_pipeline`, the same command as
``iblnm run-pipeline`` (``python -m iblnm run-pipeline``). Arguments: ``--help``.
"""

from iblnm.cli.run_pipeline import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
