"""Paths, constants, QC thresholds and parameter sets of the iblnm pipeline.

This module knows nothing else in the package. Every number a stage or an
analysis uses lives here so that it can be read, cited and recorded with the
outputs. Units are given in the comments (s = seconds, Hz = hertz, % = percent).

Output paths (``SESSIONS_FPATH``, ``SESSIONS_H5_DIR`` ...) are :class:`iblnm.settings.LazyPath`
names resolved from the run's settings each time they are used (``IBLNM_ROOT``, the
command line, ``iblnm.toml``; see :mod:`iblnm.settings`), never at import.
"""

import os

from iblnm import settings as _settings

# ---------------------------------------------------------------------------
# Paths: resolved from the run's settings when used (iblnm.settings), never at import
# ---------------------------------------------------------------------------
PACKAGE_DIR = _settings.PACKAGE_DIR
PROJECT_ROOT = _settings.LazyPath('PROJECT_ROOT', lambda: _settings.current().root)
# every output location, {root}/<relative path of iblnm.settings.LAYOUT>
_at = _settings.layout_path
METADATA_DIR = _at('METADATA_DIR')
DATA_DIR = _at('DATA_DIR')
RESULTS_DIR = _at('RESULTS_DIR')
FIGURES_DIR = _at('FIGURES_DIR')
SESSIONS_FPATH = _at('SESSIONS_FPATH')
SESSIONS_QC_FPATH = _at('SESSIONS_QC_FPATH')
RECORDINGS_FPATH = _at('RECORDINGS_FPATH')  # one row per session x fiber (iblnm.recordings)
INSERTIONS_FPATH = _at('INSERTIONS_FPATH')
QUERY_DATABASE_LOG_FPATH = _at('QUERY_DATABASE_LOG_FPATH')
PHOTOMETRY_LOG_FPATH = _at('PHOTOMETRY_LOG_FPATH')
TASK_LOG_FPATH = _at('TASK_LOG_FPATH')
WHEEL_LOG_FPATH = _at('WHEEL_LOG_FPATH')
ERRORS_FPATH = _at('ERRORS_FPATH')
QC_VERDICTS_FPATH = _at('QC_VERDICTS_FPATH')  # recordings per target-NM, verdict, reason
VIDEO_FPATH = _at('VIDEO_FPATH')
VIDEO_LOG_FPATH = _at('VIDEO_LOG_FPATH')
QCPHOTOMETRY_FPATH = _at('QCPHOTOMETRY_FPATH')
PERFORMANCE_FPATH = _at('PERFORMANCE_FPATH')
EVENTS_FPATH = _at('EVENTS_FPATH')
TRIAL_TIMING_FPATH = _at('TRIAL_TIMING_FPATH')
PEAK_VELOCITY_FPATH = _at('PEAK_VELOCITY_FPATH')
SESSIONS_H5_DIR = _at('SESSIONS_H5_DIR')
NWB_DIR = _at('NWB_DIR')  # one NWB file per session, DANDI layout (iblnm export_nwb)
NWB_EXPORT_FPATH = _at('NWB_EXPORT_FPATH')
NWB_LOG_FPATH = _at('NWB_LOG_FPATH')
RESPONSES_DIR = _at('RESPONSES_DIR')
RESPONSES_FPATH = _at('RESPONSES_FPATH')
RESPONSE_MATRIX_FPATH = _at('RESPONSE_MATRIX_FPATH')
SIMILARITY_MATRIX_FPATH = _at('SIMILARITY_MATRIX_FPATH')
RESPONSE_SIMILARITY_FPATH = _at('RESPONSE_SIMILARITY_FPATH')
TASK_ENCODING_DIR = _at('TASK_ENCODING_DIR')
MOVEMENT_ENCODING_DIR = _at('MOVEMENT_ENCODING_DIR')
QC_OVERVIEW_FIGURES_DIR = _at('QC_OVERVIEW_FIGURES_DIR')
QC_OVERVIEW_DIR = _at('QC_OVERVIEW_DIR')
TASK_PERFORMANCE_FIGURES_DIR = _at('TASK_PERFORMANCE_FIGURES_DIR')
TASK_PERFORMANCE_DIR = _at('TASK_PERFORMANCE_DIR')
EXAMPLE_SESSION_FIGURES_DIR = _at('EXAMPLE_SESSION_FIGURES_DIR')
SESSION_VIEWER_FIGURES_DIR = _at('SESSION_VIEWER_FIGURES_DIR')
DEMO_CACHE_DIR = _at('DEMO_CACHE_DIR')
# the user's {root}/metadata/fibers.csv, else the template shipped with the package
FIBERS_FPATH = _settings.LazyPath('FIBERS_FPATH', lambda: _settings.current().fibers_fpath)
# Error log of each pipeline stage that has one, in stage order.
STAGE_LOG_FPATHS = {
    'query_database': QUERY_DATABASE_LOG_FPATH,
    'photometry': PHOTOMETRY_LOG_FPATH,
    'task': TASK_LOG_FPATH,
    'wheel': WHEEL_LOG_FPATH,
    'video': VIDEO_LOG_FPATH,
}

# Real IBL recordings used by tests (never copied into the repository).
REAL_DATA_DIR = _settings.LazyPath(
    'REAL_DATA_DIR',
    lambda: os.environ.get(
        'IBLNM_REAL_DATA', PACKAGE_DIR.parent.parent / 'shared' / 'data' / 'real'
    ),
)

# ---------------------------------------------------------------------------
# ONE / Alyx
# ---------------------------------------------------------------------------
PROJECT_NAME = 'ibl_fibrephotometry'
# Local ONE cache used when no Alyx is configured: DEMO_CACHE_DIR (layout; IBLNM_DEMO_CACHE).
# Sub-folder of a local cache holding the Alyx records ONE's tables do not carry
# (subjects with strain/line/genotype; session details with start/end time and users).
ALYX_RECORDS_DIRNAME = 'alyx'
# Sub-folder of a simulated cache holding the generator's ground truth.
GROUND_TRUTH_DIRNAME = 'ground_truth'

# ---------------------------------------------------------------------------
# Session catalog schema: column -> (type, default)
# ---------------------------------------------------------------------------
SESSION_SCHEMA = {
    'eid': (str, None),
    'subject': (str, None),
    'start_time': (str, None),
    'number': (int, None),
    'task_protocol': (str, None),
    'strain': (str, None),
    'line': (str, None),
    'genotype': (str, None),
    'NM': (str, None),
    'lab': (str, None),
    'end_time': (str, None),
    'session_type': (str, None),
    'projects': (list, []),
    'brain_region': (list, []),
    'hemisphere': (list, []),
    'users': (list, []),
    '_datasets_from_session_dict': (list, []),
    'datasets': (list, []),
    'target_NM': (list, []),
}
PARALLEL_LIST_COLUMNS = ('brain_region', 'hemisphere', 'target_NM')

# ---------------------------------------------------------------------------
# Subjects, strains, lines, neuromodulators
# ---------------------------------------------------------------------------
SUBJECTS_TO_EXCLUDE = [
    'SP076',
    'SP075',
    'SP074',
    'SP073',
    'SP072',
    'SP066',
    'VIV-47627',
    'VIV-47615',
    'VIV-45598',
    'VIV-45585',
    'photometry_test_subject_A',
    'photometry_test_subject_B',
    'test_mouse',
]

VALID_STRAINS = [
    'B6.Cg',
    'B6.129S2',
    'B6J.Cg-Gt',
    'B6.Cg-Igs7',
    'C57BL/6J',
    'B6.129(Cg)-Slc6a4',
    'B6.SJL-Slc6a3t',
    'B6;129S6-Chat',
    'B6.Cg-Dbh',
]

STRAIN2NM = {
    'Ai148xSERTCre': '5HT',
    'Ai148xDATCre': 'DA',
    'Ai148xDbhCre': 'NE',
    'Ai148xDbh-Cre': 'NE',
    'Ai148xTHCre': 'NE',
    'Ai148xChATCre': 'ACh',
    'Ai95xSERTCre': '5HT',
}

VALID_LINES = ['Ai148xSert', 'Ai148xDat', 'Ai148xDbh', 'Ai148xTh', 'Ai148xChat', 'Ai148cdhxChat']

LINE2NM = {
    'Ai148xSert': '5HT',
    'Ai148xDat': 'DA',
    'Ai148xDbh': 'NE',
    'Ai148xTh': 'NE',
    'Ai148xChat': 'ACh',
    'Ai148cdhxChat': 'ACh',
    'Ai148-G6f-cdh x Chat-cre': 'ACh',
}

# NM names the Cre-defined population expressing GCaMP, never a transmitter sensor.
VALID_NEUROMODULATORS = ['DA', '5HT', 'NE', 'ACh']

# ---------------------------------------------------------------------------
# Brain regions and target-NM labels
# ---------------------------------------------------------------------------
# NAc (dopamine axon terminals) is an addition to the original list: the project records there too.
VALID_TARGETS = ['VTA', 'SNc', 'NAc', 'DR', 'MR', 'LC', 'NBM', 'SI', 'PPT']
TARGET2NM = {
    'VTA': 'DA',
    'SNc': 'DA',
    'NAc': 'DA',
    'DR': '5HT',
    'MR': '5HT',
    'LC': 'NE',
    'NBM': 'ACh',
    'SI': 'ACh',
    'PPT': 'ACh',
}
VALID_TARGETNMS = [
    'VTA-DA',
    'SNc-DA',
    'NAc-DA',
    'DR-5HT',
    'MR-5HT',
    'LC-NE',
    'NBM-ACh',
    'SI-ACh',
    'PPT-ACh',
]
TARGETNMS_TO_ANALYZE = ['VTA-DA', 'SNc-DA', 'DR-5HT', 'LC-NE', 'NBM-ACh']
REGION_NAME_FIXES = {'DRN': 'DR', 'SNC': 'SNc'}  # applied wherever a location is read
HEMISPHERES = ('l', 'r')
# Midline nuclei: one nucleus astride the midline, so a fiber in it is lateral to no side
# (neither contra- nor ipsilateral to any stimulus), whatever its ML offset (a DR fiber 200 µm
# off the midline is still in the DR). The other targets are bilateral (one per hemisphere).
MIDLINE_REGIONS = ('DR', 'MR')

# ---------------------------------------------------------------------------
# Datasets: category -> accepted relative paths (any one satisfies the category)
# ---------------------------------------------------------------------------
DATASET_CATEGORIES = {
    'raw_task': [
        'raw_behavior_data/_iblrig_taskData.raw.jsonable',
        'raw_task_data_00/_iblrig_taskData.raw.jsonable',
    ],
    'raw_video': ['raw_video_data/_iblrig_leftCamera.raw.mp4'],
    'raw_photometry_channels': ['raw_photometry_data/_neurophotometrics_fpData.channels.csv'],
    'raw_photometry_signals': ['raw_photometry_data/_neurophotometrics_fpData.raw.pqt'],
    'extracted_task': ['alf/_ibl_trials.table.pqt', 'alf/task_00/_ibl_trials.table.pqt'],
    'extracted_wheel': ['alf/_ibl_wheel.position.npy', 'alf/task_00/_ibl_wheel.position.npy'],
    'extracted_photometry_signal': ['alf/photometry/photometry.signal.pqt'],
    'extracted_photometry_locations': ['alf/photometry/photometryROI.locations.pqt'],
}
# Categories whose absence is logged as DataNotListed by the catalog stage. Raw video and the
# channels csv are not required: the extracted photometry carries the channel labels.
REQUIRED_DATASET_CATEGORIES = (
    'raw_task',
    'raw_photometry_signals',
    'extracted_task',
    'extracted_photometry_signal',
)

# ---------------------------------------------------------------------------
# Session types
# ---------------------------------------------------------------------------
SESSION_TYPES = [
    'habituation',
    'training',
    'advanced',
    'neuromodulator',
    'biased',
    'ephys',
    'passive',
    'histology',
]
SESSION_TYPES_TO_ANALYZE = ('training', 'biased', 'ephys')
BLOCK_SESSION_TYPES = ('biased', 'ephys')  # sessions with 20/80 probability blocks
EXCLUDE_SESSION_TYPES = (
    'habituation',
    'advanced',
    'neuromodulator',
    'passive',
    'misc',
    'histology',
)
PROTOCOL_RED_FLAGS = ('RPE', 'DELAY', 'delay')

# ---------------------------------------------------------------------------
# Sampling and events
# ---------------------------------------------------------------------------
TARGET_FS = 30  # Hz, preprocessed photometry
WHEEL_FS = 100  # Hz, per-trial wheel velocity
RESPONSE_EVENTS = ['stimOn_times', 'firstMovement_times', 'feedback_times']
EVENT_COMPLETENESS_THRESHOLD = 0.9  # fraction of non-NaN event times required
# Photometry is restricted to the task: [first trial start + PRE, last trial end + POST] (s).
PHOTOMETRY_RESTRICT_PRE = -5.0
PHOTOMETRY_RESTRICT_POST = 5.0
# Missing frames: an interval longer than this many median intervals is a time gap (frames
# not recorded: acquisition paused, frames lost). PhotometrySession.load_photometry fills
# each gap with NaN frames at the median interval, so that filters (index-based) see the
# real time and the gap is masked ('missing' artefact kind), never interpolated over.
PHOTOMETRY_GAP_FACTOR = 3.0

# ---------------------------------------------------------------------------
# Failures: retries of transient errors, free space before an HDF5 write
# ---------------------------------------------------------------------------
# A session failing on a request, download or I/O error is run up to RETRY_ATTEMPTS times
# per run, RETRY_BACKOFF_S s apart, doubled after each attempt (1 s, 2 s: a short outage
# or a busy server); after that it is left for the next run (never marked done).
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 1.0  # s
# An HDF5 file is written only with this much free space (bytes) on its disk beyond its
# expected size: a full disk makes libhdf5 crash the interpreter instead of raising.
MIN_FREE_BYTES = 200 * 1024**2

# ---------------------------------------------------------------------------
# Behaviour QC and performance
# ---------------------------------------------------------------------------
MIN_NTRIALS = 90
MIN_BLOCK_LENGTH = 10  # trials
MIN_PERFORMANCE = {'training': 0.70}
REQUIRED_CONTRASTS = frozenset({0, 6.25, 12.5, 25, 100})  # %
EASY_CONTRAST = 100  # %, contrast of the "easy" trials in fraction_correct_easy
ANALYSIS_CONTRASTS = [0, 6.25, 12.5, 25, 100]  # %

# Blockers (which upstream errors stop a stage or an analysis) are tuples of exception classes:
# validation.PHOTOMETRY_BLOCKERS, VIDEO_BLOCKERS, ANALYSIS_QC_BLOCKERS.


EIDS_TO_DROP = [  # huge photometry artefacts (IBL sessions); PhotometrySessionGroup drops them
    'cd9d071e-c798-4900-891f-b65640ec22b1',
    '16aa7570-578f-4daa-8244-844716fb1320',
    'f4f1d7fe-d7c8-442b-a7d6-e214223febaf',
    'a60531cd-e1e8-4b3b-b4d9-94b76ccc69c2',
    '1c09046e-48d8-47f3-9d07-2241e3f3a136',
]

# ---------------------------------------------------------------------------
# Photometry QC
# ---------------------------------------------------------------------------
QC_RAW_METRICS = ['n_early_samples', 'n_band_inversions', 'n_dropped_frames']
# 1 on the rows of a fiber dropped at load (all NaN, constant or no column: BadFiber,
# MissingFiber), NaN otherwise: the verdict counts it as FAIL (rule 'dropped_fiber')
QC_LOAD_METRICS = ['dropped_fiber']
QC_SLIDING_METRICS = [
    'n_unique_samples',
    'median_absolute_deviance',
    'percentile_distance',
    'percentile_asymmetry',
    'ar_score',
    # rate- and ADC-independent metrics (docs/methods.md §2.2)
    'n_noise_levels',
    'light_above_floor',
    'relative_mad',
    'relative_noise',
    'ar_score_10hz',
]
QC_PREPROCESSING = ['bleaching_tau', 'iso_correlation', 'iso_slope', 'iso_intercept', 'iso_r2']
# Whole-recording metrics of the GCaMP row: "no signal" and "artefact" (docs/methods.md §2.4)
QC_SIGNAL_METRICS = [
    'iso_explained',
    'residual_power_ratio',
    'upper_tail_excess',
    'transient_rate',
    'frac_shared_excursion',
    'n_shared_steps',
]
QC_METRICS_KWARGS = {'percentile_asymmetry': {'pc_comp': 75}}
QC_SLIDING_KWARGS = {'w_len': 120, 'step_len': 60, 'detrend': True}  # s, s
# A sliding window with at most this fraction of missing (NaN) frames (time gaps the loader
# filled with NaN) is scored with each missing frame holding the previous frame's value (on the
# ADC's grid, so that the quantisation metrics stay true); a window with more is not scored.
QC_SLIDING_MAX_MISSING = 0.01
# Metrics computed on the raw (not detrended) windows: detrending makes every value unique,
# and the light level needs the raw values.
QC_UNDETRENDED_METRICS = (
    'n_unique_samples',
    'n_noise_levels',
    'light_above_floor',
    'relative_mad',
    'relative_noise',
)
# How window values are reduced to one per recording (others: the mean, as the original).
# The new metrics take the median over windows: a few windows of a disconnected edge do not
# move it.
QC_AGGREGATION = {
    'n_noise_levels': 'median',
    'light_above_floor': 'median',
    'relative_mad': 'median',
    'relative_noise': 'median',
    'ar_score_10hz': 'median',
}
N_UNIQUE_SAMPLES_THRESHOLD = 0.05  # fraction of unique values per window (mean over windows)
# "No light" level of the Neurophotometrics ROIs: 1/255 of the normalised camera range.
QC_CAMERA_FLOOR = 1 / 255
# Bounds of the bleaching fit: τ ≥ 10 s and ≤ 10 × the recording length.
QC_BLEACHING_TAU_BOUNDS = (10.0, 10.0)
# ... and the exponential must beat a straight line: F statistic of its extra parameter ≥ 10
# (p ≈ 0.002 for one degree of freedom), else τ is not resolvable in the recording (NaN).
QC_BLEACHING_MIN_F = 10.0
QC_FIXED_FS = 10  # Hz, rate the rate-independent metrics are computed at (block averages)
# FewUniqueSamples: fewer distinct values than this within ±1 robust SD of a window's
# median (mean over windows); replaces the rate/ADC-dependent n_unique_samples rule.
N_NOISE_LEVELS_THRESHOLD = 3.0
# Parameters of the "no signal" / "artefact" metrics (iblnm.signal.qc.signal_qc).
QC_SIGNAL_KWARGS = {
    'window_s': 60.0,  # s, robust z-score window of the corrected signal
    'z_threshold': 3.0,  # robust SDs: tail fractions and transient crossings
    'signal_band_hz': (0.1, 1.0),  # Hz, band of calcium transients (power ratio numerator)
    # Hz, near-white measurement noise (denominator); below the Nyquist frequency of the
    # ≈ 10 Hz block averages of every rig here (15 Hz → 7.5 Hz: Nyquist 3.75 Hz)
    'noise_band_hz': (2.0, 3.5),
    'baseline_s': 60.0,  # s, running median the excursions are measured against
    'excursion_k': 5.0,  # robust SDs, both bands, same sign
    'excursion_min_rel': 0.02,  # minimum relative size (fraction of light above floor)
    'step_s': 2.0,  # s, half-width of the step detector (median after - median before)
    'step_k': 8.0,  # robust SDs of the step statistic, both bands, same sign
    'step_min_rel': 0.05,  # minimum relative step (fraction of light above floor)
}
# Detrending used by the QC metrics (iso correlation, the "no signal" metrics), fixed so
# that QC values and verdict thresholds do not move when the preprocessing default or a
# user's preprocessing parameters change: the 0.01 Hz low-pass the thresholds were
# calibrated with (docs/methods.md §2.3).
QC_BLEACH = {'method': 'lowpass', 'order': 3, 'cutoff_hz': 0.01, 'mode': 'subtract-divide'}
# QC verdict (iblnm.signal.verdict.qc_verdict): each rule fires when its metric is present,
# finite and compares true with the threshold (op 'missing': when it is absent or NaN and no
# FAIL rule fired); the verdict is the worst severity that fired (PASS when none). Keys
# 'Isosbestic:<metric>' read the isosbestic row of the recording, bare names the GCaMP row.
# Thresholds justified in docs/methods.md §2.5.
QC_VERDICT_RULES = [
    {
        'name': 'band_inversions',
        'metric': 'n_band_inversions',
        'op': '>',
        'threshold': 0,
        'severity': 'FAIL',
    },
    {
        'name': 'early_samples',
        'metric': 'n_early_samples',
        'op': '>',
        'threshold': 0,
        'severity': 'FAIL',
    },
    {
        'name': 'dropped_fiber',
        'metric': 'dropped_fiber',
        'op': '>',
        'threshold': 0,
        'severity': 'FAIL',
    },
    {
        'name': 'quantised_gcamp',
        'metric': 'n_noise_levels',
        'op': '<',
        'threshold': N_NOISE_LEVELS_THRESHOLD,
        'severity': 'FAIL',
    },
    {
        'name': 'quantised_isosbestic',
        'metric': 'Isosbestic:n_noise_levels',
        'op': '<',
        'threshold': N_NOISE_LEVELS_THRESHOLD,
        'severity': 'FAIL',
    },
    {
        'name': 'no_light_gcamp',
        'metric': 'light_above_floor',
        'op': '<',
        'threshold': 0.15,
        'severity': 'FAIL',
    },
    {
        'name': 'no_light_isosbestic',
        'metric': 'Isosbestic:light_above_floor',
        'op': '<',
        'threshold': 0.15,
        'severity': 'FAIL',
    },
    {
        'name': 'noisy_isosbestic',
        'metric': 'Isosbestic:relative_noise',
        'op': '>',
        'threshold': 0.01,
        'severity': 'FAIL',
    },
    # no GCaMP-specific fluctuation: no positive transients in the corrected signal, and the
    # isosbestic band explains most of the GCaMP band's variance
    {
        'name': 'no_signal',
        'metric': 'upper_tail_excess',
        'op': '<',
        'threshold': 0.002,
        'and': [{'metric': 'iso_explained', 'op': '>', 'threshold': 0.5}],
        'severity': 'FAIL',
    },
    {
        'name': 'white_noise_only',
        'metric': 'residual_power_ratio',
        'op': '<',
        'threshold': 1.1,
        'severity': 'FAIL',
    },
    {
        'name': 'shared_artefacts',
        'metric': 'frac_shared_excursion',
        'op': '>',
        'threshold': 0.05,
        'severity': 'FAIL',
    },
    {
        'name': 'negative_iso_slope',
        'metric': 'iso_slope',
        'op': '<',
        'threshold': 0.0,
        'severity': 'FAIL',
    },
    {
        'name': 'mostly_invalid',
        'metric': 'frac_valid',
        'op': '<',
        'threshold': 0.5,
        'severity': 'FAIL',
    },
    {
        'name': 'saturated',
        'metric': 'frac_saturated',
        'op': '>',
        'threshold': 0.01,
        'severity': 'FAIL',
    },
    {
        'name': 'implausible_iso_slope',
        'metric': 'iso_slope',
        'op': '>',
        'threshold': 3.0,
        'severity': 'WARNING',
    },
    # > 20 % masked between the first and the last valid sample (unusable edges are routine)
    {
        'name': 'partly_invalid',
        'metric': 'frac_valid_inner',
        'op': '<',
        'threshold': 0.8,
        'severity': 'WARNING',
    },
    {
        'name': 'weak_signal',
        'metric': 'residual_power_ratio',
        'op': '<',
        'threshold': 2.0,
        'severity': 'WARNING',
    },
    {
        'name': 'no_positive_transients',
        'metric': 'upper_tail_excess',
        'op': '<',
        'threshold': 0.002,
        'severity': 'WARNING',
    },
    {
        'name': 'shared_excursions',
        'metric': 'frac_shared_excursion',
        'op': '>',
        'threshold': 0.005,
        'severity': 'WARNING',
    },
    {
        'name': 'shared_steps',
        'metric': 'n_shared_steps',
        'op': '>',
        'threshold': 2,
        'severity': 'WARNING',
    },
    # No evidence is not a PASS: the sliding QC writes the GCaMP row's light above the floor
    # for every recording with data; without it (the QC did not run, a table of an older
    # version) no rule could clear the recording. Fires only when no FAIL rule has.
    {
        'name': 'not_assessed',
        'metric': 'light_above_floor',
        'op': 'missing',
        'threshold': None,
        'severity': 'FAIL',
    },
]
QC_VERDICTS = ('PASS', 'WARNING', 'FAIL')  # increasing severity
# Recordings with these verdicts are left out of group analyses by default.
QC_VERDICT_EXCLUDE = ('FAIL',)
EARLY_SAMPLE_TOLERANCE = 0.001  # s, a frame this much earlier than the median interval is "early"

# Artefacts and segments (iblnm.signal.artefacts; justification in docs/methods.md §2.4).
# Camera dark level and saturation in the units of the raw values: Neurophotometrics ROI
# values are camera means normalised to 0-1, no light reads 1/255. A rig with another
# camera sets its own values here (or passes them to PhotometrySession.detect_artefacts).
DARK_LEVEL = 1 / 255
SATURATION_LEVEL = 1.0
# nm, the excitation LED of each named band of the extracted table (IBL's extraction)
BAND_WAVELENGTHS = {'GCaMP': 470.0, 'Isosbestic': 415.0, 'RCaMP': 560.0}
ARTEFACT_PARAMS = {
    'median_window_s': 1.0,  # s, running median giving each band's local level
    'level_block_s': 0.1,  # s, ... of block medians (the level's time resolution)
    'floor_frac_dark': 0.02,  # at the floor: level above floor < 2 % of the dark level
    'floor_frac_level': 0.05,  # ... or < 5 % of the recording's typical level
    'dropout_depth': 0.5,  # dropout: frame lost > 50 % of the local light ...
    'dropout_k': 8.0,  # ... and sits > 8 robust noise SDs below the local level
    'dropout_dilate': 1,  # frames masked on each side of a dropout
    'step_rel': 0.2,  # shared step: every band's level changes by > 20 % within ~1 s
    'step_rel_single': 0.5,  # the same without a reference band
    'step_k_reference': 10.0,  # a step of the reference band alone: > step_rel and > 10 noise SDs
    'step_pad_s': 0.0,  # s masked on each side of a step's transition zone
    'level_window_s': 5.0,  # s at each end of a segment giving its level
    'level_tol': 0.1,  # a segment rejoins the recording when its levels continue within 10 %
    'min_segment_s': 5.0,  # s, shorter valid runs between two artefacts are masked
}
QC_ARTEFACT_METRICS = [
    'frac_valid',
    'frac_valid_inner',
    'frac_disconnected',
    'frac_floor',
    'frac_saturated',
    'frac_missing',
    'frac_dropout',
    'frac_excursion',
    'frac_step',
    'n_dropouts',
    'n_steps',
    'n_excursions',
]

# ---------------------------------------------------------------------------
# Preprocessing (recorded with every output)
# ---------------------------------------------------------------------------
PREPROCESSING_PARAMS = {
    # subtract the camera dark level (dark frames, else DARK_LEVEL) before ΔF/F
    'floor': {'subtract': True},
    # 'lowpass' (order, cutoff_hz), 'double_exponential' (robust, bounded; keeps activity
    # slower than 100 s, and slow drift) or 'exponential'
    'bleach': {
        'method': 'lowpass',
        'order': 3,
        'cutoff_hz': 0.01,
        'mode': 'subtract-divide',
    },
    # method 'ols', 'huber' or 'bisquare'; lowpass_hz: low-pass both bands before the fit
    # (lowpass_output: the output is the low-passed signal minus the fit (default, Keevers &
    # Jean-Richard-dit-Bressel 2025), else the fit is applied to the unfiltered bands); highpass_hz (option, default off): also remove the
    # bands' slow part for the fit; max_fit_samples: stride-thin the fit's samples
    'regression': {
        'method': 'bisquare',
        'mode': 'subtract',
        'lowpass_hz': 3.0,
        'lowpass_output': True,
        'max_fit_samples': 20_000,
    },
    'zscore': {'mode': 'classic'},
    'resample': {'fs': TARGET_FS, 'method': 'pchip', 'anti_alias': True},
}  # chosen by benchmarks/bench_methods.py (docs/methods.md §3.7)

# ---------------------------------------------------------------------------
# Analysis windows (s, relative to the event)
# ---------------------------------------------------------------------------
# Stored peri-event window: end exclusive, 120 samples at 30 Hz (-1.0 ... +2.967 s); traces
# are linearly interpolated at event + t (docs/methods.md §4)
RESPONSE_WINDOW = (-1.0, 3.0)
RESPONSE_ALIGN = 'linear'  # 'linear' (sub-sample) or 'sample' (first sample at/after the event)
# Baselines: 'trial' subtracts the mean over TRIAL_BASELINE_WINDOW before the trial's
# TRIAL_BASELINE_EVENT from every event of the trial; 'event' the mean over BASELINE_WINDOW
# before each event (the original 3-sample baseline)
BASELINE_MODE = 'trial'
TRIAL_BASELINE_EVENT = 'stimOn_times'
TRIAL_BASELINE_WINDOW = (-0.5, 0.0)
BASELINE_WINDOW = (-0.1, 0.0)
# Magnitude windows (docs/methods.md §4.3): early transient, late, and the outcome window
RESPONSE_WINDOWS = {'early': (0.1, 0.35), 'late': (0.35, 1.0), 'outcome': (1.0, 2.0)}
# Event-kernel regression (docs/methods.md §4.4): kernel support (s), tent-basis knot spacing
# (s), ridge part of the penalty (relative to the second-difference penalty)
KERNEL_LAGS = (-0.5, 3.0)
KERNEL_SPACING = 0.1
KERNEL_RIDGE = 1e-3
KERNEL_AMPLITUDE_WINDOW = RESPONSE_WINDOWS['early']
KERNEL_CONDITIONS = {  # conditions modelled per event: the outcome only once it is revealed
    'stimOn_times': ('mean', 'contrast', 'side'),
    'firstMovement_times': ('mean', 'contrast', 'side'),
    'feedback_times': ('mean', 'contrast', 'side', 'reward'),
}
KERNEL_SE_BLOCK_S = 5.0  # s, blocks of the robust (cluster) standard errors of the kernels
# Prewhitening (generalised least squares): AR order of the residuals chosen by BIC up to this
# many samples; 0 = ordinary (penalised) least squares, the default: prewhitening lowers the
# kernels' variance where white noise is present but is biased without a white-noise floor
# (smooth or low-passed signals, as the 3 Hz preprocessing output; docs/methods.md §4.4)
KERNEL_AR_MAX_ORDER = 0

# ---------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------
LENGTH_MISMATCH_THRESHOLD = 120  # s
VIDEO_QC_COLS = [
    'qc_videoLeft_focus',
    'qc_videoLeft_position',
    'qc_videoLeft_brightness',
    'qc_videoLeft_resolution',
    'qc_videoLeft_wheel_alignment',
    'qc_videoLeft_timestamps',
    'qc_videoLeft_dropped_frames',
    'qc_videoLeft_pin_state',
]
VIDEO_QUALITY_COLS = VIDEO_QC_COLS[:5]

# ---------------------------------------------------------------------------
# Movement encoding
# ---------------------------------------------------------------------------
TIMING_VARS = ['reaction_time', 'movement_time', 'peak_velocity']
MIN_SUBJECTS_MOVEMENT = 2
MIN_TRIALS_MOVEMENT = 20

# ---------------------------------------------------------------------------
# Plotting
# ---------------------------------------------------------------------------
FIGURE_DPI = 150
NM_COLORS = {'DA': '#d62728', '5HT': '#9467bd', 'NE': '#1f77b4', 'ACh': '#2ca02c'}
TARGETNM2POSITION = {t: i for i, t in enumerate(VALID_TARGETNMS)}


# ---------------------------------------------------------------------------
# Contrast coding
# ---------------------------------------------------------------------------
def contrast_transform(contrast):
    """Log contrast coding ln(c + 1), with ``contrast`` in percent."""
    import numpy as np

    return np.log(np.asarray(contrast, dtype=float) + 1)


def get_contrast_coding(name):
    """Return a ``(transform, inverse)`` pair for a contrast coding.

    Parameters
    ----------
    name : {'log', 'linear', 'rank', 'log2'}
        ``log`` is ln(c + 1); ``linear`` the identity; ``rank`` maps the sorted
        unique contrasts of :data:`ANALYSIS_CONTRASTS` to 0, 1, 2 … (other values → NaN); ``log2`` is
        log2(c) with 0 mapped to 0 (contrasts in percent).
    """
    import numpy as np

    if name == 'log':
        return contrast_transform, lambda x: np.exp(np.asarray(x, dtype=float)) - 1
    if name == 'linear':
        return (lambda c: np.asarray(c, dtype=float)), (lambda x: np.asarray(x, dtype=float))
    if name == 'rank':
        levels = np.array(sorted(ANALYSIS_CONTRASTS), dtype=float)

        def to_rank(c):  # exact levels only: 50 % (training) or NaN give NaN, not a rank
            c = np.asarray(c, dtype=float)
            match = np.isclose(c[..., None], levels)
            return np.where(match.any(axis=-1), match.argmax(axis=-1), np.nan)

        return to_rank, lambda r: levels[np.asarray(r, dtype=int)]
    if name == 'log2':

        def to_log2(c):
            c = np.asarray(c, dtype=float)
            if np.any((c > 0) & (c < 1)):
                raise ValueError('log2 contrast coding needs contrasts of 0 or >= 1 %')
            with np.errstate(divide='ignore'):
                return np.where(c > 0, np.log2(np.where(c > 0, c, 1)), 0.0)

        return to_log2, lambda x: np.where(np.asarray(x) == 0, 0.0, 2.0 ** np.asarray(x))
    raise ValueError(f'Unknown contrast coding {name!r}')


# ---------------------------------------------------------------------------
# Video QC from camera timestamps (scripts/video.py)
# ---------------------------------------------------------------------------
VIDEO_GAP_FACTOR = 1.5  # an inter-frame interval > 1.5 x the median one is a gap (dropped frames)
VIDEO_MAX_DROPPED_PCT = 0.1  # %, dropped frames allowed (ibllib CameraQC threshold)
VIDEO_MAX_GAP_FRAMES = 5  # frames, a single gap this long is a camera stall: FAIL
VIDEO_QC2SCORE = {'PASS': 1.0, 'WARNING': 0.66, 'CRITICAL': 0.33, 'FAIL': 0.0}  # else NaN
VIDEO_SESSION_TYPE_ORDER = {'ephys': 0, 'biased': 1, 'training': 2}  # sort order of video.pqt

# Analysis tools' output folders (QC_OVERVIEW_DIR, TASK_PERFORMANCE_DIR ...): iblnm.settings.LAYOUT
