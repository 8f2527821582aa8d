"""Artefact and segment detection: injected ground truth, each kind, scale-freeness, real data."""

import sys

import numpy as np
import pandas as pd
import pytest

from iblnm import config
from iblnm.signal import artefacts as af

sys.path.insert(0, str(config.PACKAGE_DIR.parent / 'benchmarks'))
import _synth  # noqa: E402

FLOOR = config.DARK_LEVEL
CQ002 = 'cortexlab/Subjects/CQ002/2024-11-05/001'
FIP40 = 'wittenlab/Subjects/fip_40/2023-05-18/001'
V5 = 'neurophotometrics_versions/version_5/_neurophotometrics_fpData.raw.pqt'


def _detect(fiber, **kwargs):
    return af.detect_artefacts(fiber['times'], fiber['gcamp'], fiber['iso'], **kwargs)


@pytest.fixture(scope='module')
def injected():
    """20 synthetic fibers (20 min, 30 Hz, noise 0.1-0.4 % of the light) with artefacts."""
    fibers = []
    for seed in range(20):
        clean = _synth.make_fiber(seed)
        fibers.append((clean, _synth.inject_artefacts(clean, seed)))
    return fibers


def test_injected_artefacts_are_masked_and_clean_samples_kept(injected):
    hit, false_alarm = [], []
    for clean, dirty in injected:
        assert _detect(clean).valid.all()  # a clean recording loses nothing
        result = _detect(dirty)
        truth = dirty['mask']
        hit.append(np.mean(~result.valid[truth]))
        false_alarm.append(np.mean(~result.valid[~truth]))
    assert min(hit) >= 0.95
    assert np.mean(hit) >= 0.99
    assert max(false_alarm) <= 0.01


def test_each_kind_is_named():
    clean = _synth.make_fiber(3, duration=600)
    fiber = _synth.inject_artefacts(clean, 3)
    kinds = set(_detect(fiber).segments['kind'])
    assert {'valid', 'disconnected', 'floor', 'dropout', 'saturated', 'excursion'} <= kinds
    result = _detect(fiber)
    assert result.kind[0] == 'disconnected' and result.kind[-1] == 'floor'
    assert result.summary['n_dropouts'] >= 20 and result.summary['n_excursions'] == 1


def test_segment_table_tiles_the_recording():
    fiber = _synth.inject_artefacts(_synth.make_fiber(5, duration=600), 5)
    result = _detect(fiber)
    seg = result.segments
    assert seg['start'].iloc[0] == 0 and seg['stop'].iloc[-1] == fiber['times'].size
    np.testing.assert_array_equal(seg['start'].to_numpy()[1:], seg['stop'].to_numpy()[:-1])
    valid = np.zeros(fiber['times'].size, bool)
    for row in seg[seg['kind'] == 'valid'].itertuples():
        valid[row.start : row.stop] = True
    np.testing.assert_array_equal(valid, result.valid)
    summary = result.summary
    fractions = [summary[f'frac_{k}'] for k in af.KINDS]
    assert sum(fractions) == pytest.approx(1)
    assert set(summary) == set(config.QC_ARTEFACT_METRICS)


def test_single_dropout_frame_and_shared_step():
    fiber = _synth.make_fiber(1, duration=300)
    g, i = fiber['gcamp'].copy(), fiber['iso'].copy()
    g[4000] = FLOOR  # one frame to the floor in one band
    result = af.detect_artefacts(fiber['times'], g, i)
    assert not result.valid[4000] and result.kind[4000] == 'dropout'
    assert result.valid[:3990].all() and result.valid[4010:].all()
    # a shared step that stays: the shorter side is cut as disconnected
    g2, i2 = fiber['gcamp'].copy(), fiber['iso'].copy()
    g2[7000:] = FLOOR + 0.5 * (g2[7000:] - FLOOR)
    i2[7000:] = FLOOR + 0.5 * (i2[7000:] - FLOOR)
    stepped = af.detect_artefacts(fiber['times'], g2, i2)
    assert stepped.summary['n_steps'] == 1
    assert stepped.valid[:6990].all() and not stepped.valid[7000:].any()
    # the same step in the GCaMP band only is not shared: nothing is cut
    assert af.detect_artefacts(fiber['times'], g2, i).valid.mean() > 0.99


@pytest.mark.parametrize('fs', [30.0, 130.0])
def test_rules_are_scale_free(fs):
    """Same masks in other units (×1000, floor scaled) and at another sampling rate."""
    clean = _synth.make_fiber(2, duration=600, fs=fs)
    fiber = _synth.inject_artefacts(clean, 2)
    base = _detect(fiber)
    scaled = af.detect_artefacts(
        fiber['times'],
        1000 * fiber['gcamp'],
        1000 * fiber['iso'],
        floor=1000 * FLOOR,
        saturation=1000.0,
    )
    assert np.mean(base.valid == scaled.valid) > 0.999
    truth = fiber['mask']
    assert np.mean(~base.valid[truth]) >= 0.95 and np.mean(~base.valid[~truth]) <= 0.01


def test_single_band_recording():
    fiber = _synth.inject_artefacts(_synth.make_fiber(4, duration=600), 4, excursion=False)
    result = af.detect_artefacts(fiber['times'], fiber['gcamp'])
    truth = fiber['mask']
    assert np.mean(~result.valid[truth]) >= 0.9  # dropouts in the missing band do not exist
    assert np.mean(~result.valid[~truth]) <= 0.01


def test_estimate_floor():
    assert af.estimate_floor() == (config.DARK_LEVEL, 'config')
    assert af.estimate_floor(np.full(10, 0.01)) == (config.DARK_LEVEL, 'config')  # too few
    dark = 0.005 + np.random.default_rng(0).normal(0, 1e-5, 500)
    level, source = af.estimate_floor(dark)
    assert source == 'dark_frames' and level == pytest.approx(0.005, abs=1e-5)


def test_primitives():
    np.testing.assert_array_equal(af.runs(np.array([0, 1, 1, 0, 1], bool))[0], [1, 4])
    np.testing.assert_array_equal(af.runs(np.array([0, 1, 1, 0, 1], bool))[1], [3, 5])
    noise = np.random.default_rng(1).normal(0, 2.0, 100_000)
    assert af.robust_noise_sd(noise) == pytest.approx(2.0, rel=0.02)
    assert af.robust_noise_sd(noise + np.linspace(0, 1000, noise.size)) == pytest.approx(
        2, rel=0.02
    )
    x = np.r_[np.zeros(50), np.ones(50)]
    np.testing.assert_array_equal(af.running_median(x, 11), x)
    np.testing.assert_array_equal(af.running_median(x, 11, block=5), x)


# ---------------------------------------------------------------------------
# Real recordings
# ---------------------------------------------------------------------------
def _paired(table, band_a, band_b, column, time_col='times'):
    a, b = table[band_a], table[band_b]
    n = min(len(a), len(b))
    return a[time_col].to_numpy()[:n], a[column].to_numpy()[:n], b[column].to_numpy()[:n]


@pytest.fixture(scope='module')
def cq002_full(real_data_dir):
    """CQ002's whole recording (with the set-up before the task), per fiber."""
    signal = pd.read_parquet(real_data_dir / CQ002 / 'alf/photometry/photometry.signal.pqt')
    bands = {'g': signal[signal['name'] == 'GCaMP'], 'i': signal[signal['name'] == 'Isosbestic']}
    return {c: _paired(bands, 'g', 'i', c) for c in ('G0', 'G4')}


def test_cq002_floor_dropouts_and_set_up_are_found(cq002_full, cq002_bands):
    task_start = cq002_bands['GCaMP'][0][0]
    for times, gcamp, iso in cq002_full.values():
        result = af.detect_artefacts(times, gcamp, iso)
        assert result.summary['n_dropouts'] >= 10  # frames down to the floor during set-up
        before = times < task_start - 60
        assert np.mean(~result.valid[before]) > 0.9  # patch cord being connected: masked
        assert result.valid[times > task_start].all()  # the recording itself is kept
        assert result.summary['frac_disconnected'] > 0.05 and result.summary['frac_floor'] > 0.01
    (times, gcamp), (_, iso) = cq002_bands['GCaMP'], cq002_bands['Isosbestic']
    n = min(len(gcamp), len(iso))
    for fiber in range(2):
        assert af.detect_artefacts(times[:n], gcamp[:n, fiber], iso[:n, fiber]).valid.all()


def test_version_5_without_light_is_mostly_masked(real_data_dir):
    raw = pd.read_parquet(real_data_dir / V5)
    bands = {'g': raw[raw['LedState'] == 2], 'i': raw[raw['LedState'] == 1]}
    for column in ('G0', 'G1'):
        times, gcamp, iso = _paired(bands, 'g', 'i', column, time_col='SystemTimestamp')
        result = af.detect_artefacts(times, gcamp, iso)
        assert result.summary['frac_valid'] < 0.1
        assert result.summary['frac_floor'] > 0.9


def test_fip40_single_band_fibers_keep_their_samples(real_data_dir):
    raw = pd.read_parquet(
        real_data_dir / FIP40 / 'raw_photometry_data/_neurophotometrics_fpData.raw.pqt'
    )
    lit, dark = raw[raw['LedState'] == 2], raw[raw['LedState'] == 0]
    for column in ('Region0G', 'Region1G', 'Region2G'):
        floor, source = af.estimate_floor(dark[column].to_numpy())
        assert source == 'dark_frames' and floor == pytest.approx(1 / 255, rel=1e-6)
        result = af.detect_artefacts(
            lit['Timestamp'].to_numpy(), lit[column].to_numpy(), floor=floor
        )
        assert result.summary['frac_valid'] > 0.99


def test_unusable_edges_count_against_frac_valid_only():
    """Floor stretches at both ends (patch cord off) lower ``frac_valid`` but not
    ``frac_valid_inner``; the same stretch in the middle lowers both."""
    fiber = _synth.make_fiber(2, duration=600)
    n = fiber['times'].size
    edge = n // 8
    g, i = fiber['gcamp'].copy(), fiber['iso'].copy()
    g[:edge] = i[:edge] = FLOOR
    g[-edge:] = i[-edge:] = FLOOR
    edges = af.detect_artefacts(fiber['times'], g, i).summary
    assert edges['frac_valid'] < 0.8
    assert edges['frac_valid_inner'] > 0.99
    g, i = fiber['gcamp'].copy(), fiber['iso'].copy()
    middle = slice(n // 2 - edge, n // 2 + edge)
    g[middle] = i[middle] = FLOOR
    gap = af.detect_artefacts(fiber['times'], g, i).summary
    assert gap['frac_valid'] < 0.8 and gap['frac_valid_inner'] < 0.8


def test_nan_frames_are_missing_not_saturated():
    fiber = _synth.make_fiber(2, duration=600)
    clean = _detect(fiber)
    gap = {**fiber, 'gcamp': fiber['gcamp'].copy(), 'iso': fiber['iso'].copy()}
    lost = slice(6000, 9000)  # 100 s of NaN frames (a time gap filled by the session)
    gap['gcamp'][lost] = np.nan
    gap['iso'][lost] = np.nan
    result = _detect(gap)
    assert set(result.kind[lost]) == {'missing'}
    assert result.summary['frac_missing'] == pytest.approx(3000 / fiber['times'].size)
    assert result.summary['frac_saturated'] == 0
    # the rest of the recording keeps the clean recording's mask
    assert result.valid[:6000].all() and result.valid[9000:].all() and clean.valid.all()
    # one band's NaN is enough
    one = {**fiber, 'iso': gap['iso']}
    assert set(_detect(one).kind[lost]) == {'missing'}


def test_a_ragged_edge_between_a_stretch_and_a_dropout_is_masked():
    """A few valid frames between a stretch artefact and a dropout are the stretch's edge
    (left valid, the interpolation over the stretch would end on its level); a longer run
    there, and runs between two dropouts, are data."""
    code = af._CODE
    n_min = 150  # 5 s at 30 Hz

    def runs_of(*parts):
        return np.concatenate([np.full(n, c, dtype=np.int8) for c, n in parts])

    edge = runs_of((0, 500), (code['excursion'], 300), (0, 3), (code['dropout'], 2), (0, 500))
    out = af._drop_short_valid(edge.copy(), n_min)
    assert (out[800:803] == code['excursion']).all()
    longer = runs_of((0, 500), (code['excursion'], 300), (0, 140), (code['dropout'], 2), (0, 500))
    assert (af._drop_short_valid(longer.copy(), n_min)[800:940] == 0).all()
    between = runs_of((0, 500), (code['dropout'], 2), (0, 3), (code['dropout'], 2), (0, 500))
    assert (af._drop_short_valid(between.copy(), n_min)[502:505] == 0).all()
    two = runs_of((0, 500), (code['floor'], 100), (0, 40), (code['step'], 10), (0, 500))
    assert (af._drop_short_valid(two.copy(), n_min)[600:640] == code['floor']).all()


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_a_step_of_the_reference_alone_is_an_artefact(seed):
    """The isosbestic band carries no activity: a 100-s stretch where it alone moves by 40 %
    (room light on a disconnected fiber whose 470-nm level happens to continue) is masked;
    the same stretch in the GCaMP band alone may be the neurons' and is kept."""
    fiber = _synth.make_fiber(seed, duration=600)
    g, i = fiber['gcamp'].copy(), fiber['iso'].copy()
    stretch = slice(6000, 9000)
    i[stretch] = FLOOR + 1.4 * (i[stretch] - FLOOR)
    result = af.detect_artefacts(fiber['times'], g, i)
    assert not result.valid[stretch].any()
    assert result.valid[:5990].mean() > 0.99 and result.valid[9010:].mean() > 0.99
    g[stretch] = FLOOR + 1.4 * (g[stretch] - FLOOR)
    assert af.detect_artefacts(fiber['times'], g, fiber['iso']).valid.mean() > 0.99


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_a_sharp_step_is_split_where_the_samples_change(seed):
    """Both bands flat at a room-light level for 100 s: the mask starts and ends at the
    samples that change, not up to half the level's window (~0.5 s) away from them (frames
    at the room-light level left valid bend the interpolation and the ΔF/F after it)."""
    fiber = _synth.make_fiber(seed, duration=600)
    g, i = fiber['gcamp'].copy(), fiber['iso'].copy()
    stretch = slice(6000, 9000)
    for band in (g, i):
        band[stretch] = FLOOR + 0.3 * np.median(g - FLOOR)
    result = af.detect_artefacts(fiber['times'], g, i)
    assert not result.valid[stretch].any()
    assert result.valid[5985:5998].all() and result.valid[9002:9015].all()
