"""Video QC of the left camera (metadata/video.pqt, metadata/video_log.pqt).

The original script interface: the code is :mod:`iblnm.cli.video`, the same command as
``iblnm video`` (``python -m iblnm video``). Arguments: ``--help``.
"""

from iblnm.cli.video import main
from iblnm.pipeline.cli import configure_logging, exit_now

if __name__ == '__main__':
    configure_logging()
    exit_now(main())
