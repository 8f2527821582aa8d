"""Simulate one session: behaviour, wheel, camera, photometry, metadata and truth.

:func:`simulate_session` is a pure function of the session plan and the mouse
(its random stream comes from the plan's ``seed_key``); it returns the files to
write (relative path -> payload), the Alyx session record and the manifest entry.
"""

import json

import numpy as np
import pandas as pd

from iblnm import config
from iblnm.onecache import session_eid
from iblnm.simulate import artefacts as art
from iblnm.simulate import behaviour as bh
from iblnm.simulate import faults as flt
from iblnm.simulate import kernels as kn
from iblnm.simulate import photometry as ph
from iblnm.simulate import wheel as wh

CAMERA_FS = 60.0  # Hz, left camera
SYNC_CHANNEL = 1  # NPH digital input receiving the Bpod sync TTL
VIDEO_QC_KEYS = ('focus', 'position', 'brightness', 'resolution', 'wheel_alignment')
VIDEO_PROBLEM_KEYS = ('timestamps', 'dropped_frames', 'pin_state')
TASK_COLLECTION = 'alf/task_00'
RAW_TASK_COLLECTION = 'raw_task_data_00'
MIN_TRIALS_BLOCK_FLIPS = bh.FIRST_BLOCK_TRIALS + 25  # the 0.5 block and 25 biased trials


# ---------------------------------------------------------------------------
# Behaviour and trial faults
# ---------------------------------------------------------------------------
def session_behaviour(plan, rng):
    """Trials (with the trial faults applied to the table), extras and fault details."""
    n_trials = int(rng.integers(40, 81)) if plan['fault'] == 'too_few_trials' else None
    if plan['fault'] == 'block_structure_bug':  # the flips need a second block of >= 20 trials
        plan = {**plan, 'min_trials': max(plan.get('min_trials', 0), MIN_TRIALS_BLOCK_FLIPS)}
    trials, extra = bh.session_trials(plan, rng, n_trials=n_trials)
    details = {}
    if plan['fault'] == 'nan_event_times':
        details['nan_fraction'] = flt.inject_nan_first_movement(trials, rng)
    if plan['fault'] == 'block_structure_bug':
        true_pl = np.repeat(extra['block_priors'], extra['block_lengths'])
        corrupted, flipped = flt.inject_block_flips(true_pl, extra['block_lengths'], rng)
        trials['probabilityLeft'] = corrupted
        details['flipped_trials'] = flipped
    return trials, extra, details


def recording_span(plan, trials, rng):
    """First and last photometry frame on the task clock (s).

    The recording starts ``pre_task_s`` before the task clock's zero and stops 3-10 s
    after the last trial (plus 10-120 s of disconnected tail when the session has an end
    edge), or, for ``trials_outside_recording``, 20-40 % of the task before the last
    trial ends.
    """
    first, last = trials['intervals_0'].iloc[0], trials['intervals_1'].iloc[-1]
    stop = last + rng.uniform(3.0, 10.0)
    if plan['fault'] == 'trials_outside_recording':
        stop = last - rng.uniform(0.2, 0.4) * (last - first)
    elif plan.get('mess', {}).get('edge_end'):  # room for the cord being pulled at the end
        stop += rng.uniform(*art.EDGE_END_S) + art.EDGE_RAMP_S[1]
    return -plan['pre_task_s'], float(stop)


def camera_times(plan, trials, rng):
    """Left-camera frame times (s, task clock, ~60 Hz) and the camera-fault details."""
    t0 = -rng.uniform(1.0, 4.0)
    t1 = trials['intervals_1'].iloc[-1] + rng.uniform(1.0, 4.0)
    details = {}
    if plan['camera_fault'] == 'camera_length_mismatch':
        task_s = trials['intervals_1'].iloc[-1]  # never stop before the task starts
        details['stops_before_end_s'] = round(float(min(rng.uniform(150, 400), 0.8 * task_s)), 3)
        t1 = trials['intervals_1'].iloc[-1] - details['stops_before_end_s']
    period = (1 + rng.uniform(-1e-4, 1e-4)) / CAMERA_FS
    n = int((t1 - t0) / period)
    times = t0 + np.arange(n) * period + rng.normal(0, 3e-4, n)
    if plan['camera_fault'] == 'camera_dropped_frames':
        starts = np.sort(
            rng.choice(np.arange(100, n - 100), size=int(rng.integers(8, 16)), replace=False)
        )
        lengths = rng.integers(5, 61, len(starts))
        drop = np.concatenate([np.arange(s, s + k) for s, k in zip(starts, lengths)])
        times = np.delete(times, drop)
        details['n_gaps'], details['n_dropped'] = len(starts), int(len(np.unique(drop)))
    return times, details


# ---------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------
def session_locations(mouse, fault, rng):
    """Fiber locations written for the session (one may be corrupted by the fault)."""
    locations = [f['location'] for f in mouse['fibers']]
    details = {}
    if fault in ('unknown_brain_region', 'hemisphere_mismatch'):
        i = int(rng.integers(len(locations)))
        details = {'roi': mouse['fibers'][i]['roi'], 'true_location': locations[i]}
        locations[i] = flt.corrupt_location(locations[i], fault, rng)
        details['written_location'] = locations[i]
    return locations, details


def wall_clock(plan, trials, rng):
    """Alyx start/end times (ISO 8601) and the task time of the start (s)."""
    t_start = -rng.uniform(5.0, 40.0)
    t_end = trials['intervals_1'].iloc[-1] + rng.uniform(5.0, 20.0)
    start = pd.Timestamp(plan['date']) + pd.Timedelta(seconds=plan['start_clock_s'])
    end = start + pd.Timedelta(seconds=t_end - t_start)
    return start.isoformat(timespec='microseconds'), end.isoformat(timespec='microseconds'), t_start


def extended_qc(camera_fault, rng):
    """Alyx ``extended_qc`` of the session (video QC outcomes), as a dict."""
    qc = {'task': 'PASS', 'videoLeft': 'PASS'}
    for key in VIDEO_QC_KEYS:
        qc[f'_videoLeft_{key}'] = str(rng.choice(['PASS', 'WARNING', 'FAIL'], p=[0.75, 0.2, 0.05]))
    for key in VIDEO_PROBLEM_KEYS:
        qc[f'_videoLeft_{key}'] = 'PASS'
    qc['_videoLeft_framerate'] = 'PASS'
    if camera_fault == 'camera_dropped_frames':
        qc['_videoLeft_dropped_frames'] = 'FAIL'
        qc['videoLeft'] = 'FAIL'
    return qc


def session_json(plan, trials, extra):
    """Alyx session ``json``: rig settings, trial positions and (biased/ephys) block lengths."""
    is_left = trials['contrastLeft'].notna().to_numpy()
    out = {
        'IBLRIG_VERSION': plan['task_protocol'].rsplit('ChoiceWorld', 1)[1],
        'PYBPOD_PROTOCOL': plan['task_protocol'].rsplit('ChoiceWorld', 1)[0] + 'ChoiceWorld',
        'NTRIALS': len(trials),
        'POSITIONS': np.where(is_left, -35, 35).tolist(),
    }
    if plan['session_type'] in config.BLOCK_SESSION_TYPES:
        out['LEN_BLOCKS'] = [int(n) for n in extra['block_lengths']]
        out['BLOCK_PROBABILITY_SET'] = [0.2, 0.8]
    return out


def experiment_description(plan, fibers, locations, start_iso):
    """``_ibl_experiment.description.yaml`` content with the photometry device block."""
    protocol = plan['task_protocol'].rsplit('ChoiceWorld', 1)[0] + 'ChoiceWorld'
    return {
        'devices': {
            'cameras': {'left': {'collection': 'raw_video_data', 'sync_label': 'audio'}},
            'microphone': {
                'microphone': {'collection': RAW_TASK_COLLECTION, 'sync_label': 'audio'}
            },
            'neurophotometrics': {
                'collection': 'raw_photometry_data',
                'datetime': start_iso,
                'fibers': {f['roi']: {'location': loc} for f, loc in zip(fibers, locations)},
                'sync_channel': SYNC_CHANNEL,
                'sync_mode': 'bpod',
            },
        },
        'procedures': ['Behavior training/tasks', 'Fiber photometry'],
        'projects': [config.PROJECT_NAME],
        'sync': {
            'bpod': {
                'acquisition_software': 'pybpod',
                'collection': RAW_TASK_COLLECTION,
                'extension': '.jsonable',
            }
        },
        'tasks': [{protocol: {'collection': RAW_TASK_COLLECTION, 'sync_label': 'bpod'}}],
        'version': '1.0.0',
    }


def _state(t, t0, dur=0.0001):
    return [[float(t - t0), float(t - t0 + dur)]] if np.isfinite(t) else [[np.nan, np.nan]]


def task_data_lines(trials, extra):
    """``_iblrig_taskData.raw.jsonable``: one JSON dict per trial (Bpod times in s)."""
    pl = np.repeat(extra['block_priors'], extra['block_lengths'])
    lines = []
    for i, tr in enumerate(trials.itertuples(index=False)):
        left = np.isfinite(tr.contrastLeft)
        t0 = tr.intervals_0
        correct, nogo = tr.feedbackType == 1, tr.choice == 0
        states = {
            'trial_start': _state(t0, t0),
            'stim_on': _state(tr.stimOn_times, t0, 0.1),
            'reward': _state(tr.feedback_times if correct else np.nan, t0, 0.05),
            'error': _state(tr.feedback_times if not correct and not nogo else np.nan, t0),
            'no_go': _state(tr.feedback_times if nogo else np.nan, t0),
            'exit_state': _state(tr.intervals_1, t0, 0.0),
        }
        lines.append(
            {
                'trial_num': i + 1,
                'stim_probability_left': float(pl[i]),
                'contrast': float(tr.contrastLeft if left else tr.contrastRight),
                'position': -35 if left else 35,
                'trial_correct': bool(correct),
                'response_side': int(tr.choice),
                'response_time': float(tr.response_times - tr.stimOn_times),
                'reward_amount': float(tr.rewardVolume),
                'behavior_data': {
                    'Bpod start timestamp': 0.0,
                    'Trial start timestamp': float(t0),
                    'Trial end timestamp': float(tr.intervals_1),
                    'States timestamps': states,
                },
            }
        )
    return lines


# ---------------------------------------------------------------------------
# One session
# ---------------------------------------------------------------------------
def session_files(plan, mouse, trials, extra, frames, locations, description, rng):
    """Relative path -> payload of every dataset of the session (faults leave some out)."""
    wheel_t, wheel_pos = wh.simulate_wheel(
        trials, extra, 0.0, trials['intervals_1'].iloc[-1] + 1.0, rng
    )
    files = {
        '_ibl_experiment.description.yaml': description,
        f'{RAW_TASK_COLLECTION}/_iblrig_taskData.raw.jsonable': task_data_lines(trials, extra),
        f'{TASK_COLLECTION}/_ibl_trials.table.pqt': trials,
        f'{TASK_COLLECTION}/_ibl_wheel.position.npy': wheel_pos,
        f'{TASK_COLLECTION}/_ibl_wheel.timestamps.npy': wheel_t,
        'raw_photometry_data/_neurophotometrics_fpData.raw.pqt': ph.raw_table(frames, rng),
        'raw_photometry_data/_neurophotometrics_fpData.digitalInputs.pqt': ph.digital_inputs(
            trials, frames, SYNC_CHANNEL, rng
        ),
        'alf/photometry/photometry.signal.pqt': ph.extracted_table(frames, trials),
        'alf/photometry/photometryROI.locations.pqt': ph.locations_table(
            mouse['fibers'], locations
        ),
    }
    if plan['fault'] == 'missing_photometry':
        del files['alf/photometry/photometry.signal.pqt']
    if plan['fault'] == 'missing_trials':
        del files[f'{TASK_COLLECTION}/_ibl_trials.table.pqt']
    return files


def simulate_session(plan, mouse):
    """Generate one session.

    Parameters
    ----------
    plan : dict
        Session plan from :func:`iblnm.simulate.cohort.plan_cohort`.
    mouse : dict
        The session's mouse (fibers, NM, genetics).

    Returns
    -------
    dict
        ``eid``, ``files`` (rel path -> DataFrame / ndarray / dict / list of dict),
        ``truth`` (arrays for ``ground_truth/{eid}.npz``), ``alyx`` (session record)
        and ``manifest`` (the manifest entry).
    """
    rng = np.random.default_rng(plan['seed_key'])
    plan = {**plan, 'NM': mouse['NM']}
    eid = session_eid(plan['lab'], plan['subject'], plan['date'], plan['number'])
    trials, extra, fault_details = session_behaviour(plan, rng)
    span = recording_span(plan, trials, rng)
    frames, truth, fiber_info = ph.simulate_photometry(
        plan, mouse['fibers'], trials, extra, span, rng
    )
    fault_details.update(frames['fault_details'])
    roi = ph.apply_roi_fault(frames, plan['fault'], rng)
    if roi:
        fault_details['roi'] = roi
        ph.mark_roi_fault(fiber_info, truth, roi, plan['fault'])
    locations, loc_details = session_locations(mouse, plan['fault'], rng)
    fault_details.update(loc_details)
    start_iso, end_iso, t_alyx = wall_clock(plan, trials, rng)
    cam_t, cam_details = camera_times(plan, trials, rng)
    description = experiment_description(plan, mouse['fibers'], locations, start_iso)
    files = session_files(plan, mouse, trials, extra, frames, locations, description, rng)
    files['alf/_ibl_leftCamera.times.npy'] = cam_t
    qc = extended_qc(plan['camera_fault'], rng)
    alyx = alyx_session_record(eid, plan, start_iso, end_iso, qc, session_json(plan, trials, extra))
    manifest = manifest_entry(
        eid, plan, mouse, trials, extra, frames, locations, fiber_info, fault_details, cam_details
    )
    manifest.update(
        {'start_time': start_iso, 'end_time': end_iso, 'task_start_in_session_s': -t_alyx}
    )
    manifest['camera'] = {
        'n_frames': len(cam_t),
        'first_s': float(cam_t[0]),
        'last_s': float(cam_t[-1]),
    }
    manifest['datasets'] = sorted(files)
    return {'eid': eid, 'files': files, 'truth': truth, 'alyx': alyx, 'manifest': manifest}


def alyx_session_record(eid, plan, start_iso, end_iso, qc, session_info):
    """Alyx session record (columns of ``onecache.SESSION_RECORD_COLUMNS``)."""
    return {
        'id': eid,
        'subject': plan['subject'],
        'lab': plan['lab'],
        'start_time': start_iso,
        'end_time': end_iso,
        'number': int(plan['number']),
        'task_protocol': plan['task_protocol'],
        'projects': [config.PROJECT_NAME],
        'users': ['nm_user_a'],
        'qc': 'FAIL' if plan['fault'] else ('WARNING' if plan['camera_fault'] else 'PASS'),
        'extended_qc': json.dumps(qc),
        'json': json.dumps(session_info),
    }


def _fiber_manifest(fiber, location, nm, info):
    region = location.rsplit('-', 1)[0]
    return {
        'ROI': fiber['roi'],
        'fiber': fiber['fiber'],
        'brain_region': location,
        'hemisphere': fiber['hemisphere'],
        'true_brain_region': fiber['location'],
        'target_NM': f'{region}-{nm}',
        'gain': fiber['gain'],
        'X-ml_um': fiber['X-ml_um'],
        **info,
    }


def manifest_entry(eid, plan, mouse, trials, extra, frames, locations, fiber_info, details, cam):
    """Manifest entry of a session (JSON-serialisable; units in the key docs)."""
    fault = plan['fault']
    return {
        'eid': eid,
        'lab': plan['lab'],
        'subject': plan['subject'],
        'date': plan['date'],
        'number': int(plan['number']),
        'session_type': plan['session_type'],
        'task_protocol': plan['task_protocol'],
        'NM': mouse['NM'],
        'line': mouse['line'],
        'strain': mouse['strain'],
        'fibers': [
            _fiber_manifest(f, loc, mouse['NM'], info)
            for f, loc, info in zip(mouse['fibers'], locations, fiber_info)
        ],
        'n_trials': len(trials),
        'duration_s': round(
            float(trials['intervals_1'].iloc[-1] - trials['intervals_0'].iloc[0]), 3
        ),
        'contrast_set': plan['contrast_set'],
        'block_lengths': [int(n) for n in extra['block_lengths']],
        'block_priors': [float(p) for p in extra['block_priors']],
        'faults': [fault] if fault else [],
        'fault_details': details,
        'expected_errors': flt.expected_errors(fault, plan['camera_fault']),
        'camera_faults': [plan['camera_fault']] if plan['camera_fault'] else [],
        'camera_fault_details': cam,
        'psychometrics': plan['psychometrics'],
        'reaction_time': {'median_at_100pct_s': plan['rt_fast'], 'nogo_rate': plan['nogo_rate']},
        'kernels': kn.NM_KERNELS[mouse['NM']],
        'effect_signs': kn.effect_signs(mouse['NM']),
        'noise': {
            'noise_rel': plan['noise_rel'],
            'spontaneous_sd': kn.SPONTANEOUS_SD,
            'trial_gain_sd': kn.TRIAL_GAIN_SD,
        },
        'recording': {
            'first_frame_s': float(frames['times'][0]),
            'last_frame_s': float(frames['times'][-1]),
            'n_frames': len(frames['times']),
            'clock_a': frames['clock']['a'],
            'clock_b': frames['clock']['b'],
            **frames['led_flags'],
        },
    }
