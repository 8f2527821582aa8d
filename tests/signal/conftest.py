"""Fixtures of the signal-kernel tests."""

import pandas as pd
import pytest

from iblnm import config

CQ002 = 'cortexlab/Subjects/CQ002/2024-11-05/001'


@pytest.fixture(scope='module')
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
