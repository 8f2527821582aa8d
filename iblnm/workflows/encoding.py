"""Movement-encoding and task-encoding runs: load the response table, analyse, write, plot.

``scripts/movement_encoding.py`` and ``scripts/task_encoding.py`` parse their flags and call
:func:`run_movement_encoding` / :func:`run_task_encoding`. The statistics live in
:mod:`iblnm.analysis.encoding`, the figures in :mod:`iblnm.vis.encoding`.
Every output path derives from ``root`` (default: the project root), so a run on another
output tree (tests, ``IBLNM_ROOT``) never touches the project's files.
"""

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from iblnm import config, util
from iblnm import validation as v
from iblnm.analysis import encoding as enc

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# The response-magnitudes table
# ---------------------------------------------------------------------------
def load_group(root=None, targetnms=config.TARGETNMS_TO_ANALYZE, **filter_kwargs):
    """The filtered :class:`iblnm.group.PhotometrySessionGroup` of the outputs under ``root``.

    ``root`` None uses the configured project paths; ``targetnms`` None keeps every valid
    target-NM (:data:`iblnm.config.VALID_TARGETNMS`).
    """
    from iblnm.group import PhotometrySessionGroup

    targetnms = config.VALID_TARGETNMS if targetnms is None else targetnms
    return PhotometrySessionGroup.from_catalog(root=root, targetnms=targetnms, **filter_kwargs)


def response_magnitudes(group, events=config.RESPONSE_EVENTS, mask=True):
    """Trial-level response magnitudes of a group, with ``movement_time`` added.

    ``group.magnitude_table`` (the rows and columns of
    ``PhotometrySessionGroup.get_response_magnitudes``: one row per recording x event x
    trial, baseline-subtracted window means) plus ``movement_time`` (s, response -
    firstMovement, :func:`iblnm.task.get_trial_timings`); text columns as objects.
    ``mask=False`` keeps each event's trace after the next event: movement encoding asks
    whether the stimulus-aligned response reflects the upcoming movement, which masking
    would remove by construction. A recording that fails is logged in ``group.errors`` and
    skipped.
    """
    from iblnm.analysis import responses as ar

    table = group.magnitude_table(events, mask=mask, movement_time=True)
    table = table.reindex(columns=[*ar.MAGNITUDE_COLUMNS, 'movement_time'])
    categorical = table.select_dtypes('category').columns
    return table.astype(dict.fromkeys(categorical, object))


DEFAULT_PARAMS = [
    'psych_50_threshold',
    'psych_50_bias',
    'psych_50_lapse_left',
    'psych_50_lapse_right',
]


def output_dirs(analysis, root=None):
    """(results dir, figures dir) of ``analysis`` in {'movement_encoding', 'task_encoding'}."""
    if root is None:
        results = {
            'movement_encoding': config.MOVEMENT_ENCODING_DIR,
            'task_encoding': config.TASK_ENCODING_DIR,
        }[analysis]
        return Path(results), config.FIGURES_DIR / analysis
    root = Path(root)
    return root / 'results' / analysis, root / 'figures' / analysis


@contextmanager
def _quiet():
    """Silence numerical warnings of model fits (failures are handled, not printed)."""
    with warnings.catch_warnings(), np.errstate(all='ignore'):
        warnings.simplefilter('ignore')
        yield


def _event_name(event):
    return str(event).replace('_times', '')


# ---------------------------------------------------------------------------
# Movement encoding
# ---------------------------------------------------------------------------
def movement_tables(
    data,
    timing_vars,
    group_by='target_NM',
    min_subjects=config.MIN_SUBJECTS_MOVEMENT,
    min_trials=config.MIN_TRIALS_MOVEMENT,
):
    """LOSO model comparison and per-contrast slopes of every (cohort, timing variable).

    Parameters
    ----------
    data : pandas.DataFrame
        :func:`iblnm.analysis.encoding.prepare_movement_data` output.
    timing_vars : sequence of str
        Raw timing names; the models use ``log_{var}``.
    group_by : str
        Cohort column ('target_NM' or 'NM'); written as ``target_NM`` in the outputs.

    Returns
    -------
    loso, summary, slopes : pandas.DataFrame
    """
    loso, slopes = [], []
    for cohort, sub in data.groupby(group_by):
        for var in timing_vars:
            col = f'log_{var}'
            if col not in sub or sub[col].notna().sum() < min_trials:
                continue
            with _quiet():
                rows = enc.loso_cv_movement_lmm(sub, timing=col, min_subjects=min_subjects)
                per_c = enc.per_contrast_slopes(sub, timing=col, min_trials=min_trials)
            loso.append(rows.assign(target_NM=cohort))
            slopes.append(per_c.assign(target_NM=cohort, timing_col=col))
    loso = (
        pd.concat(loso, ignore_index=True)
        if loso
        else pd.DataFrame(columns=['target_NM', *enc.LOSO_COLUMNS])
    )
    slopes = (
        pd.concat(slopes, ignore_index=True)
        if slopes
        else pd.DataFrame(columns=['target_NM', 'timing_col', *enc.SLOPE_COLUMNS])
    )
    loso = loso[['target_NM', *enc.LOSO_COLUMNS]]
    slopes = slopes[['target_NM', 'timing_col', *enc.SLOPE_COLUMNS]]
    return loso, enc.summarise_loso(loso), slopes


def movement_figures(
    data,
    loso,
    slopes,
    fig_dir,
    event,
    timing_vars,
    group_by='target_NM',
    min_subjects=config.MIN_SUBJECTS_MOVEMENT,
):
    """Descriptive, model-comparison and slope figures (SVG and PNG) under ``fig_dir``."""
    from iblnm.vis import encoding as ef
    from iblnm.vis import save_figure_formats

    paths = []
    for cohort, sub in data.groupby(group_by):
        if sub['subject'].nunique() < min_subjects:
            continue
        for var in timing_vars:
            if f'log_{var}' in sub:
                fig = ef.descriptive_figure(sub, cohort, f'log_{var}', event=event)
                stem = fig_dir / 'descriptive' / f'{cohort}_{_event_name(event)}_{var}'
                paths += save_figure_formats(fig, stem)
    if len(loso):
        paths += save_figure_formats(
            ef.model_comparison_figure(loso, event),
            fig_dir / 'model_comparison' / 'model_comparison',
        )
    if len(slopes):
        paths += save_figure_formats(
            ef.slopes_figure(slopes, event), fig_dir / 'slopes' / 'timing_slopes_by_contrast'
        )
    return paths


def run_movement_encoding(
    root=None,
    event='stimOn_times',
    timing_vars=('reaction_time', 'movement_time'),
    group_by='target_NM',
    targetnms=config.TARGETNMS_TO_ANALYZE,
    mask=False,
    min_subjects=config.MIN_SUBJECTS_MOVEMENT,
    min_trials=config.MIN_TRIALS_MOVEMENT,
    plot=True,
    plot_only=False,
    filter_kwargs=None,
    verbose=True,
):
    """Movement encoding of one event's responses: tables to results/, figures to figures/.

    Parameters
    ----------
    root : path, optional
        Pipeline output root (default: the configured project paths).
    event : str
        Responses modelled (default stimOn_times).
    timing_vars : sequence of str
        Timing variables (s), each compared with contrast in its own models.
    group_by : {'target_NM', 'NM'}
        Cohorts analysed separately.
    targetnms : collection of str or None
        Target-NMs kept (None: every valid one).
    mask : bool
        Cut each trace at the next event before the window mean (default False: see
        :func:`response_magnitudes`).
    plot_only : bool
        Redraw the figures from the saved tables.
    filter_kwargs : dict, optional
        Extra :meth:`PhotometrySessionGroup.filter_sessions` arguments.

    Returns
    -------
    dict
        ``trials``, ``loso``, ``summary``, ``slopes`` (DataFrames) and ``figures`` (paths).
    """
    out_dir, fig_dir = output_dirs('movement_encoding', root)
    trials_path = out_dir / 'movement_trials.pqt'
    if plot_only:
        data = pd.read_parquet(trials_path)
        loso = pd.read_csv(out_dir / 'loso_cv_model_comparison.csv')
        slopes = pd.read_csv(out_dir / 'per_contrast_slopes.csv')
        summary = enc.summarise_loso(loso)
    else:
        group = load_group(root, targetnms, verbose=verbose, **(filter_kwargs or {}))
        table = response_magnitudes(group, events=[event], mask=mask)
        data = enc.prepare_movement_data(table, event, timing_vars)
        loso, summary, slopes = movement_tables(
            data, timing_vars, group_by, min_subjects, min_trials
        )
        util.df2pqt(data, trials_path)
        util.write_csv(loso, out_dir / 'loso_cv_model_comparison.csv')
        util.write_csv(summary, out_dir / 'model_comparison_summary.csv')
        util.write_csv(slopes, out_dir / 'per_contrast_slopes.csv')
        util.write_log(group.errors, out_dir / 'movement_encoding_log.pqt')
        if verbose and group.errors:
            log.warning(
                f'movement encoding: {len(group.errors)} recording(s) skipped '
                f'(see {out_dir / "movement_encoding_log.pqt"})'
            )
    figures = (
        movement_figures(data, loso, slopes, fig_dir, event, timing_vars, group_by, min_subjects)
        if plot
        else []
    )
    if verbose:
        log.info(f'movement encoding: {len(data)} trials, {data["subject"].nunique()} subjects')
        log.info(
            summary.to_string(index=False) if len(summary) else 'no cohort with enough subjects'
        )
    return {'trials': data, 'loso': loso, 'summary': summary, 'slopes': slopes, 'figures': figures}


# ---------------------------------------------------------------------------
# Task encoding
# ---------------------------------------------------------------------------
def psychometric_features(index, performance, params=DEFAULT_PARAMS):
    """Psychometric parameters of each recording's session, aligned to ``index`` by eid."""
    perf = performance.drop_duplicates('eid').set_index('eid')
    perf = perf.reindex(columns=list(params))
    values = perf.reindex(index.get_level_values('eid')).to_numpy(float)
    return pd.DataFrame(values, index=index, columns=list(params))


def decompose(features, method='pca', n_components=3, cohort_weighted=False, subjects=None):
    """PCA/ICA of GLM features with the score statistics, as flat tables.

    Returns
    -------
    scores : pandas.DataFrame
        Index columns (eid, target_NM, brain_region, fiber_idx) and PC1…/IC1….
    components : pandas.DataFrame
        component, explained_variance and one column per feature.
    stats : pandas.DataFrame
        :func:`iblnm.analysis.encoding.pca_score_stats` rows (level 'recording') plus the
        per-subject tests (level 'subject') when ``subjects`` (eid, subject) is given.
    """
    fn = enc.ica_glm_coefficients if method == 'ica' else enc.pca_glm_coefficients
    result = fn(features, n_components=n_components, cohort_weighted=cohort_weighted)
    scores = result.scores.reset_index()
    components = result.components.copy()
    components.insert(0, 'explained_variance', result.explained_variance_ratio)
    stats = [enc.pca_score_stats(result).assign(level='recording')]
    if subjects is not None:
        stats.append(enc.pca_subject_score_stats(result, subjects)[0].assign(level='subject'))
    return scores, components.rename_axis('component').reset_index(), pd.concat(stats)


def cca_tables(results, views):
    """Flat tables of per-cohort CCA results (summary, weights, scores, cross, similarity)."""
    summary, weights, scores, cross, sims = [], [], [], [], []
    for cohort, res in results.items():
        summary.append(
            {
                'cohort': cohort,
                'correlation': res.correlations[0],
                'p_value': res.p_values[0],
                'n_recordings': res.n_recordings,
                'alpha': res.alpha,
                'l1_ratio': res.l1_ratio,
            }
        )
        for view, w in (('neural', res.x_weights), ('behavioral', res.y_weights)):
            weights += [
                {'cohort': cohort, 'view': view, 'feature': f, 'CC1': v}
                for f, v in w['CC1'].items()
            ]
        sc = res.x_scores.index.to_frame(index=False)
        scores.append(
            sc.assign(
                cohort=cohort,
                x_score=res.x_scores['CC1'].to_numpy(),
                y_score=res.y_scores['CC1'].to_numpy(),
            )
        )
        for other, other_res in results.items():
            x_z, y_z = views[cohort]
            cross.append(
                {
                    'data_cohort': cohort,
                    'weight_cohort': other,
                    'correlation': enc.cross_project_cca(x_z, y_z, other_res),
                }
            )
            if cohort < other:
                sims.append(
                    {
                        'cohort_a': cohort,
                        'cohort_b': other,
                        **enc.compare_cca_weights(res, other_res),
                    }
                )
    return {
        'summary': pd.DataFrame(summary),
        'weights': pd.DataFrame(weights),
        'scores': pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(),
        'cross_projections': pd.DataFrame(cross),
        'weight_similarities': pd.DataFrame(
            sims, columns=['cohort_a', 'cohort_b', 'neural_cosine', 'behavioral_cosine']
        ),
    }


def _glm_features(table, event, opts):
    coefs, ses = enc.fit_response_glm(
        table, event, min_trials=opts['min_trials'], contrast_coding=opts['contrast_coding']
    )
    features = coefs / ses if opts['weight_by_se'] else coefs
    return features.drop(columns='intercept'), coefs, ses


def task_encoding_event(table, performance, event, out_dir, opts, subjects=None):
    """GLM, PCA/ICA and per-cohort CCA of one event; write its CSVs; return its tables."""
    name, method = _event_name(event), opts['method']
    with _quiet():
        features, coefs, ses = _glm_features(table, event, opts)
    util.write_csv(coefs.reset_index(), out_dir / f'glm_coefficients_{name}.csv')
    util.write_csv(ses.reset_index(), out_dir / f'glm_standard_errors_{name}.csv')
    tables = {}
    if len(features) >= 3:
        with _quiet():
            scores, components, stats = decompose(
                features, method, 3, opts['cohort_weighted'], subjects
            )
        tables.update(
            {
                f'{method}_scores': scores,
                f'{method}_components': components,
                f'{method}_stats': stats,
            }
        )
    psych = psychometric_features(features.index, performance, opts['params'])
    try:
        with _quiet():
            results, views = enc.fit_cohort_cca(
                features,
                psych,
                n_permutations=opts['n_permutations'],
                seed=opts['seed'],
                min_recordings=opts['min_recordings'],
                sparse=opts['sparse'],
                unit_norm=opts['unit_norm'],
            )
        tables.update(cca_tables(results, views))
    except ValueError as e:
        log.warning(f'task encoding {name}: no CCA ({e})')
    for key, df in tables.items():
        util.write_csv(
            df, out_dir / f'{name}_{key}.csv' if key in CCA_KEYS else out_dir / f'{key}_{name}.csv'
        )
    return tables


CCA_KEYS = ('summary', 'weights', 'scores', 'cross_projections', 'weight_similarities')


def task_encoding_figures(tables, event, fig_dir, method='pca'):
    """PCA/ICA summary, per-cohort CCA scatters and the CCA summary of one event."""
    from iblnm.vis import encoding as ef
    from iblnm.vis import save_figure_formats

    name, paths = _event_name(event), []
    if f'{method}_scores' in tables:
        components = tables[f'{method}_components'].set_index('component')
        fig = ef.decomposition_figure(tables[f'{method}_scores'], components, event, method)
        paths += save_figure_formats(fig, fig_dir / method / f'{method}_summary_{name}')
    if 'summary' in tables and len(tables['summary']):
        for _, row in tables['summary'].iterrows():
            sc = tables['scores'][tables['scores']['cohort'] == row['cohort']]
            fig = ef.cca_scatter_figure(
                sc, row['cohort'], event, row['correlation'], row['p_value']
            )
            paths += save_figure_formats(
                fig, fig_dir / 'cca' / 'scatter' / f'{name}_{row["cohort"]}'
            )
        fig = ef.cca_summary_figure(tables['summary'], tables['weights'], event)
        paths += save_figure_formats(fig, fig_dir / 'cca' / 'summary' / f'{name}_summary')
    return paths


def _load_event_tables(out_dir, event, method):
    name, tables = _event_name(event), {}
    for key in (f'{method}_scores', f'{method}_components', f'{method}_stats'):
        if (out_dir / f'{key}_{name}.csv').exists():
            tables[key] = pd.read_csv(out_dir / f'{key}_{name}.csv')
    for key in CCA_KEYS:
        if (out_dir / f'{name}_{key}.csv').exists():
            tables[key] = pd.read_csv(out_dir / f'{name}_{key}.csv')
    return tables


def run_task_encoding(
    root=None,
    events=config.RESPONSE_EVENTS,
    contrast_coding='rank',
    cohort_weighted=False,
    ica=False,
    n_permutations=1000,
    params=DEFAULT_PARAMS,
    seed=42,
    weight_by_se=False,
    sparse=False,
    unit_norm=True,
    plot_only=False,
    min_recordings=10,
    min_trials=20,
    targetnms=config.TARGETNMS_TO_ANALYZE,
    filter_kwargs=None,
    verbose=True,
):
    """Task encoding: per-recording GLM → PCA/ICA and per-cohort CCA, for each event.

    Parameters
    ----------
    root : path, optional
        Pipeline output root (default: the configured project paths).
    events : sequence of str
    contrast_coding : {'rank', 'log', 'linear', 'log2'}
    cohort_weighted, ica : bool
        Weight each target-NM equally in the decomposition; ICA instead of PCA.
    n_permutations, seed : int
        CCA permutation test (sessions shuffled).
    params : sequence of str
        Psychometric columns of ``performance.pqt`` (behavioural view).
    weight_by_se : bool
        Use t-statistics (coef / SE) instead of raw coefficients.
    sparse, unit_norm : bool
        Elastic-net CCA (alpha grid-searched) and unit-norm weights.
    plot_only : bool
        Redraw the figures from the saved CSVs.
    min_recordings, min_trials : int
        Per cohort (CCA) and per recording (GLM).

    Returns
    -------
    dict
        event → its tables (DataFrames), plus ``figures`` (paths).
    """
    out_dir, fig_dir = output_dirs('task_encoding', root)
    method = 'ica' if ica else 'pca'
    opts = {
        'method': method,
        'contrast_coding': contrast_coding,
        'min_trials': min_trials,
        'weight_by_se': weight_by_se,
        'cohort_weighted': cohort_weighted,
        'n_permutations': n_permutations,
        'seed': seed,
        'min_recordings': min_recordings,
        'sparse': sparse,
        'unit_norm': unit_norm,
        'params': list(params),
    }
    if not plot_only:
        group = load_group(root, targetnms, verbose=verbose, **(filter_kwargs or {}))
        table = group.get_response_magnitudes(events=list(events))
        perf_path = (Path(root) / 'data' / 'performance.pqt') if root else config.PERFORMANCE_FPATH
        performance = (
            pd.read_parquet(perf_path) if perf_path.exists() else pd.DataFrame(columns=['eid'])
        )
        subjects = group.recordings[['eid', 'subject']]
    out, figures, errors = {}, [], []
    for event in events:
        try:
            if plot_only:
                out[event] = _load_event_tables(out_dir, event, method)
            else:
                out[event] = task_encoding_event(table, performance, event, out_dir, opts, subjects)
            figures += task_encoding_figures(out[event], event, fig_dir, method)
        except Exception as e:  # noqa: BLE001 - one event failing never stops the others
            log.warning(f'task encoding {_event_name(event)} failed: {type(e).__name__}: {e}')
            entry = v.make_log_entry(None, error=e)
            errors.append({**entry, 'error_message': f'{event}: {entry["error_message"]}'})
    if not plot_only:
        util.write_log(group.errors + errors, out_dir / 'task_encoding_log.pqt')
    if verbose:
        for event, tables in out.items():
            if 'summary' in tables:
                log.info(f'{_event_name(event)} CCA:\n{tables["summary"].to_string(index=False)}')
    out['figures'] = figures
    return out
