"""Video QC of the left camera (metadata/video.pqt, metadata/video_log.pqt).

Usage: python scripts/video.py [--workers N | --scheduler ADDRESS]

Frame rate, dropped frames and video length vs session length from the camera
timestamps, the extended video QC of the sessions where Alyx has it (pin state
included), typed errors and a score per session; see iblnm.pipeline.video.
"""

from iblnm import config
from iblnm.pipeline.cli import exit_now, require_catalog, run_stage_safely, stage_parser
from iblnm.pipeline.video import run_video_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    if require_catalog():
        return 1
    result = run_stage_safely(run_video_stage, workers=args.workers, scheduler=args.scheduler)
    if result is None:
        return 1
    print(result.summary())
    print(f'outputs: {config.VIDEO_FPATH}, {config.VIDEO_LOG_FPATH}')
    return result.exit_code


if __name__ == '__main__':
    exit_now(main())
