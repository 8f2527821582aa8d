"""Peri-event kernels: spec behaviours, a naive loop reference and property tests."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iblnm import config
from iblnm.signal import responses as rs


def _naive_peri_event(times, values, events, window, fs=None, t1=None):
    """Event-by-event, sample-by-sample reading of spec §7 ``get_responses``."""
    fs = round(1 / np.median(np.diff(times))) if fs is None else fs
    t0, t_end = window
    t1_rel = None if t1 is None else np.asarray(t1, dtype=float) - events
    if t1_rel is not None:
        t_end = np.nanmax(t1_rel) if np.any(np.isfinite(t1_rel)) else abs(t0)
    offsets = list(range(round(t0 * fs), round(t_end * fs)))
    out = np.full((len(events), len(offsets)), np.nan)
    for k, event in enumerate(events):
        if not (np.isfinite(event) and event + t0 >= times[0] and event + t_end <= times[-1]):
            continue
        anchor = next(i for i, t in enumerate(times) if t >= event)
        for j, offset in enumerate(offsets):
            if t1_rel is not None and offset / fs > t1_rel[k]:
                continue
            out[k, j] = values[min(max(anchor + offset, 0), len(times) - 1)]
    return out, np.array(offsets) / fs


# ---------------------------------------------------------------------------
# peri_event
# ---------------------------------------------------------------------------
def test_default_window_gives_120_samples_at_30hz():
    times = np.arange(0, 100, 1 / 30)
    responses, tpts = rs.peri_event(times, times, [50.0])
    assert config.RESPONSE_WINDOW == (-1.0, 3.0)
    assert responses.shape == (1, 120)
    assert tpts[0] == -1.0 and tpts[-1] == pytest.approx(89 / 30)
    assert tpts[0] < 0 < tpts[-1]
    _, short = rs.peri_event(times, times, [50.0], window=(-1, 1))
    assert len(short) == 60  # the original window: W follows from the window and fs


def test_2997hz_gives_the_same_sample_count_as_30hz():
    shapes = []
    for fs in (29.97, 30.0):
        times = np.arange(0, 100, 1 / fs)
        shapes.append(rs.peri_event(times, np.sin(times), [20.0, 50.0])[0].shape)
    assert shapes[0] == shapes[1] == (2, 120)


def test_ramp_values():
    times = np.arange(0, 10, 1 / 30)
    responses, tpts = rs.peri_event(times, 2 * times, [5.0], window=(-0.5, 0.5))
    assert responses.shape == (1, 30)
    assert responses[0, 0] == pytest.approx(9.0)
    assert responses[0, -1] == pytest.approx(10.93, abs=0.01)
    np.testing.assert_allclose(responses[0], 2 * (5.0 + tpts))


def test_sample_alignment_anchor_is_first_sample_at_or_after_the_event():
    times = np.arange(0, 10, 0.1)
    responses, tpts = rs.peri_event(
        times, times, [5.0, 5.04], window=(0, 0.3), fs=10, align='sample'
    )
    np.testing.assert_allclose(responses, [[5.0, 5.1, 5.2], [5.1, 5.2, 5.3]])


def test_linear_alignment_has_zero_lag_for_events_between_samples():
    """A ramp read at events falling anywhere between samples: value = event + t exactly,
    and the peak of a sampled kernel is found at its true latency (the 'sample' anchor
    lags by up to one sample, 16.7 ms on average at 30 Hz)."""
    fs = 30.0
    times = np.arange(0, 200, 1 / fs)
    rng = np.random.default_rng(0)
    events = np.sort(rng.uniform(10, 190, 200))  # uniformly placed between samples
    linear, tpts = rs.peri_event(times, times, events)
    np.testing.assert_allclose(linear, events[:, None] + tpts[None, :], atol=1e-9)
    lag_linear = np.mean(linear - (events[:, None] + tpts))
    sample, _ = rs.peri_event(times, times, events, align='sample')
    lag_sample = np.mean(sample - (events[:, None] + tpts))
    assert abs(lag_linear) < 1e-9
    assert lag_sample == pytest.approx(0.5 / fs, rel=0.1)  # 16.7 ms
    # a smooth transient (peak 0.25 s after each event): the mean trace is the kernel
    # without a shift (best-fitting delay 0), while the 'sample' trace leads by ~1/(2 fs)
    tau = 0.25

    def kernel(t):
        t = np.maximum(t, 0)
        return (t / tau) * np.exp(1 - t / tau)

    events = 10 + 6.0 * np.arange(30) + rng.uniform(0, 1, 30)  # isolated transients
    signal = np.zeros_like(times)
    for event in events:
        near = slice(np.searchsorted(times, event), np.searchsorted(times, event + 5))
        signal[near] += kernel(times[near] - event)
    shifts = np.linspace(-0.03, 0.03, 601)

    def best_shift(align):
        traces, tpts = rs.peri_event(times, signal, events, window=(-0.5, 1.0), align=align)
        mean = np.nanmean(traces, axis=0)
        errors = [np.sum((mean - kernel(tpts - d)) ** 2) for d in shifts]
        return shifts[np.argmin(errors)]

    assert abs(best_shift('linear')) < 0.003  # < 1/10 sample (interpolating the kink at 0)
    assert best_shift('sample') == pytest.approx(-0.5 / fs, abs=0.003)


def test_windows_touching_nan_samples_are_nan_as_a_whole_and_counted():
    times = np.arange(0, 100, 1 / 30)
    values = np.column_stack([np.sin(times), np.cos(times)])
    values[1500:1510, 0] = np.nan  # 50.0-50.3 s masked in signal 0 only
    events = np.array([20.0, 48.5, 52.5, 53.2, np.nan, 99.5])
    responses, tpts, masked = rs.peri_event(times, values, events, return_masked=True)
    # windows [-1, 3) s: 48.5 (47.5-51.5) and 52.5 (51.5-55.5) -> 48.5 only; 53.2 not
    np.testing.assert_array_equal(masked[:, 0], [False, True, False, False, False, False])
    assert not masked[:, 1].any()
    assert np.isnan(responses[1, :, 0]).all() and not np.isnan(responses[1, :, 1]).any()
    assert not np.isnan(responses[[0, 2, 3]]).any()
    assert np.isnan(responses[[4, 5]]).all()  # NaN event, window beyond the end: not counted
    one, _, lost = rs.peri_event(times, values[:, 0], events, return_masked=True)
    np.testing.assert_array_equal(lost, masked[:, 0])
    np.testing.assert_array_equal(one, responses[..., 0])
    kept, _ = rs.peri_event(times, values[:, 0], events, nan_rows=False)
    assert np.isnan(kept[1]).sum() in (9, 10, 11)  # only the samples next to the NaN stretch


def test_edge_and_nan_events_give_nan_rows():
    times = np.arange(0, 10, 1 / 30)
    responses, _ = rs.peri_event(times, times, [0.5, 5.0, 9.5, np.nan])
    assert np.all(np.isnan(responses[[0, 2, 3]]))
    assert not np.any(np.isnan(responses[1]))


def test_variable_t1_masks_strictly_after_t1():
    times = np.arange(0, 20, 1 / 30)
    events = np.array([5.0, 10.0, 15.0])
    t1 = np.array([5.5, np.nan, 15.2])
    responses, tpts = rs.peri_event(times, times, events, window=(0, 1), t1=t1, align='sample')
    assert tpts[-1] == pytest.approx(0.5 - 1 / 30)  # the window runs to max(t1 - event)
    assert not np.any(np.isnan(responses[0]))
    assert not np.any(np.isnan(responses[1]))  # NaN t1: full window
    assert np.all(np.isnan(responses[2, tpts > 0.2 + 1e-9]))
    assert not np.any(np.isnan(responses[2, tpts <= 0.2 - 1e-9]))
    _, tpts_nan = rs.peri_event(times, times, events, window=(-0.5, 1), t1=[np.nan] * 3)
    assert tpts_nan[-1] == pytest.approx(0.5 - 1 / 30)  # all NaN: up to |t0|


def test_several_signals_and_float32():
    times = np.arange(0, 60, 1 / 30)
    values = np.column_stack([np.sin(times), np.cos(times)]).astype(np.float32)
    responses, _ = rs.peri_event(times, values, [10.0, 30.0, np.nan])
    assert responses.shape == (3, 120, 2) and responses.dtype == np.float32
    for i in range(2):
        np.testing.assert_array_equal(
            responses[..., i], rs.peri_event(times, values[:, i], [10.0, 30.0, np.nan])[0]
        )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.floats(-2, 40), st.just(np.nan)), min_size=1, max_size=12),
    st.sampled_from([(-1.0, 1.0), (-0.5, 0.25), (0.0, 2.0)]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_peri_event_equals_naive_loop(events, window, with_t1, seed):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.032, 0.0345, 1100))  # 29–31 Hz, jittered, ~36 s
    values = rng.normal(size=times.size)
    events = np.array(events)
    t1 = events + rng.uniform(-0.2, 1.5, events.size) if with_t1 else None
    if t1 is not None:
        t1[rng.random(events.size) < 0.3] = np.nan
    ours, tpts = rs.peri_event(times, values, events, window=window, t1=t1, align='sample')
    expected, expected_tpts = _naive_peri_event(times, values, events, window, t1=t1)
    np.testing.assert_array_equal(tpts, expected_tpts)
    np.testing.assert_array_equal(ours, expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.floats(-2, 40), st.just(np.nan)), min_size=1, max_size=12),
    st.sampled_from([(-1.0, 3.0), (-0.5, 0.25), (0.0, 2.0)]),
    st.integers(0, 2**32 - 1),
)
def test_linear_peri_event_equals_np_interp_per_event(events, window, seed):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.032, 0.0345, 1100))  # 29–31 Hz, jittered, ~36 s
    values = rng.normal(size=times.size)
    events = np.array(events)
    ours, tpts = rs.peri_event(times, values, events, window=window)
    for k, event in enumerate(events):
        inside = np.isfinite(event) and event + window[0] >= times[0]
        inside = inside and event + tpts[-1] + 1 / 30 <= times[-1] + 1e-9
        if inside and event + window[1] <= times[-1]:
            np.testing.assert_allclose(ours[k], np.interp(event + tpts, times, values))
        elif not inside:
            assert np.isnan(ours[k]).all()


# ---------------------------------------------------------------------------
# Baseline, masking, magnitude
# ---------------------------------------------------------------------------
def test_subtract_baseline_zeroes_the_baseline_window():
    times = np.arange(0, 100, 1 / 30)
    responses, tpts = rs.peri_event(times, 3 + np.sin(times), [20.0, 40.0, 60.0])
    corrected = rs.subtract_baseline(responses, tpts)
    assert corrected.shape == responses.shape
    window = (tpts >= config.BASELINE_WINDOW[0] - 1e-9) & (tpts < config.BASELINE_WINDOW[1])
    np.testing.assert_allclose(corrected[:, window].mean(axis=1), 0, atol=1e-12)
    divided = rs.subtract_baseline(responses, tpts, divide=True)
    np.testing.assert_allclose(divided * (responses - corrected), corrected)


def test_subtract_baseline_nan_and_multi_signal():
    tpts = np.arange(-30, 30) / 30
    responses = np.ones((3, 60, 2))
    responses[1] = np.nan
    responses[2, 28, 0] = np.nan  # one NaN inside the baseline is ignored
    corrected = rs.subtract_baseline(responses, tpts)
    assert np.all(np.isnan(corrected[1]))
    np.testing.assert_allclose(np.nan_to_num(corrected[[0, 2]], nan=0.0), 0)
    with pytest.raises(ValueError, match='holds no sample'):
        rs.subtract_baseline(responses, tpts, window=(2, 3))


def test_baseline_mean_and_given_baselines():
    tpts = np.arange(-30, 90) / 30
    responses = np.tile(np.where(tpts < -0.5, 7.0, 1.0), (4, 1))
    responses[:, tpts >= 0] += np.arange(4)[:, None]
    np.testing.assert_allclose(rs.baseline_mean(responses, tpts), 1.0)  # (-0.5, 0): 15 samples
    np.testing.assert_allclose(rs.baseline_mean(responses, tpts, window=(-1, 0)), 4.0)
    given = rs.subtract_baseline(responses, tpts, baseline=np.array([1.0, 1.0, 2.0, np.nan]))
    np.testing.assert_allclose(given[:3, -1], [0, 1, 1])
    assert np.isnan(given[3]).all()
    stacked = np.stack([responses, 2 * responses], axis=-1)  # (trial, time, signal)
    out = rs.subtract_baseline(stacked, tpts, baseline=np.ones((4, 2)))
    np.testing.assert_allclose(out[..., 1], 2 * responses - 1)


def test_mask_after():
    tpts = np.arange(-30, 30) / 30
    responses = np.ones((3, 60))
    masked = rs.mask_after(responses, tpts, np.array([0.5, np.nan, 0.0]))
    assert np.all(np.isnan(masked[0, tpts > 0.5])) and not np.any(np.isnan(masked[0, tpts <= 0.5]))
    assert not np.any(np.isnan(masked[1]))
    assert not np.any(np.isnan(masked[2, tpts <= 0]))  # pre-event samples are never masked
    assert not np.any(np.isnan(responses))  # a copy
    assert rs.mask_after(np.ones((2, 60, 3)), tpts, [0.1, 0.2]).shape == (2, 60, 3)


def test_response_magnitude():
    tpts = np.arange(-30, 30) / 30
    assert rs.response_magnitude(np.full(60, 2.5), tpts) == pytest.approx(2.5)
    per_trial = np.array([[1.0], [3.0], [5.0]]) * np.ones((3, 60))
    np.testing.assert_allclose(rs.response_magnitude(per_trial, tpts), [1, 3, 5])
    per_trial[:, 36] = np.nan
    per_trial[0, 37] = np.nan
    np.testing.assert_allclose(rs.response_magnitude(per_trial, tpts), [1, 3, 5])
    late = rs.response_magnitude(per_trial, tpts, window=config.RESPONSE_WINDOWS['late'])
    np.testing.assert_allclose(late, [1, 3, 5])
    stacked = np.stack([per_trial, 2 * per_trial], axis=-1)
    np.testing.assert_allclose(rs.response_magnitude(stacked, tpts), [[1, 2], [3, 6], [5, 10]])
