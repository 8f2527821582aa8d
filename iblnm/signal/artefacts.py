"""Artefact and segment detection for one fiber's raw photometry (pure array kernels).

Arrays in, masks out. One *recording* is one fiber: the signal band (GCaMP) and, when
present, the reference band (isosbestic) paired by position, with the frame times of the
signal band. Every statistic is relative to the light above the camera floor
(``a = F − floor``) and to a robust noise SD, so the rules do not depend on the sampling
rate, the ADC resolution or the units of the recording:

- **level**: the running median of ``a`` over ``median_window_s`` (1 s), per band;
- **noise**: σ = 1.4826·MAD(Δa)/√2, the robust SD of white noise from first differences
  (taken over the lit samples only);
- **typical level** L: the median of the level over the lit samples of the recording.

Kinds of artefact (one kind per masked sample, in this priority):

``missing``
    no value: a non-finite sample of a band, e.g. the NaN frames that
    :meth:`iblnm.data.PhotometrySession.load_photometry` inserts where frames were not
    recorded (a time gap, :func:`iblnm.signal.preprocess.time_gaps`).
``saturated``
    a band at or above the saturation value (1.0 for Neurophotometrics' normalised range).
``floor``
    a band's level within ``floor_frac_dark`` of the dark level above the floor (at the
    floor: LED off, patch cord off, no light), or below ``floor_frac_level`` of the
    recording's typical level L (lost ≥ 95 % of its light).
``dropout``
    single frames or bursts shorter than half the median window that lost more than
    ``dropout_depth`` of the local light *and* sit more than ``dropout_k`` σ below the level
    (e.g. frames down to the floor); ``dropout_dilate`` neighbours are masked too.
``step``
    the transition zone of a change point where the levels of both bands change by more
    than ``step_rel`` of the local level between the second before and the second after
    (the signal band alone, by more than ``step_rel_single``, without a reference band).
``disconnected`` / ``excursion``
    the recording is split into segments at floor/saturated stretches and change points;
    the longest segment is kept, and the walk outwards keeps every further segment whose
    levels (both bands) continue those of the last kept segment within ``level_tol``.
    Rejected segments between kept ones are ``excursion`` (square-wave artefacts), the others
    ``disconnected`` (edges before the patch cord is connected / after it is removed).

Masked samples are left out of every fit downstream and are NaN in the preprocessed signal.
See ``docs/methods.md`` §2.4 for the justification of the thresholds.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from iblnm import config
from iblnm.signal.preprocess import sampling_rate
from iblnm.signal.robust import mad_sd, median

KINDS = ('valid', 'saturated', 'floor', 'dropout', 'step', 'excursion', 'disconnected', 'missing')
_CODE = {kind: i for i, kind in enumerate(KINDS)}
SEGMENT_COLUMNS = ['start', 'stop', 'start_time', 'stop_time', 'kind']


# ---------------------------------------------------------------------------
# Small statistics
# ---------------------------------------------------------------------------
def robust_noise_sd(values, where=None):
    """Robust SD of the white noise of a signal: 1.4826·MAD(first differences)/√2.

    Parameters
    ----------
    values : ndarray, shape (n,)
    where : ndarray of bool, shape (n,), optional
        Only differences between two samples that are both True are used.

    Returns
    -------
    float
        In the units of ``values``; 0 when fewer than 10 differences are usable.
    """
    d = np.diff(np.asarray(values, dtype=float))
    if where is not None:
        d = d[where[1:] & where[:-1]]
    d = d[np.isfinite(d)]
    if d.size < 10:
        return 0.0
    return float(mad_sd(d) / np.sqrt(2))


def running_median(values, n, block=1):
    """Centred running median over ~``n`` samples (edges repeat the end values).

    With ``block > 1`` the medians of consecutive blocks of ``block`` samples are
    filtered instead (a running median of ``n // block`` block medians, held over each
    block): the level then has the block's time resolution and costs ``1/block`` as much.
    """
    x = np.asarray(values, dtype=float)
    block = max(1, int(block))
    if block == 1 or x.size < 4 * block:
        return ndimage.median_filter(x, size=max(1, int(n) | 1), mode='nearest')
    n_blocks = -(-x.size // block)
    padded = np.pad(x, (0, n_blocks * block - x.size), mode='edge')
    medians = median(padded.reshape(n_blocks, block), axis=1)
    size = max(1, int(round(n / block)) | 1)
    level = ndimage.median_filter(medians, size=size, mode='nearest')
    return np.repeat(level, block)[: x.size]


def runs(mask):
    """Start and stop (exclusive) indices of the True runs of a boolean array."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return edges[0::2], edges[1::2]


def _dilate(mask, n):
    """Boolean dilation by ``n`` samples on each side (cumulative-sum form, O(n_samples))."""
    n = int(n)
    if n <= 0 or not mask.any():
        return mask
    c = np.concatenate([np.zeros(n + 1, np.int32), np.cumsum(mask, dtype=np.int32)])
    c = np.concatenate([c, np.full(n, c[-1], np.int32)])
    return (c[2 * n + 1 :] - c[: -2 * n - 1]) > 0


def _rle(codes):
    """Run-length encoding of an integer array: (starts, stops, values)."""
    if codes.size == 0:
        return np.array([], int), np.array([], int), np.array([], codes.dtype)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [codes.size]])
    return starts, stops, codes[starts]


# ---------------------------------------------------------------------------
# Per band
# ---------------------------------------------------------------------------
@dataclass
class BandStats:
    """Per-band quantities used by the rules (all in the units of the band)."""

    light: np.ndarray  # F − floor, shape (n,)
    level: np.ndarray  # running median of light, shape (n,)
    typical: float  # median level of the lit samples
    noise: float  # robust white-noise SD
    saturated: np.ndarray  # bool (n,)
    missing: np.ndarray  # bool (n,): no value (NaN frames)
    floor: np.ndarray  # bool (n,)
    dropout: np.ndarray  # bool (n,)


def saturated_samples(values, saturation=config.SATURATION_LEVEL):
    """Samples at or above the saturation value (the top of the rig's range).

    The value bounds the rig's range, so a band with a finite value above it is in other
    units and has no saturated samples. NaN is never saturated.

    Parameters
    ----------
    values : ndarray, shape (n,)
        One band (data units).
    saturation : float
        The saturation value (inf disables the rule).

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    if np.any(x[finite] > saturation):
        return np.zeros(x.size, bool)
    return (x >= saturation) & finite


def band_stats(values, fs, floor, saturation, p):
    """Levels, noise and the sample-level rules (saturated, floor, dropout) of one band."""
    x = np.asarray(values, dtype=float)
    missing = ~np.isfinite(x)
    saturated = saturated_samples(x, saturation)
    unusable = saturated | missing
    if unusable.any() and not unusable.all():  # levels and steps ignore these samples
        idx = np.arange(x.size)
        x = x.copy()
        x[unusable] = np.interp(idx[unusable], idx[~unusable], x[~unusable])
    light = x - floor
    n_med = int(round(p['median_window_s'] * fs))
    level = running_median(light, n_med, block=int(round(p['level_block_s'] * fs)))
    dark_tol = p['floor_frac_dark'] * floor
    lit = level > dark_tol
    typical = float(median(level[lit])) if lit.any() else 0.0
    at_floor = (level <= dark_tol) | (level < p['floor_frac_level'] * typical)
    noise = robust_noise_sd(light, where=~at_floor)
    deficit = level - light
    dropout = (deficit > p['dropout_depth'] * level) & (deficit > p['dropout_k'] * noise)
    dropout &= ~at_floor
    dropout = _dilate(dropout, p['dropout_dilate'])
    return BandStats(light, level, typical, noise, saturated, missing, at_floor, dropout)


def _relative_change(level, h):
    """(level[i + h] − level[i − h]) / max of the two, edges padded (scale-free step size)."""
    padded = np.pad(level, h, mode='edge')
    after, before = padded[2 * h :], padded[: -2 * h]
    scale = np.maximum(np.abs(after), np.abs(before))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(scale > 0, (after - before) / scale, 0.0)


def _step_sample(light, before, after):
    """Index of the first sample at the new level of a step from ``before`` to ``after``.

    The split that leaves the fewest samples on the wrong side of the mid-level (a few
    noisy or dropped frames do not move it). The running level puts a sharp step anywhere
    within ± half its window; the samples say where it is.
    """
    mid = 0.5 * (before + after)
    beyond = light > mid if after >= before else light < mid
    # cost of splitting before sample k: new-level samples before it (c_k) + old-level ones
    # after it (n − k − (total − c_k)) = 2 c_k − k + const
    counts = np.zeros(beyond.size + 1, dtype=np.int64)
    np.cumsum(beyond, out=counts[1:])
    return int(np.argmin(2 * counts - np.arange(beyond.size + 1)))


def change_points(bands, fs, p):
    """Steps: where every band's level changes by more than ``step_rel``, or the reference
    band's alone does.

    The relative change of each band's level between ~0.5 s before and ~0.5 s after each
    sample is computed; a step is a run where the smallest of them exceeds the threshold
    (``step_rel`` with a reference band, ``step_rel_single`` without). A step of the
    signal band alone may be the neurons' (a large sustained response), so it needs both;
    the reference band (last of ``bands``) carries no activity, so a step of its own
    (> ``step_rel`` and > ``step_k_reference`` of its noise SDs) is one too: e.g. room
    light reaching a disconnected fiber while the 470-nm level happens to continue.

    Returns
    -------
    points : ndarray of int
        One index per step (the largest change of each run above threshold).
    zone : ndarray of bool, shape (n,)
        The transition: samples of the run that are, in some band, further than
        ``level_tol`` from both the level before and the level after the run (the ramp
        of a gradual step), plus the step sample and its neighbours; padded by
        ``step_pad_s``.
    """
    n = bands[0].light.size
    h = max(1, int(round(p['median_window_s'] * fs / 2)) + 1)
    threshold = p['step_rel'] if len(bands) > 1 else p['step_rel_single']
    changes = [np.abs(_relative_change(b.level, h)) for b in bands]
    change = np.min(changes, axis=0)
    if len(bands) > 1:
        ref = bands[-1]
        padded = np.pad(ref.level, h, mode='edge')
        jump = np.abs(padded[2 * h :] - padded[: -2 * h])
        own = (changes[-1] > threshold) & (jump > p['step_k_reference'] * ref.noise)
        change = np.where(own, np.maximum(change, changes[-1]), change)
    change[np.any([b.floor for b in bands], axis=0)] = 0  # relative changes at the floor are noise
    starts, stops = runs(change > threshold)
    points = np.zeros(starts.size, dtype=int)
    zone = np.zeros(n, dtype=bool)
    for j, (s, e) in enumerate(zip(starts, stops)):
        s0, e0 = max(s - h, 0), min(e + h, n - 1)
        peak = s + np.argmax(change[s:e])
        b = bands[int(np.argmax([c[peak] for c in changes]))]  # the band that steps most
        point = points[j] = s0 + _step_sample(b.light[s0 : e0 + 1], b.level[s0], b.level[e0])
        ramp = np.zeros(e - s, dtype=bool)
        for b in bands:
            before, after = b.level[s0], b.level[e0]
            tol = p['level_tol'] * max(abs(before), abs(after))
            x = b.light[s:e]
            ramp |= (np.abs(x - before) > tol) & (np.abs(x - after) > tol)
        zone[s:e] = ramp
        zone[max(point - 1, 0) : point + 2] = True
    zone = _dilate(zone, int(round(p['step_pad_s'] * fs)))
    return points, zone


# ---------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------
def _segment_levels(bands, start, stop, usable, n_edge):
    """Median light per band at the start and at the end of a segment (usable samples)."""
    first, last = [], []
    idx = np.arange(start, stop)[usable[start:stop]]
    if idx.size == 0:
        return None
    for b in bands:
        first.append(np.median(b.light[idx[:n_edge]]))
        last.append(np.median(b.light[idx[-n_edge:]]))
    return np.array(first), np.array(last)


def _continues(previous_end, next_start, tol, trend):
    """Does a segment starting at level ``next_start`` continue one ending at ``previous_end``?

    Within ``tol`` (relative, per band) of the levels between the one where the kept
    recording ended and that level carried on over the break at the kept recording's mean
    rate (``trend``: per band). Bleaching goes on while a fiber is disconnected, so a long
    break may end well below where it began, and it slows down, so above the linear
    extrapolation.
    """
    low, high = np.minimum(previous_end, trend), np.maximum(previous_end, trend)
    distance = np.maximum(low - next_start, 0) + np.maximum(next_start - high, 0)
    scale = np.maximum(np.abs(previous_end), np.abs(next_start))
    with np.errstate(invalid='ignore', divide='ignore'):
        return bool(np.all(distance <= tol * scale))


def _trend(level, rate, gap):
    """``level`` carried on for ``gap`` samples at ``rate`` (per band, per sample); the
    change is at most half the level."""
    with np.errstate(invalid='ignore'):
        change = rate * gap
    return level + np.clip(change, -0.5 * np.abs(level), 0.5 * np.abs(level))


def keep_connected(bands, breaks, usable, fs, p):
    """Which segments between breaks belong to the connected recording.

    Parameters
    ----------
    bands : list of BandStats
    breaks : ndarray of bool, shape (n,)
        Samples that split the recording (floor, saturation, step zones).
    usable : ndarray of bool, shape (n,)
        Samples usable for levels (not dropouts).

    Returns
    -------
    kind : ndarray of int8, shape (n,)
        ``_CODE['disconnected']`` / ``_CODE['excursion']`` on rejected segments, else 0.
    """
    n = breaks.size
    kind = np.zeros(n, dtype=np.int8)
    starts, stops = runs(~breaks)
    if starts.size == 0:
        return kind
    n_edge = max(1, int(round(p['level_window_s'] * fs)))
    levels = [_segment_levels(bands, s, e, usable, n_edge) for s, e in zip(starts, stops)]
    lengths = np.array([e - s if lv is not None else 0 for s, e, lv in zip(starts, stops, levels)])
    main = int(np.argmax(lengths))
    kept = np.zeros(starts.size, dtype=bool)
    kept[main] = True
    n_trend = 4 * n_edge  # segments this long give the recording's trend (bleaching rate)

    def rate(first, last, length):
        return (last - first) / max(length, 1)

    for direction in (1, -1):
        first, ref = levels[main] if direction == 1 else levels[main][::-1]
        slope, ref_j = rate(first, ref, lengths[main]), main
        j = main + direction
        while 0 <= j < starts.size:
            if levels[j] is not None:
                start_level, end_level = levels[j] if direction == 1 else levels[j][::-1]
                # samples from the kept recording's edge to this segment's
                gap = starts[j] - stops[ref_j] if direction == 1 else starts[ref_j] - stops[j]
                if _continues(ref, start_level, p['level_tol'], _trend(ref, slope, gap)):
                    kept[j] = True
                    ref, ref_j = end_level, j
                    if lengths[j] >= n_trend:
                        slope = rate(start_level, end_level, lengths[j])
            j += direction
    kept_idx = np.flatnonzero(kept)
    for j in np.flatnonzero(~kept):
        inside = kept_idx.min() < j < kept_idx.max()
        kind[starts[j] : stops[j]] = _CODE['excursion' if inside else 'disconnected']
    return kind


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
@dataclass
class ArtefactResult:
    """Output of :func:`detect_artefacts` for one recording.

    Attributes
    ----------
    valid : ndarray of bool, shape (n,)
        True for samples usable by every fit.
    kind : ndarray of str, shape (n,)
        The artefact kind of each sample (``'valid'`` for valid ones), see :data:`KINDS`.
    segments : pandas.DataFrame
        Runs of one kind: ``start``, ``stop`` (sample indices, stop exclusive),
        ``start_time``, ``stop_time`` (s, stop = time of the last sample of the run), ``kind``.
    n_steps : int
        Number of shared steps (change points).
    n_dropouts : int
        Number of dropout bursts, wherever they are (also inside disconnected stretches,
        where the sample kind says ``disconnected``).
    summary : dict
        QC values (:func:`summarise`).
    """

    valid: np.ndarray
    kind: np.ndarray
    segments: pd.DataFrame
    n_steps: int = 0
    n_dropouts: int = 0
    summary: dict = field(default_factory=dict)


def resolve_params(params=None):
    """``config.ARTEFACT_PARAMS`` updated with ``params``."""
    return {**config.ARTEFACT_PARAMS, **(params or {})}


def detect_artefacts(
    times,
    signal,
    reference=None,
    floor=config.DARK_LEVEL,
    saturation=config.SATURATION_LEVEL,
    params=None,
):
    """Find artefacts and disconnected stretches in one fiber's recording.

    Parameters
    ----------
    times : ndarray, shape (n,)
        Frame times of the signal band (s).
    signal : ndarray, shape (n,)
        Raw signal band (e.g. GCaMP), in the recording's units.
    reference : ndarray, shape (n,), optional
        Raw reference band (isosbestic) paired by position with ``signal``.
    floor : float
        Camera dark level in the same units (:func:`estimate_floor`); 0 if already removed.
    saturation : float
        Values at or above it are saturated (inf to disable). It is the top of the rig's
        range (1.0 for Neurophotometrics' normalised values), so it is ignored for data
        that exceed it (other units).
    params : dict, optional
        Overrides of ``config.ARTEFACT_PARAMS``.

    Returns
    -------
    ArtefactResult
    """
    p = resolve_params(params)
    times = np.asarray(times, dtype=float)
    n = times.size
    fs = sampling_rate(times) if n > 1 else 1.0
    arrays = [signal] if reference is None else [signal, reference]
    bands = [band_stats(np.asarray(a, dtype=float)[:n], fs, floor, saturation, p) for a in arrays]
    missing = np.any([b.missing for b in bands], axis=0)
    saturated = np.any([b.saturated for b in bands], axis=0) & ~missing
    at_floor = np.any([b.floor for b in bands], axis=0) & ~saturated & ~missing
    dropout = np.any([b.dropout for b in bands], axis=0)
    points, step_zone = change_points(bands, fs, p)
    breaks = missing | saturated | at_floor | step_zone
    connected = keep_connected(bands, breaks, ~dropout, fs, p)
    codes = np.zeros(n, dtype=np.int8)
    # lowest priority first: later assignments win
    codes[connected > 0] = connected[connected > 0]
    codes[step_zone] = _CODE['step']
    codes[dropout & (codes == 0)] = _CODE['dropout']
    codes[at_floor] = _CODE['floor']
    codes[saturated] = _CODE['saturated']
    codes[missing] = _CODE['missing']
    codes = _drop_short_valid(codes, int(round(p['min_segment_s'] * fs)))
    kind = np.asarray(KINDS, dtype=object)[codes]
    segments = segment_table(times, codes)
    result = ArtefactResult(
        codes == 0, kind, segments, n_steps=int(points.size), n_dropouts=int(runs(dropout)[0].size)
    )
    result.summary = summarise(result)
    return result


def _drop_short_valid(codes, n_min):
    """Valid runs shorter than ``n_min`` next to a stretch artefact take its kind.

    A short run between two stretch artefacts takes the first one's kind. Between a
    stretch artefact and a dropout, a run shorter than ``n_min / 10`` takes the stretch's
    kind (it is the stretch's ragged edge: left valid, the interpolation over the stretch
    would end on its level); longer ones are kept, as are runs between two dropouts (a
    dropout is a few frames, not a stretch).
    """
    starts, stops, values = _rle(codes)
    dropout = _CODE['dropout']
    n_edge = max(1, n_min // 10)
    for i in np.flatnonzero(values == 0):
        length = stops[i] - starts[i]
        if not (length < n_min and 0 < i < values.size - 1):
            continue
        neighbours = (values[i - 1], values[i + 1])
        stretch = [k for k in neighbours if k != dropout]
        if len(stretch) == 2 or (stretch and length < n_edge):
            codes[starts[i] : stops[i]] = stretch[0]
    return codes


def segment_table(times, codes):
    """Runs of equal kind codes as a table (see :class:`ArtefactResult`)."""
    starts, stops, values = _rle(np.asarray(codes))
    times = np.asarray(times, dtype=float)
    return pd.DataFrame(
        {
            'start': starts.astype(np.int64),
            'stop': stops.astype(np.int64),
            'start_time': times[starts] if starts.size else np.array([], float),
            'stop_time': times[stops - 1] if stops.size else np.array([], float),
            'kind': [KINDS[v] for v in values],
        },
        columns=SEGMENT_COLUMNS,
    )


def summarise(result):
    """QC values of an artefact result (names in ``config.QC_ARTEFACT_METRICS``).

    ``frac_valid`` and ``frac_{kind}`` are fractions of the recording's samples;
    ``frac_valid_inner`` the valid fraction of the span from the first to the last valid
    sample (the recording without its unusable start and end: connecting and disconnecting
    the patch cord is routine, a gap in the middle is not); ``n_dropouts`` counts dropout
    bursts (anywhere), ``n_steps`` the change points, ``n_excursions`` the rejected inner
    segments.
    """
    n = max(result.valid.size, 1)
    seg = result.segments
    counts = seg.assign(length=seg['stop'] - seg['start']).groupby('kind')['length'].sum()
    out = {'frac_valid': float(result.valid.sum() / n), 'frac_valid_inner': 0.0}
    valid_index = np.flatnonzero(result.valid)
    if valid_index.size:
        out['frac_valid_inner'] = float(valid_index.size / (valid_index[-1] - valid_index[0] + 1))
    for kind in ('disconnected', 'floor', 'saturated', 'dropout', 'excursion', 'step', 'missing'):
        out[f'frac_{kind}'] = float(counts.get(kind, 0) / n)
    out['n_dropouts'] = float(result.n_dropouts)
    out['n_steps'] = float(result.n_steps)
    out['n_excursions'] = float((seg['kind'] == 'excursion').sum())
    return out


def estimate_floor(dark_values=None, default=config.DARK_LEVEL, min_frames=100):
    """Camera dark level: the median of dark (LED-off) frames when there are enough, else ``default``.

    Parameters
    ----------
    dark_values : ndarray, optional
        Values of frames taken with no LED on (e.g. LedState 0 frames of older
        Neurophotometrics files), any shape.
    default : float
        Per-rig value (``config.DARK_LEVEL``: 1/255 of Neurophotometrics' normalised range).

    Returns
    -------
    level : float
    source : str
        ``'dark_frames'`` or ``'config'``.
    """
    if dark_values is not None:
        dark = np.asarray(dark_values, dtype=float)
        dark = dark[np.isfinite(dark)]
        if dark.size >= min_frames:
            return float(np.median(dark)), 'dark_frames'
    return float(default), 'config'
