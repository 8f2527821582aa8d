"""Fault catalogue: what each injected fault does and which typed errors it must cause.

Each pipeline fault is injected in exactly one way (see :data:`FAULTS`) and in
at most one per session, so the errors a session must log are unambiguous. The
expected errors follow the catalog stage's root-cause rule: a check whose input
already failed is not logged again, so a location outside ``VALID_TARGETS`` logs
``InvalidBrainRegion`` only (not the ``MissingInsertion`` and ``InvalidTargetNM`` that
follow from it), and a subject without strain and line logs ``InvalidStrain``,
``InvalidLine`` and ``InvalidNeuromodulator`` but not ``InvalidTargetNM``.

The functions below mutate generated data in place of the clean version; they
take and return numpy arrays / DataFrames and know nothing about files.
"""

import numpy as np

FLOOR = 1.0 / 255.0  # "no light" camera level of the NPH ROIs (normalised intensity)
QUANTUM = 2.0**-23  # intensity step of the simulated ROI means (≈ 1.19e-7)
UNKNOWN_REGION = 'CA1'  # a location outside config.VALID_TARGETS

STAGES = ('query_database', 'photometry', 'task')

# fault -> (expected errors per stage, session types it may be injected in, what it does)
FAULTS = {
    'band_inversion': {
        'errors': {'photometry': ['QCValidationError']},
        'session_types': None,
        'description': 'the 470/415 alternation breaks (two consecutive frames of one LED) '
        'in the raw and the extracted photometry',
    },
    'early_samples': {
        'errors': {'photometry': ['QCValidationError']},
        'session_types': None,
        'description': 'a few frame intervals are 2-6 ms shorter than the median',
    },
    'dead_channel': {
        'errors': {'photometry': ['FewUniqueSamples']},
        'session_types': None,
        'description': 'one ROI sits at the 1/255 floor with a few quantised values (both bands)',
    },
    'saturated_channel': {
        'errors': {'photometry': ['FewUniqueSamples']},
        'session_types': None,
        'description': 'one ROI is clipped at 1.0 in both bands (rare noise dips below)',
    },
    'trials_outside_recording': {
        'errors': {'photometry': ['TrialsNotInPhotometryTime']},
        'session_types': None,
        'description': 'the photometry recording stops 20-40 % of the task before the last trial',
    },
    'missing_photometry': {
        'errors': {
            'query_database': ['DataNotListed'],
            'photometry': ['MissingExtractedData'],
        },
        'session_types': None,
        'description': 'alf/photometry/photometry.signal.pqt is absent (raw file present)',
    },
    'missing_trials': {
        'errors': {
            'query_database': ['DataNotListed'],
            'photometry': ['MissingExtractedData'],
            'task': ['MissingExtractedData'],
        },
        'session_types': None,
        'description': 'alf/task_00/_ibl_trials.table.pqt is absent (raw task data and wheel present)',
    },
    'nan_event_times': {
        'errors': {
            'photometry': ['IncompleteEventTimes'],
            'task': ['IncompleteEventTimes'],
        },
        'session_types': None,
        'description': '20-35 % of firstMovement_times are NaN in the trials table',
    },
    'too_few_trials': {
        'errors': {
            'photometry': ['InsufficientTrials'],
            'task': ['InsufficientTrials'],
        },
        'session_types': ('training',),
        'description': 'the mouse stops after 40-80 trials (< MIN_NTRIALS)',
    },
    'block_structure_bug': {
        'errors': {'task': ['BlockStructureBug']},
        'session_types': ('biased', 'ephys'),
        'description': 'probabilityLeft in the trials table flips for 3-7 trials inside '
        'two blocks (the behaviour and the session JSON follow the true blocks)',
    },
    'unknown_brain_region': {
        'errors': {
            'query_database': ['InvalidBrainRegion'],
        },
        'session_types': None,
        'description': "one fiber location is 'CA1-<hemi>' (not in VALID_TARGETS) in the "
        'experiment description and the ROI locations table',
    },
    'hemisphere_mismatch': {
        'errors': {'query_database': ['HemisphereMismatch']},
        'session_types': None,
        'description': "one fiber location carries the wrong '-l'/'-r' suffix with respect "
        'to X-ml_um in alyx/fibers.pqt',
    },
    'missing_strain_line': {
        'errors': {
            'query_database': [
                'InvalidLine',
                'InvalidNeuromodulator',
                'InvalidStrain',
            ],
        },
        'session_types': None,
        'description': 'the subject record has strain and line None (a dedicated extra mouse; '
        'all of its sessions)',
    },
}

# Faults that are injected per session (missing_strain_line belongs to a mouse).
SESSION_FAULTS = tuple(f for f in FAULTS if f != 'missing_strain_line')

CAMERA_FAULTS = {
    'camera_dropped_frames': {
        'video_errors': ['VideoDroppedFramesQCError'],
        'description': 'gaps of 5-60 frames in the left camera timestamps; '
        "extended_qc _videoLeft_dropped_frames = 'FAIL'",
    },
    'camera_length_mismatch': {
        'video_errors': ['VideoLengthError'],
        'description': 'the left camera stops 150-400 s before the end of the session '
        '(length_discrepancy < -120 s)',
    },
}


def expected_errors(fault=None, camera_fault=None):
    """Typed errors (class names) each pipeline stage must log for a session.

    Parameters
    ----------
    fault : str or None
        Pipeline fault of the session (key of :data:`FAULTS`).
    camera_fault : str or None
        Camera fault of the session (key of :data:`CAMERA_FAULTS`).

    Returns
    -------
    dict
        ``{'query_database': [...], 'photometry': [...], 'task': [...], 'video': [...]}``,
        each a sorted list of exception class names (empty for a clean session).
    """
    errors = {stage: [] for stage in STAGES}
    if fault is not None:
        for stage, names in FAULTS[fault]['errors'].items():
            errors[stage] = sorted(names)
    errors['video'] = sorted(CAMERA_FAULTS[camera_fault]['video_errors']) if camera_fault else []
    return errors


# ---------------------------------------------------------------------------
# Trials-table faults
# ---------------------------------------------------------------------------
def inject_nan_first_movement(trials, rng, fraction=(0.2, 0.35)):
    """Set a random 20-35 % of ``firstMovement_times`` to NaN (in place); return the fraction."""
    n = len(trials)
    n_nan = int(np.ceil(rng.uniform(*fraction) * n))
    idx = rng.choice(n, size=n_nan, replace=False)
    col = trials.columns.get_loc('firstMovement_times')
    trials.iloc[idx, col] = np.nan
    return float(trials['firstMovement_times'].isna().mean())


def inject_block_flips(p_left, block_lengths, rng, n_flips=2):
    """Flip probabilityLeft for 3-7 trials inside ``n_flips`` long blocks.

    Parameters
    ----------
    p_left : ndarray, shape (n_trials,)
        True block prior per trial (0.5, 0.2 or 0.8).
    block_lengths : list of int
        True block lengths (trials), first block = the 0.5 block.
    rng : numpy.random.Generator

    Returns
    -------
    corrupted : ndarray, shape (n_trials,)
        probabilityLeft as written in the trials table.
    flipped : list of [int, int]
        [first trial, n trials] of each flipped stretch.
    """
    corrupted = p_left.copy()
    starts = np.concatenate([[0], np.cumsum(block_lengths)[:-1]])
    candidates = [i for i in range(1, len(block_lengths)) if block_lengths[i] >= 20]
    if not candidates:
        raise ValueError(f'no biased block of >= 20 trials to corrupt in {list(block_lengths)}')
    chosen = rng.choice(candidates, size=min(n_flips, len(candidates)), replace=False)
    flipped = []
    for block in sorted(chosen):
        length = int(rng.integers(3, 8))
        first = int(starts[block] + rng.integers(5, block_lengths[block] - length - 4))
        corrupted[first : first + length] = np.round(1 - p_left[first], 1)
        flipped.append([first, length])
    return corrupted, flipped


# ---------------------------------------------------------------------------
# Photometry faults (act on the frame clock, LED codes and ROI values)
# ---------------------------------------------------------------------------
def inject_band_inversions(led_codes, rng, n_inversions=(1, 4)):
    """Break the LED alternation by swapping the phase after 1-3 random frames.

    ``led_codes`` (ndarray of int, shape (n_frames,); frame 0 is the all-LED frame) is
    modified in place. Returns the sorted frame indices where a repeat starts.
    """
    n = len(led_codes)
    k = int(rng.integers(*n_inversions))
    breaks = np.sort(rng.choice(np.arange(n // 10, n - n // 10), size=k, replace=False))
    for b in breaks:
        tail = led_codes[b:]
        led = tail & 7
        tail[:] = tail - led + np.where(led == 1, 2, np.where(led == 2, 1, led))
    return [int(b) for b in breaks]


def inject_early_frames(sys_times, rng, n_frames=(3, 7), shift_s=(0.002, 0.006)):
    """Move 3-6 frames 2-6 ms earlier (in place) so their interval is short.

    Parameters
    ----------
    sys_times : ndarray, shape (n_frames,)
        Frame times on the Neurophotometrics clock (s), modified in place.

    Returns
    -------
    list of int
        Indices of the early frames.
    """
    n = len(sys_times)
    k = int(rng.integers(*n_frames))
    idx = np.sort(rng.choice(np.arange(n // 10, n - n // 10), size=k, replace=False))
    sys_times[idx] -= rng.uniform(*shift_s, size=k)
    return [int(i) for i in idx]


def dead_roi_values(n_frames, rng):
    """ROI values of a dead fiber: the 1/255 floor plus 0-3 quantisation steps.

    Returns
    -------
    ndarray, shape (n_frames,)
        Intensities (normalised 0-1) with at most 4 unique values.
    """
    steps = np.minimum(rng.poisson(0.3, size=n_frames), 3)
    return FLOOR + steps * QUANTUM


def saturate_roi_values(values, rng, level=(1.03, 1.06), noise_sd=0.015):
    """Clip a ROI at 1.0: a bright level with noise, a few samples dip below 1.

    Returns
    -------
    ndarray, shape like ``values``
        Intensities in (0, 1]; almost all exactly 1.0.
    """
    bright = rng.uniform(*level) * (1 + noise_sd * rng.standard_normal(values.shape))
    return np.minimum(np.round(bright / QUANTUM) * QUANTUM, 1.0)


def corrupt_location(location, fault, rng):
    """Location string with a wrong region or hemisphere suffix ('VTA-r' -> 'CA1-r' / 'VTA-l')."""
    region, hemi = location.rsplit('-', 1)
    if fault == 'unknown_brain_region':
        return f'{UNKNOWN_REGION}-{hemi}'
    if fault == 'hemisphere_mismatch':
        return f'{region}-{"l" if hemi == "r" else "r"}'
    return location
