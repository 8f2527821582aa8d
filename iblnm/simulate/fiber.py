"""One fiber's raw bands without a ONE cache: fast ground truth for detector and QC tests.

:func:`simulate_fiber` runs the generator's own per-fiber code
(:func:`iblnm.simulate.photometry.fiber_truth` and
:func:`~iblnm.simulate.photometry.fiber_signals`, with the session events of
:func:`iblnm.simulate.artefacts.session_events`) on a synthetic task: pseudo-trials
every 3-6 s drive the NM's response kernels. Nothing is written to disk.
"""

import numpy as np
import pandas as pd

from iblnm.simulate import artefacts as art
from iblnm.simulate import kernels as kn
from iblnm.simulate import photometry as ph
from iblnm.simulate import signals as sg
from iblnm.simulate.faults import FLOOR, QUANTUM

CONTRASTS = np.array([0.0, 6.25, 12.5, 25.0, 100.0])  # %


def pseudo_trials(duration_s, rng, interval_s=(3.0, 6.0), p_correct=0.75):
    """Synthetic trials over ``[2, duration_s - 3]`` s: events and covariates.

    Returns
    -------
    trials : DataFrame
        ``contrastLeft``, ``contrastRight`` (fractions, NaN on the other side),
        ``feedbackType`` (±1), ``choice`` (±1), ``stimOn_times``, ``feedback_times``.
    events : dict
        Event name -> times (s) of :data:`iblnm.simulate.kernels.EVENTS`.
    """
    starts = np.cumsum(rng.uniform(*interval_s, int(duration_s / interval_s[0]) + 2)) + 2.0
    starts = starts[starts < duration_s - 3.0]
    n = len(starts)
    contrast = rng.choice(CONTRASTS, n) / 100
    left = rng.random(n) < 0.5
    correct = rng.random(n) < p_correct
    movement = starts + 0.25 * rng.lognormal(0.0, 0.4, n)
    feedback = movement + 0.2
    trials = pd.DataFrame(
        {
            'contrastLeft': np.where(left, contrast, np.nan),
            'contrastRight': np.where(left, np.nan, contrast),
            'feedbackType': np.where(correct, 1, -1),
            'choice': np.where(correct == left, 1, -1),
            'stimOn_times': starts,
            'feedback_times': feedback,
        }
    )
    events = {'stimOn_times': starts, 'firstMovement_times': movement, 'feedback_times': feedback}
    return trials, events


def simulate_fiber(
    duration_s=600.0,
    quality='good',
    seed=0,
    *,
    nm='DA',
    moderate=False,
    edge_start=False,
    edge_end=False,
    mid_disconnect=False,
    dropouts=False,
    dark_offset=False,
    noise_rel=0.0035,
    gain=1.0,
    dark_frames=False,
):
    """Simulate the raw GCaMP and isosbestic bands of one fiber (no files).

    Same model and code path as the ONE-cache generator (``docs/simulated_data.md``
    §2.5-2.8): ROI values normalised 0-1, 59.98 Hz frames alternating 470/415 nm
    (29.99 Hz per band), the first frame all-LED (not returned), quantised to 2^-23.

    Parameters
    ----------
    duration_s : float
        Recording length (s); times run from 0 on the task clock.
    quality : {'good', 'no_signal', 'low_light', 'large_artefacts'}
    seed : int
        Same arguments and seed -> identical arrays.
    nm : {'DA', '5HT', 'NE', 'ACh'}
        Response kernels (pseudo-trials every 3-6 s).
    moderate : bool
        Add 1-3 moderate shared excursions (expected verdict WARNING for a good fiber).
    edge_start, edge_end : bool
        The recording starts / ends with the patch cord off (20-180 s / 10-120 s, at
        most 30 % / 20 % of the recording).
    mid_disconnect : bool
        A 1-10 s disconnection in the middle.
    dropouts : bool
        Dropout bursts (1-3 frames per band, 1 per 20-120 s, to 0-40 % of the light).
    dark_offset : bool or float
        Dark level above 1/255: True draws 5e-5-3e-4, a float sets it, False is 0.
    noise_rel : float
        Noise SD / light at 30 Hz (each band gets it x U(0.8, 1.25)).
    gain : float
        Response gain.
    dark_frames : bool
        Also return LED-off frames (``times_dark``, ``dark``: the dark level exactly, as
        in old-layout fip_40 recordings), 5 ms before each GCaMP frame.

    Returns
    -------
    dict
        ``times`` (n_g,) GCaMP frame times (s) and ``times_iso`` (n_i,);
        ``gcamp`` (n_g,), ``iso`` (n_i,) raw values and ``gcamp_clean``, ``iso_clean``
        the same without the artefacts (same noise);
        ``dff`` (n_g,) true ΔF/F (fraction of the light above the dark level; zeros for
        ``no_signal``); ``motion`` (n_g,); ``artefact`` (n_g,) and ``artefact_iso``
        (n_i,) bool masks of the injected artefacts; ``artefacts`` (list of dict,
        manifest format); ``quality``, ``expected_verdict``, ``dark_offset``;
        ``optics`` (levels, bleaching, noise per band); ``events`` (pseudo-trial event
        times) and ``trials`` (their table: :func:`pseudo_trials`); with ``dark_frames``:
        ``times_dark``, ``dark``.
    """
    if quality not in art.QUALITIES:
        raise ValueError(f'unknown quality {quality!r}; choose from {art.QUALITIES}')
    if nm not in kn.NM_KERNELS:
        raise ValueError(f'unknown NM {nm!r}; choose from {sorted(kn.NM_KERNELS)}')
    rng = np.random.default_rng([int(seed), 12])
    sys_times, clock = sg.frame_clock(0.0, float(duration_s), rng)
    times = sg.to_task_clock(sys_times, clock)
    led, _ = sg.led_states(len(times), rng)
    led = led & 7
    trials, events = pseudo_trials(float(duration_s), rng)
    grid = {'t0': times[0] - 1.0, 'n': int((times[-1] - times[0] + 2.0) * kn.GRID_FS)}
    grid_t = grid['t0'] + np.arange(grid['n']) / kn.GRID_FS
    dff_g, motion_g, haemo_g, _ = ph.fiber_truth(
        nm, {'gain': gain}, events, trials, grid, rng, quality
    )
    dff, motion, haemo = (np.interp(times, grid_t, x) for x in (dff_g, motion_g, haemo_g))
    flags = {
        'edge_start': edge_start,
        'edge_end': edge_end,
        'mid_disconnect': mid_disconnect,
        'dropouts': dropouts,
        'dark_offset': dark_offset is True,
    }
    span = times[-1] - times[0]
    session = art.session_events(
        flags,
        times,
        rng,
        first_task_s=times[0] + min(0.3 * span, 200.0),
        last_task_s=times[-1] - min(0.2 * span, 130.0),
    )
    if dark_offset is not True and dark_offset:
        session['dark_offset'] = float(dark_offset)
    optics = sg.fiber_optics(rng, quality, noise_rel)
    values, clean, arts = ph.fiber_signals(
        times, led, dff, motion, haemo, optics, quality, moderate, session, rng
    )
    is_g, is_i = led == sg.LED_GCAMP, led == sg.LED_ISO
    mask_g, mask_i = ph.band_masks(times, led, arts)
    out = {
        'times': times[is_g],
        'times_iso': times[is_i],
        'gcamp': values[is_g],
        'iso': values[is_i],
        'gcamp_clean': clean[is_g],
        'iso_clean': clean[is_i],
        'dff': dff[is_g],
        'motion': motion[is_g],
        'artefact': mask_g,
        'artefact_iso': mask_i,
        'artefacts': arts,
        'quality': quality,
        'expected_verdict': art.expected_verdict(quality, moderate),
        'dark_offset': session['dark_offset'],
        'optics': optics,
        'events': events,
        'trials': trials,
    }
    if dark_frames:
        out['times_dark'] = out['times'] - 0.005
        level = np.round((FLOOR + session['dark_offset']) / QUANTUM) * QUANTUM
        out['dark'] = np.full(len(out['times']), level)
    return out
