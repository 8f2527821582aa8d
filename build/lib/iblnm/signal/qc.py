"""Photometry QC kernels, vectorised over sliding windows.

The metric kernels act along the last axis of a 1-D signal ``(n_samples,)`` or of a
stack of windows ``(n_windows, n_per_window)``, so one call scores a whole signal or every
window at once. Definitions follow iblphotometry 0.3.4 (``metrics.py``); where they
differ it is said in the docstring and in ``docs/methods.md``.

Sliding QC reproduces iblphotometry's ``qc.qc_signals`` windows (start times
``arange(t0, t_end − w_len, step_len)``, half-open ``[start, start + w_len)``, optional
per-window linear detrend) without a Python loop per window.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from iblnm import config
from iblnm.signal.preprocess import (
    fit_exponential_decay,
    fit_reference,
    r_squared,
    sampling_rate,
)

LED_CODE_MASK = 0b111  # LED bits of the NPM LedState (1 = 415 nm, 2 = 470 nm, 4 = 560 nm)


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------
def window_starts(t0, t_end, w_len, step_len):
    """Window start times (s): ``arange(t0, t_end − w_len, step_len)`` as in ``qc_signals``."""
    return np.arange(t0, t_end - w_len, step_len)


def window_index(times, w_len=120, step_len=60):
    """Where the sliding windows of a uniformly sampled signal start, and how long they are.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), increasing and (nearly) uniform.
    w_len, step_len : float
        Window length and step (s).

    Returns
    -------
    centres : ndarray, shape (n_windows,)
        Window centre times, start + w_len/2 (s).
    first : ndarray of int, shape (n_windows,)
        Index of the first sample at or after each window start.
    n_per_window : int
        Samples per window, round(w_len·fs) with fs = 1/median(dt). Every window holds the
        same number of samples so that windows stack into one array; with jittered
        timestamps iblphotometry's boolean selection ``start ≤ t < start + w_len`` can
        hold one sample more or less. Windows that would run past the end are moved
        back to end on the last sample.
    """
    times = np.asarray(times, dtype=float)
    n_per_window = int(round(w_len * sampling_rate(times)))
    starts = window_starts(times[0], times[-1], w_len, step_len)
    if n_per_window > len(times):
        starts = starts[:0]
    first = np.minimum(np.searchsorted(times, starts, side='left'), len(times) - n_per_window)
    return starts + w_len / 2, first, n_per_window


def _gather(values, first, n_per_window):
    """Stack windows ``values[first[k] : first[k] + n]`` into ``(n_windows, n)`` (one copy)."""
    values = np.asarray(values)
    if len(first) == 0:
        return np.empty((0, n_per_window), dtype=values.dtype)
    return sliding_window_view(values, n_per_window)[first]


def sliding_windows(times, values, w_len=120, step_len=60):
    """Cut a uniformly sampled signal into overlapping windows.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s).
    values : ndarray, shape (n_samples,)
        Signal.
    w_len, step_len : float
        Window length and step (s); see :func:`window_index` for the sample selection.

    Returns
    -------
    centres : ndarray, shape (n_windows,)
        Window centre times (s).
    windows : ndarray, shape (n_windows, n_per_window)
    """
    centres, first, n_per_window = window_index(times, w_len, step_len)
    return centres, _gather(values, first, n_per_window)


def detrend_windows(windows, x=None):
    """Subtract each window's least-squares line.

    Parameters
    ----------
    windows : ndarray, shape (..., n)
        Signal windows along the last axis.
    x : ndarray, shape (n,) or (..., n), optional
        Abscissa of the line (e.g. sample times, s); default: sample index. For uniform
        sampling both give the same residuals.

    Returns
    -------
    ndarray, shape of ``windows``
        y − (slope·x + intercept), the per-window OLS residuals (closed form).
    """
    y = np.asarray(windows, dtype=float)
    x = np.arange(y.shape[-1], dtype=float) if x is None else np.asarray(x, dtype=float)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        slope = (xc * yc).sum(axis=-1, keepdims=True) / (xc * xc).sum(axis=-1, keepdims=True)
    return yc - slope * xc


# ---------------------------------------------------------------------------
# Metric kernels (last axis)
# ---------------------------------------------------------------------------
def n_unique_samples(a):
    """Fraction of distinct values (a fraction despite the name, as in iblphotometry).

    Computed from a sort and a diff along the last axis (NaNs count as one value, like
    ``np.unique``). Low values flag quantised, clipped or flat raw traces; only meaningful
    on raw data (processed signals give ~1).
    """
    s = np.sort(np.asarray(a, dtype=float), axis=-1)
    both_nan = np.isnan(s[..., 1:]) & np.isnan(s[..., :-1])
    n_new = np.count_nonzero((s[..., 1:] != s[..., :-1]) & ~both_nan, axis=-1)
    return (1 + n_new) / s.shape[-1]


def median_absolute_deviance(a):
    """Median absolute deviation from the median, median(|a − median(a)|) (data units)."""
    a = np.asarray(a, dtype=float)
    return np.median(np.abs(a - np.median(a, axis=-1, keepdims=True)), axis=-1)


def percentile_distance(a, pc=(50, 95)):
    """Distance between two percentiles of the z-scored signal, P_pc[1] − P_pc[0] (SD units).

    The z-score uses each window's own mean and SD (what a per-window metric means, and
    what ``qc_signals`` computes window by window); iblphotometry's 2-D code path would
    z-score with the mean/SD of all windows pooled. Gaussian noise gives 1.645 for (50, 95).
    """
    a = np.asarray(a, dtype=float)
    low, high = np.percentile(a, pc, axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return (high - low) / a.std(axis=-1)


def percentile_asymmetry(a, pc_comp=95):
    """|P_pc − P50| / |P50 − P_(100−pc)|: 1 for symmetric noise, > 1 for positive transients.

    iblphotometry computes it on the z-scored signal; the z-score cancels in the ratio, so
    raw percentiles are used (same value, NaN for a constant window).
    """
    low, median, high = np.percentile(
        np.asarray(a, dtype=float), (100 - pc_comp, 50, pc_comp), axis=-1
    )
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.abs(high - median) / np.abs(median - low)


def ar_score(a, order=2):
    """R² of a least-squares AR(``order``) model without intercept (a_t on a_(t−order..t−1)).

    As iblphotometry: R² = 1 − SS_res / Σ(y − ȳ)² with y = a[order:]; NaN for a constant
    signal or a rank-deficient design. The normal equations of all windows are solved in
    one batched ``np.linalg.solve``; residuals are then computed explicitly. (iblphotometry
    returns NaN when the residual is exactly 0; here a perfect fit gives 1.)
    """
    a = np.asarray(a, dtype=float)
    n_lagged = a.shape[-1] - order
    if n_lagged <= order:
        return np.full(a.shape[:-1], np.nan)[()]
    lags = sliding_window_view(a, n_lagged, axis=-1)  # (..., order + 1, n_lagged), rows = lags
    gram = lags @ np.swapaxes(lags, -1, -2)  # (..., order + 1, order + 1)
    xtx, xty = gram[..., :order, :order], gram[..., :order, order]
    sv = np.sqrt(np.abs(np.linalg.svd(xtx, compute_uv=False)))  # singular values of X
    full_rank = sv[..., -1] > sv[..., 0] * np.finfo(float).eps * max(n_lagged, order)
    ok = full_rank & (np.ptp(a, axis=-1) > 0)
    eye = np.broadcast_to(np.eye(order), xtx.shape)
    coefs = np.linalg.solve(np.where(ok[..., None, None], xtx, eye), xty[..., None])[..., 0]
    y = lags[..., order, :]
    residuals = y - np.einsum('...i,...in->...n', coefs, lags[..., :order, :])
    ss_tot = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        score = 1.0 - (residuals**2).sum(axis=-1) / ss_tot
    return np.where(ok, score, np.nan)[()]


# Metrics that depend only on the set of values in a window, not on their order: in
# sliding_qc they share one sort of the windows (percentiles of sorted rows are cheap).
ORDER_FREE_METRICS = frozenset({
    'n_unique_samples', 'median_absolute_deviance', 'percentile_distance', 'percentile_asymmetry',
})  # fmt: skip

SLIDING_METRIC_KERNELS = {
    'n_unique_samples': n_unique_samples,
    'median_absolute_deviance': median_absolute_deviance,
    'percentile_distance': percentile_distance,
    'percentile_asymmetry': percentile_asymmetry,
    'ar_score': ar_score,
}


# ---------------------------------------------------------------------------
# Whole-recording metrics
# ---------------------------------------------------------------------------
def n_early_samples(times, dt_tol=config.EARLY_SAMPLE_TOLERANCE):
    """Number of sample intervals shorter than median(dt) − ``dt_tol`` (s).

    Catches the NPM early/extra-frame glitch that swaps band labels downstream. ``times``
    are the frame times (s) of one band or of the interleaved frames.
    """
    dt = np.diff(np.asarray(times, dtype=float))
    return int(np.count_nonzero(np.median(dt) - dt > dt_tol))


def n_band_inversions(led_codes, channel_codes=(1, 2)):
    """Number of consecutive frames of the alternating channels that carry the same LED.

    Parameters
    ----------
    led_codes : array of int, shape (n_frames,)
        LED code per frame in acquisition order (1 = 415 nm, 2 = 470 nm, 4 = 560 nm). Raw
        NPM ``LedState`` values may be passed: only the LED bits (``& 7``) are used.
    channel_codes : tuple of int
        The codes of the channels that should strictly alternate.

    Returns
    -------
    int
        Frames whose code is not a channel code (0 = no LED, 7 = the all-LED
        initialisation frame, …) are dropped wherever they occur, then equal neighbours
        are counted. Strict alternation gives 0. Unlike iblphotometry, unlabelled frames
        are not filled by assuming alternation, so a sequence break across them counts.
    """
    codes = np.asarray(led_codes).astype(np.int64) & LED_CODE_MASK
    sequence = codes[np.isin(codes, channel_codes)]
    return int(np.count_nonzero(sequence[1:] == sequence[:-1]))


def bleaching_tau(times, values, fit_fs=1.0):
    """Bleaching time constant τ (s) of ``A·exp(−t/τ) + b`` fitted to a raw signal.

    Rescaled Levenberg–Marquardt fit on block averages at ``fit_fs`` Hz
    (:func:`iblnm.signal.preprocess.fit_exponential_decay`); NaN if the fit fails.
    iblphotometry's ``metrics.bleaching_tau`` swaps its fit arguments and does not converge
    on raw intensities; this is the corrected version.
    """
    return float(fit_exponential_decay(times, values, fit_fs=fit_fs)[1])


def iso_correlation(signal, reference):
    """R² of the OLS fit ``signal ≈ m·reference + b``, evaluated in time order (no sorting).

    Computed on the bleach-corrected GCaMP and isosbestic bands, a high value means the
    GCaMP band is dominated by variance shared with the isosbestic band (motion,
    haemodynamics). Inputs of shape (n_samples,); NaN for a constant signal.
    """
    slope, intercept = fit_reference(signal, reference, method='ols')
    return float(r_squared(signal, slope * np.asarray(reference, dtype=float) + intercept))


# ---------------------------------------------------------------------------
# Sliding QC
# ---------------------------------------------------------------------------
def _metric_kernel(metric):
    if callable(metric):
        return metric.__name__, metric
    if metric not in SLIDING_METRIC_KERNELS:
        raise ValueError(f'unknown QC metric {metric!r}; known: {sorted(SLIDING_METRIC_KERNELS)}')
    return metric, SLIDING_METRIC_KERNELS[metric]


def sliding_qc(
    times,
    values,
    metrics=tuple(config.QC_SLIDING_METRICS),
    w_len=config.QC_SLIDING_KWARGS['w_len'],
    step_len=config.QC_SLIDING_KWARGS['step_len'],
    detrend=config.QC_SLIDING_KWARGS['detrend'],
    metrics_kwargs=None,
    undetrended=config.QC_UNDETRENDED_METRICS,
):
    """QC metrics in sliding windows of one band of one fiber.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), uniformly sampled.
    values : ndarray, shape (n_samples,)
        Raw signal.
    metrics : sequence of str or callable
        Names in :data:`SLIDING_METRIC_KERNELS` (default ``config.QC_SLIDING_METRICS``) or
        kernels acting along the last axis.
    w_len, step_len : float
        Window length and step (s), default ``config.QC_SLIDING_KWARGS`` (120 s, 60 s).
    detrend : bool
        Subtract each window's least-squares line against time before scoring.
    metrics_kwargs : dict, optional
        metric name → keyword arguments; default ``config.QC_METRICS_KWARGS``
        (percentile_asymmetry with pc_comp = 75).
    undetrended : sequence of str
        Metrics scored on the raw windows even when ``detrend`` (default
        ``config.QC_UNDETRENDED_METRICS``: n_unique_samples, since a fitted line makes every
        value unique).

    Returns
    -------
    centres : ndarray, shape (n_windows,)
        Window centre times (s).
    per_window : dict of str → ndarray, shape (n_windows,)
        Metric values per window.
    """
    metrics_kwargs = config.QC_METRICS_KWARGS if metrics_kwargs is None else metrics_kwargs
    centres, first, n_per_window = window_index(times, w_len, step_len)
    raw = _gather(np.asarray(values, dtype=float), first, n_per_window)
    detrended = detrend_windows(raw, _gather(times, first, n_per_window)) if detrend else raw
    kernels = dict(_metric_kernel(metric) for metric in metrics)
    shared_sort = [n for n, k in kernels.items() if _is_order_free(n, k) and n not in undetrended]
    detrended_sorted = np.sort(detrended, axis=-1) if len(shared_sort) > 1 else detrended
    per_window = {}
    for name, kernel in kernels.items():  # a handful of metrics, each scores all windows at once
        windows = raw if name in undetrended else detrended
        windows = detrended_sorted if name in shared_sort else windows
        if len(windows) == 0:
            per_window[name] = np.full(0, np.nan)
            continue
        per_window[name] = np.asarray(kernel(windows, **metrics_kwargs.get(name, {})), dtype=float)
    return centres, per_window


def _is_order_free(name, kernel):
    return name in ORDER_FREE_METRICS and kernel is SLIDING_METRIC_KERNELS[name]


def _reduce(values, how):
    values = np.asarray(values, dtype=float)
    if not np.any(~np.isnan(values)):
        return np.nan
    if how == 'mean':
        return float(np.nanmean(values))
    if how == 'median':
        return float(np.nanmedian(values))
    if how in ('min', 'max'):
        return float(getattr(np, f'nan{how}')(values))
    if isinstance(how, str) and how.startswith('q') and how[1:].replace('.', '', 1).isdigit():
        return float(np.nanpercentile(values, float(how[1:])))
    raise ValueError(
        f"unknown aggregation {how!r}; expected 'mean', 'median', 'min', 'max' or 'qNN'"
    )


def aggregate_windows(per_window, how='mean'):
    """Reduce per-window metric values to one value per metric.

    Parameters
    ----------
    per_window : dict of str → ndarray, shape (n_windows,)
        Output of :func:`sliding_qc`.
    how : str or dict of str → str
        ``'mean'`` (default, as the original iblnm: mean over windows for every metric),
        ``'median'``, ``'min'``, ``'max'`` or ``'qNN'`` (NN-th percentile, e.g. ``'q10'``);
        a dict gives one rule per metric (missing metrics use the mean). NaN windows are
        ignored; a metric with no finite window gives NaN.

    Returns
    -------
    dict of str → float
    """
    rules = how if isinstance(how, dict) else dict.fromkeys(per_window, how)
    return {name: _reduce(values, rules.get(name, 'mean')) for name, values in per_window.items()}
