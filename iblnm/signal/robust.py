"""Medians and robust spreads, fast.

``np.median`` partitions around two order statistics for an even length and is 4–5× slower
than one ``np.partition`` plus a ``max`` of the lower part, which selects the same two values
(so the results are equal to the last bit, tested). The QC, artefact and preprocessing kernels
take a few hundred medians per session; these are the ones they use.

A long 1-D array (a whole recording, its intervals, its deviations) is not partitioned whole:
the middle order statistics are bracketed by a sorted random sample, the values between the
brackets selected and the ties counted, every rank checked by counting (the full partition runs
when the sample missed the middle: :func:`_middle_values`). It is 2–50× faster than
``np.partition``, whose introselect is at its slowest on the few-valued, periodic arrays of a
uniform grid's intervals.
"""

import functools

import numpy as np

MAD_TO_SD = 1.4826  # 1 / Φ⁻¹(3/4): MAD × 1.4826 estimates the SD of Gaussian data


_BRACKET_SAMPLE = 2048  # most values drawn to bracket the middle of a long 1-D array
_BRACKET_MIN = 4096  # shorter arrays are partitioned whole


@functools.lru_cache(maxsize=32)
def _sample_index(n):
    """Sorted indices of the bracketing sample of ``n`` values: ``n`` / 32 of them (at least 128,
    at most :data:`_BRACKET_SAMPLE`: the fastest on 4k-80k values), drawn with a fixed seed (the
    same for every call)."""
    m = min(_BRACKET_SAMPLE, max(128, n // 32))
    return np.sort(np.random.default_rng(0).integers(0, n, m))


def _middle_values(a):
    """``(a_(k−1), a_(k))`` for even ``n``, ``(a_(k), a_(k))`` for odd (k = n // 2, 0-based order
    statistics) of a 1-D NaN-free array of ``n`` ≥ :data:`_BRACKET_MIN` values.

    Two values ``lo ≤ hi`` taken ~4 standard errors either side of the middle of a sorted random
    sample (:func:`_sample_index`) split the sorted array into five
    blocks whose sizes are counted: below ``lo``, equal to ``lo``, strictly between, equal to
    ``hi`` and above ``hi``. A rank in an equal block is that value; a rank strictly between is
    selected among those values (≈ 10–20 % of them); a rank outside the brackets (the sample
    missed the middle: never assumed, counted) makes the whole array partitioned. Ties are
    counted, not selected, so the few-valued periodic intervals of a uniform grid (on which
    ``np.partition``'s introselect is at its slowest) cost a few comparisons.
    """
    n = a.size
    k = n // 2
    ranks = (k - 1, k) if n % 2 == 0 else (k, k)
    sample = np.sort(a[_sample_index(n)])
    m = sample.size
    j = (ranks[0] * m) // n
    half = 2 * int(np.sqrt(m)) + 2  # ~4 standard errors of the sample's middle rank
    lo, hi = sample[max(j - half, 0)], sample[min(j + half, m - 1)]
    below = np.count_nonzero(a < lo)
    at_lo = np.count_nonzero(a == lo)
    above = np.count_nonzero(a > hi)
    between = a[(a > lo) & (a < hi)] if hi > lo else a[:0]
    first_between, first_at_hi = below + at_lo, below + at_lo + between.size
    if not (below <= ranks[0] and ranks[1] < n - above):
        part = np.partition(a, ranks)
        return part[ranks[0]], part[ranks[1]]
    picks = [r - first_between for r in ranks if first_between <= r < first_at_hi]
    if picks:
        part = np.partition(between, picks)
    values = []
    for r in ranks:
        if r < first_between:
            values.append(lo)
        elif r < first_at_hi:
            values.append(part[r - first_between])
        else:
            values.append(hi)
    return values[0], values[1]


def _partition_median(a, axis):
    """Median along ``axis`` of a NaN-free array (``np.median``'s values)."""
    a = np.moveaxis(a, axis, -1) if axis not in (-1, a.ndim - 1) else a
    n = a.shape[-1]
    if a.ndim == 1 and n >= _BRACKET_MIN:
        low, high = _middle_values(a)
        return low if n % 2 else (low + high) / 2
    if n <= 3:  # short rows (e.g. block medians): min/max network, no per-row partition
        if n == 1:
            return a[..., 0].copy()
        low, high = np.minimum(a[..., 0], a[..., 1]), np.maximum(a[..., 0], a[..., 1])
        if n == 2:
            return (low + high) / 2
        return np.maximum(low, np.minimum(high, a[..., 2]))
    k = n // 2
    part = np.partition(a, k, axis=-1)
    if n % 2:
        return part[..., k]
    return (part[..., :k].max(axis=-1) + part[..., k]) / 2


def median(a, axis=-1, keepdims=False):
    """``np.median(a, axis)``: NaN propagates (a slice with a NaN gives NaN).

    Parameters
    ----------
    a : array_like
    axis : int or None
        None: the median of all values.
    keepdims : bool

    Returns
    -------
    ndarray or float
    """
    a = np.asarray(a, dtype=float)
    if axis is None:
        out = median(a.reshape(-1), -1)
        return np.reshape(out, (1,) * a.ndim) if keepdims else out
    if a.shape[axis] == 0 or np.isnan(a).any():
        return np.median(a, axis=axis, keepdims=keepdims)
    out = _partition_median(a, axis)
    return np.expand_dims(out, axis) if keepdims else out


def nanmedian(a, axis=-1, keepdims=False):
    """``np.nanmedian(a, axis)`` without its warning: NaNs ignored, all-NaN slices give NaN."""
    a = np.asarray(a, dtype=float)
    if a.size and not np.isnan(a).any():
        return median(a, axis=axis, keepdims=keepdims)
    # all-NaN (or empty) slices are set aside rather than silenced with catch_warnings, which
    # is not thread-safe (the QC and preprocessing kernels run on threads)
    empty = np.isnan(a).all(axis=axis, keepdims=True)
    if empty.all():
        out = np.full(empty.shape, np.nan)
    else:
        out = np.nanmedian(np.where(empty, 0.0, a), axis=axis, keepdims=True)
        out = np.where(empty, np.nan, out)
    if not keepdims:
        out = out.reshape(()) if axis is None else np.squeeze(out, axis=axis)
    return out[()] if out.ndim == 0 else out


def mad_sd(a, axis=-1, keepdims=False):
    """Robust SD, 1.4826 · median(|a − median(a)|) along ``axis``, NaNs ignored.

    Equals the SD for Gaussian data; 0 for a slice with more than half equal values.
    """
    centre = nanmedian(a, axis=axis, keepdims=True)
    spread = nanmedian(np.abs(np.asarray(a, dtype=float) - centre), axis=axis, keepdims=keepdims)
    return MAD_TO_SD * spread


def _kth_deviation(s, centre, below, c):
    """The ``c``-th smallest (1-based) ``|s − centre|`` of each row of ``s``.

    ``s`` (shape (r, n)) is sorted along its rows and NaN-free, ``centre`` (r,) and ``below`` (r,)
    the number of values of each row under its centre. The deviations under the centre, read from
    ``below − 1`` down, and those at or above it, read from ``below`` up, are two increasing
    sequences L and R; the ``c`` smallest of their union are the first ``i`` of L and the first
    ``c − i`` of R, with ``i`` the largest count for which L's ``i``-th is not above R's
    ``(c − i + 1)``-th (a binary search of every row at once). ``centre − s`` is
    ``−(s − centre)`` exactly, so the value is the one ``np.abs(s − centre)`` holds.
    """
    r, n = s.shape
    rows = np.arange(r)
    n_right = n - below
    lo, hi = np.maximum(0, c - n_right), np.minimum(c, below)
    while True:
        active = lo < hi
        if not active.any():
            break
        i = (lo + hi + 1) // 2
        j = c - i
        left_last = centre - s[rows, np.clip(below - i, 0, n - 1)]  # L[i − 1]
        right_next = s[rows, np.clip(below + j, 0, n - 1)] - centre  # R[j]
        too_many = active & (left_last > right_next)  # j < n − below here, as i > lo
        hi = np.where(too_many, i - 1, hi)
        lo = np.where(active & ~too_many, i, lo)
    i, j = lo, c - lo
    left = np.where(i > 0, centre - s[rows, np.clip(below - i, 0, n - 1)], -np.inf)
    right = np.where(j > 0, s[rows, np.clip(below + j - 1, 0, n - 1)] - centre, -np.inf)
    return np.maximum(left, right)


def sorted_abs_deviation_median(s, centre):
    """``median(|s − centre|)`` along the last axis of ``s``, sorted along it and NaN-free.

    Equal to ``np.median(np.abs(s − centre), axis=-1)`` to the last bit (tested), without
    partitioning the deviations: on sorted windows their middle order statistics are found
    by a binary search of the two increasing runs either side of the centre (O(log n) per row).

    Parameters
    ----------
    s : ndarray, shape (..., n)
        Rows sorted ascending, no NaN; n ≥ 1.
    centre : ndarray, shape (...)
        One centre per row (usually its median).

    Returns
    -------
    ndarray, shape (...)
    """
    s = np.asarray(s, dtype=float)
    shape, n = s.shape[:-1], s.shape[-1]
    rows = s.reshape(-1, n)
    centre = np.broadcast_to(np.asarray(centre, dtype=float), shape).reshape(-1)
    below = np.count_nonzero(rows < centre[:, None], axis=1)
    k = np.full(len(rows), n // 2)
    high = _kth_deviation(rows, centre, below, k + 1)
    out = high if n % 2 else (_kth_deviation(rows, centre, below, k) + high) / 2
    return out.reshape(shape)
