"""Trial contrasts, performance, psychometric fits and block checks of IBL trials tables.

Every function is pure: it takes a trials ``DataFrame`` (one row per trial, IBL ALF columns)
or a sessions table and returns new values without modifying its input.

Conventions (IBL, never re-signed here)
---------------------------------------
- ``contrastLeft`` / ``contrastRight`` are fractions in [0, 1] on the stimulus side and NaN on
  the other. ``contrast`` and ``signed_contrast`` are in **percent** (0-100); the signed
  contrast is positive for a right stimulus and negative for a left one. A zero-contrast left
  stimulus has ``signed_contrast == -0.0``: use ``np.signbit`` or ``stim_side`` when the side
  matters at zero contrast.
- ``choice``: -1 = counter-clockwise wheel turn, the correct response to a RIGHT stimulus
  ("rightward"); +1 = the correct response to a LEFT stimulus ("leftward"); 0 = no-go (time-out).
  P(rightward) = mean(choice == -1), as in brainbox.
- ``feedbackType``: +1 rewarded, -1 error (no-go trials are errors).
- ``probabilityLeft`` (pL): block prior. Values may be stored inexactly (0.19999999999999996),
  so blocks are always selected with ``np.isclose``, never ``==``. pL 0.8 is a "left block"
  (block '80'), pL 0.2 a "right block" (block '20'), pL 0.5 the unbiased block ('50').

Functions that need contrasts take them from ``contrastLeft``/``contrastRight`` when present,
otherwise from the stored ``signed_contrast`` (and ``stim_side``) columns, so they work both on
ALF trials tables and on the trials saved in the session HDF5 files.
"""

import numpy as np
import pandas as pd
import psychofit

from iblnm import config
from iblnm.recordings import lateralities

# ---------------------------------------------------------------------------
# Module constants (candidates for config.py)
# ---------------------------------------------------------------------------
# brainbox ``compute_psychometric(plotting=True)`` settings; parameters are
# [bias (%), threshold (%), gamma1 (lower asymptote), gamma2 (1 - upper asymptote)].
PSYCHOMETRIC_FIT_KWARGS = {
    'P_model': 'erf_psycho_2gammas',
    'parstart': (0.0, 40.0, 0.1, 0.1),
    'parmin': (-50.0, 10.0, 0.0, 0.0),
    'parmax': (50.0, 50.0, 0.2, 0.2),
    'nfits': 10,
}
# Seed of the random restarts of psychofit (which draws from the global np.random).
PSYCHOMETRIC_FIT_SEED = 0
# Block label -> probabilityLeft value.
BLOCK_PROBABILITIES = {'50': 0.5, '20': 0.2, '80': 0.8}
# A pL value with fewer trials than this in the session is not fitted (trials).
MIN_TRIALS_PER_BLOCK_FIT = 10

PSYCHOMETRIC_KEYS = ('bias', 'threshold', 'lapse_left', 'lapse_right', 'r_squared', 'n_trials')
TIMING_COLUMNS = {
    'reaction_time': ('stimOn_times', 'firstMovement_times'),
    'movement_time': ('firstMovement_times', 'response_times'),
    'response_time': ('stimOn_times', 'response_times'),
}


# ---------------------------------------------------------------------------
# Contrasts
# ---------------------------------------------------------------------------
def compute_trial_contrasts(trials):
    """Stimulus side, contrast and signed contrast of every trial.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials with ``contrastLeft`` and ``contrastRight`` (fraction in [0, 1], NaN on the
        side without a stimulus).

    Returns
    -------
    pandas.DataFrame
        Same index as ``trials``, with columns:

        - ``stim_side`` (str): 'left' where ``contrastLeft`` is not NaN, else 'right'; None when
          both contrasts are NaN.
        - ``contrast`` (float, %): 100 x the contrast on the stimulus side (NaN if none).
        - ``signed_contrast`` (float, %): +contrast for right stimuli, -contrast for left ones.
          A zero-contrast left stimulus gives -0.0 (IEEE negative zero), so the side survives at
          zero contrast: test it with ``np.signbit`` or use ``stim_side``.
    """
    contrast_left = trials['contrastLeft'].to_numpy(dtype=float)
    contrast_right = trials['contrastRight'].to_numpy(dtype=float)
    is_left = ~np.isnan(contrast_left)
    contrast = 100.0 * np.where(is_left, contrast_left, contrast_right)
    stim_side = np.where(is_left, 'left', 'right').astype(object)
    stim_side[np.isnan(contrast)] = None
    signed_contrast = np.where(is_left, -contrast, contrast)
    return pd.DataFrame(
        {'stim_side': stim_side, 'contrast': contrast, 'signed_contrast': signed_contrast},
        index=trials.index,
    )


def _signed_contrast(trials):
    """Signed contrast (%) of every trial, from raw or stored columns (-0.0 for left zeros)."""
    if {'contrastLeft', 'contrastRight'} <= set(trials.columns):
        return compute_trial_contrasts(trials)['signed_contrast'].to_numpy()
    if 'signed_contrast' not in trials.columns:
        raise KeyError('trials need contrastLeft/contrastRight or a signed_contrast column')
    signed_contrast = trials['signed_contrast'].to_numpy(dtype=float)
    if 'stim_side' in trials.columns:  # restore the side of zero-contrast trials
        is_left = (trials['stim_side'] == 'left').to_numpy()
        signed_contrast = np.copysign(np.abs(signed_contrast), np.where(is_left, -1.0, 1.0))
    return signed_contrast


def _contrast(trials):
    """Unsigned contrast (%) of every trial."""
    return np.abs(_signed_contrast(trials))


def get_contrast_set(trials):
    """Sorted unique contrasts (%) presented in the session (NaN contrasts ignored).

    Parameters
    ----------
    trials : pandas.DataFrame

    Returns
    -------
    list of float
        E.g. ``[0.0, 6.25, 12.5, 25.0, 100.0]`` for a full biased session.
    """
    contrast = _contrast(trials)
    return [float(c) for c in np.unique(contrast[np.isfinite(contrast)])]


def add_relative_contrast(df):
    """Contrast relative to the recorded hemisphere: positive = contralateral stimulus.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with ``signed_contrast`` (%), ``brain_region`` and ``hemisphere`` ('l', 'r',
        '' or None); a ``stim_side`` column, when present, sets the side of zero-contrast
        stimuli.

    Returns
    -------
    pandas.DataFrame
        A copy with three more columns:

        - ``hemi_sign``: +1 for a left fiber, -1 for a right one, NaN for a recording lateral
          to no side (:func:`iblnm.recordings.laterality`: a midline region such as the DR,
          or an unknown hemisphere).
        - ``relative_contrast`` (%): ``signed_contrast * hemi_sign``; for a left-hemisphere fiber
          right stimuli (positive signed contrast) are contralateral and stay positive.
        - ``side``: 'contra' or 'ipsi', decided with ``np.signbit`` so that a zero-contrast
          stimulus keeps its side (-0.0 counts as ipsi); None where the contrast is NaN or the
          recording is lateral to no side (neither contra nor ipsi).

    Raises
    ------
    KeyError
        Without a ``brain_region`` column (a midline region could not be told apart).
    """
    if 'brain_region' not in df:
        raise KeyError('add_relative_contrast needs brain_region (midline regions get no side)')
    out = df.copy()
    lateral = lateralities(out['brain_region'], out['hemisphere'])
    hemi_sign = np.select([lateral == 'l', lateral == 'r'], [1.0, -1.0], np.nan)
    relative_contrast = _signed_contrast(out) * hemi_sign
    side = np.where(np.signbit(relative_contrast), 'ipsi', 'contra').astype(object)
    side[np.isnan(relative_contrast)] = None
    out['hemi_sign'] = hemi_sign
    out['relative_contrast'] = relative_contrast
    out['side'] = side
    return out


def sort_trials_by_type(trials):
    """Positional order of trials for heatmaps: incorrect first, then correct.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials with ``feedbackType`` and contrasts.

    Returns
    -------
    numpy.ndarray of int
        Positional indices: every incorrect trial (``feedbackType == -1``), then every correct
        one (``feedbackType == 1``), then any other (e.g. NaN feedback); each group sorted by
        descending contrast (%), ties kept in trial order. Every index appears once.
    """
    feedback = trials['feedbackType'].to_numpy(dtype=float)
    group = np.select([feedback == -1, feedback == 1], [0, 1], default=2)
    contrast = np.nan_to_num(_contrast(trials), nan=-1.0)
    # lexsort: the last key is the primary one; stable, so ties keep trial order
    return np.lexsort((-contrast, group)).astype(int)


# ---------------------------------------------------------------------------
# Block structure
# ---------------------------------------------------------------------------
def get_block_lengths(probability_left):
    """Lengths of the runs of consecutive (``np.isclose``) equal probabilityLeft values.

    Parameters
    ----------
    probability_left : array-like of float

    Returns
    -------
    numpy.ndarray of int
        Run lengths in trials, in order; empty for an empty input. NaN values form their own
        runs (consecutive NaNs are one run).
    """
    values = np.asarray(probability_left, dtype=float)
    if values.size == 0:
        return np.array([], dtype=int)
    is_change = ~np.isclose(values[1:], values[:-1], equal_nan=True)
    run_starts = np.concatenate([[0], np.flatnonzero(is_change) + 1])
    return np.diff(np.append(run_starts, values.size)).astype(int)


def validate_block_structure(trials, min_block_length=config.MIN_BLOCK_LENGTH):
    """Check that probabilityLeft blocks are not implausibly short.

    Parameters
    ----------
    trials : pandas.DataFrame
    min_block_length : int
        Shortest acceptable block (trials); default ``config.MIN_BLOCK_LENGTH``.

    Returns
    -------
    dict
        ``valid`` (bool), ``min_block_length`` (int, trials), ``n_blocks`` (int) and
        ``flagged`` (bool, = not valid).

    Notes
    -----
    - No ``probabilityLeft`` column: valid, one block as long as the session.
    - No trials: flagged, with 0 blocks and min length 0.
    - Consecutive values are compared with ``np.isclose``.
    - The **last** block is not checked when there are several: a session stops at an arbitrary
      trial, so the final block is truncated in normal sessions (with biased blocks of 20-100
      trials about one session in five would otherwise be flagged). ``min_block_length`` is
      the minimum over the checked blocks.
    """
    n_trials = len(trials)
    if 'probabilityLeft' not in trials.columns:
        return _block_check(n_trials, 1, n_trials < 1)
    block_lengths = get_block_lengths(trials['probabilityLeft'].to_numpy())
    if block_lengths.size == 0:
        return _block_check(0, 0, True)
    checked = block_lengths[:-1] if block_lengths.size > 1 else block_lengths
    shortest = int(checked.min())
    return _block_check(shortest, int(block_lengths.size), shortest < min_block_length)


def _block_check(min_block_length, n_blocks, flagged):
    return {
        'valid': not flagged,
        'min_block_length': int(min_block_length),
        'n_blocks': int(n_blocks),
        'flagged': bool(flagged),
    }


def _probability_left(trials):
    """probabilityLeft of every trial; 0.5 for all when the column is absent (training)."""
    if 'probabilityLeft' not in trials.columns:
        return np.full(len(trials), 0.5)
    return trials['probabilityLeft'].to_numpy(dtype=float)


# ---------------------------------------------------------------------------
# Performance
# ---------------------------------------------------------------------------
def _is_nogo(trials):
    return (trials['choice'] == 0).to_numpy()


def _mean_or_nan(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else np.nan


def compute_fraction_correct(trials, exclude_nogo=True):
    """Fraction of rewarded trials.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials with ``choice`` and ``feedbackType``.
    exclude_nogo : bool
        Drop no-go trials (``choice == 0``) first (default). They are errors otherwise.

    Returns
    -------
    float
        mean(feedbackType == 1) in [0, 1]; NaN when no trial is left.
    """
    keep = ~_is_nogo(trials) if exclude_nogo else np.ones(len(trials), dtype=bool)
    return _mean_or_nan(trials['feedbackType'].to_numpy()[keep] == 1)


def compute_fraction_correct_easy(trials, exclude_nogo=True):
    """Fraction correct on the easy trials, contrast == ``config.EASY_CONTRAST`` (100 %).

    Parameters
    ----------
    trials : pandas.DataFrame
    exclude_nogo : bool
        Drop no-go trials first, as in ``compute_fraction_correct`` (default).

    Returns
    -------
    float
        In [0, 1]; NaN without easy trials.

    Notes
    -----
    The original code selected ``contrast >= 0.5`` on a contrast in percent, i.e. every
    non-zero contrast (spec §16.1); brainbox ``compute_performance_easy`` uses >= 50 %.
    Here only the 100 % trials count, as the README describes.
    """
    is_easy = np.isclose(_contrast(trials), config.EASY_CONTRAST)
    if exclude_nogo:
        is_easy &= ~_is_nogo(trials)
    return _mean_or_nan(trials['feedbackType'].to_numpy()[is_easy] == 1)


def compute_nogo_fraction(trials):
    """Fraction of no-go trials (``choice == 0``), a float in [0, 1]; NaN without trials."""
    return _mean_or_nan(_is_nogo(trials))


def fraction_correct_by_contrast(trials, exclude_nogo=True):
    """Fraction correct at each unsigned contrast.

    Parameters
    ----------
    trials : pandas.DataFrame
    exclude_nogo : bool
        Drop no-go trials first (default).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``contrast`` (%, ascending) with columns ``fraction_correct`` (in [0, 1])
        and ``n_trials``. Trials with NaN contrast are ignored.
    """
    keep = ~_is_nogo(trials) if exclude_nogo else np.ones(len(trials), dtype=bool)
    table = pd.DataFrame(
        {'contrast': _contrast(trials)[keep], 'correct': trials['feedbackType'].to_numpy()[keep]}
    ).dropna(subset=['contrast'])
    grouped = table.assign(correct=table['correct'] == 1).groupby('contrast')['correct']
    return pd.DataFrame({'fraction_correct': grouped.mean(), 'n_trials': grouped.size()})


# ---------------------------------------------------------------------------
# Psychometric fits
# ---------------------------------------------------------------------------
def _empty_fit(n_trials=0):
    fit = dict.fromkeys(PSYCHOMETRIC_KEYS, np.nan)
    fit['n_trials'] = int(n_trials)
    return fit


def _choice_data(trials, probability_left=None):
    """Go trials of the requested block: (signed contrast %, rightward bool)."""
    keep = trials['choice'].isin([-1, 1]).to_numpy()
    signed_contrast = _signed_contrast(trials)
    keep &= np.isfinite(signed_contrast)
    if probability_left is not None:
        keep &= np.isclose(_probability_left(trials), probability_left)
    # +0.0 merges the -0.0 (left) and 0.0 (right) zero-contrast trials into one level
    contrasts = np.round(signed_contrast[keep], 6) + 0.0
    return contrasts, (trials['choice'].to_numpy()[keep] == -1)


def _proportion_rightward(contrasts, rightward):
    """Per unique signed contrast: levels (%), trial counts and P(rightward)."""
    levels, inverse, counts = np.unique(contrasts, return_inverse=True, return_counts=True)
    p_rightward = np.bincount(inverse, weights=rightward.astype(float)) / counts
    return levels, counts, p_rightward


def _mle_fit(levels, counts, p_rightward, seed=PSYCHOMETRIC_FIT_SEED):
    """psychofit ML fit with seeded random restarts; the global np.random state is restored."""
    kwargs = {
        key: np.array(value, dtype=float) if key.startswith('par') else value
        for key, value in PSYCHOMETRIC_FIT_KWARGS.items()
    }
    # psychofit draws its restarts from the legacy global generator: seed it, then restore it
    saved_state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        params, _ = psychofit.mle_fit_psycho(np.vstack([levels, counts, p_rightward]), **kwargs)
    finally:
        np.random.set_state(saved_state)  # noqa: NPY002
    return np.asarray(params, dtype=float)


def _pseudo_r_squared(params, levels, p_rightward):
    """1 - SS_res/SS_tot over the contrast levels, clamped at >= 0 (1 if both sums are 0)."""
    predicted = psychofit.erf_psycho_2gammas(params, levels)
    ss_res = float(np.sum((p_rightward - predicted) ** 2))
    ss_tot = float(np.sum((p_rightward - p_rightward.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return max(0.0, 1.0 - ss_res / ss_tot)


def fit_psychometric(trials, probability_left=None, compute_r_squared=True):
    """Fit P(rightward choice) against signed contrast with psychofit ``erf_psycho_2gammas``.

    P(rightward | c) = gamma1 + (1 - gamma1 - gamma2) * (erf((c - bias) / threshold) + 1) / 2,
    fitted by maximum likelihood with brainbox's ``plotting=True`` settings
    (``PSYCHOMETRIC_FIT_KWARGS``: parstart [0, 40, .1, .1], parmin [-50, 10, 0, 0],
    parmax [50, 50, .2, .2], 10 fits). The random restarts are seeded with
    ``PSYCHOMETRIC_FIT_SEED`` (the caller's ``np.random`` state is restored), so a fit is
    reproducible.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials with ``choice`` and contrasts (and ``probabilityLeft`` to select a block).
    probability_left : float or None
        Fit only trials whose probabilityLeft ``np.isclose`` this value (None: all trials).
        Without a ``probabilityLeft`` column every trial counts as pL 0.5.
    compute_r_squared : bool
        Compute the pseudo-R² (else NaN).

    Returns
    -------
    dict
        - ``bias`` (%): signed contrast at the curve midpoint; positive when the mouse
          needs right evidence to choose right, i.e. is biased to the left.
        - ``threshold`` (%): erf width (larger = shallower curve).
        - ``lapse_left``: gamma1, the lower asymptote = P(rightward) for strong LEFT stimuli.
        - ``lapse_right``: gamma2, 1 - upper asymptote = P(leftward) for strong RIGHT stimuli.
        - ``r_squared``: 1 - SS_res/SS_tot of P(rightward) per signed contrast against the fit,
          clamped at >= 0.
        - ``n_trials`` (int): go trials fitted.

        No go trials: all NaN with n_trials 0. Any exception in the fit: all NaN with n_trials
        = the number of go trials.

    Notes
    -----
    Deviations from the original (which called brainbox ``compute_psychometric``): the block
    is selected with ``np.isclose`` (brainbox uses ``==``, which misses inexact pL values);
    no-go trials are excluded (brainbox counts them as "not rightward"); gamma1 is named
    ``lapse_left`` and gamma2 ``lapse_right`` (the original swapped them, spec §16.2).
    """
    contrasts, rightward = _choice_data(trials, probability_left)
    n_trials = int(contrasts.size)
    if n_trials == 0:
        return _empty_fit(0)
    try:
        levels, counts, p_rightward = _proportion_rightward(contrasts, rightward)
        params = _mle_fit(levels, counts, p_rightward)
        r_squared = _pseudo_r_squared(params, levels, p_rightward) if compute_r_squared else np.nan
    except Exception:  # a failed fit is a NaN row, not a failed session
        return _empty_fit(n_trials)
    bias, threshold, gamma1, gamma2 = (float(p) for p in params)
    return {
        'bias': bias,
        'threshold': threshold,
        'lapse_left': gamma1,
        'lapse_right': gamma2,
        'r_squared': float(r_squared),
        'n_trials': n_trials,
    }


def _fit_block(trials, block_label, probability_left, compute_r_squared=True):
    """Fit one block, or None when its pL has fewer than ``MIN_TRIALS_PER_BLOCK_FIT`` trials."""
    n_block_trials = int(np.isclose(probability_left, BLOCK_PROBABILITIES[block_label]).sum())
    if n_block_trials < MIN_TRIALS_PER_BLOCK_FIT:
        return None
    return fit_psychometric(trials, BLOCK_PROBABILITIES[block_label], compute_r_squared)


def fit_psychometric_by_block(trials, compute_r_squared=True):
    """Psychometric fit per probabilityLeft block.

    Parameters
    ----------
    trials : pandas.DataFrame
    compute_r_squared : bool

    Returns
    -------
    dict
        {'50': fit, '20': fit, '80': fit} (see ``fit_psychometric``), with only the blocks
        present: pL values ``np.isclose`` to 0.5, 0.2 and 0.8 with at least
        ``MIN_TRIALS_PER_BLOCK_FIT`` (10) trials in total. Other pL values are skipped.
        Without a ``probabilityLeft`` column all trials are fitted as block '50'.
    """
    probability_left = _probability_left(trials)
    fits = {}
    for block_label in BLOCK_PROBABILITIES:
        fit = _fit_block(trials, block_label, probability_left, compute_r_squared)
        if fit is not None:
            fits[block_label] = fit
    return fits


def compute_bias_shift(fit20, fit80):
    """Bias shift between the block fits: bias_80 - bias_20 (% contrast).

    In left blocks (pL 0.8) a mouse that uses the prior chooses left more often, so
    P(rightward) falls and the fitted bias moves to positive contrasts: bias_80 > bias_20 and
    the shift is **positive** (brainbox's ``criterion_ephys`` requires > 5).

    Parameters
    ----------
    fit20, fit80 : dict or None
        Fits of the pL 0.2 and pL 0.8 blocks (``fit_psychometric``).

    Returns
    -------
    float
        NaN if either fit is missing or has no bias.
    """
    if not fit20 or not fit80:
        return np.nan
    return float(fit80.get('bias', np.nan) - fit20.get('bias', np.nan))


def _prefixed(fit, prefix):
    fit = fit if fit is not None else dict.fromkeys(PSYCHOMETRIC_KEYS, np.nan)
    return {f'{prefix}_{key}': fit[key] for key in PSYCHOMETRIC_KEYS}


def basic_performance(trials):
    """Session performance summary (one row of performance.pqt, without eid and contrasts).

    Parameters
    ----------
    trials : pandas.DataFrame

    Returns
    -------
    dict
        ``n_trials`` (all trials), ``fraction_correct`` (no-go excluded),
        ``fraction_correct_easy`` (100 % trials, no-go excluded), ``nogo_fraction`` and
        ``psych_50_{bias, threshold, lapse_left, lapse_right, r_squared, n_trials}`` from the
        fit of the pL 0.5 trials (all trials of a training session).
    """
    fit50 = fit_psychometric(trials, probability_left=BLOCK_PROBABILITIES['50'])
    return {
        'n_trials': len(trials),
        'fraction_correct': compute_fraction_correct(trials),
        'fraction_correct_easy': compute_fraction_correct_easy(trials),
        'nogo_fraction': compute_nogo_fraction(trials),
        **_prefixed(fit50, 'psych_50'),
    }


def block_performance(trials):
    """Psychometric fits of the biased blocks and the bias shift.

    Parameters
    ----------
    trials : pandas.DataFrame

    Returns
    -------
    dict
        ``psych_20_*`` and ``psych_80_*`` (keys as in ``fit_psychometric``) and ``bias_shift``
        (``compute_bias_shift``). Every value of a missing block (fewer than 10 trials) is NaN,
        including its ``n_trials``.
    """
    probability_left = _probability_left(trials)
    fit20 = _fit_block(trials, '20', probability_left)
    fit80 = _fit_block(trials, '80', probability_left)
    return {
        **_prefixed(fit20, 'psych_20'),
        **_prefixed(fit80, 'psych_80'),
        'bias_shift': compute_bias_shift(fit20, fit80),
    }


# ---------------------------------------------------------------------------
# Event times
# ---------------------------------------------------------------------------
def wheel_kinematics(trials, velocity):
    """Reaction time, movement time (s) and peak wheel speed of every trial.

    Parameters
    ----------
    trials : pandas.DataFrame
        As for :func:`get_trial_timings`.
    velocity : ndarray, shape (n_trials, n_samples)
        Per-trial wheel velocity (rad/s), stimulus onset to feedback, NaN-padded (the HDF5
        ``wheel/responses/velocity`` written by the wheel stage), rows in ``trials`` order.

    Returns
    -------
    pandas.DataFrame
        Index ``trials.index`` (named ``trial``), columns ``reaction_time``,
        ``movement_time`` and ``peak_velocity`` (max |velocity|, rad/s; NaN for a trial
        without wheel samples).
    """
    velocity = np.abs(np.asarray(velocity, dtype=float))
    if len(velocity) != len(trials):
        raise ValueError(f'{len(velocity)} wheel rows for {len(trials)} trials')
    has_samples = np.isfinite(velocity).any(axis=1)
    peak = np.full(len(velocity), np.nan)
    peak[has_samples] = np.nanmax(velocity[has_samples], axis=1)
    out = get_trial_timings(trials)[['reaction_time', 'movement_time']]
    out['peak_velocity'] = peak
    return out.rename_axis('trial')


def get_trial_timings(trials):
    """Reaction, movement and response times of every trial (s).

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials with ``stimOn_times``, ``firstMovement_times`` and ``response_times`` (s).

    Returns
    -------
    pandas.DataFrame
        Same index as ``trials``, columns

        - ``reaction_time`` = firstMovement_times - stimOn_times (can be negative: IBL's first
          movement may precede the stimulus),
        - ``movement_time`` = response_times - firstMovement_times,
        - ``response_time`` = response_times - stimOn_times.

        NaN where an event time is NaN.
    """
    return pd.DataFrame(
        {
            name: trials[end].to_numpy(dtype=float) - trials[start].to_numpy(dtype=float)
            for name, (start, end) in TIMING_COLUMNS.items()
        },
        index=trials.index,
    )


def missing_events(
    trials, events=config.RESPONSE_EVENTS, threshold=config.EVENT_COMPLETENESS_THRESHOLD
):
    """Events whose times are absent or too often NaN.

    Parameters
    ----------
    trials : pandas.DataFrame
    events : sequence of str
        Event-time columns to check (default ``config.RESPONSE_EVENTS``).
    threshold : float
        Minimum fraction of non-NaN values (default ``config.EVENT_COMPLETENESS_THRESHOLD``).

    Returns
    -------
    list of str
        In the order of ``events``: those whose column is absent or whose non-NaN fraction is
        below ``threshold``. Without trials every event is missing.
    """
    incomplete = []
    for event in events:
        if event not in trials.columns or len(trials) == 0:
            incomplete.append(event)
        elif trials[event].notna().mean() < threshold:
            incomplete.append(event)
    return incomplete


# ---------------------------------------------------------------------------
# Training stages (sessions table)
# ---------------------------------------------------------------------------
def _sort_sessions(df_sessions):
    order = [col for col in ('subject', 'session_n', 'start_time') if col in df_sessions]
    return df_sessions.sort_values(order, kind='stable')


def _sessions_before(session_types, stage, first_of):
    """Number of ``stage`` sessions before the first ``first_of`` session (NaN if none)."""
    is_target = session_types == first_of
    if not is_target.any():
        return np.nan
    return int((session_types[: int(np.argmax(is_target))] == stage).sum())


def count_sessions_to_stage(df_sessions):
    """Training progression of each subject.

    Parameters
    ----------
    df_sessions : pandas.DataFrame
        One row per session with ``subject``, ``session_type`` and ``session_n`` (session
        rank of the subject; ``start_time`` is used when ``session_n`` is absent).

    Returns
    -------
    pandas.DataFrame
        One row per subject (column ``subject``, sorted), with ``n_training``, ``n_biased``,
        ``n_ephys``, ``sessions_to_biased`` (training sessions before the first biased one;
        NaN if never biased) and ``biased_sessions_to_ephys`` (biased sessions before the
        first ephys one; NaN if never ephys).
    """
    rows = []
    for subject, sessions in _sort_sessions(df_sessions).groupby('subject', sort=True):
        session_types = sessions['session_type'].to_numpy()
        rows.append(
            {
                'subject': subject,
                'n_training': int((session_types == 'training').sum()),
                'n_biased': int((session_types == 'biased').sum()),
                'n_ephys': int((session_types == 'ephys').sum()),
                'sessions_to_biased': _sessions_before(session_types, 'training', 'biased'),
                'biased_sessions_to_ephys': _sessions_before(session_types, 'biased', 'ephys'),
            }
        )
    columns = ['subject', 'n_training', 'n_biased', 'n_ephys']
    columns += ['sessions_to_biased', 'biased_sessions_to_ephys']
    return pd.DataFrame(rows, columns=columns)


def get_subjects_by_stage(df):
    """Subjects that have at least one session of each stage.

    Parameters
    ----------
    df : pandas.DataFrame
        Sessions with ``subject`` and ``session_type``.

    Returns
    -------
    dict
        {'training': [...], 'biased': [...], 'ephys': [...]}: sorted unique subject names.
    """
    return {
        stage: sorted(df.loc[df['session_type'] == stage, 'subject'].unique())
        for stage in ('training', 'biased', 'ephys')
    }
