"""Encoding analyses: what drives the trial-by-trial response magnitudes.

Pure functions over DataFrames (no files). Two analyses:

**Movement encoding.** Are stimulus-aligned responses explained by the stimulus contrast or
by when the mouse moves (reaction time, movement time), which covaries with contrast?
Three mixed models with a random intercept per subject are compared by leave-one-subject-
out (LOSO) cross-validation::

    full           resp ~ contrast + timing + reward
    drop_contrast  resp ~ timing + reward            (the "timing model")
    drop_movement  resp ~ contrast + reward          (the "contrast model")

``delta_r2_contrast = r2_full − r2_drop_contrast`` is the unique contribution of contrast,
``delta_r2_timing = r2_full − r2_drop_movement`` that of timing; the preferred predictor is
the one with the larger unique contribution (equivalently, the reduced model with the larger
held-out R²). Side is deliberately not a predictor.

**Task encoding.** A per-recording OLS GLM of the responses on contrast, side, reward and
their pairwise interactions gives one coefficient vector per recording; PCA or ICA decompose
them across recordings, and a per-cohort CCA relates them to the session's psychometric
parameters, with permutation tests that shuffle whole sessions.

Input is the response-magnitudes table (one row per recording × event × trial: eid,
subject, target_NM, brain_region, hemisphere, fiber_idx, event, trial, signed_contrast,
contrast (%), choice, feedbackType, probabilityLeft, reaction_time, movement_time (s),
response_early ...).
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iblnm import config
from iblnm.task import add_relative_contrast

MOVEMENT_MODELS = ('full', 'drop_contrast', 'drop_movement')
LOSO_COLUMNS = [
    'subject',
    'n_trials',
    'r2_full',
    'r2_drop_contrast',
    'r2_drop_movement',
    'delta_r2_contrast',
    'delta_r2_timing',
    'timing_col',
]
SLOPE_COLUMNS = [
    'contrast',
    'slope',
    'se',
    'p_value',
    'ci_lower',
    'ci_upper',
    'r2_marginal',
    'n_trials',
    'n_subjects',
]
MIN_RT = 0.05  # s, shortest reaction time kept (anticipatory movements below)


# ---------------------------------------------------------------------------
# Movement encoding: data and predictors
# ---------------------------------------------------------------------------
def log_timing(values):
    """log10 of a timing variable (s); values ≤ 0 or NaN give NaN."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def prepare_movement_data(
    responses,
    event='stimOn_times',
    timing_vars=('reaction_time', 'movement_time'),
    min_rt=MIN_RT,
    response_col='response_early',
):
    """Trials for movement encoding: one event, 50/50 block, a choice, a real reaction time.

    Parameters
    ----------
    responses : pandas.DataFrame
        Response-magnitudes table (see the module docstring).
    event : str
        Event whose responses are modelled.
    timing_vars : sequence of str
        Timing columns (s); each present one gets a ``log_{var}`` column (log10 s).
    min_rt : float
        Trials with reaction_time ≤ ``min_rt`` (s) are dropped.

    Returns
    -------
    pandas.DataFrame
        Rows with ``side`` (contra/ipsi, :func:`iblnm.task.add_relative_contrast`) and the
        ``log_*`` columns; NaN responses dropped.
    """
    df = responses[responses['event'] == event]
    df = df[(df['probabilityLeft'] == 0.5) & (df['choice'] != 0)]
    df = df[df['reaction_time'] > min_rt]
    df = df[np.isfinite(df[response_col].astype(float))]
    df = add_relative_contrast(df) if len(df) else df.assign(side=pd.Series(dtype=object))
    for var in timing_vars:
        if var in df:
            df[f'log_{var}'] = log_timing(df[var])
    return df.reset_index(drop=True)


def code_movement_predictors(df, resp='response_early', timing='log_reaction_time'):
    """Code the predictors of the movement models.

    Parameters
    ----------
    df : pandas.DataFrame
        Trials with ``contrast`` (%), ``feedbackType``, ``subject``, ``resp`` and ``timing``.

    Returns
    -------
    pandas.DataFrame
        Columns y, contrast (log2 of the contrast in %, 0 % → 0, mean-centred), timing,
        reward (±0.5), side (contra +0.5 / ipsi −0.5, 0 when unknown), subject; rows
        with NaN dropped.
    """
    coding, _ = config.get_contrast_coding('log2')
    out = pd.DataFrame(
        {
            'y': df[resp].to_numpy(float),
            'contrast': coding(df['contrast'].to_numpy(float)),
            'timing': df[timing].to_numpy(float),
            'reward': np.where(df['feedbackType'].to_numpy(float) > 0, 0.5, -0.5),
            'subject': df['subject'].astype(str).to_numpy(),
        }
    )
    if 'side' in df:
        side = df['side'].to_numpy(object)
        out['side'] = np.select([side == 'contra', side == 'ipsi'], [0.5, -0.5], 0.0)
    out = out[np.isfinite(out[['y', 'contrast', 'timing']]).all(axis=1)].reset_index(drop=True)
    out['contrast'] -= out['contrast'].mean() if len(out) else 0.0
    return out


def movement_formulas():
    """The three movement models (patsy formulas over the coded columns)."""
    return {
        'full': 'y ~ contrast + timing + reward',
        'drop_contrast': 'y ~ timing + reward',
        'drop_movement': 'y ~ contrast + reward',
    }


# ---------------------------------------------------------------------------
# Movement encoding: model fitting
# ---------------------------------------------------------------------------
def fit_mixed(formula, df, reml=False):
    """Fit ``formula`` with a random intercept per subject; None when no converged fit exists.

    With a single subject the model reduces to OLS (the random intercept is absorbed by
    the fixed intercept: identical fixed effects). Otherwise :func:`iblnm.analysis.lmm.
    fit_mixedlm` (the project's one convergence rule: L-BFGS, then Powell, a fit that does
    not converge is not used).

    Returns
    -------
    statsmodels results or None
    """
    import statsmodels.formula.api as smf

    from iblnm.analysis.lmm import fit_mixedlm

    if df['subject'].nunique() < 2:
        try:
            return smf.ols(formula, df).fit()
        except Exception:  # noqa: BLE001 - a failed fit is a None, never a crash
            return None
    fitted = fit_mixedlm(formula, df, 'subject', reml=reml, methods=('lbfgs', 'powell'))
    return None if fitted is None else fitted[1]


def fixed_prediction(result, df):
    """Fixed-effects prediction of a fitted model on new rows, shape (n_rows,)."""
    return np.asarray(result.predict(df), dtype=float)


def marginal_r2(result, df):
    """Marginal R² = var(X·β_fe) / var(y), clipped to [0, 1] (0 when var(y) = 0)."""
    from iblnm.analysis.lmm import explained_fraction

    return explained_fraction(df['y'], np.var(fixed_prediction(result, df)))


def centred_r2(y, y_hat):
    """R² of a held-out subject after centring y and the prediction on their own means.

    R² = 1 − Σ(y_c − ŷ_c)² / Σ y_c²; negative when the prediction is worse than the
    subject's mean. NaN when y is constant.
    """
    y_c, p_c = y - np.mean(y), y_hat - np.mean(y_hat)
    ss = np.sum(y_c**2)
    return float(1 - np.sum((y_c - p_c) ** 2) / ss) if ss > 0 else np.nan


def fit_movement_lmm_r2(df, resp='response_early', timing='log_reaction_time'):
    """In-sample marginal R² of the three movement models (ML fits).

    Returns
    -------
    dict or None
        r2_full, r2_drop_contrast, r2_drop_movement, delta_r2_contrast, delta_r2_timing,
        n_trials, n_subjects; None with fewer than 2 subjects or when a fit fails.
    """
    data = code_movement_predictors(df, resp, timing)
    if data['subject'].nunique() < 2:
        return None
    r2 = {}
    for name, formula in movement_formulas().items():
        result = fit_mixed(formula, data)
        if result is None:
            return None
        r2[name] = marginal_r2(result, data)
    return {
        **{f'r2_{k}': v for k, v in r2.items()},
        'delta_r2_contrast': r2['full'] - r2['drop_contrast'],
        'delta_r2_timing': r2['full'] - r2['drop_movement'],
        'n_trials': len(data),
        'n_subjects': data['subject'].nunique(),
    }


def _loso_fold(data, subject, min_test_trials):
    """Held-out R² of the three models for one left-out subject; None if not possible."""
    train, test = data[data['subject'] != subject], data[data['subject'] == subject]
    if len(test) < min_test_trials or train['subject'].nunique() < 1:
        return None
    r2 = {}
    for name, formula in movement_formulas().items():
        result = fit_mixed(formula, train)
        if result is None:
            return None
        r2[name] = centred_r2(test['y'].to_numpy(float), fixed_prediction(result, test))
    return {
        'subject': subject,
        'n_trials': len(test),
        **{f'r2_{k}': v for k, v in r2.items()},
        'delta_r2_contrast': r2['full'] - r2['drop_contrast'],
        'delta_r2_timing': r2['full'] - r2['drop_movement'],
    }


def loso_cv_movement_lmm(
    df,
    resp='response_early',
    timing='log_reaction_time',
    min_subjects=config.MIN_SUBJECTS_MOVEMENT,
    min_test_trials=5,
):
    """Leave-one-subject-out comparison of the movement models.

    Each subject is held out in turn: the three models are fitted (ML, random intercept
    per subject) on the others and predict the held-out trials from the fixed effects;
    both are centred on the held-out subject's mean (:func:`centred_r2`).

    Parameters
    ----------
    df : pandas.DataFrame
        Trials of one cohort (:func:`prepare_movement_data`).
    resp, timing : str
        Response column and timing column (e.g. ``log_reaction_time``, log10 s).
    min_subjects : int
        Fewer subjects give an empty frame. With 2 subjects each fold trains on one
        subject, where the mixed model reduces to OLS (the original required 3).
    min_test_trials : int
        Folds whose held-out subject has fewer trials are skipped.

    Returns
    -------
    pandas.DataFrame
        One row per held-out subject, columns :data:`LOSO_COLUMNS`.
    """
    data = code_movement_predictors(df, resp, timing)
    if data['subject'].nunique() < max(min_subjects, 2):
        return pd.DataFrame(columns=LOSO_COLUMNS)
    rows = [_loso_fold(data, s, min_test_trials) for s in sorted(data['subject'].unique())]
    rows = [r for r in rows if r is not None]
    out = pd.DataFrame(rows, columns=LOSO_COLUMNS[:-1])
    out['timing_col'] = timing
    return out


def jackknife_movement_lmm(df, resp='response_early', timing='log_reaction_time', min_subjects=3):
    """In-sample R² (:func:`fit_movement_lmm_r2`) refitted without each subject in turn.

    Returns
    -------
    pandas.DataFrame
        One row per left-out subject (column ``left_out``); empty below ``min_subjects``.
    """
    subjects = sorted(df['subject'].astype(str).unique())
    if len(subjects) < min_subjects:
        return pd.DataFrame()
    rows = []
    for subject in subjects:
        fit = fit_movement_lmm_r2(df[df['subject'].astype(str) != subject], resp, timing)
        if fit is not None:
            rows.append({'left_out': subject, **fit})
    return pd.DataFrame(rows)


def fit_movement_lmm_per_contrast(df, resp='response_early', timing='log_reaction_time'):
    """Timing slope at one contrast level: ``resp ~ side + reward + timing + (1|subject)``.

    Returns
    -------
    dict or None
        slope (response units per log10 s), se, p_value, ci_lower, ci_upper (95 %),
        r2_marginal, n_trials, n_subjects; None when the fit fails or there is no data.
    """
    data = code_movement_predictors(df, resp, timing)
    if len(data) < 5 or data['timing'].std() == 0:
        return None
    terms = [t for t in ('side', 'reward') if t in data and data[t].nunique() > 1]
    result = fit_mixed('y ~ ' + ' + '.join([*terms, 'timing']), data)
    if result is None:
        return None
    slope, se = float(result.params['timing']), float(result.bse['timing'])
    return {
        'slope': slope,
        'se': se,
        'p_value': float(result.pvalues['timing']),
        'ci_lower': slope - 1.96 * se,
        'ci_upper': slope + 1.96 * se,
        'r2_marginal': marginal_r2(result, data),
        'n_trials': len(data),
        'n_subjects': data['subject'].nunique(),
    }


def per_contrast_slopes(
    df, resp='response_early', timing='log_reaction_time', min_trials=config.MIN_TRIALS_MOVEMENT
):
    """:func:`fit_movement_lmm_per_contrast` at each contrast level (%) of a cohort.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SLOPE_COLUMNS`; levels with fewer than ``min_trials`` are skipped.
    """
    rows = []
    for contrast, sub in df.groupby('contrast'):
        if len(sub) < min_trials:
            continue
        fit = fit_movement_lmm_per_contrast(sub, resp, timing)
        if fit is not None:
            rows.append({'contrast': float(contrast), **fit})
    return pd.DataFrame(rows, columns=SLOPE_COLUMNS)


def summarise_loso(loso):
    """Mean held-out R² per (cohort, timing variable) and the preferred model.

    Parameters
    ----------
    loso : pandas.DataFrame
        Concatenated :func:`loso_cv_movement_lmm` rows with a ``target_NM`` column.

    Returns
    -------
    pandas.DataFrame
        target_NM, timing_col, n_subjects, n_trials, mean r2_* and delta_r2_*, and
        ``preferred``: 'timing' when the mean unique contribution of timing exceeds that
        of contrast, else 'contrast'.
    """
    cols = [
        'r2_full',
        'r2_drop_contrast',
        'r2_drop_movement',
        'delta_r2_contrast',
        'delta_r2_timing',
    ]
    if loso.empty:
        return pd.DataFrame(
            columns=['target_NM', 'timing_col', 'n_subjects', 'n_trials', *cols, 'preferred']
        )
    grouped = loso.groupby(['target_NM', 'timing_col'])
    out = grouped[cols].mean()
    out['n_subjects'] = grouped['subject'].nunique()
    out['n_trials'] = grouped['n_trials'].sum()
    out['preferred'] = np.where(
        out['delta_r2_timing'] > out['delta_r2_contrast'], 'timing', 'contrast'
    )
    return out.reset_index()[
        ['target_NM', 'timing_col', 'n_subjects', 'n_trials', *cols, 'preferred']
    ]


# ---------------------------------------------------------------------------
# Task encoding: per-recording GLM
# ---------------------------------------------------------------------------
GLM_TERMS = [
    'intercept',
    'log_contrast',
    'side',
    'reward',
    'log_contrast:side',
    'log_contrast:reward',
    'side:reward',
]
GLM_INDEX = ['eid', 'target_NM', 'brain_region', 'fiber_idx']
_NO_SIDE_TERMS = np.array([i for i, t in enumerate(GLM_TERMS) if 'side' not in t.split(':')])


def glm_design(df, contrast_coding='log'):
    """Design matrix of the per-recording GLM, shape (n_trials, 7), columns :data:`GLM_TERMS`.

    c = coded contrast (%), side = contra +0.5 / ipsi −0.5 (0 for a recording lateral to
    no side, ``side`` None), reward = correct +0.5 / incorrect −0.5, plus the three pairwise
    products.
    """
    coding, _ = config.get_contrast_coding(contrast_coding)
    c = coding(df['contrast'].to_numpy(float))
    side = df['side'].to_numpy(object)
    side = np.select([side == 'contra', side == 'ipsi'], [0.5, -0.5], 0.0)
    reward = np.where(df['feedbackType'].to_numpy(float) > 0, 0.5, -0.5)
    return np.column_stack([np.ones(len(df)), c, side, reward, c * side, c * reward, side * reward])


def ols_with_se(x, y):
    """OLS coefficients and standard errors SE = sqrt(σ²·diag((XᵀX)⁻¹)), σ² = RSS/(n − p).

    Returns
    -------
    coef, se : ndarray, shape (p,)
    """
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    n, p = x.shape
    sigma2 = np.sum((y - x @ coef) ** 2) / max(n - p, 1)
    se = np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))
    return coef, se


def fit_response_glm(
    events_df, event_name, min_trials=20, contrast_coding='log', response_col='response_early'
):
    """Per-recording OLS encoding model of one event's responses (50/50 block trials).

    Parameters
    ----------
    events_df : pandas.DataFrame
        Response-magnitudes table.
    event_name : str
    min_trials : int
        Recordings with fewer non-NaN responses are skipped.
    contrast_coding : {'log', 'linear', 'rank', 'log2'}

    Returns
    -------
    coefs, ses : pandas.DataFrame
        One row per recording, index (eid, target_NM, brain_region, fiber_idx), columns
        :data:`GLM_TERMS` (response units per coded unit). Rank-deficient designs are
        skipped with a warning. A recording lateral to no side (a midline region, ``side``
        None) is fitted without the side terms, which are NaN.

    Raises
    ------
    ValueError
        Empty table, or an event absent from it.
    """
    if events_df is None or len(events_df) == 0:
        raise ValueError('fit_response_glm: empty response table')
    if event_name not in set(events_df['event']):
        raise ValueError(
            f'unknown event {event_name!r}; available: {sorted(set(events_df["event"]))}'
        )
    df = events_df[(events_df['event'] == event_name) & (events_df['probabilityLeft'] == 0.5)]
    df = df if 'side' in df else add_relative_contrast(df)
    df = df[np.isfinite(df[response_col].astype(float)) & df['contrast'].notna()]
    coefs, ses, index = [], [], []
    for key, rec in df.groupby(GLM_INDEX, sort=True):
        x = glm_design(rec, contrast_coding)
        coded = np.isfinite(x).all(axis=1)  # e.g. a contrast the coding has no level for
        x, rec = x[coded], rec[coded]
        if len(rec) < min_trials:
            continue
        # a recording lateral to no side (midline region): no side terms, NaN in the tables
        terms = _NO_SIDE_TERMS if rec['side'].isna().all() else np.arange(len(GLM_TERMS))
        if np.linalg.matrix_rank(x[:, terms]) < len(terms):
            warnings.warn(
                f'fit_response_glm: rank-deficient design for {key}, skipped', stacklevel=2
            )
            continue
        coef, se = np.full(len(GLM_TERMS), np.nan), np.full(len(GLM_TERMS), np.nan)
        coef[terms], se[terms] = ols_with_se(x[:, terms], rec[response_col].to_numpy(float))
        coefs.append(coef), ses.append(se), index.append(key)
    idx = (
        pd.MultiIndex.from_tuples(index, names=GLM_INDEX)
        if index
        else pd.MultiIndex.from_tuples([], names=GLM_INDEX)
    )
    return (
        pd.DataFrame(coefs, index=idx, columns=GLM_TERMS),
        pd.DataFrame(ses, index=idx, columns=GLM_TERMS),
    )


# ---------------------------------------------------------------------------
# Task encoding: PCA / ICA of the GLM coefficients
# ---------------------------------------------------------------------------
@dataclass
class GLMPCAResult:
    """A decomposition of GLM coefficients across recordings.

    Attributes
    ----------
    scores : pandas.DataFrame, shape (n_recordings, n_components)
    components : pandas.DataFrame, shape (n_components, n_features)
        Loadings (rows PC1…/IC1…).
    explained_variance_ratio : ndarray, shape (n_components,)
    feature_names : list of str
    target_labels : ndarray of str, shape (n_recordings,)
    index : pandas.Index
    method : {'pca', 'ica'}
    """

    scores: pd.DataFrame
    components: pd.DataFrame
    explained_variance_ratio: np.ndarray
    feature_names: list
    target_labels: np.ndarray
    index: pd.Index
    method: str = 'pca'


def _standardise_coefficients(coefs, cohort_weighted):
    """Drop the intercept, z-score each column (SD 0 → 1); return (X_std, X_weighted)."""
    x = coefs.drop(columns=['intercept'], errors='ignore').dropna()
    sd = x.std(ddof=0).replace(0, 1.0)
    x_std = (x - x.mean()) / sd
    if not cohort_weighted:
        return x_std, x_std.to_numpy()
    targets = x_std.index.get_level_values('target_NM')
    counts = pd.Series(targets).map(pd.Series(targets).value_counts()).to_numpy(float)
    w = 1.0 / counts
    w *= len(w) / w.sum()
    return x_std, x_std.to_numpy() * np.sqrt(w)[:, None]


def pca_glm_coefficients(coefs, n_components=3, cohort_weighted=False):
    """PCA (by SVD) of the standardised GLM coefficients.

    With ``cohort_weighted`` each row is weighted 1/n_k for its target_NM (rescaled to
    sum to N) before the SVD, so every cohort counts equally; the scores always project
    the unweighted standardised data.

    Returns
    -------
    GLMPCAResult
    """
    x_std, x_fit = _standardise_coefficients(coefs, cohort_weighted)
    n = min(n_components, *x_fit.shape)
    _, s, vt = np.linalg.svd(x_fit - x_fit.mean(axis=0), full_matrices=False)
    names = [f'PC{i + 1}' for i in range(n)]
    components = pd.DataFrame(vt[:n], index=names, columns=x_std.columns)
    scores = pd.DataFrame(x_std.to_numpy() @ vt[:n].T, index=x_std.index, columns=names)
    return GLMPCAResult(
        scores,
        components,
        (s**2 / np.sum(s**2))[:n],
        list(x_std.columns),
        x_std.index.get_level_values('target_NM').to_numpy(),
        x_std.index,
        'pca',
    )


def ica_glm_coefficients(coefs, n_components=3, cohort_weighted=False):
    """FastICA of the standardised GLM coefficients (same standardisation as PCA).

    Scores = X_std · pinv(components); the post-hoc variance of IC i is
    var(score_i)·‖component_i‖² / total variance, and ICs are sorted by it (descending).

    Returns
    -------
    GLMPCAResult
    """
    from sklearn.decomposition import FastICA

    x_std, x_fit = _standardise_coefficients(coefs, cohort_weighted)
    n = min(n_components, *x_fit.shape)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ica = FastICA(n, random_state=0, max_iter=1000).fit(x_fit)
    comps = ica.components_
    scores = x_std.to_numpy() @ np.linalg.pinv(comps)
    total = np.sum(np.var(x_std.to_numpy(), axis=0))
    var = np.var(scores, axis=0) * np.sum(comps**2, axis=1) / total
    order = np.argsort(var)[::-1]
    names = [f'IC{i + 1}' for i in range(n)]
    return GLMPCAResult(
        pd.DataFrame(scores[:, order], index=x_std.index, columns=names),
        pd.DataFrame(comps[order], index=names, columns=x_std.columns),
        var[order],
        list(x_std.columns),
        x_std.index.get_level_values('target_NM').to_numpy(),
        x_std.index,
        'ica',
    )


def _group_tests(values_by_group, component):
    """Kruskal–Wallis over the groups with ≥ 2 values, plus pairwise Mann–Whitney U."""
    from itertools import combinations

    from scipy import stats

    groups = {k: v for k, v in values_by_group.items() if len(v) >= 2}
    rows = []
    if len(groups) < 2:
        return rows
    try:
        h, p = stats.kruskal(*groups.values())
    except ValueError:  # all values identical
        h, p = np.nan, np.nan
    rows.append(
        {
            'pc': component,
            'kruskal_h': h,
            'kruskal_p': p,
            'target_a': None,
            'target_b': None,
            'mwu_u': np.nan,
            'mwu_p': np.nan,
        }
    )
    for a, b in combinations(sorted(groups), 2):
        u, pu = stats.mannwhitneyu(groups[a], groups[b], alternative='two-sided')
        rows.append(
            {
                'pc': component,
                'kruskal_h': h,
                'kruskal_p': p,
                'target_a': a,
                'target_b': b,
                'mwu_u': u,
                'mwu_p': pu,
            }
        )
    return rows


STATS_COLUMNS = ['pc', 'kruskal_h', 'kruskal_p', 'target_a', 'target_b', 'mwu_u', 'mwu_p']


def pca_score_stats(result):
    """Per component: Kruskal–Wallis over targets and pairwise Mann–Whitney U tests.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STATS_COLUMNS`; the omnibus row has target_a = target_b = None.
    """
    rows = []
    for comp in result.scores.columns:
        by = pd.Series(result.scores[comp].to_numpy(), index=result.target_labels)
        rows += _group_tests({k: v.to_numpy() for k, v in by.groupby(level=0)}, comp)
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def pca_subject_score_stats(result, recordings):
    """:func:`pca_score_stats` on per-subject mean scores.

    Parameters
    ----------
    recordings : pandas.DataFrame
        Maps eid → subject (columns eid, subject).

    Returns
    -------
    stats : pandas.DataFrame
    subject_means : pandas.DataFrame
        subject, target_NM, pc, mean, sem.
    """
    subjects = recordings.drop_duplicates('eid').set_index('eid')['subject']
    long = result.scores.reset_index().melt(
        id_vars=list(result.scores.index.names), var_name='pc', value_name='score'
    )
    long['subject'] = long['eid'].map(subjects)
    means = (
        long.groupby(['subject', 'target_NM', 'pc'])['score']
        .agg(mean='mean', sem='sem')
        .reset_index()
    )
    rows = []
    for comp, sub in means.groupby('pc'):
        rows += _group_tests({k: v['mean'].to_numpy() for k, v in sub.groupby('target_NM')}, comp)
    return pd.DataFrame(rows, columns=STATS_COLUMNS), means


# ---------------------------------------------------------------------------
# Task encoding: CCA between GLM coefficients and psychometric parameters
# ---------------------------------------------------------------------------
ALPHA_GRID = [1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3]
L1_RATIO_GRID = [0.0]


@dataclass
class CCAResult:
    """A fitted CCA between a neural view X and a behavioural view Y.

    Attributes
    ----------
    x_weights, y_weights : pandas.DataFrame
        Weights, index = feature names, columns CC1, CC2 …
    x_scores, y_scores : pandas.DataFrame
        Canonical variates, index = the rows used, columns CC1 …
    correlations : ndarray, shape (n_components,)
        Pearson r of the paired variates.
    p_values : ndarray, shape (n_components,)
        Permutation p-values (NaN without permutations).
    n_recordings, n_permutations : int
    alpha, l1_ratio : float or None
        Penalty of the sparse CCA (None for the classical one).
    """

    x_weights: pd.DataFrame
    y_weights: pd.DataFrame
    x_scores: pd.DataFrame
    y_scores: pd.DataFrame
    correlations: np.ndarray
    p_values: np.ndarray
    n_recordings: int
    n_permutations: int = 0
    alpha: float | None = None
    l1_ratio: float | None = None
    extra: dict = field(default_factory=dict)


def _pearson_columns(a, b):
    """Pearson r of matching columns of two (n, k) arrays; 0 for a constant column."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    den = np.sqrt(np.sum(a**2, axis=0) * np.sum(b**2, axis=0))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(den > 0, np.sum(a * b, axis=0) / np.where(den > 0, den, 1), 0.0)


def _cca_weights(x, y, n_components, sparse=None, seed=None):
    """Weights (wx (p, k), wy (q, k)) of a classical (sklearn) or sparse (cca-zoo) CCA."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if sparse is None:
            from sklearn.cross_decomposition import CCA

            model = CCA(n_components=n_components, max_iter=1000, scale=False).fit(x, y)
            return model.x_rotations_, model.y_rotations_
        from cca_zoo.sparse import ElasticNetCCA

        alpha, l1_ratio = sparse
        model = ElasticNetCCA(
            n_components,
            center=False,
            alpha=[alpha, alpha],
            l1_ratio=[l1_ratio, l1_ratio],
            random_state=seed,
        )
        model.fit([x, y])
        return model.weights_[0], model.weights_[1]


def _cca_r(x, y, n_components, sparse=None, seed=None):
    wx, wy = _cca_weights(x, y, n_components, sparse, seed)
    return _pearson_columns(x @ wx, y @ wy)


def permute_sessions(n_rows, session_labels, rng):
    """Row order that shuffles whole sessions: row i takes a row of session π(s_i).

    Without labels the rows are permuted individually. Returns an int array (n_rows,).
    """
    if session_labels is None:
        return rng.permutation(n_rows)
    labels = np.asarray(session_labels)
    sessions, inverse = np.unique(labels, return_inverse=True)
    first_row = np.array([np.flatnonzero(inverse == k)[0] for k in range(len(sessions))])
    return first_row[rng.permutation(len(sessions))][inverse]


def _permutation_p(x, y, r_obs, n_permutations, session_labels, sparse, seed):
    """p = (#{r_perm ≥ r_obs} + 1) / (n + 1) per component; a failed fit counts r = 0."""
    if n_permutations <= 0:
        return np.full(len(r_obs), np.nan)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(r_obs))
    for _ in range(n_permutations):
        order = permute_sessions(len(y), session_labels, rng)
        try:
            r_perm = _cca_r(x, y[order], len(r_obs), sparse, seed)
        except Exception:  # noqa: BLE001 - a degenerate permutation counts as r = 0
            r_perm = np.zeros(len(r_obs))
        exceed += r_perm >= r_obs
    return (exceed + 1) / (n_permutations + 1)


def _prepare_views(X, Y, n_components, scale):
    """Drop NaN rows and constant Y columns, standardise; return (X, Y, n_components)."""
    from sklearn.preprocessing import StandardScaler

    X, Y = pd.DataFrame(X), pd.DataFrame(Y)
    ok = X.notna().all(axis=1) & Y.notna().all(axis=1)
    X, Y = X[ok], Y[ok]
    if len(X) < 3:
        raise ValueError(f'CCA needs at least 3 complete rows, got {len(X)}')
    Y = Y.loc[:, Y.std(ddof=0) > 0]
    if Y.shape[1] == 0:
        raise ValueError('CCA: every behavioural column is constant')
    k = min(n_components or min(X.shape[1], Y.shape[1]), X.shape[1], Y.shape[1], len(X))
    if scale:
        X = pd.DataFrame(StandardScaler().fit_transform(X), index=X.index, columns=X.columns)
        Y = pd.DataFrame(StandardScaler().fit_transform(Y), index=Y.index, columns=Y.columns)
    return X, Y, k, ok


def fit_cca(
    X,
    Y,
    n_components=None,
    n_permutations=0,
    session_labels=None,
    seed=None,
    scale=True,
    sparse=None,
):
    """CCA of X (n, p) against Y (n, q) with a session-level permutation test.

    Parameters
    ----------
    X, Y : pandas.DataFrame
        Rows aligned (recordings). Rows with any NaN are dropped, then constant Y columns.
    n_components : int, optional
        Default min(p, q), capped at the number of rows.
    n_permutations : int
        Shuffles of Y (whole sessions when ``session_labels`` is given).
    session_labels : array-like, shape (n,), optional
    seed : int, optional
    scale : bool
        Standardise both views first.
    sparse : (alpha, l1_ratio), optional
        Use cca-zoo's ElasticNetCCA with this penalty instead of sklearn's CCA.

    Returns
    -------
    CCAResult

    Raises
    ------
    ValueError
        Fewer than 3 complete rows or no non-constant Y column.
    """
    X, Y, k, ok = _prepare_views(X, Y, n_components, scale)
    labels = None if session_labels is None else np.asarray(session_labels)[ok.to_numpy()]
    x, y = X.to_numpy(float), Y.to_numpy(float)
    wx, wy = _cca_weights(x, y, k, sparse, seed)
    names = [f'CC{i + 1}' for i in range(k)]
    r = _pearson_columns(x @ wx, y @ wy)
    p = _permutation_p(x, y, r, n_permutations, labels, sparse, seed)
    return CCAResult(
        pd.DataFrame(wx, index=X.columns, columns=names),
        pd.DataFrame(wy, index=Y.columns, columns=names),
        pd.DataFrame(x @ wx, index=X.index, columns=names),
        pd.DataFrame(y @ wy, index=Y.index, columns=names),
        r,
        p,
        len(X),
        int(n_permutations),
        None if sparse is None else sparse[0],
        None if sparse is None else sparse[1],
    )


def _unit_norm(result):
    """Rescale each weight column to L2 norm 1 (scores rescaled alike); zero columns stay."""
    for w, s in ((result.x_weights, result.x_scores), (result.y_weights, result.y_scores)):
        norm = np.linalg.norm(w.to_numpy(), axis=0)
        norm[norm == 0] = 1.0
        w.loc[:, :] = w.to_numpy() / norm
        s.loc[:, :] = s.to_numpy() / norm
    return result


def fit_sparse_cca(
    X,
    Y,
    n_components=1,
    n_permutations=0,
    session_labels=None,
    seed=None,
    alpha=0.01,
    l1_ratio=0.0,
    unit_norm=True,
    scale=True,
):
    """Elastic-net CCA (cca-zoo ``ElasticNetCCA``) with the same permutation test.

    List-valued ``alpha`` or ``l1_ratio`` are grid-searched on the full data: the pair
    with the largest CC1 correlation is used. With ``unit_norm`` each weight column is
    rescaled to L2 norm 1.

    Returns
    -------
    CCAResult
    """
    alphas, ratios = np.atleast_1d(alpha), np.atleast_1d(l1_ratio)
    best = (float(alphas[0]), float(ratios[0]))
    if len(alphas) * len(ratios) > 1:
        Xp, Yp, k, _ = _prepare_views(X, Y, n_components, scale)
        grid = [(float(a), float(l)) for a in alphas for l in ratios]  # noqa: E741
        scores = [_cca_r(Xp.to_numpy(), Yp.to_numpy(), k, g, seed)[0] for g in grid]
        best = grid[int(np.nanargmax(scores))]
    result = fit_cca(X, Y, n_components, n_permutations, session_labels, seed, scale, best)
    return _unit_norm(result) if unit_norm else result


def cross_project_cca(X_z, Y_z, target_result):
    """Pearson r between X·wx_CC1 and Y·wy_CC1 using another cohort's CC1 weights.

    Columns of the other cohort that this one dropped (constant here, hence 0 once
    z-scored) count as 0.
    """
    x = pd.DataFrame(X_z).reindex(columns=target_result.x_weights.index, fill_value=0.0)
    y = pd.DataFrame(Y_z).reindex(columns=target_result.y_weights.index, fill_value=0.0)
    x, y = x.to_numpy(float), y.to_numpy(float)
    zx = x @ target_result.x_weights['CC1'].to_numpy()
    zy = y @ target_result.y_weights['CC1'].to_numpy()
    return float(_pearson_columns(zx[:, None], zy[:, None])[0])


def _cosine(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def align_cca_signs(results, reference=None):
    """Flip cohorts whose neural CC1 weights point away from the reference cohort's.

    Parameters
    ----------
    results : dict
        cohort → :class:`CCAResult` (modified in place and returned).
    reference : str, optional
        Default: the first cohort in sorted order.
    """
    if not results:
        return results
    reference = reference or sorted(results)[0]
    ref = results[reference].x_weights['CC1']
    for result in results.values():
        w = result.x_weights['CC1'].reindex(ref.index).fillna(0).to_numpy()
        if _cosine(w, ref.to_numpy()) < 0:
            for frame in (result.x_weights, result.y_weights, result.x_scores, result.y_scores):
                frame['CC1'] = -frame['CC1']
    return results


def compare_cca_weights(a, b):
    """Cosine similarity of two results' CC1 weights: {neural_cosine, behavioral_cosine}."""
    wx = a.x_weights['CC1'].align(b.x_weights['CC1'], fill_value=0)
    wy = a.y_weights['CC1'].align(b.y_weights['CC1'], fill_value=0)
    return {
        'neural_cosine': _cosine(wx[0].to_numpy(), wx[1].to_numpy()),
        'behavioral_cosine': _cosine(wy[0].to_numpy(), wy[1].to_numpy()),
    }


def _zscore(frame):
    sd = frame.std(ddof=0).replace(0, 1.0)
    return (frame - frame.mean()) / sd


def fit_cohort_cca(
    features,
    psych,
    n_permutations=1000,
    seed=42,
    min_recordings=10,
    sparse=False,
    alpha=ALPHA_GRID,
    l1_ratio=L1_RATIO_GRID,
    unit_norm=True,
):
    """One-component CCA per target_NM cohort, signs aligned across cohorts.

    Parameters
    ----------
    features : pandas.DataFrame
        Neural view: GLM features per recording, index with levels eid and target_NM.
    psych : pandas.DataFrame
        Behavioural view aligned to ``features`` (same index), e.g. psych_50_* columns.
    min_recordings : int
        Cohorts with fewer complete rows are skipped.

    Returns
    -------
    results : dict
        cohort → :class:`CCAResult` (views z-scored within the cohort; permutations shuffle
        sessions, i.e. eids).
    views : dict
        cohort → (X_z, Y_z) used for the fit (for cross-projections).

    Raises
    ------
    ValueError
        No cohort could be fitted.
    """
    results, views = {}, {}
    for cohort in sorted(features.index.get_level_values('target_NM').unique()):
        x = features.xs(cohort, level='target_NM', drop_level=False)
        x = x.loc[:, x.notna().any()]  # a midline cohort has no side terms (all NaN)
        y = psych.loc[x.index]
        ok = x.notna().all(axis=1) & y.notna().all(axis=1)
        x, y = x[ok], y[ok].loc[:, y[ok].std(ddof=0) > 0]
        if len(x) < min_recordings or y.shape[1] == 0:
            continue
        x_z, y_z = _zscore(x), _zscore(y)
        labels = x.index.get_level_values('eid')
        try:
            if sparse:
                res = fit_sparse_cca(
                    x_z,
                    y_z,
                    1,
                    n_permutations,
                    labels,
                    seed,
                    alpha,
                    l1_ratio,
                    unit_norm,
                    scale=False,
                )
            else:
                res = fit_cca(x_z, y_z, 1, n_permutations, labels, seed, scale=False)
        except (ValueError, np.linalg.LinAlgError) as e:
            warnings.warn(f'fit_cohort_cca: {cohort} skipped ({e})', stacklevel=2)
            continue
        results[cohort], views[cohort] = res, (x_z, y_z)
    if not results:
        raise ValueError(f'fit_cohort_cca: no cohort with >= {min_recordings} recordings')
    return align_cca_signs(results), views
