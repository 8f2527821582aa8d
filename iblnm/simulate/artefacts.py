"""Messy recordings: disconnections, dropouts, dark offsets, bad fibers, shared artefacts.

Real recordings start and end with the patch cord off (both bands at or near the camera
floor, joined to the recording by large steps), lose single frames or short bursts to
the floor, sit on a small per-rig dark offset, and some fibers carry no signal, almost no
light or large shared steps and excursions (``docs/simulated_data.md`` §2.8). This module
draws those events and applies them to the light of each band; it knows nothing about
files.

Every injected event is an **artefact** ``{'kind', 'start', 'stop', 'bands'}`` on the task
clock: a sample of band ``b`` at time ``t`` is affected iff ``b in bands`` and
``start <= t <= stop`` (frame times, inclusive). :func:`artefact_mask` turns the list
into a boolean mask, so the ground truth, the manifest and the signals agree exactly.

The light of a band above the dark level (``FLOOR + dark_offset``) is multiplied by a
connection factor ``c(t)`` (1 connected, 0 patch cord off, ``r`` in a dropout frame) and,
for steps and excursions, by ``1 + a(t)``; when the cord is off an ambient level
(room light through the cord, equal in both bands) replaces it::

    value = FLOOR + dark + c·(1 + a)·light + (1 − c)·ambient + c·noise_rel·L·z + READ_SD·z'
"""

import numpy as np

from iblnm.simulate.faults import FLOOR

QUALITIES = ('good', 'no_signal', 'low_light', 'large_artefacts')
VERDICTS = ('PASS', 'WARNING', 'FAIL')
ARTEFACT_KINDS = ('disconnected', 'dropout', 'saturated', 'shared_step', 'excursion')
BANDS = ('GCaMP', 'Isosbestic')
READ_SD = 2e-6  # normalised intensity, additive camera noise of every frame

# Session-level events (all fibers of a session: one patch-cord bundle, one camera)
EDGE_START_S = (20.0, 180.0)  # s, disconnected stretch at the start of the recording
EDGE_END_S = (10.0, 120.0)  # s, disconnected stretch at the end of the recording
EDGE_RAMP_S = (0.3, 2.0)  # s, the cord being connected / pulled: light ramps 0 <-> 1
AMBIENT_PROB = 0.5  # probability that a start edge carries room light through the cord
AMBIENT_LEVEL = (0.2, 0.7)  # x the fiber's GCaMP light, equal in both bands (CQ002's start)
MID_DISCONNECT_S = (1.0, 10.0)  # s, a short disconnection in the middle of the recording
DROPOUT_RATE_HZ = (1 / 120, 1 / 20)  # bursts per second in sessions with dropouts
DROPOUT_FRAMES = (1, 6)  # raw frames (both bands interleaved) per burst: 1-3 per band
DROPOUT_BANDS = (('both', 0.6), ('GCaMP', 0.25), ('Isosbestic', 0.15))
DROPOUT_DEPTH = (0.0, 0.4)  # fraction of the light left in a dropout frame (0 = floor)
DARK_OFFSET = (5e-5, 3e-4)  # normalised intensity above 1/255 in sessions with an offset

# Fiber-level shared artefacts (steps and square-wave excursions, both bands)
LARGE = {'rate_hz': 1 / 45, 'min_n': 6, 'amp': (0.15, 0.6), 'dur_s': (0.5, 30.0)}
MODERATE = {'n': (1, 3), 'amp': (0.04, 0.1), 'dur_s': (0.5, 5.0)}
STEP_FRACTION = 0.35  # share of the large artefacts that are persistent steps
RISE_S = (0.03, 0.4)  # s, transition of a step or excursion edge
ISO_RATIO = (0.6, 1.4)  # isosbestic amplitude / GCaMP amplitude (damage differs by band)

# Fiber qualities
NO_SIGNAL_HAEMO_SD = (0.008, 0.02)  # shared fluctuation SD of a no-signal fiber
GOOD_HAEMO_SD = (0.001, 0.003)  # shared (haemodynamic) fluctuation SD of other fibers
HAEMO_CUTOFF_HZ = 1.0  # Hz, 2nd-order low-pass of the shared fluctuation
LOW_LIGHT_LEVEL = (5e-5, 4e-4)  # light above the dark level of a low-light fiber
LOW_LIGHT_NOISE_SD = (7e-6, 1.5e-5)  # absolute noise SD of a low-light fiber (version_5: 1e-5)
LOW_LIGHT_FADE = (0.1, 0.2)  # last fraction of the recording at exactly the floor (p = 0.5)


def expected_verdict(quality, moderate=False):
    """Verdict a QC must give a fiber: good → PASS (WARNING with moderate artefacts), else FAIL."""
    if quality not in QUALITIES:
        raise ValueError(f'unknown quality {quality!r}; choose from {QUALITIES}')
    if quality == 'good':
        return 'WARNING' if moderate else 'PASS'
    return 'FAIL'


def artefact(kind, start, stop, bands=BANDS, **extra):
    """One artefact record (times in s, task clock, rounded to 0.1 ms) plus ``extra`` keys."""
    return {
        'kind': kind,
        'start': round(float(start), 4),
        'stop': round(float(stop), 4),
        'bands': list(bands),
        **extra,
    }


def artefact_mask(times, band, artefacts):
    """Boolean mask of the samples of ``band`` affected by ``artefacts``.

    Parameters
    ----------
    times : ndarray, shape (n,)
        Frame times of the band (s, task clock).
    band : {'GCaMP', 'Isosbestic'}
    artefacts : list of dict

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    times = np.asarray(times, float)
    mask = np.zeros(len(times), dtype=bool)
    for a in artefacts:
        if band in a['bands']:
            i0, i1 = np.searchsorted(times, [a['start'] - 5e-5, a['stop'] + 5e-5])
            mask[i0:i1] = True
    return mask


# ---------------------------------------------------------------------------
# Session-level events
# ---------------------------------------------------------------------------
def session_events(flags, times, rng, *, first_task_s=None, last_task_s=None):
    """Draw the session's disconnections, dropout bursts and dark offset.

    Parameters
    ----------
    flags : dict
        Booleans ``edge_start``, ``edge_end``, ``mid_disconnect``, ``dropouts``,
        ``dark_offset`` (from the cohort plan).
    times : ndarray, shape (n_frames,)
        Frame times (s, task clock), both bands.
    first_task_s, last_task_s : float, optional
        Edges stay before ``first_task_s`` and after ``last_task_s`` (the trials).

    Returns
    -------
    dict
        ``dark_offset`` (float), ``edges`` list of (start, stop, ramp_s, ambient_x or
        0), ``dropouts`` list of (frame indices ndarray, bands tuple, depth).
    """
    t0, t1 = float(times[0]), float(times[-1])
    first = t0 + 0.5 * (t1 - t0) if first_task_s is None else first_task_s
    last = t1 - 0.2 * (t1 - t0) if last_task_s is None else last_task_s
    out = {'dark_offset': 0.0, 'edges': [], 'dropouts': []}
    if flags.get('dark_offset'):
        out['dark_offset'] = round(float(rng.uniform(*DARK_OFFSET)), 7)
    if flags.get('edge_start'):
        ramp = rng.uniform(*EDGE_RAMP_S)
        dur = min(rng.uniform(*EDGE_START_S), max(first - t0 - ramp - 5.0, 0.0))
        if dur > 1.0:
            out['edges'].append((t0, t0 + dur, ramp, _ambient(rng)))
    if flags.get('edge_end'):
        ramp = rng.uniform(*EDGE_RAMP_S)
        dur = min(rng.uniform(*EDGE_END_S), max(t1 - last - ramp - 2.0, 0.0))
        if dur > 1.0:  # dark: the LEDs go off with the cord (CQ002's room light is at the start)
            out['edges'].append((t1 - dur, t1, ramp, 0.0))
    lo = out['edges'][0][1] + 20 if flags.get('edge_start') and out['edges'] else t0 + 20
    hi = t1 - 130
    if flags.get('mid_disconnect') and hi > lo + 60:
        start = rng.uniform(lo + 30, hi - 30)
        out['edges'].append(
            (start, start + rng.uniform(*MID_DISCONNECT_S), rng.uniform(0.05, 0.3), 0.0)
        )
    if flags.get('dropouts'):
        out['dropouts'] = _dropout_bursts(times, out['edges'], rng)
    return out


def _ambient(rng):
    return float(rng.uniform(*AMBIENT_LEVEL)) if rng.random() < AMBIENT_PROB else 0.0


def _dropout_bursts(times, edges, rng):
    """Bursts of 1-6 raw frames, outside the disconnected stretches."""
    duration = times[-1] - times[0]
    n = int(rng.poisson(rng.uniform(*DROPOUT_RATE_HZ) * duration))
    kinds, probs = zip(*DROPOUT_BANDS)
    bursts, used = [], np.zeros(len(times), dtype=bool)
    for a, b, ramp, _ in edges:  # keep bursts 1 s away from the edges
        used[np.searchsorted(times, a - ramp - 1.0) : np.searchsorted(times, b + ramp + 1.0)] = True
    for start in np.sort(rng.integers(1, len(times) - 10, n)):
        length = int(rng.integers(DROPOUT_FRAMES[0], DROPOUT_FRAMES[1] + 1))
        frames = np.arange(start, start + length)
        which = kinds[int(rng.choice(len(kinds), p=probs))]
        depth = float(rng.uniform(*DROPOUT_DEPTH))
        if used[max(start - 2, 0) : start + length + 2].any():
            continue
        used[frames] = True
        bursts.append((frames, which, depth))
    return bursts


def connection_factor(times, is_gcamp, events):
    """Per-frame connection factor ``c`` and the ambient weight, and the artefacts.

    Returns
    -------
    c : ndarray, shape (n_frames,)
        1 connected, 0 cord off, the depth in dropout frames.
    ambient : ndarray, shape (n_frames,)
        Ambient level (units of the fiber's GCaMP light) where the cord is (partly) off;
        it enters the values weighted by ``1 − c``.
    artefacts : list of dict
        ``disconnected`` and ``dropout`` records.
    """
    c = np.ones(len(times))
    ambient = np.zeros(len(times))
    arts = []
    for a, b, ramp, amb in events['edges']:
        # 0 inside [a, b]; linear ramps of ``ramp`` s outside it, inside the recording
        x = np.clip(np.maximum(a - times, times - b) / ramp, 0.0, 1.0)
        x[(times >= a) & (times <= b)] = 0.0
        x[x > 0.999] = 1.0  # the last 0.1 % of a ramp is connected
        c = np.minimum(c, x)
        off = x < 1.0
        ambient[off] = np.maximum(ambient[off], amb)
        hit = times[off]  # the frames whose light is (partly) gone, ramps included
        arts.append(artefact('disconnected', hit[0], hit[-1], ambient_rel=round(amb, 4)))
    names = np.where(is_gcamp, 'GCaMP', 'Isosbestic')
    for frames, which, depth in events['dropouts']:
        keep = frames if which == 'both' else frames[names[frames] == which]
        if not len(keep):
            continue
        c[keep] = np.minimum(c[keep], depth)
        bands = sorted({str(b) for b in names[keep]}, key=BANDS.index)
        arts.append(artefact('dropout', times[keep[0]], times[keep[-1]], bands))
    return c, ambient, arts


# ---------------------------------------------------------------------------
# Fiber-level events
# ---------------------------------------------------------------------------
def shared_artefacts(times, quality, moderate, rng, *, avoid=()):
    """Steps and excursions of a damaged fiber: ``a(t)`` per band and the artefact records.

    Large artefacts (``quality='large_artefacts'``): max(6, Poisson(duration / 45 s))
    events, 35 % persistent steps, the rest square-wave excursions of 0.5-30 s, both of
    15-60 % of the light with either sign; moderate ones (``moderate=True``): 1-3
    excursions of 4-10 % lasting 0.5-5 s. The isosbestic amplitude is the GCaMP one
    times U(0.6, 1.4).

    Parameters
    ----------
    times : ndarray, shape (n_frames,)
    avoid : list of (start, stop)
        Intervals (disconnections) the events stay out of.

    Returns
    -------
    amp : dict
        ``'GCaMP'``, ``'Isosbestic'``: multiplicative change of the light (0 = none) on
        every frame; ``'GCaMP_settled'``, ``'Isosbestic_settled'``: only the settled
        levels of the steps (a step's new level is a valid baseline; only its
        transition is an artefact).
    artefacts : list of dict
    """
    keys = (*BANDS, *(f'{b}_settled' for b in BANDS))
    if quality != 'large_artefacts' and not moderate:
        return {key: np.zeros(len(times)) for key in keys}, []
    factor = {key: np.ones(len(times)) for key in keys}  # events multiply the light
    t0, t1 = float(times[0]), float(times[-1])
    if quality == 'large_artefacts':
        n = max(LARGE['min_n'], int(rng.poisson((t1 - t0) * LARGE['rate_hz'])))
        spec = LARGE
    else:
        n, spec = int(rng.integers(MODERATE['n'][0], MODERATE['n'][1] + 1)), MODERATE
    arts, taken = [], [(a - 2.0, b + 2.0) for a, b in avoid]
    for _ in range(n):
        step = quality == 'large_artefacts' and rng.random() < STEP_FRACTION
        dur = 0.0 if step else float(rng.uniform(*spec['dur_s']))
        rise = float(rng.uniform(*RISE_S))
        span = 2 * rise + dur
        a = float(rng.uniform(*spec['amp'])) * (1 if rng.random() < 0.5 else -1)
        ratio = float(rng.uniform(*ISO_RATIO))
        for _try in range(20):
            onset = float(rng.uniform(t0 + 5.0, max(t1 - span - 5.0, t0 + 5.1)))
            if all(onset + span + 1.0 < lo or onset - 1.0 > hi for lo, hi in taken):
                break
        else:
            continue
        taken.append((onset, onset + (rise if step else span)))
        shape = _edge(times, onset, rise)
        if not step:
            shape -= _edge(times, onset + rise + dur, rise)
            shape *= 1 + 0.05 * rng.standard_normal(len(times))  # a scratching plateau
        # snap the tails: a change below 2 % of the amplitude is none (and the top of a
        # step is its settled level), so the frames that change are exactly the recorded ones
        shape[np.abs(shape) < 0.02] = 0.0
        if step:
            shape[shape > 0.98] = 1.0
            settled = (shape == 1.0).astype(float)
            factor['GCaMP_settled'] *= 1 + a * settled
            factor['Isosbestic_settled'] *= 1 + max(a * ratio, -0.9) * settled
            hit = times[(shape > 0) & (shape < 1)]
        else:
            hit = times[shape != 0]
        if not len(hit):  # a transition shorter than a frame changes no frame
            continue
        factor['GCaMP'] *= 1 + a * shape
        factor['Isosbestic'] *= 1 + max(a * ratio, -0.9) * shape
        arts.append(artefact('shared_step' if step else 'excursion', hit[0], hit[-1]))
    return {key: f - 1.0 for key, f in factor.items()}, arts


def _edge(times, onset, rise):
    """0 before ``onset``, a linear rise over ``rise`` s, then 1."""
    return np.clip((times - onset) / rise, 0.0, 1.0)


def shared_fluctuation(n_grid, sd, rng, fs):
    """Shared (haemodynamic) fluctuation: white noise low-passed at 1 Hz, SD ``sd``."""
    from scipy import signal as sps

    sos = sps.butter(2, HAEMO_CUTOFF_HZ, fs=fs, output='sos')
    pad = int(10 * fs)
    x = sps.sosfilt(sos, rng.standard_normal(n_grid + pad))[pad:]
    return sd * x / x.std()


def haemo_sd(quality, rng):
    """SD of the shared (haemodynamic) fluctuation of a fiber, as a fraction of the light."""
    return float(rng.uniform(*(NO_SIGNAL_HAEMO_SD if quality == 'no_signal' else GOOD_HAEMO_SD)))


def low_light_fade(times, quality, rng):
    """Start time of the all-floor tail of a low-light fiber (None: no tail)."""
    if quality != 'low_light' or rng.random() < 0.5:
        return None
    t0, t1 = float(times[0]), float(times[-1])
    return t1 - rng.uniform(*LOW_LIGHT_FADE) * (t1 - t0)


def compose(light, c, ambient_x, level_g, noise_sd, dark, rng, amp, amp_settled):
    """Values of one band from its light and the artefact factors (before quantisation).

    Parameters
    ----------
    light : ndarray
        Light above the dark level (normalised intensity), clean.
    c, ambient_x : ndarray
        From :func:`connection_factor` (this band's frames).
    level_g : float
        The fiber's GCaMP light (ambient unit).
    noise_sd : float
        Noise SD when connected (normalised intensity).
    amp, amp_settled : ndarray
        Shared-artefact change ``a(t)`` of this band, and its settled step levels.

    Returns
    -------
    values, clean : ndarray
        With and without the artefacts (same noise draws; ``clean`` keeps the settled
        levels of persistent steps, so the two differ exactly on the artefact samples).
    """
    z = rng.standard_normal(len(light))
    z_read = rng.standard_normal(len(light))
    base = FLOOR + dark + READ_SD * z_read
    clean = base + (1 + amp_settled) * light + noise_sd * z
    values = base + c * (1 + amp) * light + c * noise_sd * z + ambient_x * level_g * (1 - c)
    return values, clean
