"""Write a simulated IBL fiber-photometry dataset (a local ONE cache with ground truth).

Usage::

    python scripts/simulate.py --out data/one_cache/demo --preset demo --seed 0 --jobs 2
    python scripts/simulate.py --out /tmp/large --preset large --n-sessions 2000

Then point the pipeline at it with ``IBLNM_ONE_CACHE=DIR``. The ground truth (which
faults were injected where, the true ΔF/F, kernels, psychometric parameters) is in
``DIR/ground_truth/``; see ``docs/simulated_data.md``.
"""

import argparse
import sys
from collections import Counter

from iblnm.simulate import PRESETS, generate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='cache directory to (re)create')
    parser.add_argument('--preset', default='demo', choices=sorted(PRESETS))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=1, help='worker processes')
    parser.add_argument('--n-sessions', type=int, default=None, help='override the preset size')
    parser.add_argument(
        '--no-faults', action='store_true', help='no injected faults (fault_fraction=0)'
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = {}
    if args.n_sessions is not None:
        overrides['n_sessions'] = args.n_sessions
    if args.no_faults:
        overrides.update(fault_fraction=0.0, all_faults=False, camera_fault_fraction=0.0)
    try:
        manifest = generate(
            args.out, args.preset, seed=args.seed, n_jobs=args.jobs, progress=True, **overrides
        )
    except (FileExistsError, ValueError) as err:
        print(f'simulate: {err}', file=sys.stderr)
        return 2
    sessions = manifest['sessions']
    faults = Counter(f for s in sessions for f in s['faults'])
    print(
        f'{len(sessions)} sessions written to {args.out} in {manifest["generation_time_s"]} s; '
        f'{sum(1 for s in sessions if s["faults"])} with an injected fault'
    )
    for fault, n in sorted(faults.items()):
        print(f'  {fault}: {n}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
