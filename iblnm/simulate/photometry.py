"""Assemble one session's photometry: true ΔF/F, ROI intensities and IBL tables.

The raw table follows the current Neurophotometrics layout (version 5, CQ002:
``FrameCounter`` int64, ``SystemTimestamp`` float64, ``LedState`` int16,
``ComputerTimestamp`` float64, ``G0``… float64). The extracted table follows
``alf/photometry/photometry.signal.pqt`` (ROI columns, ``times``, ``valid``,
``wavelength``, ``name``, ``color``; RangeIndex) with identical ROI values.
"""

import numpy as np
import pandas as pd

from iblnm.simulate import artefacts as art
from iblnm.simulate import faults as flt
from iblnm.simulate import kernels as kn
from iblnm.simulate import signals as sg
from iblnm.simulate.faults import FLOOR

VALID_MARGIN_S = 2.0  # s, ``valid`` = first trial start - 2 s ... last trial end + 2 s


def true_event_times(trials, extra):
    """Times (s) the neurons respond to: the trials' events with the true movement onsets."""
    return {
        'stimOn_times': trials['stimOn_times'].to_numpy(float),
        'firstMovement_times': np.asarray(extra['true_first_movement'], dtype=float),
        'feedback_times': trials['feedback_times'].to_numpy(float),
    }


def trial_covariates(trials):
    """Unsigned contrast (%) and outcome (bool) per trial, shape (n_trials,) each."""
    contrast = trials['contrastLeft'].fillna(trials['contrastRight']).to_numpy(float) * 100
    return contrast, trials['feedbackType'].to_numpy() == 1


def fiber_truth(nm, fiber, events, trials, grid, rng, quality='good'):
    """True ΔF/F, motion and shared fluctuation of one fiber on the grid, plus its effects.

    Parameters
    ----------
    grid : dict
        ``{'t0': first grid time (s), 'n': number of samples}`` at ``kernels.GRID_FS``.
    quality : str
        A ``'no_signal'`` fiber has no ΔF/F (zeros): its GCaMP band only follows the
        shared motion and haemodynamic changes, which are larger (0.8-2 % SD).

    Returns
    -------
    dff, motion, haemo : ndarray, shape (grid['n'],)
    info : dict
        Motion event counts, haemodynamic SD and early-window effects (ΔF/F).
    """
    contrast, correct = trial_covariates(trials)
    evoked = kn.evoked_dff(nm, events, contrast, correct, fiber['gain'], grid['t0'], grid['n'], rng)
    dff = evoked + kn.spontaneous_dff(grid['n'], rng)
    motion, motion_info = sg.motion_artefacts(grid['n'], rng)
    sd = art.haemo_sd(quality, rng)
    haemo = art.shared_fluctuation(grid['n'], sd, rng, kn.GRID_FS)
    if quality == 'no_signal':
        evoked, dff = np.zeros_like(evoked), np.zeros_like(dff)
    valid = trials['choice'].to_numpy() != 0
    effects = kn.early_window_effects(evoked, grid['t0'], events, contrast, correct, valid)
    info = {'motion': motion_info, 'haemo_sd': round(sd, 5), 'true_effects': effects}
    return dff, motion, haemo, info


def frame_schedule(t_start, t_stop, fault, rng):
    """Frame clock and LED codes, with the clock/LED faults applied.

    Returns
    -------
    dict
        ``sys`` (NPH s), ``times`` (task s), ``led`` (int16 codes), ``clock``,
        ``led_flags`` and ``fault_details``.
    """
    sys_times, clock = sg.frame_clock(t_start, t_stop, rng)
    led, flags = sg.led_states(len(sys_times), rng)
    details = {}
    if fault == 'early_samples':
        details['early_frames'] = flt.inject_early_frames(sys_times, rng)
    if fault == 'band_inversion':
        details['inversion_frames'] = flt.inject_band_inversions(led, rng)
    return {
        'sys': sys_times,
        'times': sg.to_task_clock(sys_times, clock),
        'led': led.astype(np.int16),
        'clock': clock,
        'led_flags': flags,
        'comp_offset': 5.0e7 + rng.uniform(0, 5e6),
        'fault_details': details,
    }


def fiber_signals(times, led, dff, motion, haemo, optics, quality, moderate, events, rng):
    """ROI values of one fiber on every frame, with its artefacts applied.

    The one code path of both :func:`simulate_photometry` (the ONE cache) and
    :func:`iblnm.simulate.simulate_fiber`.

    Parameters
    ----------
    times : ndarray, shape (n_frames,)
        Frame times (s, task clock).
    led : ndarray of int, shape (n_frames,)
        LED codes (``& 7``: 2 GCaMP, 1 isosbestic, 7 the all-LED first frame).
    dff, motion, haemo : ndarray, shape (n_frames,)
        True ΔF/F, motion and shared fluctuation at each frame (fractions).
    optics : dict
        From :func:`signals.fiber_optics`.
    quality : str
    moderate : bool
        Add moderate shared artefacts (a WARNING fiber).
    events : dict
        Session events from :func:`artefacts.session_events`.

    Returns
    -------
    values, clean : ndarray, shape (n_frames,)
        Quantised ROI values with and without the artefacts (same noise).
    artefacts : list of dict
        The injected artefacts (task clock), sorted by start.
    """
    t_rec = times - times[0]
    is_gcamp = (led & 7) == sg.LED_GCAMP
    c, ambient, arts = art.connection_factor(times, is_gcamp, events)
    avoid = [(a - ramp, b + ramp) for a, b, ramp, _ in events['edges']]
    amp, shared_arts = art.shared_artefacts(times, quality, moderate, rng, avoid=avoid)
    fade = art.low_light_fade(times, quality, rng)
    dark = events['dark_offset']
    values, clean = np.empty(len(times)), np.empty(len(times))
    shared = motion + haemo
    for band, name, sel in (('gcamp', 'GCaMP', is_gcamp), ('isosbestic', 'Isosbestic', ~is_gcamp)):
        level = optics[f'level_{band}']
        light = sg.band_light(
            t_rec[sel],
            level,
            optics[f'bleach_{band}'],
            shared[sel],
            rng,
            dff=dff[sel] if band == 'gcamp' else None,
        )
        values[sel], clean[sel] = art.compose(
            light,
            c[sel],
            ambient[sel],
            optics['level_gcamp'],
            optics[f'noise_{band}'] * level,
            dark,
            rng,
            amp[name][sel],
            amp[f'{name}_settled'][sel],
        )
    first = FLOOR + dark + 0.8 * optics['level_gcamp']
    values[0], clean[0] = FLOOR + dark + c[0] * 0.8 * optics['level_gcamp'], first
    arts += shared_arts
    if fade is not None:
        tail = times >= fade
        values[tail] = FLOOR + dark
        arts.append(art.artefact('disconnected', times[tail][0], times[-1], ambient_rel=0.0))
    arts.sort(key=lambda a: (a['start'], a['kind']))
    return sg.quantise(values), sg.quantise(clean), arts


def band_masks(times, led, artefacts):
    """Artefact masks of the GCaMP and isosbestic frames, (n_gcamp,) and (n_iso,) bool."""
    codes = led & 7
    return (
        art.artefact_mask(times[codes == sg.LED_GCAMP], 'GCaMP', artefacts),
        art.artefact_mask(times[codes == sg.LED_ISO], 'Isosbestic', artefacts),
    )


def simulate_photometry(plan, fibers, trials, extra, t_span, rng):
    """ROI intensities of all fibers on every frame, and the ground truth.

    Parameters
    ----------
    plan : dict
        Session plan (``NM``, ``noise_rel``, ``fault``, and optionally ``mess``: the
        session's artefact flags, ``fiber_quality``: [quality, moderate] per fiber).
    fibers : list of dict
        Fibers of the mouse (roi, gain ...).
    t_span : tuple of float
        (first frame, last frame) on the task clock (s).

    Returns
    -------
    frames : dict
        From :func:`frame_schedule` plus ``values`` {roi: ndarray (n_frames,)} and
        ``events`` (the session's disconnections, dropouts and dark offset).
    truth : dict
        ``times`` (GCaMP frame times, s), ``dff`` (float32), ``motion`` (float16) and
        ``artefact`` (bool), all (n_gcamp, n_fibers); ``times_iso`` and
        ``artefact_iso`` (n_iso, n_fibers) for the isosbestic frames; ``rois``.
    info : list of dict
        Per fiber: optics, motion counts, true effects, quality, artefacts.
    """
    frames = frame_schedule(t_span[0], t_span[1], plan['fault'], rng)
    times = frames['times']
    is_gcamp = (frames['led'] & 7) == sg.LED_GCAMP
    is_iso = (frames['led'] & 7) == sg.LED_ISO
    grid = {'t0': times[0] - 1.0, 'n': int((times[-1] - times[0] + 2.0) * kn.GRID_FS)}
    grid_t = grid['t0'] + np.arange(grid['n']) / kn.GRID_FS
    trial_events = true_event_times(trials, extra)
    events = art.session_events(
        plan.get('mess', {}),
        times,
        rng,
        first_task_s=float(trials['intervals_0'].iloc[0]),
        last_task_s=float(trials['intervals_1'].iloc[-1]),
    )
    qualities = plan.get('fiber_quality') or [['good', False]] * len(fibers)
    values, dffs, motions, masks, masks_iso, info = {}, [], [], [], [], []
    for fiber, (quality, moderate) in zip(fibers, qualities):
        dff_g, motion_g, haemo_g, finfo = fiber_truth(
            plan['NM'], fiber, trial_events, trials, grid, rng, quality
        )
        dff, motion, haemo = (np.interp(times, grid_t, x) for x in (dff_g, motion_g, haemo_g))
        optics = sg.fiber_optics(rng, quality, plan['noise_rel'])
        values[fiber['roi']], _, arts = fiber_signals(
            times, frames['led'], dff, motion, haemo, optics, quality, moderate, events, rng
        )
        mask_g, mask_i = band_masks(times, frames['led'], arts)
        dffs.append(dff[is_gcamp])
        motions.append(motion[is_gcamp])
        masks.append(mask_g)
        masks_iso.append(mask_i)
        info.append(
            {
                **optics,
                **finfo,
                'quality': quality,
                'moderate_artefacts': bool(moderate),
                'expected_verdict': art.expected_verdict(quality, moderate),
                'dark_offset': events['dark_offset'],
                'artefacts': arts,
            }
        )
    frames['values'] = values
    frames['events'] = events
    truth = {
        'times': times[is_gcamp],
        'dff': np.column_stack(dffs).astype(np.float32),
        'motion': np.column_stack(motions).astype(np.float16),
        'artefact': np.column_stack(masks),
        'times_iso': times[is_iso],
        'artefact_iso': np.column_stack(masks_iso),
        'rois': np.array([f['roi'] for f in fibers]),
    }
    return frames, truth, info


def apply_roi_fault(frames, fault, rng):
    """Replace one ROI by a dead (floor) or saturated (1.0) channel; return its name."""
    if fault not in ('dead_channel', 'saturated_channel'):
        return None
    rois = sorted(frames['values'])
    roi = rois[int(rng.integers(len(rois)))]
    n = len(frames['led'])
    if fault == 'dead_channel':
        frames['values'][roi] = flt.dead_roi_values(n, rng)
    else:
        frames['values'][roi] = flt.saturate_roi_values(frames['values'][roi], rng)
    return roi


def mark_roi_fault(info, truth, roi, fault):
    """Record a dead or saturated ROI in its fiber's manifest entry and truth masks (in place).

    A dead channel (the floor) is a ``low_light`` fiber, a saturated one a ``no_signal``
    fiber (no change can be measured through the clipping); both FAIL, and every frame
    carries the artefact (``disconnected`` / ``saturated``).
    """
    j = list(truth['rois']).index(roi)
    kind, quality = (
        ('saturated', 'no_signal')
        if fault == 'saturated_channel'
        else ('disconnected', 'low_light')
    )
    t0 = min(truth['times'][0], truth['times_iso'][0])
    t1 = max(truth['times'][-1], truth['times_iso'][-1])
    info[j].update(
        {
            'quality': quality,
            'moderate_artefacts': False,
            'expected_verdict': art.expected_verdict(quality),
            'artefacts': [
                art.artefact(kind, t0, t1, **({} if kind == 'saturated' else {'ambient_rel': 0.0}))
            ],
        }
    )
    truth['artefact'][:, j] = True
    truth['artefact_iso'][:, j] = True


def raw_table(frames, rng):
    """Raw Neurophotometrics frame table (version-5 layout), shape (n_frames, 4 + n_rois)."""
    table = pd.DataFrame(
        {
            'FrameCounter': np.arange(len(frames['sys']), dtype=np.int64),
            'SystemTimestamp': frames['sys'],
            'LedState': frames['led'].astype(np.int16),
            'ComputerTimestamp': sg.computer_timestamps(frames['sys'], frames['comp_offset'], rng),
        }
    )
    for roi in sorted(frames['values']):
        table[roi] = frames['values'][roi]
    return table


def extracted_table(frames, trials):
    """``photometry.signal.pqt`` as IBL extracts it: ROIs, times, valid, wavelength, name, color."""
    times = frames['times']
    led = frames['led'] & 7
    table = pd.DataFrame({roi: frames['values'][roi] for roi in sorted(frames['values'])})
    table['times'] = times
    t0 = trials['intervals_0'].iloc[0] - VALID_MARGIN_S
    t1 = trials['intervals_1'].iloc[-1] + VALID_MARGIN_S
    table['valid'] = (times >= t0) & (times <= t1)
    bands = [led == code for code in sg.BAND_LABELS]
    for i, col in enumerate(('wavelength', 'name', 'color')):
        choices = [label[i] for label in sg.BAND_LABELS.values()]
        default = np.nan if col == 'wavelength' else ''
        table[col] = np.select(bands, choices, default)
    table['wavelength'] = table['wavelength'].astype(np.float64)
    for col in ('name', 'color'):
        table[col] = table[col].astype(object)
    return table


def locations_table(fibers, locations):
    """``photometryROI.locations.pqt``: index ``ROI``, columns ``fiber`` and ``brain_region``."""
    index = pd.Index([f['roi'] for f in fibers], name='ROI', dtype=object)
    fiber_names = [f['fiber'] for f in fibers]
    return pd.DataFrame({'fiber': fiber_names, 'brain_region': list(locations)}, index=index)


def digital_inputs(trials, frames, sync_channel, rng):
    """Digital input events of the NPH (version-5 layout): Bpod sync rising edges.

    Only pulses within the recording are kept. Columns ``ChannelName`` (str),
    ``Channel`` (int8), ``AlwaysTrue`` (bool), ``SystemTimestamp`` (s),
    ``ComputerTimestamp`` (ms).
    """
    task_t = sg.bpod_sync_times(trials)
    task_t = task_t[(task_t > frames['times'][0]) & (task_t < frames['times'][-1])]
    clock = frames['clock']
    sys_t = (task_t - clock['b']) / clock['a'] + rng.normal(0, 5e-5, len(task_t))
    sys_t = np.round(sys_t / sg.CLOCK_TICK) * sg.CLOCK_TICK
    return pd.DataFrame(
        {
            'ChannelName': pd.Series([f'Input{sync_channel}'] * len(sys_t), dtype=object),
            'Channel': np.full(len(sys_t), sync_channel, dtype=np.int8),
            'AlwaysTrue': np.ones(len(sys_t), dtype=bool),
            'SystemTimestamp': sys_t,
            'ComputerTimestamp': sg.computer_timestamps(sys_t, frames['comp_offset'], rng),
        }
    )
