"""Simulated fiber photometry: frame clock, LED sequence and ROI intensities.

Per fiber (ROI) and frame, with ``L`` the light level above the dark level
(the 1/255 camera floor plus a per-session dark offset)::

    GCaMP      = dark + L_g · bleach_g(t) · (1 + drift_g(t)) · (1 + shared(t)) · (1 + ΔF/F(t)) + noise
    Isosbestic = dark + L_i · bleach_i(t) · (1 + drift_i(t)) · (1 + shared(t)) + noise

``bleach`` is a double exponential with channel-specific rates, ``drift`` a slow
(< 0.003 Hz) channel-specific wander, ``shared`` = motion (brief dips and decaying
steps) plus a haemodynamic fluctuation, common to both channels of a fiber, and
``noise`` Gaussian with SD ``noise_band · L`` (plus a small read noise). Disconnections,
dropouts and damaged-fiber artefacts are applied on top by :mod:`artefacts`.
Values are quantised to 2^-23 and clipped to [1/255, 1], like camera ROI means.
Frames alternate 470 nm / 415 nm at 59.98 Hz (29.99 Hz per channel) on a
Neurophotometrics clock quantised to 32 µs; task times are an exact linear map
of it (``times = a · SystemTimestamp + b``, |a − 1| ≤ 2e-5).
"""

import numpy as np

from iblnm.simulate import artefacts as art
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


def fiber_optics(rng, quality='good', noise_rel=0.003):
    """Light levels (normalised intensity above the dark level), bleaching and noise of a fiber.

    Parameters
    ----------
    quality : str
        ``'low_light'`` fibers get 5e-5-4e-4 of light in each band and a noise SD of
        7e-6-1.5e-5 (a dim ROI, like the real ``version_5``: 1e-5, i.e. 2-30 % of the
        light; enough distinct values not to look quantised); the others 0.004-0.02 (GCaMP),
        the isosbestic band 0.6-1.6 times that, and a noise of ``noise_rel`` x U(0.8, 1.25)
        per band.
    noise_rel : float
        Session noise SD relative to the light.
    """
    if quality == 'low_light':
        level_g, level_i = (rng.uniform(*art.LOW_LIGHT_LEVEL) for _ in range(2))
        noise_g, noise_i = (rng.uniform(*art.LOW_LIGHT_NOISE_SD) / lv for lv in (level_g, level_i))
    else:
        level_g = rng.uniform(0.004, 0.02)
        level_i = level_g * rng.uniform(0.6, 1.6)
        noise_g, noise_i = (noise_rel * rng.uniform(0.8, 1.25) for _ in range(2))
    return {
        'level_gcamp': round(float(level_g), 6),
        'level_isosbestic': round(float(level_i), 6),
        'bleach_gcamp': bleach_params(rng),
        'bleach_isosbestic': bleach_params(rng),
        'noise_gcamp': round(float(noise_g), 6),
        'noise_isosbestic': round(float(noise_i), 6),
    }


def band_light(t_rec, level, bleach, shared, rng, dff=None):
    """Light of one band above the dark level on its frames (no noise, no artefacts).

    ``level · bleach(t) · (1 + drift(t)) · (1 + shared(t)) · (1 + ΔF/F(t))``, with
    ``shared`` the motion and haemodynamic change common to both bands (fractions) and
    ``dff`` only for the GCaMP band.
    """
    light = level * bleach_curve(t_rec, bleach) * (1 + slow_drift(t_rec, rng)) * (1 + shared)
    return light if dff is None else light * (1 + dff)


# ---------------------------------------------------------------------------
# Sync pulses
# ---------------------------------------------------------------------------
def bpod_sync_times(trials):
    """Bpod sync TTL times (s, task clock): trial start, reward valve opening and trial end."""
    rewarded = trials['feedbackType'].to_numpy() == 1
    times = np.concatenate(
        [
            trials['intervals_0'].to_numpy(),
            trials['feedback_times'].to_numpy()[rewarded],
            trials['intervals_1'].to_numpy() - 0.0001,
        ]
    )
    return np.sort(times[np.isfinite(times)])
