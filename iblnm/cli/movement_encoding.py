"""Movement encoding: are stimulus responses explained by contrast or by movement timing?

Usage: python scripts/movement_encoding.py [--event stimOn_times] [--timing-vars ...]
       [--group-by {target_NM,NM}] [--all-targets] [--mask] [--plot-only]

Leave-one-subject-out comparison of mixed models (contrast + timing + reward vs without
contrast vs without timing), per-contrast timing slopes and descriptive figures. Reads the
pipeline outputs (metadata/, data/sessions/); writes results/movement_encoding/ and
figures/movement_encoding/{descriptive,model_comparison,slopes}/.
"""

import argparse
import sys

from iblnm import config
from iblnm.pipeline.cli import require_catalog
from iblnm.workflows.encoding import run_movement_encoding


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--event', default='stimOn_times', help='responses to model')
    parser.add_argument(
        '--timing-vars',
        nargs='+',
        default=['reaction_time', 'movement_time'],
        help='timing variables (s), log10-transformed in the models',
    )
    parser.add_argument(
        '--group-by',
        choices=['target_NM', 'NM'],
        default='target_NM',
        help='cohorts analysed separately',
    )
    parser.add_argument(
        '--all-targets',
        action='store_true',
        help='every valid target-NM, not only config.TARGETNMS_TO_ANALYZE',
    )
    parser.add_argument(
        '--mask',
        action='store_true',
        help='cut traces at the next event (removes the movement by design)',
    )
    parser.add_argument('--min-subjects', type=int, default=config.MIN_SUBJECTS_MOVEMENT)
    parser.add_argument('--plot-only', action='store_true', help='redraw from saved tables')
    args = parser.parse_args(argv)
    if not args.plot_only and require_catalog('run the pipeline first'):
        return 1
    run_movement_encoding(
        event=args.event,
        timing_vars=args.timing_vars,
        group_by=args.group_by,
        targetnms=None if args.all_targets else config.TARGETNMS_TO_ANALYZE,
        mask=args.mask,
        min_subjects=args.min_subjects,
        plot_only=args.plot_only,
    )
    print(f'outputs: {config.MOVEMENT_ENCODING_DIR}, {config.FIGURES_DIR / "movement_encoding"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
