"""Functional linear mixed models (FLMM) of peri-event responses by fast univariate inference.

Model, at every time point ``s`` of a response window (Cui et al. 2022, J Comput Graph Stat
31:219; Loewinger et al. 2024, eLife 95802)::

    y_j(s) = x_j' β(s) + z_j' b_g(s) [+ c_h(s)] + e_j(s)

for trial ``j`` of subject ``g`` (and session ``h`` nested in ``g``): ``β(s)`` are the
fixed-effect coefficient functions (a patsy formula over trial covariates), ``b_g(s)``
subject random effects (intercept, optionally slopes, ``re_formula``), ``c_h(s)`` an
optional session random intercept and ``e_j(s)`` the trial residual.

Fast univariate inference, three steps:

1. **Raw fits.** A mixed model is fitted separately at every time point by REML. Random
   intercept models use an exact vectorised REML (one variance ratio per time point, all
   time points at once, from group sufficient statistics); subject random slopes and a
   session intercept nested in the subject also use exact REML from subject (session)
   sums, optimised per time point; nested sessions with random slopes are fitted with
   statsmodels ``MixedLM`` per time point, in parallel (joblib). All give the
   same estimates as ``statsmodels.formula.api.mixedlm`` (tested to 1e-6). NaN samples
   (e.g. masked after the next event) leave that trial out at that time point only.
2. **Smoothing.** Each raw coefficient function is smoothed across time with a penalised
   B-spline (cubic P-spline, second-order difference penalty, Eilers & Marx 1996); the
   smoothing parameter minimises generalised cross-validation (GCV). The smoothed estimate
   is linear in the raw one: ``β̂ = S β̃``.
3. **Bands.** ``Var(β̂) = S Σ S'`` with ``Σ`` the covariance of the raw estimates between
   time points. Its diagonal is the model-based (GLS) variance at each time point; its
   correlation comes from a method-of-moments (MoM) estimate of every variance component's
   covariance between time points (subject random effects, session intercepts and the
   trial residual, so that residuals autocorrelated within a trial are accounted for) pushed
   through the GLS weights of every trial (a sandwich). Pointwise 95 % intervals are
   ``β̂ ± 1.96 σ̂``; the joint (simultaneous) band is ``β̂ ± q σ̂`` with ``q`` the 95 %
   quantile of ``max_s |Z(s)| / σ̂(s)``, ``Z ~ N(0, S Σ S')`` simulated. Optionally, a
   subject-level (cluster) bootstrap replaces ``S Σ S'`` by the covariance of the smoothed
   estimates over resampled subjects and ``q`` by the bootstrap quantile of the max |t|.

Pure statistics: arrays and tables in, an xarray Dataset and a table of intervals out.
See docs/methods.md ("Functional linear mixed models") for the choices and their checks.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy import sparse, stats
from scipy.interpolate import BSpline

from iblnm.analysis.waveforms import runs

N_SIM = 10000  # multivariate normal draws for the joint quantile
MIN_TIMES_TO_SMOOTH = 8  # fewer time points: raw estimates only
GCV_LAMBDAS = np.logspace(-6, 6, 49)  # smoothing parameters searched (relative to the basis)


@dataclass
class FLMMResult:
    """What :func:`fit_flmm` returns.

    Attributes
    ----------
    dataset : xarray.Dataset
        Dims ``term`` x ``time``. Variables: ``estimate`` (smoothed), ``se`` (its pointwise
        SE), ``ci_lower``/``ci_upper`` (pointwise 95 %), ``joint_lower``/``joint_upper``
        (joint 95 % band), ``p`` (pointwise, two-sided normal), ``p_joint`` (family-wise:
        P(max |Z| >= |t(s)|)), ``significant`` (joint band excludes 0), ``raw`` and
        ``raw_se`` (unsmoothed per-time-point fits), ``n_obs`` (time); per term
        ``q_joint`` (joint critical value) and ``smoothing`` (GCV λ). Attrs: formula,
        inference, n_subjects, n_trials.
    intervals : pandas.DataFrame
        One row per run of time points where the joint band excludes zero: term, start,
        stop (indices, stop exclusive), t_start, t_stop (s), sign (+1/-1), peak (estimate
        of largest magnitude) and its time t_peak (s), p_joint (smallest).
    covariance : dict
        term -> (n_times, n_times) covariance of the smoothed estimate used for the bands.
    """

    dataset: xr.Dataset
    intervals: pd.DataFrame
    covariance: dict = field(default_factory=dict)

    def __iter__(self):
        """``dataset, intervals = fit_flmm(...)``."""
        yield self.dataset
        yield self.intervals


INTERVAL_COLUMNS = [
    'term',
    'start',
    'stop',
    't_start',
    't_stop',
    'sign',
    'peak',
    't_peak',
    'p_joint',
]


# ---------------------------------------------------------------------------
# Design: fixed effects, groupings and variance components
# ---------------------------------------------------------------------------
@dataclass
class _Component:
    """One variance component: M = sum over ``pairs`` (x, y) of Z_x Z_y' (block diagonal).

    ``cells`` (n_obs,) codes the grouping the component lives in (subject, session, or one
    cell per observation for the residual); ``pairs`` hold (n_obs,) weight vectors.
    """

    name: str
    cells: np.ndarray
    n_cells: int
    pairs: list
    level: int  # 0 subject, 1 session, 2 observation (finer = larger)


@dataclass
class _Design:
    X: np.ndarray  # (n_obs, p)
    terms: list
    subject: np.ndarray  # (n_obs,) codes 0..G-1
    session: np.ndarray | None  # (n_obs,) codes, nested in subject
    Zre: np.ndarray  # (n_obs, q) subject random-effect design
    re_names: list
    components: list


def _codes(values):
    return pd.factorize(pd.Series(values).astype(str), sort=True)[0]


def _build_design(data, formula, groups, re_formula, nested):
    import patsy

    rhs = formula.split('~', 1)[1] if '~' in formula else formula
    X = patsy.dmatrix(rhs, data, return_type='dataframe', NA_action='raise')
    Zre = patsy.dmatrix(re_formula, data, return_type='dataframe', NA_action='raise')
    subject = _codes(data[groups])
    session = None
    if nested is not None:
        session = _codes(data[groups].astype(str) + '\x00' + data[nested].astype(str))
    n = len(data)
    obs = np.arange(n)
    ones = np.ones(n)
    comps = []
    zre = Zre.to_numpy(dtype=float)
    names = list(Zre.columns)
    for a in range(len(names)):
        for b in range(a, len(names)):
            pairs = (
                [(zre[:, a], zre[:, b])]
                if a == b
                else [(zre[:, a], zre[:, b]), (zre[:, b], zre[:, a])]
            )
            comps.append(
                _Component(f'{groups}:{names[a]}:{names[b]}', subject, subject.max() + 1, pairs, 0)
            )
    if session is not None:
        comps.append(
            _Component(f'{nested}:Intercept', session, session.max() + 1, [(ones, ones)], 1)
        )
    comps.append(_Component('residual', obs, n, [(ones, ones)], 2))
    return _Design(X.to_numpy(dtype=float), list(X.columns), subject, session, zre, names, comps)


def _cell_sums(cells, n_cells, values):
    """Sum the rows of ``values`` (n_obs, ...) within cells -> (n_cells, ...)."""
    if n_cells == len(cells) and np.array_equal(cells, np.arange(len(cells))):
        return values
    shape = values.shape
    flat = values.reshape(shape[0], -1)
    op = sparse.csr_matrix(
        (np.ones(len(cells)), (cells, np.arange(len(cells)))), shape=(n_cells, len(cells))
    )
    return np.asarray(op @ flat).reshape((n_cells, *shape[1:]))


def _quad(comp, U):
    """U(s1)' M U(s2) for every pair of time points: (n_times, n_times); U is (n_obs, n_times)."""
    out = 0.0
    for zx, zy in comp.pairs:
        px = _cell_sums(comp.cells, comp.n_cells, U * zx[:, None])
        py = px if zy is zx else _cell_sums(comp.cells, comp.n_cells, U * zy[:, None])
        out = out + px.T @ py
    return out


def _moment_matrix(components, mask):
    """C[s1, s2, k, l] = tr(D1 M_k D2 M_l), D = diag(observed at s): (L, L, K, K).

    tr(D1 Zx Zy' D2 Zu Zv') sums, over the cells of the finer of the two (nested)
    groupings, (Σ_j m1_j zx_j zv_j)(Σ_j' m2_j' zy_j' zu_j').
    """
    n_times = mask.shape[1]
    n_comp = len(components)
    out = np.zeros((n_times, n_times, n_comp, n_comp))
    for k, ck in enumerate(components):
        for ell in range(k, n_comp):
            cl = components[ell]
            fine = ck if ck.level >= cl.level else cl
            total = 0.0
            for zx, zy in ck.pairs:
                for zu, zv in cl.pairs:
                    s1 = _cell_sums(fine.cells, fine.n_cells, mask * (zx * zv)[:, None])
                    s2 = _cell_sums(fine.cells, fine.n_cells, mask * (zy * zu)[:, None])
                    total = total + s1.T @ s2
            out[:, :, k, ell] = total
            out[:, :, ell, k] = total.T if ell != k else total
    return out


# ---------------------------------------------------------------------------
# Step 1: raw fits at every time point
# ---------------------------------------------------------------------------
def _golden_min(fun, lo, hi, n_iter=80):
    """Vectorised golden-section minimisation of fun (L,) -> (L,) on brackets [lo, hi]."""
    ratio = (np.sqrt(5) - 1) / 2
    a, b = lo.copy(), hi.copy()
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = fun(c), fun(d)
    for _ in range(n_iter):
        left = fc < fd
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        d_new = np.where(left, c, a + ratio * (b - a))
        c_new = np.where(left, b - ratio * (b - a), d)
        c, d = c_new, d_new
        f_new = fun(np.where(left, c, d))
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
    return (a + b) / 2


def _fit_random_intercept(Y, design, reml=True, influence=True):
    """Exact REML (or ML) of y(s) ~ X + (1 | subject) at every time point, vectorised.

    With V_g = σ²(I + γ J) the profiled criterion depends on the data only through
    per-subject sums (X'1, y'1, n_g) and global cross-products, for every time point.
    """
    X, g = design.X, design.subject
    n_groups = g.max() + 1
    p = X.shape[1]
    m = np.isfinite(Y)
    y0 = np.where(m, Y, 0.0)
    mf = m.astype(float)
    xtx = np.einsum('np,nq,nl->lpq', X, X, mf, optimize=True)
    xm = mf[:, :, None] * X[:, None, :]  # (n, L, p)
    sg = _cell_sums(g, n_groups, xm)  # (G, L, p)
    del xm
    ng = _cell_sums(g, n_groups, mf)  # (G, L)
    xty = np.einsum('np,nl->lp', X, y0, optimize=True)
    yg = _cell_sums(g, n_groups, y0)
    yty = (y0**2).sum(0)
    nobs = mf.sum(0)
    dof = nobs - p if reml else nobs

    def parts(loggam):
        gam = np.exp(loggam)
        w = gam / (1 + ng * gam)  # (G, L)
        a = xtx - np.einsum('gl,glp,glq->lpq', w, sg, sg, optimize=True)
        b = xty - np.einsum('gl,glp,gl->lp', w, sg, yg, optimize=True)
        c = yty - (w * yg**2).sum(0)
        beta = np.linalg.solve(a, b[..., None])[..., 0]
        rss = np.maximum(c - (b * beta).sum(1), 1e-300)
        return gam, w, a, beta, rss

    def objective(loggam):
        gam, _, a, _, rss = parts(loggam)
        obj = dof * np.log(rss / dof) + np.log1p(ng * gam).sum(0)
        if reml:
            obj = obj + np.linalg.slogdet(a)[1]
        return obj

    grid = np.linspace(-14, 8, 45)
    values = np.stack([objective(np.full(Y.shape[1], v)) for v in grid])
    best = np.argmin(values, axis=0)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, len(grid) - 1)]
    loggam = _golden_min(objective, lo, hi)
    gam, w, a, beta, rss = parts(loggam)
    scale = rss / dof  # REML: RSS / (n - p); ML: RSS / n
    ainv = np.linalg.inv(a)
    cov = scale[:, None, None] * ainv
    out = {'beta': beta, 'cov': cov, 'theta': np.stack([gam * scale, scale]), 'nobs': nobs}
    if influence:
        # β̃(s) = A⁻¹ Σ_j (x_j − w_g s_g) y_j: the weight vector of every trial
        xw = X[:, None, :] - w[g][:, :, None] * sg[g]  # (n, L, p)
        out['influence'] = np.einsum('lpq,nlq->pnl', ainv, xw, optimize=True) * mf[None]
    return out


def _tri_to_chol(params, q):
    chol = np.zeros((q, q))
    chol[np.tril_indices(q)] = params
    return chol


def _fit_subject_effects(Y, design, reml=True, influence=True):
    """Exact REML (or ML) of y(s) ~ X + (Z | subject) at every time point.

    Per time point, the profiled criterion in the relative covariance Λ = Ψ/σ² = LL'
    (Cholesky factor L, q(q+1)/2 parameters) is computed from per-subject sums Z'Z, Z'X,
    Z'y: V*_g⁻¹ = I − Z_g (I + Λ Z_g'Z_g)⁻¹ Λ Z_g', log|V*_g| = log|I + Λ Z_g'Z_g|. It is
    minimised by BFGS, started at the previous time point's optimum.
    """
    from scipy.optimize import minimize

    X, Z, g = design.X, design.Zre, design.subject
    n_groups = g.max() + 1
    n_obs, p = X.shape
    q = Z.shape[1]
    n_times = Y.shape[1]
    m = np.isfinite(Y)
    zx = (Z[:, :, None] * X[:, None, :]).reshape(n_obs, q * p)
    zz = (Z[:, :, None] * Z[:, None, :]).reshape(n_obs, q * q)
    beta = np.full((n_times, p), np.nan)
    cov = np.full((n_times, p, p), np.nan)
    n_comp = q * (q + 1) // 2 + 1
    theta = np.full((n_comp, n_times), np.nan)
    infl = np.zeros((p, n_obs, n_times)) if influence else None
    start = np.eye(q)[np.tril_indices(q)] * 0.5
    for s in range(n_times):
        rows = np.flatnonzero(m[:, s])
        if len(rows) <= p + 1:
            continue
        y, gs = Y[rows, s], g[rows]
        xtx, xty, yty = X[rows].T @ X[rows], X[rows].T @ y, y @ y
        ztz = _cell_sums(gs, n_groups, zz[rows]).reshape(n_groups, q, q)
        ztx = _cell_sums(gs, n_groups, zx[rows]).reshape(n_groups, q, p)
        zty = _cell_sums(gs, n_groups, Z[rows] * y[:, None])  # (G, q)
        dof = len(rows) - p if reml else len(rows)

        def parts(params, ztz=ztz, ztx=ztx, zty=zty, xtx=xtx, xty=xty, yty=yty):
            chol = _tri_to_chol(params, q)
            lam = chol @ chol.T
            inner = np.eye(q)[None] + lam[None] @ ztz  # (G, q, q)
            mg = np.linalg.solve(inner, np.broadcast_to(lam, inner.shape))  # (I + ΛZ'Z)⁻¹Λ
            mx = mg @ ztx  # (G, q, p)
            a = xtx - np.einsum('gqp,gqr->pr', ztx, mx)
            b = xty - np.einsum('gqp,gq->p', mx, zty)
            c = yty - np.einsum('gq,gqr,gr->', zty, mg, zty)
            return a, b, c, mg, inner

        def objective(params, parts=parts, dof=dof):
            a, b, c, _, inner = parts(params)
            sign, logdet_a = np.linalg.slogdet(a)
            beta_s = np.linalg.solve(a, b)
            rss = max(c - b @ beta_s, 1e-300)
            obj = dof * np.log(rss / dof) + np.linalg.slogdet(inner)[1].sum()
            return obj + logdet_a if reml else obj

        fit = minimize(objective, start, method='BFGS', options={'gtol': 1e-6})
        start = fit.x
        a, b, c, mg, _ = parts(fit.x)
        ainv = np.linalg.inv(a)
        beta[s] = ainv @ b
        sigma2 = (c - b @ beta[s]) / dof
        cov[s] = sigma2 * ainv
        chol = _tri_to_chol(fit.x, q)
        psi = sigma2 * chol @ chol.T
        theta[:-1, s] = psi[np.triu_indices(q)] if q > 1 else psi.ravel()
        theta[-1, s] = sigma2
        if influence:
            # β̃ = A⁻¹ Σ_j (x_j − X_g'Z_g M_g z_j) y_j
            corr = np.einsum('nq,nqp->np', Z[rows], (mg @ ztx)[gs])
            infl[:, rows, s] = ainv @ (X[rows] - corr).T
    return {
        'beta': beta,
        'cov': cov,
        'theta': theta,
        'nobs': m.sum(0).astype(float),
        'influence': infl,
    }


def _newton_min2(fun, start, lo, hi, n_iter=60, h=1e-3):
    """Vectorised bounded minimisation of fun (L, 2) -> (L,), one problem per row.

    Damped Newton with central-difference gradient and Hessian (9 evaluations of ``fun``
    per step for all rows at once), the Hessian's eigenvalues made positive, coordinates at
    a bound with the gradient pointing out held fixed (projected Newton), and step halving
    until the criterion does not increase.
    """
    x = np.clip(np.array(start, dtype=float), lo, hi)
    fx = fun(x)
    e = np.eye(2) * h
    for _ in range(n_iter):
        fp = np.stack([fun(x + e[k]) for k in range(2)], 1)
        fm = np.stack([fun(x - e[k]) for k in range(2)], 1)
        grad = (fp - fm) / (2 * h)
        hess = np.empty((len(x), 2, 2))
        hess[:, 0, 0] = (fp[:, 0] - 2 * fx + fm[:, 0]) / h**2
        hess[:, 1, 1] = (fp[:, 1] - 2 * fx + fm[:, 1]) / h**2
        cross = (
            fun(x + e[0] + e[1])
            - fun(x + e[0] - e[1])
            - fun(x - e[0] + e[1])
            + fun(x - e[0] - e[1])
        ) / (4 * h**2)
        hess[:, 0, 1] = hess[:, 1, 0] = cross
        held = ((x <= lo) & (grad > 0)) | ((x >= hi) & (grad < 0))
        grad = np.where(held, 0.0, grad)
        hess[:, 0, 1] = hess[:, 1, 0] = np.where(held.any(1), 0.0, cross)
        vals, vecs = np.linalg.eigh(hess)
        vals = np.maximum(np.abs(vals), 1e-6 * np.abs(vals).max(1, keepdims=True) + 1e-12)
        step = -np.einsum('lij,lj,lkj,lk->li', vecs, 1 / vals, vecs, grad)
        step = np.where(held, 0.0, step)
        step *= np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(1), 1e-300))[:, None]
        done = np.abs(step).max(1) < 1e-8
        if done.all():
            break
        scale = np.ones(len(x))
        for _ in range(30):
            trial = np.clip(x + scale[:, None] * step, lo, hi)
            ft = fun(trial)
            ok = (ft <= fx) | done
            if ok.all():
                break
            scale = np.where(ok, scale, scale / 2)
        accept = ok & ~done
        x[accept], fx[accept] = trial[accept], ft[accept]
    return x, fx


def _fit_nested_intercepts(Y, design, reml=True, influence=True):
    """Exact REML (or ML) of y(s) ~ X + (1 | subject) + (1 | subject:session) at every time point.

    V*_g = I + γ_s Σ_j 1_j 1_j' + γ_g 1 1' (sessions j of subject g). With d_j = 1/(1 + γ_s n_j),
    t_g = Σ_j n_j d_j and c_g = γ_g / (1 + γ_g t_g), by Sherman-Morrison twice:
    x'V*_g⁻¹y = Σ x_i y_i − Σ_j γ_s d_j S_x,j S_y,j − c_g (Σ_j d_j S_x,j)(Σ_j d_j S_y,j), and
    log|V*_g| = Σ_j log(1 + γ_s n_j) + log(1 + γ_g t_g): the profiled criterion needs only
    per-session sums, for all time points at once. It is minimised over
    (log γ_g, log γ_s) ∈ [-14, 8]² from the best point of a coarse grid by a vectorised
    projected Newton (:func:`_newton_min2`).
    """
    X, g, sess = design.X, design.subject, design.session
    n_sess = sess.max() + 1
    sess_subj = np.zeros(n_sess, dtype=int)
    sess_subj[sess] = g
    n_groups = g.max() + 1
    p, n_times = X.shape[1], Y.shape[1]
    m = np.isfinite(Y)
    mf = m.astype(float)
    nobs = mf.sum(0)
    dof_all = nobs - p if reml else nobs
    beta = np.full((n_times, p), np.nan)
    cov = np.full((n_times, p, p), np.nan)
    theta = np.full((3, n_times), np.nan)
    out = {'beta': beta, 'cov': cov, 'theta': theta, 'nobs': nobs}
    if influence:
        out['influence'] = np.zeros((p, len(Y), n_times))
    fitted = np.flatnonzero(nobs > p + 1)
    if not len(fitted):
        return out
    mf_f = mf[:, fitted]
    y0 = np.where(m[:, fitted], Y[:, fitted], 0.0)
    dof = dof_all[fitted]
    xtx = np.einsum('np,nq,nl->lpq', X, X, mf_f, optimize=True)
    sx = _cell_sums(sess, n_sess, mf_f[:, :, None] * X[:, None, :])  # (J, L, p)
    nj = _cell_sums(sess, n_sess, mf_f)  # (J, L)
    xty = np.einsum('np,nl->lp', X, y0, optimize=True)
    sy = _cell_sums(sess, n_sess, y0)  # (J, L)
    yty = (y0**2).sum(0)
    sxx = np.einsum('jlp,jlq->jlpq', sx, sx)
    sxy = sx * sy[..., None]
    up = sparse.csr_matrix(
        (np.ones(n_sess), (sess_subj, np.arange(n_sess))), shape=(n_groups, n_sess)
    )

    def to_subject(values):  # (J, ...) -> (G, ...)
        return np.asarray(up @ values.reshape(n_sess, -1)).reshape((n_groups, *values.shape[1:]))

    def parts(u):
        """Criterion pieces at every fitted time point for u = (log γ_g, log γ_s), (L, 2)."""
        gg, gs = np.exp(u[:, 0]), np.exp(u[:, 1])
        d = 1.0 / (1.0 + gs * nj)  # (J, L)
        tg = to_subject(nj * d)  # (G, L)
        cg = gg / (1.0 + gg * tg)
        ux, uy = to_subject(d[..., None] * sx), to_subject(d * sy)  # (G, L, p), (G, L)
        w = gs * d
        a = (
            xtx
            - (w[..., None, None] * sxx).sum(0)
            - (cg[..., None, None] * ux[..., :, None] * ux[..., None, :]).sum(0)
        )
        b = xty - (w[..., None] * sxy).sum(0) - (cg[..., None] * ux * uy[..., None]).sum(0)
        c = yty - (w * sy**2).sum(0) - (cg * uy**2).sum(0)
        beta_u = np.linalg.solve(a, b[..., None])[..., 0]
        rss = np.maximum(c - (b * beta_u).sum(1), 1e-300)
        logdet = np.log1p(gs * nj).sum(0) + np.log1p(gg * tg).sum(0)
        return a, beta_u, rss, logdet, d, cg, ux

    def objective(u):
        a, _, rss, logdet, *_ = parts(u)
        obj = dof * np.log(rss / dof) + logdet
        return obj + np.linalg.slogdet(a)[1] if reml else obj

    grid = np.linspace(-14, 8, 12)
    best_val = np.full(len(fitted), np.inf)
    start = np.zeros((len(fitted), 2))
    for lg in grid:
        for ls in grid:
            val = objective(np.tile([lg, ls], (len(fitted), 1)))
            better = val < best_val
            best_val[better], start[better] = val[better], (lg, ls)
    params, _ = _newton_min2(objective, start, -14.0, 8.0)
    a, beta_f, rss, _, d, cg, ux = parts(params)
    scale = rss / dof
    ainv = np.linalg.inv(a)
    beta[fitted], cov[fitted] = beta_f, scale[:, None, None] * ainv
    theta[:, fitted] = np.stack([np.exp(params[:, 0]) * scale, np.exp(params[:, 1]) * scale, scale])
    if influence:
        # X'V*⁻¹ e_i = x_i − γ_s d_j S_x,j − c_g d_j Σ_j' d_j' S_x,j' (trial i in session j of g)
        gs = np.exp(params[:, 1])
        xw = (
            X[:, None, :]
            - (gs * d)[sess][..., None] * sx[sess]
            - (cg[g] * d[sess])[..., None] * ux[g]
        )
        weights = np.einsum('lpq,nlq->pnl', ainv, xw, optimize=True) * mf_f[None]
        out['influence'][:, :, fitted] = weights
    return out


def _mixedlm_worker(y_block, data, formula, groups, re_formula, vc_formula, reml):
    """statsmodels MixedLM at each column of ``y_block``: list of parameter dicts (or None)."""
    import statsmodels.formula.api as smf

    from iblnm.util import native_threads

    out = []
    with native_threads(1), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for col in y_block.T:
            rows = np.isfinite(col)
            df = data.loc[rows].assign(_y=col[rows])
            try:
                model = smf.mixedlm(
                    f'_y ~ {formula}',
                    df,
                    groups=df[groups],
                    re_formula=re_formula,
                    vc_formula=vc_formula,
                )
                res = model.fit(reml=reml)
                out.append(
                    {
                        'fe': np.asarray(res.fe_params),
                        'cov_re': np.asarray(res.cov_re),
                        'vcomp': np.asarray(res.vcomp),
                        'scale': float(res.scale),
                    }
                )
            except Exception:  # noqa: BLE001 - a failed time point is NaN, not a crash
                out.append(None)
    return out


def _fit_general(Y, data, design, rhs, groups, re_formula, nested, reml, n_jobs, influence=True):
    """statsmodels MixedLM at every time point (joblib), then GLS weights by Woodbury."""
    from joblib import Parallel, delayed

    vc = {nested: f'0 + C({nested})'} if nested is not None else None
    cols = list(dict.fromkeys([groups, *([nested] if nested else []), *data.columns]))
    frame = data[cols].reset_index(drop=True)
    n_times = Y.shape[1]
    n_chunks = max(1, min(n_times, 4 * n_jobs))
    chunks = np.array_split(np.arange(n_times), n_chunks)
    fits = Parallel(n_jobs=n_jobs)(
        delayed(_mixedlm_worker)(Y[:, c], frame, rhs, groups, re_formula, vc, reml) for c in chunks
    )
    fits = [f for block in fits for f in block]
    X, zre = design.X, design.Zre
    n, p = X.shape
    q = zre.shape[1]
    beta = np.full((n_times, p), np.nan)
    cov = np.full((n_times, p, p), np.nan)
    theta = np.full((len(design.components), n_times), np.nan)
    infl = np.zeros((p, n, n_times)) if influence else None
    m = np.isfinite(Y)
    subj_rows = [np.flatnonzero(design.subject == gi) for gi in range(design.subject.max() + 1)]
    for s, fit in enumerate(fits):
        if fit is None or len(fit['fe']) != p:  # failed fit, or a level absent at s
            continue
        beta[s] = fit['fe']
        psi = fit['cov_re'].reshape(q, q)
        vcomp = fit['vcomp'][0] if len(fit['vcomp']) else 0.0
        sigma2 = fit['scale']
        k = 0
        for a in range(q):
            for b in range(a, q):
                theta[k, s] = psi[a, b]
                k += 1
        if nested is not None:
            theta[k, s] = vcomp
        theta[-1, s] = sigma2
        # V_g^{-1} X_g = σ⁻² (X − Z Ψ (σ² I + Z'Z Ψ)⁻¹ Z'X), rows observed at s
        vx = np.zeros((n, p))
        xtvx = np.zeros((p, p))
        for rows in subj_rows:
            rows = rows[m[rows, s]]
            if not len(rows):
                continue
            zg = zre[rows]
            big_psi = psi
            if nested is not None:
                sess = design.session[rows]
                levels, inv = np.unique(sess, return_inverse=True)
                ind = np.zeros((len(rows), len(levels)))
                ind[np.arange(len(rows)), inv] = 1.0
                zg = np.hstack([zg, ind])
                big_psi = np.zeros((q + len(levels), q + len(levels)))
                big_psi[:q, :q] = psi
                big_psi[q:, q:] = vcomp * np.eye(len(levels))
            xg = X[rows]
            inner = sigma2 * np.eye(zg.shape[1]) + zg.T @ zg @ big_psi
            vxg = (xg - zg @ big_psi @ np.linalg.solve(inner, zg.T @ xg)) / sigma2
            vx[rows] = vxg
            xtvx += xg.T @ vxg
        ainv = np.linalg.inv(xtvx)
        cov[s] = ainv
        if influence:
            infl[:, :, s] = ainv @ vx.T
    return {
        'beta': beta,
        'cov': cov,
        'theta': theta,
        'nobs': m.sum(0).astype(float),
        'influence': infl,
    }


# ---------------------------------------------------------------------------
# Covariance of the raw estimates between time points (method of moments)
# ---------------------------------------------------------------------------
def _trim_psd(mat):
    """Symmetric part with negative eigenvalues set to 0."""
    mat = (mat + mat.T) / 2
    vals, vecs = np.linalg.eigh(mat)
    return (vecs * np.maximum(vals, 0)) @ vecs.T


def _raw_covariance(Y, design, raw):
    """(p, L, L) covariance of the raw estimates between time points.

    MoM: with residuals r(s) = y(s) − X β̃(s) (0 where missing), E[r(s1)' M_k r(s2)] =
    Σ_l θ_l(s1, s2) tr(D1 M_k D2 M_l) gives every component's covariance θ_k(s1, s2)
    between time points. The sandwich Σ_r(s1, s2) = Σ_k θ_k(s1, s2) a_r(s1)' M_k a_r(s2),
    with a_r(s) the GLS weights of coefficient r, is trimmed to be positive semi-definite;
    its correlation is combined with the model-based variances of the raw fits.
    """
    m = np.isfinite(Y)
    beta = np.nan_to_num(raw['beta'])
    resid = np.where(m, np.nan_to_num(Y) - design.X @ beta.T, 0.0)
    comps = design.components
    q = np.stack([_quad(c, resid) for c in comps], axis=-1)  # (L, L, K)
    cmat = _moment_matrix(comps, m.astype(float))
    theta = np.einsum('abkl,abl->abk', np.linalg.pinv(cmat), q)  # (L, L, K)
    var_raw = np.einsum('lpp->pl', raw['cov'])
    out = np.zeros((design.X.shape[1], Y.shape[1], Y.shape[1]))
    for r in range(design.X.shape[1]):
        a = raw['influence'][r]
        sig = sum(theta[:, :, k] * _quad(c, a) for k, c in enumerate(comps))
        sig = _trim_psd(sig)
        d = np.sqrt(np.clip(np.diag(sig), 1e-300, None))
        corr = sig / np.outer(d, d)
        sd = np.sqrt(np.nan_to_num(var_raw[r]))
        out[r] = corr * np.outer(sd, sd)
    return out


# ---------------------------------------------------------------------------
# Step 2: penalised-spline smoothing across time
# ---------------------------------------------------------------------------
def pspline_basis(times, n_basis=None, degree=3):
    """Cubic B-spline basis on equally spaced knots over ``times``: (n_times, n_basis).

    Default ``n_basis`` = min(n_times, max(8, n_times // 3)) (a P-spline: generous basis,
    smoothness set by the penalty).
    """
    times = np.asarray(times, dtype=float)
    n_times = len(times)
    if n_basis is None:
        n_basis = min(n_times, max(8, n_times // 3))
    n_inner = n_basis - degree + 1
    inner = np.linspace(times.min(), times.max(), n_inner)
    step = inner[1] - inner[0]
    knots = np.r_[
        inner[0] - step * np.arange(degree, 0, -1),
        inner,
        inner[-1] + step * np.arange(1, degree + 1),
    ]
    return BSpline.design_matrix(times, knots, degree).toarray()


def _penalty(n_basis, order):
    d = np.diff(np.eye(n_basis), order, axis=0)
    return d.T @ d


def smoother_matrix(basis, lam, weights=None, order=2):
    """Hat matrix S (n_times, n_times) of the P-spline fit with penalty λ c'D'Dc.

    λ is relative: the penalty is scaled by tr(B'WB) / tr(D'D), so that one grid of λ
    suits any basis size and number of time points.
    """
    return _smoother_family(basis, weights, order)(lam)


def _smoother_family(basis, weights=None, order=2):
    """λ -> S_λ, from one eigen-decomposition (Demmler-Reinsch): B'WB = R'R,
    R⁻ᵀ P R⁻¹ = U diag(e) U', S_λ = B R⁻¹ U diag(1 / (1 + λ e)) U' R⁻ᵀ B'W."""
    n_basis = basis.shape[1]
    w = np.ones(len(basis)) if weights is None else np.asarray(weights, float)
    pen = _penalty(n_basis, order)
    btwb = basis.T @ (w[:, None] * basis)
    pen = pen * np.trace(btwb) / max(np.trace(pen), 1e-12)
    ridge = 1e-10 * np.trace(btwb) / n_basis * np.eye(n_basis)  # basis functions without data
    chol = np.linalg.cholesky(btwb + ridge)
    rinv = np.linalg.inv(chol.T)  # R⁻¹ with R = chol'
    evals, evecs = np.linalg.eigh(rinv.T @ pen @ rinv)
    left = basis @ rinv @ evecs  # (n_times, n_basis)
    right = left.T * w  # U' R⁻ᵀ B' W

    def smoother(lam):
        return (left / (1 + lam * np.clip(evals, 0, None))) @ right

    return smoother


def smooth_gcv(values, basis, lambdas=GCV_LAMBDAS, order=2):
    """P-spline smoothing of one function, λ by generalised cross-validation.

    GCV(λ) = n ||y − S_λ y||² / (n − tr S_λ)² over the observed samples (missing values get
    weight 0). Returns (smoothed (n_times,), S (n_times, n_times), λ).
    """
    values = np.asarray(values, dtype=float)
    w = np.isfinite(values).astype(float)
    y = np.nan_to_num(values)
    n = w.sum()
    family = _smoother_family(basis, w, order)
    best = (np.inf, None, None)
    for lam in lambdas:
        s = family(lam)
        fit = s @ y
        edf = np.trace(s * w[None, :])
        gcv = n * np.sum(w * (y - fit) ** 2) / max(n - edf, 1e-9) ** 2
        if gcv < best[0]:
            best = (gcv, s, lam)
    _, s, lam = best
    return s @ y, s, float(lam)


# ---------------------------------------------------------------------------
# Step 3: bands
# ---------------------------------------------------------------------------
def joint_quantile(cov, level=0.95, n_sim=N_SIM, seed=0):
    """Quantile of max_s |Z(s)| / sd(s) for Z ~ N(0, cov) (simulated), and the draws.

    Returns (q, max_abs (n_sim,)); samples with zero variance are ignored.
    """
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    keep = sd > 0
    corr = cov[np.ix_(keep, keep)] / np.outer(sd[keep], sd[keep])
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    root = vecs * np.sqrt(np.clip(vals, 0, None))
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((n_sim, len(vals))) @ root.T
    max_abs = np.abs(draws).max(axis=1)
    return float(np.quantile(max_abs, level)), max_abs


def significant_intervals(dataset, var='significant'):
    """Runs of time points where the joint band excludes zero (see :class:`FLMMResult`)."""
    rows = []
    times = dataset['time'].to_numpy()
    for term in dataset['term'].to_numpy():
        sel = dataset.sel(term=term)
        est = sel['estimate'].to_numpy()
        for start, stop in runs(sel[var].to_numpy()):
            seg = est[start:stop]
            top = start + int(np.argmax(np.abs(seg)))
            rows.append(
                {
                    'term': term,
                    'start': start,
                    'stop': stop,
                    't_start': float(times[start]),
                    't_stop': float(times[stop - 1]),
                    'sign': int(np.sign(seg.mean())),
                    'peak': float(est[top]),
                    't_peak': float(times[top]),
                    'p_joint': float(sel['p_joint'].to_numpy()[start:stop].min()),
                }
            )
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


# ---------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------
def fit_flmm(
    responses,
    data,
    formula,
    groups='subject',
    times=None,
    re_formula='1',
    nested=None,
    reml=True,
    smooth=True,
    n_basis=None,
    level=0.95,
    inference='analytic',
    n_boot=200,
    n_sim=N_SIM,
    method='fast',
    n_jobs=2,
    seed=0,
    blas_threads=1,
):
    """Functional linear mixed model of trial responses (fast univariate inference).

    Parameters
    ----------
    responses : ndarray, shape (n_trials, n_times)
        One row per trial (e.g. z-scored ΔF/F around an event); NaN samples leave that
        trial out at that time point.
    data : pandas.DataFrame
        Trial covariates, one row per row of ``responses`` (same order).
    formula : str
        Fixed effects (patsy), e.g. ``'reward + log_contrast'`` (a left-hand side is
        ignored).
    groups : str
        Column of ``data`` with the subject (random-effect grouping).
    times : ndarray, shape (n_times,), optional
        Sample times (s); default 0..n_times-1.
    re_formula : str
        Subject random effects: ``'1'`` (random intercept) or e.g. ``'1 + reward'``
        (correlated random intercept and slope).
    nested : str, optional
        Column of ``data`` with the session: adds a session random intercept nested in the
        subject.
    reml : bool
        REML (default) or maximum likelihood.
    smooth : bool
        Smooth the coefficient functions (False, or fewer than 8 time points: raw estimates
        and their bands).
    n_basis : int, optional
        B-spline basis size (see :func:`pspline_basis`).
    level : float
        Coverage of the pointwise intervals and of the joint band.
    inference : {'analytic', 'bootstrap'}
        Bands from the MoM sandwich covariance, or from a subject-level bootstrap
        (``n_boot`` resamples of subjects with replacement, λ fixed at its GCV value).
    n_sim : int
        Normal draws for the joint quantile (analytic).
    method : {'fast', 'statsmodels'}
        Raw fits: exact REML from subject (and, with ``nested``, session) sufficient
        statistics (vectorised over time points for a random intercept), or statsmodels
        MixedLM at every time point (always used for ``nested`` with random slopes). Both
        give the same optimum.
    n_jobs : int
        Processes for the per-time-point statsmodels fits (joblib).
    seed : int
    blas_threads : int or None
        BLAS threads while fitting (threadpoolctl; None leaves the process setting). Default
        1: the algebra is many small products, and on a machine whose cores are busy
        OpenBLAS threads wait for each other (30 recordings x 600 trials x 120 samples at
        load ≈ 4 on 2 cores: 4.1-4.6 s wall with 2 threads, 1.3-1.4 s with 1; NOTES.md,
        issue 14, session 5).

    Returns
    -------
    FLMMResult
        ``dataset`` (term x time) and ``intervals`` (see :class:`FLMMResult`).

    Raises
    ------
    ValueError
        Mismatched shapes, fewer than 2 subjects, or an unknown ``inference``.
    """
    from iblnm.util import native_threads

    with native_threads(blas_threads):
        return _fit_flmm(
            responses,
            data,
            formula,
            groups,
            times,
            re_formula,
            nested,
            reml,
            smooth,
            n_basis,
            level,
            inference,
            n_boot,
            n_sim,
            method,
            n_jobs,
            seed,
        )


def _fit_flmm(
    responses,
    data,
    formula,
    groups,
    times,
    re_formula,
    nested,
    reml,
    smooth,
    n_basis,
    level,
    inference,
    n_boot,
    n_sim,
    method,
    n_jobs,
    seed,
):
    """The body of :func:`fit_flmm` (same arguments), under its BLAS thread limit."""
    y = np.atleast_2d(np.asarray(responses, dtype=float))
    data = pd.DataFrame(data).reset_index(drop=True)
    if len(data) != len(y):
        raise ValueError(f'responses has {len(y)} rows but data has {len(data)}')
    if inference not in ('analytic', 'bootstrap'):
        raise ValueError(f"inference must be 'analytic' or 'bootstrap', not {inference!r}")
    if data[groups].nunique() < 2:
        raise ValueError('an FLMM needs at least 2 subjects')
    times = np.arange(y.shape[1], dtype=float) if times is None else np.asarray(times, float)
    rhs = formula.split('~', 1)[1].strip() if '~' in formula else formula.strip()
    design = _build_design(data, rhs, groups, re_formula, nested)
    if method not in ('fast', 'statsmodels'):
        raise ValueError(f"method must be 'fast' or 'statsmodels', not {method!r}")
    fast = method == 'fast' and (nested is None or re_formula.strip() == '1')

    def raw_fit(yy, dd, des, influence, gcol=groups):
        if nested is None and re_formula.strip() == '1':
            return _fit_random_intercept(yy, des, reml, influence)
        if nested is None and method == 'fast':
            return _fit_subject_effects(yy, des, reml, influence)
        if method == 'fast' and re_formula.strip() == '1':
            return _fit_nested_intercepts(yy, des, reml, influence)
        return _fit_general(yy, dd, des, rhs, gcol, re_formula, nested, reml, n_jobs, influence)

    raw = raw_fit(y, data, design, inference == 'analytic')
    p, n_times = design.X.shape[1], y.shape[1]
    smooth = smooth and n_times >= MIN_TIMES_TO_SMOOTH
    basis = pspline_basis(times, n_basis) if smooth else None
    est = np.zeros((p, n_times))
    smoothers, lambdas = [], np.full(p, np.nan)
    for r in range(p):
        if smooth:
            est[r], s_mat, lambdas[r] = smooth_gcv(raw['beta'][:, r], basis)
        else:
            est[r], s_mat = raw['beta'][:, r], np.diag(np.isfinite(raw['beta'][:, r]) * 1.0)
        smoothers.append(s_mat)

    if inference == 'analytic':
        raw_cov = _raw_covariance(y, design, raw)
        covs = [smoothers[r] @ np.nan_to_num(raw_cov[r]) @ smoothers[r].T for r in range(p)]
        qs, nulls = zip(*[joint_quantile(c, level, n_sim, seed + r) for r, c in enumerate(covs)])
    else:
        boot = _bootstrap(y, data, design, raw_fit, smoothers, n_boot, seed)
        covs, qs, nulls = [], [], []
        for r in range(p):
            centred = boot[:, r] - est[r]
            cov = centred.T @ centred / max(len(boot) - 1, 1)
            sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
            max_t = np.nanmax(np.abs(centred) / sd, axis=1)
            covs.append(cov)
            qs.append(float(np.quantile(max_t, level)))
            nulls.append(max_t)

    se = np.sqrt(np.clip(np.stack([np.diag(c) for c in covs]), 0, None))
    z = stats.norm.ppf(0.5 + level / 2)
    q = np.asarray(qs)[:, None]
    with np.errstate(divide='ignore', invalid='ignore'):
        t_stat = est / se
    p_point = 2 * stats.norm.sf(np.abs(t_stat))
    p_joint = np.stack(
        [
            (1 + (nulls[r][None, :] >= np.abs(t_stat[r])[:, None]).sum(1)) / (1 + len(nulls[r]))
            for r in range(p)
        ]
    )
    raw_se = np.sqrt(np.clip(np.einsum('lpp->pl', raw['cov']), 0, None))
    ds = xr.Dataset(
        {
            'estimate': (('term', 'time'), est),
            'se': (('term', 'time'), se),
            'ci_lower': (('term', 'time'), est - z * se),
            'ci_upper': (('term', 'time'), est + z * se),
            'joint_lower': (('term', 'time'), est - q * se),
            'joint_upper': (('term', 'time'), est + q * se),
            'p': (('term', 'time'), p_point),
            'p_joint': (('term', 'time'), p_joint),
            'significant': (('term', 'time'), (est - q * se > 0) | (est + q * se < 0)),
            'raw': (('term', 'time'), raw['beta'].T),
            'raw_se': (('term', 'time'), raw_se),
            'n_obs': (('time',), raw['nobs']),
            'q_joint': (('term',), np.asarray(qs)),
            'smoothing': (('term',), lambdas),
        },
        coords={'term': design.terms, 'time': times},
        attrs={
            'formula': rhs,
            're_formula': re_formula,
            'nested': nested or '',
            'inference': inference,
            'level': level,
            'smoothed': int(smooth),
            'n_subjects': int(design.subject.max() + 1),
            'n_trials': len(y),
            'method': (
                'exact REML from subject sums' if nested is None else 'exact REML from session sums'
            )
            if fast
            else 'statsmodels MixedLM per time point',
        },
    )
    return FLMMResult(ds, significant_intervals(ds), dict(zip(design.terms, covs)))


def _bootstrap(y, data, design, raw_fit, smoothers, n_boot, seed):
    """Smoothed estimates on ``n_boot`` subject resamples: (n_boot, p, n_times)."""
    rng = np.random.default_rng(seed)
    subjects = np.unique(design.subject)
    rows_of = [np.flatnonzero(design.subject == s) for s in subjects]
    out = []
    for _ in range(n_boot):
        pick = rng.choice(len(subjects), len(subjects), replace=True)
        rows = np.concatenate([rows_of[i] for i in pick])
        new_subject = np.concatenate([np.full(len(rows_of[i]), k) for k, i in enumerate(pick)])
        dd = data.iloc[rows].reset_index(drop=True)
        dd['_boot_subject'] = new_subject
        des = _Design(
            design.X[rows],
            design.terms,
            new_subject,
            None if design.session is None else design.session[rows] + 0,
            design.Zre[rows],
            design.re_names,
            [],
        )
        if design.session is not None:  # a subject drawn twice has distinct sessions
            des.session = _codes(
                pd.Series(new_subject).astype(str)
                + ':'
                + pd.Series(design.session[rows]).astype(str)
            )
        fit = raw_fit(y[rows], dd, des, False, '_boot_subject')
        beta = np.nan_to_num(fit['beta'])
        out.append(np.stack([smoothers[r] @ beta[:, r] for r in range(len(smoothers))]))
    return np.stack(out)


TABLE_VARIABLES = [
    'estimate',
    'se',
    'ci_lower',
    'ci_upper',
    'joint_lower',
    'joint_upper',
    'p',
    'p_joint',
    'significant',
    'raw',
    'raw_se',
]


def coefficient_table(results, by=('target_NM', 'event')):
    """Coefficient functions of several fits in long form.

    Parameters
    ----------
    results : dict
        ``{key tuple: FLMMResult}`` (e.g. from ``PhotometrySessionGroup.fit_flmm``).

    Returns
    -------
    pandas.DataFrame
        Columns ``by``..., term, time (s), :data:`TABLE_VARIABLES`, q_joint, n_obs,
        n_subjects.
    """
    frames = []
    for key, result in results.items():
        ds = result.dataset
        frame = ds[TABLE_VARIABLES].to_dataframe().reset_index()
        frame['q_joint'] = frame['term'].map(ds['q_joint'].to_series())
        frame['n_obs'] = frame['time'].map(ds['n_obs'].to_series())
        frame['n_subjects'] = ds.attrs['n_subjects']
        for name, value in zip(by, key):
            frame.insert(0, name, value)
        frames.append(frame)
    columns = [*by, 'term', 'time', *TABLE_VARIABLES, 'q_joint', 'n_obs', 'n_subjects']
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def intervals_table(results, by=('target_NM', 'event')):
    """Significant intervals (joint band excludes 0) of several fits: ``by``... + INTERVAL_COLUMNS."""
    frames = [r.intervals.assign(**dict(zip(by, key))) for key, r in results.items()]
    columns = [*by, *INTERVAL_COLUMNS]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
