"""Example: load one session and plot its signal, feedback responses and choices.

Usage: python scripts/example_session.py [--eid EID] [--source {h5,one}]

An annotated walk-through (read iblnm/workflows/example_session.py): pick a session from
metadata/sessions.pqt (default: the latest one with an HDF5 file), load it as a
PhotometrySession from its HDF5 file (or rebuild it from ONE with --source one), print
what was loaded and save figures to figures/example_session/.
"""

import argparse
import sys

from iblnm import config
from iblnm.workflows.example_session import run_example_session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--eid', help='session eid (default: latest session with an HDF5 file)')
    parser.add_argument(
        '--source',
        choices=('h5', 'one'),
        default='h5',
        help='read the saved HDF5 file or rebuild the session from ONE',
    )
    args = parser.parse_args(argv)
    if not config.SESSIONS_FPATH.exists():
        print(f'{config.SESSIONS_FPATH} not found: run scripts/run_pipeline.py first')
        return 1
    try:
        _, paths = run_example_session(eid=args.eid, source=args.source)
    except LookupError as error:
        print(error, file=sys.stderr)
        return 1
    print('figures:', *paths, sep='\n  ')
    return 0


if __name__ == '__main__':
    sys.exit(main())
