"""Photometry preprocessing kernels: bleach correction, isosbestic regression, z-score, resampling.

Every function takes plain arrays (times in s, values in any intensity unit) and returns
arrays; none knows about sessions, regions or files. Values may be 1-D ``(n_samples,)`` or
2-D ``(n_samples, n_signals)`` (one column per fiber) unless stated otherwise; time runs
along axis 0. Inputs are expected to be finite.

The default steps (``config.PREPROCESSING_PARAMS``) are those of iblphotometry's
``isosbestic_correction_pipeline`` plus a z-score and resampling, as in the original
iblnm: bleach-correct each band (3rd-order Butterworth low-pass at 0.01 Hz, ΔF/F) →
regress the isosbestic band onto the GCaMP band and subtract the fit → resample to 30 Hz
→ z-score. The z-score is taken on the output grid: interpolation is linear in the
values, so this differs from z-scoring before resampling only by a scale factor, and it
makes the stored signal have exactly mean 0 and SD 1 (interpolating white-noise residuals
at a slightly different rate shrinks their SD, to ~0.88 in the spec fixture).
See ``docs/methods.md`` for the equations and the differences from iblphotometry.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy import signal as sps
from scipy.interpolate import PchipInterpolator

from iblnm import config

MAD_TO_SD = 1.4826  # 1 / Φ⁻¹(3/4): MAD × 1.4826 estimates the SD of Gaussian data
HUBER_C = 1.345  # Huber tuning constant, in units of the robust residual SD (95 % efficiency)
CORRECTION_MODES = ('subtract', 'divide', 'subtract-divide')


def sampling_rate(times):
    """Sampling rate (Hz) from the median sample interval of ``times`` (s, shape ``(n,)``)."""
    return 1.0 / np.median(np.diff(np.asarray(times, dtype=float)))


# ---------------------------------------------------------------------------
# Bleach correction
# ---------------------------------------------------------------------------
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
    sos = sps.butter(order, cutoff_hz, btype='lowpass', fs=fs, output='sos')
    return sps.sosfiltfilt(sos, np.asarray(values, dtype=float), axis=0)


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
    scale = np.median(y)
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


def bleach_correct(
    times, values, method='lowpass', mode='subtract-divide', order=3, cutoff_hz=0.01, fit_fs=1.0
):
    """Remove photobleaching from a signal.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), uniformly sampled for ``'lowpass'``.
    values : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Raw signal.
    method : {'lowpass', 'exponential'}
        Baseline: :func:`lowpass_baseline` (``order``, ``cutoff_hz``) or a single
        exponential (:func:`fit_exponential_decay`, ``fit_fs``).
    mode : {'subtract', 'divide', 'subtract-divide'}
        How the baseline is removed (:func:`correct`); the default gives ΔF/F.

    Returns
    -------
    ndarray, same shape as ``values``
    """
    if method == 'lowpass':
        baseline = lowpass_baseline(values, sampling_rate(times), order=order, cutoff_hz=cutoff_hz)
    elif method == 'exponential':
        baseline = exponential_baseline(times, values, fit_fs=fit_fs)
    else:
        raise ValueError(f"unknown bleach method {method!r}; expected 'lowpass' or 'exponential'")
    return correct(values, baseline, mode)


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
        scale = MAD_TO_SD * np.median(np.abs(residuals - np.median(residuals)))
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


def fit_reference(signal, reference, method='ols', huber_c=HUBER_C):
    """Fit ``signal ≈ m·reference + b``.

    Parameters
    ----------
    signal, reference : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Paired samples (same shape).
    method : {'ols', 'huber'}
        ``'ols'``: ordinary least squares, closed form. ``'huber'``: Huber M-estimator by
        iteratively reweighted least squares, starting from OLS; weights
        w = min(1, c·s/|r|) with the scale s = 1.4826·MAD of the current residuals, so the
        fit is invariant to the units of the data (iblphotometry's Huber δ is in data units).
    huber_c : float
        Huber tuning constant in robust-SD units (1.345 gives 95 % efficiency on Gaussian noise).

    Returns
    -------
    slope, intercept : float or ndarray of shape (n_signals,)
    """
    x, y = np.asarray(reference, dtype=float), np.asarray(signal, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f'signal {y.shape} and reference {x.shape} must have the same shape')
    if method == 'ols':
        return _weighted_line(x, y, np.ones_like(y))
    if method != 'huber':
        raise ValueError(f"unknown regression method {method!r}; expected 'ols' or 'huber'")
    if y.ndim == 1:
        return _huber_line(x, y, c=huber_c)
    fits = np.array([_huber_line(x[:, i], y[:, i], c=huber_c) for i in range(y.shape[1])])
    return fits[:, 0], fits[:, 1]


def isosbestic_correct(signal, reference, method='ols', mode='subtract', huber_c=HUBER_C):
    """Remove the part of ``signal`` explained by the isosbestic ``reference``.

    The fitted reference ``m·reference + b`` is evaluated sample by sample in the original
    time order (iblphotometry's development branch sorted it by amplitude) and removed
    with :func:`correct`. Shapes as in :func:`fit_reference`; returns the shape of ``signal``.
    """
    slope, intercept = fit_reference(signal, reference, method=method, huber_c=huber_c)
    return correct(signal, slope * np.asarray(reference, dtype=float) + intercept, mode)


def r_squared(values, fitted):
    """Coefficient of determination 1 − SS_res/SS_tot along axis 0 (NaN for a constant signal)."""
    values = np.asarray(values, dtype=float)
    ss_res = ((values - fitted) ** 2).sum(axis=0)
    ss_tot = ((values - values.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)[()]


# ---------------------------------------------------------------------------
# z-score and resampling
# ---------------------------------------------------------------------------
def zscore(values, mode='classic'):
    """Standardise a signal along axis 0.

    ``'classic'``: (x − mean)/SD (population SD, ddof = 0). ``'median'``: the robust
    score (x − median)/(1.4826·MAD). iblphotometry's ``'median'`` mode divides by the SD
    instead, which is not robust; this function does not reproduce that.
    """
    x = np.asarray(values, dtype=float)
    if mode == 'classic':
        centre, spread = x.mean(axis=0), x.std(axis=0)
    elif mode == 'median':
        centre = np.median(x, axis=0)
        spread = MAD_TO_SD * np.median(np.abs(x - centre), axis=0)
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


def resample(times, values, fs=config.TARGET_FS, method='pchip'):
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

    Returns
    -------
    new_times : ndarray, shape (n_new,)
        ``arange(t0, t_end, 1/fs)``: starts at the first sample, end exclusive, so the
        grid never extrapolates.
    new_values : ndarray, shape (n_new,) or (n_new, n_signals)
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    new_times = np.arange(times[0], times[-1], 1.0 / fs)
    new_times = new_times[new_times <= times[-1]]
    if method == 'pchip':
        return new_times, PchipInterpolator(times, values, axis=0)(new_times)
    if method == 'linear':
        return new_times, _linear_interp(times, values, new_times)
    raise ValueError(f"unknown resampling method {method!r}; expected 'pchip' or 'linear'")


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
        Preprocessed (z-scored) signal.
    bleaching_tau : float or ndarray (n_signals,)
        τ (s) of the exponential fitted to the raw signal (NaN if not computed / failed).
    iso_correlation : float or ndarray (n_signals,)
        R² of the OLS fit of the bleach-corrected signal on the bleach-corrected reference
        (NaN for single-band preprocessing).
    slope, intercept : float or ndarray (n_signals,)
        The reference regression actually used (NaN for single-band preprocessing).
    params : dict
        The complete parameter set used (``config.PREPROCESSING_PARAMS`` + overrides).
    """

    times: np.ndarray
    values: np.ndarray
    bleaching_tau: float | np.ndarray = np.nan
    iso_correlation: float | np.ndarray = np.nan
    slope: float | np.ndarray = np.nan
    intercept: float | np.ndarray = np.nan
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


def _isosbestic_1d(times, signal, reference, p, compute_qc):
    """:func:`preprocess_isosbestic` for one fiber (contiguous 1-D arrays)."""
    signal_bc = bleach_correct(times, signal, **p['bleach'])
    reference_bc = bleach_correct(times, reference, **p['bleach'])
    regression = dict(p['regression'])
    mode = regression.pop('mode', 'subtract')
    slope, intercept = fit_reference(signal_bc, reference_bc, **regression)
    corrected = correct(signal_bc, slope * reference_bc + intercept, mode)
    new_times, resampled = resample(times, corrected, **p['resample'])
    result = PreprocessResult(
        new_times, zscore(resampled, **p['zscore']), slope=slope, intercept=intercept, params=p
    )
    if compute_qc:
        result.bleaching_tau = fit_exponential_decay(times, signal)[1]
        if regression.get('method', 'ols') != 'ols':
            slope, intercept = fit_reference(signal_bc, reference_bc, method='ols')
        result.iso_correlation = float(r_squared(signal_bc, slope * reference_bc + intercept))
    return result


def _single_band_1d(times, signal, p, compute_qc):
    """:func:`preprocess_single_band` for one fiber (contiguous 1-D arrays)."""
    new_times, resampled = resample(
        times, bleach_correct(times, signal, **p['bleach']), **p['resample']
    )
    result = PreprocessResult(new_times, zscore(resampled, **p['zscore']), params=p)
    if compute_qc:
        result.bleaching_tau = fit_exponential_decay(times, signal)[1]
    return result


def _stack_fibers(results):
    """Combine per-fiber results: values (n_out, n_signals), QC values (n_signals,)."""
    first = results[0]
    return PreprocessResult(
        first.times,
        np.column_stack([r.values for r in results]),
        **{
            name: np.array([getattr(r, name) for r in results], dtype=float)
            for name in ('bleaching_tau', 'iso_correlation', 'slope', 'intercept')
        },
        params=first.params,
    )


def _columns(values):
    """Contiguous float columns of a 1-D or 2-D array (fast paths for filters and reductions)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        return [np.ascontiguousarray(values)]
    return [np.ascontiguousarray(values[:, i]) for i in range(values.shape[1])]


def preprocess_isosbestic(times, signal, reference, params=None, compute_qc=True):
    """Bleach-correct both bands → regress out the reference → resample → z-score.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times of ``signal`` (s).
    signal, reference : ndarray, shape (n_samples,) or (n_samples, n_signals)
        Raw GCaMP and isosbestic bands, paired by position (:func:`pair_by_position`).
        Fibers (columns) are processed independently.
    params : dict, optional
        Overrides of ``config.PREPROCESSING_PARAMS`` (steps 'bleach', 'regression',
        'zscore', 'resample').
    compute_qc : bool
        Also compute the bleaching τ of the raw signal and the iso correlation.

    Returns
    -------
    PreprocessResult
        QC values and regression parameters are floats for 1-D input and arrays of shape
        (n_signals,) for 2-D input.
    """
    p = resolve_params(params)
    times, signal, reference = pair_by_position(times, signal, reference)
    results = [
        _isosbestic_1d(times, s, r, p, compute_qc)
        for s, r in zip(_columns(signal), _columns(reference), strict=True)
    ]
    return results[0] if signal.ndim == 1 else _stack_fibers(results)


def preprocess_single_band(times, signal, params=None, compute_qc=True):
    """Bleach-correct → resample → z-score, for recordings without an isosbestic band.

    Same parameters and output as :func:`preprocess_isosbestic` (the 'regression' step is
    skipped; iso_correlation, slope and intercept are NaN).
    """
    p = resolve_params(params)
    times = np.asarray(times, dtype=float)
    results = [_single_band_1d(times, s, p, compute_qc) for s in _columns(signal)]
    return results[0] if np.ndim(signal) == 1 else _stack_fibers(results)
