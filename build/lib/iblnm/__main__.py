"""``python -m iblnm``: the :mod:`iblnm.cli` command."""

from iblnm.cli import main
from iblnm.pipeline.cli import exit_now

if __name__ == '__main__':
    exit_now(main())
