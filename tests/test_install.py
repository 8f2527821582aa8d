"""iblnm installed from a wheel works from any folder and writes only under its output root.

The wheel is built from this source tree and installed (without dependencies: they are
the test environment's) into a temporary target folder that comes first on ``PYTHONPATH``,
so the installed copy, not the source tree, is imported. ``iblnm run`` then processes the
``small`` simulated preset from a temporary working folder.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iblnm import config

PROJECT = config.PACKAGE_DIR.parent


def _uv():
    uv = shutil.which('uv') or PROJECT / '.tools' / 'bin' / 'uv'
    if not Path(uv).exists():
        pytest.skip('uv is not available to build the wheel (make env installs it)')
    return str(uv)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(target folder, environment) of the wheel installed with ``uv pip install --target``."""
    uv = _uv()
    dist, target = tmp_path_factory.mktemp('dist'), tmp_path_factory.mktemp('site')
    # build from a copy: setuptools writes build/ and *.egg-info/ next to the sources
    source = tmp_path_factory.mktemp('source') / 'iblnm'
    skip = (
        '.git',
        '.venv',
        '.tools',
        'data',
        'results',
        'figures',
        'build',
        'dist',
        '__pycache__',
        '*.egg-info',
        '.pytest_cache',
        '.ruff_cache',
    )
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns(*skip))
    build = subprocess.run(
        [uv, 'build', '--wheel', '--out-dir', str(dist), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list(dist.glob('iblnm-*.whl'))
    assert len(wheels) == 1
    install = subprocess.run(
        [
            uv,
            'pip',
            'install',
            '--no-deps',
            '--target',
            str(target),
            '--python',
            sys.executable,
            str(wheels[0]),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: val for k, val in os.environ.items() if not k.startswith('IBLNM_')}
    env['PYTHONPATH'] = str(target)
    return target, env


def test_the_wheel_ships_the_package_data_and_is_imported(installed, tmp_path):
    target, env = installed
    assert (target / 'iblnm' / 'resources' / 'fibers.csv').exists()
    assert not (target / 'scripts').exists()
    code = 'import iblnm, iblnm.config as c; print(iblnm.__file__); print(c.FIBERS_FPATH)'
    out = subprocess.run(
        [sys.executable, '-c', code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(out[0]).is_relative_to(target)
    assert Path(out[1]) == target / 'iblnm' / 'resources' / 'fibers.csv'


def test_iblnm_run_from_another_folder_writes_only_under_the_root(installed, small_cache, tmp_path):
    target, env = installed
    before = {p for p in target.rglob('*')}
    workdir = tmp_path / 'analysis'
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, '-m', 'iblnm', '--one-cache', str(small_cache), 'run', '--workers', '2'],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'SIMULATED demo dataset' in result.stdout
    for stage in ('query_database', 'photometry', 'task', 'wheel', 'video'):
        assert f'{stage:<18} ok' in result.stdout, stage
    assert (workdir / 'metadata' / 'sessions.pqt').exists()
    assert len(list((workdir / 'data' / 'sessions').glob('*.h5'))) > 10
    assert list((workdir / 'figures' / 'dataset_overview').glob('*.png'))
    assert {p for p in target.rglob('*') if '__pycache__' not in p.parts} <= before
