"""Add the real IBL test recordings to a local ONE cache.

Usage: python scripts/add_real_sessions.py [--cache DIR] [--source DIR] [--copy]
"""

import argparse

from iblnm import config
from iblnm.io import get_cache_dir
from iblnm.realdata import add_real_sessions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--cache', default=None, help='local ONE cache (default: IBLNM_ONE_CACHE or the demo cache)'
    )
    parser.add_argument(
        '--source', default=str(config.REAL_DATA_DIR / 'ibl'), help='folder with the real sessions'
    )
    parser.add_argument('--copy', action='store_true', help='copy files instead of symlinking them')
    args = parser.parse_args(argv)
    cache = args.cache or get_cache_dir()
    eids = add_real_sessions(cache, source=args.source, copy=args.copy)
    print(f'added {len(eids)} real sessions to {cache}: {", ".join(eids)}')


if __name__ == '__main__':
    main()
