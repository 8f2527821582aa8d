"""Synthetic fibers with known ΔF/F and injected artefacts (tests and bench_methods).

Independent of ``iblnm.simulate`` on purpose (a second generator the methods were not tuned
on). Per fiber, at the GCaMP frame times t (``fs`` Hz per band, jittered), with L the light
above the camera floor:

    GCaMP = floor + L_g·B_g(t)·(1 + drift_g)·(1 + ΔF/F)·(1 + motion) + ε_g,
    iso   = floor + L_i·B_i(t)·(1 + drift_i)·(1 + γ·motion) + ε_i,

B: double-exponential bleaching per band (different constants), drift: slow channel-specific
sinusoids (periods 600-3000 s, 0.1-0.3 %), motion: shared dips (2-10 %, 0.1-0.5 s) and
slower wobble, γ ∈ [0.8, 1.2], ε: Gaussian noise of SD 0.1-0.4 % of L per band, ΔF/F: GCaMP
transients (rise 50 ms, decay 0.3-0.8 s, Poisson 0.1-0.3 Hz, 2-15 %) plus spontaneous
fluctuations. Values are quantised to 2⁻¹⁶ (raw NPM means are much finer than 1/255).

:func:`inject_artefacts` adds the real-rig failures with a ground-truth mask: disconnected
edges (patch cord off: a plateau where both bands read the same scattered light, then the
floor), dropout frames to the floor, saturation, a shared square-wave excursion.
"""

import numpy as np

FLOOR = 1 / 255
QUANTUM = 2.0**-16


def _bleach(t, rng):
    fast, slow = rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.3)
    tau_fast, tau_slow = rng.uniform(100, 400), rng.uniform(1500, 5000)
    return 1 - fast * (1 - np.exp(-t / tau_fast)) - slow * (1 - np.exp(-t / tau_slow)) + fast + slow


def _lowpassed_noise(rng, n, fs, cutoff_hz, sd):
    from scipy import signal as sps

    sos = sps.butter(2, cutoff_hz, fs=fs, output='sos')
    x = sps.sosfiltfilt(sos, rng.normal(size=n))
    return sd * x / x.std()


def true_dff(t, fs, rng):
    """GCaMP-like ΔF/F: transients at Poisson times plus slow spontaneous fluctuations."""
    n = t.size
    rate = rng.uniform(0.1, 0.3)
    onsets = rng.uniform(t[0], t[-1], rng.poisson(rate * (t[-1] - t[0])))
    impulses = np.zeros(n)
    np.add.at(
        impulses, np.searchsorted(t, onsets).clip(0, n - 1), rng.uniform(0.02, 0.15, onsets.size)
    )
    tk = np.arange(int(5 * fs)) / fs
    tau = rng.uniform(0.3, 0.8)
    kernel = (1 - np.exp(-tk / 0.05)) * np.exp(-tk / tau)
    dff = np.convolve(impulses, kernel / kernel.max())[:n]
    return dff + _lowpassed_noise(rng, n, fs, 0.5, rng.uniform(0.002, 0.006))


def make_fiber(seed, duration=1200.0, fs=30.0, noise=None, floor=FLOOR):
    """One clean synthetic fiber: dict of times, gcamp, iso, dff (truth), floor, light levels."""
    rng = np.random.default_rng(seed)
    n = int(duration * fs)
    t = np.cumsum(np.r_[0, rng.normal(1 / fs, 0.02 / fs, n - 1)]) + 10.0
    tr = t - t[0]
    dff = true_dff(t, fs, rng)
    motion = np.zeros(n)
    for onset in rng.uniform(tr[0], tr[-1], rng.poisson(tr[-1] / 60)):
        width = rng.uniform(0.1, 0.5)
        motion -= rng.uniform(0.02, 0.1) * np.exp(-0.5 * ((tr - onset) / width) ** 2)
    motion += _lowpassed_noise(rng, n, fs, 0.3, 0.003)
    gamma = rng.uniform(0.8, 1.2)
    level_g, level_i = rng.uniform(0.003, 0.02), rng.uniform(0.005, 0.03)

    def drift():
        period, amp = rng.uniform(600, 3000), rng.uniform(0.001, 0.003)
        return amp * np.sin(2 * np.pi * tr / period + rng.uniform(0, 2 * np.pi))

    sd_g, sd_i = (noise, noise) if noise is not None else rng.uniform(0.001, 0.004, 2)
    light_g = level_g * _bleach(tr, rng) * (1 + drift())
    light_i = level_i * _bleach(tr, rng) * (1 + drift())
    gcamp = floor + light_g * (1 + dff) * (1 + motion) + rng.normal(0, sd_g * level_g, n)
    iso = floor + light_i * (1 + gamma * motion) + rng.normal(0, sd_i * level_i, n)
    q = lambda x: np.round(x / QUANTUM) * QUANTUM  # noqa: E731
    return {
        'times': t,
        'gcamp': q(gcamp),
        'iso': q(iso),
        'dff': dff,
        'floor': floor,
        'fs': fs,
        'level_g': level_g,
        'level_i': level_i,
    }


def inject_artefacts(fiber, seed, edges=True, dropouts=True, saturation=True, excursion=True):
    """Copy of ``fiber`` with artefacts; adds ``mask`` (True = injected artefact sample)."""
    rng = np.random.default_rng(seed + 10_000)
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in fiber.items()}
    g, i, fs = out['gcamp'], out['iso'], fiber['fs']
    n = g.size
    mask = np.zeros(n, dtype=bool)
    floor = fiber['floor']
    if edges:  # patch cord off: both bands read scattered light, then the floor; floor at the end
        n_plateau, n_dark = int(rng.uniform(20, 60) * fs), int(rng.uniform(5, 20) * fs)
        scatter = floor + rng.uniform(0.3, 0.8) * max(fiber['level_g'], fiber['level_i'])
        g[:n_plateau] = i[:n_plateau] = scatter + rng.normal(0, 1e-5, n_plateau)
        g[n_plateau : n_plateau + n_dark] = i[n_plateau : n_plateau + n_dark] = floor
        n_end = int(rng.uniform(10, 40) * fs)
        g[n - n_end :] = i[n - n_end :] = floor
        mask[: n_plateau + n_dark] = True
        mask[n - n_end :] = True
    if dropouts:  # frames (bursts of 1-3) down to the floor, in one band or both
        for start in rng.integers(int(0.1 * n), int(0.9 * n), 25):
            length = rng.integers(1, 4)
            which = rng.integers(0, 3)
            if which in (0, 2):
                g[start : start + length] = floor + rng.uniform(0, 0.1) * (g[start - 5] - floor)
            if which in (1, 2):
                i[start : start + length] = floor + rng.uniform(0, 0.1) * (i[start - 5] - floor)
            mask[start : start + length] = True
    if saturation:
        start = rng.integers(int(0.2 * n), int(0.8 * n))
        length = int(rng.uniform(0.5, 2) * fs)
        g[start : start + length] = 1.0
        mask[start : start + length] = True
    if excursion:  # shared square-wave excursion (damaged fiber coating, scratching)
        start = rng.integers(int(0.3 * n), int(0.7 * n))
        length = int(rng.uniform(3, 10) * fs)
        factor = rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.4, 2.0)])
        for band in (g, i):
            band[start : start + length] = floor + (band[start : start + length] - floor) * factor
        mask[start : start + length] = True
    out['mask'] = mask
    return out
