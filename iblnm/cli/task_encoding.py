"""Task encoding: per-recording GLM coefficients, PCA/ICA, and per-cohort CCA with psychometrics.

Usage: python scripts/task_encoding.py [--plot-only] [--contrast-coding {log,linear,rank}]
       [--events ...] [--cohort-weighted] [--ica] [--n-permutations N] [--params ...]
       [--seed S] [--weight-by-se] [--sparse] [--unit-norm | --no-unit-norm]

Reads the pipeline outputs (metadata/, data/sessions/, data/performance.pqt); writes
results/task_encoding/ and figures/task_encoding/{pca|ica, cca/scatter, cca/summary}/.
"""

import argparse
import sys

from iblnm import config
from iblnm.pipeline.cli import require_catalog
from iblnm.workflows.encoding import DEFAULT_PARAMS, run_task_encoding


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--plot-only', action='store_true', help='redraw from saved tables')
    parser.add_argument('--contrast-coding', choices=['log', 'linear', 'rank'], default='rank')
    parser.add_argument('--events', nargs='+', default=list(config.RESPONSE_EVENTS))
    parser.add_argument(
        '--cohort-weighted',
        action='store_true',
        help='weight each target-NM equally in the PCA/ICA',
    )
    parser.add_argument('--ica', action='store_true', help='ICA instead of PCA')
    parser.add_argument('--n-permutations', type=int, default=1000)
    parser.add_argument(
        '--params',
        nargs='+',
        default=DEFAULT_PARAMS,
        help='psychometric columns of performance.pqt',
    )
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument(
        '--weight-by-se',
        action='store_true',
        help='t-statistics (coef / SE) instead of raw GLM coefficients',
    )
    parser.add_argument('--sparse', action='store_true', help='elastic-net CCA (cca-zoo)')
    parser.add_argument(
        '--unit-norm',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='rescale the sparse CCA weights to unit norm',
    )
    parser.add_argument('--min-recordings', type=int, default=10, help='per cohort, for CCA')
    parser.add_argument(
        '--all-targets',
        action='store_true',
        help='every valid target-NM, not only config.TARGETNMS_TO_ANALYZE',
    )
    args = parser.parse_args(argv)
    if not args.plot_only and require_catalog('run the pipeline first'):
        return 1
    run_task_encoding(
        events=args.events,
        contrast_coding=args.contrast_coding,
        cohort_weighted=args.cohort_weighted,
        ica=args.ica,
        n_permutations=args.n_permutations,
        params=args.params,
        seed=args.seed,
        weight_by_se=args.weight_by_se,
        sparse=args.sparse,
        unit_norm=args.unit_norm,
        plot_only=args.plot_only,
        min_recordings=args.min_recordings,
        targetnms=None if args.all_targets else config.TARGETNMS_TO_ANALYZE,
    )
    print(f'outputs: {config.TASK_ENCODING_DIR}, {config.FIGURES_DIR / "task_encoding"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
