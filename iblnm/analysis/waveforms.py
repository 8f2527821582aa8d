"""Waveform statistics for peri-event traces: bootstrap bands and cluster permutation tests.

Following Jean-Richard-dit-Bressel, Clifford & McNally (2020, Front Mol Neurosci 13:14):
summarise a response by its whole waveform with a confidence band (bootstrap, 1,000
resamples) and call a time point significant only inside a run of at least ``n``
consecutive significant samples; compare conditions with a permutation test. The
permutation test here is cluster-based (Maris & Oostenveld 2007): supra-threshold runs of
the per-sample t statistic are scored by their summed t ("mass") and compared with the
maximum cluster mass under label permutations, which controls the family-wise error over
the whole window.

Traces are arrays of shape (n_units, n_samples): one row per trial, recording or subject
(the resampling unit is the row; average to the level you want to generalise over first).
NaN samples are ignored.
"""

import warnings

import numpy as np
import pandas as pd
from scipy import stats


def _resampled_means(x, weights):
    """Weighted NaN-aware means: weights (n_draws, n_units) @ x (n_units, n_samples)."""
    finite = np.isfinite(x)
    sums = weights @ np.where(finite, x, 0.0)
    counts = weights @ finite.astype(float)
    with np.errstate(invalid='ignore', divide='ignore'):
        return sums / counts


def bootstrap_ci(traces, n_boot=1000, ci=0.95, seed=0):
    """Mean trace with a percentile bootstrap confidence band.

    Parameters
    ----------
    traces : ndarray, shape (n_units, n_samples)
    n_boot : int
        Bootstrap resamples of the rows (with replacement).
    ci : float
        Coverage of the band (0-1).
    seed : int

    Returns
    -------
    mean, lower, upper : ndarrays, shape (n_samples,)
        NaN-mean over rows and the (1 - ci)/2, (1 + ci)/2 percentiles of the resampled
        means. Memory is O(n_boot x (n_units + n_samples)): resamples are drawn as
        multinomial counts, not copies of the traces.
    """
    x = np.atleast_2d(np.asarray(traces, dtype=float))
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    boot = _resampled_means(x, weights)
    mean = _resampled_means(x, np.ones((1, n)))[0]
    alpha = (1 - ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN samples give NaN bounds
        lower, upper = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return mean, lower, upper


def runs(mask):
    """Contiguous True runs of a boolean vector as a list of (start, stop) (stop exclusive)."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(int)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def consecutive_threshold(mask, n_consecutive=3):
    """Keep only runs of at least ``n_consecutive`` True samples (ERT 2020's criterion)."""
    out = np.zeros(len(mask), dtype=bool)
    for start, stop in runs(mask):
        if stop - start >= n_consecutive:
            out[start:stop] = True
    return out


def bootstrap_significance(lower, upper, n_consecutive=3, value=0.0):
    """Samples where the band excludes ``value`` for >= ``n_consecutive`` samples in a row."""
    excluded = (np.asarray(lower) > value) | (np.asarray(upper) < value)
    return consecutive_threshold(excluded, n_consecutive)


def _welch_t(sum_a, sq_a, n_a, sum_b, sq_b, n_b):
    """Welch t from sums, sums of squares and counts (arrays broadcast together)."""
    with np.errstate(invalid='ignore', divide='ignore'):
        mean_a, mean_b = sum_a / n_a, sum_b / n_b
        var_a = (sq_a - n_a * mean_a**2) / (n_a - 1)
        var_b = (sq_b - n_b * mean_b**2) / (n_b - 1)
        return (mean_a - mean_b) / np.sqrt(var_a / n_a + var_b / n_b)


def _permuted_t(x, membership):
    """Welch t for each row of a (n_perm, n_units) 0/1 membership matrix of group a."""
    finite = np.isfinite(x)
    values = np.where(finite, x, 0.0)
    f = finite.astype(float)
    total, total_sq, total_n = values.sum(0), (values**2).sum(0), f.sum(0)
    sum_a, sq_a, n_a = membership @ values, membership @ values**2, membership @ f
    return _welch_t(sum_a, sq_a, n_a, total - sum_a, total_sq - sq_a, total_n - n_a)


def _paired_t(d, signs):
    """One-sample t of sign-flipped differences for each row of a (n_perm, n_units) ±1 matrix."""
    finite = np.isfinite(d)
    values = np.where(finite, d, 0.0)
    n = finite.sum(0).astype(float)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean = (signs @ values) / n
        var = ((values**2).sum(0) - n * mean**2) / (n - 1)
        return mean / np.sqrt(var / n)


def _sign_patterns(n, n_permutations, rng):
    """(signs (n_draws, n), exact): every ±1 pattern when 2**n <= n_permutations (an exact
    test, the identity included), else ``n_permutations`` random patterns."""
    if 2**n <= n_permutations:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        return 1.0 - 2.0 * codes, True
    return rng.choice([-1.0, 1.0], size=(n_permutations, n)), False


def _cluster_masses(t, threshold, tail):
    """(start, stop, mass) of supra-threshold runs of one t vector (signs kept apart)."""
    out = []
    for sign in (1, -1) if tail == 0 else (tail,):
        for start, stop in runs(np.nan_to_num(sign * t) > threshold):
            out.append((start, stop, float(np.nansum(t[start:stop]))))
    return sorted(out)


def _max_masses(t_perm, threshold, tail):
    """Largest |cluster mass| per permutation, vectorised over rows of t_perm."""
    masses = np.zeros(len(t_perm))
    for sign in (1, -1) if tail == 0 else (tail,):
        st = np.nan_to_num(sign * t_perm, posinf=1e12, neginf=-1e12)  # zero-variance samples
        above = st > threshold
        # cumulative sum restarting at every sub-threshold sample
        run_sum = np.zeros(len(t_perm))
        best = np.zeros(len(t_perm))
        for k in range(st.shape[1]):
            run_sum = np.where(above[:, k], run_sum + st[:, k], 0.0)
            best = np.maximum(best, run_sum)
        masses = np.maximum(masses, best)
    return masses


def cluster_permutation_test(
    a, b, n_permutations=1000, threshold=None, alpha=0.05, tail=0, seed=0, tpts=None, paired=False
):
    """Cluster-based permutation test of a difference between two sets of traces.

    Parameters
    ----------
    a : ndarray, shape (n_a, n_samples)
    b : ndarray, shape (n_b, n_samples)
        Independent units (e.g. trials of two conditions, or recording means of two
        groups). NaN samples are ignored.
    n_permutations : int
        Random relabellings of the pooled rows.
    threshold : float, optional
        Cluster-forming |t|; default the two-sided Student t quantile at ``alpha`` with
        n_a + n_b - 2 degrees of freedom.
    alpha : float
        Level for the default threshold and for ``significant``.
    tail : {0, 1, -1}
        0: clusters of either sign (a > b and a < b); 1: a > b only; -1: a < b only.
    seed : int
    tpts : ndarray, shape (n_samples,), optional
        Sample times (s) to report cluster bounds in seconds.
    paired : bool
        Rows of ``a`` and ``b`` are paired (same recording in two conditions): the
        statistic is the one-sample t of a - b (n - 1 degrees of freedom) and the
        permutations flip the sign of each pair's difference.

    Returns
    -------
    dict
        ``t`` (ndarray (n_samples,), Welch t of a - b), ``threshold``, ``clusters``
        (DataFrame: start, stop (sample indices, stop exclusive), t_start, t_stop (s),
        mass (summed t), p), ``significant`` (bool (n_samples,), samples in clusters with
        p < alpha) and ``null`` (max cluster mass per permutation). p = (1 + #{null >=
        |mass|}) / (1 + n_permutations); for paired data with 2**n <= n_permutations every
        sign pattern is used and p = #{null >= |mass|} / 2**n (exact; with n pairs the
        smallest two-sided p is 2 / 2**n, e.g. 0.0625 for 5 recordings).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n_a, n_b = len(a), len(b)
    rng = np.random.default_rng(seed)
    if threshold is None:
        q = 1 - alpha / 2 if tail == 0 else 1 - alpha
        threshold = float(stats.t.ppf(q, n_a - 1 if paired else n_a + n_b - 2))
    if paired:
        if a.shape != b.shape:
            raise ValueError(f'paired traces need equal shapes, got {a.shape} and {b.shape}')
        x = a - b
        t_obs = _paired_t(x, np.ones((1, n_a)))[0]
        signs, exact = _sign_patterns(n_a, n_permutations, rng)
        t_perm = _paired_t(x, signs)
    else:
        exact = False
        x = np.vstack([a, b])
        t_obs = _permuted_t(x, np.r_[np.ones(n_a), np.zeros(n_b)][None, :])[0]
        membership = np.zeros((n_permutations, n_a + n_b))
        order = np.argsort(rng.random((n_permutations, n_a + n_b)), axis=1)[:, :n_a]
        np.put_along_axis(membership, order, 1.0, axis=1)
        t_perm = _permuted_t(x, membership)
    null = _max_masses(t_perm, threshold, tail)
    tpts = np.arange(x.shape[1]) if tpts is None else np.asarray(tpts)
    rows = []
    for start, stop, mass in _cluster_masses(t_obs, threshold, tail):
        # equal masses count (the running sum of the null and nansum differ by rounding)
        n_ge = np.sum(null >= abs(mass) * (1 - 1e-9))
        p = n_ge / len(null) if exact else (1 + n_ge) / (1 + len(null))
        rows.append(
            {
                'start': start,
                'stop': stop,
                't_start': tpts[start],
                't_stop': tpts[stop - 1],
                'mass': mass,
                'p': float(p),
            }
        )
    clusters = pd.DataFrame(rows, columns=['start', 'stop', 't_start', 't_stop', 'mass', 'p'])
    return {
        't': t_obs,
        'threshold': threshold,
        'clusters': clusters,
        'significant': significant_samples(clusters, x.shape[1], alpha),
        'null': null,
    }


def significant_samples(clusters, n_samples, alpha=0.05):
    """Bool (n_samples,): samples inside clusters (``start``, ``stop`` exclusive) with p < alpha."""
    significant = np.zeros(n_samples, dtype=bool)
    for row in clusters.itertuples():
        significant[int(row.start) : int(row.stop)] |= row.p < alpha
    return significant
