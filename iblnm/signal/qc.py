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
from iblnm.signal.artefacts import running_median, saturated_samples
from iblnm.signal.preprocess import (
    bleach_correct,
    fit_reference,
    median_interval,
    pair_by_position,
    r_squared,
    sampling_rate,
)
from iblnm.signal.robust import mad_sd, median, nanmedian, sorted_abs_deviation_median

LED_CODE_MASK = 0b111  # LED bits of the NPM LedState (1 = 415 nm, 2 = 470 nm, 4 = 560 nm)


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------
def window_starts(t0, t_end, w_len, step_len):
    """Window start times (s): ``arange(t0, t_end − w_len, step_len)`` as in ``qc_signals``."""
    return np.arange(t0, t_end - w_len, step_len)


def window_index(times, w_len=120, step_len=60, fs=None):
    """Where the sliding windows of a uniformly sampled signal start, and how long they are.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), increasing and (nearly) uniform.
    w_len, step_len : float
        Window length and step (s).
    fs : float, optional
        Sampling rate (Hz) of ``times`` when already known (default: computed).

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
    n_per_window = int(round(w_len * (sampling_rate(times) if fs is None else fs)))
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
    # the same operations in the same order, into one scratch buffer (no fresh temporaries)
    work = np.multiply(xc, yc)
    sxy = work.sum(axis=-1, keepdims=True)
    sxx = np.multiply(xc, xc, out=work if xc.shape == work.shape else None).sum(
        axis=-1, keepdims=True
    )
    with np.errstate(invalid='ignore', divide='ignore'):
        slope = sxy / sxx
    work = np.multiply(slope, xc, out=work if np.broadcast(slope, xc).shape == work.shape else None)
    return np.subtract(yc, work, out=yc)


# ---------------------------------------------------------------------------
# Metric kernels (last axis)
# ---------------------------------------------------------------------------
def n_unique_samples(a):
    """Fraction of distinct values (a fraction despite the name, as in iblphotometry).

    Computed from a sort and a diff along the last axis (NaNs count as one value, like
    ``np.unique``). Low values flag quantised, clipped or flat raw traces; only meaningful
    on raw data (processed signals give ~1).
    """
    return _n_unique_sorted(np.sort(np.asarray(a, dtype=float), axis=-1))


def _n_unique_sorted(s):
    """:func:`n_unique_samples` of windows already sorted along the last axis."""
    both_nan = np.isnan(s[..., 1:]) & np.isnan(s[..., :-1])
    n_new = np.count_nonzero((s[..., 1:] != s[..., :-1]) & ~both_nan, axis=-1)
    return (1 + n_new) / s.shape[-1]


def median_absolute_deviance(a):
    """Median absolute deviation from the median, median(|a − median(a)|) (data units)."""
    a = np.asarray(a, dtype=float)
    return median(np.abs(a - median(a, keepdims=True)))


def percentile_distance(a, pc=(50, 95)):
    """Distance between two percentiles of the z-scored signal, P_pc[1] − P_pc[0] (SD units).

    The z-score uses each window's own mean and SD (what a per-window metric means, and
    what ``qc_signals`` computes window by window); iblphotometry's 2-D code path would
    z-score with the mean/SD of all windows pooled. Gaussian noise gives 1.645 for (50, 95).
    """
    a = np.asarray(a, dtype=float)
    low, high = np.percentile(a, pc, axis=-1)
    return _sd_units(high - low, a.std(axis=-1))


def _sd_units(distance, sd):
    with np.errstate(invalid='ignore', divide='ignore'):
        return distance / sd


def percentile_asymmetry(a, pc_comp=95):
    """|P_pc − P50| / |P50 − P_(100−pc)|: 1 for symmetric noise, > 1 for positive transients.

    iblphotometry computes it on the z-scored signal; the z-score cancels in the ratio, so
    raw percentiles are used (same value, NaN for a constant window).
    """
    low, median, high = np.percentile(
        np.asarray(a, dtype=float), (100 - pc_comp, 50, pc_comp), axis=-1
    )
    return _asymmetry(low, median, high)


def _asymmetry(low, median, high):
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
    gram = np.empty((*a.shape[:-1], order + 1, order + 1))  # (..., order + 1, order + 1)
    for i in range(order + 1):  # one dot product per pair of lags (a strided matmul copies)
        for j in range(i, order + 1):
            gram[..., i, j] = gram[..., j, i] = np.einsum(
                '...n,...n->...', lags[..., i, :], lags[..., j, :]
            )
    xtx, xty = gram[..., :order, :order], gram[..., :order, order]
    sv = np.sqrt(np.abs(np.linalg.svd(xtx, compute_uv=False)))  # singular values of X
    full_rank = sv[..., -1] > sv[..., 0] * np.finfo(float).eps * max(n_lagged, order)
    ok = full_rank & (np.ptp(a, axis=-1) > 0)
    eye = np.broadcast_to(np.eye(order), xtx.shape)
    try:
        coefs = np.linalg.solve(np.where(ok[..., None, None], xtx, eye), xty[..., None])[..., 0]
    except np.linalg.LinAlgError:  # numerically singular despite the rank test (round-off data)
        coefs, ok = _solve_each(np.where(ok[..., None, None], xtx, eye), xty, ok)
    y = lags[..., order, :]
    # the same operations in the same order, in two scratch buffers (no fresh temporaries)
    fitted = np.multiply(coefs[..., :1], lags[..., 0, :])
    work = np.empty_like(fitted)
    for i in range(1, order):
        fitted += np.multiply(coefs[..., i : i + 1], lags[..., i, :], out=work)
    residuals = np.subtract(y, fitted, out=fitted)
    ss_res = np.square(residuals, out=residuals).sum(axis=-1)
    centred = np.subtract(y, y.mean(axis=-1, keepdims=True), out=work)
    ss_tot = np.square(centred, out=centred).sum(axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        score = 1.0 - ss_res / ss_tot
    return np.where(ok, score, np.nan)[()]


def _solve_each(xtx, xty, ok):
    """Solve the normal equations matrix by matrix; singular ones give NaN and ok = False."""
    flat_a, flat_b = xtx.reshape(-1, *xtx.shape[-2:]), xty.reshape(-1, xty.shape[-1])
    coefs, good = np.full(flat_b.shape, np.nan), ok.reshape(-1).copy()
    for i in range(len(flat_a)):
        try:
            coefs[i] = np.linalg.solve(flat_a[i], flat_b[i])
        except np.linalg.LinAlgError:
            good[i] = False
    return coefs.reshape(xty.shape), good.reshape(ok.shape)


# ---------------------------------------------------------------------------
# Rate- and ADC-independent metric kernels (last axis)
# ---------------------------------------------------------------------------
def decimation_factor(fs, target_fs=config.QC_FIXED_FS):
    """Samples per block that bring a rate ``fs`` (Hz) closest to ``target_fs``: round(fs/target), ≥ 1."""
    if fs is None or not np.isfinite(fs):
        return 1
    return max(1, int(round(fs / target_fs)))


def block_average(a, n_per_bin):
    """Means of consecutive blocks of ``n_per_bin`` samples along the last axis (tail dropped).

    Parameters
    ----------
    a : ndarray, shape (..., n)
    n_per_bin : int

    Returns
    -------
    ndarray, shape (..., n // n_per_bin)
    """
    a = np.asarray(a, dtype=float)
    if n_per_bin <= 1:
        return a
    n_bins = a.shape[-1] // n_per_bin
    if n_per_bin < 8:  # strided sums: numpy's sum of fewer than 8 items is this sequential loop
        total = a[..., 0 : n_bins * n_per_bin : n_per_bin].copy()
        for k in range(1, n_per_bin):
            total += a[..., k : n_bins * n_per_bin : n_per_bin]
        return total / n_per_bin
    return a[..., : n_bins * n_per_bin].reshape(*a.shape[:-1], n_bins, n_per_bin).mean(axis=-1)


def n_noise_levels(a):
    """Distinct values within ±1 robust SD of the median: quantisation relative to the noise.

    For a digitiser step q and a noise SD σ, a window holds about 2σ/q + 1 distinct values in
    [median − σ, median + σ] (σ = 1.4826·MAD of the window), whatever the sampling rate and the
    ADC's number of bits, as long as the window holds more samples than levels. A channel
    at the camera floor, clipped or saturated has 1–3 levels; a healthy one tens to thousands.
    (``n_unique_samples``, a fraction of the window's samples, falls with the sampling rate
    and the ADC resolution instead.)

    Parameters
    ----------
    a : ndarray, shape (..., n)
        Raw (not detrended) values along the last axis.

    Returns
    -------
    ndarray of float, shape (...)
        Number of distinct values (NaN values ignored; NaN for an all-NaN window).
    """
    return _n_noise_levels_sorted(np.sort(np.asarray(a, dtype=float), axis=-1))


def _n_noise_levels_sorted(s, median=None):
    """:func:`n_noise_levels` of windows sorted along the last axis (``median``: theirs, shape (..., 1))."""
    median = nanmedian(s, keepdims=True) if median is None else median
    if s.shape[-1] and not np.isnan(s[..., -1]).any():  # sorted: a NaN would be last
        sigma = 1.4826 * sorted_abs_deviation_median(s, median[..., 0])[..., None]
    else:
        sigma = 1.4826 * nanmedian(np.abs(s - median), keepdims=True)
    inside = np.abs(s - median) <= sigma  # NaN compares False; a contiguous run of s
    new = inside[..., 1:] & inside[..., :-1] & (s[..., 1:] != s[..., :-1])
    count = np.count_nonzero(new, axis=-1) + inside.any(axis=-1)
    return np.where(np.isnan(s).all(axis=-1), np.nan, count.astype(float))[()]


def light_above_floor(a, floor=config.QC_CAMERA_FLOOR):
    """Light above the camera floor relative to the floor, (median(a) − floor) / floor.

    Unitless: 0 = no light ("LED off", patch cord disconnected, no fiber under the ROI);
    real IBL fibers sit 0.2–6 floors above it (docs/methods.md §2.2). Raw values along
    the last axis; shape (...) out.
    """
    return (nanmedian(a) - floor) / floor


def relative_mad(a, fs=None, floor=config.QC_CAMERA_FLOOR, target_fs=config.QC_FIXED_FS):
    """Robust spread of the signal relative to its light above the floor (≈ robust ΔF/F SD).

    The raw window is averaged in blocks to ≈ ``target_fs`` (so the per-sample noise of fast
    rigs does not dominate), detrended (least-squares line), and its robust SD
    (1.4826·MAD) is divided by median(a) − floor. Unit-free, unlike
    :func:`median_absolute_deviance` (data units). NaN when there is no light above the floor.

    Parameters
    ----------
    a : ndarray, shape (..., n)
        Raw (not detrended) values.
    fs : float, optional
        Sampling rate (Hz); None: no block averaging.
    floor : float
        Camera floor (data units).
    """
    a = np.asarray(a, dtype=float)
    return _relative_mad(nanmedian(a), block_average(a, decimation_factor(fs, target_fs)), floor)


def _relative_mad(raw_median, blocks, floor):
    """:func:`relative_mad` from the raw windows' median and their block averages."""
    return _per_light(mad_sd(detrend_windows(blocks)), raw_median - floor)


def _per_light(spread, level):
    """``spread / level``, NaN where there is no light above the floor (level ≤ 0)."""
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(level > 0, spread / level, np.nan)[()]


def relative_noise(a, fs=None, floor=config.QC_CAMERA_FLOOR, target_fs=config.QC_FIXED_FS):
    """Sample-to-sample noise relative to the light above the floor, at ≈ ``target_fs`` Hz.

    1.4826·MAD of the first differences of the block averages, / √2 (the SD of white noise;
    slow signals and trends hardly change successive samples), divided by median(a) − floor.
    Unit-free, and comparable between rigs because it is computed at a fixed rate: a dim
    fiber (a few % of noise per 0.1 s) stands out from a healthy one (≈ 0.1–0.5 %). NaN
    without light above the floor.
    """
    a = np.asarray(a, dtype=float)
    return _relative_noise(nanmedian(a), block_average(a, decimation_factor(fs, target_fs)), floor)


def _relative_noise(raw_median, blocks, floor):
    """:func:`relative_noise` from the raw windows' median and their block averages."""
    return _per_light(mad_sd(np.diff(blocks, axis=-1)) / np.sqrt(2), raw_median - floor)


def ar_score_10hz(a, fs=None, order=2, target_fs=config.QC_FIXED_FS):
    """:func:`ar_score` of the window averaged in blocks to ≈ ``target_fs`` Hz (default 10).

    At the native rate the AR(2) R² of any smooth signal tends to 1 as the rate grows (at
    120 Hz every real fiber scored 0.98–1.00); at a fixed rate it measures the temporal
    structure per 0.1 s, comparable between rigs. The rate used is fs / round(fs/target_fs).
    """
    return ar_score(block_average(a, decimation_factor(fs, target_fs)), order=order)


# Kernels that take the sampling rate (``fs=``, Hz) and the camera floor (``floor=``).
RATE_AWARE_METRICS = frozenset({'relative_mad', 'relative_noise', 'ar_score_10hz'})
FLOOR_AWARE_METRICS = frozenset({'light_above_floor', 'relative_mad', 'relative_noise'})

SLIDING_METRIC_KERNELS = {
    'n_unique_samples': n_unique_samples,
    'median_absolute_deviance': median_absolute_deviance,
    'percentile_distance': percentile_distance,
    'percentile_asymmetry': percentile_asymmetry,
    'ar_score': ar_score,
    'n_noise_levels': n_noise_levels,
    'light_above_floor': light_above_floor,
    'relative_mad': relative_mad,
    'relative_noise': relative_noise,
    'ar_score_10hz': ar_score_10hz,
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
    return int(np.count_nonzero(median_interval(times) - dt > dt_tol))


def distinct_codes(codes):
    """Sorted distinct values of an integer array (``np.unique``; a bincount for small
    non-negative codes such as LED states, 20× faster on a session's frames)."""
    codes = np.asarray(codes)
    if codes.size and codes.dtype.kind in 'iu' and codes.min() >= 0 and codes.max() < 2**16:
        return np.flatnonzero(np.bincount(codes)).astype(codes.dtype)
    return np.unique(codes)


def _frame_interval(times):
    """(times as float array, median frame interval (s) or NaN)."""
    times = np.asarray(times, dtype=float)
    return times, (median_interval(times) if times.size > 2 else np.nan)


def n_band_inversions(led_codes, channel_codes=(1, 2), times=None):
    """Number of consecutive frames of the alternating channels that carry the same LED
    with no camera frame missing between them.

    Parameters
    ----------
    led_codes : array of int, shape (n_frames,)
        LED code per frame in acquisition order (1 = 415 nm, 2 = 470 nm, 4 = 560 nm). Raw
        NPM ``LedState`` values may be passed: only the LED bits (``& 7``) are used.
    channel_codes : tuple of int
        The codes of the channels that should strictly alternate.
    times : array of float, shape (n_frames,), optional
        Times (s) of every frame (the camera clock). Without them, no frame is known to
        be missing.

    Returns
    -------
    int
        Frames whose code is not a channel code (0 = no LED, 7 = the all-LED
        initialisation frame, 4 = a third LED …) are dropped wherever they occur, then
        equal neighbours are counted, unless the camera clock says that frames are missing
        between them (:func:`n_dropped_frames`): the camera dropped the other LED's frame,
        and the labels are still the LEDs'. A label out of phase (the NPM early-frame
        glitch) repeats one LED on consecutive camera frames. Unlike iblphotometry,
        unlabelled frames are not filled by assuming alternation, so a sequence break
        across them counts.
    """
    codes = np.asarray(led_codes).astype(np.int64) & LED_CODE_MASK
    index = np.flatnonzero(np.isin(codes, channel_codes))
    sequence = codes[index]
    repeats = np.flatnonzero(sequence[1:] == sequence[:-1])
    if times is None or repeats.size == 0:
        return int(repeats.size)
    times, dt = _frame_interval(times)
    if not (np.isfinite(dt) and dt > 0):
        return int(repeats.size)
    first, second = index[repeats], index[repeats + 1]
    with np.errstate(invalid='ignore'):  # camera frames in the span, against those recorded
        missing = np.rint((times[second] - times[first]) / dt) - (second - first)
    return int(np.count_nonzero(~(missing > 0)))


def n_dropped_frames(times):
    """Camera frames missing from a recording: Σ (round(interval / median interval) − 1).

    Parameters
    ----------
    times : array of float, shape (n_frames,)
        Times (s) of every recorded frame, whatever its LED (the camera clock).

    Returns
    -------
    int
        Frames the camera dropped, and the frames of a paused recording. Not a fault in
        itself: the bands are paired by time and gaps are masked.
    """
    times, dt = _frame_interval(times)
    if not (np.isfinite(dt) and dt > 0):
        return 0
    with np.errstate(invalid='ignore'):
        ratio = np.diff(times) / dt
        gaps = ratio[ratio >= 1.5]  # an interval of two frames or more (NaN: none)
    return int(np.sum(np.rint(gaps) - 1))


def bleaching_tau(
    times,
    values,
    fit_fs=1.0,
    tau_bounds=config.QC_BLEACHING_TAU_BOUNDS,
    min_f=config.QC_BLEACHING_MIN_F,
):
    """Bleaching time constant τ (s) of ``A·exp(−(t − t0)/τ) + b`` fitted to a raw signal.

    Bounded least squares on block averages at ``fit_fs`` Hz: A ≥ 0 (a decay) and τ within
    ``tau_bounds`` = (lower s, upper × recording length). For a given τ the model is linear in
    (A, b), so the fit minimises the profile SSE(τ) (variable projection: A, b in closed form)
    over log τ — a grid over the bounds, then Brent's bounded search around the best grid
    point; this is the least-squares estimate of the three-parameter fit, found without a
    start value (docs/methods.md §2.2). A fit that ends on a τ bound (within 1 %), or that does
    not explain the data better than a straight line (F statistic of the extra parameter <
    ``min_f``), means no decay resolvable in the recording and gives NaN; the unbounded fit
    it replaces returned τ up to 2.5e7 s on real recordings.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s).
    values : ndarray, shape (n_samples,)
        Raw signal (NaN samples are left out).
    fit_fs : float or None
        Rate (Hz) of the block averages fitted; None: every sample.
    tau_bounds : tuple of float
        (τ_min in s, τ_max in multiples of the recording length).
    min_f : float
        Minimum F statistic of the exponential against a line fit.

    Returns
    -------
    float
        τ (s) or NaN.
    """
    from scipy import optimize

    t = np.asarray(times, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < 8:
        return np.nan
    t = t - t[0]
    scale = median(y)
    scale = scale if np.isfinite(scale) and scale != 0 else 1.0
    n_per_bin = 1 if fit_fs is None else decimation_factor(sampling_rate(t), fit_fs)
    t_fit, y_fit = block_average(t, n_per_bin), block_average(y / scale, n_per_bin)
    duration = max(t_fit[-1] - t_fit[0], 1e-9)
    low, high = float(tau_bounds[0]), float(tau_bounds[1]) * duration
    if not low < high or not np.all(np.isfinite(y_fit)):
        return np.nan
    y_centred = y_fit - y_fit.mean()
    ss_total = float(y_centred @ y_centred)
    if not ss_total > 0:
        return np.nan

    def profile(log_tau):  # (SSE, A) of the best A ≥ 0 and b for this τ
        e = np.exp(-t_fit / np.exp(log_tau))
        e -= e.mean()
        ee, ey = float(e @ e), float(e @ y_centred)
        if not (ee > 0 and ey > 0):
            return ss_total, 0.0
        return ss_total - ey * ey / ee, ey / ee

    grid = np.linspace(np.log(low), np.log(high), 21)
    best = int(np.argmin([profile(g)[0] for g in grid]))
    bracket = (grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)])
    result = optimize.minimize_scalar(
        lambda g: profile(g)[0], bounds=bracket, method='bounded', options={'xatol': 1e-7}
    )
    tau = float(np.exp(result.x))
    amplitude = profile(result.x)[1]
    if not np.isfinite(tau) or tau <= low * 1.01 or tau >= high * 0.99 or amplitude <= 0:
        return np.nan
    # the exponential must explain clearly more than a straight line (curvature): F-test of
    # one extra parameter, F = ΔSSE / (SSE / (n − 3))
    sse_decay = float(result.fun)
    line = np.polyval(np.polyfit(t_fit, y_fit, 1), t_fit)
    sse_line = float(np.sum((y_fit - line) ** 2))
    if sse_decay <= 0:
        return tau
    if (sse_line - sse_decay) / (sse_decay / max(len(t_fit) - 3, 1)) < min_f:
        return np.nan
    return tau


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
def _sorted_median(s):
    """Median of windows sorted along the last axis (= ``np.median`` of the unsorted ones)."""
    n = s.shape[-1]
    if n % 2:
        return s[..., n // 2]
    return (s[..., n // 2 - 1] + s[..., n // 2]) / 2


def _sorted_percentile(s, q):
    """``np.percentile(a, q, axis=-1)`` (linear method) of windows ``s`` sorted along the last axis.

    Same arithmetic as numpy's linear interpolation (its ``_lerp``), so the values are equal to
    the last bit; no partition is needed since the rows are sorted.
    """
    n = s.shape[-1]
    index = q / 100 * (n - 1)
    low = int(np.floor(index))
    high = min(low + 1, n - 1)
    t = index - low
    a, b = s[..., low], s[..., high]
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


class _WindowStats:
    """The windows of one band and what several default metrics share, each computed once.

    ``which`` is ``'raw'`` or ``'detrended'``. Sorting the windows (once per kind) gives every
    median and percentile by indexing; block averages (for the fixed-rate metrics) are
    computed once per rate. Used by :func:`sliding_qc` for the kernels of
    :data:`SLIDING_METRIC_KERNELS` when the windows hold no NaN; the results equal the
    kernels' own (tested).
    """

    def __init__(self, windows, fs):
        self.windows, self.fs = windows, fs
        self._sorted, self._median, self._blocks = {}, {}, {}

    def sorted(self, which):
        if which not in self._sorted:
            self._sorted[which] = np.sort(self.windows[which], axis=-1)
        return self._sorted[which]

    def median(self, which):
        if which not in self._median:
            self._median[which] = _sorted_median(self.sorted(which))
        return self._median[which]

    def blocks(self, target_fs):
        n_per_bin = decimation_factor(self.fs, target_fs)
        if n_per_bin not in self._blocks:
            self._blocks[n_per_bin] = block_average(self.windows['raw'], n_per_bin)
        return self._blocks[n_per_bin]


def _fused_mad(st, which):
    return sorted_abs_deviation_median(st.sorted(which), st.median(which))


def _fused_percentile_distance(st, which, pc=(50, 95)):
    s = st.sorted(which)
    low, high = (_sorted_percentile(s, q) for q in pc)
    return _sd_units(high - low, s.std(axis=-1))


def _fused_percentile_asymmetry(st, which, pc_comp=95):
    s = st.sorted(which)
    return _asymmetry(*(_sorted_percentile(s, q) for q in (100 - pc_comp, 50, pc_comp)))


def _fused_relative_mad(
    st, which, fs=None, floor=config.QC_CAMERA_FLOOR, target_fs=config.QC_FIXED_FS
):
    return _relative_mad(st.median('raw'), st.blocks(target_fs), floor)


def _fused_relative_noise(
    st, which, fs=None, floor=config.QC_CAMERA_FLOOR, target_fs=config.QC_FIXED_FS
):
    return _relative_noise(st.median('raw'), st.blocks(target_fs), floor)


# The default kernels computed from shared window statistics (raw-window metrics only where
# the kernel is defined on the raw values: the light level and the block averages).
_FUSED = {
    'n_unique_samples': lambda st, which: _n_unique_sorted(st.sorted(which)),
    'median_absolute_deviance': _fused_mad,
    'percentile_distance': _fused_percentile_distance,
    'percentile_asymmetry': _fused_percentile_asymmetry,
    'ar_score': lambda st, which, order=2: ar_score(st.windows[which], order=order),
    'n_noise_levels': lambda st, which: _n_noise_levels_sorted(
        st.sorted(which), st.median(which)[..., None]
    ),
    'light_above_floor': lambda st, which, floor=config.QC_CAMERA_FLOOR: (
        (st.median(which) - floor) / floor
    ),
    'relative_mad': _fused_relative_mad,
    'relative_noise': _fused_relative_noise,
    'ar_score_10hz': lambda st, which, fs=None, order=2, target_fs=config.QC_FIXED_FS: ar_score(
        st.blocks(target_fs), order=order
    ),
}
# relative_mad, relative_noise and ar_score_10hz read the raw windows whatever ``which`` is;
# they are fused only when scored on the raw windows (config.QC_UNDETRENDED_METRICS).
_FUSED_RAW_ONLY = frozenset({'relative_mad', 'relative_noise', 'ar_score_10hz'})


def _metric_kernel(metric):
    if callable(metric):
        return metric.__name__, metric
    if metric not in SLIDING_METRIC_KERNELS:
        raise ValueError(f'unknown QC metric {metric!r}; known: {sorted(SLIDING_METRIC_KERNELS)}')
    return metric, SLIDING_METRIC_KERNELS[metric]


def _hold_missing(values):
    """``values`` with each NaN replaced by the last finite value before it (the first finite
    value for leading NaNs; all NaN stays NaN)."""
    finite = ~np.isnan(values)
    if not finite.any():
        return values.copy()
    last = np.maximum.accumulate(np.where(finite, np.arange(values.size), -1))
    last[last < 0] = np.flatnonzero(finite)[0]
    return values[last]


def sliding_qc(
    times,
    values,
    metrics=tuple(config.QC_SLIDING_METRICS),
    w_len=config.QC_SLIDING_KWARGS['w_len'],
    step_len=config.QC_SLIDING_KWARGS['step_len'],
    detrend=config.QC_SLIDING_KWARGS['detrend'],
    metrics_kwargs=None,
    undetrended=config.QC_UNDETRENDED_METRICS,
    floor=config.QC_CAMERA_FLOOR,
    max_missing=config.QC_SLIDING_MAX_MISSING,
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
    floor : float
        Camera floor (data units) for ``light_above_floor`` and ``relative_mad``; those and
        ``ar_score_10hz`` also receive the sampling rate ``fs`` (Hz) of ``times``.
    max_missing : float
        A window with at most this fraction of NaN frames (missing frames) is scored with each
        of them holding the previous frame's value (default ``config.QC_SLIDING_MAX_MISSING``).

    Returns
    -------
    centres : ndarray, shape (n_windows,)
        Window centre times (s).
    per_window : dict of str → ndarray, shape (n_windows,)
        Metric values per window; NaN for a window with more NaN frames than ``max_missing``.
    """
    metrics_kwargs = config.QC_METRICS_KWARGS if metrics_kwargs is None else metrics_kwargs
    times = np.asarray(times, dtype=float)
    fs = sampling_rate(times) if times.size > 1 else None
    centres, first, n_per_window = window_index(times, w_len, step_len, fs=fs)
    values = np.asarray(values, dtype=float)
    raw = _gather(values, first, n_per_window)
    # a window with more than a few NaN frames (missing frames, a time gap) is not scored:
    # NaN; one with a few is scored with them holding the previous value
    n_missing = np.isnan(raw).sum(axis=-1)
    complete = n_missing <= max_missing * n_per_window
    if n_missing[complete].any():
        raw = _gather(_hold_missing(values), first, n_per_window)
    n_windows = len(raw)
    raw = raw if complete.all() else raw[complete]  # (a mask would copy every window)
    detrended = (
        detrend_windows(raw, _gather(times, first[complete], n_per_window)) if detrend else raw
    )
    constant = np.ptp(raw, axis=-1) == 0 if raw.size else np.zeros(len(raw), bool)
    kernels = dict(_metric_kernel(metric) for metric in metrics)
    # default kernels share one sort per kind of window (and one median, one block average)
    stats = _WindowStats({'raw': raw, 'detrended': detrended}, fs)
    fused = raw.size > 0
    per_window = {}
    for name, kernel in kernels.items():  # a handful of metrics, each scores all windows at once
        which = 'raw' if name in undetrended else 'detrended'
        if len(raw) == 0:
            per_window[name] = np.full(n_windows, np.nan)
            continue
        default = kernel is SLIDING_METRIC_KERNELS.get(name)
        kwargs = dict(metrics_kwargs.get(name, {}))
        if name in RATE_AWARE_METRICS and default:
            kwargs.setdefault('fs', fs)
        if name in FLOOR_AWARE_METRICS and default:
            kwargs.setdefault('floor', floor)
        if default and fused and (which == 'raw' or name not in _FUSED_RAW_ONLY):
            values_ = np.asarray(_FUSED[name](stats, which, **kwargs), dtype=float)
        else:
            values_ = np.asarray(kernel(stats.windows[which], **kwargs), dtype=float)
        if detrend and name not in undetrended:  # a constant raw window has no spread
            values_ = np.where(constant, np.nan, values_)
        per_window[name] = np.full(n_windows, np.nan)
        per_window[name][complete] = values_
    return centres, per_window


def _reduce(values, how):
    values = np.asarray(values, dtype=float)
    if not np.any(~np.isnan(values)):
        return np.nan
    if how == 'mean':
        return float(np.nanmean(values))
    if how == 'median':
        return float(nanmedian(values))
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


# ---------------------------------------------------------------------------
# "No signal" and "artefact" metrics of a recording (GCaMP row)
# ---------------------------------------------------------------------------
def _fill_invalid(values, valid):
    """Values with the samples outside ``valid`` (and NaNs) linearly interpolated."""
    y = np.asarray(values, dtype=float).copy()
    bad = ~np.isfinite(y) if valid is None else (~np.asarray(valid, bool) | ~np.isfinite(y))
    if bad.all():
        return np.full_like(y, np.nan)
    if bad.any():
        index = np.arange(y.size)
        y[bad] = np.interp(index[bad], index[~bad], y[~bad])
    return y


def _slow_baseline(x, fs, seconds):
    """Running median over ``seconds`` (s), computed on 1-s block medians and interpolated.

    NaN samples (invalid) are ignored; blocks without a valid sample are interpolated over.
    """
    n_block = max(1, int(round(fs)))
    n = (x.size // n_block) * n_block
    if n == 0 or not np.isfinite(x).any():
        return np.full(x.shape, nanmedian(x, axis=None) if np.isfinite(x).any() else np.nan)
    medians = nanmedian(x[:n].reshape(-1, n_block), axis=1)
    centres = (np.arange(medians.size) + 0.5) * n_block - 0.5
    ok = np.isfinite(medians)
    if not ok.any():
        return np.full(x.shape, np.nan)
    smooth = running_median(medians[ok], int(round(seconds)))
    return np.interp(np.arange(x.size), centres[ok], smooth)


def dark_samples(values, floor=config.QC_CAMERA_FLOOR, fraction=0.2, width_s=1.0, fs=None):
    """Samples with less than ``fraction`` of the band's median light above the floor.

    Patch cord disconnected, LED off or a dropout: these stretches are not fluorescence and
    are left out of the "no signal" / "artefact" metrics (the artefact masks count them).
    With ``fs`` the light is judged on a ``width_s`` running median (so single dropout frames,
    which :func:`despike` handles, are not dark stretches).
    """
    y = np.asarray(values, dtype=float)
    if fs is not None:
        y = running_median(y, int(round(width_s * fs)))
    light = y - floor
    median_ = nanmedian(light, axis=None) if np.isfinite(light).any() else np.nan
    if not median_ > 0:
        return np.zeros(y.size, bool)
    return light < fraction * median_


def despike(values, fs, k=8.0, width_s=1.0, base=None):
    """Replace isolated outlying frames (dropouts to the floor, spikes) by a running median.

    A frame is a spike when it deviates from the ``width_s`` running median by more than
    ``k`` robust SDs of all deviations (``base``: that running median, if already computed).
    Returns ``(despiked values, spike mask)``.
    """
    y = np.asarray(values, dtype=float)
    base = running_median(y, int(round(width_s * fs))) if base is None else base
    deviation = y - base
    sigma = mad_sd(deviation)
    spikes = np.abs(deviation) > k * sigma if sigma > 0 else np.zeros(y.size, bool)
    return np.where(spikes, base, y), spikes


def welch_density(x, fs, nperseg):
    """Welch power spectral density: Hann windows of ``nperseg`` samples, 50 % overlap.

    ``scipy.signal.welch(x, fs, nperseg=nperseg, detrend=False)`` (one-sided density,
    units²/Hz, mean over segments; tested equal), with every segment transformed in one
    ``rfft`` call (scipy 1.17 transforms them one at a time: 8× slower on a 45-min recording).

    Parameters
    ----------
    x : ndarray, shape (n,)
    fs : float
        Sampling rate (Hz).
    nperseg : int
        Samples per segment (≤ n).

    Returns
    -------
    freqs : ndarray, shape (nperseg // 2 + 1,)
        Hz.
    power : ndarray, shape (nperseg // 2 + 1,)
    """
    from scipy import signal as ss

    step = nperseg - nperseg // 2
    segments = sliding_window_view(np.asarray(x, dtype=float), nperseg)[::step]
    window = ss.get_window('hann', nperseg)
    spectrum = np.fft.rfft(segments * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2) / (fs * (window**2).sum())
    power[:, 1 : -1 if nperseg % 2 == 0 else None] *= 2  # one-sided: not DC nor Nyquist
    return np.fft.rfftfreq(nperseg, 1 / fs), power.mean(axis=0)


def residual_power_ratio(values, fs, signal_band_hz=(0.1, 1.0), noise_band_hz=(2.0, 3.5)):
    """Mean power density in ``signal_band_hz`` over that in ``noise_band_hz`` (Welch, 20 s).

    Measurement noise is nearly white, so a fiber without fluorescence changes of its own
    (after the isosbestic correction) gives ≈ 1; calcium transients (0.1–1 Hz) raise it.
    Frequencies in Hz, so the value does not depend on the sampling rate; NaN when the rate is
    too low for the noise band (fs/2 ≤ its upper edge) or the signal is constant.
    """
    x = np.asarray(values, dtype=float)
    if fs / 2 <= noise_band_hz[1] or x.size < 4 * fs or not np.isfinite(x).all():
        return np.nan
    freqs, power = welch_density(x - x.mean(), fs, nperseg=min(x.size, int(round(20 * fs))))
    in_signal = (freqs >= signal_band_hz[0]) & (freqs < signal_band_hz[1])
    in_noise = (freqs >= noise_band_hz[0]) & (freqs < noise_band_hz[1])
    noise = power[in_noise].mean()
    return float(power[in_signal].mean() / noise) if noise > 0 else np.nan


def window_robust_z(values, n_per_window):
    """Robust z-score (x − median)/(1.4826·MAD) in consecutive windows of ``n_per_window``.

    Returns an array of shape (n_windows, n_per_window) (the incomplete tail is dropped);
    windows with MAD = 0 are NaN.
    """
    x = np.asarray(values, dtype=float)
    n_windows = x.size // n_per_window
    windows = x[: n_windows * n_per_window].reshape(n_windows, n_per_window)
    centre = median(windows, axis=1, keepdims=True)
    sigma = mad_sd(windows, axis=1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(sigma > 0, (windows - centre) / sigma, np.nan)


def upper_tail_excess(z, k=3.0):
    """Fraction of samples above +k minus the fraction below −k robust SDs (NaN ignored).

    ≈ 0 for symmetric noise (Gaussian or not); > 0 when positive transients stretch the
    upper tail beyond the lower one.
    """
    z = np.asarray(z, dtype=float)
    finite = np.isfinite(z)
    if not finite.any():
        return np.nan
    return float((np.count_nonzero(z > k) - np.count_nonzero(z < -k)) / finite.sum())


def transient_rate(z, fs, k=3.0):
    """Upward crossings of +k robust SDs per minute (z of shape (n_windows, n), rate fs Hz)."""
    z = np.asarray(z, dtype=float)
    finite_windows = np.isfinite(z).all(axis=-1)
    z = z[finite_windows]
    if z.size == 0:
        return np.nan
    crossings = np.count_nonzero((z[:, 1:] > k) & (z[:, :-1] <= k))
    return float(crossings / (z.size / fs / 60))


def _relative_deviation(x, baseline, floor):
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(baseline - floor > 0, (x - baseline) / (baseline - floor), np.nan)


def _shared(d_signal, d_reference, k, min_rel):
    """Samples where both relative deviations exceed max(k robust SDs, min_rel), same sign.

    NaN deviations (invalid samples) never count.
    """
    out = np.sign(d_signal) == np.sign(d_reference)
    for d in (d_signal, d_reference):
        out &= np.abs(d) > max(k * float(np.nan_to_num(mad_sd(d))), min_rel)
    return out & np.isfinite(d_signal) & np.isfinite(d_reference)


def shared_excursion_fraction(
    signal, reference, fs, floor=config.QC_CAMERA_FLOOR, baseline_s=60.0, k=5.0, min_rel=0.02
):
    """Fraction of samples where both bands leave their running median together.

    Each band's deviation from its ``baseline_s`` running median is taken relative to the
    light above the floor; a sample is in a shared excursion when both deviations exceed
    ``k`` robust SDs and ``min_rel``, with the same sign. GCaMP transients (GCaMP only) and
    noise do not count; motion, patch-cord and square-wave artefacts (both bands) do.
    """
    signal, reference = np.asarray(signal, float), np.asarray(reference, float)
    d_signal = _relative_deviation(signal, _slow_baseline(signal, fs, baseline_s), floor)
    d_reference = _relative_deviation(reference, _slow_baseline(reference, fs, baseline_s), floor)
    n_valid = np.count_nonzero(np.isfinite(d_signal) & np.isfinite(d_reference))
    if n_valid == 0:
        return np.nan
    return float(np.count_nonzero(_shared(d_signal, d_reference, k, min_rel)) / n_valid)


def _step_statistic(x, half_width):
    """median(x[t : t + w]) − median(x[t − w : t]) for every t (0 near the edges; w odd)."""
    w = int(half_width) | 1
    out = np.zeros(x.size)
    if x.size < 2 * w + 1:
        return out
    centred = running_median(x, w)  # centred[c]: median of x[c − r : c + r + 1], r = w // 2
    r = w // 2
    t = np.arange(w, x.size - w)
    out[t] = centred[t + r] - centred[t - 1 - r]
    return out


def n_shared_steps(
    signal, reference, fs, floor=config.QC_CAMERA_FLOOR, step_s=2.0, k=8.0, min_rel=0.05
):
    """Number of steps both bands take at the same time, in the same direction.

    The step statistic (median of the next ``step_s`` s − median of the previous ``step_s``
    s, relative to the light above the floor) must exceed ``k`` robust SDs and ``min_rel``
    in both bands; contiguous runs (within ``step_s``) count as one step. LED switching,
    patch-cord (dis)connection and square-wave excursions give steps; transients do not.
    """
    half_width = max(1, int(round(step_s * fs)))
    signal, reference = np.asarray(signal, float), np.asarray(reference, float)
    valid = np.isfinite(signal) & np.isfinite(reference)
    if not valid.any():
        return np.nan
    level_s = median(signal[valid]) - floor
    level_r = median(reference[valid]) - floor
    if not (level_s > 0 and level_r > 0):
        return np.nan
    # steps are measured on the valid samples joined together: a disconnected stretch
    # (NaN) is left out, not counted as two steps
    d_signal = _step_statistic(signal[valid], half_width) / level_s
    d_reference = _step_statistic(reference[valid], half_width) / level_r
    flagged = _shared(d_signal, d_reference, k, min_rel)
    if not flagged.any():
        return 0
    index = np.flatnonzero(flagged)
    return int(1 + np.count_nonzero(np.diff(index) > half_width))


def corrected_signal(times, signal, reference=None, bleach=None, valid=None):
    """Bleach-corrected GCaMP ΔF/F minus its OLS fit on the bleach-corrected isosbestic.

    Returns ``(values, slope, signal_bc)``: without a reference, values is the
    bleach-corrected signal and slope NaN; ``signal_bc`` is the bleach-corrected signal
    (before the reference is subtracted). ``bleach``: keyword arguments of
    :func:`iblnm.signal.preprocess.bleach_correct` (default ``config.QC_BLEACH``).
    ``valid`` (bool, shape (n,)): the samples the baselines and the fit may use (the
    baselines run over the others interpolated, in real time).
    """
    bleach = config.QC_BLEACH if bleach is None else bleach
    signal_bc = bleach_correct(times, signal, valid=valid, **bleach)
    if reference is None:
        return signal_bc, np.nan, signal_bc
    reference_bc = bleach_correct(times, reference, valid=valid, **bleach)
    slope, intercept = fit_reference(signal_bc, reference_bc, method='ols', valid=valid)
    return signal_bc - (slope * reference_bc + intercept), float(slope), signal_bc


def signal_qc(
    times,
    signal,
    reference=None,
    valid=None,
    floor=config.QC_CAMERA_FLOOR,
    kwargs=None,
    saturation=config.SATURATION_LEVEL,
    artefacts=None,
):
    """ "No signal" and "artefact" metrics of one fiber (whole recording).

    Dark stretches of either band (:func:`dark_samples`: disconnection, LED off) and the
    saturated samples of either band (:func:`iblnm.signal.artefacts.saturated_samples`) are
    left out, both bands are despiked (:func:`despike`: dropout frames), averaged in blocks
    to ≈ ``config.QC_FIXED_FS`` (10 Hz), and the GCaMP band is corrected with the isosbestic
    band (:func:`corrected_signal`, over the valid samples joined). Then:

    - ``iso_explained``: fraction of the bleach-corrected GCaMP variance (valid samples,
      ≈ 10 Hz) explained by the isosbestic fit, 1 − (σ(corrected)/σ(GCaMP))² with robust
      σ (:func:`iblnm.signal.robust.mad_sd`: the variance for Gaussian fluctuations, and a
      single large event shared by both bands, or a few GCaMP transients, do not dominate
      it);
    - ``residual_power_ratio``: :func:`residual_power_ratio` of the corrected signal;
    - ``upper_tail_excess``, ``transient_rate``: :func:`upper_tail_excess` and
      :func:`transient_rate` of its robust z-score in ``window_s`` windows;
    - ``frac_shared_excursion``, ``n_shared_steps``: :func:`shared_excursion_fraction` and
      :func:`n_shared_steps` of the two raw bands (NaN without a reference).

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s), uniform.
    signal, reference : ndarray, shape (n_samples,)
        Raw GCaMP and isosbestic bands paired by position (reference may be None).
    valid : ndarray of bool, shape (n_samples,), optional
        Samples to use (e.g. the artefact mask's valid samples); the others are interpolated
        over before filtering.
    floor : float
        Camera floor (data units).
    kwargs : dict, optional
        Overrides of ``config.QC_SIGNAL_KWARGS``.
    saturation : float
        Saturation value (data units; inf disables the rule).
    artefacts : ndarray of bool, shape (n_samples,), optional
        Samples an artefact detector masked (:func:`iblnm.signal.artefacts.detect_artefacts`):
        left out of the corrected signal's metrics (``iso_explained``,
        ``residual_power_ratio``, ``upper_tail_excess``, ``transient_rate``), so that an
        excursion shared by both bands is scored by the artefact metrics
        (``frac_shared_excursion``, ``n_shared_steps``, which still read them) rather than
        as variance the isosbestic band explains.

    Returns
    -------
    dict of str → float
        Keys ``config.QC_SIGNAL_METRICS``; NaN where not computable. A corrected signal
        that is exactly flat (the GCaMP band a copy of the isosbestic one) has no transients:
        ``upper_tail_excess`` and ``transient_rate`` 0.
    """
    p = {**config.QC_SIGNAL_KWARGS, **(kwargs or {})}
    out = dict.fromkeys(config.QC_SIGNAL_METRICS, np.nan)
    times = np.asarray(times, dtype=float)
    if times.size < 10:
        return out
    fs = sampling_rate(times)
    bands = [
        np.asarray(b, dtype=float) for b in ([signal] if reference is None else [signal, reference])
    ]
    valid = np.ones(times.size, bool) if valid is None else np.asarray(valid, bool).copy()
    if not all(np.isfinite(b).any() for b in bands):
        return out
    bases = [running_median(_fill_invalid(b, None), int(round(fs))) for b in bands]  # 1 s
    for band, base in zip(bands, bases):
        valid &= (
            np.isfinite(band) & ~dark_samples(base, floor) & ~saturated_samples(band, saturation)
        )
    if valid.sum() < 10:
        return out
    bands = [despike(_fill_invalid(b, valid), fs, base=base)[0] for b, base in zip(bands, bases)]
    n_per_bin = decimation_factor(fs)
    fs_fixed = fs / n_per_bin
    keep = block_average(valid.astype(float), n_per_bin) == 1  # blocks of valid samples only
    blocks = [block_average(b, n_per_bin) for b in bands]
    fixed = [b[keep] for b in blocks]
    if keep.sum() < 2 * p['window_s'] * fs_fixed:  # at least two z-score windows
        return out
    # from the first to the last valid block, the baselines run in real time over the
    # invalid blocks (interpolated, as the preprocessing does), so that the bleaching across
    # a dark stretch or a time gap is not a step shared by both bands; the metrics read the
    # valid blocks joined
    clean = keep
    if artefacts is not None:
        masked = np.asarray(artefacts, bool)
        clean = keep & (block_average((~masked).astype(float), n_per_bin) == 1)
        if clean.sum() < 2 * p['window_s'] * fs_fixed:
            clean = keep  # too little left unmasked: score what there is
    inner = slice(np.argmax(clean), clean.size - np.argmax(clean[::-1]))
    keep_inner = clean[inner]
    t_inner = np.arange(keep_inner.size) / fs_fixed
    corrected, _, signal_bc = corrected_signal(
        t_inner, *(b[inner] for b in blocks), valid=None if keep_inner.all() else keep_inner
    )
    corrected, signal_bc = corrected[keep_inner], signal_bc[keep_inner]
    total, residual = float(np.var(signal_bc)), float(np.var(corrected))
    if reference is not None:  # robust variances: one large shared event does not dominate
        spread = float(mad_sd(signal_bc))
        out['iso_explained'] = (
            1.0 - (float(mad_sd(corrected)) / spread) ** 2 if spread > 0 else np.nan
        )
    out['residual_power_ratio'] = residual_power_ratio(
        corrected, fs_fixed, p['signal_band_hz'], p['noise_band_hz']
    )
    if total > 0 and residual <= 1e-12 * total:  # nothing left after the correction
        out['upper_tail_excess'] = out['transient_rate'] = 0.0
    else:
        z = window_robust_z(corrected, max(2, int(round(p['window_s'] * fs_fixed))))
        out['upper_tail_excess'] = upper_tail_excess(z, p['z_threshold'])
        out['transient_rate'] = transient_rate(z, fs_fixed, p['z_threshold'])
    if reference is not None:
        out['frac_shared_excursion'] = shared_excursion_fraction(
            *fixed, fs_fixed, floor, p['baseline_s'], p['excursion_k'], p['excursion_min_rel']
        )
        out['n_shared_steps'] = n_shared_steps(
            *fixed, fs_fixed, floor, p['step_s'], p['step_k'], p['step_min_rel']
        )
    return out


def fiber_qc(times, signal, reference=None, floor=config.QC_CAMERA_FLOOR):
    """QC rows of one fiber, as :meth:`iblnm.data.PhotometrySession.run_sliding_qc` makes them.

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s) of the signal band; the reference is paired by position.
    signal, reference : ndarray, shape (n_samples,)
        Raw GCaMP and isosbestic bands (reference may be None).
    floor : float
        Camera floor (data units).

    Returns
    -------
    dict of str → dict
        ``{'GCaMP': metrics, 'Isosbestic': metrics}``: the sliding metrics (aggregated with
        ``config.QC_AGGREGATION``) of each band, plus on the GCaMP row ``bleaching_tau``,
        ``iso_correlation`` and the :func:`signal_qc` metrics.
    """
    rows = {}
    n = len(times) if reference is None else min(len(times), len(signal), len(reference))
    times, signal = np.asarray(times, float)[:n], np.asarray(signal, float)[:n]
    reference = None if reference is None else np.asarray(reference, float)[:n]
    for band, values in (('GCaMP', signal), ('Isosbestic', reference)):
        if values is not None:
            _, per_window = sliding_qc(times, values, floor=floor)
            rows[band] = aggregate_windows(per_window, how=config.QC_AGGREGATION)
    rows['GCaMP'].update(recording_qc(times, signal, reference, floor=floor))
    return rows


def recording_qc(times, signal, reference=None, floor=config.QC_CAMERA_FLOOR, artefacts=None):
    """Whole-recording metrics of the GCaMP row of one fiber.

    ``bleaching_tau`` of the raw GCaMP, ``iso_correlation`` of the pair bleach-corrected
    with ``config.QC_BLEACH`` (NaN without a reference) and the :func:`signal_qc` metrics;
    the reference is paired by position (:func:`iblnm.signal.preprocess.pair_by_position`).

    Parameters
    ----------
    times : ndarray, shape (n_samples,)
        Sample times (s) of the signal band.
    signal : ndarray, shape (n_samples,)
        Raw GCaMP band.
    reference : ndarray, shape (n_reference,), optional
        Raw isosbestic band.
    floor : float
        Camera floor (data units).
    artefacts : ndarray of bool, shape (n_samples,), optional
        Samples the artefact masks removed (see :func:`signal_qc`).

    Returns
    -------
    dict of str → float
    """
    out = {'bleaching_tau': bleaching_tau(times, signal), 'iso_correlation': np.nan}
    t, sig = np.asarray(times, float), np.asarray(signal)
    if reference is not None:
        t, sig, reference = pair_by_position(t, sig, reference)
        bleach = config.QC_BLEACH
        # NaN frames (time gaps) and saturated frames left out
        ok = np.isfinite(sig) & np.isfinite(reference)
        ok &= ~saturated_samples(sig) & ~saturated_samples(reference)
        if ok.any():  # bleach_correct fills the others (none when every sample is finite)
            signal_bc = bleach_correct(t, sig, valid=ok, **bleach)
            reference_bc = bleach_correct(t, reference, valid=ok, **bleach)
            out['iso_correlation'] = iso_correlation(signal_bc[ok], reference_bc[ok])
    if artefacts is not None:
        artefacts = np.asarray(artefacts, bool)
        artefacts = artefacts if artefacts.size == t.size else None  # masks of other frames
    out.update(signal_qc(t, sig, reference, floor=floor, artefacts=artefacts))
    return out
