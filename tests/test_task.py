"""Trial contrasts, performance, psychometric fits and block checks (spec §6, §15 test_task).

IBL conventions throughout: choice -1 = rightward (correct for a right stimulus), +1 = leftward,
0 = no-go; contrasts in [0, 1] in ``contrastLeft``/``contrastRight`` and in percent elsewhere.
"""

import numpy as np
import pandas as pd
import psychofit
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iblnm import task

CONTRASTS = np.array([0.0, 6.25, 12.5, 25.0, 100.0])  # %
# Inexact floats as stored in real IBL tables (domain §1.7): `== 0.2` misses them.
PL_20 = 0.19999999999999996
PL_80 = 0.8000000000000002


# ---------------------------------------------------------------------------
# Simulated trials
# ---------------------------------------------------------------------------
def simulate_trials(params_by_pl, probability_left, contrasts=CONTRASTS, seed=0):
    """Trials whose choices follow psychofit ``erf_psycho_2gammas`` with known parameters.

    Parameters
    ----------
    params_by_pl : dict
        probabilityLeft value -> [bias (%), threshold (%), gamma1, gamma2].
    probability_left : numpy.ndarray
        pL of every trial (also P(stimulus on the left)).
    contrasts : numpy.ndarray
        Unsigned contrasts (%) drawn uniformly on each side.
    """
    rng = np.random.default_rng(seed)
    n_trials = probability_left.size
    is_left = rng.random(n_trials) < probability_left
    contrast = rng.choice(contrasts, n_trials)
    signed_contrast = np.where(is_left, -contrast, contrast)
    p_rightward = np.full(n_trials, np.nan)
    for pl_value, params in params_by_pl.items():
        in_block = probability_left == pl_value
        p_rightward[in_block] = psychofit.erf_psycho_2gammas(
            np.asarray(params, dtype=float), signed_contrast[in_block]
        )
    choice = np.where(rng.random(n_trials) < p_rightward, -1, 1)
    correct_choice = np.where(is_left, 1, -1)
    return pd.DataFrame(
        {
            'contrastLeft': np.where(is_left, contrast / 100, np.nan),
            'contrastRight': np.where(is_left, np.nan, contrast / 100),
            'choice': choice,
            'feedbackType': np.where(choice == correct_choice, 1, -1),
            'probabilityLeft': probability_left,
        }
    )


def biased_probability_left(n_trials, seed=0):
    """90 unbiased trials, then alternating 0.2/0.8 blocks of 20-99 trials (inexact floats)."""
    rng = np.random.default_rng(seed)
    values, current = [np.full(90, 0.5)], PL_20
    while sum(v.size for v in values) < n_trials:
        values.append(np.full(rng.integers(20, 100), current))
        current = PL_80 if current == PL_20 else PL_20
    return np.concatenate(values)[:n_trials]


def make_trials(probability_left, contrasts, n_nogo=0, seed=0):
    """Trials of a performing mouse (80 % correct) with ``n_nogo`` time-outs."""
    rng = np.random.default_rng(seed)
    n_trials = len(probability_left)
    is_left = rng.random(n_trials) < 0.5
    contrast = rng.choice(contrasts, n_trials)
    correct_choice = np.where(is_left, 1, -1)
    choice = np.where(rng.random(n_trials) < 0.8, correct_choice, -correct_choice)
    choice[rng.choice(n_trials, n_nogo, replace=False)] = 0
    stim_on = np.arange(n_trials) * 5.0
    return pd.DataFrame(
        {
            'contrastLeft': np.where(is_left, contrast, np.nan),
            'contrastRight': np.where(is_left, np.nan, contrast),
            'choice': choice,
            'feedbackType': np.where(choice == correct_choice, 1, -1),
            'probabilityLeft': np.asarray(probability_left, dtype=float),
            'stimOn_times': stim_on,
            'firstMovement_times': stim_on + 0.3,
            'response_times': stim_on + 0.5,
            'feedback_times': stim_on + 0.51,
        }
    )


@pytest.fixture
def training_trials():
    """200 trials, contrasts {0, .0625, .125, .25, .5, 1}, 10 no-go trials, pL 0.5."""
    return make_trials(np.full(200, 0.5), [0, 0.0625, 0.125, 0.25, 0.5, 1], n_nogo=10)


@pytest.fixture
def biased_trials():
    """Blocks 50/20/80/50 of 50 trials each."""
    probability_left = np.repeat([0.5, 0.2, 0.8, 0.5], 50)
    return make_trials(probability_left, [0, 0.0625, 0.125, 0.25, 1], n_nogo=4)


@pytest.fixture
def invalid_trials():
    """Blocks of 2-5 trials alternating between 0.2 and 0.8."""
    lengths = np.random.default_rng(1).integers(2, 6, 40)
    probability_left = np.concatenate(
        [np.full(n, 0.2 if i % 2 else 0.8) for i, n in enumerate(lengths)]
    )
    return make_trials(probability_left, [0, 0.0625, 0.125, 0.25, 1])


@pytest.fixture
def sessions():
    """mouse1: 3 training then 2 biased; mouse2: training only; mouse3: 2 biased then 2 ephys."""
    rows = [
        ('mouse1', ['training', 'training', 'training', 'biased', 'biased']),
        ('mouse2', ['training', 'training']),
        ('mouse3', ['training', 'biased', 'biased', 'ephys', 'ephys']),
    ]
    records = [
        {'subject': subject, 'session_n': n + 1, 'session_type': session_type}
        for subject, session_types in rows
        for n, session_type in enumerate(session_types)
    ]
    return pd.DataFrame(records).sample(frac=1, random_state=0)  # order must not matter


# ---------------------------------------------------------------------------
# Block structure
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('probability_left', 'expected'),
    [
        ([0.5] * 5, [5]),
        ([0.2, 0.2, 0.2, 0.8, 0.8], [3, 2]),
        ([0.5, 0.5, 0.2, 0.2, 0.2, 0.8, 0.8], [2, 3, 2]),
        ([], []),
        ([0.2, PL_20, 0.2, PL_80], [3, 1]),  # inexact values are the same block
    ],
)
def test_get_block_lengths(probability_left, expected):
    lengths = task.get_block_lengths(probability_left)
    assert lengths.tolist() == expected
    assert lengths.dtype.kind == 'i'


@given(st.lists(st.sampled_from([0.2, 0.5, 0.8]), max_size=60))
def test_block_lengths_partition_the_session(probability_left):
    lengths = task.get_block_lengths(probability_left)
    assert lengths.sum() == len(probability_left)
    assert (lengths > 0).all()


def test_validate_block_structure(biased_trials, invalid_trials, training_trials):
    valid = task.validate_block_structure(biased_trials)
    assert valid == {'valid': True, 'min_block_length': 50, 'n_blocks': 4, 'flagged': False}
    flagged = task.validate_block_structure(invalid_trials)
    assert flagged['flagged'] and not flagged['valid'] and flagged['min_block_length'] < 10
    training = task.validate_block_structure(training_trials)
    assert training['n_blocks'] == 1 and training['min_block_length'] == 200
    no_column = task.validate_block_structure(training_trials.drop(columns='probabilityLeft'))
    assert no_column['valid'] and no_column['n_blocks'] == 1
    assert no_column['min_block_length'] == 200
    assert task.validate_block_structure(training_trials.iloc[:0])['flagged']


def test_validate_block_structure_ignores_truncated_last_block():
    """The session may stop a few trials into a block; a short block elsewhere is flagged."""
    truncated_end = pd.DataFrame({'probabilityLeft': np.repeat([0.5, PL_20, PL_80], [90, 40, 3])})
    result = task.validate_block_structure(truncated_end)
    assert result['valid'] and result['n_blocks'] == 3 and result['min_block_length'] == 40
    short_middle = pd.DataFrame({'probabilityLeft': np.repeat([0.5, 0.2, 0.8], [90, 3, 40])})
    assert task.validate_block_structure(short_middle)['flagged']


# ---------------------------------------------------------------------------
# Training stages
# ---------------------------------------------------------------------------
def test_count_sessions_to_stage(sessions):
    counts = task.count_sessions_to_stage(sessions).set_index('subject')
    assert counts.index.tolist() == ['mouse1', 'mouse2', 'mouse3']
    assert counts.loc['mouse1', 'sessions_to_biased'] == 3
    assert counts.loc['mouse1', 'n_training'] == 3 and counts.loc['mouse1', 'n_biased'] == 2
    assert np.isnan(counts.loc['mouse2', 'sessions_to_biased'])
    assert np.isnan(counts.loc['mouse1', 'biased_sessions_to_ephys'])
    assert counts.loc['mouse3', 'biased_sessions_to_ephys'] == 2
    assert counts.loc['mouse3', 'n_ephys'] == 2


def test_get_subjects_by_stage(sessions):
    stages = task.get_subjects_by_stage(sessions)
    assert set(stages['training']) == {'mouse1', 'mouse2', 'mouse3'}
    assert set(stages['biased']) == {'mouse1', 'mouse3'}
    assert set(stages['ephys']) == {'mouse3'}


# ---------------------------------------------------------------------------
# Performance
# ---------------------------------------------------------------------------
def test_fraction_correct_excludes_nogo(training_trials):
    go = training_trials[training_trials['choice'] != 0]
    expected = (go['feedbackType'] == 1).mean()
    assert task.compute_fraction_correct(training_trials) == pytest.approx(expected)
    with_nogo = task.compute_fraction_correct(training_trials, exclude_nogo=False)
    assert with_nogo < expected
    assert np.isnan(task.compute_fraction_correct(training_trials.iloc[:0]))


def test_nogo_fraction(training_trials):
    nogo_fraction = task.compute_nogo_fraction(training_trials)
    assert isinstance(nogo_fraction, float) and 0 <= nogo_fraction <= 1
    assert nogo_fraction == pytest.approx(10 / 200)


def test_fraction_correct_easy_uses_only_100_percent_trials():
    """50 % trials are all wrong, 100 % all right: only 100 % counts (spec §16.1 fixed)."""
    trials = pd.DataFrame(
        {
            'contrastLeft': [1.0, np.nan, 0.5, np.nan, 0.25, 1.0],
            'contrastRight': [np.nan, 1.0, np.nan, 0.5, np.nan, np.nan],
            'choice': [1, -1, -1, 1, -1, 0],
            'feedbackType': [1, 1, -1, -1, -1, -1],
        }
    )
    assert task.compute_fraction_correct_easy(trials) == 1.0
    assert task.compute_fraction_correct_easy(trials, exclude_nogo=False) == pytest.approx(2 / 3)
    assert np.isnan(task.compute_fraction_correct_easy(trials.iloc[2:5]))


def test_fraction_correct_by_contrast():
    trials = pd.DataFrame(
        {
            'contrastLeft': [1.0, np.nan, 0.0, np.nan, 0.25],
            'contrastRight': [np.nan, 1.0, np.nan, 0.0, np.nan],
            'choice': [1, 1, 1, 1, 0],
            'feedbackType': [1, -1, 1, -1, -1],
        }
    )
    table = task.fraction_correct_by_contrast(trials)
    assert table.index.tolist() == [0.0, 100.0]  # -0.0 and 0.0 are one level; no-go dropped
    assert table['fraction_correct'].tolist() == [0.5, 0.5]
    assert table['n_trials'].tolist() == [2, 2]


def test_basic_and_block_performance(biased_trials, training_trials):
    basic = task.basic_performance(biased_trials)
    assert basic['n_trials'] == 200
    assert (
        basic['psych_50_n_trials']
        == ((biased_trials['probabilityLeft'] == 0.5) & (biased_trials['choice'] != 0)).sum()
    )
    for key in ('fraction_correct', 'fraction_correct_easy', 'nogo_fraction'):
        assert 0 <= basic[key] <= 1
    blocks = task.block_performance(biased_trials)
    assert set(blocks) == {
        f'psych_{b}_{k}' for b in ('20', '80') for k in task.PSYCHOMETRIC_KEYS
    } | {'bias_shift'}
    assert blocks['bias_shift'] == pytest.approx(blocks['psych_80_bias'] - blocks['psych_20_bias'])
    training_blocks = task.block_performance(training_trials)
    assert all(np.isnan(value) for value in training_blocks.values())
    assert task.basic_performance(training_trials)['psych_50_n_trials'] == 190


# ---------------------------------------------------------------------------
# Psychometric fits
# ---------------------------------------------------------------------------
def test_fit_psychometric_keys_filter_and_r_squared(biased_trials):
    fit_all = task.fit_psychometric(biased_trials)
    assert set(fit_all) == set(task.PSYCHOMETRIC_KEYS)
    fit_20 = task.fit_psychometric(biased_trials, probability_left=0.2)
    assert fit_20['n_trials'] != fit_all['n_trials']
    assert (
        fit_20['n_trials']
        == ((biased_trials['probabilityLeft'] == 0.2) & (biased_trials['choice'] != 0)).sum()
    )
    assert 0 <= fit_all['r_squared'] <= 1
    assert np.isnan(task.fit_psychometric(biased_trials, compute_r_squared=False)['r_squared'])


def test_fit_psychometric_empty_and_failed(training_trials, monkeypatch):
    empty = task.fit_psychometric(training_trials.iloc[:0])
    assert empty['n_trials'] == 0 and np.isnan(empty['bias']) and np.isnan(empty['r_squared'])
    all_nogo = task.fit_psychometric(training_trials.assign(choice=0))
    assert all_nogo['n_trials'] == 0
    assert task.fit_psychometric(training_trials, probability_left=0.8)['n_trials'] == 0

    def broken_fit(*args, **kwargs):
        raise RuntimeError('optimizer failed')

    monkeypatch.setattr(task.psychofit, 'mle_fit_psycho', broken_fit)
    failed = task.fit_psychometric(training_trials)
    assert failed['n_trials'] == 190
    assert all(np.isnan(failed[key]) for key in task.PSYCHOMETRIC_KEYS if key != 'n_trials')


def test_fit_psychometric_is_reproducible_and_keeps_global_rng(training_trials):
    np.random.seed(123)  # noqa: NPY002 - checks that the caller's legacy RNG state survives
    expected_next = np.random.rand()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    first = task.fit_psychometric(training_trials)
    assert np.random.rand() == expected_next  # noqa: NPY002
    second = task.fit_psychometric(training_trials)
    assert first == second


def test_fit_psychometric_by_block(biased_trials, invalid_trials, training_trials):
    fits = task.fit_psychometric_by_block(biased_trials)
    assert isinstance(fits, dict) and set(fits) == {'50', '20', '80'}
    assert fits['50']['n_trials'] + fits['20']['n_trials'] + fits['80']['n_trials'] == 196
    assert set(task.fit_psychometric_by_block(invalid_trials)) == {'20', '80'}  # no raise
    no_column = task.fit_psychometric_by_block(training_trials.drop(columns='probabilityLeft'))
    assert set(no_column) == {'50'} and no_column['50']['n_trials'] == 190
    # a pL value with fewer than 10 trials in total is skipped, other pL values are ignored
    odd = training_trials.assign(probabilityLeft=np.r_[np.full(9, 0.2), np.full(191, 0.7)])
    assert task.fit_psychometric_by_block(odd) == {}


def test_compute_bias_shift():
    assert task.compute_bias_shift({'bias': -10.0}, {'bias': 10.0}) == 20
    assert np.isnan(task.compute_bias_shift(None, {'bias': 10.0}))
    assert np.isnan(task.compute_bias_shift({'bias': -10.0}, {}))


# Ground truth. Tolerances: |bias error| <= 3 % contrast, |threshold error| <= 25 % of the
# true threshold, |lapse error| <= 0.05 (3,000 trials; over 20 seeds the largest errors were
# 2.3 % / 16 % / 0.037). Lapses differ by more than the tolerance so a gamma1/gamma2 swap fails.
@pytest.mark.parametrize(
    'params',
    [(-8.0, 20.0, 0.02, 0.15), (5.0, 30.0, 0.12, 0.03), (0.0, 12.0, 0.05, 0.05)],
)
def test_fit_psychometric_recovers_known_parameters(params):
    trials = simulate_trials({0.5: params}, np.full(3000, 0.5), seed=7)
    fit = task.fit_psychometric(trials)
    bias, threshold, lapse_left, lapse_right = params
    assert fit['bias'] == pytest.approx(bias, abs=3)
    assert fit['threshold'] == pytest.approx(threshold, rel=0.25)
    assert fit['lapse_left'] == pytest.approx(lapse_left, abs=0.05)
    assert fit['lapse_right'] == pytest.approx(lapse_right, abs=0.05)
    assert fit['n_trials'] == 3000 and fit['r_squared'] > 0.95


def test_lapse_left_is_p_rightward_for_strong_left_stimuli():
    """A mouse that goes right on 15 % of strong-left trials has lapse_left 0.15 (§16.2)."""
    trials = simulate_trials({0.5: (0.0, 15.0, 0.15, 0.0)}, np.full(3000, 0.5), seed=3)
    strong_left = trials['contrastLeft'] == 1
    observed = (trials.loc[strong_left, 'choice'] == -1).mean()
    fit = task.fit_psychometric(trials)
    assert fit['lapse_left'] == pytest.approx(observed, abs=0.03)
    assert fit['lapse_right'] < 0.03


def test_bias_shift_recovers_generating_sign_and_size_with_inexact_pl():
    """Left blocks (pL 0.8) shift the curve to positive contrasts: shift = +16 (±4) %."""
    probability_left = biased_probability_left(6000, seed=2)
    assert not np.any(probability_left == 0.2) and not np.any(probability_left == 0.8)
    params = {0.5: (0.0, 15.0, 0.05, 0.05), PL_20: (-8.0, 15.0, 0.05, 0.05)}
    params[PL_80] = (8.0, 15.0, 0.05, 0.05)
    trials = simulate_trials(params, probability_left, seed=4)
    fits = task.fit_psychometric_by_block(trials)
    assert set(fits) == {'50', '20', '80'}
    assert fits['20']['n_trials'] == np.isclose(probability_left, 0.2).sum()
    assert fits['20']['bias'] == pytest.approx(-8, abs=3)
    assert fits['80']['bias'] == pytest.approx(8, abs=3)
    assert task.compute_bias_shift(fits['20'], fits['80']) == pytest.approx(16, abs=4)
    assert task.block_performance(trials)['bias_shift'] == pytest.approx(16, abs=4)


# ---------------------------------------------------------------------------
# Contrasts
# ---------------------------------------------------------------------------
def test_compute_trial_contrasts():
    trials = pd.DataFrame(
        {
            'contrastLeft': [np.nan, 0.5, 0.0, np.nan, np.nan],
            'contrastRight': [0.25, np.nan, np.nan, 0.0, np.nan],
        },
        index=[10, 11, 12, 13, 14],
    )
    contrasts = task.compute_trial_contrasts(trials)
    assert contrasts.index.tolist() == [10, 11, 12, 13, 14]
    assert contrasts['stim_side'].tolist() == ['right', 'left', 'left', 'right', None]
    np.testing.assert_array_equal(contrasts['contrast'], [25, 50, 0, 0, np.nan])
    np.testing.assert_array_equal(contrasts['signed_contrast'], [25, -50, 0, 0, np.nan])
    assert np.signbit(contrasts['signed_contrast'].to_numpy()[:4]).tolist() == [
        False,
        True,
        True,  # zero-contrast left stimulus is -0.0
        False,
    ]


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.0, 0.0625, 0.125, 0.25, 0.5, 1.0])),
        min_size=1,
        max_size=30,
    )
)
def test_trial_contrast_sign_matches_side(stimuli):
    is_left = np.array([left for left, _ in stimuli])
    contrast = np.array([c for _, c in stimuli])
    trials = pd.DataFrame(
        {
            'contrastLeft': np.where(is_left, contrast, np.nan),
            'contrastRight': np.where(is_left, np.nan, contrast),
        }
    )
    out = task.compute_trial_contrasts(trials)
    assert (np.signbit(out['signed_contrast']) == is_left).all()
    np.testing.assert_allclose(np.abs(out['signed_contrast']), 100 * contrast)
    assert ((out['stim_side'] == 'left') == is_left).all()


def test_stored_contrast_columns_are_used_without_raw_contrasts():
    """Trials read back from HDF5 have signed_contrast/stim_side but no contrastLeft/Right."""
    trials = pd.DataFrame(
        {
            'contrastLeft': [1.0, np.nan, 0.0, np.nan],
            'contrastRight': [np.nan, 0.25, np.nan, 0.0],
            'choice': [1, -1, 1, -1],
            'feedbackType': [1, 1, 1, 1],
            'brain_region': 'VTA',
            'hemisphere': 'l',
        }
    )
    stored = pd.concat([trials, task.compute_trial_contrasts(trials)], axis=1)
    stored = stored.drop(columns=['contrastLeft', 'contrastRight'])
    stored['signed_contrast'] = stored['signed_contrast'] + 0.0  # -0.0 lost on the way
    assert task.get_contrast_set(stored) == [0.0, 25.0, 100.0]
    assert task.compute_fraction_correct_easy(stored) == 1.0
    np.testing.assert_array_equal(task.sort_trials_by_type(stored), [0, 1, 2, 3])
    # stim_side restores the side of the zero-contrast left stimulus
    assert (
        task.add_relative_contrast(stored)['side'].tolist()
        == task.add_relative_contrast(trials)['side'].tolist()
        == ['ipsi', 'contra', 'ipsi', 'contra']
    )
    with pytest.raises(KeyError, match='signed_contrast'):
        task.get_contrast_set(stored.drop(columns='signed_contrast'))


def test_add_relative_contrast():
    df = pd.DataFrame(
        {
            'signed_contrast': [25.0, -25.0, -0.0, 0.0, 25.0, -0.0, 6.25, np.nan, 25.0],
            'brain_region': 'VTA',
            'hemisphere': ['l', 'l', 'l', 'l', 'r', 'r', None, 'l', ''],
        }
    )
    out = task.add_relative_contrast(df)
    assert 'relative_contrast' not in df  # input untouched
    np.testing.assert_array_equal(out['hemi_sign'], [1, 1, 1, 1, -1, -1, np.nan, 1, np.nan])
    np.testing.assert_array_equal(
        out['relative_contrast'], [25, -25, 0, 0, -25, 0, np.nan, np.nan, np.nan]
    )
    assert out['side'].tolist() == [
        'contra',
        'ipsi',
        'ipsi',  # left zero-contrast stimulus, left hemisphere
        'contra',
        'ipsi',
        'contra',  # left zero-contrast stimulus, right hemisphere
        None,  # unknown hemisphere: neither (tests/test_midline.py: midline regions too)
        None,
        None,
    ]


# ---------------------------------------------------------------------------
# Trial ordering, timings, event completeness
# ---------------------------------------------------------------------------
def test_sort_trials_by_type():
    trials = pd.DataFrame(
        {
            'contrastLeft': [0.25, np.nan, 1.0, np.nan, 0.0, 0.125],
            'contrastRight': [np.nan, 1.0, np.nan, 0.0625, np.nan, np.nan],
            'feedbackType': [1, -1, 1, -1, -1, 1],
        },
        index=[5, 6, 7, 8, 9, 10],
    )
    order = task.sort_trials_by_type(trials)
    assert order.tolist() == [1, 3, 4, 2, 0, 5]  # incorrect 100, 6.25, 0; correct 100, 25, 12.5
    assert sorted(order.tolist()) == list(range(6))
    all_correct = trials.assign(feedbackType=1)
    assert task.sort_trials_by_type(all_correct).tolist() == [1, 2, 0, 5, 3, 4]
    all_incorrect = trials.assign(feedbackType=-1)
    assert task.sort_trials_by_type(all_incorrect).tolist() == [1, 2, 0, 5, 3, 4]


def test_get_trial_timings():
    trials = pd.DataFrame(
        {
            'stimOn_times': [10.0, 20.0, np.nan],
            'firstMovement_times': [10.3, 19.9, 30.2],
            'response_times': [10.8, 20.5, 30.6],
        },
        index=[3, 4, 5],
    )
    timings = task.get_trial_timings(trials)
    assert timings.index.tolist() == [3, 4, 5]
    np.testing.assert_allclose(timings['reaction_time'], [0.3, -0.1, np.nan])
    np.testing.assert_allclose(timings['movement_time'], [0.5, 0.6, 0.4])
    np.testing.assert_allclose(timings['response_time'], [0.8, 0.5, np.nan])


def test_missing_events(training_trials):
    assert task.missing_events(training_trials) == []
    trials = training_trials.drop(columns='feedback_times')
    trials.loc[trials.index[:85], 'stimOn_times'] = np.nan
    trials.loc[trials.index[:11], 'firstMovement_times'] = np.nan  # 94.5 % present: complete
    assert task.missing_events(trials) == ['stimOn_times', 'feedback_times']
    assert task.missing_events(trials, events=['firstMovement_times'], threshold=0.95) == [
        'firstMovement_times'
    ]
    assert task.missing_events(training_trials.iloc[:0], events=['stimOn_times']) == [
        'stimOn_times'
    ]


# ---------------------------------------------------------------------------
# Real IBL sessions
# ---------------------------------------------------------------------------
REAL_TRIALS = [
    'cortexlab/Subjects/CQ002/2024-11-05/001/alf/task_00/_ibl_trials.table.pqt',
    'wittenlab/Subjects/fip_40/2023-05-18/001/alf/_ibl_trials.table.pqt',
    'neurophotometrics_versions/version_5/_ibl_trials.table.pqt',
]


@pytest.mark.parametrize('relative_path', REAL_TRIALS, ids=['CQ002', 'fip_40', 'version_5'])
def test_real_sessions_give_plausible_values(real_data_dir, relative_path):
    trials = pd.read_parquet(real_data_dir / relative_path)
    performance = task.basic_performance(trials)
    assert performance['n_trials'] == len(trials)
    for key in ('fraction_correct', 'fraction_correct_easy', 'nogo_fraction'):
        assert 0 <= performance[key] <= 1
    fit = task.fit_psychometric(trials)
    assert fit['n_trials'] == (trials['choice'] != 0).sum()
    assert all(np.isfinite(fit[key]) for key in task.PSYCHOMETRIC_KEYS)
    assert 0 <= fit['lapse_left'] <= 0.2 and 0 <= fit['lapse_right'] <= 0.2
    assert 10 <= fit['threshold'] <= 50 and abs(fit['bias']) <= 50
    assert 0 <= fit['r_squared'] <= 1
    assert task.validate_block_structure(trials)['valid']
    assert task.missing_events(trials) == []
    assert set(task.get_contrast_set(trials)) <= {0, 6.25, 12.5, 25, 50, 100}


def test_wheel_kinematics_per_trial():
    trials = pd.DataFrame(
        {
            'stimOn_times': [1.0, 10.0, 20.0],
            'firstMovement_times': [1.3, 10.5, np.nan],
            'response_times': [1.8, 11.5, 21.0],
        }
    )
    velocity = np.array([[0.1, -2.5, 1.0], [0.5, 0.7, np.nan], [np.nan, np.nan, np.nan]])
    out = task.wheel_kinematics(trials, velocity)
    np.testing.assert_allclose(out['reaction_time'], [0.3, 0.5, np.nan])
    np.testing.assert_allclose(out['movement_time'], [0.5, 1.0, np.nan])
    np.testing.assert_allclose(out['peak_velocity'], [2.5, 0.7, np.nan])
    assert out.index.name == 'trial'
    with pytest.raises(ValueError, match='wheel rows'):
        task.wheel_kinematics(trials, velocity[:2])
