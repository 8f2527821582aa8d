"""iblnm.config: every constant is used somewhere, and the ones the original applied are applied."""

import re
from pathlib import Path

import pandas as pd
import pytest

from iblnm import config
from iblnm import validation as v
from iblnm.group import PhotometrySessionGroup
from iblnm.io import parse_location

PACKAGE = config.PACKAGE_DIR


def _constants():
    text = (PACKAGE / 'config.py').read_text()
    return sorted(set(re.findall(r'^([A-Z][A-Z0-9_]+) = ', text, re.M)))


def test_every_config_constant_is_used_outside_config():
    sources = [p for p in PACKAGE.rglob('*.py') if p.name != 'config.py']
    text = '\n'.join(p.read_text() for p in sources)
    unused = [name for name in _constants() if not re.search(rf'\b{name}\b', text)]
    assert unused == []


@pytest.mark.parametrize(
    'location, expected',
    [
        ('DRN-l', ('DR-l', 'l')),
        ('SNC', ('SNc', '')),
        ('SNc-r', ('SNc-r', 'r')),
        ('VTA', ('VTA', '')),
    ],
)
def test_region_name_fixes_keep_the_hemisphere(location, expected):
    assert parse_location(location) == expected
    assert v.fix_region_name(location) == expected[0]


def test_loader_columns_use_the_fixed_names():
    from iblnm.loaders import roi_to_region

    locations = pd.DataFrame({'brain_region': ['DRN-l', 'VTA-r']}, index=['G0', 'G1'])
    assert roi_to_region(locations) == {'G0': 'DR', 'G1': 'VTA'}


def test_group_drops_the_eids_to_drop_by_default():
    eids = [config.EIDS_TO_DROP[0], '0e6f9c5a-8d0b-4a8e-9f57-3d1b2c4a5e6f']
    catalog = pd.DataFrame(
        {
            'eid': eids,
            'subject': ['m1', 'm2'],
            'session_type': ['biased', 'biased'],
            'brain_region': [['VTA'], ['VTA']],
            'hemisphere': [['l'], ['l']],
            'target_NM': [['VTA-DA'], ['VTA-DA']],
            'lab': ['lab', 'lab'],
        }
    )
    group = PhotometrySessionGroup(catalog, h5_dir=Path('/nonexistent'))
    kept = group.filter_sessions(min_performance=None, required_contrasts=None, verbose=False)
    assert list(kept['eid']) == eids[1:]
    kept = group.filter_sessions(
        min_performance=None, required_contrasts=None, exclude_eids=[], verbose=False
    )
    assert list(kept['eid']) == eids


def test_importing_the_plots_keeps_the_users_matplotlib_backend():
    import subprocess
    import sys

    code = (
        'import matplotlib; matplotlib.use("svg"); import iblnm.vis, iblnm.vis.responses; '
        'print(matplotlib.get_backend())'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'svg'


def test_the_package_logs_and_the_command_line_shows_it(capsys):
    import logging

    from iblnm.pipeline.cli import configure_logging

    catalog = pd.DataFrame(
        {
            'eid': ['0e6f9c5a-8d0b-4a8e-9f57-3d1b2c4a5e6f'],
            'subject': ['m'],
            'session_type': ['biased'],
            'brain_region': [['VTA']],
            'hemisphere': [['l']],
            'target_NM': [['VTA-DA']],
            'lab': ['x'],
        }
    )
    group = PhotometrySessionGroup(catalog, h5_dir=Path('/nonexistent'))
    logger = logging.getLogger('iblnm')
    handlers, level = list(logger.handlers), logger.level
    try:
        group.filter_sessions(min_performance=None, required_contrasts=None)
        assert 'filter_sessions' not in capsys.readouterr().out  # a library call prints nothing
        configure_logging()
        group.filter_sessions(min_performance=None, required_contrasts=None)
        assert 'filter_sessions: 1 -> 1' in capsys.readouterr().out
        logger.setLevel(logging.WARNING)  # how a notebook user silences it
        group.filter_sessions(min_performance=None, required_contrasts=None)
        assert capsys.readouterr().out == ''
    finally:
        logger.handlers[:], logger.level = handlers, level


def test_the_command_line_log_follows_a_later_redirection_of_stdout():
    """configure_logging's handler writes to sys.stdout as it is when a record is emitted
    (a handler bound to the stdout of the first call wrote to a closed capture)."""
    import contextlib
    import io
    import logging

    from iblnm.pipeline.cli import configure_logging

    logger = logging.getLogger('iblnm')
    handlers, level = list(logger.handlers), logger.level
    try:
        configure_logging()
        for _ in range(2):
            with contextlib.redirect_stdout(io.StringIO()) as out:
                logging.getLogger('iblnm.test').info('hello')
            assert out.getvalue() == 'hello\n'
    finally:
        logger.handlers[:], logger.level = handlers, level
