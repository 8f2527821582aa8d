"""Preprocessing kernels: known answers, ground-truth recovery and iblphotometry equality."""

import iblphotometry.fpio  # noqa: F401  (import first: avoids iblphotometry's circular import)
import numpy as np
import pandas as pd
import pytest
from iblphotometry import pipelines as ibl_pipelines
from iblphotometry import processing as ibl_processing
from scipy import signal as sps

from iblnm import config
from iblnm.signal import preprocess as pp

FS = 30


def _smooth_noise(rng, n, fs, band_hz, sd):
    """Gaussian noise band-passed to ``band_hz`` (Hz) and scaled to SD ``sd``."""
    sos = sps.butter(2, band_hz, btype='bandpass', fs=fs, output='sos')
    x = sps.sosfiltfilt(sos, rng.normal(size=n))
    return sd * x / x.std()


def _transients(rng, times, rate_hz, amplitude, tau_s=0.4):
    """Sparse exponential-decay transients (ΔF/F units) at Poisson times; returns (trace, onsets)."""
    onsets = np.sort(rng.uniform(times[0] + 5, times[-1] - 5, rng.poisson(rate_hz * np.ptp(times))))
    impulses = np.zeros(times.size)
    np.add.at(
        impulses, np.searchsorted(times, onsets), amplitude * rng.uniform(0.5, 1.5, onsets.size)
    )
    kernel = np.exp(-np.arange(int(5 * tau_s * FS)) / (tau_s * FS))
    return np.convolve(impulses, kernel)[: times.size], onsets


@pytest.fixture(scope='module')
def ground_truth():
    """20 min at 30 Hz: known ΔF/F, a motion artefact shared by both bands, bleaching, noise."""
    rng = np.random.default_rng(7)
    times = 3.0 + np.arange(0, 1200, 1 / FS)
    dff, _ = _transients(rng, times, rate_hz=0.2, amplitude=0.1)
    motion = _smooth_noise(rng, times.size, FS, (0.05, 2), sd=0.03)
    t = times - times[0]
    gcamp = 0.012 * (0.7 + 0.3 * np.exp(-t / 400)) * (1 + dff) * (1 + motion)
    iso = 0.009 * (0.8 + 0.2 * np.exp(-t / 250)) * (1 + 0.6 * motion)
    gcamp += rng.normal(0, 1e-5, t.size)
    iso += rng.normal(0, 1e-5, t.size)
    return times, gcamp, iso, dff


# ---------------------------------------------------------------------------
# Bleach correction
# ---------------------------------------------------------------------------
def test_lowpass_baseline_keeps_slow_and_removes_fast_components():
    t = np.arange(0, 3000, 1 / FS)
    slow, fast = np.sin(2 * np.pi * 0.001 * t), 0.5 * np.sin(2 * np.pi * 1.0 * t)
    baseline = pp.lowpass_baseline(slow + fast, FS)
    inner = slice(5000, -5000)
    np.testing.assert_allclose(baseline[inner], slow[inner], atol=0.02)


def test_lowpass_baseline_equals_iblphotometry_filt_and_handles_columns():
    rng = np.random.default_rng(0)
    t = np.arange(0, 600, 1 / FS)
    values = np.column_stack([rng.normal(size=t.size).cumsum(), rng.normal(size=t.size)])
    ours = pp.lowpass_baseline(values, FS)
    for i in range(2):
        theirs = ibl_processing.filt(pd.Series(values[:, i], index=t), N=3, Wn=0.01)
        np.testing.assert_allclose(ours[:, i], theirs.to_numpy(), atol=1e-10 * np.abs(ours).max())


def test_correct_modes():
    s, f = np.array([4.0, 6.0]), np.array([2.0, 3.0])
    np.testing.assert_array_equal(pp.correct(s, f, 'subtract'), [2, 3])
    np.testing.assert_array_equal(pp.correct(s, f, 'divide'), [2, 2])
    np.testing.assert_array_equal(pp.correct(s, f, 'subtract-divide'), [1, 1])
    with pytest.raises(ValueError, match='unknown correction mode'):
        pp.correct(s, f, 'add')


def test_bleach_correct_lowpass_equals_iblphotometry(ground_truth):
    times, gcamp, _, _ = ground_truth
    theirs = ibl_processing.lowpass_bleachcorrect(pd.Series(gcamp, index=times))
    np.testing.assert_allclose(pp.bleach_correct(times, gcamp), theirs.to_numpy(), atol=1e-12)


def test_bleach_correct_exponential_removes_a_pure_decay():
    t = np.linspace(0, 600, 18000)
    y = 1000 * np.exp(-t / 300) + 500
    exact = pp.bleach_correct(t, y, method='exponential', fit_fs=None)
    np.testing.assert_allclose(exact, 0, atol=1e-8)
    assert pp.fit_exponential_decay(t, y, fit_fs=None) == pytest.approx((1000, 300, 500), rel=1e-8)
    # the default fit on 1 s block means is biased by ~(1 s / τ)² / 24 only
    assert pp.fit_exponential_decay(t, y) == pytest.approx((1000, 300, 500), rel=1e-5)
    two = pp.bleach_correct(t, np.column_stack([y, 2 * y]), method='exponential', mode='divide')
    np.testing.assert_allclose(two, 1, atol=1e-5)
    with pytest.raises(ValueError, match='unknown bleach method'):
        pp.bleach_correct(t, y, method='spline')


# ---------------------------------------------------------------------------
# Reference regression
# ---------------------------------------------------------------------------
def test_fit_reference_ols_equals_polyfit_and_is_vectorised_over_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 3)).cumsum(axis=0)
    y = x * [0.5, 2.0, -1.0] + [1.0, 0.0, 3.0] + rng.normal(size=(1000, 3))
    slope, intercept = pp.fit_reference(y, x)
    for i in range(3):
        np.testing.assert_allclose(
            (slope[i], intercept[i]), np.polyfit(x[:, i], y[:, i], 1), rtol=1e-10
        )
    with pytest.raises(ValueError, match='same shape'):
        pp.fit_reference(y[:10], x[:9])
    with pytest.raises(ValueError, match='unknown regression method'):
        pp.fit_reference(y, x, method='lasso')


def test_fit_reference_huber_is_scale_invariant_and_matches_ols_on_clean_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=5000).cumsum()
    y = 0.8 * x + 2 + rng.normal(size=5000)
    ols, huber = pp.fit_reference(y, x), pp.fit_reference(y, x, method='huber')
    np.testing.assert_allclose(huber, ols, rtol=0.02)
    small = pp.fit_reference(1e-3 * y, 1e-2 * x, method='huber')  # raw photometry units
    np.testing.assert_allclose(small, (huber[0] / 10, huber[1] * 1e-3), rtol=1e-6)
    columns = pp.fit_reference(np.column_stack([y, 2 * y]), np.column_stack([x, x]), method='huber')
    np.testing.assert_allclose(columns[0], [huber[0], 2 * huber[0]], rtol=1e-6)


def test_huber_is_more_robust_than_ols_to_transients_coinciding_with_movement():
    """Transients at events where the animal also moves bias OLS; Huber down-weights them."""
    rng = np.random.default_rng(3)
    times = np.arange(0, 1200, 1 / FS)
    motion = _smooth_noise(rng, times.size, FS, (0.05, 2), sd=1.0)
    movement_bumps, _ = _transients(rng, times, rate_hz=0.1, amplitude=2.0)
    neural = 3.0 * movement_bumps  # a large neural transient with every movement
    reference = motion + movement_bumps + rng.normal(0, 0.1, times.size)
    signal = 1.5 * (motion + movement_bumps) + 0.3 + neural + rng.normal(0, 0.1, times.size)
    ols_error = abs(pp.fit_reference(signal, reference)[0] - 1.5)
    huber_error = abs(pp.fit_reference(signal, reference, method='huber')[0] - 1.5)
    assert huber_error < 0.05 and huber_error < ols_error / 4


def test_isosbestic_correct_keeps_time_order():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=500).cumsum()
    signal = 2 * reference + 1 + rng.normal(size=500)
    m, b = pp.fit_reference(signal, reference)
    np.testing.assert_allclose(
        pp.isosbestic_correct(signal, reference), signal - (m * reference + b)
    )


def test_isosbestic_correction_recovers_the_true_dff(ground_truth):
    times, gcamp, iso, dff = ground_truth
    gcamp_bc, iso_bc = pp.bleach_correct(times, gcamp), pp.bleach_correct(times, iso)
    corrected = pp.isosbestic_correct(gcamp_bc, iso_bc)
    assert np.corrcoef(corrected, dff)[0, 1] > 0.95
    assert np.corrcoef(gcamp_bc, dff)[0, 1] < 0.8  # the motion artefact is substantial
    t_out, z = pp.preprocess_isosbestic(times, gcamp, iso)
    assert np.corrcoef(z, np.interp(t_out, times, dff))[0, 1] > 0.95


def test_isosbestic_pipeline_equals_iblphotometry_0_3_4(ground_truth):
    times, gcamp, iso, _ = ground_truth
    theirs = ibl_pipelines.run_pipeline(
        ibl_pipelines.isosbestic_correction_pipeline,
        pd.Series(gcamp, index=times),
        pd.Series(iso, index=times),
    )
    ours = pp.isosbestic_correct(pp.bleach_correct(times, gcamp), pp.bleach_correct(times, iso))
    np.testing.assert_allclose(ours, theirs.to_numpy(), atol=1e-9 * np.abs(ours).max())


# ---------------------------------------------------------------------------
# z-score and resampling
# ---------------------------------------------------------------------------
def test_zscore_modes():
    rng = np.random.default_rng(5)
    x = rng.normal(3, 2, (100_000, 2))
    z = pp.zscore(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-12)
    robust = pp.zscore(x[:, 0], mode='median')
    mad = np.median(np.abs(x[:, 0] - np.median(x[:, 0])))
    np.testing.assert_allclose(robust, (x[:, 0] - np.median(x[:, 0])) / (1.4826 * mad))
    assert np.std(robust) == pytest.approx(1, abs=0.02)  # Gaussian: robust SD ≈ SD
    spiky = x[:, 0].copy()
    spiky[::100] += 200  # 1 % huge outliers inflate the SD, not the MAD
    assert np.median(np.abs(pp.zscore(spiky, mode='median'))) == pytest.approx(0.6745, rel=0.05)
    upstream = ibl_processing.z(spiky, mode='median')  # divides by the SD
    assert np.median(np.abs(upstream)) < 0.2
    with pytest.raises(ValueError, match='unknown z-score mode'):
        pp.zscore(x, mode='robust')


def test_resample_grid_accuracy_and_range():
    rng = np.random.default_rng(6)
    times = np.cumsum(rng.uniform(0.9, 1.1, 3000) / 29.97)
    values = np.sin(2 * np.pi * 0.5 * times)
    new_times, new_values = pp.resample(times, values, fs=30)
    np.testing.assert_allclose(np.diff(new_times), 1 / 30, atol=1e-9)
    assert new_times[0] == times[0] and new_times[-1] < times[-1]  # never extrapolates
    np.testing.assert_allclose(new_values, np.sin(2 * np.pi * 0.5 * new_times), atol=0.01)
    assert values.min() <= new_values.min() and new_values.max() <= values.max()


def test_resample_methods_and_columns_match_references():
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.uniform(0.03, 0.036, 2000))
    values = np.column_stack([rng.normal(size=2000), rng.normal(size=2000).cumsum()])
    t_lin, lin = pp.resample(times, values, method='linear')
    t_pchip, pchip = pp.resample(times, values)
    for i in range(2):
        np.testing.assert_allclose(lin[:, i], np.interp(t_lin, times, values[:, i]), atol=1e-12)
        theirs = ibl_processing.resample_signal(
            pd.Series(values[:, i], index=times), fs=30, method='pchip'
        )
        np.testing.assert_allclose(t_pchip, theirs.index.to_numpy())
        np.testing.assert_allclose(pchip[:, i], theirs.to_numpy(), atol=1e-12)
    with pytest.raises(ValueError, match='unknown resampling method'):
        pp.resample(times, values, method='cubic')


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def spec_fixture():
    """The original test_data fixture: 600 s, GCaMP 1000·e^(−t/300) + N(0,1) + 500."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 600, 18000)
    bleach = 1000 * np.exp(-t / 300)
    gcamp = bleach + rng.normal(0, 1, t.size) + 500
    iso = 0.8 * bleach + rng.normal(0, 0.5, t.size) + 400
    return t, gcamp, iso


def test_preprocess_isosbestic_spec_fixture(spec_fixture):
    result = pp.preprocess_isosbestic(*spec_fixture)
    times, values = result
    np.testing.assert_allclose(np.diff(times), 1 / config.TARGET_FS, atol=1e-9)
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert 100 < result.bleaching_tau < 600
    assert 0.8 < result.iso_correlation <= 1
    assert np.isfinite(result.slope) and np.isfinite(result.intercept)
    assert result.params == config.PREPROCESSING_PARAMS


def test_preprocess_single_band(spec_fixture):
    t, gcamp, _ = spec_fixture
    result = pp.preprocess_single_band(t, gcamp)
    np.testing.assert_allclose(np.diff(result.times), 1 / 30, atol=1e-9)
    assert abs(result.values.mean()) < 0.01 and abs(result.values.std() - 1) < 0.01
    assert 100 < result.bleaching_tau < 600 and np.isnan(result.iso_correlation)


def test_preprocess_pairs_by_position_and_handles_fibers(spec_fixture):
    t, gcamp, iso = spec_fixture
    two = pp.preprocess_isosbestic(
        t, np.column_stack([gcamp, gcamp]), np.column_stack([iso, iso])[:-7]
    )
    one = pp.preprocess_isosbestic(t[:-7], gcamp[:-7], iso[:-7])
    np.testing.assert_allclose(two.values, np.column_stack([one.values, one.values]))
    np.testing.assert_allclose(two.bleaching_tau, [one.bleaching_tau] * 2)
    np.testing.assert_allclose(two.iso_correlation, [one.iso_correlation] * 2)


def test_preprocess_params_are_merged_step_by_step(spec_fixture):
    result = pp.preprocess_isosbestic(
        *spec_fixture, params={'regression': {'method': 'huber'}, 'resample': {'fs': 15}}
    )
    assert result.params['regression'] == {'method': 'huber', 'mode': 'subtract'}
    assert result.params['bleach'] == config.PREPROCESSING_PARAMS['bleach']
    np.testing.assert_allclose(np.diff(result.times), 1 / 15, atol=1e-9)
    assert config.PREPROCESSING_PARAMS['regression']['method'] == 'ols'  # not mutated


def test_real_session_preprocessing(cq002_bands):
    (times, gcamp), (_, iso) = cq002_bands['GCaMP'], cq002_bands['Isosbestic']
    result = pp.preprocess_isosbestic(times, gcamp, iso)
    assert result.values.shape == (result.times.size, 2) and np.all(np.isfinite(result.values))
    np.testing.assert_allclose(np.diff(result.times), 1 / 30, atol=1e-9)
    assert np.all(np.isfinite(result.bleaching_tau)) and np.all(result.bleaching_tau > 0)
    assert np.all((result.iso_correlation >= 0) & (result.iso_correlation <= 1))
    robust = pp.preprocess_isosbestic(times, gcamp, iso, params={'regression': {'method': 'huber'}})
    assert np.all(np.isfinite(robust.values))
