"""Photometry preprocessing kernels: bleach correction, isosbestic regression, z-score, resampling.

Every function takes plain arrays (times in s, values in any intensity unit) and returns
arrays; none knows about sessions, regions or files. Values may be 1-D ``(n_samples,)`` or
2-D ``(n_samples, n_signals)`` (one column per fiber) unless stated otherwise; time runs
along axis 0. Inputs are expected to be finite.

The default steps (``config.PREPROCESSING_PARAMS``, chosen by measurement in
``docs/methods.md`` §3.7): subtract the camera floor → bleach-correct each band
(3rd-order Butterworth low-pass at 0.01 Hz, ΔF/F) → low-pass both bands at 3 Hz → fit the
isosbestic band to the GCaMP band (Tukey bisquare, valid samples only) and subtract the
fit → anti-alias and resample to 30 Hz → z-score. With the floor off, no masks, an OLS
fit and no 3 Hz low-pass they are iblphotometry's ``isosbestic_correction_pipeline``.
The z-score is taken on the output grid: interpolation is linear in the
values, so this differs from z-scoring before resampling only by a scale factor, and it
makes the stored signal have exactly mean 0 and SD 1 (interpolating white-noise residuals
at a slightly different rate shrinks their SD, to ~0.88 in the spec fixture).
See ``docs/methods.md`` for the equations and the differences from iblphotometry.
"""

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy import signal as sps
from scipy.interpolate import PchipInterpolator

from iblnm import config
from iblnm.signal.robust import MAD_TO_SD, median, nanmedian
from iblnm.util import thread_map

HUBER_C = 1.345  # Huber tuning constant, in units of the robust residual SD (95 % efficiency)
BISQUARE_C = 4.685  # Tukey bisquare constant (95 % efficiency; statsmodels' TukeyBiweight default)
CORRECTION_MODES = ('subtract', 'divide', 'subtract-divide')


def median_interval(times):
    """Median sample interval (s) of ``times`` (s, shape ``(n,)``); NaN for < 2 or NaN times.

    ``np.median`` of the intervals, by :func:`iblnm.signal.robust.median` (its bracketed
    selection is fast on the few-valued, periodic intervals of a uniform grid too).
    """
    dt = np.diff(np.asarray(times, dtype=float))
    if dt.size == 0 or np.isnan(dt).any():
        return np.nan
    return float(median(dt))


def sampling_rate(times):
    """Sampling rate (Hz), 1 / :func:`median_interval` of ``times`` (s, shape ``(n,)``)."""
    return 1.0 / median_interval(times)


def time_gaps(times, factor=config.PHOTOMETRY_GAP_FACTOR):
    """Where frames are missing from a series of frame times.

    Parameters
    ----------
    times : ndarray, shape (n,)
        Frame times (s), increasing.
    factor : float
        An interval longer than ``factor`` × the median interval is a gap.

    Returns
    -------
    after : ndarray of int, shape (n_gaps,)
        Index of the last frame before each gap.
    n_missing : ndarray of int, shape (n_gaps,)
        Frames missing in each gap at the mean interval outside the gaps (≥ 1).
    """
    t = np.asarray(times, dtype=float)
    if t.size < 3:
        return np.array([], int), np.array([], int)
    dt = np.diff(t)
    is_gap = dt > factor * median_interval(t)
    after = np.flatnonzero(is_gap)
    if after.size == 0:
        return after, np.array([], int)
    step = dt[~is_gap].mean()  # the frame period (the median's jitter is ~0.1 %)
    return after, np.maximum(np.rint(dt[after] / step).astype(int) - 1, 1)


def fill_time_gaps(times, values, gaps):
    """Insert NaN frames into the time gaps of a series (see :func:`time_gaps`).

    Parameters
    ----------
    times : ndarray, shape (n,)
        Frame times (s).
    values : ndarray, shape (n,) or (n, n_signals)
    gaps : tuple (after, n_missing)
        Output of :func:`time_gaps` (of this series or of a band paired with it by
        position, so that both keep their pairs).

    Returns
    -------
    new_times : ndarray, shape (n + n_missing.sum(),)
        The frames inserted after ``times[after[j]]``, evenly spaced across the gap.
    new_values : ndarray
        NaN on the inserted frames.
    """
    after, n_missing = (np.asarray(g, dtype=int) for g in gaps)
    t, x = np.asarray(times, dtype=float), np.asarray(values, dtype=float)
    if after.size == 0:
        return t, x
    fill = [
        t[i] + (t[i + 1] - t[i]) / (k + 1) * np.arange(1, k + 1) for i, k in zip(after, n_missing)
    ]
    at = np.repeat(after + 1, n_missing)
    return np.insert(t, at, np.concatenate(fill)), np.insert(x, at, np.nan, axis=0)


# ---------------------------------------------------------------------------
# Bleach correction
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _butter_lowpass(order, cutoff_hz, fs):
    """Second-order sections, shape (n_sections, 6), of a Butterworth low-pass
    (``scipy.signal.butter``; corner and rate in Hz), designed once per (order, corner, rate):
    the design costs half as much as filtering 40 min at 30 Hz. Shared: never written."""
    return sps.butter(order, cutoff_hz, btype='lowpass', fs=fs, output='sos')


@functools.lru_cache(maxsize=64)
def _butter_lowpass_zi(order, cutoff_hz, fs):
    """``sosfilt_zi`` of :func:`_butter_lowpass`: (n_sections, 2), designed once like the sos."""
    return sps.sosfilt_zi(_butter_lowpass(order, cutoff_hz, fs))


def zero_phase_lowpass(values, fs, cutoff_hz, order):
    """Zero-phase Butterworth low-pass along axis 0: ``scipy.signal.sosfiltfilt`` with its defaults.

    The same operations as ``sosfiltfilt(butter(order, cutoff_hz, fs=fs, output='sos'), x,
    axis=0)`` (odd extension of 3 × the taps at each end, forward pass from the first value's
    steady state, backward pass from the last), so the result is equal to the bit (tested), with
    the filter's design and its initial state computed once per (order, corner, rate): scipy
    solves for the state at every call, a tenth of the cost of filtering a session.

    Parameters
    ----------
    values : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Uniformly sampled signal.
    fs, cutoff_hz : float
        Sampling rate and corner frequency (Hz).
    order : int
        Butterworth order (applied twice: the magnitude is that of order 2 · ``order``).

    Returns
    -------
    ndarray, same shape as ``values``

    Raises
    ------
    ValueError
        When ``values`` has no more samples than the padding (as ``sosfiltfilt``).
    """
    key = int(order), float(cutoff_hz), float(fs)
    sos, zi = _butter_lowpass(*key), _butter_lowpass_zi(*key)
    x = np.asarray(values, dtype=float)
    taps = (
        2 * len(sos) + 1 - min(np.count_nonzero(sos[:, 2] == 0), np.count_nonzero(sos[:, 5] == 0))
    )
    edge = 3 * taps
    if x.shape[0] <= edge:
        raise ValueError(
            f'The length of the input vector x must be greater than padlen, which is {edge}.'
        )
    ext = np.concatenate(
        (2 * x[:1] - x[edge:0:-1], x, 2 * x[-1:] - x[-2 : -(edge + 2) : -1]), axis=0
    )
    zi = zi.reshape((len(sos), 2) + (1,) * (x.ndim - 1))
    y, _ = sps.sosfilt(sos, ext, axis=0, zi=zi * ext[:1])
    y, _ = sps.sosfilt(sos, y[::-1], axis=0, zi=zi * y[-1:])
    return y[::-1][edge:-edge]


def lowpass_baseline(values, fs, order=3, cutoff_hz=0.01):
    """Slow baseline of a signal: zero-phase Butterworth low-pass.

    Parameters
    ----------
    values : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Uniformly sampled signal.
    fs : float
        Sampling rate (Hz).
    order : int
        Butterworth order. Applied forwards and backwards (``sosfiltfilt``), so the
        magnitude response is the square of an ``order``-th order filter.
    cutoff_hz : float
        Corner frequency (Hz); 0.01 Hz keeps fluctuations slower than ~100 s.

    Returns
    -------
    ndarray, same shape as ``values``
    """
    return zero_phase_lowpass(values, fs, cutoff_hz, order)


def correct(signal, fit, mode='subtract'):
    """Correct a signal by a fitted reference of the same shape.

    ``'subtract'``: S − F; ``'divide'``: S / F; ``'subtract-divide'``: (S − F) / F (ΔF/F).
    """
    signal, fit = np.asarray(signal, dtype=float), np.asarray(fit, dtype=float)
    if mode == 'subtract':
        return signal - fit
    if mode == 'divide':
        return signal / fit
    if mode == 'subtract-divide':
        return (signal - fit) / fit
    raise ValueError(f'unknown correction mode {mode!r}; expected one of {CORRECTION_MODES}')


def _decay(t, amplitude, tau, offset):
    return amplitude * np.exp(-t / tau) + offset


def _block_average(t, y, n_per_bin):
    """Means of consecutive blocks of ``n_per_bin`` samples (the incomplete tail is dropped)."""
    n_bins = len(t) // n_per_bin
    if n_per_bin <= 1 or n_bins < 4:
        return t, y
    n = n_bins * n_per_bin
    return t[:n].reshape(n_bins, -1).mean(axis=1), y[:n].reshape(n_bins, -1).mean(axis=1)


def fit_exponential_decay(times, values, fit_fs=1.0):
    """Least-squares fit of ``A·exp(−(t − t0)/τ) + b`` to one signal.

    The fit is done on rescaled data — time from the first sample (t − t0) and values
    divided by their median — with Levenberg–Marquardt (``scipy.optimize.curve_fit``),
    so that it converges for raw photometry intensities of ~1e-2 (iblphotometry's
    L-BFGS-B fit stays at its starting point there). To keep it fast, the signal is first
    averaged in blocks of ~``1/fit_fs`` s; bleaching time constants are minutes, so this
    does not bias τ.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), increasing.
    values : ndarray, shape (n_samples,)
        Signal (any unit).
    fit_fs : float or None
        Rate (Hz) of the block-averaged data used for the fit; None fits every sample.

    Returns
    -------
    tuple of float
        ``(amplitude, tau, offset)``: amplitude at t0 and offset in the units of
        ``values``, τ in s. All NaN if the fit fails or gives a non-positive τ.
    """
    t = np.asarray(times, dtype=float) - times[0]
    y = np.asarray(values, dtype=float)
    scale = median(y)
    scale = scale if np.isfinite(scale) and scale != 0 else 1.0
    n_per_bin = 1 if fit_fs is None else int(round(sampling_rate(t) / fit_fs))
    t_fit, y_fit = _block_average(t, y / scale, n_per_bin)
    p0 = (y_fit[0] - y_fit[-1], max(t_fit[-1], 1e-9) / 3, y_fit[-1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            popt, _ = optimize.curve_fit(_decay, t_fit, y_fit, p0=p0, maxfev=2000)
    except (RuntimeError, ValueError, TypeError):
        return np.nan, np.nan, np.nan
    amplitude, tau, offset = popt
    if not (np.isfinite(popt).all() and tau > 0):
        return np.nan, np.nan, np.nan
    return amplitude * scale, tau, offset * scale


def _per_column(fn, values):
    """Apply a 1-D function to each column of a 1-D or 2-D array (a short loop over signals)."""
    if values.ndim == 1:
        return fn(values)
    return np.stack([fn(column) for column in values.T], axis=-1)


def exponential_baseline(times, values, fit_fs=1.0):
    """The fitted single-exponential bleaching curve evaluated at ``times`` (shape of ``values``)."""
    t = np.asarray(times, dtype=float)

    def baseline(y):
        return _decay(t - t[0], *fit_exponential_decay(t, y, fit_fs=fit_fs))

    return _per_column(baseline, np.asarray(values, dtype=float))


def fill_invalid(values, valid):
    """Copy of ``values`` with the samples where ``valid`` is False linearly interpolated.

    Used only so that filters can run over masked samples; the filled values never enter a
    fit and are NaN in the output. 1-D ``values`` and ``valid`` of shape (n,).
    """
    x = np.asarray(values, dtype=float)
    if valid is None or valid.all() or not valid.any():
        return x
    idx = np.arange(x.size)
    out = x.copy()
    out[~valid] = np.interp(idx[~valid], idx[valid], x[valid])
    return out


def lowpass(values, fs, cutoff_hz, order=4):
    """Zero-phase Butterworth low-pass (``sosfiltfilt``) along axis 0; ``cutoff_hz`` in Hz."""
    return zero_phase_lowpass(values, fs, cutoff_hz, order)


def _double_decay(t, a_fast, tau_fast, a_slow, tau_slow, offset):
    return a_fast * np.exp(-t / tau_fast) + a_slow * np.exp(-t / tau_slow) + offset


def _valid_block_means(t, y, valid, n_per_bin, min_fraction=0.5):
    """Means of the valid samples of consecutive blocks (blocks < ``min_fraction`` valid dropped)."""
    n_bins = len(t) // n_per_bin if n_per_bin > 1 else len(t)
    n_per_bin = max(n_per_bin, 1)
    n = n_bins * n_per_bin
    w = valid[:n].reshape(n_bins, n_per_bin).astype(float)
    count = w.sum(axis=1)
    keep = count >= min_fraction * n_per_bin
    with np.errstate(invalid='ignore', divide='ignore'):
        tb = (t[:n].reshape(n_bins, -1) * w).sum(axis=1) / count
        yb = (np.where(valid[:n], y[:n], 0).reshape(n_bins, -1) * w).sum(axis=1) / count
    return tb[keep], yb[keep]


def _double_decay_jac(t, a_fast, tau_fast, a_slow, tau_slow, offset):
    e_fast, e_slow = np.exp(-t / tau_fast), np.exp(-t / tau_slow)
    return np.column_stack(
        [
            e_fast,
            a_fast * t * e_fast / tau_fast**2,
            e_slow,
            a_slow * t * e_slow / tau_slow**2,
            np.ones_like(t),
        ]
    )


def _grid_start(tb, yb, tau_fast_range, tau_slow_range, n_grid=12):
    """Best (A₁, τ₁, A₂, τ₂, b) over a τ grid, the amplitudes solved linearly (non-negative).

    For fixed τ the model is linear in (A₁, A₂, b): every grid pair is one 3×3 solve, all
    batched; pairs with a negative amplitude or offset are discarded.
    """
    tau_f = np.geomspace(*tau_fast_range, n_grid)
    tau_s = np.geomspace(*tau_slow_range, n_grid)
    e_f, e_s = np.exp(-tb[None] / tau_f[:, None]), np.exp(-tb[None] / tau_s[:, None])
    ff, ss, fs_ = (e_f * e_f).sum(1), (e_s * e_s).sum(1), e_f @ e_s.T  # sums over samples
    f1, s1, fy, sy = e_f.sum(1), e_s.sum(1), e_f @ yb, e_s @ yb
    g = n_grid
    gram = np.empty((g, g, 3, 3))
    gram[..., 0, 0], gram[..., 1, 1], gram[..., 2, 2] = ff[:, None], ss[None, :], tb.size
    gram[..., 0, 1] = gram[..., 1, 0] = fs_
    gram[..., 0, 2] = gram[..., 2, 0] = f1[:, None]
    gram[..., 1, 2] = gram[..., 2, 1] = s1[None, :]
    rhs = np.stack(np.broadcast_arrays(fy[:, None], sy[None, :], yb.sum()), axis=-1)
    coef = np.linalg.solve(gram + 1e-12 * np.eye(3), rhs[..., None])[..., 0]
    # SSE = y'y − 2 c'X'y + c'X'Xc
    sse = (yb @ yb) - 2 * (coef * rhs).sum(-1) + np.einsum('...i,...ij,...j', coef, gram, coef)
    sse[(coef < 0).any(axis=-1)] = np.inf
    i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
    if not np.isfinite(sse[i, j]):
        return None
    return coef[i, j, 0], tau_f[i], coef[i, j, 1], tau_s[j], coef[i, j, 2]


def fit_double_exponential(times, values, valid=None, fit_fs=0.2, loss='soft_l1', f_scale=0.01):
    """Robust bounded fit of ``A₁e^(−t/τ₁) + A₂e^(−t/τ₂) + b`` (t from the first sample).

    The fit runs on block means of the valid samples at ``fit_fs`` Hz (bleaching constants
    are minutes), on values divided by their median. Start: the best point of a 12 × 12 grid
    of (τ₁, τ₂) with the amplitudes solved linearly (:func:`_grid_start`); then
    ``scipy.optimize.least_squares`` (trust-region reflective, analytic Jacobian, robust
    ``loss`` with scale ``f_scale`` = 1 % of the median level, so that transients and
    residual artefacts pull little). Bounds keep the curve a decay: A₁, A₂ ≥ 0, b ≥ 0,
    10 s ≤ τ₁ ≤ 600 s ≤ τ₂ ≤ 10·T (T the recording length).

    Returns
    -------
    tuple of float
        ``(A₁, τ₁, A₂, τ₂, b)`` in the units of ``values`` (τ in s); all NaN if the fit fails.
    """
    t = np.asarray(times, dtype=float) - times[0]
    y = np.asarray(values, dtype=float)
    valid = np.ones(y.size, bool) if valid is None else np.asarray(valid, bool)
    scale = median(y[valid]) if valid.any() else np.nan
    if not (np.isfinite(scale) and scale > 0):
        return (np.nan,) * 5
    n_per_bin = int(round(sampling_rate(t) / fit_fs)) if fit_fs else 1
    tb, yb = _valid_block_means(t, y / scale, valid, n_per_bin)
    if tb.size < 8:
        return (np.nan,) * 5
    slow_max = max(10 * max(t[-1], 1.0), 601.0)
    lower, upper = (0, 10, 0, 600, 0), (np.inf, 600, np.inf, slow_max, np.inf)
    p0 = _grid_start(tb, yb, (10, 600), (600, slow_max))
    if p0 is None:
        p0 = (1e-3, 100.0, 1e-3, 3000.0, max(float(np.median(yb)), 1e-3))
    p0 = np.clip(p0, np.add(lower, 1e-9), np.subtract(upper, 1e-9))
    try:
        fit = optimize.least_squares(
            lambda q: _double_decay(tb, *q) - yb,
            p0,
            jac=lambda q: _double_decay_jac(tb, *q),
            bounds=(lower, upper),
            loss=loss,
            f_scale=f_scale,
            max_nfev=100,
            x_scale='jac',
        )
    except (ValueError, np.linalg.LinAlgError):
        return (np.nan,) * 5
    q = fit.x
    if not np.all(np.isfinite(q)):
        return (np.nan,) * 5
    return q[0] * scale, q[1], q[2] * scale, q[3], q[4] * scale


def double_exponential_baseline(times, values, valid=None, fit_fs=0.2):
    """The fitted double-exponential bleaching curve at ``times`` (1-D); low-pass if the fit fails."""
    t = np.asarray(times, dtype=float)
    q = fit_double_exponential(t, values, valid=valid, fit_fs=fit_fs)
    if not np.all(np.isfinite(q)):
        return lowpass_baseline(fill_invalid(values, valid), sampling_rate(t))
    return _double_decay(t - t[0], *q)


def bleach_correct(
    times,
    values,
    method='lowpass',
    mode='subtract-divide',
    order=3,
    cutoff_hz=0.01,
    fit_fs='auto',
    valid=None,
):
    """Remove photobleaching from a signal.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), uniformly sampled for ``'lowpass'``.
    values : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Raw signal (2-D only for ``'lowpass'`` and ``'exponential'``).
    method : {'lowpass', 'exponential', 'double_exponential'}
        Baseline: :func:`lowpass_baseline` (``order``, ``cutoff_hz``), a single exponential
        (:func:`fit_exponential_decay`, fitted at ``fit_fs`` Hz, 'auto' = 1 Hz, None = every
        sample) or the robust bounded double exponential (:func:`fit_double_exponential`,
        'auto' = 0.2 Hz).
    mode : {'subtract', 'divide', 'subtract-divide'}
        How the baseline is removed (:func:`correct`); the default gives ΔF/F.
    valid : ndarray of bool, shape (n_samples,), optional
        Samples that may enter the baseline: the low-pass runs over the others linearly
        interpolated, the exponential fits ignore them.

    Returns
    -------
    ndarray, same shape as ``values``
    """
    if valid is not None and np.ndim(values) == 1:
        filled = fill_invalid(values, valid)
    else:
        filled = values
    if method == 'lowpass':
        baseline = lowpass_baseline(filled, sampling_rate(times), order=order, cutoff_hz=cutoff_hz)
    elif method == 'exponential':
        baseline = exponential_baseline(times, filled, fit_fs=1.0 if fit_fs == 'auto' else fit_fs)
    elif method == 'double_exponential':
        fit_fs = 0.2 if fit_fs == 'auto' else fit_fs
        baseline = double_exponential_baseline(times, values, valid=valid, fit_fs=fit_fs)
    else:
        raise ValueError(
            f"unknown bleach method {method!r}; expected 'lowpass', 'exponential' or "
            "'double_exponential'"
        )
    return correct(filled, baseline, mode)


# ---------------------------------------------------------------------------
# Isosbestic regression
# ---------------------------------------------------------------------------
def _weighted_line(x, y, w):
    """Weighted least-squares line y ≈ m·x + b along axis 0 (closed form)."""
    sw = w.sum(axis=0)
    x_mean, y_mean = (w * x).sum(axis=0) / sw, (w * y).sum(axis=0) / sw
    xc = x - x_mean
    with np.errstate(invalid='ignore', divide='ignore'):
        slope = (w * xc * (y - y_mean)).sum(axis=0) / (w * xc * xc).sum(axis=0)
    return slope, y_mean - slope * x_mean


def _huber_line(x, y, c=HUBER_C, max_iter=50, rtol=1e-10):
    """Huber M-estimate of a line by IRLS (1-D x, y); scale = 1.4826·MAD of the residuals."""
    slope, intercept = _weighted_line(x, y, np.ones_like(y))
    for _ in range(max_iter):
        residuals = y - (slope * x + intercept)
        scale = MAD_TO_SD * median(np.abs(residuals - median(residuals)))
        if not scale > 0:
            break
        u = np.abs(residuals) / (c * scale)
        weights = 1.0 / np.maximum(u, 1.0)
        new_slope, new_intercept = _weighted_line(x, y, weights)
        step = abs(new_slope - slope) * np.std(x) + abs(new_intercept - intercept)
        slope, intercept = new_slope, new_intercept
        if step <= rtol * (np.std(y) + abs(np.mean(y))):
            break
    return slope, intercept


def _bisquare_line(x, y, c=BISQUARE_C, max_iter=100, rtol=1e-8):
    """Tukey bisquare M-estimate of a line by IRLS (1-D x, y), as statsmodels' ``RLM``.

    Starts at OLS; each iteration re-estimates the scale s = MAD(residuals about 0)/0.6745
    (statsmodels' default ``scale.mad``), weights w = (1 − (e/(c·s))²)² for |e| < c·s else
    0, and solves the weighted line in closed form. Stops when the weighted deviance
    changes by less than ``rtol`` (relative), as ``RLM.fit(conv='dev')``.
    """
    slope, intercept = _weighted_line(x, y, np.ones_like(y))
    deviance = np.inf
    residuals = y - (slope * x + intercept)
    for _ in range(max_iter):
        scale = median(np.abs(residuals)) / 0.6744897501960817
        if not scale > 0:
            break
        u = residuals / (c * scale)
        inside = np.abs(u) < 1
        weights = np.where(inside, (1 - u * u) ** 2, 0.0)
        if weights.sum() <= 2:
            break
        slope, intercept = _weighted_line(x, y, weights)
        residuals = y - (slope * x + intercept)
        u = residuals / (c * scale)
        rho = np.where(np.abs(u) < 1, 1 - (1 - u * u) ** 3, 1.0)
        new_deviance = rho.sum()
        if abs(deviance - new_deviance) <= rtol * max(abs(new_deviance), 1e-300):
            break
        deviance = new_deviance
    return slope, intercept


REGRESSION_METHODS = ('ols', 'huber', 'bisquare')


def _fit_line(x, y, method, huber_c, bisquare_c):
    if method == 'ols':
        return _weighted_line(x, y, np.ones_like(y))
    if method == 'huber':
        return _huber_line(x, y, c=huber_c)
    return _bisquare_line(x, y, c=bisquare_c)


def fit_reference(
    signal, reference, method='ols', huber_c=HUBER_C, bisquare_c=BISQUARE_C, valid=None
):
    """Fit ``signal ≈ m·reference + b``.

    Parameters
    ----------
    signal, reference : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Paired samples (same shape).
    method : {'ols', 'huber', 'bisquare'}
        ``'ols'``: ordinary least squares, closed form. ``'huber'``: Huber M-estimator by
        iteratively reweighted least squares, starting from OLS; weights
        w = min(1, c·s/|r|) with the scale s = 1.4826·MAD of the current residuals, so the
        fit is invariant to the units of the data (iblphotometry's Huber δ is in data units).
        ``'bisquare'``: Tukey bisquare (biweight) IRLS, the estimator of statsmodels'
        ``RLM(M=TukeyBiweight(c))`` (:func:`_bisquare_line`; it gives zero weight to
        residuals beyond c robust SDs, so transients and one-band artefacts do not bias it).
    huber_c : float
        Huber tuning constant in robust-SD units (1.345 gives 95 % efficiency on Gaussian noise).
    bisquare_c : float
        Bisquare tuning constant in robust-SD units (4.685 gives 95 % efficiency).
    valid : ndarray of bool, same shape as ``signal`` or (n_samples,), optional
        Only these samples enter the fit.

    Returns
    -------
    slope, intercept : float or ndarray of shape (n_signals,)
    """
    x, y = np.asarray(reference, dtype=float), np.asarray(signal, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f'signal {y.shape} and reference {x.shape} must have the same shape')
    if method not in REGRESSION_METHODS:
        raise ValueError(
            f'unknown regression method {method!r}; expected one of {REGRESSION_METHODS}'
        )
    if y.ndim == 1:
        if valid is not None:
            x, y = x[valid], y[valid]
        return _fit_line(x, y, method, huber_c, bisquare_c)
    if valid is None and method == 'ols':
        return _weighted_line(x, y, np.ones_like(y))
    masks = (
        [None] * y.shape[1]
        if valid is None
        else ([valid] * y.shape[1] if np.ndim(valid) == 1 else list(np.asarray(valid).T))
    )
    fits = np.array(
        [
            _fit_line(
                x[:, i] if m is None else x[m, i],
                y[:, i] if m is None else y[m, i],
                method,
                huber_c,
                bisquare_c,
            )
            for i, m in enumerate(masks)
        ]
    )
    return fits[:, 0], fits[:, 1]


def isosbestic_correct(
    signal, reference, method='ols', mode='subtract', huber_c=HUBER_C, bisquare_c=BISQUARE_C
):
    """Remove the part of ``signal`` explained by the isosbestic ``reference``.

    The fitted reference ``m·reference + b`` is evaluated sample by sample in the original
    time order (iblphotometry's development branch sorted it by amplitude) and removed
    with :func:`correct`. Shapes as in :func:`fit_reference`; returns the shape of ``signal``.
    """
    slope, intercept = fit_reference(
        signal, reference, method=method, huber_c=huber_c, bisquare_c=bisquare_c
    )
    return correct(signal, slope * np.asarray(reference, dtype=float) + intercept, mode)


def r_squared(values, fitted):
    """Coefficient of determination 1 − SS_res/SS_tot along axis 0 (NaN for a constant signal).

    NaN samples are ignored.
    """
    values = np.asarray(values, dtype=float)
    ss_res = np.nansum((values - fitted) ** 2, axis=0)
    ss_tot = np.nansum((values - np.nanmean(values, axis=0)) ** 2, axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)[()]


# ---------------------------------------------------------------------------
# z-score and resampling
# ---------------------------------------------------------------------------
def zscore(values, mode='classic'):
    """Standardise a signal along axis 0.

    ``'classic'``: (x − mean)/SD (population SD, ddof = 0). ``'median'``: the robust
    score (x − median)/(1.4826·MAD). iblphotometry's ``'median'`` mode divides by the SD
    instead, which is not robust; this function does not reproduce that. NaN samples
    (masked artefacts) are ignored by the statistics and stay NaN.
    """
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).any():
        return x.copy()
    if mode == 'classic':
        centre, spread = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    elif mode == 'median':
        centre = nanmedian(x, axis=0)
        spread = MAD_TO_SD * nanmedian(np.abs(x - centre), axis=0)
    else:
        raise ValueError(f"unknown z-score mode {mode!r}; expected 'classic' or 'median'")
    with np.errstate(invalid='ignore', divide='ignore'):
        return (x - centre) / spread


def _linear_interp(times, values, new_times):
    """Vectorised linear interpolation of 1-D or 2-D ``values`` (axis 0) at ``new_times``."""
    i = np.clip(np.searchsorted(times, new_times, side='right') - 1, 0, len(times) - 2)
    w = (new_times - times[i]) / (times[i + 1] - times[i])
    if values.ndim == 2:
        w = w[:, None]
    return values[i] * (1 - w) + values[i + 1] * w


def anti_alias(values, fs, target_fs, order=8, fraction=0.8):
    """Low-pass a signal before resampling it to ``target_fs`` (no-op when fs ≤ 1.1·target_fs).

    Zero-phase Butterworth (``sosfiltfilt``, so the magnitude is that of an order
    2·``order`` filter) at ``fraction`` of the target Nyquist frequency (12 Hz for 30 Hz):
    without it, noise and signal between 15 Hz and fs/2 fold into 0-15 Hz on the 30 Hz grid.
    """
    if fs <= 1.1 * target_fs:
        return np.asarray(values, dtype=float)
    return lowpass(values, fs, fraction * target_fs / 2, order=order)


def resample(
    times,
    values,
    fs=config.TARGET_FS,
    method='pchip',
    anti_alias_filter=False,
    valid=None,
    max_gap=config.PHOTOMETRY_GAP_FACTOR,
):
    """Interpolate a signal onto a uniform grid.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), strictly increasing.
    values : ndarray, shape (n_samples,) or (n_samples, n_signals)
    fs : float
        Grid rate (Hz).
    method : {'pchip', 'linear'}
        Shape-preserving piecewise-cubic (no overshoot) or linear interpolation.
    anti_alias_filter : bool
        Low-pass first when the input is faster than the grid (:func:`anti_alias`).
    valid : ndarray of bool, shape (n_samples,), optional
        Grid points not between two valid input samples are NaN (masked samples are
        interpolated over first, never used).
    max_gap : float, optional
        Grid points between two input samples further apart than ``max_gap`` × the median
        interval are NaN (default ``config.PHOTOMETRY_GAP_FACTOR``): a time gap is never
        interpolated over.

    Returns
    -------
    new_times : ndarray, shape (n_new,)
        ``arange(t0, t_end, 1/fs)``: starts at the first sample, end exclusive, so the
        grid never extrapolates.
    new_values : ndarray, shape (n_new,) or (n_new, n_signals)
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    if valid is not None and values.ndim == 1:
        values = fill_invalid(values, valid)
    if anti_alias_filter:
        values = anti_alias(values, sampling_rate(times), fs)
    new_times = np.arange(times[0], times[-1], 1.0 / fs)
    new_times = new_times[new_times <= times[-1]]
    if method == 'pchip':
        new_values = PchipInterpolator(times, values, axis=0)(new_times)
    elif method == 'linear':
        new_values = _linear_interp(times, values, new_times)
    else:
        raise ValueError(f"unknown resampling method {method!r}; expected 'pchip' or 'linear'")
    gaps = time_gaps(times, max_gap)[0] if max_gap else np.array([], int)
    if (valid is not None and not np.all(valid)) or gaps.size:
        i = np.clip(np.searchsorted(times, new_times, side='right') - 1, 0, len(times) - 1)
        j = np.minimum(i + 1, len(times) - 1)
        ok = np.ones(new_times.size, bool) if valid is None else valid[i] & valid[j]
        if gaps.size:  # grid points inside a gap: between the gap's two frames
            gap = np.zeros(len(times), bool)
            gap[gaps] = True
            ok &= ~(gap[i] & (new_times > times[i]))
        new_values = np.where(ok if new_values.ndim == 1 else ok[:, None], new_values, np.nan)
    return new_times, new_values


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------
def resolve_params(params=None):
    """``config.PREPROCESSING_PARAMS`` updated step by step with ``params`` (a partial dict)."""
    merged = {step: dict(values) for step, values in config.PREPROCESSING_PARAMS.items()}
    for step, values in (params or {}).items():
        merged.setdefault(step, {}).update(values)
    return merged


@dataclass
class PreprocessResult:
    """Output of :func:`preprocess_isosbestic` / :func:`preprocess_single_band`.

    Unpacks as ``times, values = result``.

    Attributes
    ----------
    times : ndarray, shape (n_out,)
        Uniform output grid (s).
    values : ndarray, shape (n_out,) or (n_out, n_signals)
        Preprocessed (z-scored) signal; NaN where the input was masked.
    dff : ndarray, shape of ``values``
        The same before the z-score: ΔF/F (fraction of the light above the floor when the
        floor is subtracted).
    bleaching_tau : float or ndarray (n_signals,)
        τ (s) of the exponential fitted to the raw signal (NaN if not computed / failed).
    iso_correlation : float or ndarray (n_signals,)
        R² of the OLS fit of the bleach-corrected signal on the bleach-corrected reference
        (NaN for single-band preprocessing).
    slope, intercept : float or ndarray (n_signals,)
        The reference regression actually used (NaN for single-band preprocessing).
    r2 : float or ndarray (n_signals,)
        R² of that regression on the valid samples (NaN for single-band preprocessing).
    params : dict
        The complete parameter set used (``config.PREPROCESSING_PARAMS`` + overrides), with
        the dark level subtracted under ``params['floor']['value']``.
    """

    times: np.ndarray
    values: np.ndarray
    dff: np.ndarray | None = None
    bleaching_tau: float | np.ndarray = np.nan
    iso_correlation: float | np.ndarray = np.nan
    slope: float | np.ndarray = np.nan
    intercept: float | np.ndarray = np.nan
    r2: float | np.ndarray = np.nan
    params: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.times, self.values))


def pair_by_position(times, signal, reference):
    """Truncate a signal/reference pair to their common length.

    GCaMP and isosbestic frames are interleaved (~16.7 ms apart at 60 Hz frames); the
    bands are paired sample by sample as iblphotometry does, and both are cut to the
    shorter length (cut at the end). ``times`` are the signal's sample times.
    """
    n = min(len(times), len(signal), len(reference))
    return np.asarray(times[:n], dtype=float), np.asarray(signal[:n]), np.asarray(reference[:n])


def _floor_value(p, floor):
    """The dark level to subtract (0 unless ``params['floor']['subtract']``)."""
    if not p.get('floor', {}).get('subtract', False):
        return 0.0
    return float(config.DARK_LEVEL if floor is None else floor)


def _output(times, dff, valid, p, fs_in):
    """Anti-alias, resample (NaN on masked samples) and z-score one corrected signal."""
    resample_p = dict(p['resample'])
    aa = resample_p.pop('anti_alias', False)
    new_times, resampled = resample(times, dff, valid=valid, anti_alias_filter=aa, **resample_p)
    return new_times, resampled, zscore(resampled, **p['zscore'])


def _prefit_lowpass(values, fs, valid, p):
    """The band as the regression sees it: low-passed at ``lowpass_hz`` and, with
    ``highpass_hz``, without its slow part (a zero-phase 3rd-order low-pass subtracted)."""
    cutoff = p['regression'].get('lowpass_hz')
    highpass = p['regression'].get('highpass_hz')
    out = values
    if cutoff and cutoff < fs / 2:
        out = lowpass(
            fill_invalid(out, valid), fs, cutoff, order=p['regression'].get('lowpass_order', 4)
        )
    if highpass:
        filled = fill_invalid(out, valid)
        out = filled - lowpass_baseline(filled, fs, cutoff_hz=highpass)
    return out


def _regression_kwargs(p):
    regression = dict(p['regression'])
    mode = regression.pop('mode', 'subtract')
    for key in ('lowpass_hz', 'lowpass_order', 'lowpass_output', 'highpass_hz', 'max_fit_samples'):
        regression.pop(key, None)
    return regression, mode


def _subsample(valid, n, max_samples):
    """Valid mask thinned to at most ~``max_samples`` samples by a regular stride.

    The regression has two parameters: 20,000 samples estimate them with a standard error
    ~2x that of the 80,000 of a 45 min session, far below the spread between fibers, at a
    quarter of the cost of the iterative (Huber, bisquare) fits.
    """
    if not max_samples or n <= max_samples:
        return valid
    keep = np.zeros(n, bool)
    keep[:: int(np.ceil(n / max_samples))] = True
    return keep if valid is None else keep & valid


MIN_VALID_S = 10.0  # s of valid samples below which a fiber's output is all NaN


def _too_few(times, valid):
    return valid is not None and valid.sum() < MIN_VALID_S * sampling_rate(times)


def _empty_result(times, p, floor):
    new_times, _ = resample(
        times,
        np.zeros(len(times)),
        **{k: v for k, v in p['resample'].items() if k in ('fs', 'method')},
    )
    nan = np.full(new_times.size, np.nan)
    return PreprocessResult(new_times, nan, dff=nan.copy(), params=_with_floor(p, floor))


def _isosbestic_1d(times, signal, reference, p, compute_qc, valid=None, floor=None):
    """:func:`preprocess_isosbestic` for one fiber (contiguous 1-D arrays)."""
    floor = _floor_value(p, floor)
    if _too_few(times, valid):
        return _empty_result(times, p, floor)
    signal, reference = signal - floor, reference - floor
    fs = sampling_rate(times)
    signal_bc = bleach_correct(times, signal, valid=valid, **p['bleach'])
    reference_bc = bleach_correct(times, reference, valid=valid, **p['bleach'])
    signal_f = _prefit_lowpass(signal_bc, fs, valid, p)
    reference_f = _prefit_lowpass(reference_bc, fs, valid, p)
    regression, mode = _regression_kwargs(p)
    fit_valid = _subsample(valid, len(times), p['regression'].get('max_fit_samples'))
    slope, intercept = fit_reference(signal_f, reference_f, valid=fit_valid, **regression)
    fitted = slope * reference_f + intercept
    r2 = r_squared(
        signal_f if valid is None else signal_f[valid], fitted if valid is None else fitted[valid]
    )
    if not p['regression'].get('highpass_hz'):
        if p['regression'].get('lowpass_output', True):
            corrected = correct(signal_f, fitted, mode)
        else:  # the low-pass only served the fit
            corrected = correct(signal_bc, slope * reference_bc + intercept, mode)
    else:  # the filters only served the fit; the intercept is refitted on the bands
        low = p['regression'].get('lowpass_hz') if p['regression'].get('lowpass_output') else None
        s_out = _prefit_lowpass(signal_bc, fs, valid, {'regression': {'lowpass_hz': low}})
        r_out = _prefit_lowpass(reference_bc, fs, valid, {'regression': {'lowpass_hz': low}})
        residual = s_out - slope * r_out
        intercept = float(np.mean(residual if valid is None else residual[valid]))
        corrected = correct(s_out, slope * r_out + intercept, mode)
    new_times, dff, z = _output(times, corrected, valid, p, fs)
    result = PreprocessResult(
        new_times,
        z,
        dff=dff,
        slope=slope,
        intercept=intercept,
        r2=float(r2),
        params=_with_floor(p, floor),
    )
    if compute_qc:
        keep = slice(None) if valid is None else valid
        result.bleaching_tau = fit_exponential_decay(times[keep], signal[keep])[1]
        if regression.get('method', 'ols') != 'ols' or signal_f is not signal_bc:
            slope, intercept = fit_reference(signal_bc, reference_bc, method='ols', valid=valid)
        result.iso_correlation = float(
            r_squared(signal_bc[keep], slope * reference_bc[keep] + intercept)
        )
    return result


def _with_floor(p, floor):
    return {**p, 'floor': {**p.get('floor', {}), 'value': float(floor)}}


def _single_band_1d(times, signal, p, compute_qc, valid=None, floor=None):
    """:func:`preprocess_single_band` for one fiber (contiguous 1-D arrays)."""
    floor = _floor_value(p, floor)
    if _too_few(times, valid):
        return _empty_result(times, p, floor)
    signal = signal - floor
    corrected = bleach_correct(times, signal, valid=valid, **p['bleach'])
    new_times, dff, z = _output(times, corrected, valid, p, sampling_rate(times))
    result = PreprocessResult(new_times, z, dff=dff, params=_with_floor(p, floor))
    if compute_qc:
        keep = slice(None) if valid is None else valid
        result.bleaching_tau = fit_exponential_decay(times[keep], signal[keep])[1]
    return result


def _stack_fibers(results):
    """Combine per-fiber results: values (n_out, n_signals), QC values (n_signals,)."""
    first = results[0]
    return PreprocessResult(
        first.times,
        np.column_stack([r.values for r in results]),
        dff=np.column_stack([r.dff for r in results]),
        **{
            name: np.array([getattr(r, name) for r in results], dtype=float)
            for name in ('bleaching_tau', 'iso_correlation', 'slope', 'intercept', 'r2')
        },
        params={
            **first.params,
            'floor': {
                **first.params.get('floor', {}),
                'value': [r.params['floor']['value'] for r in results],
            },
        },
    )


def _columns(values):
    """Contiguous float columns of a 1-D or 2-D array (fast paths for filters and reductions)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        return [np.ascontiguousarray(values)]
    return [np.ascontiguousarray(values[:, i]) for i in range(values.shape[1])]


def _per_fiber(option, n_fibers, n_samples=None):
    """Broadcast a per-fiber option (None, scalar/1-D shared, or one column per fiber)."""
    if option is None or np.ndim(option) == 0:
        return [option] * n_fibers
    option = np.asarray(option)
    if n_samples is not None and option.ndim == 1 and option.shape[0] == n_samples:
        return [option] * n_fibers
    if n_samples is None:
        return list(option)
    return [np.ascontiguousarray(option[:n_samples, i]) for i in range(option.shape[1])]


def _map_fibers(fit_one, bands, valid, floor, threads):
    """``fit_one(*band columns, valid, floor)`` for each fiber, on up to ``threads`` threads.

    ``bands``: arrays of shape (n_samples,) or (n_samples, n_signals), one per band; ``valid``
    and ``floor`` are split per fiber (:func:`_per_fiber`). One result for 1-D bands, the
    results stacked (:func:`_stack_fibers`) for 2-D bands.
    """
    one_fiber = np.ndim(bands[0]) == 1
    n_fibers = 1 if one_fiber else np.shape(bands[0])[1]
    fibers = zip(
        *(_columns(band) for band in bands),
        _per_fiber(valid, n_fibers, len(bands[0])),
        _per_fiber(floor, n_fibers),
        strict=True,
    )
    results = thread_map(lambda fiber: fit_one(*fiber), fibers, threads)
    return results[0] if one_fiber else _stack_fibers(results)


def preprocess_isosbestic(
    times, signal, reference, params=None, compute_qc=True, valid=None, floor=None, threads=None
):
    """Bleach-correct both bands → regress out the reference → resample → z-score.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times of ``signal`` (s).
    signal, reference : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Raw GCaMP and isosbestic bands, paired by position (:func:`pair_by_position`).
        Fibers (columns) are processed independently.
    params : dict, optional
        Overrides of ``config.PREPROCESSING_PARAMS`` (steps 'floor', 'bleach',
        'regression', 'zscore', 'resample').
    compute_qc : bool
        Also compute the bleaching τ of the raw signal and the iso correlation.
    valid : ndarray of bool, shape (n_samples,) or (n_samples, n_signals), optional
        Samples usable by the fits (:func:`iblnm.signal.artefacts.detect_artefacts`); the
        others are left out of every fit and are NaN in the output.
    floor : float or sequence of float (one per fiber), optional
        Camera dark level subtracted from both bands when ``params['floor']['subtract']``
        (default ``config.DARK_LEVEL``).
    threads : int, optional
        Fibers processed on up to this many threads (:func:`iblnm.util.thread_map`; default
        :func:`iblnm.util.session_threads`). The values do not depend on it.

    Returns
    -------
    PreprocessResult
        QC values and regression parameters are floats for 1-D input and arrays of shape
        (n_signals,) for 2-D input.
    """
    p = resolve_params(params)
    times, signal, reference = pair_by_position(times, signal, reference)
    return _map_fibers(
        lambda s, r, v, f: _isosbestic_1d(times, s, r, p, compute_qc, valid=v, floor=f),
        (signal, reference),
        valid,
        floor,
        threads,
    )


def preprocess_single_band(
    times, signal, params=None, compute_qc=True, valid=None, floor=None, threads=None
):
    """Bleach-correct → resample → z-score, for recordings without an isosbestic band.

    Same parameters and output as :func:`preprocess_isosbestic` (the 'regression' step is
    skipped; iso_correlation, slope, intercept and r2 are NaN).
    """
    p = resolve_params(params)
    times = np.asarray(times, dtype=float)
    return _map_fibers(
        lambda s, v, f: _single_band_1d(times, s, p, compute_qc, valid=v, floor=f),
        (signal,),
        valid,
        floor,
        threads,
    )
