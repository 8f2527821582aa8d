"""Simulated IBL choice-world behaviour: blocks, stimuli, choices and trial timing.

Conventions (IBL): ``choice`` +1 = clockwise wheel turn = correct for a LEFT
stimulus, -1 = counter-clockwise = correct for a RIGHT stimulus, 0 = no-go;
P(rightward) = P(choice == -1) = psychofit ``erf_psycho_2gammas`` of the signed
contrast in % (positive = right). Times are seconds on the task (Bpod) clock.
"""

import numpy as np
import pandas as pd
from psychofit import erf_psycho_2gammas

from iblnm import config

TRIALS_COLUMNS = [
    'intervals_0',
    'intervals_1',
    'goCue_times',
    'response_times',
    'choice',
    'stimOn_times',
    'contrastLeft',
    'contrastRight',
    'feedback_times',
    'feedbackType',
    'rewardVolume',
    'probabilityLeft',
    'firstMovement_times',
]
FIRST_BLOCK_TRIALS = 90  # trials of the initial 0.5 block (biased / ephys)
BLOCK_SCALE, BLOCK_MIN, BLOCK_MAX = 60.0, 20, 100  # truncated exponential (trials)
RESPONSE_WINDOW = 60.0  # s, no-go timeout
ITI_CORRECT, ITI_ERROR = 1.55, 2.55  # s, feedback -> trial end
REWARD_UL = {'training': 3.0, 'biased': 1.5, 'ephys': 1.5}  # µL
NOGO_FIRST_MOVEMENT_NAN = 0.5  # fraction of no-go trials without a detected movement


def truncated_exponential(rng, scale=BLOCK_SCALE, low=BLOCK_MIN, high=BLOCK_MAX):
    """One block length (trials): ``int(exp(scale))`` rejection-sampled into [low, high]."""
    while True:
        x = rng.exponential(scale)
        if low <= x <= high:
            return int(x)


def block_lengths(n_trials, rng, session_type):
    """Block lengths (trials) covering at least ``n_trials``; training = one 0.5 block.

    Returns
    -------
    lengths : list of int
    p_left : list of float
        Block prior per block: 0.5 first, then alternating 0.2/0.8 (random start).
    """
    if session_type == 'training':
        return [int(n_trials)], [0.5]
    lengths, priors = [FIRST_BLOCK_TRIALS], [0.5]
    p = 0.2 if rng.random() < 0.5 else 0.8
    while sum(lengths) < n_trials:
        lengths.append(truncated_exponential(rng))
        priors.append(p)
        p = round(1 - p, 1)
    return lengths, priors


def draw_stimuli(p_left, contrast_set, skew_zero, rng):
    """Stimulus side and contrast per trial.

    Parameters
    ----------
    p_left : ndarray, shape (n_trials,)
        P(stimulus on the left) per trial.
    contrast_set : sequence of float
        Contrasts in [0, 1].
    skew_zero : bool
        0 % contrast half as likely as the others (training and ephys protocols).

    Returns
    -------
    is_left : ndarray of bool, shape (n_trials,)
    contrast : ndarray of float, shape (n_trials,)
    """
    contrasts = np.asarray(contrast_set, dtype=float)
    weights = np.where((contrasts == 0) & skew_zero, 0.5, 1.0)
    contrast = rng.choice(contrasts, size=len(p_left), p=weights / weights.sum())
    is_left = rng.random(len(p_left)) < p_left
    return is_left, contrast


def draw_choices(signed_contrast, p_left, psychometrics, nogo_rate, rng):
    """Choices from the block-specific psychometric curves.

    Parameters
    ----------
    signed_contrast : ndarray, shape (n_trials,)
        Contrast in %, positive = right stimulus.
    p_left : ndarray, shape (n_trials,)
        Block prior per trial (selects the '50', '20' or '80' parameters).
    psychometrics : dict
        Block -> {'bias', 'threshold', 'lapse_left', 'lapse_right'}.
    nogo_rate : float
        Probability of a no-go trial (more likely at low contrast).

    Returns
    -------
    ndarray of int64, shape (n_trials,)
        +1 (CW, leftward), -1 (CCW, rightward) or 0 (no-go).
    """
    p_right = np.empty(len(signed_contrast))
    for block, pars in psychometrics.items():
        sel = np.isclose(p_left, int(block) / 100)
        vec = [pars['bias'], pars['threshold'], pars['lapse_left'], pars['lapse_right']]
        p_right[sel] = erf_psycho_2gammas(vec, signed_contrast[sel])
    choice = np.where(rng.random(len(p_right)) < p_right, -1, 1).astype(np.int64)
    nogo = rng.random(len(choice)) < nogo_rate * (2 - np.abs(signed_contrast) / 100)
    choice[nogo] = 0
    return choice


def draw_reaction_times(contrast, rt_fast, rng):
    """stimOn -> firstMovement times (s): lognormal, slower at low contrast, rare long lapses.

    Parameters
    ----------
    contrast : ndarray, shape (n_trials,)
        Unsigned contrast in [0, 1].
    rt_fast : float
        Median reaction time (s) at 100 % contrast.
    """
    median = rt_fast * (1 + 1.2 * np.exp(-contrast / 0.12))
    rt = median * np.exp(0.45 * rng.standard_normal(len(contrast)))
    slow = rng.random(len(contrast)) < 0.03
    rt[slow] += rng.exponential(4.0, size=slow.sum())
    return np.clip(rt, 0.08, 45.0)


def _trial_timing(choice, contrast, correct, rt_fast, rng):
    """Per-trial durations (s): start->stimOn, reaction, movement and feedback->end."""
    n = len(choice)
    to_stim = 0.3 + np.clip(0.2 + rng.exponential(0.35, n), 0.2, 0.5)
    resets = rng.random(n) < 0.1  # quiescence violated: the period restarts
    to_stim[resets] += rng.exponential(1.5, resets.sum()) + 0.6
    rt = draw_reaction_times(contrast, rt_fast, rng)
    mt = np.clip(0.22 * np.exp(0.4 * rng.standard_normal(n)), 0.06, 2.0)
    nogo = choice == 0
    response = np.where(nogo, RESPONSE_WINDOW, rt + mt)
    iti = np.where(correct, ITI_CORRECT, ITI_ERROR) + rng.uniform(0, 0.01, n)
    gap = rng.uniform(0.03, 0.07, n)  # trial end -> next trial start
    return to_stim, rt, response, iti, gap, resets


def simulate_trials(plan, n_max, rng):
    """Draw ``n_max`` trials of a session (before trimming to its duration).

    Returns
    -------
    trials : pandas.DataFrame
        The 13 IBL trials-table columns (float64 / int64, RangeIndex).
    extra : dict
        ``block_lengths``, ``block_priors``, ``reaction_times`` (s),
        ``quiescence_reset`` (bool per trial) and ``true_first_movement`` (s, the
        movement onset also for no-go trials whose detection is NaN).
    """
    stype = plan['session_type']
    lengths, priors = block_lengths(n_max, rng, stype)
    p_left = np.repeat(priors, lengths)[:n_max].astype(float)
    is_left, contrast = draw_stimuli(p_left, plan['contrast_set'], stype != 'biased', rng)
    signed = np.where(is_left, -contrast, contrast) * 100
    choice = draw_choices(signed, p_left, plan['psychometrics'], plan['nogo_rate'], rng)
    correct = ((choice == 1) & is_left) | ((choice == -1) & ~is_left)
    to_stim, rt, response, iti, gap, resets = _trial_timing(
        choice, contrast, correct, plan['rt_fast'], rng
    )
    first_start = rng.uniform(2.0, 30.0)
    durations = to_stim + response + iti
    starts = first_start + np.concatenate([[0.0], np.cumsum(durations + gap)[:-1]])
    stim_on = starts + to_stim
    feedback = stim_on + response + rng.uniform(0.0001, 0.0004, n_max)
    first_move = stim_on + rt
    detected = np.where((choice == 0) & (rng.random(n_max) < NOGO_FIRST_MOVEMENT_NAN), np.nan, 1)
    trials = pd.DataFrame(
        {
            'intervals_0': starts,
            'intervals_1': feedback + iti,
            'goCue_times': stim_on + rng.normal(0.0004, 0.0002, n_max),
            'response_times': stim_on + response,
            'choice': choice,
            'stimOn_times': stim_on,
            'contrastLeft': np.where(is_left, contrast, np.nan),
            'contrastRight': np.where(is_left, np.nan, contrast),
            'feedback_times': feedback,
            'feedbackType': np.where(correct, 1, -1).astype(np.int64),
            'rewardVolume': np.where(correct, REWARD_UL[stype], 0.0),
            'probabilityLeft': p_left,
            'firstMovement_times': np.where(choice == 0, first_move * detected, first_move),
        }
    )
    extra = {
        'block_lengths': lengths,
        'block_priors': priors,
        'quiescence_reset': resets,
        'true_first_movement': np.where((choice == 0) & np.isnan(detected), np.nan, first_move),
    }
    return trials[TRIALS_COLUMNS], extra


def n_trials_for_duration(trials, task_s, min_trials):
    """Number of trials that fit in ``task_s`` seconds, at least ``min_trials``."""
    n = int(np.searchsorted(trials['intervals_1'].to_numpy(), task_s))
    return max(n, int(min_trials), 1)


def extend_last_block(n_trials, lengths, n_max):
    """Grow ``n_trials`` so the last (partial) block has at least MIN_BLOCK_LENGTH trials."""
    edges = np.cumsum(lengths)
    last_start = edges[edges < n_trials][-1] if np.any(edges < n_trials) else 0
    if 0 < n_trials - last_start < config.MIN_BLOCK_LENGTH:
        n_trials = last_start + config.MIN_BLOCK_LENGTH
    return int(min(n_trials, n_max))


def truncate_blocks(lengths, priors, n_trials):
    """Block lengths and priors of the first ``n_trials`` trials."""
    out_len, out_pri, total = [], [], 0
    for length, prior in zip(lengths, priors):
        if total >= n_trials:
            break
        out_len.append(int(min(length, n_trials - total)))
        out_pri.append(float(prior))
        total += out_len[-1]
    return out_len, out_pri


def session_trials(plan, rng, n_trials=None):
    """Trials of one session, trimmed to its planned duration.

    Parameters
    ----------
    plan : dict
        Session plan (:func:`iblnm.simulate.cohort.plan_sessions`); uses
        ``session_type``, ``contrast_set``, ``psychometrics``, ``rt_fast``,
        ``nogo_rate``, ``task_minutes`` and ``min_trials``.
    rng : numpy.random.Generator
    n_trials : int, optional
        Exact number of trials (overrides the duration).

    Returns
    -------
    trials : pandas.DataFrame, shape (n_trials, 13)
    extra : dict
        See :func:`simulate_trials`; arrays trimmed, blocks truncated.
    """
    n_max = int(n_trials or max(plan['task_minutes'] * 60 / 2.5, plan.get('min_trials', 0) + 50))
    trials, extra = simulate_trials(plan, n_max, rng)
    if n_trials is None:
        n_trials = n_trials_for_duration(
            trials, plan['task_minutes'] * 60, plan.get('min_trials', 0)
        )
        if plan['session_type'] != 'training':
            n_trials = extend_last_block(n_trials, extra['block_lengths'], n_max)
    trials = trials.iloc[:n_trials].reset_index(drop=True)
    lengths, priors = truncate_blocks(extra['block_lengths'], extra['block_priors'], n_trials)
    extra = {
        'block_lengths': lengths,
        'block_priors': priors,
        'quiescence_reset': extra['quiescence_reset'][:n_trials],
        'true_first_movement': extra['true_first_movement'][:n_trials],
    }
    return trials, extra
