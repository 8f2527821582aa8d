"""The ``iblnm`` command: one subcommand per pipeline stage, analysis and tool.

::

    iblnm [--root DIR] [--one-cache DIR | --demo] [--one-mode local|remote] COMMAND [ARGS]
    iblnm run                 # the whole pipeline (iblnm.cli.run_pipeline)
    iblnm photometry --redo   # one stage
    iblnm responses           # an analysis
    iblnm demo --out DIR      # write a simulated dataset
    iblnm settings            # the settings in force and the QC verdict rules

The global options are run settings (:mod:`iblnm.settings`), resolved here when the run
starts: arguments > environment (``IBLNM_ROOT``, ``IBLNM_ONE_CACHE`` …) > ``iblnm.toml`` >
defaults. Each subcommand is the ``main(argv)`` of a module of this package; ``scripts/*.py``
are thin wrappers of the same functions.
"""

import argparse
import importlib
import sys

# command -> module of iblnm.cli (in the order shown by --help)
COMMANDS = {
    'run': 'run_pipeline',
    'query-database': 'query_database',
    'photometry': 'photometry',
    'task': 'task',
    'wheel': 'wheel',
    'video': 'video',
    'dataset-overview': 'dataset_overview',
    'export-nwb': 'export_nwb',
    'responses': 'responses',
    'movement-encoding': 'movement_encoding',
    'task-encoding': 'task_encoding',
    'task-performance': 'task_performance',
    'qc-overview': 'qc_overview',
    'example-session': 'example_session',
    'viewer': 'session_viewer',
    'demo': 'simulate',
    'add-real-sessions': 'add_real_sessions',
    'settings': 'show_settings',
}
# the original script names, where they differ from the command
ALIASES = {
    module.replace('_', '-'): command
    for command, module in COMMANDS.items()
    if module.replace('_', '-') != command
}


def command_module(name):
    """The :mod:`iblnm.cli` module of a command (its name, module name or alias)."""
    name = ALIASES.get(name.replace('_', '-'), name.replace('_', '-'))
    if name not in COMMANDS:
        raise KeyError(f'unknown command {name!r}; commands: {", ".join(COMMANDS)}')
    return importlib.import_module(f'iblnm.cli.{COMMANDS[name]}')


def settings_parser(parser=None):
    """Add the global run-settings options to ``parser`` (or a new parser)."""
    parser = parser or argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group('run settings (override IBLNM_* variables and iblnm.toml)')
    group.add_argument('--root', help='output root (catalog, logs, HDF5 files, results, figures)')
    source = group.add_mutually_exclusive_group()
    source.add_argument('--one-cache', help='local ONE cache to process')
    source.add_argument('--demo', action='store_true', help='process the simulated demo dataset')
    group.add_argument('--one-mode', choices=('local', 'remote'), help='ONE mode')
    group.add_argument('--config', help='settings file (TOML; default ./iblnm.toml)')
    return parser


def apply_settings(args):
    """Resolve and install the run settings from parsed global options."""
    from iblnm import settings

    resolved = settings.resolve(
        config_file=args.config, root=args.root, one_cache=args.one_cache, one_mode=args.one_mode
    )
    if args.demo:
        resolved = resolved.replace(one_cache=resolved.path('DEMO_CACHE_DIR'), one_mode='local')
    return settings.use(resolved)


def main(argv=None):
    from iblnm.pipeline.cli import configure_logging

    configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog='iblnm',
        description='IBL neuromodulators fiber-photometry pipeline',
        parents=[settings_parser()],
    )
    parser.add_argument('--version', action='store_true', help='print the iblnm version')
    parser.add_argument(
        'command',
        nargs='?',
        metavar='COMMAND',
        help=f'one of: {", ".join(COMMANDS)} (underscores work too)',
    )
    parser.add_argument('args', nargs=argparse.REMAINDER, help='arguments of the command')
    args = parser.parse_args(argv)
    if args.version:
        from iblnm import __version__

        print(f'iblnm {__version__}')
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        module = command_module(args.command)
    except KeyError as error:
        parser.error(str(error))
    apply_settings(args)
    return module.main(args.args)


def console():
    """Entry point of the installed ``iblnm`` command (flushes and exits with main's code)."""
    from iblnm.pipeline.cli import exit_now

    exit_now(main())
