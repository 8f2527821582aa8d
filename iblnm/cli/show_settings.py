"""Show the run settings in force, where each came from, and the QC verdict rules.

Usage: iblnm [--root DIR] [--config FILE] settings
"""

import argparse

import pandas as pd

from iblnm.pipeline.cli import exit_now


def main(argv=None):
    from iblnm import settings
    from iblnm.signal import verdict

    argparse.ArgumentParser(prog='iblnm settings', description=__doc__).parse_args(argv)
    resolved = settings.current()
    print('\n'.join(settings.describe(resolved)))
    try:
        table = verdict.rules_table()
    except ValueError as error:  # a [qc_rules.<name>] table naming no rule
        print(f'QC verdict rules: {error}')
        return 1
    print('\nQC verdict rules (set_by: settings = changed by the settings file):')
    table['threshold'] = table['threshold'].map(lambda x: '' if pd.isna(x) else f'{x:g}')
    with pd.option_context('display.width', 200, 'display.max_colwidth', 60):
        print(table.to_string(index=False))
    return 0


if __name__ == '__main__':
    exit_now(main())
