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


@pytest.mark.parametrize(
    ('order', 'cutoff_hz', 'fs'), [(3, 0.01, 30.0), (4, 1.0, 30.0), (4, 7.5, 20.0), (1, 3.0, 50.0)]
)
def test_zero_phase_lowpass_equals_scipy_sosfiltfilt_to_the_bit(order, cutoff_hz, fs):
    rng = np.random.default_rng(order)
    values = rng.normal(size=(5000, 3)).cumsum(axis=0)
    sos = sps.butter(order, cutoff_hz, btype='lowpass', fs=fs, output='sos')
    expected = sps.sosfiltfilt(sos, values, axis=0)
    np.testing.assert_array_equal(pp.zero_phase_lowpass(values, fs, cutoff_hz, order), expected)
    np.testing.assert_array_equal(
        pp.zero_phase_lowpass(values[:, 1], fs, cutoff_hz, order), expected[:, 1]
    )
    padlen = 3 * (2 * len(sos) + 1)
    for n in (padlen, padlen + 1):  # scipy refuses the first and filters the second
        short = values[:n, 0]
        try:
            expected_short = sps.sosfiltfilt(sos, short)
        except ValueError as error:
            with pytest.raises(ValueError) as ours:
                pp.zero_phase_lowpass(short, fs, cutoff_hz, order)
            assert str(ours.value) == str(error)
        else:
            np.testing.assert_array_equal(
                pp.zero_phase_lowpass(short, fs, cutoff_hz, order), expected_short
            )


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
    # the default 0.01 Hz low-pass leaves shared bleaching residue at the edges (high iso
    # correlation); the double exponential removes the bleaching exactly: what is left in
    # both bands is independent noise
    assert 0.8 < result.iso_correlation <= 1
    dexp = pp.preprocess_isosbestic(
        *spec_fixture, params={'bleach': {'method': 'double_exponential'}}
    )
    assert 0 <= dexp.iso_correlation < 0.01
    assert np.isfinite(result.slope) and np.isfinite(result.intercept)
    assert {k: v for k, v in result.params.items() if k != 'floor'} == {
        k: v for k, v in config.PREPROCESSING_PARAMS.items() if k != 'floor'
    }
    assert result.params['floor'] == {
        **config.PREPROCESSING_PARAMS['floor'],
        'value': config.DARK_LEVEL,
    }


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
    assert result.params['regression'] == {
        **config.PREPROCESSING_PARAMS['regression'],
        'method': 'huber',
    }
    assert result.params['bleach'] == config.PREPROCESSING_PARAMS['bleach']
    np.testing.assert_allclose(np.diff(result.times), 1 / 15, atol=1e-9)
    assert config.PREPROCESSING_PARAMS['regression']['method'] == 'bisquare'  # not mutated


def test_real_session_preprocessing(cq002_bands):
    (times, gcamp), (_, iso) = cq002_bands['GCaMP'], cq002_bands['Isosbestic']
    result = pp.preprocess_isosbestic(times, gcamp, iso)
    assert result.values.shape == (result.times.size, 2) and np.all(np.isfinite(result.values))
    np.testing.assert_allclose(np.diff(result.times), 1 / 30, atol=1e-9)
    assert np.all(np.isfinite(result.bleaching_tau)) and np.all(result.bleaching_tau > 0)
    assert np.all((result.iso_correlation >= 0) & (result.iso_correlation <= 1))
    robust = pp.preprocess_isosbestic(times, gcamp, iso, params={'regression': {'method': 'huber'}})
    assert np.all(np.isfinite(robust.values))


# ---------------------------------------------------------------------------
# Robust fits, masks, floor, anti-aliasing (issue 12)
# ---------------------------------------------------------------------------
def test_bisquare_equals_statsmodels_rlm_tukey_biweight():
    import statsmodels.api as sm

    rng = np.random.default_rng(11)
    x = rng.normal(size=4000).cumsum()
    y = 0.7 * x + 1.5 + rng.standard_t(3, size=4000)
    y[::50] += 20  # outliers
    for c in (4.685, 1.4):
        ours = pp.fit_reference(y, x, method='bisquare', bisquare_c=c)
        theirs = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.TukeyBiweight(c)).fit()
        np.testing.assert_allclose(ours, theirs.params[::-1], rtol=1e-5, atol=1e-6)
    # scale invariance (raw photometry units)
    small = pp.fit_reference(1e-3 * y, 1e-2 * x, method='bisquare')
    big = pp.fit_reference(y, x, method='bisquare')
    np.testing.assert_allclose(small, (big[0] / 10, big[1] * 1e-3), rtol=1e-6)


def test_bisquare_ignores_one_band_artefacts_that_bias_ols_and_huber():
    rng = np.random.default_rng(12)
    n = 20_000
    reference = _smooth_noise(rng, n, FS, (0.05, 2), sd=1.0)
    signal = 1.2 * reference + rng.normal(0, 0.2, n)
    reference_art = reference.copy()
    for start in rng.integers(0, n - 60, 15):  # large excursions in the isosbestic band only
        reference_art[start : start + 60] += 6.0
    errors = {
        m: abs(pp.fit_reference(signal, reference_art, method=m)[0] - 1.2)
        for m in ('ols', 'huber', 'bisquare')
    }
    assert errors['bisquare'] < 0.02
    assert errors['bisquare'] < errors['huber'] / 3 < errors['ols'] / 3


def test_fit_reference_uses_valid_samples_only():
    rng = np.random.default_rng(13)
    x = rng.normal(size=3000).cumsum()
    y = 2 * x + 1 + rng.normal(size=3000)
    valid = np.ones(3000, bool)
    valid[100:400] = False
    garbage = y.copy()
    garbage[~valid] = 1e6
    for method in ('ols', 'huber', 'bisquare'):
        np.testing.assert_allclose(
            pp.fit_reference(garbage, x, method=method, valid=valid),
            pp.fit_reference(y[valid], x[valid], method=method),
        )
    two = pp.fit_reference(
        np.column_stack([garbage, garbage]), np.column_stack([x, x]), valid=valid
    )
    np.testing.assert_allclose(two[0], [2, 2], rtol=0.01)


def test_double_exponential_fit_recovers_bleaching_and_resists_transients():
    rng = np.random.default_rng(14)
    t = np.arange(0, 3600, 1 / FS)
    truth = 0.002 * np.exp(-t / 200) + 0.003 * np.exp(-t / 3000) + 0.01
    dff, _ = _transients(rng, t, rate_hz=0.2, amplitude=0.1)
    y = truth * (1 + dff) + rng.normal(0, 2e-5, t.size)
    q = pp.fit_double_exponential(t, y)
    baseline = pp.double_exponential_baseline(t, y)
    assert np.max(np.abs(baseline / truth - 1)) < 0.01  # within 1 % of the true baseline
    assert 150 < q[1] < 260 and 2000 < q[3] < 4500
    # masked garbage does not move the fit
    garbage = y.copy()
    valid = np.ones(t.size, bool)
    valid[: 60 * FS] = False
    garbage[~valid] = 0.05
    masked = pp.double_exponential_baseline(t, garbage, valid=valid)
    assert np.max(np.abs(masked[valid] / truth[valid] - 1)) < 0.01
    corrected = pp.bleach_correct(t, garbage, method='double_exponential', valid=valid)
    assert np.isfinite(corrected).all()


def test_resample_with_mask_and_anti_alias():
    rng = np.random.default_rng(15)
    fs_in = 130.0
    t = np.arange(0, 600, 1 / fs_in)
    slow = np.sin(2 * np.pi * 0.5 * t)
    noise = rng.normal(0, 1, t.size)  # white: 0-65 Hz, most of it above 15 Hz
    x = slow + noise

    def band_power(times, values, lo=8, hi=15):
        f, pxx = sps.welch(values, fs=1 / np.median(np.diff(times)), nperseg=1024)
        return pxx[(f >= lo) & (f <= hi)].mean()

    t_raw, plain = pp.resample(t, x, fs=30)
    t_aa, filtered = pp.resample(t, x, fs=30, anti_alias_filter=True)
    truth_power = band_power(t, noise)  # 8-15 Hz power of the noise itself
    assert band_power(t_raw, plain) > 3 * truth_power  # folded noise
    assert band_power(t_aa, filtered) < 1.5 * truth_power
    _, slow_aa = pp.resample(t, slow, fs=30, anti_alias_filter=True)  # the pass band is kept
    np.testing.assert_allclose(slow_aa, np.interp(t_aa, t, slow), atol=2e-3)
    # 30 Hz input: no filtering at all
    t30 = np.arange(0, 60, 1 / 30.0)
    np.testing.assert_array_equal(pp.anti_alias(np.sin(t30), 30.0, 30), np.sin(t30))
    # masked samples become NaN on the grid, the rest is untouched
    valid = np.ones(t.size, bool)
    valid[1000:1300] = False
    t_m, masked = pp.resample(t, x, fs=30, valid=valid)
    gap = (t_m > t[999]) & (t_m < t[1300])
    assert np.isnan(masked[gap]).all() and np.isfinite(masked[~gap]).all()
    np.testing.assert_allclose(masked[t_m < t[990]], plain[t_m < t[990]])


def _floor_fiber(rng, n=36_000, floor=1 / 255):
    """Light 30 % above the floor, known ΔF/F, bleaching, shared motion and noise."""
    times = np.arange(n) / FS
    dff, _ = _transients(rng, times, rate_hz=0.2, amplitude=0.1)
    motion = _smooth_noise(rng, n, FS, (0.05, 2), sd=0.02)
    light_g = 0.3 * floor * (1 + 0.3 * np.exp(-times / 300))
    light_i = 0.5 * floor * (1 + 0.2 * np.exp(-times / 500))
    gcamp = floor + light_g * (1 + dff) * (1 + motion) + rng.normal(0, 2e-3 * 0.3 * floor, n)
    iso = floor + light_i * (1 + motion) + rng.normal(0, 2e-3 * 0.5 * floor, n)
    return times, gcamp, iso, dff


def test_floor_subtraction_gives_the_true_dff_amplitude():
    rng = np.random.default_rng(16)
    times, gcamp, iso, dff = _floor_fiber(rng)
    with_floor = pp.preprocess_isosbestic(times, gcamp, iso, params={'floor': {'subtract': True}})
    without = pp.preprocess_isosbestic(times, gcamp, iso, params={'floor': {'subtract': False}})
    truth = np.interp(with_floor.times, times, dff)
    truth = truth - pp.lowpass_baseline(truth, 30)  # what a 0.01 Hz baseline can keep

    def gain(values):
        return np.polyfit(truth, values, 1)[0]

    assert gain(with_floor.dff) == pytest.approx(1, abs=0.1)
    assert gain(without.dff) < 0.35  # 1 / (1 + floor / light): mostly floor
    assert with_floor.params['floor'] == {'subtract': True, 'value': pytest.approx(1 / 255)}


def test_preprocess_masks_are_nan_and_left_out_of_the_fits():
    rng = np.random.default_rng(17)
    times, gcamp, iso, dff = _floor_fiber(rng)
    params = {
        'floor': {'subtract': True},
        'regression': {'method': 'bisquare', 'lowpass_hz': 3},
        'bleach': {'method': 'double_exponential'},
    }
    clean = pp.preprocess_isosbestic(times, gcamp, iso, params=params)
    valid = np.ones(times.size, bool)
    valid[:1500] = valid[20_000:20_030] = False
    dirty_g, dirty_i = gcamp.copy(), iso.copy()
    dirty_g[:1500] = dirty_i[:1500] = 1 / 255  # disconnected start at the floor
    dirty_g[20_000:20_030] = 1.0  # saturated
    masked = pp.preprocess_isosbestic(times, dirty_g, dirty_i, params=params, valid=valid)
    bad = np.isnan(masked.values)
    assert bad[masked.times < times[1490]].all() and bad.mean() < 0.06
    assert np.nanmean(masked.values) == pytest.approx(0, abs=1e-9)
    assert np.nanstd(masked.values) == pytest.approx(1, abs=1e-9)
    assert masked.slope == pytest.approx(clean.slope, rel=0.02)
    ok = ~bad
    r_clean = np.corrcoef(clean.dff[ok], np.interp(clean.times[ok], times, dff))[0, 1]
    r_masked = np.corrcoef(masked.dff[ok], np.interp(masked.times[ok], times, dff))[0, 1]
    assert r_masked > r_clean - 0.01
    assert 0 < masked.r2 <= 1
    truth = np.interp(masked.times[ok], times, dff)
    unmasked = pp.preprocess_isosbestic(times, dirty_g, dirty_i, params=params)
    assert np.corrcoef(unmasked.dff[ok], truth)[0, 1] < r_masked  # robust fits: a little
    plain = {
        'floor': {'subtract': True},
        'bleach': {'method': 'lowpass'},
        'regression': {'method': 'ols', 'lowpass_hz': None},
    }
    plain_masked = pp.preprocess_isosbestic(times, dirty_g, dirty_i, params=plain, valid=valid)
    plain_unmasked = pp.preprocess_isosbestic(times, dirty_g, dirty_i, params=plain)
    r_plain = np.corrcoef(plain_masked.dff[ok], truth)[0, 1]
    assert np.corrcoef(plain_unmasked.dff[ok], truth)[0, 1] < r_plain - 0.05  # OLS: a lot


def test_time_gaps_are_found_and_filled_with_nan_frames():
    t = np.arange(3000) / 30.0
    t = np.concatenate([t[:1000], t[1600:]])  # 20 s not recorded after frame 999
    x = np.sin(t)
    after, n_missing = pp.time_gaps(t)
    assert after.tolist() == [999] and n_missing.tolist() == [600]
    new_t, new_x = pp.fill_time_gaps(t, np.column_stack([x, x]), (after, n_missing))
    assert new_t.size == 3000 and np.all(np.diff(new_t) > 0)
    assert np.isnan(new_x[1000:1600]).all() and np.isfinite(new_x[:1000]).all()
    assert np.isfinite(new_x[1600:]).all()
    np.testing.assert_allclose(new_t, np.arange(3000) / 30.0, atol=1e-9)
    # one dropped frame (2 intervals) is not a gap, three (4 intervals) are (factor 3)
    assert pp.time_gaps(np.delete(t, [10]))[0].tolist() == [998]
    assert pp.time_gaps(np.delete(t, [10, 11, 12]))[0].tolist() == [9, 996]
    same_t, same_x = pp.fill_time_gaps(t, x, (np.array([], int), np.array([], int)))
    assert np.array_equal(same_t, t) and np.array_equal(same_x, x)


def test_resample_never_interpolates_over_a_time_gap():
    t = np.arange(3000) / 30.0
    keep = (t < 40) | (t >= 60)
    t, x = t[keep], np.cos(t[keep])
    new_t, new_x = pp.resample(t, x, fs=30.0)
    inside = (new_t > 40 - 1 / 30) & (new_t < 60)
    assert np.isnan(new_x[inside]).all()
    assert np.isfinite(new_x[~inside]).all()
    # max_gap=None interpolates across (the old behaviour); on a regular grid nothing changes
    assert np.isfinite(pp.resample(t, x, fs=30.0, max_gap=None)[1]).all()
    reg = np.arange(900) / 30.0
    np.testing.assert_array_equal(
        pp.resample(reg, np.sin(reg), fs=30.0)[1],
        pp.resample(reg, np.sin(reg), fs=30.0, max_gap=None)[1],
    )
