"""Simulated wheel: a smooth 1 kHz trajectory sampled like a rotary encoder.

Position is cumulative radians, counter-clockwise positive: a rightward choice
(``choice == -1``, CCW) increases it, a leftward choice (+1, CW) decreases it.
Each response is a minimum-jerk turn that starts at ``firstMovement_times`` and
crosses ``RESPONSE_THRESHOLD`` rad (relative to the position at stimulus onset)
exactly at ``response_times``. The encoder keeps one sample per change of the
quantised position (2π/4096 rad steps).
"""

import numpy as np

WHEEL_FS = 1000  # Hz, grid of the smooth trajectory
ENCODER_TICK = 2 * np.pi / 4096  # rad, 4x-decoded 1024-line encoder
RESPONSE_THRESHOLD = 0.28  # rad, 35° of stimulus motion at 4°/mm on a 3.1 cm radius wheel


def min_jerk(tau):
    """Minimum-jerk profile s(τ) = 10τ³ − 15τ⁴ + 6τ⁵ for τ in [0, 1] (clipped outside)."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


_TAU = np.linspace(0, 1, 2001)
_S = min_jerk(_TAU)


def crossing_fraction(level):
    """τ at which the minimum-jerk profile reaches ``level`` (in (0, 1))."""
    return float(np.interp(level, _S, _TAU))


def response_movements(trials, true_first_movement, rng):
    """Onset (s), duration (s) and signed amplitude (rad) of each trial's response turn.

    A correct or error choice turns past the threshold (0.30-0.50 rad in total) and
    crosses it at ``response_times``; a no-go trial with a detected movement makes a
    small sub-threshold turn (0.05-0.2 rad); a no-go without one does not move.

    Returns
    -------
    ndarray, shape (n_moves, 3)
        Columns onset, duration, amplitude.
    """
    choice = trials['choice'].to_numpy()
    onset = np.asarray(true_first_movement, dtype=float)
    response = trials['response_times'].to_numpy()
    moves = []
    for i in np.flatnonzero(np.isfinite(onset)):
        direction = 1.0 if choice[i] == -1 else -1.0
        if choice[i] == 0:
            amp = rng.uniform(0.05, 0.2) * (1 if rng.random() < 0.5 else -1)
            moves.append((onset[i], rng.uniform(0.2, 0.5), amp))
            continue
        total = rng.uniform(0.30, 0.50)
        tau = crossing_fraction(RESPONSE_THRESHOLD / total)
        moves.append((onset[i], (response[i] - onset[i]) / tau, direction * total))
    return np.array(moves, dtype=float).reshape(-1, 3)


def iti_movements(trials, quiescence_reset, rng, p_iti=0.35):
    """Spontaneous turns between trials and the turns that restart the quiescent period.

    Returns
    -------
    ndarray, shape (n_moves, 3)
        Columns onset (s), duration (s), amplitude (rad). Every move ends 0.7 s before
        the stimulus of its trial (quiescence) and starts 0.3 s after the previous feedback.
    """
    starts = trials['intervals_0'].to_numpy()
    stim = trials['stimOn_times'].to_numpy()
    feedback = trials['feedback_times'].to_numpy()
    moves = []
    for i in range(len(starts)):
        lo = feedback[i - 1] + 0.3 if i > 0 else starts[0] - 1.0
        hi = stim[i] - 0.7
        want = quiescence_reset[i] or rng.random() < p_iti
        dur = rng.uniform(0.15, 0.4)
        if want and hi - lo > dur:
            onset = rng.uniform(lo, hi - dur)
            moves.append((onset, dur, rng.normal(0, 0.12)))
    return np.array(moves, dtype=float).reshape(-1, 3)


def render_trajectory(moves, t0, t1, rng, twitch_rate=0.3):
    """Position on a 1 kHz grid from a set of minimum-jerk moves plus 1-tick twitches.

    Parameters
    ----------
    moves : ndarray, shape (n_moves, 3)
        Onset (s), duration (s), amplitude (rad).
    t0, t1 : float
        Span of the recording (s, task clock).
    twitch_rate : float
        Rate (Hz) of the ±1 tick quiescent jitter.

    Returns
    -------
    t : ndarray, shape (n,)
        Grid times (s).
    position : ndarray, shape (n,)
        Continuous position (rad).
    """
    t = t0 + np.arange(int((t1 - t0) * WHEEL_FS)) / WHEEL_FS
    dpos = np.zeros(len(t) + 1)
    for onset, dur, amp in moves:
        i0 = int(np.ceil((onset - t0) * WHEEL_FS))
        i1 = min(int(np.ceil((onset + dur - t0) * WHEEL_FS)) + 1, len(t))
        if i0 >= len(t) or i1 <= i0:
            continue
        s = min_jerk((t[i0:i1] - onset) / dur)
        dpos[i0:i1] += amp * np.diff(np.concatenate([[0.0], s]))
        dpos[i1] += amp * (1.0 - s[-1])
    position = np.cumsum(dpos[:-1]) + ENCODER_TICK * (0.5 + rng.uniform(-0.2, 0.2))
    n_tw = rng.poisson(twitch_rate * (t1 - t0))
    for on, dur, sign in zip(
        rng.uniform(t0, t1, n_tw), rng.uniform(0.02, 0.2, n_tw), rng.choice([-1, 1], n_tw)
    ):
        i0, i1 = np.searchsorted(t, [on, on + dur])
        position[i0:i1] += sign * ENCODER_TICK
    return t, position


def encoder_samples(t, position, rng):
    """Keep one sample per change of the quantised position (IBL wheel datasets).

    Returns
    -------
    timestamps : ndarray of float64, shape (n_changes,)
        Sample times (s), strictly increasing, with sub-millisecond jitter.
    position : ndarray of float64, shape (n_changes,)
        Quantised cumulative position (rad).
    """
    ticks = np.round(position / ENCODER_TICK).astype(np.int64)
    keep = np.concatenate([[0], np.flatnonzero(np.diff(ticks)) + 1])
    jitter = rng.uniform(0, 0.9 / WHEEL_FS, len(keep))
    return t[keep] + jitter, ticks[keep] * ENCODER_TICK


def simulate_wheel(trials, extra, t0, t1, rng):
    """Encoder timestamps and positions of a whole session.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table (true event times).
    extra : dict
        From :func:`iblnm.simulate.behaviour.session_trials` (``true_first_movement``,
        ``quiescence_reset``).
    t0, t1 : float
        Recording span (s, task clock).

    Returns
    -------
    timestamps, position : ndarray of float64
    """
    moves = np.concatenate(
        [
            response_movements(trials, extra['true_first_movement'], rng),
            iti_movements(trials, extra['quiescence_reset'], rng),
        ]
    )
    t, pos = render_trajectory(moves, t0, t1, rng)
    return encoder_samples(t, pos, rng)
