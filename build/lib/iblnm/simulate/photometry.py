"""Assemble one session's photometry: true ΔF/F, ROI intensities and IBL tables.

The raw table follows the current Neurophotometrics layout (version 5, CQ002:
``FrameCounter`` int64, ``SystemTimestamp`` float64, ``LedState`` int16,
``ComputerTimestamp`` float64, ``G0``… float64). The extracted table follows
``alf/photometry/photometry.signal.pqt`` (ROI columns, ``times``, ``valid``,
``wavelength``, ``name``, ``color``; RangeIndex) with identical ROI values.
"""

import numpy as np
import pandas as pd

from iblnm.simulate import faults as flt
from iblnm.simulate import kernels as kn
from iblnm.simulate import signals as sg

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


def fiber_truth(nm, fiber, events, trials, grid, rng):
    """True ΔF/F and motion of one fiber on the grid, plus its early-window effects.

    Parameters
    ----------
    grid : dict
        ``{'t0': first grid time (s), 'n': number of samples}`` at ``kernels.GRID_FS``.

    Returns
    -------
    dff, motion : ndarray, shape (grid['n'],)
    info : dict
        Motion event counts and early-window effects (ΔF/F).
    """
    contrast, correct = trial_covariates(trials)
    evoked = kn.evoked_dff(nm, events, contrast, correct, fiber['gain'], grid['t0'], grid['n'], rng)
    dff = evoked + kn.spontaneous_dff(grid['n'], rng)
    motion, motion_info = sg.motion_artefacts(grid['n'], rng)
    valid = trials['choice'].to_numpy() != 0
    effects = kn.early_window_effects(evoked, grid['t0'], events, contrast, correct, valid)
    return dff, motion, {'motion': motion_info, 'true_effects': effects}


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


def simulate_photometry(plan, fibers, trials, extra, t_span, rng):
    """ROI intensities of all fibers on every frame, and the ground truth.

    Parameters
    ----------
    plan : dict
        Session plan (``NM``, ``noise_rel``, ``fault``).
    fibers : list of dict
        Fibers of the mouse (roi, gain ...).
    t_span : tuple of float
        (first frame, last frame) on the task clock (s).

    Returns
    -------
    frames : dict
        From :func:`frame_schedule` plus ``values`` {roi: ndarray (n_frames,)}.
    truth : dict
        ``times`` (GCaMP frame times, s), ``dff`` (float32) and ``motion``
        (float16), both (n_gcamp, n_fibers), and ``rois``.
    info : list of dict
        Per fiber: optics, motion counts, true effects.
    """
    frames = frame_schedule(t_span[0], t_span[1], plan['fault'], rng)
    times = frames['times']
    is_gcamp = (frames['led'] & 7) == sg.LED_GCAMP
    grid = {'t0': times[0] - 1.0, 'n': int((times[-1] - times[0] + 2.0) * kn.GRID_FS)}
    grid_t = grid['t0'] + np.arange(grid['n']) / kn.GRID_FS
    events = true_event_times(trials, extra)
    values, dffs, motions, info = {}, [], [], []
    for fiber in fibers:
        dff_g, motion_g, finfo = fiber_truth(plan['NM'], fiber, events, trials, grid, rng)
        dff, motion = np.interp(times, grid_t, dff_g), np.interp(times, grid_t, motion_g)
        optics = sg.fiber_optics(rng)
        values[fiber['roi']] = sg.roi_intensities(
            times - times[0], is_gcamp, dff, motion, optics, plan['noise_rel'], rng
        )
        dffs.append(dff[is_gcamp])
        motions.append(motion[is_gcamp])
        info.append({**optics, **finfo})
    frames['values'] = values
    truth = {
        'times': times[is_gcamp],
        'dff': np.column_stack(dffs).astype(np.float32),
        'motion': np.column_stack(motions).astype(np.float16),
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


def raw_table(frames, rng):
    """Raw Neurophotometrics frame table (version-5 layout), shape (n_frames, 4 + n_rois)."""
    table = pd.DataFrame({
        'FrameCounter': np.arange(len(frames['sys']), dtype=np.int64),
        'SystemTimestamp': frames['sys'],
        'LedState': frames['led'].astype(np.int16),
        'ComputerTimestamp': sg.computer_timestamps(frames['sys'], frames['comp_offset'], rng),
    })  # fmt: skip
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
    return pd.DataFrame({
        'ChannelName': pd.Series([f'Input{sync_channel}'] * len(sys_t), dtype=object),
        'Channel': np.full(len(sys_t), sync_channel, dtype=np.int8),
        'AlwaysTrue': np.ones(len(sys_t), dtype=bool),
        'SystemTimestamp': sys_t,
        'ComputerTimestamp': sg.computer_timestamps(sys_t, frames['comp_offset'], rng),
    })  # fmt: skip
