"""Event-kernel regression: the continuous signal as a sum of time-lagged event responses.

Model (one recording, valid samples n only)::

    y(t_n) = b0 + sum_e sum_c sum_i w_c(i) k_ec(t_n - t_ei) + noise,
    k_ec(tau) = sum_j beta_ecj phi_j(tau),  tau in [lag0, lag1)

``e`` runs over events (stimOn, firstMovement, feedback), ``i`` over trials, ``c`` over
conditions with per-trial weights ``w_c(i)`` (effect coding: 'mean' = 1, 'contrast' = the
centred ln(c + 1), 'side' = +0.5 contra / -0.5 ipsi, 'reward' = +0.5 correct / -0.5 error;
'reward' only for feedback, ``config.KERNEL_CONDITIONS``),
so ``k_e,mean`` is the response of an average trial and ``k_e,reward`` the correct - error
difference, as in the mixed models. ``phi_j`` are linear B-splines (tents, knots every
0.1 s) evaluated at the exact event-to-sample delay (sub-sample alignment). Overlapping events (stimOn -> movement -> feedback within 0.2 s) are separated
because their delays vary from trial to trial.

The coefficients are penalised (second differences of each kernel's coefficients, plus a
small ridge) with a weight chosen by generalised cross-validation (GCV) on a log grid,
solved through one generalised eigendecomposition, so the GCV curve costs nothing extra.
The design is a ``scipy.sparse`` matrix; the normal equations are small (p ~ 430).
Standard errors: a block-robust (cluster) sandwich over 5 s blocks of samples: photometry
residuals are correlated in time (slow fluctuations, trial-to-trial amplitude changes), so
white-noise standard errors would be too small. Optionally (``ar_order``) the fit is
prewhitened by an AR model of the first fit's residuals (GLS); off by default.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import scipy.sparse as sparse

from iblnm import config

CONDITIONS = ('mean', 'contrast', 'side', 'reward')


def basis_centres(lags=config.KERNEL_LAGS, spacing=config.KERNEL_SPACING):
    """Centres (s) of the basis functions: lag0, lag0 + spacing, ..., lag1."""
    n = int(round((lags[1] - lags[0]) / spacing)) + 1
    return lags[0] + spacing * np.arange(n)


def tent_basis(tau, centres, spacing=config.KERNEL_SPACING):
    """Linear B-spline ("tent") basis at delays ``tau`` (s): shape tau.shape + (n_basis,).

    ``max(0, 1 - |tau - c| / spacing)``: a partition of unity between the first and the last
    centre, two non-zero functions at any delay (a sparse design), and a kernel that may
    rise abruptly at the event (the generator's kernels start with a kink at 0).
    """
    x = (np.asarray(tau, dtype=float)[..., None] - centres) / spacing
    phi = 1.0 - np.abs(x)
    return np.where(phi > 1e-9, phi, 0.0)  # rounding leaves no third, ~1e-16 non-zero


def condition_weights(trials, hemisphere=None, conditions=CONDITIONS):
    """Per-trial condition weights, shape (n_trials, n_conditions).

    Parameters
    ----------
    trials : pandas.DataFrame
        Columns ``contrast`` (%), ``stim_side`` ('left'/'right') and ``feedbackType``.
    hemisphere : {'l', 'r'} or None
        The side the fiber is lateral to (:func:`iblnm.recordings.laterality`); right stimuli
        are contralateral to a left fiber. None (a midline region, an unknown side): no
        trial is contra or ipsi, every 'side' weight is 0 (its kernel is not estimated).

    Returns
    -------
    ndarray
        'mean' 1; 'contrast' ln(c + 1) minus its mean over trials with a contrast;
        'side' +0.5 contra / -0.5 ipsi; 'reward' +0.5 correct / -0.5 error. Missing
        values weigh 0 (the trial still enters 'mean').
    """
    n = len(trials)
    out = {'mean': np.ones(n)}
    contrast = (
        trials['contrast'].to_numpy(dtype=float) if 'contrast' in trials else np.full(n, np.nan)
    )
    log_c = np.log1p(contrast)
    out['contrast'] = np.nan_to_num(
        log_c - np.nanmean(log_c) if np.isfinite(log_c).any() else log_c
    )
    side = trials['stim_side'].to_numpy(dtype=object) if 'stim_side' in trials else np.full(n, None)
    contra = {'l': 'right', 'r': 'left'}.get(hemisphere)
    lateral = pd_notna(side) & (contra is not None)
    out['side'] = np.select([lateral & (side == contra), lateral], [0.5, -0.5], 0.0)
    outcome = (
        trials['feedbackType'].to_numpy(dtype=float) if 'feedbackType' in trials else np.zeros(n)
    )
    out['reward'] = np.select([outcome == 1, outcome == -1], [0.5, -0.5], 0.0)
    return np.column_stack([out[c] for c in conditions])


def pd_notna(values):
    """Element-wise 'not None/NaN' for an object array."""
    return np.array([v is not None and v == v for v in values], dtype=bool)


def event_design(
    times,
    event_times,
    weights,
    lags=config.KERNEL_LAGS,
    spacing=config.KERNEL_SPACING,
    allowed=None,
    rows=None,
):
    """Sparse design matrix of time-lagged, condition-weighted event regressors.

    Parameters
    ----------
    times : ndarray, shape (n_times,)
        Sample times (s), increasing.
    event_times : list of ndarray, each shape (n_trials,)
        Event times (s) per event; NaN events contribute nothing.
    weights : ndarray, shape (n_trials, n_conditions)
        Condition weights (:func:`condition_weights`), shared by the events.
    lags, spacing : see :func:`basis_centres`.
    allowed : ndarray of bool, shape (n_events, n_conditions), optional
        Conditions modelled per event (default all); the others' columns stay empty.
    rows : ndarray of bool, shape (n_times,), optional
        Keep only these samples (e.g. the valid ones); the matrix then has ``rows.sum()``
        rows, in time order.

    Returns
    -------
    scipy.sparse.csc_matrix, shape (n_rows, n_events * n_conditions * n_basis)
        Column ``(e * n_conditions + c) * n_basis + j`` holds sum_i w_c(i) phi_j(t - t_ei)
        over samples with t - t_ei in [lag0, lag1); phi_j are the tents of
        :func:`tent_basis` (two non-zero per sample and event, computed directly).
    """
    times = np.asarray(times, dtype=float)
    centres = basis_centres(lags, spacing)
    n_basis, n_cond = len(centres), weights.shape[1]
    fs = 1.0 / np.median(np.diff(times))
    n_lag = int(np.ceil((lags[1] - lags[0]) * fs)) + 2
    keep_rows = np.ones(len(times), bool) if rows is None else np.asarray(rows, bool)
    new_index = np.cumsum(keep_rows) - 1
    out_r, out_c, out_v = [], [], []
    for e, t_event in enumerate(event_times):
        t_event = np.asarray(t_event, dtype=float)
        ok = np.isfinite(t_event)
        t_ok, w_ok = t_event[ok], weights[ok]
        start = np.searchsorted(times, t_ok + lags[0], side='left')
        idx = start[:, None] + np.arange(n_lag)[None, :]  # (trial, lag sample)
        inside = idx < len(times)
        idx = np.minimum(idx, len(times) - 1)
        tau = times[idx] - t_ok[:, None]
        inside &= (tau >= lags[0]) & (tau < lags[1]) & keep_rows[idx]
        trial, lag = np.nonzero(inside)
        pos = (tau[trial, lag] - centres[0]) / spacing
        j0 = np.minimum(np.floor(pos).astype(np.int64), n_basis - 2)
        frac = pos - j0
        row = new_index[idx[trial, lag]]
        for c in range(n_cond):
            if allowed is not None and not allowed[e, c]:
                continue
            w = w_ok[trial, c]
            nz = w != 0
            base = (e * n_cond + c) * n_basis
            out_r += [row[nz], row[nz]]
            out_c += [base + j0[nz], base + j0[nz] + 1]
            out_v += [w[nz] * (1 - frac[nz]), w[nz] * frac[nz]]
    shape = (int(keep_rows.sum()), len(event_times) * n_cond * n_basis)
    if not out_r:
        return sparse.csc_matrix(shape)
    return sparse.csc_matrix(
        (np.concatenate(out_v), (np.concatenate(out_r), np.concatenate(out_c))), shape=shape
    )


def difference_penalty(n_blocks, n_basis, ridge=config.KERNEL_RIDGE):
    """Block-diagonal penalty: second differences within each kernel + ``ridge`` * I."""
    d2 = np.diff(np.eye(n_basis), n=2, axis=0)
    block = d2.T @ d2 + ridge * np.eye(n_basis)
    return scipy.linalg.block_diag(*([block] * n_blocks)) if n_blocks else np.zeros((0, 0))


def gram(X, dense_above=0.1, chunk=4096):
    """``X' X`` as a dense array, shape (p, p), for a sparse ``X`` of shape (n, p).

    Sparse-sparse products cost ~ sum over rows of nnz_row^2 with hashing overhead; above
    a density of ``dense_above`` (e.g. a prewhitened design: 23 % non-zero, measured 3.9 s
    vs 0.9 s for a 39 min recording) the product is taken over dense row chunks with BLAS
    (``syrk``), whose cost n p^2 does not depend on the density.
    """
    n, p = X.shape
    if n * p == 0 or X.nnz <= dense_above * n * p:
        return (X.T @ X).toarray()
    X = X.tocsr()
    upper = np.zeros((p, p), order='F')
    for start in range(0, n, chunk):
        block_t = X[start : start + chunk].toarray().T  # (p, rows), Fortran order: no copy
        upper = scipy.linalg.blas.dsyrk(1.0, block_t, beta=1.0, c=upper, overwrite_c=1)
    return np.triu(upper) + np.triu(upper, 1).T


@dataclass
class PenalisedFit:
    """Result of :func:`fit_penalised` (coefficients without the intercept first)."""

    beta: np.ndarray
    cov: np.ndarray
    intercept: float
    lam: float
    df: float
    gcv: np.ndarray
    lambdas: np.ndarray
    sigma2: float
    ar1: float
    r2: float
    n_samples: int
    fitted: np.ndarray = field(repr=False, default=None)
    ar: np.ndarray = field(default_factory=lambda: np.zeros(0))


def fit_penalised(X, y, penalty, lambdas=None, times=None, block_s=config.KERNEL_SE_BLOCK_S):
    """Penalised least squares with an unpenalised intercept; weight chosen by GCV.

    Parameters
    ----------
    X : scipy.sparse matrix, shape (n, p)
        Design of the n valid samples.
    y : ndarray, shape (n,)
        Finite values.
    penalty : ndarray, shape (p, p)
        Positive definite (difference penalty + ridge).
    lambdas : ndarray, optional
        Penalty weights tried, relative to trace(X'X) / trace(penalty); default
        10^-6 ... 10^0 (25 values).
    times : ndarray, shape (n,), optional
        Sample times (s) defining the blocks of the robust covariance (``block_s`` long);
        default one block per 150 samples.

    Returns
    -------
    PenalisedFit
        ``gcv`` (n * RSS / (n - df)^2) over ``lambdas`` (absolute); ``cov`` the covariance
        of ``beta``: a block-robust (cluster) sandwich, valid when the residuals are
        correlated over less than a block; ``ar1`` the residuals' lag-1 autocorrelation
        (across gaps too); ``fitted`` X beta + intercept.
    """
    X = X if sparse.issparse(X) else sparse.csr_matrix(X)
    y = np.asarray(y, dtype=float)
    n = len(y)
    col_mean = np.asarray(X.mean(axis=0)).ravel()
    A = gram(X) - n * np.outer(col_mean, col_mean)
    ym = y.mean()
    b = X.T @ (y - ym)
    yy = float(np.sum((y - ym) ** 2))
    active = np.diag(A) > 1e-12 * max(np.max(np.diag(A)), 1e-300)  # columns with data
    p = len(A)
    beta = np.full(p, np.nan)
    cov = np.full((p, p), np.nan)
    Aa, Pa, ba = A[np.ix_(active, active)], penalty[np.ix_(active, active)], b[active]
    scale = np.trace(Aa) / max(np.trace(Pa), 1e-300)
    rel = np.logspace(-6, 0, 25) if lambdas is None else np.asarray(lambdas, dtype=float)
    lam_grid = rel * scale
    # generalised eigenproblem P v = mu A v (A made definite by a tiny jitter)
    jitter = 1e-10 * np.trace(Aa) / max(len(Aa), 1)
    mu, V = scipy.linalg.eigh(Pa, Aa + jitter * np.eye(len(Aa)))
    z = V.T @ ba
    shrink = 1.0 / (1.0 + lam_grid[:, None] * mu[None, :])  # (n_lambda, p_active)
    df = shrink.sum(axis=1) + 1  # + intercept
    rss = yy - 2 * (shrink * z**2).sum(axis=1) + ((shrink * z) ** 2).sum(axis=1)
    gcv = n * rss / np.maximum(n - df, 1) ** 2
    best = int(np.argmin(gcv))
    coef = V @ (shrink[best] * z)
    beta[active] = coef
    intercept = ym - col_mean[active] @ coef
    fitted = X @ np.nan_to_num(beta) + intercept
    resid = y - fitted
    sigma2 = float(resid @ resid / max(n - df[best], 1))
    ar1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1]) if n > 3 else 0.0
    # block-robust sandwich: M S M with M = (A + lam P)^-1 and S = sum over blocks of
    # g_b g_b', g_b = sum_{t in b} (x_t - mean) r_t (residuals correlated within a block)
    if times is None:
        block = np.arange(n) // 150
    else:
        block = np.floor((np.asarray(times) - times[0]) / block_s).astype(np.int64)
    n_blocks = int(block[-1]) + 1
    Xc = X.tocoo()
    col_index = np.cumsum(active) - 1  # column -> index among the active columns
    on = active[Xc.col]
    row, col, data = Xc.row[on], col_index[Xc.col[on]], Xc.data[on]
    n_active = int(active.sum())
    key = block[row] * n_active + col
    G = np.bincount(key, weights=data * resid[row], minlength=n_blocks * n_active)
    G = G.reshape(n_blocks, n_active)
    G -= np.outer(np.bincount(block, weights=resid, minlength=n_blocks), col_mean[active])
    M = (V * shrink[best]) @ V.T
    cov[np.ix_(active, active)] = M @ (G.T @ G) @ M * n / max(n - df[best], 1)
    return PenalisedFit(
        beta=beta,
        cov=cov,
        intercept=float(intercept),
        lam=float(lam_grid[best]),
        df=float(df[best]),
        gcv=gcv,
        lambdas=lam_grid,
        sigma2=sigma2,
        ar1=ar1,
        r2=float(1 - rss[best] / yy) if yy > 0 else np.nan,
        n_samples=n,
        fitted=fitted,
    )


def ar_coefficients(resid, max_order=config.KERNEL_AR_MAX_ORDER):
    """AR(p) coefficients of residuals with gaps, the order p chosen by BIC.

    Parameters
    ----------
    resid : ndarray, shape (n_times,)
        Residuals on the uniform sample grid; NaN where a sample is not in the fit (gaps).
    max_order : int
        Largest order tried (samples).

    Returns
    -------
    ndarray, shape (p,)
        ``a`` of ``r_t = sum_k a_k r_{t-k} + e_t`` (Yule-Walker from the autocovariances
        pooled over the pairs of valid samples, Levinson-Durbin for every order at once;
        ``p`` minimises ``n ln sigma_p^2 + p ln n``). Empty for white residuals.
    """
    from statsmodels.tsa.stattools import levinson_durbin

    r = np.asarray(resid, dtype=float)
    ok = np.isfinite(r)
    n = int(ok.sum())
    max_order = int(min(max_order, max(n // 10, 0)))
    if max_order < 1:
        return np.zeros(0)
    x = np.where(ok, r - np.nanmean(r), 0.0)
    acov = np.array(
        [
            x[k:] @ x[: len(x) - k] / max((ok[k:] & ok[: len(x) - k]).sum(), 1)
            for k in range(max_order + 1)
        ]
    )
    if acov[0] <= 0:
        return np.zeros(0)
    res = levinson_durbin(acov, nlags=max_order, isacov=True)
    # innovation variance per order 0..max_order: acov[0] * prod(1 - pacf_k^2)
    pacf = np.asarray(res.pacf)[1:]
    sigma = acov[0] * np.concatenate([[1.0], np.cumprod(1 - pacf**2)])
    bic = n * np.log(np.maximum(sigma, 1e-300)) + np.arange(max_order + 1) * np.log(n)
    order = int(np.argmin(bic))
    if order == 0:
        return np.zeros(0)
    return np.asarray(res.phi)[1 : order + 1, order].copy()


def whitening_matrix(valid, ar):
    """Sparse AR prediction-error filter over the valid samples.

    Parameters
    ----------
    valid : ndarray of bool, shape (n_times,)
        Samples in the fit (uniform grid).
    ar : ndarray, shape (p,)
        :func:`ar_coefficients`.

    Returns
    -------
    L : scipy.sparse.csr_matrix, shape (n_rows, valid.sum())
        ``(L y)_t = y_t - sum_k a_k y_{t-k}`` for the valid samples ``t`` whose ``p``
        predecessors are valid too (the first ``p`` samples after a gap are dropped).
    rows : ndarray of int, shape (n_rows,)
        Those samples, as indices into the valid samples.
    """
    valid = np.asarray(valid, bool)
    p = len(ar)
    run = np.convolve(valid.astype(int), np.ones(p + 1, int))[: len(valid)]
    keep = valid & (run == p + 1)  # t and its p predecessors valid
    keep[:p] = False
    compact = np.cumsum(valid) - 1
    t = np.flatnonzero(keep)
    cols = [compact[t]] + [compact[t - k] for k in range(1, p + 1)]
    vals = [np.ones(len(t))] + [np.full(len(t), -a) for a in ar]
    row = np.tile(np.arange(len(t)), p + 1)
    L = sparse.csr_matrix(
        (np.concatenate(vals), (row, np.concatenate(cols))), shape=(len(t), int(valid.sum()))
    )
    return L, compact[t]


@dataclass
class KernelFit:
    """Kernels of one recording.

    Attributes
    ----------
    kernels, se : ndarray, shape (n_events, n_conditions, n_lags)
        Kernel values and standard errors (signal units) at ``lags``.
    lags : ndarray, shape (n_lags,)
        Delays from the event (s), the signal's sample grid (k / fs).
    events, conditions : list of str
    contributions : ndarray, shape (n_events, n_times)
        Each event's fitted part of the signal (all conditions; NaN on invalid samples).
    fit : PenalisedFit
    """

    kernels: np.ndarray
    se: np.ndarray
    lags: np.ndarray
    events: list
    conditions: list
    contributions: np.ndarray = field(repr=False)
    fit: PenalisedFit = field(repr=False)


def fit_event_kernels(
    times,
    values,
    event_times,
    weights,
    events=None,
    conditions=CONDITIONS,
    lags=config.KERNEL_LAGS,
    spacing=config.KERNEL_SPACING,
    ridge=config.KERNEL_RIDGE,
    lambdas=None,
    event_conditions=config.KERNEL_CONDITIONS,
    ar_order=config.KERNEL_AR_MAX_ORDER,
):
    """Fit the event kernels of one continuous signal.

    Parameters
    ----------
    times : ndarray, shape (n_times,)
        Sample times (s), uniform grid (e.g. the 30 Hz preprocessed signal).
    values : ndarray, shape (n_times,)
        Signal; NaN samples (masked artefacts) are left out of the fit.
    event_times : list of ndarray, each shape (n_trials,)
    weights : ndarray, shape (n_trials, n_conditions)
        :func:`condition_weights`.
    events, conditions : list of str
        Names (default ``event0``, ... and :data:`CONDITIONS`).
    lags : (float, float)
        Kernel support (s), default ``config.KERNEL_LAGS`` (-0.5, 3).
    spacing : float
        Knot spacing of the tent basis (s), default ``config.KERNEL_SPACING`` (0.1).
    ridge : float
        Ridge part of the penalty, relative to the difference penalty.
    lambdas : ndarray, optional
        Relative penalty grid for GCV (see :func:`fit_penalised`).
    event_conditions : dict, optional
        ``{event: conditions}`` modelled for that event (default
        ``config.KERNEL_CONDITIONS``: the outcome ('reward') only at feedback, where it is
        revealed; a movement-locked outcome kernel would be nearly collinear with the
        feedback one 0.15 s later). Events not listed get every condition; kernels of the
        conditions left out are NaN.
    ar_order : int
        Prewhitening (feasible generalised least squares): the residuals of a first fit
        get an AR model (:func:`ar_coefficients`, order by BIC up to ``ar_order``
        samples), and the kernels are refitted on the signal and design filtered by it
        (:func:`whitening_matrix`). 0 (default, ``config.KERNEL_AR_MAX_ORDER``): one
        penalised least-squares fit. Prewhitening lowers the variance on signals with a
        white-noise floor but is biased on smooth or low-passed ones (the 3 Hz
        preprocessing output; docs/methods.md §4.4).

    Returns
    -------
    KernelFit
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    events = list(events or [f'event{i}' for i in range(len(event_times))])
    weights = np.array(weights, dtype=float)
    constant = np.ptp(weights, axis=0) == 0
    constant[np.argmax(constant)] = False  # the first constant column ('mean') is the response
    weights[:, constant] = 0.0  # e.g. 'reward' without error trials: not estimable -> NaN
    centres = basis_centres(lags, spacing)
    n_basis, n_cond, n_ev = len(centres), weights.shape[1], len(event_times)
    event_conditions = event_conditions or {}
    allowed = np.array(
        [[c in event_conditions.get(e, conditions) for c in conditions] for e in events]
    )
    valid = np.isfinite(values)
    X = event_design(times, event_times, weights, lags, spacing, allowed=allowed, rows=valid)
    penalty = difference_penalty(n_ev * n_cond, n_basis, ridge)
    y = values[valid]
    fit = fit_penalised(X, y, penalty, lambdas, times=times[valid])
    if ar_order:
        fit = _prewhitened_fit(X, y, penalty, lambdas, times, valid, fit, ar_order)
    fs = round(1.0 / np.median(np.diff(times)))
    lag_grid = np.arange(int(np.round(lags[0] * fs)), int(np.round(lags[1] * fs))) / fs
    B = tent_basis(lag_grid, centres, spacing)  # (n_lags, n_basis)
    kernels = np.full((n_ev, n_cond, len(lag_grid)), np.nan)
    se = np.full_like(kernels, np.nan)
    contributions = np.full((n_ev, len(times)), np.nan)
    for e in range(n_ev):
        cols = slice(e * n_cond * n_basis, (e + 1) * n_cond * n_basis)
        contributions[e, valid] = X[:, cols] @ np.nan_to_num(fit.beta[cols])
        for c in range(n_cond):
            block = slice((e * n_cond + c) * n_basis, (e * n_cond + c + 1) * n_basis)
            kernels[e, c] = B @ fit.beta[block]
            se[e, c] = np.sqrt(np.einsum('lj,jk,lk->l', B, fit.cov[block, block], B))
    return KernelFit(
        kernels=kernels,
        se=se,
        lags=lag_grid,
        events=events,
        conditions=list(conditions),
        contributions=contributions,
        fit=fit,
    )


def _prewhitened_fit(X, y, penalty, lambdas, times, valid, fit, ar_order):
    """Refit on the AR-filtered signal and design; statistics back on the original scale."""
    resid = np.full(len(times), np.nan)
    resid[valid] = y - fit.fitted
    ar = ar_coefficients(resid, ar_order)
    if len(ar) == 0:
        return fit
    L, rows = whitening_matrix(valid, ar)
    if len(rows) < X.shape[1] + 2:
        return fit
    wfit = fit_penalised(L @ X, L @ y, penalty, lambdas, times=times[valid][rows])
    gain = 1.0 - ar.sum()  # the intercept column after the filter
    intercept = wfit.intercept / gain if abs(gain) > 1e-6 else fit.intercept
    fitted = X @ np.nan_to_num(wfit.beta) + intercept
    r = y - fitted
    yy = float(np.sum((y - y.mean()) ** 2))
    return replace(
        wfit,
        intercept=float(intercept),
        fitted=fitted,
        n_samples=len(y),
        ar=ar,
        r2=float(1 - r @ r / yy) if yy > 0 else np.nan,
        ar1=float(np.corrcoef(r[:-1], r[1:])[0, 1]) if len(r) > 3 else 0.0,
    )


def kernel_amplitude(kernels, lags, window=config.KERNEL_AMPLITUDE_WINDOW):
    """Mean kernel value over a window of lags (s): shape kernels.shape[:-1]."""
    sel = (lags >= window[0] - 1e-9) & (lags < window[1] - 1e-9)
    return np.nanmean(np.asarray(kernels)[..., sel], axis=-1)
