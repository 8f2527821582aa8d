"""QC kernels: known answers, per-window loop references and iblphotometry 0.3.4 equality."""

import iblphotometry.fpio  # noqa: F401  (import first: avoids iblphotometry's circular import)
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from iblphotometry import metrics as ibl_metrics
from scipy.stats import linregress

from iblnm import config
from iblnm.signal import qc

CQ002 = 'cortexlab/Subjects/CQ002/2024-11-05/001'
TOL = {'rtol': 1e-10, 'atol': 0}


def _windows(seed=0, n_windows=6, n=900):
    """Windows with drift, Gaussian noise and sparse positive transients (a realistic mix)."""
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    noise = rng.normal(0, 1, (n_windows, n))
    transients = (rng.random((n_windows, n)) < 0.01) * rng.exponential(5, (n_windows, n))
    smooth = np.apply_along_axis(lambda r: np.convolve(r, np.ones(15) / 15, 'same'), 1, transients)
    return 0.01 + 1e-3 * (noise + 4 * smooth + 0.002 * x)


def _loop(kernel, windows, **kwargs):
    return np.array([kernel(w, **kwargs) for w in windows])


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------
def test_window_starts_is_qc_signals_arange():
    np.testing.assert_array_equal(qc.window_starts(2.0, 600.0, 120, 60), np.arange(2.0, 480.0, 60))
    assert qc.window_starts(0, 100, 120, 60).size == 0


def test_sliding_windows_select_first_sample_at_or_after_start():
    rng = np.random.default_rng(3)
    fs = 30
    times = 5.0 + np.arange(600 * fs) / fs + rng.uniform(-2e-4, 2e-4, 600 * fs)
    values = rng.normal(size=times.size)
    centres, windows = qc.sliding_windows(times, values, w_len=120, step_len=60)
    starts = np.arange(times[0], times[-1] - 120, 60)
    np.testing.assert_allclose(centres, starts + 60)
    assert windows.shape == (len(starts), 3600)
    for start, window in zip(starts, windows):  # loop reference
        first = np.flatnonzero(times >= start)[0]
        np.testing.assert_array_equal(window, values[first : first + 3600])


def test_sliding_windows_short_signal_gives_no_window():
    times = np.arange(100) / 30
    centres, windows = qc.sliding_windows(times, np.ones(100), w_len=120, step_len=60)
    assert centres.shape == (0,) and windows.shape == (0, 3600)


def test_detrend_windows_equals_linregress_residuals():
    windows = _windows()
    x = 100 + np.arange(windows.shape[1]) / 30
    detrended = qc.detrend_windows(windows, x)
    for window, result in zip(windows, detrended):
        fit = linregress(x, window)
        np.testing.assert_allclose(result, window - (fit.slope * x + fit.intercept), atol=1e-15)
    # the default abscissa (sample index) gives the same residuals for uniform sampling
    np.testing.assert_allclose(qc.detrend_windows(windows), detrended, atol=1e-15)


def test_detrend_windows_removes_exact_lines():
    x = np.arange(50.0)
    lines = np.array([3 + 2 * x, -1 - 0.5 * x])
    np.testing.assert_allclose(qc.detrend_windows(lines), 0, atol=1e-12)


# ---------------------------------------------------------------------------
# Metric kernels: vectorised == per-window loop == iblphotometry
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('name', 'kwargs'),
    [
        ('n_unique_samples', {}),
        ('median_absolute_deviance', {}),
        ('percentile_distance', {}),
        ('percentile_distance', {'pc': (5, 50)}),
        ('percentile_asymmetry', {}),
        ('percentile_asymmetry', {'pc_comp': 75}),
        ('ar_score', {}),
        ('ar_score', {'order': 3}),
    ],
)
def test_vectorised_metric_equals_loop_and_iblphotometry(name, kwargs):
    windows = np.round(_windows(seed=4), 5)  # quantised so that n_unique_samples is < 1
    kernel, reference = qc.SLIDING_METRIC_KERNELS[name], getattr(ibl_metrics, name)
    vectorised = kernel(windows, **kwargs)
    assert vectorised.shape == (windows.shape[0],)
    np.testing.assert_allclose(vectorised, _loop(kernel, windows, **kwargs), **TOL)
    np.testing.assert_allclose(vectorised, _loop(reference, windows, **kwargs), **TOL)


def test_metrics_on_a_whole_signal_return_scalars():
    signal = _windows(n_windows=1)[0]
    for kernel in qc.SLIDING_METRIC_KERNELS.values():
        assert np.ndim(kernel(signal)) == 0


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.int64, st.tuples(st.integers(1, 4), st.integers(2, 40)), elements=st.integers(-3, 3)
    )
)
def test_n_unique_samples_matches_np_unique(windows):
    expected = [np.unique(w).size / w.size for w in windows]
    np.testing.assert_allclose(qc.n_unique_samples(windows), expected)


def test_n_unique_samples_counts_nan_once_like_np_unique():
    a = np.array([1.0, np.nan, 1.0, np.nan, 2.0])
    assert qc.n_unique_samples(a) == pytest.approx(np.unique(a).size / a.size)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.floats(1e-6, 1e3))
def test_ar_score_matches_iblphotometry_on_random_walks(seed, order, scale):
    rng = np.random.default_rng(seed)
    windows = scale * (rng.normal(size=(3, 200)).cumsum(axis=1) + rng.normal(size=(3, 200)))
    np.testing.assert_allclose(
        qc.ar_score(windows, order=order),
        _loop(ibl_metrics.ar_score, windows, order=order),
        rtol=1e-9,
    )


def test_ar_score_known_values():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=200_000)
    assert abs(qc.ar_score(noise)) < 0.01
    ar1 = np.zeros_like(noise)
    for i in range(1, len(noise)):  # AR(1), phi = 0.9: R² = phi² = 0.81
        ar1[i] = 0.9 * ar1[i - 1] + noise[i]
    assert qc.ar_score(ar1) == pytest.approx(0.81, abs=0.01)
    scores = qc.ar_score(np.vstack([np.full(100, 3.0), noise[:100]]))
    assert np.isnan(scores[0]) and np.isfinite(scores[1])


def test_percentile_metrics_known_values():
    noise = np.random.default_rng(1).normal(5, 2, 500_000)
    assert qc.percentile_distance(noise) == pytest.approx(1.645, abs=0.01)
    assert qc.percentile_asymmetry(noise) == pytest.approx(1.0, abs=0.01)
    skewed = noise + np.random.default_rng(2).exponential(3, noise.size)
    assert qc.percentile_asymmetry(skewed) > 1.1
    assert np.isnan(qc.percentile_distance(np.ones(10)))
    assert qc.median_absolute_deviance(noise) == pytest.approx(2 * 0.6745, rel=0.01)


# ---------------------------------------------------------------------------
# Whole-recording metrics
# ---------------------------------------------------------------------------
def test_n_early_samples():
    times = np.arange(1000) / 30
    assert qc.n_early_samples(times) == 0
    early = times.copy()
    early[500] -= 0.005  # one frame 5 ms early: one short interval (the next is long)
    assert qc.n_early_samples(early) == 1
    assert qc.n_early_samples(early, dt_tol=0.01) == 0
    series = pd.Series(np.zeros(early.size), index=early)
    assert qc.n_early_samples(early) == ibl_metrics.n_early_samples(series)


def test_n_band_inversions():
    alternating = np.tile([2, 1], 50)
    assert qc.n_band_inversions(np.r_[7, alternating]) == 0  # leading all-LED frame ignored
    assert qc.n_band_inversions(np.r_[0, alternating]) == 0
    swapped = alternating.copy()
    swapped[[10, 11]] = swapped[[11, 10]]  # 2,1,2,1 -> 2,1,1,2: two equal neighbour pairs
    assert qc.n_band_inversions(swapped) == 2
    assert qc.n_band_inversions(np.r_[alternating[:5], alternating[4], alternating[5:]]) == 1
    # raw NPM LedState: condition offsets (16 = Output0, 256 = Input1) are masked away
    assert qc.n_band_inversions(np.r_[16, np.tile([18, 17], 20), 274, 273, 18]) == 0
    colors = pd.DataFrame({'color': np.where(swapped == 2, 'Blue', 'Violet')})
    assert qc.n_band_inversions(swapped) == ibl_metrics.n_band_inversions(colors)


def test_band_inversions_read_the_frame_clock():
    """With frame times, a repeat across a missing camera frame is a dropped frame, not an
    inversion; a repeat on consecutive camera frames is one; a third LED or dark frames
    between the channels are recorded frames, not missing ones."""
    n = 400
    times, led = np.arange(n) / 60.0, np.tile([2, 1], n // 2)
    assert qc.n_band_inversions(led, times=times) == qc.n_dropped_frames(times) == 0
    for dropped, repeats in (([201], 1), ([201, 202], 0), ([201, 202, 203], 1), ([100, 301], 2)):
        keep = np.setdiff1d(np.arange(n), dropped)
        assert qc.n_band_inversions(led[keep], times=times[keep]) == 0
        assert qc.n_dropped_frames(times[keep]) == len(dropped)
        assert qc.n_band_inversions(led[keep]) == repeats  # without the clock: every repeat
    swapped = led.copy()
    swapped[200:] = 3 - swapped[200:]  # labels out of phase from frame 200 on
    assert qc.n_band_inversions(swapped, times=times) == 1
    assert qc.n_dropped_frames(times) == 0
    paused = np.r_[np.arange(100), np.arange(160, n)]  # a 1-s pause (60 frames)
    for tail in (led[paused], np.r_[led[:100], 3 - led[160:]]):
        assert qc.n_band_inversions(tail, times=times[paused]) == 0
    assert qc.n_dropped_frames(times[paused]) == 60
    three = np.tile([2, 1, 4], n // 3)  # 470 / 415 / 560 nm cycled
    t3 = np.arange(three.size) / 90.0
    assert qc.n_band_inversions(three, times=t3) == qc.n_dropped_frames(t3) == 0
    out_of_phase = three.copy()
    out_of_phase[[150, 151]] = out_of_phase[[151, 150]]  # 2,1 -> 1,2 once: 1,1 and 2,2 repeats
    assert qc.n_band_inversions(out_of_phase, times=t3) == 2


def test_bleaching_tau_recovers_the_spec_fixture():
    t = np.linspace(0, 600, 18000)
    tau = qc.bleaching_tau(t, 1000 * np.exp(-t / 300) + 500)
    assert isinstance(tau, float)
    assert 240 < tau < 360


def test_bleaching_tau_is_scale_free_and_robust_to_noise():
    """Raw photometry is ~1e-2: iblphotometry's fit stays at its start value there."""
    rng = np.random.default_rng(0)
    t = 30 + np.arange(0, 2700, 1 / 30)
    for scale in (1e-2, 1.0, 1e3):
        y = scale * (0.3 * np.exp(-(t - t[0]) / 300) + 1 + rng.normal(0, 0.01, t.size))
        assert qc.bleaching_tau(t, y) == pytest.approx(300, rel=0.05)
        assert qc.bleaching_tau(t, y, fit_fs=None) == pytest.approx(300, rel=0.05)


def test_bleaching_tau_nan_on_failure():
    t = np.arange(0, 100, 1 / 30)
    assert np.isnan(qc.bleaching_tau(t, np.full(t.size, np.nan)))


def test_iso_correlation():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5000).cumsum()
    r2 = qc.iso_correlation(2 * reference + 1 + rng.normal(0, 0.01, 5000), reference)
    assert isinstance(r2, float) and r2 > 0.999
    assert abs(qc.iso_correlation(rng.normal(size=5000), rng.normal(size=5000))) < 0.1
    signal = 0.5 * reference + rng.normal(
        0, 5, 5000
    )  # R² of OLS = squared Pearson r, in time order
    assert qc.iso_correlation(signal, reference) == pytest.approx(
        np.corrcoef(signal, reference)[0, 1] ** 2, rel=1e-10
    )
    assert np.isnan(qc.iso_correlation(np.ones(10), np.arange(10.0)))


# ---------------------------------------------------------------------------
# Sliding QC
# ---------------------------------------------------------------------------
def _session(seed=1, duration=600, t0=12.3):
    rng = np.random.default_rng(seed)
    times = t0 + np.arange(int(duration * 30)) / 30
    drift = rng.normal(0, 1e-5, times.size).cumsum()
    values = 0.01 + 1e-3 * np.exp(-times / 200) + drift + rng.normal(0, 1e-4, times.size)
    return times, np.round(values, 5)  # quantised like a digitiser


def test_sliding_qc_equals_iblphotometry_qc_signals():
    """Window by window equality with ``qc_signals`` (exactly uniform times: same windows)."""
    from iblphotometry import qc as ibl_qc

    times, values = _session()
    names = [name for name in config.QC_SLIDING_METRICS if hasattr(ibl_metrics, name)]
    assert len(names) == 5  # the iblphotometry metrics; the others are iblnm's own
    metric_fns = [getattr(ibl_metrics, name) for name in names]
    theirs = ibl_qc.qc_signals(
        {'GCaMP': pd.DataFrame({'VTA': values}, index=times)},
        metric_fns,
        metrics_kwargs=config.QC_METRICS_KWARGS,
        sliding_kwargs=config.QC_SLIDING_KWARGS,
    ).dropna(subset=['window'])
    centres, ours = qc.sliding_qc(times, values, metrics=names, undetrended=())  # detrends all
    for name, values_ in ours.items():
        rows = theirs[theirs['metric'] == name]
        np.testing.assert_allclose(centres, rows['window'].to_numpy(), atol=1e-9)
        np.testing.assert_allclose(values_, rows['value'].to_numpy(), **TOL)


def test_sliding_qc_outputs_and_undetrended_metrics():
    times, values = _session()
    centres, per_window = qc.sliding_qc(times, values)
    assert list(per_window) == config.QC_SLIDING_METRICS
    assert all(v.shape == centres.shape == (8,) for v in per_window.values())
    _, first, n = qc.window_index(times)
    raw_unique = [np.unique(values[i : i + n]).size / n for i in first]
    np.testing.assert_allclose(per_window['n_unique_samples'], raw_unique)
    assert np.all(per_window['n_unique_samples'] < 0.9)  # quantised raw data, not detrended
    kw = config.QC_METRICS_KWARGS['percentile_asymmetry']
    detrended = qc.detrend_windows(np.array([values[i : i + n] for i in first]))
    np.testing.assert_allclose(
        per_window['percentile_asymmetry'], qc.percentile_asymmetry(detrended, **kw), rtol=1e-9
    )


def test_sliding_qc_accepts_callables_and_rejects_unknown_names():
    times, values = _session(duration=300)
    _, per_window = qc.sliding_qc(times, values, metrics=[qc.median_absolute_deviance])
    assert list(per_window) == ['median_absolute_deviance']
    with pytest.raises(ValueError, match='unknown QC metric'):
        qc.sliding_qc(times, values, metrics=['n_edges'])


def test_sliding_qc_short_signal_gives_empty_windows():
    times, values = _session(duration=100)
    centres, per_window = qc.sliding_qc(times, values)
    assert centres.size == 0 and all(v.size == 0 for v in per_window.values())
    assert all(np.isnan(v) for v in qc.aggregate_windows(per_window).values())


def test_aggregate_windows():
    per_window = {
        'a': np.array([1.0, np.nan, 3.0]),
        'b': np.array([np.nan, np.nan]),
        'c': np.arange(11.0),
    }
    assert qc.aggregate_windows(per_window) == {
        'a': 2.0,
        'b': pytest.approx(np.nan, nan_ok=True),
        'c': 5.0,
    }
    agg = qc.aggregate_windows(per_window, how={'c': 'q10', 'a': 'max'})
    assert agg['c'] == pytest.approx(1.0) and agg['a'] == 3.0
    assert qc.aggregate_windows(per_window, how='median')['c'] == 5.0
    with pytest.raises(ValueError, match='unknown aggregation'):
        qc.aggregate_windows(per_window, how='mode')


# ---------------------------------------------------------------------------
# Real data (CQ002, two fibers)
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def cq002(real_data_dir, cq002_bands):
    """(bands as in ``cq002_bands``, raw LedState codes of CQ002)."""
    raw = pd.read_parquet(
        real_data_dir / CQ002 / 'raw_photometry_data/_neurophotometrics_fpData.raw.pqt'
    )
    return cq002_bands, raw['LedState'].to_numpy()


def test_real_session_sliding_qc_is_finite(cq002):
    bands, _ = cq002
    for times, values in bands.values():
        for fiber in range(values.shape[1]):
            centres, per_window = qc.sliding_qc(times, values[:, fiber])
            assert len(centres) == 44  # (2761.9 - 21.6 - 120) / 60 s
            for name, per in per_window.items():
                assert np.all(np.isfinite(per)), name
            assert 0 < per_window['n_unique_samples'].mean() < 1


def test_real_session_raw_metrics(cq002):
    bands, led_state = cq002
    for times, values in bands.values():
        assert qc.n_early_samples(times) == 0
        assert np.isfinite(qc.bleaching_tau(times, values[:, 0]))
    assert qc.n_band_inversions(led_state) == 0
    gcamp, iso = bands['GCaMP'][1], bands['Isosbestic'][1]
    n = min(len(gcamp), len(iso))
    assert 0 <= qc.iso_correlation(gcamp[:n, 1], iso[:n, 1]) <= 1


# ---------------------------------------------------------------------------
# Rate- and ADC-independent metrics
# ---------------------------------------------------------------------------
def _quantised_noise(n, sigma_over_q, seed=0, q=2.0**-12):
    rng = np.random.default_rng(seed)
    return 0.3 + q * np.round(sigma_over_q * rng.normal(size=n))


def test_n_noise_levels_counts_levels_per_noise_sd_whatever_the_rate():
    """The healthy 12-bit 130 Hz channel that n_unique_samples flagged (0.044) has ~200 levels."""
    for fs in (15, 30, 130):
        levels = qc.n_noise_levels(_quantised_noise(120 * fs, sigma_over_q=10))
        assert 18 <= levels <= 23  # 2·σ/q + 1 = 21 distinct values within ±1 SD
    fast = _quantised_noise(120 * 130, sigma_over_q=100)
    assert qc.n_unique_samples(fast) < 0.05 < 100 < qc.n_noise_levels(fast)
    coarse_adc = _quantised_noise(3600, sigma_over_q=10, q=2.0**-8)  # 8-bit, same σ/q
    assert qc.n_noise_levels(coarse_adc) == pytest.approx(
        qc.n_noise_levels(_quantised_noise(3600, sigma_over_q=10, q=2.0**-16)), abs=2
    )


def test_n_noise_levels_of_dead_and_saturated_channels():
    floor = config.QC_CAMERA_FLOOR
    assert qc.n_noise_levels(np.full(1000, floor)) == 1
    dead = floor + 1.2e-7 * np.random.default_rng(0).integers(0, 2, 1000)  # floor and one step
    assert qc.n_noise_levels(dead) <= 2
    windows = np.vstack([np.full(50, 1.0), np.r_[np.full(49, 1.0), 0.98]])  # clipped at 1.0
    np.testing.assert_array_equal(qc.n_noise_levels(windows), [1, 1])
    assert np.isnan(qc.n_noise_levels(np.full(10, np.nan)))


def test_light_above_floor():
    floor = config.QC_CAMERA_FLOOR
    assert qc.light_above_floor(np.full(100, floor)) == 0
    assert qc.light_above_floor(np.full(100, 3 * floor)) == pytest.approx(2.0)
    np.testing.assert_allclose(
        qc.light_above_floor(np.array([[2.0, 2.0], [4.0, 4.0]]), floor=2), [0, 1]
    )


def test_relative_mad_is_unit_free_and_rate_independent():
    """Same noise density (per-sample SD ∝ √fs) → same value at 30 and 120 Hz; any units."""
    floor = config.QC_CAMERA_FLOOR
    rng = np.random.default_rng(0)
    values = {}
    for fs, sd in ((30, 0.01), (120, 0.02)):
        light = floor + 0.004 * (1 + sd * rng.normal(size=900 * fs))
        values[fs] = qc.relative_mad(light, fs=fs)
    assert values[30] == pytest.approx(0.01 / np.sqrt(3), rel=0.05)
    assert values[120] == pytest.approx(values[30], rel=0.05)
    assert qc.relative_mad(5 * (1 + 0.01 * rng.normal(size=3600)), fs=30, floor=0) == (
        pytest.approx(0.01 / np.sqrt(3), rel=0.05)
    )
    assert np.isnan(qc.relative_mad(np.full(100, floor)))


def _ou(fs, minutes=4, tau=1.0, seed=0):
    """Ornstein-Uhlenbeck process (correlation time tau s) plus white noise, sampled at fs Hz."""
    rng = np.random.default_rng(seed)
    n, a = int(minutes * 60 * fs), np.exp(-1 / (fs * tau))
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = a * x[i - 1] + np.sqrt(1 - a * a) * rng.normal()
    return x + 0.5 * np.sqrt(fs / 30) * rng.normal(size=n)  # same noise density at every rate


def test_ar_score_10hz_does_not_saturate_with_the_rate():
    slow, fast = _ou(30), _ou(240)
    assert abs(qc.ar_score(fast) - qc.ar_score(slow)) > 0.3  # native rate: depends on fs
    assert qc.ar_score_10hz(fast, fs=240) == pytest.approx(qc.ar_score_10hz(slow, fs=30), abs=0.05)
    np.testing.assert_allclose(qc.ar_score_10hz(slow), qc.ar_score(slow))  # no fs: native


def test_bleaching_tau_is_bounded():
    """No decay (or a rise) gives NaN instead of an unbounded τ (2.5e7 s on real data)."""
    rng = np.random.default_rng(0)
    t = np.arange(0, 2700, 1 / 30)
    flat = 0.01 * (1 + 1e-3 * rng.normal(size=t.size))
    assert np.isnan(qc.bleaching_tau(t, flat))
    assert np.isnan(qc.bleaching_tau(t, 0.01 * (1 + 0.2 * (1 - np.exp(-t / 300)))))
    tau = qc.bleaching_tau(t, 0.01 * (1 + 0.3 * np.exp(-t / 300)) + 1e-5 * rng.normal(size=t.size))
    assert tau == pytest.approx(300, rel=0.05)
    assert tau <= config.QC_BLEACHING_TAU_BOUNDS[1] * t[-1]


def test_residual_power_ratio_white_noise_is_one():
    rng = np.random.default_rng(0)
    ratios = [qc.residual_power_ratio(rng.normal(size=10 * 2700), 10.0) for _ in range(5)]
    assert np.allclose(ratios, 1, atol=0.06)  # well below the no_signal threshold of 1.1
    assert qc.residual_power_ratio(_ou(10, minutes=45, tau=1.0), 10.0) > 5
    assert np.isnan(qc.residual_power_ratio(rng.normal(size=5000), 6.0))  # Nyquist < 3.5 Hz


def test_upper_tail_excess_and_transient_rate():
    rng = np.random.default_rng(0)
    noise = qc.window_robust_z(rng.normal(size=60_000), 600)
    assert abs(qc.upper_tail_excess(noise)) < 5e-4
    assert qc.transient_rate(noise, 10.0) == pytest.approx(0.00135 * 600, rel=0.3)  # per min
    events = rng.normal(size=60_000)
    events[100::200] += 8  # one positive transient every 20 s at 10 Hz
    z = qc.window_robust_z(events, 600)
    assert qc.upper_tail_excess(z) == pytest.approx(1 / 200, rel=0.1)
    assert qc.transient_rate(z, 10.0) == pytest.approx(3.0 + 0.8, rel=0.15)


def test_shared_steps_and_excursions_need_both_bands():
    floor = config.QC_CAMERA_FLOOR
    rng = np.random.default_rng(0)
    fs, t = 10.0, np.arange(0, 1800, 0.1)
    square = np.where((t > 600) & (t < 660), -0.3, 0.0)  # one 60 s shared excursion: 2 steps
    iso = floor + 0.005 * (1 + square) * (1 + 1e-3 * rng.normal(size=t.size))
    gcamp = floor + 0.004 * (1 + square) * (1 + 1e-3 * rng.normal(size=t.size))
    assert qc.n_shared_steps(gcamp, iso, fs) == 2
    clean_iso = floor + 0.005 * (1 + 1e-3 * rng.normal(size=t.size))
    assert qc.n_shared_steps(gcamp, clean_iso, fs) == 0  # a step in one band only
    short = np.where((t > 600) & (t < 610), -0.3, 0.0)  # 10 s, shorter than the 60 s median
    iso = floor + 0.005 * (1 + short) * (1 + 1e-3 * rng.normal(size=t.size))
    gcamp = floor + 0.004 * (1 + short) * (1 + 1e-3 * rng.normal(size=t.size))
    assert qc.shared_excursion_fraction(gcamp, iso, fs) == pytest.approx(10 / 1800, rel=0.1)
    assert qc.shared_excursion_fraction(gcamp, clean_iso, fs) == 0


def test_fiber_qc_equals_the_session_qc():
    """The pure helper computes what PhotometrySession.run_sliding_qc stores."""
    from iblnm.data import PhotometrySession

    times, values = _session(duration=900)
    iso = 0.8 * values + 1e-3
    ps = PhotometrySession({'eid': '6b1f3c52-9a0e-4a47-8d7e-1f0b6a1c2e11'}, one=object())
    ps.photometry = {
        'GCaMP': pd.DataFrame({'VTA': values}, index=times),
        'Isosbestic': pd.DataFrame({'VTA': iso}, index=times),
    }
    ps.run_sliding_qc()
    rows = qc.fiber_qc(times, values, iso)
    for band, metrics in rows.items():
        row = ps.qc[ps.qc['band'] == band].iloc[0]
        for name, value in metrics.items():
            np.testing.assert_allclose(row[name], value, rtol=1e-12, err_msg=f'{band} {name}')


# ---------------------------------------------------------------------------
# Shared window statistics (sliding_qc's fast path) == the kernels themselves
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('n_per_window', [3600, 3601])  # even and odd window lengths
def test_sliding_qc_shared_statistics_equal_the_kernels(n_per_window):
    """sliding_qc sorts each kind of window once and reads every median / percentile from it;
    each metric equals its kernel applied to the same windows."""
    fs = n_per_window / 120
    rng = np.random.default_rng(8)
    n = int(14 * 60 * fs)
    times = 3.0 + np.arange(n) / fs
    light = 0.02 + 0.004 * np.exp(-times / 400) + 2e-4 * rng.normal(size=n).cumsum() / 50
    values = np.round(light + 1e-4 * rng.normal(size=n), 5)  # quantised: few unique values
    kwargs = {'percentile_asymmetry': {'pc_comp': 75}, 'percentile_distance': {'pc': (5, 90)}}
    centres, ours = qc.sliding_qc(times, values, metrics_kwargs=kwargs)
    _, first, n_win = qc.window_index(times)
    assert n_win == n_per_window
    raw = qc._gather(values, first, n_win)
    detrended = qc.detrend_windows(raw, qc._gather(times, first, n_win))
    for name in config.QC_SLIDING_METRICS:
        kernel = qc.SLIDING_METRIC_KERNELS[name]
        kw = dict(kwargs.get(name, {}))
        if name in qc.RATE_AWARE_METRICS:
            kw['fs'] = qc.sampling_rate(times)
        if name in qc.FLOOR_AWARE_METRICS:
            kw['floor'] = config.QC_CAMERA_FLOOR
        windows = raw if name in config.QC_UNDETRENDED_METRICS else detrended
        expected = _loop(kernel, windows, **kw)  # one window at a time: no shared state
        np.testing.assert_allclose(ours[name], expected, rtol=1e-12, atol=0, err_msg=name)
    # a NaN sample sends every metric through the kernels (NaN-aware medians): same values
    # for the windows without it
    with_nan = values.copy()
    with_nan[-5] = np.nan
    _, nan_path = qc.sliding_qc(times, with_nan, metrics_kwargs=kwargs)
    for name in config.QC_SLIDING_METRICS:
        np.testing.assert_allclose(nan_path[name][:-2], ours[name][:-2], rtol=1e-9, err_msg=name)


@pytest.mark.parametrize('nperseg', [200, 201, 64])
def test_welch_density_equals_scipy_welch(nperseg):
    from scipy import signal as ss

    x = np.random.default_rng(nperseg).normal(size=5003).cumsum()
    freqs, power = qc.welch_density(x, 10.0, nperseg)
    expected_f, expected_p = ss.welch(x, fs=10.0, nperseg=nperseg, detrend=False)
    np.testing.assert_array_equal(freqs, expected_f)
    np.testing.assert_allclose(power, expected_p, rtol=1e-12)


def test_distinct_codes_equals_np_unique():
    for codes in ([2, 1, 2, 1, 7, 0], [], [-1, 3, 3], [70000, 1], np.array([1, 2], np.uint8)):
        codes = np.asarray(codes, dtype=getattr(codes, 'dtype', np.int64))
        expected = np.unique(codes)
        got = qc.distinct_codes(codes)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype


def test_sliding_windows_with_missing_frames_are_not_scored():
    rng = np.random.default_rng(4)
    t = np.arange(int(900 * 30)) / 30.0
    x = 0.05 + 0.001 * rng.standard_normal(t.size) + 1e-4 * np.sin(t / 7)
    _, clean = qc.sliding_qc(t, x)
    gap = x.copy()
    gap[(t >= 400) & (t < 430)] = np.nan  # 30 s of NaN frames
    centres, scored = qc.sliding_qc(t, gap)
    hit = (centres + 60 > 400) & (centres - 60 < 430)  # windows (120 s) touching the NaN
    assert hit.sum() >= 2
    for name in config.QC_SLIDING_METRICS:
        assert np.isnan(scored[name][hit]).all(), name
        np.testing.assert_array_equal(scored[name][~hit], clean[name][~hit], err_msg=name)


def test_sliding_windows_with_a_few_missing_frames_are_scored_holding_the_last_value():
    rng = np.random.default_rng(5)
    fs = 30.0
    t = np.arange(int(600 * fs)) / fs
    levels = np.round((0.05 + 0.001 * rng.standard_normal(t.size)) / 2e-4) * 2e-4  # ADC grid
    _, clean = qc.sliding_qc(t, levels)
    n_per_window = int(120 * fs)
    limit = int(config.QC_SLIDING_MAX_MISSING * n_per_window)  # 36 frames of a 3600
    for n_missing, scored_expected in ((limit, True), (limit + 1, False)):
        x = levels.copy()
        x[int(10 * fs) : int(10 * fs) + n_missing] = np.nan  # in the first window only
        centres, scored = qc.sliding_qc(t, x)
        first = centres - 60 <= 10
        assert first.sum() == 1
        for name in config.QC_SLIDING_METRICS:
            assert np.isfinite(scored[name][first]).all() == scored_expected, (name, n_missing)
            np.testing.assert_array_equal(scored[name][~first], clean[name][~first])
        if scored_expected:  # held frames stay on the grid: the quantisation metric is unmoved
            assert scored['n_noise_levels'][0] == clean['n_noise_levels'][0]
            assert abs(scored['light_above_floor'][0] / clean['light_above_floor'][0] - 1) < 1e-3
    assert np.isnan(qc._hold_missing(np.full(3, np.nan))).all()
    np.testing.assert_array_equal(
        qc._hold_missing(np.array([np.nan, 1.0, np.nan, np.nan, 2.0, np.nan])),
        [1.0, 1.0, 1.0, 1.0, 2.0, 2.0],
    )
