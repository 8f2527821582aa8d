"""Shared fixtures: the real IBL sessions and simulated caches, built once per test run."""

import importlib.util
import warnings
from pathlib import Path

import pandas as pd
import pytest

from iblnm import config

warnings.filterwarnings('ignore', category=DeprecationWarning)


def load_benchmark(name):
    """The module ``benchmarks/{name}.py`` (benchmarks are scripts, not a package), so a
    test and its benchmark share one evaluation."""
    path = config.PACKAGE_DIR.parent / 'benchmarks' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def real_data_dir():
    """The real IBL recordings (``../shared/data/real``); tests skip when it is absent."""
    path = config.REAL_DATA_DIR / 'ibl'
    if not path.exists():
        pytest.skip(f'real IBL data not found at {path} (set IBLNM_REAL_DATA to its parent)')
    return path


@pytest.fixture(scope='session')
def real_cache(tmp_path_factory, real_data_dir):
    """A local ONE cache holding the two real sessions (CQ002, fip_40), symlinked."""
    from iblnm.realdata import add_real_sessions

    cache = tmp_path_factory.mktemp('real_cache')
    add_real_sessions(cache, source=real_data_dir)
    return cache


@pytest.fixture(scope='session')
def real_one(real_cache):
    from one.api import One

    return One(cache_dir=str(real_cache), mode='local')


@pytest.fixture(scope='session')
def small_cache(tmp_path_factory):
    """The ``small`` simulated preset (seed 0), generated once per test run."""
    from iblnm.simulate import generate

    cache = tmp_path_factory.mktemp('small_cache')
    generate(cache, preset='small', seed=0, n_jobs=2)
    return cache


@pytest.fixture(scope='session')
def qc_cache(tmp_path_factory):
    """The ``qc`` simulated preset (seed 0): >= 40 fibers of known quality and verdict."""
    from iblnm.simulate import generate

    cache = tmp_path_factory.mktemp('qc_cache')
    generate(cache, preset='qc', seed=0, n_jobs=2)
    return cache


@pytest.fixture(scope='session')
def small_one(small_cache):
    from one.api import One

    return One(cache_dir=str(small_cache), mode='local')


def run_pipeline_on(cache, root, *args):
    """Run ``scripts/run_pipeline.py`` on a cache with outputs under ``root``; return the process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, 'IBLNM_ONE_CACHE': str(cache), 'IBLNM_ROOT': str(root)}
    env.pop('IBLNM_ONE_MODE', None)
    script = config.PACKAGE_DIR.parent / 'scripts' / 'run_pipeline.py'
    result = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:  # keep the whole output next to the outputs for diagnosis
        log = Path(root) / f'run_pipeline_failed_{"_".join(args)}.txt'
        log.write_text(
            f'exit {result.returncode}\n{result.stdout}\n--- stderr ---\n{result.stderr}'
        )
        print(f'run_pipeline failed: full output in {log}')
    return result


@pytest.fixture(scope='session')
def small_pipeline(tmp_path_factory, small_cache):
    """Output root of the whole pipeline run once on the ``small`` preset (2 workers).

    Layout as in the project root: ``metadata/*.pqt``, ``data/sessions/{eid}.h5``,
    ``data/qc_photometry.pqt``, ``data/performance.pqt``, ``figures/``.
    """
    root = tmp_path_factory.mktemp('small_pipeline')
    result = run_pipeline_on(small_cache, root, '--workers', '2')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (root / 'pipeline_stdout.txt').write_text(result.stdout)
    return root


@pytest.fixture(scope='session')
def demo_pipeline(tmp_path_factory):
    """(output root, cache) of the whole pipeline run on the ``demo`` preset (2 workers)."""
    from iblnm.simulate import generate

    cache = tmp_path_factory.mktemp('demo_cache')
    generate(cache, preset='demo', seed=0, n_jobs=2)
    root = tmp_path_factory.mktemp('demo_pipeline')
    result = run_pipeline_on(cache, root, '--workers', '2')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, cache


CQ002 = 'cortexlab/Subjects/CQ002/2024-11-05/001'


@pytest.fixture(scope='session')
def cq002_bands(real_data_dir):
    """Task-restricted GCaMP/Isosbestic bands of CQ002: {band: (times, values (n, 2))}."""
    session = real_data_dir / CQ002
    signal = pd.read_parquet(session / 'alf/photometry/photometry.signal.pqt')
    trials = pd.read_parquet(session / 'alf/task_00/_ibl_trials.table.pqt')
    t0 = trials['intervals_0'].iloc[0] + config.PHOTOMETRY_RESTRICT_PRE
    t1 = trials['intervals_1'].iloc[-1] + config.PHOTOMETRY_RESTRICT_POST
    bands = {}
    for band in ('GCaMP', 'Isosbestic'):
        rows = signal[(signal['name'] == band) & (signal['times'] > t0) & (signal['times'] < t1)]
        bands[band] = (rows['times'].to_numpy(), rows[['G0', 'G4']].to_numpy())
    return bands
