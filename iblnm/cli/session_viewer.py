"""Interactive viewer of one session: raw bands, preprocessed signal, PSTHs per event.

Usage:
    python scripts/session_viewer.py SUBJECT [SESSION_INDEX]   # default index -1 (latest)
    python scripts/session_viewer.py --eid EID
    python scripts/session_viewer.py SUBJECT --save viewer.png  # screenshot, no window

Sessions come from metadata/sessions.pqt; data from data/sessions/{eid}.h5 when it exists,
otherwise from ONE (see iblnm.gui).
"""

import argparse
import sys

from iblnm import config
from iblnm import validation as v
from iblnm.gui import SPLITS, open_viewer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('subject', nargs='?', help='subject nickname')
    parser.add_argument(
        'index',
        nargs='?',
        type=int,
        default=-1,
        help="index of the subject's session by start time (default -1)",
    )
    parser.add_argument('--eid', help='session eid (instead of subject and index)')
    parser.add_argument(
        '--split', choices=SPLITS, default='feedback', help='initial condition of the mean traces'
    )
    parser.add_argument('--save', help='save a screenshot to this file instead of showing')
    args = parser.parse_args(argv)
    if (args.subject is None) == (args.eid is None):
        parser.error('give either SUBJECT [INDEX] or --eid')
    if not config.SESSIONS_FPATH.exists():
        print(f'{config.SESSIONS_FPATH} not found: run scripts/query_database.py first')
        return 1
    try:
        open_viewer(
            subject=args.subject, index=args.index, eid=args.eid, split=args.split, save=args.save
        )
    except (LookupError, v.MissingRawData, v.MissingExtractedData) as error:
        print(f'{type(error).__name__}: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
