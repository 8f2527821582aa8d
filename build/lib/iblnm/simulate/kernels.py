"""Neuromodulator response model: event kernels that make the true ΔF/F.

Per NM, each task event drives a kernel (unit peak, 0.2-0.3 s after the event)
whose amplitude on trial ``i`` is, in ΔF/F (fraction, 0.01 = 1 %)::

    a_i = const + log_contrast * L(c_i) + (correct if rewarded else error)

with ``L(c) = ln(1 + c) / ln(101)`` for the contrast c in % (0 at 0 %, 1 at
100 %). The fiber's gain multiplies everything, and a per-trial lognormal
factor (SD ``TRIAL_GAIN_SD`` in log units) adds trial-to-trial variability.
Slow spontaneous fluctuations (band-limited Gaussian noise) are added on top.
"""

import numpy as np
from scipy import signal as sps

GRID_FS = 120.0  # Hz, grid on which the true ΔF/F is built before sampling at frame times
KERNEL_S = 10.0  # s, kernel support
TRIAL_GAIN_SD = 0.2  # log-units, trial-to-trial amplitude variability
SPONTANEOUS_SD = 0.004  # ΔF/F, SD of the spontaneous fluctuations
SPONTANEOUS_CUTOFF_HZ = 0.5  # Hz, 2nd-order low-pass of the spontaneous fluctuations

# NM -> event -> kernel shape and amplitude terms (ΔF/F)
NM_KERNELS = {
    'DA': {
        'stimOn_times': {'shape': ('alpha', 0.22), 'const': 0.004, 'log_contrast': 0.016},
        'feedback_times': {'shape': ('alpha', 0.28), 'correct': 0.03, 'error': -0.012},
    },
    '5HT': {
        'feedback_times': {'shape': ('biexp', 0.08, 1.0), 'correct': 0.03, 'error': 0.0},
    },
    'NE': {
        'stimOn_times': {'shape': ('alpha', 0.25), 'const': 0.005},
        'firstMovement_times': {'shape': ('alpha', 0.25), 'const': 0.02},
        'feedback_times': {'shape': ('alpha', 0.3), 'correct': 0.004, 'error': 0.012},
    },
    'ACh': {
        'firstMovement_times': {'shape': ('alpha', 0.2), 'const': 0.015},
        'feedback_times': {'shape': ('alpha', 0.3), 'correct': 0.02, 'error': 0.02},
    },
}
EVENTS = ('stimOn_times', 'firstMovement_times', 'feedback_times')


def kernel_shape(shape, t):
    """Unit-peak kernel evaluated at ``t`` (s, ndarray): alpha or bi-exponential.

    ``('alpha', tp)``: (t/tp)·exp(1 − t/tp), peak at tp. ``('biexp', tr, td)``:
    exp(−t/td) − exp(−t/tr) scaled to a unit peak (at tr·td·ln(td/tr)/(td − tr)).
    """
    t = np.maximum(t, 0.0)
    if shape[0] == 'alpha':
        return (t / shape[1]) * np.exp(1 - t / shape[1])
    tr, td = shape[1], shape[2]
    k = np.exp(-t / td) - np.exp(-t / tr)
    tpeak = tr * td * np.log(td / tr) / (td - tr)
    return k / (np.exp(-tpeak / td) - np.exp(-tpeak / tr))


def kernel_peak_time(shape):
    """Time of the kernel peak (s)."""
    if shape[0] == 'alpha':
        return shape[1]
    tr, td = shape[1], shape[2]
    return tr * td * np.log(td / tr) / (td - tr)


def log_contrast(contrast_pct):
    """L(c) = ln(1 + c) / ln(101), contrast in %: 0 at 0 %, 1 at 100 %."""
    return np.log1p(np.asarray(contrast_pct, dtype=float)) / np.log(101.0)


def trial_amplitudes(spec, contrast_pct, correct):
    """Amplitude (ΔF/F) of one kernel on each trial, before gains.

    Parameters
    ----------
    spec : dict
        One entry of :data:`NM_KERNELS` (keys const, log_contrast, correct, error).
    contrast_pct : ndarray, shape (n_trials,)
    correct : ndarray of bool, shape (n_trials,)
    """
    amp = spec.get('const', 0.0) + spec.get('log_contrast', 0.0) * log_contrast(contrast_pct)
    return amp + np.where(correct, spec.get('correct', 0.0), spec.get('error', 0.0))


def effect_signs(nm):
    """Direct effects of each event's kernel in the early window, as signs.

    Returns
    -------
    dict
        ``{event: {'response': s, 'contrast': s, 'reward': s}}`` with s in {-1, 0, 1}:
        sign of the mean response, of the log-contrast term and of correct − error.
    """
    out = {}
    for event in EVENTS:
        spec = NM_KERNELS[nm].get(event, {})
        mean = spec.get('const', 0) + spec.get('log_contrast', 0) / 2
        mean += (spec.get('correct', 0) + spec.get('error', 0)) / 2
        out[event] = {
            'response': int(np.sign(round(mean, 6))),
            'contrast': int(np.sign(spec.get('log_contrast', 0))),
            'reward': int(np.sign(round(spec.get('correct', 0) - spec.get('error', 0), 6))),
        }
    return out


def _impulses(grid_t0, n_grid, times, weights):
    """Spread weighted impulses onto a grid by linear interpolation between two bins."""
    x = np.zeros(n_grid)
    ok = np.isfinite(times) & np.isfinite(weights)
    pos = (times[ok] - grid_t0) * GRID_FS
    i = np.floor(pos).astype(int)
    frac = pos - i
    inside = (i >= 0) & (i + 1 < n_grid)
    np.add.at(x, i[inside], weights[ok][inside] * (1 - frac[inside]))
    np.add.at(x, i[inside] + 1, weights[ok][inside] * frac[inside])
    return x


def evoked_dff(nm, events, contrast_pct, correct, gain, grid_t0, n_grid, rng):
    """Sum of the NM's event kernels on the grid.

    Parameters
    ----------
    nm : str
    events : dict
        Event name -> true event times (s, shape (n_trials,), NaN = no event).
    contrast_pct : ndarray, shape (n_trials,)
    correct : ndarray of bool, shape (n_trials,)
    gain : float
        Fiber gain.
    grid_t0 : float
        Time of the first grid sample (s); the grid runs at :data:`GRID_FS`.
    n_grid : int

    Returns
    -------
    ndarray, shape (n_grid,)
        Evoked ΔF/F.
    """
    kt = np.arange(int(KERNEL_S * GRID_FS)) / GRID_FS
    total = np.zeros(n_grid)
    for event, spec in NM_KERNELS[nm].items():
        amps = trial_amplitudes(spec, contrast_pct, correct)
        amps = gain * amps * np.exp(TRIAL_GAIN_SD * rng.standard_normal(len(amps)))
        x = _impulses(grid_t0, n_grid, np.asarray(events[event], dtype=float), amps)
        total += sps.oaconvolve(x, kernel_shape(spec['shape'], kt))[:n_grid]
    return total


def spontaneous_dff(n_grid, rng, sd=SPONTANEOUS_SD):
    """Band-limited Gaussian fluctuations (ΔF/F), SD ``sd``, shape (n_grid,)."""
    sos = sps.butter(2, SPONTANEOUS_CUTOFF_HZ, fs=GRID_FS, output='sos')
    x = sps.sosfilt(sos, rng.standard_normal(n_grid + int(20 * GRID_FS)))[int(20 * GRID_FS) :]
    return sd * x / x.std()


def early_window_effects(dff_grid, grid_t0, events, contrast_pct, correct, valid):
    """Early-window effects of contrast and reward estimated from the true ΔF/F.

    For each event: per trial, mean ΔF/F in [0.1, 0.35) s minus the mean in
    [-0.1, 0) s, then OLS on [1, L(c), correct] over ``valid`` trials.

    Returns
    -------
    dict
        ``{event: {'intercept', 'log_contrast', 'reward'}}`` in ΔF/F (NaN when too
        few trials).
    """
    out = {}
    for event in EVENTS:
        t = np.asarray(events[event], dtype=float)
        ok = valid & np.isfinite(t)
        resp = _window_mean(dff_grid, grid_t0, t[ok], 0.1, 0.35)
        base = _window_mean(dff_grid, grid_t0, t[ok], -0.1, 0.0)
        y = resp - base
        x = np.column_stack([np.ones(ok.sum()), log_contrast(contrast_pct[ok]), correct[ok]])
        fin = np.isfinite(y)
        if fin.sum() < 10:
            coef = np.full(3, np.nan)
        else:
            coef = np.linalg.lstsq(x[fin], y[fin], rcond=None)[0]
        out[event] = dict(zip(('intercept', 'log_contrast', 'reward'), np.round(coef, 6).tolist()))
    return out


def _window_mean(x, grid_t0, times, w0, w1):
    """Mean of ``x`` over [t + w0, t + w1) for each time (NaN outside the grid)."""
    i0 = np.round((times + w0 - grid_t0) * GRID_FS).astype(int)
    n = max(int(round((w1 - w0) * GRID_FS)), 1)
    inside = (i0 >= 0) & (i0 + n <= len(x))
    csum = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(len(times), np.nan)
    out[inside] = (csum[i0[inside] + n] - csum[i0[inside]]) / n
    return out
