"""Responses analysis: trial magnitudes, mixed models, response vectors, similarity, decoding.

Reads the catalog, stage logs and session HDF5 files of the pipeline; writes tables to
results/responses/ and figures to figures/responses/ (under IBLNM_ROOT when set).

Usage: python scripts/responses.py [--targetnms VTA-DA DR-5HT ...] [--n-boot 1000]
                                   [--n-permutations 1000] [--seed 0] [--plot]

--plot redraws the figures from the saved tables of an earlier run (nothing is recomputed).
"""

import argparse
import sys

from iblnm import config
from iblnm.pipeline.cli import require_catalog
from iblnm.workflows.responses import plot_saved_responses, run_responses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--targetnms',
        nargs='+',
        default=config.VALID_TARGETNMS,
        help='target-NMs to analyse (default: every valid target-NM)',
    )
    parser.add_argument('--n-boot', type=int, default=1000, help='bootstrap resamples of bands')
    parser.add_argument(
        '--n-permutations', type=int, default=1000, help='permutations of the cluster tests'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--plot', action='store_true', help='redraw the figures from the saved tables only'
    )
    args = parser.parse_args(argv)
    if args.plot:
        files = plot_saved_responses(n_boot=args.n_boot)
        print(f'{len(files)} figure files redrawn from {config.RESPONSES_DIR}')
        return 0 if files else 1
    if require_catalog('run the pipeline first'):
        return 1
    result = run_responses(
        targetnms=args.targetnms,
        n_boot=args.n_boot,
        n_permutations=args.n_permutations,
        seed=args.seed,
    )
    print(result.summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())
