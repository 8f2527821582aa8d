"""Write a simulated IBL fiber-photometry dataset (a local ONE cache with ground truth).

The original script interface: the code is :mod:`iblnm.cli.simulate`, the same command as
``iblnm simulate`` (``python -m iblnm simulate``). Arguments: ``--help``.
"""

from iblnm.cli.simulate import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
