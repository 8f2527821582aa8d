"""Simulated fiber photometry: frame clock, LED sequence and ROI intensities.

Per fiber (ROI) and frame, with ``L`` the light level above the 1/255 camera floor::

    GCaMP      = floor + L_g · bleach_g(t) · (1 + drift_g(t)) · (1 + ΔF/F(t)) · (1 + motion(t)) + noise
    Isosbestic = floor + L_i · bleach_i(t) · (1 + drift_i(t)) · (1 + motion(t)) + noise

``bleach`` is a double exponential with channel-specific rates, ``drift`` a slow
(< 0.003 Hz) channel-specific wander, ``motion`` brief dips and decaying steps
shared by both channels of a fiber, and ``noise`` Gaussian with SD ``noise_rel · L``.
Values are quantised to 2^-23 and clipped to [1/255, 1], like camera ROI means.
Frames alternate 470 nm / 415 nm at 59.98 Hz (29.99 Hz per channel) on a
Neurophotometrics clock quantised to 32 µs; task times are an exact linear map
of it (``times = a · SystemTimestamp + b``, |a − 1| ≤ 2e-5).
"""

import numpy as np

from iblnm.simulate.faults import FLOOR, QUANTUM
from iblnm.simulate.kernels import GRID_FS

FRAME_PERIOD = 0.016672  # s, 59.98 Hz frames (real FP3002 median interval)
CLOCK_TICK = 32e-6  # s, quantisation of SystemTimestamp
CLOCK_JITTER_SD = 15e-6  # s, frame time jitter before quantisation
LED_GCAMP, LED_ISO, LED_ALL = 2, 1, 7
OUTPUT0_BIT, INPUT1_BIT, INPUT0_BIT = 16, 256, 512
BAND_LABELS = {  # LED code -> (wavelength nm, name, color)
    LED_GCAMP: (470.0, 'GCaMP', 'Blue'),
    LED_ISO: (415.0, 'Isosbestic', 'Violet'),
}


# ---------------------------------------------------------------------------
# Clock and LEDs
# ---------------------------------------------------------------------------
def frame_clock(t_start, t_stop, rng):
    """Frame times on the NPH clock and the linear map to the task clock.

    Parameters
    ----------
    t_start, t_stop : float
        First and last frame time wanted on the task clock (s).

    Returns
    -------
    sys_times : ndarray of float64, shape (n_frames,)
        ``SystemTimestamp`` (s), multiples of 32 µs.
    clock : dict
        ``{'a': slope, 'b': offset}`` with times = a · sys_times + b.
    """
    a = 1.0 + rng.uniform(-2e-5, 2e-5)
    n = int(np.ceil((t_stop - t_start) / (a * FRAME_PERIOD))) + 1
    sys0 = np.round(rng.uniform(1000.0, 6000.0) / CLOCK_TICK) * CLOCK_TICK
    ideal = sys0 + np.arange(n) * FRAME_PERIOD + rng.normal(0, CLOCK_JITTER_SD, n)
    sys_times = np.round(ideal / CLOCK_TICK) * CLOCK_TICK
    sys_times[0] = sys0
    return sys_times, {'a': a, 'b': t_start - a * sys0}


def to_task_clock(sys_times, clock):
    """Task-clock times (s) of NPH timestamps: ``a · sys_times + b``."""
    return clock['a'] * sys_times + clock['b']


def computer_timestamps(sys_times, offset, rng):
    """``ComputerTimestamp`` (ms): ``offset`` + a drifting linear map of the NPH clock, 0.24 ms jitter."""
    comp = offset + 1000.13 * sys_times + rng.normal(0, 0.24, len(sys_times))
    return np.round(comp / 0.0064) * 0.0064


def led_states(n_frames, rng):
    """``LedState`` per frame: 7 on frame 0, then 470/415 alternating.

    Half of the sessions also carry Output0 (+16, i.e. 18/17) and a quarter a few
    input bits (+256 or +512) on 0.05 % of frames, all decodable with ``& 7`` and by
    iblphotometry's LED table.

    Returns
    -------
    codes : ndarray of int16, shape (n_frames,)
    flags : dict
        ``{'output0': bool, 'input_bits': int}`` (0 = none).
    """
    codes = np.where(np.arange(n_frames) % 2 == 1, LED_GCAMP, LED_ISO).astype(np.int64)
    output0 = bool(rng.random() < 0.5)
    input_bit = 0
    if rng.random() < 0.5:
        input_bit = INPUT0_BIT if output0 or rng.random() < 0.5 else INPUT1_BIT
    if output0:
        codes += OUTPUT0_BIT
    if input_bit:
        hits = rng.random(n_frames) < 5e-4
        codes[hits] += input_bit
    codes[0] = LED_ALL
    return codes, {'output0': output0, 'input_bits': int(input_bit)}


# ---------------------------------------------------------------------------
# Fluorescence components
# ---------------------------------------------------------------------------
def bleach_params(rng):
    """Double-exponential bleaching: fast and slow amplitudes (fraction) and time constants (s)."""
    return {
        'a_fast': round(float(rng.uniform(0.05, 0.15)), 4),
        'tau_fast': round(float(rng.uniform(100, 400)), 1),
        'a_slow': round(float(rng.uniform(0.1, 0.3)), 4),
        'tau_slow': round(float(rng.uniform(1500, 5000)), 1),
    }


def bleach_curve(t, params):
    """Bleaching factor (1 at t = 0, decreasing), ``t`` in s since the recording start."""
    fast = params['a_fast'] * (1 - np.exp(-t / params['tau_fast']))
    slow = params['a_slow'] * (1 - np.exp(-t / params['tau_slow']))
    return 1.0 - fast - slow


def slow_drift(t, rng, n_components=3):
    """Slow wander (fraction of L): sum of sinusoids with 400-3000 s periods, 0.2-0.6 % each."""
    drift = np.zeros_like(t)
    for _ in range(n_components):
        period, amp, phase = rng.uniform(400, 3000), rng.uniform(0.002, 0.006), rng.uniform(0, 6.3)
        drift += amp * np.sin(2 * np.pi * t / period + phase)
    return drift


def motion_artefacts(n_grid, rng, dip_rate=1 / 150, step_rate=1 / 900):
    """Shared multiplicative artefacts on the 120 Hz grid: brief dips and decaying steps.

    Returns
    -------
    motion : ndarray, shape (n_grid,)
        Fractional change of the collected light (negative = less light).
    events : dict
        Number of dips and steps.
    """
    motion = np.zeros(n_grid)
    duration = n_grid / GRID_FS
    n_dips, n_steps = rng.poisson(dip_rate * duration), rng.poisson(step_rate * duration)
    for centre, width, depth in zip(
        rng.uniform(0, duration, n_dips),
        rng.uniform(0.05, 0.3, n_dips),
        rng.uniform(0.02, 0.08, n_dips),
    ):
        i0, i1 = (max(int((centre + s * 4 * width) * GRID_FS), 0) for s in (-1, 1))
        tt = np.arange(i0, min(i1, n_grid)) / GRID_FS - centre
        motion[i0 : i0 + len(tt)] -= depth * np.exp(-0.5 * (tt / width) ** 2)
    for onset, amp, tau in zip(
        rng.uniform(0, duration, n_steps),
        rng.uniform(0.01, 0.04, n_steps) * rng.choice([-1, 1], n_steps),
        rng.uniform(20, 150, n_steps),
    ):
        i0 = int(onset * GRID_FS)
        tt = np.arange(n_grid - i0) / GRID_FS
        motion[i0:] += amp * (1 - np.exp(-tt / 0.1)) * np.exp(-tt / tau)
    return motion, {'n_dips': int(n_dips), 'n_steps': int(n_steps)}


def quantise(values):
    """Round to the 2^-23 intensity step and clip to [1/255, 1]."""
    return np.clip(np.round(values / QUANTUM) * QUANTUM, FLOOR, 1.0)


def fiber_optics(rng):
    """Light levels (normalised intensity above the floor) and bleaching of one fiber."""
    level_g = rng.uniform(0.004, 0.02)
    return {
        'level_gcamp': round(float(level_g), 5),
        'level_isosbestic': round(float(level_g * rng.uniform(0.6, 1.6)), 5),
        'bleach_gcamp': bleach_params(rng),
        'bleach_isosbestic': bleach_params(rng),
    }


def roi_intensities(t_rec, is_gcamp, dff, motion, optics, noise_rel, rng):
    """ROI values of one fiber on every frame.

    Parameters
    ----------
    t_rec : ndarray, shape (n_frames,)
        Frame times since the recording start (s).
    is_gcamp : ndarray of bool, shape (n_frames,)
        470 nm frames (the others are 415 nm, frame 0 included).
    dff, motion : ndarray, shape (n_frames,)
        True ΔF/F and motion artefact at each frame (fractions).
    optics : dict
        From :func:`fiber_optics`.
    noise_rel : float
        Noise SD relative to the light level.

    Returns
    -------
    ndarray of float64, shape (n_frames,)
    """
    out = np.empty(len(t_rec))
    for band, sel in (('gcamp', is_gcamp), ('isosbestic', ~is_gcamp)):
        level = optics[f'level_{band}']
        light = level * bleach_curve(t_rec[sel], optics[f'bleach_{band}'])
        light *= (1 + slow_drift(t_rec[sel], rng)) * (1 + motion[sel])
        if band == 'gcamp':
            light *= 1 + dff[sel]
        out[sel] = FLOOR + light + noise_rel * level * rng.standard_normal(sel.sum())
    out[0] = FLOOR + 0.8 * optics['level_gcamp']
    return quantise(out)


# ---------------------------------------------------------------------------
# Sync pulses
# ---------------------------------------------------------------------------
def bpod_sync_times(trials):
    """Bpod sync TTL times (s, task clock): trial start, reward valve opening and trial end."""
    rewarded = trials['feedbackType'].to_numpy() == 1
    times = np.concatenate([
        trials['intervals_0'].to_numpy(),
        trials['feedback_times'].to_numpy()[rewarded],
        trials['intervals_1'].to_numpy() - 0.0001,
    ])  # fmt: skip
    return np.sort(times[np.isfinite(times)])
