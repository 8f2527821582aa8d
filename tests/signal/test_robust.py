"""Fast medians: the values of np.median / np.nanmedian, to the last bit."""

from unittest import mock

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


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
        elements=st.one_of(st.just(np.nan), st.floats(-1e6, 1e6, allow_nan=False)),
    ),
    st.booleans(),
)
def test_nanmedian_equals_numpy_and_warns_nothing(a, keepdims):
    """All-NaN and empty slices included; no warning filter is touched (catch_warnings is not
    thread-safe, and the kernels run on threads)."""
    import warnings

    for axis in [None, *range(a.ndim)]:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            expected = np.nanmedian(a, axis=axis, keepdims=keepdims)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            with mock.patch('warnings.catch_warnings', side_effect=AssertionError('not safe')):
                got = robust.nanmedian(a, axis=axis, keepdims=keepdims)
        assert caught == []
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_array_equal(got, expected)


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


def _long_arrays(n):
    """Long 1-D arrays (the bracketed selection) of the shapes recordings have, and some
    built so that the sample's brackets miss the middle (the full partition must run)."""
    rng = np.random.default_rng(11)
    grid = np.arange(n + 1) / 30
    cases = {
        'gaussian': rng.normal(size=n),
        'gaussian, even n': rng.normal(size=n + 1),
        'quantised (ADC levels)': np.round(rng.normal(size=n) * 3),
        'jittered intervals': np.diff(np.cumsum(rng.uniform(0.03, 0.04, n + 1))),
        'uniform grid intervals': np.diff(grid),
        'absolute deviations': np.abs(rng.standard_t(3, size=n)),
        'constant': np.full(n, 2.5),
        'two values, split at the middle': np.repeat([1.0, 2.0], n // 2),
        'sorted': np.sort(rng.normal(size=n)),
        'with infinities': np.where(rng.random(n) < 0.3, np.inf, rng.normal(size=n))
        * np.where(rng.random(n) < 0.5, 1, -1),
        'mostly +inf': np.where(rng.random(n) < 0.9, np.inf, rng.normal(size=n)),
    }
    for parity in (0, 1):  # the sampled positions hold the extremes: brackets miss the middle
        a = rng.normal(size=n + parity)
        idx = robust._sample_index(a.size)
        a[idx[::2]] = -1e9
        a[idx[1::2]] = 1e9
        cases[f'adversarial sample, n % 2 = {(n + parity) % 2}'] = a
        b = rng.normal(size=n + parity)
        b[idx] = 0.0  # every sampled value equal: lo == hi, but not the middle
        cases[f'adversarial constant sample, n % 2 = {(n + parity) % 2}'] = b
        c = rng.normal(size=n + parity)
        c[idx] = -1e9 + np.arange(idx.size)  # distinct, all below the rest: lo < hi, too low
        cases[f'adversarial low sample, n % 2 = {(n + parity) % 2}'] = c
    return cases


@pytest.mark.parametrize('n', [robust._BRACKET_MIN, 27403, 82213])
@pytest.mark.parametrize('name', list(_long_arrays(robust._BRACKET_MIN)))
def test_long_arrays_median_is_numpys_to_the_bit(name, n):
    a = _long_arrays(n)[name]
    assert a.size >= robust._BRACKET_MIN
    assert robust.median(a) == np.median(a)
    assert robust.nanmedian(a) == np.median(a)
    with np.errstate(invalid='ignore'):  # inf − inf is NaN: mad_sd leaves it out
        assert robust.mad_sd(a) == 1.4826 * np.nanmedian(np.abs(a - np.median(a)))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(robust._BRACKET_MIN, robust._BRACKET_MIN + 50),
    st.integers(0, 2**32 - 1),
    st.sampled_from(['normal', 'integers', 'few']),
)
def test_long_random_arrays_median_is_numpys(n, seed, kind):
    rng = np.random.default_rng(seed)
    a = {
        'normal': lambda: rng.normal(size=n),
        'integers': lambda: rng.integers(-20, 20, n).astype(float),
        'few': lambda: rng.choice([0.1, 0.2, 0.30000000000000004], n, p=[0.45, 0.1, 0.45]),
    }[kind]()
    assert robust.median(a) == np.median(a)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
    st.sampled_from(['normal', 'few', 'constant']),
    st.sampled_from(['median', 'first', 'last', 'offset', 'outside']),
)
def test_sorted_abs_deviation_median_is_numpys(rows, n, seed, kind, where):
    rng = np.random.default_rng(seed)
    a = {
        'normal': lambda: rng.normal(size=(rows, n)),
        'few': lambda: rng.integers(-2, 3, (rows, n)).astype(float) / 3,
        'constant': lambda: np.full((rows, n), 0.7),
    }[kind]()
    s = np.sort(a, axis=-1)
    centre = {
        'median': lambda: np.median(s, axis=-1),
        'first': lambda: s[:, 0],
        'last': lambda: s[:, -1],
        'offset': lambda: np.median(s, axis=-1) + 0.1,
        'outside': lambda: s[:, -1] + 5.0,
    }[where]()
    expected = np.median(np.abs(s - centre[:, None]), axis=-1)
    np.testing.assert_array_equal(robust.sorted_abs_deviation_median(s, centre), expected)
    np.testing.assert_array_equal(robust.sorted_abs_deviation_median(s[0], centre[0]), expected[0])
