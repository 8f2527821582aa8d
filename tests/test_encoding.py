"""Movement encoding and task encoding: statistics on synthetic tables with known answers,
then the full runs on a simulated dataset whose kernels are the ground truth."""

import numpy as np
import pandas as pd
import pytest

from iblnm import config
from iblnm.analysis import encoding as enc


# ---------------------------------------------------------------------------
# Synthetic tables
# ---------------------------------------------------------------------------
def movement_table(driver='timing', n_subjects=3, n_trials=150, seed=0):
    """stimOn trials where the response follows log RT ('timing') or log contrast ('contrast').

    RT is slower at low contrast (as in the task), so both predictors correlate with y.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        contrast = rng.choice([0, 6.25, 12.5, 25, 100], n_trials)
        rt = 0.3 * (1 + 1.2 * np.exp(-contrast / 12)) * np.exp(0.45 * rng.standard_normal(n_trials))
        lc = np.log1p(contrast) / np.log(101)
        signal = -2.0 * np.log10(rt) if driver == 'timing' else 1.5 * lc
        rows.append(
            pd.DataFrame(
                {
                    'eid': f'e{s}',
                    'subject': f's{s}',
                    'target_NM': 'X-DA',
                    'brain_region': 'X',
                    'hemisphere': 'l',
                    'event': 'stimOn_times',
                    'trial': np.arange(n_trials),
                    'contrast': contrast,
                    'signed_contrast': contrast * rng.choice([-1, 1], n_trials),
                    'choice': rng.choice([-1, 1], n_trials),
                    'probabilityLeft': 0.5,
                    'feedbackType': rng.choice([-1, 1], n_trials, p=[0.2, 0.8]),
                    'reaction_time': rt,
                    'movement_time': rng.lognormal(np.log(0.2), 0.4, n_trials),
                    'response_early': signal + 0.3 * s + 0.4 * rng.standard_normal(n_trials),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def glm_table(n_recordings=12, n_trials=120, seed=0):
    """Recordings of two cohorts with known GLM coefficients (log contrast coding)."""
    rng = np.random.default_rng(seed)
    truth = {
        'A-DA': np.array([0.1, 1.0, 0.3, 0.5, 0.0, 0.0, 0.2]),
        'B-NE': np.array([0.0, -0.5, 0.0, 1.0, 0.4, 0.0, 0.0]),
    }
    rows = []
    for r in range(n_recordings):
        target = 'A-DA' if r % 2 else 'B-NE'
        contrast = rng.choice([0, 6.25, 12.5, 25, 100], n_trials)
        frame = pd.DataFrame(
            {
                'eid': f'e{r // 2}',
                'subject': f's{r % 4}',
                'target_NM': target,
                'brain_region': target.split('-')[0],
                'hemisphere': 'l',
                'fiber_idx': r % 2,
                'event': 'stimOn_times',
                'trial': np.arange(n_trials),
                'contrast': contrast,
                'signed_contrast': contrast * rng.choice([-1.0, 1.0], n_trials),
                'feedbackType': rng.choice([-1.0, 1.0], n_trials),
                'probabilityLeft': 0.5,
                'choice': 1.0,
            }
        )
        frame = frame.pipe(enc.add_relative_contrast)
        x = enc.glm_design(frame, 'log')
        frame['response_early'] = x @ truth[target] + 0.05 * rng.standard_normal(n_trials)
        rows.append(frame.drop(columns=['side', 'hemi_sign', 'relative_contrast']))
    return pd.concat(rows, ignore_index=True), truth


# ---------------------------------------------------------------------------
# Movement encoding
# ---------------------------------------------------------------------------
def test_log_timing_and_predictor_coding():
    assert np.allclose(enc.log_timing([0.1, 1.0]), [-1, 0])
    assert np.isnan(enc.log_timing([0.0, -1, np.nan])).all()
    df = enc.prepare_movement_data(movement_table())
    coded = enc.code_movement_predictors(df)
    assert abs(coded['contrast'].mean()) < 1e-12
    assert set(coded['reward']) == {-0.5, 0.5}
    assert set(coded['side']) <= {-0.5, 0.5}
    raw = np.where(df['contrast'] > 0, np.log2(df['contrast'].where(df['contrast'] > 0, 1)), 0)
    assert np.allclose(coded['contrast'], raw - raw.mean())


def test_prepare_movement_data_filters():
    df = movement_table()
    df.loc[:9, 'choice'] = 0
    df.loc[10:19, 'reaction_time'] = 0.02
    df.loc[20:29, 'probabilityLeft'] = 0.8
    df.loc[30:39, 'response_early'] = np.nan
    out = enc.prepare_movement_data(df)
    assert len(out) == len(df) - 40
    assert {'log_reaction_time', 'log_movement_time', 'side'} <= set(out.columns)


@pytest.mark.parametrize('driver', ['timing', 'contrast'])
def test_loso_prefers_the_true_driver(driver):
    df = enc.prepare_movement_data(movement_table(driver))
    loso = enc.loso_cv_movement_lmm(df, timing='log_reaction_time')
    assert list(loso.columns) == enc.LOSO_COLUMNS
    assert sorted(loso['subject']) == ['s0', 's1', 's2']
    summary = enc.summarise_loso(loso.assign(target_NM='X-DA'))
    assert summary['preferred'].iloc[0] == driver
    key = 'delta_r2_timing' if driver == 'timing' else 'delta_r2_contrast'
    assert (loso[key] > 0.05).all()


def test_loso_needs_two_subjects_and_handles_two():
    df = enc.prepare_movement_data(movement_table(n_subjects=1))
    empty = enc.loso_cv_movement_lmm(df)
    assert empty.empty and list(empty.columns) == enc.LOSO_COLUMNS
    two = enc.loso_cv_movement_lmm(enc.prepare_movement_data(movement_table(n_subjects=2)))
    assert len(two) == 2  # each fold trains on one subject (OLS)
    assert enc.loso_cv_movement_lmm(df, min_subjects=3).empty


def test_in_sample_r2_jackknife_and_slopes():
    df = enc.prepare_movement_data(movement_table('timing'))
    fit = enc.fit_movement_lmm_r2(df)
    assert fit['delta_r2_timing'] > fit['delta_r2_contrast']
    assert 0 <= fit['r2_drop_movement'] <= fit['r2_full'] <= 1
    assert enc.fit_movement_lmm_r2(df[df['subject'] == 's0']) is None
    assert len(enc.jackknife_movement_lmm(df)) == 3
    slopes = enc.per_contrast_slopes(df)
    assert list(slopes.columns) == enc.SLOPE_COLUMNS
    assert (slopes['slope'] < 0).all() and (slopes['ci_upper'] < 0).all()


def test_centred_r2():
    y = np.array([1.0, 2.0, 3.0])
    assert enc.centred_r2(y, y + 10) == pytest.approx(1.0)
    assert enc.centred_r2(y, np.zeros(3)) == pytest.approx(0.0)
    assert enc.centred_r2(y, -y) < 0
    assert np.isnan(enc.centred_r2(np.ones(3), y))


# ---------------------------------------------------------------------------
# Task encoding: GLM, PCA/ICA
# ---------------------------------------------------------------------------
def test_fit_response_glm_recovers_coefficients():
    table, truth = glm_table()
    coefs, ses = enc.fit_response_glm(table, 'stimOn_times', contrast_coding='log')
    assert list(coefs.columns) == enc.GLM_TERMS
    assert list(coefs.index.names) == enc.GLM_INDEX
    assert len(coefs) == 12 and (ses.to_numpy() > 0).all()
    for target, expected in truth.items():
        got = coefs.xs(target, level='target_NM').to_numpy()
        assert np.allclose(got, expected, atol=0.05)


def test_fit_response_glm_errors_and_skips():
    table, _ = glm_table()
    with pytest.raises(ValueError):
        enc.fit_response_glm(table.iloc[:0], 'stimOn_times')
    with pytest.raises(ValueError, match='stimOn_times'):
        enc.fit_response_glm(table, 'feedback_times')
    coefs, _ = enc.fit_response_glm(table, 'stimOn_times', min_trials=1000)
    assert coefs.empty
    one_side = table.assign(signed_contrast=table['contrast'])  # every stimulus contra
    with pytest.warns(UserWarning, match='rank-deficient'):
        coefs, _ = enc.fit_response_glm(one_side, 'stimOn_times')
    assert coefs.empty


@pytest.mark.parametrize('weighted', [False, True])
def test_pca_and_ica_of_glm_coefficients(weighted):
    table, _ = glm_table()
    coefs, _ = enc.fit_response_glm(table, 'stimOn_times')
    pca = enc.pca_glm_coefficients(coefs, 3, cohort_weighted=weighted)
    assert pca.scores.shape == (12, 3) and pca.components.shape == (3, 6)
    assert 'intercept' not in pca.feature_names
    assert np.all(np.diff(pca.explained_variance_ratio) <= 1e-12)
    assert np.allclose(np.linalg.norm(pca.components.to_numpy(), axis=1), 1)
    # the two cohorts have different coefficients: PC1 separates them
    stats = enc.pca_score_stats(pca)
    omnibus = stats[(stats['pc'] == 'PC1') & stats['target_a'].isna()]
    assert omnibus['kruskal_p'].iloc[0] < 0.01
    ica = enc.ica_glm_coefficients(coefs, 3, cohort_weighted=weighted)
    assert ica.scores.shape == (12, 3) and list(ica.scores.columns) == ['IC1', 'IC2', 'IC3']
    assert np.all(np.diff(ica.explained_variance_ratio) <= 1e-12)
    stats, means = enc.pca_subject_score_stats(pca, table[['eid', 'subject']])
    assert set(means.columns) == {'subject', 'target_NM', 'pc', 'mean', 'sem'}


# ---------------------------------------------------------------------------
# Task encoding: CCA
# ---------------------------------------------------------------------------
def cca_views(n=60, seed=0, coupled=True):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal(n)
    x = pd.DataFrame(rng.standard_normal((n, 4)), columns=list('abcd'))
    y = pd.DataFrame(rng.standard_normal((n, 3)), columns=['p', 'q', 'r'])
    if coupled:
        x['a'] += 2 * latent
        y['q'] += 2 * latent
    return x, y


def test_fit_cca_finds_planted_coupling():
    x, y = cca_views()
    res = enc.fit_cca(x, y, n_components=1, n_permutations=99, seed=0)
    assert res.correlations[0] > 0.7 and res.p_values[0] == pytest.approx(0.01)
    assert abs(res.x_weights.loc['a', 'CC1']) == res.x_weights['CC1'].abs().max()
    assert abs(res.y_weights.loc['q', 'CC1']) == res.y_weights['CC1'].abs().max()
    null = enc.fit_cca(*cca_views(coupled=False), 1, n_permutations=99, seed=0)
    assert null.p_values[0] > 0.05


def test_fit_cca_validation():
    x, y = cca_views(n=2)
    with pytest.raises(ValueError, match='3'):
        enc.fit_cca(x, y)
    x, y = cca_views()
    with pytest.raises(ValueError, match='constant'):
        enc.fit_cca(x, y.assign(p=1.0, q=1.0, r=1.0))
    y.loc[0, 'p'] = np.nan
    assert enc.fit_cca(x, y.assign(r=2.0), 1).n_recordings == 59


def test_session_permutation_keeps_sessions_whole():
    labels = np.repeat(['a', 'b', 'c', 'd'], [2, 3, 1, 2])
    order = enc.permute_sessions(len(labels), labels, np.random.default_rng(1))
    for session in np.unique(labels):
        assert len(set(labels[order][labels == session])) == 1


def test_sparse_cca_sign_alignment_and_similarity():
    x, y = cca_views()
    res = enc.fit_sparse_cca(x, y, 1, n_permutations=5, seed=0, alpha=[1e-4, 1e-3])
    assert np.linalg.norm(res.x_weights['CC1']) == pytest.approx(1)
    assert res.alpha in (1e-4, 1e-3) and res.correlations[0] > 0.7
    other = enc.fit_cca(x, y, 1)
    flipped = enc.fit_cca(x, y, 1)
    flipped.x_weights['CC1'] *= -1
    flipped.y_weights['CC1'] *= -1
    aligned = enc.align_cca_signs({'a': other, 'b': flipped})
    assert enc.compare_cca_weights(aligned['a'], aligned['b'])['neural_cosine'] > 0.99
    zero = enc.fit_cca(x, y, 1)
    zero.x_weights['CC1'] = 0.0
    assert enc.compare_cca_weights(other, zero)['neural_cosine'] == 0.0
    r = enc.cross_project_cca(enc._zscore(x), enc._zscore(y), other)
    assert r == pytest.approx(other.correlations[0], abs=0.05)


def test_fit_cohort_cca_skips_small_cohorts():
    table, _ = glm_table(n_recordings=24)
    coefs, _ = enc.fit_response_glm(table, 'stimOn_times')
    features = coefs.drop(columns='intercept')
    rng = np.random.default_rng(0)
    psych = pd.DataFrame(
        rng.standard_normal((len(features), 2)),
        index=features.index,
        columns=['psych_50_bias', 'psych_50_threshold'],
    )
    results, views = enc.fit_cohort_cca(features, psych, n_permutations=5, min_recordings=10)
    assert set(results) == {'A-DA', 'B-NE'} and set(views) == set(results)
    with pytest.raises(ValueError):
        enc.fit_cohort_cca(features, psych, n_permutations=0, min_recordings=100)


def test_cross_projection_with_a_column_constant_in_one_cohort():
    """A psychometric column constant in one cohort is dropped there; projecting that cohort
    on another cohort's weights (which use the column) must not fail."""
    from iblnm.workflows.encoding import cca_tables

    table, _ = glm_table(n_recordings=24)
    coefs, _ = enc.fit_response_glm(table, 'stimOn_times')
    features = coefs.drop(columns='intercept')
    rng = np.random.default_rng(0)
    psych = pd.DataFrame(
        rng.standard_normal((len(features), 2)),
        index=features.index,
        columns=['psych_50_bias', 'psych_50_lapse_left'],
    )
    in_ne = features.index.get_level_values('target_NM') == 'B-NE'
    psych.loc[in_ne, 'psych_50_lapse_left'] = 0.0  # lapse at its bound in every NE session
    results, views = enc.fit_cohort_cca(features, psych, n_permutations=0, min_recordings=10)
    assert list(views['B-NE'][1].columns) == ['psych_50_bias']
    cross = cca_tables(results, views)['cross_projections']
    assert len(cross) == 4 and cross['correlation'].notna().all()
    # the dropped column is 0 once z-scored: same r as projecting with it included
    x_z, y_z = views['B-NE']
    r = enc.cross_project_cca(x_z, y_z.assign(psych_50_lapse_left=0.0), results['A-DA'])
    assert enc.cross_project_cca(x_z, y_z, results['A-DA']) == pytest.approx(r)


# ---------------------------------------------------------------------------
# Full runs on simulated data (ground truth: the simulator's kernels)
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def encoding_root(tmp_path_factory):
    """2 DA + 2 ACh mice, 6 sessions each; catalog and photometry stages run in-process.

    The small preset has one mouse per NM, too few for leave-one-subject-out.
    """
    from one.api import One

    from iblnm.pipeline.catalog import query_database
    from iblnm.pipeline.photometry import run_photometry_stage
    from iblnm.simulate import generate, load_manifest

    cache, root = tmp_path_factory.mktemp('enc_cache'), tmp_path_factory.mktemp('enc_root')
    generate(
        cache,
        preset='small',
        seed=5,
        n_jobs=1,
        mice_per_nm={'DA': 2, 'ACh': 2},
        n_sessions=24,
        task_minutes=(5, 6),
        fault_fraction=0.0,
        all_faults=False,
        camera_fault_fraction=0.0,
        strainless_sessions=0,
    )
    one = One(cache_dir=str(cache), mode='local')
    meta, data = root / 'metadata', root / 'data'
    query_database(
        one=one,
        sessions_fpath=meta / 'sessions.pqt',
        progress=False,
        log_fpath=meta / 'query_database_log.pqt',
    )
    run_photometry_stage(
        one=one,
        h5_dir=data / 'sessions',
        qc_fpath=data / 'qc_photometry.pqt',
        log_fpath=meta / 'photometry_log.pqt',
        progress=False,
        sessions_fpath=meta / 'sessions.pqt',
        upstream_logs=(meta / 'query_database_log.pqt',),
    )
    return root, load_manifest(cache)['kernels']


RELAXED = {'min_performance': None, 'required_contrasts': None}


def test_movement_encoding_matches_the_kernels(encoding_root):
    from iblnm.workflows.encoding import run_movement_encoding

    root, kernels = encoding_root
    contrast_scaled = {
        nm for nm, k in kernels.items() if 'log_contrast' in k.get('stimOn_times', {})
    }
    movement_locked = {
        nm for nm, k in kernels.items() if 'firstMovement_times' in k and 'stimOn_times' not in k
    }
    assert contrast_scaled == {'DA'} and 'ACh' in movement_locked
    out = run_movement_encoding(
        root, group_by='NM', targetnms=None, filter_kwargs=RELAXED, plot=False, verbose=False
    )
    summary = out['summary'].set_index(['target_NM', 'timing_col'])
    rt = summary.xs('log_reaction_time', level='timing_col')
    assert rt.loc['DA', 'preferred'] == 'contrast'
    assert rt.loc['DA', 'delta_r2_contrast'] > 0.2
    assert rt.loc['ACh', 'preferred'] == 'timing'
    assert rt.loc['ACh', 'delta_r2_timing'] > 0.02
    assert summary.loc[('DA', 'log_movement_time'), 'preferred'] == 'contrast'
    loso = out['loso']
    assert (
        loso[loso['target_NM'] == 'ACh']
        .query('timing_col == "log_reaction_time"')
        .eval('delta_r2_timing > delta_r2_contrast')
        .all()
    )  # every held-out subject
    slopes = out['slopes'].query('timing_col == "log_reaction_time"')
    assert slopes.groupby('target_NM')['slope'].median()['ACh'] < 0  # faster RT, larger response
    results = root / 'results' / 'movement_encoding'
    for name in (
        'loso_cv_model_comparison.csv',
        'per_contrast_slopes.csv',
        'model_comparison_summary.csv',
        'movement_encoding_log.pqt',
    ):
        assert (results / name).exists()
    again = run_movement_encoding(root, group_by='NM', plot_only=True, verbose=False)
    pd.testing.assert_frame_equal(again['summary'], out['summary'], check_dtype=False)
    figures = root / 'figures' / 'movement_encoding'
    assert (figures / 'model_comparison' / 'model_comparison.svg').exists()
    assert (figures / 'slopes' / 'timing_slopes_by_contrast.png').exists()
    assert (figures / 'descriptive' / 'ACh_stimOn_reaction_time.svg').exists()


def test_task_encoding_runs_and_writes(encoding_root):
    from iblnm.workflows.encoding import run_task_encoding

    root, _ = encoding_root
    sessions = pd.read_parquet(root / 'metadata' / 'sessions.pqt')
    rng = np.random.default_rng(0)
    perf = pd.DataFrame(
        {
            'eid': sessions['eid'],
            'fraction_correct': 0.8,
            **{
                p: rng.standard_normal(len(sessions))
                for p in (
                    'psych_50_threshold',
                    'psych_50_bias',
                    'psych_50_lapse_left',
                    'psych_50_lapse_right',
                )
            },
        }
    )
    perf.to_parquet(root / 'data' / 'performance.pqt')
    events = ['stimOn_times', 'feedback_times']
    out = run_task_encoding(
        root,
        events=events,
        n_permutations=19,
        min_recordings=5,
        targetnms=None,
        filter_kwargs=RELAXED,
        verbose=False,
    )
    results, figures = root / 'results' / 'task_encoding', root / 'figures' / 'task_encoding'
    assert (results / 'task_encoding_log.pqt').exists()
    for event in ('stimOn', 'feedback'):
        assert (results / f'glm_coefficients_{event}.csv').exists()
        assert (results / f'pca_stats_{event}.csv').exists()
        assert (figures / 'pca' / f'pca_summary_{event}.svg').exists()
        summary = pd.read_csv(results / f'{event}_summary.csv')
        assert list(summary.columns) == [
            'cohort',
            'correlation',
            'p_value',
            'n_recordings',
            'alpha',
            'l1_ratio',
        ]
        # The permutation p of 19 session shuffles is on the grid k / 20, k = 1..20. Random
        # psychometrics: no shuffle-free coupling, so never the smallest p (1/20). (With 10
        # recordings and ~6 GLM features the in-sample canonical r is ~1 under the null too:
        # only the permutation test tells it apart.)
        k = summary['p_value'] * 20
        np.testing.assert_allclose(k, k.round(), atol=1e-9)
        assert k.between(2, 20).all(), summary
        scores = pd.read_csv(results / f'{event}_scores.csv')
        for row in summary.itertuples():  # r and n are those of the saved CC1 scores
            cohort = scores[scores['cohort'] == row.cohort]
            assert row.n_recordings == len(cohort)
            r = np.corrcoef(cohort['x_score'], cohort['y_score'])[0, 1]
            assert row.correlation == pytest.approx(r, abs=1e-6)
        assert (figures / 'cca' / 'summary' / f'{event}_summary.png').exists()
        for name in ('weights', 'scores', 'cross_projections', 'weight_similarities'):
            assert (results / f'{event}_{name}.csv').exists()
    glm = pd.read_csv(results / 'glm_coefficients_stimOn.csv')
    da = glm[glm['target_NM'].str.endswith('DA')]
    assert (da['log_contrast'] > 0).mean() > 0.8  # DA stimOn kernel grows with contrast
    assert len(out['figures']) > 0


def test_rank_coding_ranks_only_known_levels():
    to_rank, from_rank = config.get_contrast_coding('rank')
    levels = sorted(config.ANALYSIS_CONTRASTS)
    np.testing.assert_array_equal(to_rank(levels), np.arange(len(levels)))
    np.testing.assert_array_equal(from_rank(np.arange(len(levels))), levels)
    assert np.isnan(to_rank([50.0, np.nan])).all()  # not the rank of 100 % or past the end


def test_movement_time_has_one_definition_in_task_and_encoding():
    """Encoding's movement_time is task.get_trial_timings' (response − first movement)."""
    from types import SimpleNamespace

    import xarray as xr

    from iblnm import task
    from iblnm.group import _psth_table

    trials = pd.DataFrame(
        {
            'stimOn_times': [1.0, 11.0],
            'firstMovement_times': [1.3, 11.2],
            'response_times': [1.8, 11.9],
            'feedback_times': [2.3, 12.9],
            'choice': [1, -1],
            'feedbackType': [1, -1],
            'probabilityLeft': [0.5, 0.5],
            'contrastLeft': [1.0, np.nan],
            'contrastRight': [np.nan, 0.25],
            'signed_contrast': [-100.0, 25.0],
            'contrast': [100.0, 25.0],
            'stim_side': ['left', 'right'],
        }
    )
    times = np.arange(-1, 1, 1 / 30)
    traces = xr.DataArray(
        np.zeros((1, 2, len(times))),
        dims=('event', 'trial', 'time'),
        coords={'event': ['stimOn_times'], 'trial': [0, 1], 'time': times},
    )
    table = _psth_table(SimpleNamespace(trials=trials), traces, movement_time=True)
    expected = task.get_trial_timings(trials)['movement_time'].to_numpy()
    np.testing.assert_allclose(table['movement_time'], expected)
    np.testing.assert_allclose(expected, [0.5, 0.7])


def test_both_mixed_model_fitters_reject_a_fit_that_did_not_converge(monkeypatch):
    """One convergence rule (lmm.fit_mixedlm) for the response LMMs and movement encoding."""
    import warnings

    import statsmodels.regression.mixed_linear_model as mlm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    from iblnm.analysis import lmm

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            'y': rng.normal(size=60),
            'x': rng.normal(size=60),
            'subject': np.repeat(['a', 'b', 'c'], 20),
        }
    )
    assert lmm.fit_lmm('y ~ x', df, 'subject') is not None
    assert enc.fit_mixed('y ~ x', df) is not None
    fit = mlm.MixedLM.fit

    def not_converged(self, *args, **kwargs):
        warnings.warn(
            'Maximum Likelihood optimization failed to converge.', ConvergenceWarning, stacklevel=2
        )
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(mlm.MixedLM, 'fit', not_converged)
    assert lmm.fit_lmm('y ~ x', df, 'subject') is None
    assert enc.fit_mixed('y ~ x', df) is None
