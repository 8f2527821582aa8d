"""Argument parsing shared by the stage scripts."""

import argparse
import sys

from iblnm import config


def stage_parser(doc, parallel=True):
    """An ArgumentParser described by the script's docstring, with the executor options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if parallel:
        parser.add_argument('--workers', type=int, default=1, help='local worker processes')
        parser.add_argument('--scheduler', default=None,
                            help='address of a running Dask distributed scheduler')  # fmt: skip
    return parser


def require_catalog():
    """Return 1 (and say why) when the catalog does not exist yet, else 0."""
    if config.SESSIONS_FPATH.exists():
        return 0
    print(
        f'{config.SESSIONS_FPATH} not found: run scripts/query_database.py first', file=sys.stderr
    )
    return 1
