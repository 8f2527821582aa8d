"""Linear mixed models of trial-level response magnitudes (statsmodels MixedLM).

Default model, per (target-NM, event)::

    response ~ log_contrast * side * reward + (1 | subject)

with ``log_contrast = ln(contrast + 1)`` (contrast in %), ``side`` = +0.5 contra / -0.5
ipsi and ``reward`` = +0.5 correct / -0.5 incorrect, fitted by REML with Powell's method.
Because side and reward are coded ±0.5, the ``log_contrast`` coefficient is the contrast
slope averaged over sides and outcomes, and ``reward`` is the correct - incorrect
difference at 0 % contrast averaged over sides.

With fewer subjects than ``min_subjects`` a mixed model cannot separate subject and
residual variance; :func:`fit_response_lmm` then returns None, or, with
``fallback_ols=True``, an ordinary least-squares fit of the same fixed effects (labelled
``kind='ols'``; its standard errors ignore the repeated measures of one subject).
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from iblnm import config

SUMMARY_COLUMNS = ['Coef.', 'Std.Err.', 'z', 'P>|z|']
DEFAULT_FORMULA = '{response} ~ log_contrast * side * reward'


@dataclass
class LMMResult:
    """A fitted model of one group of trials.

    Attributes
    ----------
    result : statsmodels results (MixedLMResults or OLS RegressionResults)
    summary_df : pandas.DataFrame
        Fixed effects: index term, columns :data:`SUMMARY_COLUMNS`.
    variance_explained : dict
        ``{'marginal': R², 'conditional': R²}`` (fixed effects; fixed + random), in [0, 1].
    random_effects : dict
        Subject -> Series of random effects (empty for OLS).
    kind : {'mixed', 'ols'}
    n_obs, n_subjects : int
    contrast_coding : str
    """

    result: object
    summary_df: pd.DataFrame
    variance_explained: dict
    random_effects: dict = field(default_factory=dict)
    kind: str = 'mixed'
    n_obs: int = 0
    n_subjects: int = 0
    contrast_coding: str = 'log'


def code_predictors(df, contrast_coding='log'):
    """Add numeric predictors to a trial table (a copy).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``contrast`` (%), ``side`` ('contra'/'ipsi', see
        :func:`iblnm.analysis.responses.add_side`) and ``feedbackType`` (1/-1).
    contrast_coding : str
        See :func:`iblnm.config.get_contrast_coding`.

    Returns
    -------
    pandas.DataFrame
        With ``log_contrast`` (coded contrast), ``side`` (+0.5 contra / -0.5 ipsi, 0 for a
        recording lateral to no side, e.g. a midline region: the mean of the two levels; the
        label is kept in ``side_label``) and ``reward`` (+0.5 correct / -0.5 incorrect).
    """
    transform, _ = config.get_contrast_coding(contrast_coding)
    out = df.copy()
    out['side_label'] = out['side']
    out['log_contrast'] = transform(out['contrast'].to_numpy(dtype=float))
    out['side'] = np.select(
        [out['side_label'] == 'contra', out['side_label'] == 'ipsi'], [0.5, -0.5], 0.0
    )
    out['reward'] = np.where(out['feedbackType'] == 1, 0.5, -0.5)
    return out


def without_side(formula):
    """``formula`` (patsy) without its terms involving ``side``: the model of a group whose
    recordings are lateral to no side (a midline region such as the DR).

    Examples
    --------
    >>> without_side('{response} ~ log_contrast * side * reward')
    '{response} ~ log_contrast + reward + log_contrast:reward'
    >>> without_side('reward + log_contrast + side')
    'reward + log_contrast'
    """
    import patsy

    lhs, _, rhs = formula.rpartition('~')
    desc = patsy.ModelDesc.from_formula(rhs)
    desc.rhs_termlist = [
        t for t in desc.rhs_termlist if not any(f.name() == 'side' for f in t.factors)
    ]
    kept = desc.describe().lstrip('~ ').strip()
    return f'{lhs.strip()} ~ {kept}' if lhs.strip() else kept


def has_side_term(fit):
    """Does a fitted :class:`LMMResult` model the side (a term involving ``side``)?"""
    return any('side' in name.split(':') for name in fit.summary_df.index)


def variance_explained(result, y, fixed=None):
    """Marginal and conditional R² (Nakagawa-style, from the fitted values).

    marginal = var(Xβ) / var(y); conditional = (var(Xβ) + var(fitted - Xβ)) / var(y), both
    clipped to [0, 1]; 0 when var(y) = 0.
    """
    y = np.asarray(y, dtype=float)
    fixed = np.asarray(result.fittedvalues if fixed is None else fixed, dtype=float)
    random = np.asarray(result.fittedvalues, dtype=float) - fixed
    return {
        'marginal': explained_fraction(y, np.var(fixed)),
        'conditional': explained_fraction(y, np.var(fixed) + np.var(random)),
    }


def explained_fraction(y, variance):
    """``variance`` / var(y) clipped to [0, 1]; 0 when var(y) = 0 (e.g. marginal R² with the
    variance of the fixed-effect prediction)."""
    var_y = np.var(np.asarray(y, dtype=float))
    return 0.0 if var_y == 0 else float(np.clip(variance / var_y, 0.0, 1.0))


def _summary(result):
    table = pd.DataFrame(
        {
            'Coef.': result.params,
            'Std.Err.': result.bse,
            'z': result.tvalues,
            'P>|z|': result.pvalues,
        }
    )
    fixed = result.model.exog_names
    return table.loc[[t for t in fixed if t in table.index], SUMMARY_COLUMNS]


def fit_mixedlm(formula, df, groups, re_formula='1', reml=True, methods=('powell',), maxiter=500):
    """The one way iblnm fits a linear mixed model: a converged statsmodels fit, or None.

    The optimisers in ``methods`` are tried in order; a fit is accepted only when it
    raises nothing, statsmodels does not warn that it failed to converge, and its fixed
    effects are finite (a non-converged fit's standard errors and tests are not trusted,
    so it is never reported as a result).

    Returns
    -------
    (MixedLM model, MixedLMResults) or None
    """
    for method in methods:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', ConvergenceWarning)
                model = smf.mixedlm(formula, df, groups=df[groups], re_formula=re_formula)
                result = model.fit(reml=reml, method=method, maxiter=maxiter)
        except Exception:  # noqa: BLE001 - any failed fit means "no model" with this method
            continue
        if any('failed to converge' in str(w.message) for w in caught):
            continue
        if np.all(np.isfinite(result.fe_params)):
            return model, result
    return None


def fit_lmm(formula, df, groups, re_formula='1', reml=True):
    """Fit ``smf.mixedlm(formula, df, groups, re_formula)`` by Powell (maxiter 500).

    Returns
    -------
    LMMResult or None
        None when the response has zero variance or :func:`fit_mixedlm` gives no
        converged fit.
    """
    response = formula.split('~')[0].strip()
    if np.nanstd(df[response].to_numpy(dtype=float)) == 0:
        return None
    fitted = fit_mixedlm(formula, df, groups, re_formula=re_formula, reml=reml)
    if fitted is None:
        return None
    model, result = fitted
    fixed = model.exog @ result.fe_params.to_numpy()
    return LMMResult(
        result=result,
        summary_df=_summary(result),
        variance_explained=variance_explained(result, model.endog, fixed),
        random_effects={k: pd.Series(v) for k, v in result.random_effects.items()},
        kind='mixed',
        n_obs=int(result.nobs),
        n_subjects=int(df[groups].nunique()),
    )


def fit_ols(formula, df):
    """Ordinary least squares of the same fixed effects (no subject effect), as LMMResult."""
    try:
        result = smf.ols(formula, df).fit()
    except Exception:  # noqa: BLE001
        return None
    return LMMResult(
        result=result,
        summary_df=_summary(result),
        variance_explained=variance_explained(result, result.model.endog),
        kind='ols',
        n_obs=int(result.nobs),
    )


def fit_response_lmm(
    df,
    response_col='response_early',
    formula=None,
    re_formula='1',
    contrast_coding='log',
    min_subjects=2,
    fallback_ols=False,
):
    """Fit the response model to one group's trials.

    Parameters
    ----------
    df : pandas.DataFrame
        Trials with ``subject``, ``contrast``, ``side`` (labels) and ``feedbackType``, and
        ``response_col``; NaN responses are dropped.
    formula : str, optional
        Default ``'{response} ~ log_contrast * side * reward'``.
    min_subjects : int
        Fewer subjects -> None, or an OLS fit with ``fallback_ols``.

    Returns
    -------
    LMMResult or None
        None also when reward has fewer than 2 levels, the recordings lateral to a side have
        fewer than 2 sides, or the response SD is 0. A group with no recording lateral to a
        side (a midline region: every ``side`` None) is fitted without the side terms
        (:func:`without_side`).
    """
    data = code_predictors(df.dropna(subset=[response_col]), contrast_coding)
    formula = (formula or DEFAULT_FORMULA).format(response=response_col)
    sides = set(data['side']) - {0.0}  # 0: lateral to no side
    if not sides:
        formula = without_side(formula)
    if len(data) < 10 or len(sides) == 1 or data['reward'].nunique() < 2:
        return None
    if data[response_col].std() == 0:
        return None
    n_subjects = data['subject'].nunique()
    if n_subjects >= min_subjects:
        fit = fit_lmm(formula, data, 'subject', re_formula=re_formula)
    else:
        fit = fit_ols(formula, data) if fallback_ols else None
    if fit is not None:
        fit.n_subjects, fit.contrast_coding = n_subjects, contrast_coding
    return fit


def prepare_lmm_trials(
    magnitudes, response_col='response_early', probability_left=0.5, min_reaction_time=0.05
):
    """Trials entering the model: 50/50 block, a choice, reaction time > 0.05 s, finite response
    and a stimulus (a contrast; a trial without a stimulus is not coded as ipsi).

    ``magnitudes`` must already carry ``side`` labels; a recording lateral to no side (a
    midline region) keeps its trials with ``side`` None (coded 0 by :func:`code_predictors`).
    """
    keep = magnitudes[response_col].notna() & (magnitudes['choice'] != 0)
    has_side = magnitudes['side'].isin(['contra', 'ipsi'])
    keep &= magnitudes['contrast'].notna() & (has_side | magnitudes['side'].isna())
    keep &= magnitudes['reaction_time'] > min_reaction_time
    if probability_left is not None:
        keep &= np.isclose(magnitudes['probabilityLeft'], probability_left)
    return magnitudes[keep]


def fit_grouped_lmms(
    trials,
    by=('target_NM', 'event'),
    response_col='response_early',
    min_subjects=2,
    fallback_ols=False,
    **kwargs,
):
    """Fit :func:`fit_response_lmm` to every group of ``trials``.

    Returns
    -------
    dict
        ``{group key tuple: LMMResult}`` (groups whose fit returned None are left out).
    """
    out = {}
    for key, group in trials.groupby(list(by), observed=True, sort=True):
        fit = fit_response_lmm(
            group, response_col, min_subjects=min_subjects, fallback_ols=fallback_ols, **kwargs
        )
        if fit is not None:
            out[key if isinstance(key, tuple) else (key,)] = fit
    return out


def coefficient_table(results, by=('target_NM', 'event')):
    """Fixed effects of grouped fits in long form.

    Returns
    -------
    pandas.DataFrame
        Columns ``by``..., ``term``, ``coef``, ``se``, ``z``, ``p``, ``ci_lower``,
        ``ci_upper`` (95 %, ±1.96 SE), ``kind``, ``n_obs``, ``n_subjects``,
        ``r2_marginal``, ``r2_conditional``.
    """
    frames = []
    for key, fit in results.items():
        table = fit.summary_df.rename(columns=dict(zip(SUMMARY_COLUMNS, ['coef', 'se', 'z', 'p'])))
        table = table.rename_axis('term').reset_index()
        for name, value in zip(by, key):
            table[name] = value
        table['kind'], table['n_obs'], table['n_subjects'] = fit.kind, fit.n_obs, fit.n_subjects
        table['r2_marginal'] = fit.variance_explained['marginal']
        table['r2_conditional'] = fit.variance_explained['conditional']
        frames.append(table)
    columns = [
        *by,
        'term',
        'coef',
        'se',
        'z',
        'p',
        'ci_lower',
        'ci_upper',
        'kind',
        'n_obs',
        'n_subjects',
        'r2_marginal',
        'r2_conditional',
    ]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out['ci_lower'], out['ci_upper'] = (
        out['coef'] - 1.96 * out['se'],
        out['coef'] + 1.96 * out['se'],
    )
    return out[columns]


def _predict(fit, grid):
    """Fixed-effect prediction and 95 % CI (±1.96·sqrt(x'Σx)) at coded predictor rows.

    ``grid`` holds ``log_contrast``, ``side`` and ``reward`` in model units; a copy with
    ``predicted``, ``ci_lower`` and ``ci_upper`` is returned.
    """
    import patsy

    rhs = fit.result.model.formula.split('~', 1)[1]
    design = patsy.dmatrix(rhs, grid, return_type='dataframe')
    names = [n for n in fit.summary_df.index if n in design.columns]
    x = design[names].to_numpy()
    beta = fit.result.params[names].to_numpy()
    cov = fit.result.cov_params().loc[names, names].to_numpy()
    se = np.sqrt(np.einsum('ij,jk,ik->i', x, cov, x))
    out = grid.copy()
    out['predicted'] = x @ beta
    out['ci_lower'], out['ci_upper'] = out['predicted'] - 1.96 * se, out['predicted'] + 1.96 * se
    return out


def predict_grid(fit, contrasts, contrast_coding='log'):
    """Fixed-effect predictions with 95 % CI over contrasts x side x reward.

    Parameters
    ----------
    fit : LMMResult
    contrasts : sequence of float
        Contrasts (%) of the grid.

    Returns
    -------
    pandas.DataFrame
        ``contrast``, ``side`` (label: 'contra'/'ipsi'; 'neither' for a fit without side
        terms, a midline region), ``outcome`` (label), ``predicted``, ``ci_lower``,
        ``ci_upper``; CI = ±1.96·sqrt(x'Σx) with Σ the fixed-effect covariance.
    """
    transform, _ = config.get_contrast_coding(contrast_coding)
    sides = (0.5, -0.5) if has_side_term(fit) else (0.0,)
    grid = pd.DataFrame(
        [(c, s, r) for c in contrasts for s in sides for r in (0.5, -0.5)],
        columns=['contrast', 'side', 'reward'],
    )
    grid['log_contrast'] = transform(grid['contrast'].to_numpy(dtype=float))
    grid = _predict(fit, grid)
    grid['side'] = np.select([grid['side'] > 0, grid['side'] < 0], ['contra', 'ipsi'], 'neither')
    grid['outcome'] = np.where(grid['reward'] > 0, 'correct', 'incorrect')
    return grid.drop(columns=['reward', 'log_contrast'])


MARGINAL_LEVELS = {
    'reward': {'correct': 0.5, 'incorrect': -0.5},
    'side': {'contra': 0.5, 'ipsi': -0.5},
}


def compute_marginal_means(fit, factor, contrasts=config.ANALYSIS_CONTRASTS, contrast_coding='log'):
    """Model-estimated mean response at each level of one factor, the others averaged.

    Side and reward are coded ±0.5, so setting them to 0 averages over their two levels;
    the coded contrast is set to the mean of the coded ``contrasts`` (%) unless it is the
    factor.

    Parameters
    ----------
    fit : LMMResult
        A :func:`fit_response_lmm` fit.
    factor : {'reward', 'side', 'contrast'}

    Returns
    -------
    pandas.DataFrame
        ``factor``, ``level`` ('correct'/'incorrect', 'contra'/'ipsi' or the contrast in %),
        ``mean``, ``ci_lower``, ``ci_upper`` (95 %; response units, e.g. z).
    """
    transform, _ = config.get_contrast_coding(contrast_coding)
    coded = transform(np.asarray(contrasts, dtype=float))
    if factor == 'contrast':
        levels = list(contrasts)
        grid = pd.DataFrame({'log_contrast': coded, 'side': 0.0, 'reward': 0.0})
    elif factor in MARGINAL_LEVELS:
        levels = list(MARGINAL_LEVELS[factor])
        grid = pd.DataFrame(
            {'log_contrast': np.nanmean(coded), 'side': 0.0, 'reward': 0.0},
            index=range(len(levels)),
        )
        grid[factor] = list(MARGINAL_LEVELS[factor].values())
    else:
        raise ValueError(f"factor must be 'reward', 'side' or 'contrast', not {factor!r}")
    out = _predict(fit, grid)
    return pd.DataFrame(
        {
            'factor': factor,
            'level': levels,
            'mean': out['predicted'],
            'ci_lower': out['ci_lower'],
            'ci_upper': out['ci_upper'],
        }
    )


def marginal_means_table(results, by=('target_NM', 'event'), contrasts=config.ANALYSIS_CONTRASTS):
    """:func:`compute_marginal_means` of every grouped fit and factor, in long form (no 'side'
    rows for a fit without side terms: a midline region)."""
    frames = []
    for key, fit in results.items():
        for factor in (
            ('reward', 'side', 'contrast') if has_side_term(fit) else ('reward', 'contrast')
        ):
            table = compute_marginal_means(fit, factor, contrasts, fit.contrast_coding)
            for name, value in zip(by, key):
                table.insert(0, name, value)
            frames.append(table.assign(kind=fit.kind))
    columns = [*by, 'factor', 'level', 'mean', 'ci_lower', 'ci_upper', 'kind']
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


# ---------------------------------------------------------------------------
# Does the neural response predict the movement? (wheel kinematics)
# ---------------------------------------------------------------------------
WHEEL_LMM_COLUMNS = [
    'target_NM',
    'contrast',
    'dv',
    'delta_r2',
    'r2_base',
    'r2_full',
    'lrt_chi2',
    'lrt_pvalue',
    'nm_coefficient',
    'nm_pvalue',
    'n_trials',
    'n_subjects',
]
WHEEL_BASE_FORMULA = '{dv} ~ C(side) * C(choice)'


def fit_wheel_lmm(df, dv_col, response_col='response_early', min_subjects=2, min_trials=10):
    """Does the response add to side x choice in explaining a movement variable?

    Two mixed models with a subject random intercept, fitted by maximum likelihood (so
    their likelihoods compare): ``dv ~ C(side) * C(choice)`` and the same + ``response_col``.

    Parameters
    ----------
    df : pandas.DataFrame
        Trials of one group with ``subject``, ``side`` ('contra'/'ipsi'), ``choice`` (±1),
        ``dv_col`` (e.g. reaction_time in s, peak_velocity in rad/s) and ``response_col``.

    Returns
    -------
    dict or None
        ``delta_r2`` (marginal R² full - base), ``r2_base``, ``r2_full``, ``lrt_chi2``
        (max(0, 2 Δ log-likelihood)) and ``lrt_pvalue`` (χ², 1 df), ``nm_coefficient`` and
        ``nm_pvalue`` of the response term, ``n_trials``, ``n_subjects``. None with fewer
        than ``min_subjects`` subjects or ``min_trials`` trials, a single side or choice,
        or a failed fit.
    """
    from scipy import stats

    data = df.dropna(subset=[dv_col, response_col, 'side', 'choice', 'subject'])
    n_subjects = data['subject'].nunique()
    if n_subjects < min_subjects or len(data) < min_trials:
        return None
    if data['side'].nunique() < 2 or data['choice'].nunique() < 2:
        return None
    base_formula = WHEEL_BASE_FORMULA.format(dv=dv_col)
    base = fit_lmm(base_formula, data, 'subject', reml=False)
    full = fit_lmm(f'{base_formula} + {response_col}', data, 'subject', reml=False)
    if base is None or full is None:
        return None
    lrt = max(0.0, 2 * (full.result.llf - base.result.llf))
    term = full.summary_df.loc[response_col]
    return {
        'delta_r2': full.variance_explained['marginal'] - base.variance_explained['marginal'],
        'r2_base': base.variance_explained['marginal'],
        'r2_full': full.variance_explained['marginal'],
        'lrt_chi2': lrt,
        'lrt_pvalue': float(stats.chi2.sf(lrt, 1)),
        'nm_coefficient': float(term['Coef.']),
        'nm_pvalue': float(term['P>|z|']),
        'n_trials': len(data),
        'n_subjects': n_subjects,
    }


def fit_wheel_lmms(
    trials, dvs=tuple(config.TIMING_VARS), response_col='response_early', min_subjects=2
):
    """:func:`fit_wheel_lmm` per target-NM x contrast x movement variable.

    ``trials`` are stimulus-locked rows (one per recording x trial) with ``side`` labels;
    only 50/50-block trials with a choice are used (as in the spec). The base model's
    stimulus covariate is the side relative to the fiber, and for a recording lateral to no
    side (``side`` None: a midline region) the stimulus side itself (``stim_side``
    'left'/'right'): it absorbs how the movement depends on the stimulus, which needs no
    fiber side.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`WHEEL_LMM_COLUMNS`, one row per fitted group.
    """
    keep = np.isclose(trials['probabilityLeft'], 0.5) & (trials['choice'] != 0)
    if 'stim_side' in trials:
        trials = trials.assign(
            side=trials['side'].where(trials['side'].notna(), trials['stim_side'])
        )
    rows = []
    for (target, contrast), group in trials[keep].groupby(['target_NM', 'contrast']):
        for dv in dvs:
            fit = fit_wheel_lmm(group, dv, response_col, min_subjects=min_subjects)
            if fit is not None:
                rows.append({'target_NM': target, 'contrast': contrast, 'dv': dv, **fit})
    return pd.DataFrame(rows, columns=WHEEL_LMM_COLUMNS)
