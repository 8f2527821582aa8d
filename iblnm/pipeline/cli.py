"""Argument parsing shared by the stage scripts."""

import argparse
import logging
import os
import sys

from iblnm import config


def stage_parser(doc, parallel=True):
    """An ArgumentParser described by the script's docstring, with the executor options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if parallel:
        parser.add_argument('--workers', type=int, default=1, help='local worker processes')
        parser.add_argument(
            '--scheduler', default=None, help='address of a running Dask distributed scheduler'
        )
    return parser


def require_catalog(hint='run scripts/query_database.py first'):
    """Return 1 (and say why: ``hint``) when the catalog does not exist yet, else 0."""
    if config.SESSIONS_FPATH.exists():
        return 0
    print(f'{config.SESSIONS_FPATH} not found: {hint}', file=sys.stderr)
    return 1


class _StdoutHandler(logging.StreamHandler):
    """A stream handler on the ``sys.stdout`` of the moment a record is emitted, so that a
    redirection or capture made after :func:`configure_logging` is followed (not a closed
    stream kept from before)."""

    _iblnm_cli = True

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(level=logging.INFO):
    """Show the package's log messages on stdout, as plain lines (the command-line view).

    The library only logs (``logging.getLogger('iblnm....')``); a command calls this once so
    that its messages are printed, while a notebook or another program keeps control of
    logging (``logging.getLogger('iblnm').setLevel(logging.WARNING)`` silences it).
    """
    logger = logging.getLogger('iblnm')
    if not any(getattr(h, '_iblnm_cli', False) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter('%(message)s'))
        logger.addHandler(handler)
    logger.setLevel(level)


def exit_now(code):
    """Flush the standard streams and end the process with ``code``, skipping teardown.

    Every output is written and closed (atomically) before a script returns. At interpreter
    teardown a native thread pool of a dependency occasionally aborts the process ("terminate
    called without an active exception", about 1 run in 12 of ``run_pipeline.py --only
    query_database``), which turned finished runs into failures; ``os._exit`` skips that
    teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def run_stage_safely(run, *args, **kwargs):
    """``run(*args, **kwargs)``, or None (with the reason on stderr) when the catalog itself
    cannot be used (:class:`iblnm.validation.InvalidCatalog`)."""
    from iblnm import validation as v

    try:
        return run(*args, **kwargs)
    except v.InvalidCatalog as error:
        print(f'InvalidCatalog: {error}', file=sys.stderr)
        return None
