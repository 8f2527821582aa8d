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
def test_default_window_gives_60_samples_at_30hz():
    times = np.arange(0, 100, 1 / 30)
    responses, tpts = rs.peri_event(times, times, [50.0])
    assert responses.shape == (1, 60)
    assert tpts[0] == -1.0 and tpts[-1] == pytest.approx(29 / 30)
    assert tpts[0] < 0 < tpts[-1]


def test_2997hz_gives_the_same_sample_count_as_30hz():
    shapes = []
    for fs in (29.97, 30.0):
        times = np.arange(0, 100, 1 / fs)
        shapes.append(rs.peri_event(times, np.sin(times), [20.0, 50.0])[0].shape)
    assert shapes[0] == shapes[1] == (2, 60)


def test_ramp_values():
    times = np.arange(0, 10, 1 / 30)
    responses, tpts = rs.peri_event(times, 2 * times, [5.0], window=(-0.5, 0.5))
    assert responses.shape == (1, 30)
    assert responses[0, 0] == pytest.approx(9.0)
    assert responses[0, -1] == pytest.approx(10.93, abs=0.01)
    np.testing.assert_allclose(responses[0], 2 * (5.0 + tpts))


def test_anchor_is_first_sample_at_or_after_the_event():
    times = np.arange(0, 10, 0.1)
    responses, tpts = rs.peri_event(times, times, [5.0, 5.04], window=(0, 0.3), fs=10)
    np.testing.assert_allclose(responses, [[5.0, 5.1, 5.2], [5.1, 5.2, 5.3]])


def test_edge_and_nan_events_give_nan_rows():
    times = np.arange(0, 10, 1 / 30)
    responses, _ = rs.peri_event(times, times, [0.5, 5.0, 9.5, np.nan])
    assert np.all(np.isnan(responses[[0, 2, 3]]))
    assert not np.any(np.isnan(responses[1]))


def test_variable_t1_masks_strictly_after_t1():
    times = np.arange(0, 20, 1 / 30)
    events = np.array([5.0, 10.0, 15.0])
    t1 = np.array([5.5, np.nan, 15.2])
    responses, tpts = rs.peri_event(times, times, events, window=(0, 1), t1=t1)
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
    assert responses.shape == (3, 60, 2) and responses.dtype == np.float32
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
    ours, tpts = rs.peri_event(times, values, events, window=window, t1=t1)
    expected, expected_tpts = _naive_peri_event(times, values, events, window, t1=t1)
    np.testing.assert_array_equal(tpts, expected_tpts)
    np.testing.assert_array_equal(ours, expected)


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
