"""Fast medians: the values of np.median / np.nanmedian, to the last bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iblnm.signal import robust


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    st.booleans(),
)
def test_median_equals_numpy_on_every_axis(a, keepdims):
    for axis in [None, *range(a.ndim)]:
        expected = np.median(a, axis=axis, keepdims=keepdims)
        got = robust.median(a, axis=axis, keepdims=keepdims)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_array_equal(got, expected)


def test_median_propagates_nan_and_nanmedian_ignores_it():
    a = np.array([[1.0, np.nan, 3.0, 10.0], [4.0, 2.0, 8.0, 6.0]])
    np.testing.assert_array_equal(robust.median(a), [np.nan, 5.0])
    np.testing.assert_array_equal(robust.nanmedian(a), [3.0, 5.0])
    all_nan = np.full((2, 3), np.nan)
    with np.errstate(all='raise'):
        np.testing.assert_array_equal(robust.nanmedian(all_nan), [np.nan, np.nan])


@pytest.mark.parametrize('n', [1000, 1001])
def test_mad_sd_is_the_sd_of_gaussian_noise_and_ignores_nan(n):
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, size=(40, n))
    sd = robust.mad_sd(x)
    expected = 1.4826 * np.median(np.abs(x - np.median(x, axis=-1, keepdims=True)), axis=-1)
    np.testing.assert_array_equal(sd, expected)
    assert abs(np.median(sd) - 2.0) < 0.05
    x[:, ::7] = np.nan
    ok = x[0][np.isfinite(x[0])]
    assert robust.mad_sd(x)[0] == 1.4826 * np.median(np.abs(ok - np.median(ok)))


def test_median_interval_is_numpys_median_of_the_intervals():
    from iblnm.signal.preprocess import median_interval, sampling_rate

    rng = np.random.default_rng(5)
    for n in (2, 3, 10, 11, 82213):
        times = np.cumsum(rng.uniform(0.03, 0.04, n))
        assert median_interval(times) == np.median(np.diff(times))
    grid = np.arange(0, 2700, 1 / 30)  # a handful of interval values in a periodic pattern
    assert median_interval(grid) == np.median(np.diff(grid))
    assert sampling_rate(grid) == pytest.approx(30)
    assert np.isnan(sampling_rate([1.0])) and np.isnan(sampling_rate([0.0, np.nan, 1.0]))
