"""Stage 1: build or update the session catalog (metadata/sessions.pqt).

Usage: python scripts/query_database.py [--redownload] [--extended-qc]
Incremental by default: only sessions not yet in the catalog are queried.
"""

import argparse
import sys

from iblnm.pipeline.catalog import query_database
from iblnm.pipeline.cli import exit_now


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--redownload', action='store_true', help='re-query every session')
    parser.add_argument('--extended-qc', action='store_true', help='also write sessions_qc.pqt')
    args = parser.parse_args(argv)
    try:
        result = query_database(redownload=args.redownload, extended_qc=args.extended_qc)
    except Exception as error:  # nothing could be read: report without credentials, exit 1
        from iblnm.validation import redact

        print(f'query_database failed: {type(error).__name__}: {redact(error)}', file=sys.stderr)
        return 1
    print(result.summary())
    if result.n_new and len(result.deferred) == result.n_new:
        return 1  # every new session failed to be read
    return 1 if result.unexpected else 0  # a bug: reported, and the stage fails


if __name__ == '__main__':
    exit_now(main())
