"""Pure analysis functions on arrays and tables with known answers (iblnm.analysis)."""

import numpy as np
import pandas as pd
import pytest

from iblnm.analysis import decoding, lmm, waveforms
from iblnm.analysis import responses as ar

TPTS = np.arange(-30, 30) / 30  # the pipeline's 60-sample window at 30 Hz (s)


# ---------------------------------------------------------------------------
# Magnitudes and features
# ---------------------------------------------------------------------------
def _trials(n=4):
    return pd.DataFrame(
        {
            'stimOn_times': np.arange(n) * 10.0,
            'firstMovement_times': np.arange(n) * 10.0 + 0.3,
            'stim_side': ['left', 'right'] * (n // 2),
            'signed_contrast': [-25.0, 100.0] * (n // 2),
            'contrast': [25.0, 100.0] * (n // 2),
            'choice': [-1.0, 1.0] * (n // 2),
            'feedbackType': [1.0, -1.0] * (n // 2),
            'probabilityLeft': 0.5,
        },
        index=pd.Index(np.arange(n) + 10),
    )


def test_magnitude_table_window_mean_and_behaviour():
    trials = _trials()
    traces = np.zeros((2, 4, 60))
    early = (TPTS >= 0.1) & (TPTS < 0.35)
    traces[0][:, early] = np.array([1.0, 2.0, 3.0, 4.0])[:, None]
    table = ar.magnitude_table(traces, TPTS, ['stimOn_times', 'feedback_times'], trials)
    assert len(table) == 8
    assert table['event'].tolist() == ['stimOn_times'] * 4 + ['feedback_times'] * 4
    np.testing.assert_allclose(table['response_early'], [1, 2, 3, 4, 0, 0, 0, 0])
    np.testing.assert_allclose(table['reaction_time'], 0.3)
    assert table['trial'].tolist() == [10, 11, 12, 13] * 2
    assert table['stim_side'].tolist()[:2] == ['left', 'right']


def test_condition_labels():
    assert ar.condition_label('stimOn_times', 25.0, 'contra', 1) == 'stimOn_c25_contra_correct'
    assert ar.condition_label('feedback', 6.25, 'ipsi', -1) == 'feedback_c6.25_ipsi_incorrect'
    columns = ar.condition_columns(['stimOn_times'], [25.0, 0.0])
    assert columns[0] == 'stimOn_c0_contra_correct' and len(columns) == 8


def test_response_features_contra_ipsi_by_hemisphere():
    rows = []
    for hemi, eid in (('l', 'a'), ('r', 'b')):
        table = ar.magnitude_table(
            np.ones((1, 4, 60)) * np.arange(4)[None, :, None], TPTS, ['stimOn_times'], _trials()
        )
        rows.append(
            table.assign(
                eid=eid, target_NM='VTA-DA', fiber_idx=0, brain_region='VTA', hemisphere=hemi
            )
        )
    features = ar.response_features(pd.concat(rows, ignore_index=True))
    # trials 0, 2: left 25 % correct (responses 0, 2); trials 1, 3: right 100 % incorrect (1, 3)
    assert features.loc[('a', 'VTA-DA', 0), 'stimOn_c25_ipsi_correct'] == 1.0
    assert features.loc[('a', 'VTA-DA', 0), 'stimOn_c100_contra_incorrect'] == 2.0
    assert features.loc[('b', 'VTA-DA', 0), 'stimOn_c25_contra_correct'] == 1.0
    assert np.isnan(features.loc[('a', 'VTA-DA', 0), 'stimOn_c25_contra_correct'])
    strict = ar.response_features(pd.concat(rows, ignore_index=True), min_trials=3)
    assert strict.isna().all().all()


def test_nan_handling():
    features = pd.DataFrame({'x': [1.0, np.nan, 3.0, 4.0], 'y': [np.nan, np.nan, np.nan, 1.0]})
    assert len(ar.apply_nan_handling(features, 'drop_sessions')) == 1
    assert list(ar.apply_nan_handling(features, 'drop_features', 0.3)) == ['x']
    with pytest.raises(ValueError, match='nan_handling'):
        ar.apply_nan_handling(features, 'bogus')


# ---------------------------------------------------------------------------
# Similarity
# ---------------------------------------------------------------------------
def test_cosine_similarity_known_values():
    features = pd.DataFrame(
        [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [np.nan, 1.0]], index=list('abcde')
    )
    sim = ar.cosine_similarity_matrix(features)
    assert list(sim.index) == list('abcd')  # the NaN row is dropped
    assert sim.loc['a', 'b'] == pytest.approx(1.0)
    assert sim.loc['a', 'c'] == pytest.approx(0.0)
    assert sim.loc['a', 'd'] == pytest.approx(1 / np.sqrt(2))
    np.testing.assert_allclose(sim.to_numpy(), sim.to_numpy().T)
    np.testing.assert_allclose(np.diag(sim), 1.0)


def test_similarity_pairs_within_between():
    sim = pd.DataFrame(np.eye(3))
    pairs = ar.similarity_pairs(sim, ['A', 'A', 'B'], subjects=['m1', 'm2', 'm1'])
    assert pairs['within'].sum() == 1 and (~pairs['within']).sum() == 2
    assert pairs['same_subject'].sum() == 1


# ---------------------------------------------------------------------------
# Waveform statistics
# ---------------------------------------------------------------------------
def test_cluster_permutation_finds_planted_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(25, 60)), rng.normal(size=(25, 60))
    a[:, 36:45] += 1.2  # +0.2 ... +0.47 s
    result = waveforms.cluster_permutation_test(a, b, n_permutations=500, tpts=TPTS)
    significant = np.flatnonzero(result['significant'])
    assert len(significant) >= 5
    assert significant.min() >= 33 and significant.max() <= 47
    assert result['clusters']['p'].min() < 0.01


def test_cluster_permutation_no_difference_is_quiet():
    rng = np.random.default_rng(1)
    false_alarms = 0
    for _ in range(20):
        a, b = rng.normal(size=(20, 60)), rng.normal(size=(20, 60))
        result = waveforms.cluster_permutation_test(a, b, n_permutations=200, seed=_)
        false_alarms += result['significant'].any()
    assert false_alarms <= 3  # family-wise error ≈ 5 % over the window


def test_paired_cluster_test_exact_for_few_pairs():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 60))
    b = a + rng.normal(scale=0.1, size=a.shape)
    result = waveforms.cluster_permutation_test(b + 3, a, paired=True, n_permutations=1000)
    assert len(result['null']) == 2**5  # every sign pattern
    assert result['clusters']['p'].min() == pytest.approx(2 / 32)  # smallest two-sided p


def test_bootstrap_band_coverage():
    rng = np.random.default_rng(3)
    covered = []
    for seed in range(200):
        traces = rng.normal(loc=0.5, size=(30, 20))
        _, lower, upper = waveforms.bootstrap_ci(traces, n_boot=400, seed=seed)
        covered.append((lower <= 0.5) & (upper >= 0.5))
    coverage = np.mean(covered)
    assert 0.90 <= coverage <= 0.98  # nominal 0.95 (percentile bootstrap is a bit liberal)


def test_bootstrap_ci_ignores_nan_and_consecutive_threshold():
    traces = np.ones((10, 5))
    traces[0, 0] = np.nan
    mean, lower, upper = waveforms.bootstrap_ci(traces, n_boot=50)
    np.testing.assert_allclose([mean, lower, upper], 1.0)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert waveforms.consecutive_threshold(mask, 3).tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert waveforms.runs(mask) == [(0, 2), (3, 6), (7, 8)]


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
def _separable(n_per_subject=3, n_subjects_per_class=3, scale=1.0):
    rng = np.random.default_rng(0)
    rows, labels, subjects = [], [], []
    for k, label in enumerate(['A', 'B', 'C']):
        for s in range(n_subjects_per_class):
            for _ in range(n_per_subject):
                x = rng.normal(scale=0.1, size=4)
                x[k] += 2.0
                rows.append(x * scale)
                labels.append(label)
                subjects.append(f'{label}{s}')
    return pd.DataFrame(rows, columns=list('wxyz')), np.array(labels), np.array(subjects)


def test_decoder_separable_data():
    x, y, groups = _separable()
    result = decoding.decode_target_nm(x, y, groups, Cs=(0.1, 1.0))
    assert set(result) == decoding.RESULT_KEYS
    assert result['accuracy'] == 1.0 and result['balanced_accuracy'] == 1.0
    assert result['chance'] == pytest.approx(1 / 3)
    assert result['confusion'].to_numpy().trace() == len(y)
    scaled = decoding.decode_target_nm(x * 1000, y, groups, Cs=(0.1, 1.0))
    assert scaled['accuracy'] == 1.0  # z-scored within folds: scale-invariant


def test_decoder_one_class_raises():
    x, _, groups = _separable()
    with pytest.raises(ValueError, match='2'):
        decoding.decode_target_nm(x, ['A'] * len(x), groups)


def test_decoder_contributions_informative_feature():
    rng = np.random.default_rng(1)
    y = np.repeat(['A', 'B'], 12)
    groups = np.repeat([f's{i}' for i in range(8)], 3)
    x = pd.DataFrame(
        {'w': (y == 'A') * 2.0 + rng.normal(scale=0.2, size=24), 'noise': rng.normal(size=24)}
    )
    decoder = decoding.TargetNMDecoder(x, y, groups, Cs=(1.0,)).fit()
    contrib = decoder.unique_contribution({'w': ['w'], 'noise': ['noise']})
    assert list(contrib.columns) == [
        'feature_group',
        'n_features',
        'balanced_accuracy_full',
        'balanced_accuracy_without',
        'delta',
    ]
    assert contrib.set_index('feature_group').loc['w', 'delta'] > 0
    assert contrib.set_index('feature_group').loc['noise', 'delta'] <= 0.05
    assert decoder.recall.min() == 1.0


def test_contributions_use_the_nested_fold_regularisation():
    """No C chosen with the held-out subject: the full model is the decoder's own LOSO run."""
    rng = np.random.default_rng(2)
    y = np.repeat(['A', 'B', 'C'], 16)
    groups = np.tile(np.repeat([f's{i}' for i in range(8)], 2), 3)
    x = pd.DataFrame(
        {
            'w': (y == 'A') * 1.0 + (y == 'B') * 0.5 + rng.normal(scale=0.8, size=48),
            'v': (y == 'C') * 1.0 + rng.normal(scale=0.9, size=48),
            'noise': rng.normal(size=48),
        }
    )
    decoder = decoding.TargetNMDecoder(x, y, groups, Cs=(0.01, 0.1, 1.0, 10.0)).fit()
    assert len(set(decoder.fold_C.values())) > 1  # folds chose different C here
    contrib = decoder.unique_contribution({'w': ['w'], 'v': ['v'], 'noise': ['noise']})
    assert contrib['balanced_accuracy_full'].iloc[0] == pytest.approx(decoder.balanced_accuracy)
    pred, fold_c = decoding.loso_predictions(x.to_numpy(), y, groups, C=decoder.fold_C)
    assert fold_c == decoder.fold_C
    np.testing.assert_array_equal(pred, decoder.predictions)


# ---------------------------------------------------------------------------
# Mixed models
# ---------------------------------------------------------------------------
def _lmm_trials(n_subjects=4, n=300, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_subjects):
        contrast = rng.choice([0, 6.25, 12.5, 25, 100], n)
        correct = rng.random(n) < 0.7
        side = rng.choice(['contra', 'ipsi'], n)
        y = 0.3 * np.log(contrast + 1) + 1.0 * correct + rng.normal(0, 0.5) + rng.normal(0, 1, n)
        frames.append(
            pd.DataFrame(
                {
                    'subject': f'm{s}',
                    'contrast': contrast,
                    'side': side,
                    'feedbackType': np.where(correct, 1, -1),
                    'response_early': y,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_response_lmm_recovers_effects():
    fit = lmm.fit_response_lmm(_lmm_trials())
    assert fit is not None and fit.kind == 'mixed'
    coef = fit.summary_df['Coef.']
    assert coef['log_contrast'] == pytest.approx(0.3, abs=0.06)
    assert coef['reward'] == pytest.approx(1.0, abs=0.25)
    assert abs(coef['side']) < 3 * fit.summary_df.loc['side', 'Std.Err.']  # no side effect
    assert 0 < fit.variance_explained['marginal'] <= fit.variance_explained['conditional'] <= 1
    grid = lmm.predict_grid(fit, [0, 100])
    assert len(grid) == 8 and (grid['ci_lower'] < grid['predicted']).all()
    table = lmm.coefficient_table({('VTA-DA', 'stimOn_times'): fit})
    assert set(table['term']) >= {'Intercept', 'log_contrast', 'side', 'reward'}


def test_response_lmm_single_subject():
    trials = _lmm_trials(n_subjects=1)
    assert lmm.fit_response_lmm(trials) is None
    fit = lmm.fit_response_lmm(trials, fallback_ols=True)
    assert fit.kind == 'ols' and fit.summary_df.loc['log_contrast', 'Coef.'] > 0


def test_lmm_trials_without_a_stimulus_are_left_out():
    from iblnm.analysis.lmm import prepare_lmm_trials

    trials = pd.DataFrame(
        {
            'response_early': [1.0, 2.0, 3.0, 4.0],
            'choice': [1, -1, 1, 1],
            'reaction_time': [0.3] * 4,
            'probabilityLeft': [0.5] * 4,
            'contrast': [25.0, np.nan, 100.0, 6.25],
            'side': ['contra', None, 'ipsi', None],
            'feedbackType': [1, 1, -1, 1],
        }
    )
    # no stimulus (contrast NaN): out; a stimulus without contra/ipsi (a midline recording,
    # side None) stays, coded 0 by code_predictors
    assert list(prepare_lmm_trials(trials)['response_early']) == [1.0, 3.0, 4.0]
    assert list(lmm.code_predictors(prepare_lmm_trials(trials))['side']) == [0.5, -0.5, 0.0]


# ---------------------------------------------------------------------------
# Wheel mixed models: does the response predict the movement?
def _wheel_trials(effect, n_subjects=4, n_per_subject=150, seed=0):
    """Reaction times (s) = subject offset + side + choice + effect * response + noise."""
    rng = np.random.default_rng(seed)
    n = n_subjects * n_per_subject
    subject = np.repeat([f'm{i}' for i in range(n_subjects)], n_per_subject)
    offset = np.repeat(rng.normal(0, 0.1, n_subjects), n_per_subject)
    side = rng.choice(['contra', 'ipsi'], n)
    choice = rng.choice([-1, 1], n)
    response = rng.normal(0, 1, n)
    rt = 0.5 + offset + 0.05 * (side == 'contra') + 0.03 * choice + effect * response
    return pd.DataFrame(
        {
            'subject': subject,
            'side': side,
            'choice': choice,
            'response_early': response,
            'reaction_time': rt + rng.normal(0, 0.1, n),
            'target_NM': 'LC-NE',
            'contrast': 25.0,
            'probabilityLeft': 0.5,
        }
    )


def test_wheel_lmm_recovers_a_planted_response_effect():
    fit = lmm.fit_wheel_lmm(_wheel_trials(effect=0.05), 'reaction_time')
    assert fit['nm_coefficient'] == pytest.approx(0.05, abs=0.01)
    assert fit['lrt_pvalue'] < 1e-6 and fit['nm_pvalue'] < 1e-6
    assert fit['delta_r2'] > 0.05 and fit['r2_full'] > fit['r2_base']
    assert (fit['n_trials'], fit['n_subjects']) == (600, 4)


def test_wheel_lmm_finds_nothing_without_an_effect():
    pvalues = [
        lmm.fit_wheel_lmm(_wheel_trials(effect=0.0, seed=s), 'reaction_time')['lrt_pvalue']
        for s in range(10)
    ]
    assert sum(p < 0.05 for p in pvalues) <= 2  # ~0.5 expected by chance
    fit = lmm.fit_wheel_lmm(_wheel_trials(effect=0.0), 'reaction_time')
    assert abs(fit['nm_coefficient']) < 0.015 and fit['delta_r2'] < 0.01


def test_wheel_lmm_guards_and_grouping():
    trials = _wheel_trials(effect=0.05)
    assert lmm.fit_wheel_lmm(trials[trials['subject'] == 'm0'], 'reaction_time') is None
    assert lmm.fit_wheel_lmm(trials[trials['side'] == 'contra'], 'reaction_time') is None
    assert lmm.fit_wheel_lmm(trials.head(8), 'reaction_time', min_subjects=1) is None
    biased = trials.assign(probabilityLeft=0.8)  # only 50/50 trials enter the models
    table = lmm.fit_wheel_lmms(pd.concat([trials, biased]), dvs=('reaction_time',))
    assert list(table.columns) == lmm.WHEEL_LMM_COLUMNS
    assert len(table) == 1 and table['n_trials'].iloc[0] == len(trials)


def test_marginal_means_recover_the_generating_effects():
    fit = lmm.fit_response_lmm(_lmm_trials())  # y = 0.3 ln(c + 1) + 1.0 correct + noise
    reward = lmm.compute_marginal_means(fit, 'reward').set_index('level')
    diff = reward.loc['correct', 'mean'] - reward.loc['incorrect', 'mean']
    coded_mean = np.mean(np.log(np.array([0, 6.25, 12.5, 25, 100]) + 1))
    beta = fit.result.params  # the difference is taken at the mean coded contrast
    assert diff == pytest.approx(1.0, abs=0.25)
    assert diff == pytest.approx(beta['reward'] + beta['log_contrast:reward'] * coded_mean)
    side = lmm.compute_marginal_means(fit, 'side').set_index('level')
    assert abs(side.loc['contra', 'mean'] - side.loc['ipsi', 'mean']) < 0.2  # no side effect
    contrast = lmm.compute_marginal_means(fit, 'contrast')
    assert list(contrast['level']) == [0, 6.25, 12.5, 25, 100]
    slope = np.polyfit(np.log(contrast['level'].to_numpy(float) + 1), contrast['mean'], 1)[0]
    assert slope == pytest.approx(0.3, abs=0.06)
    assert (contrast['ci_lower'] < contrast['mean']).all() and (
        contrast['mean'] < contrast['ci_upper']
    ).all()
    # the averaged factors sit at their centre: the reward means bracket the contrast means
    assert reward['mean'].mean() == pytest.approx(
        beta['Intercept'] + beta['log_contrast'] * coded_mean
    )
    table = lmm.marginal_means_table({('VTA-DA', 'stimOn_times'): fit})
    assert len(table) == 2 + 2 + 5 and set(table['factor']) == {'reward', 'side', 'contrast'}
    with pytest.raises(ValueError, match='factor'):
        lmm.compute_marginal_means(fit, 'block')


def test_marginal_means_figure_draws_every_mean_of_the_table(tmp_path):
    """One panel per event x factor; each group's points are the table's means at its levels
    (contrasts in order), read back from the CSV as well; a midline group has no side points."""
    import matplotlib.pyplot as plt

    from iblnm.vis import responses as vr

    fit = lmm.fit_response_lmm(_lmm_trials())
    midline = lmm.fit_response_lmm(_lmm_trials().assign(side=0.0))
    results = {('VTA-DA', 'stimOn_times'): fit, ('DR-5HT', 'stimOn_times'): midline}
    results[('VTA-DA', 'feedback_times')] = fit
    table = lmm.marginal_means_table(results)
    assert 'side' not in set(table.loc[table['target_NM'] == 'DR-5HT', 'factor'])
    table.to_csv(tmp_path / 'means.csv', index=False)
    for means in (table, pd.read_csv(tmp_path / 'means.csv')):
        fig = vr.plot_marginal_means(means)
        axes = fig.axes
        assert len(axes) == 2 * 3  # 2 events x (contrast, reward, side)
        for ax in axes:
            event_name, factor = ax.get_title().split(': ')
            event = {v: k for k, v in vr.EVENT_NAMES.items()}[event_name]
            # contrast: a line per group; outcome and side: error bars
            drawn = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
            drawn.update({c.get_label(): c.lines[0].get_ydata() for c in ax.containers})
            for target in ('VTA-DA', 'DR-5HT'):
                rows = table[
                    (table['target_NM'] == target)
                    & (table['event'] == event)
                    & (table['factor'] == factor)
                ]
                if rows.empty:
                    assert target not in drawn
                    continue
                np.testing.assert_allclose(
                    np.asarray(drawn[target], float), rows['mean'].to_numpy(float), rtol=1e-12
                )
        plt.close(fig)
