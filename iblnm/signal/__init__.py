"""Signal kernels: pure numpy/scipy functions on arrays of times (s) and values.

They know nothing about sessions, files or brain regions; ``iblnm.data`` feeds them.

- :mod:`iblnm.signal.artefacts`: artefact masks and segments of one fiber's raw bands.
- :mod:`iblnm.signal.qc`: QC metrics vectorised over sliding windows.
- :mod:`iblnm.signal.verdict`: the PASS / WARNING / FAIL verdict from named threshold rules.
- :mod:`iblnm.signal.preprocess`: bleach correction, isosbestic regression, z-score, resampling.
- :mod:`iblnm.signal.responses`: peri-event extraction, baseline, masking, magnitudes.
"""

from iblnm.signal.artefacts import ArtefactResult, detect_artefacts, estimate_floor
from iblnm.signal.preprocess import (
    PreprocessResult,
    bleach_correct,
    correct,
    fit_exponential_decay,
    fit_reference,
    isosbestic_correct,
    lowpass_baseline,
    preprocess_isosbestic,
    preprocess_single_band,
    resample,
    zscore,
)
from iblnm.signal.qc import (
    aggregate_windows,
    ar_score,
    ar_score_10hz,
    bleaching_tau,
    detrend_windows,
    fiber_qc,
    iso_correlation,
    light_above_floor,
    median_absolute_deviance,
    n_band_inversions,
    n_dropped_frames,
    n_early_samples,
    n_noise_levels,
    n_unique_samples,
    percentile_asymmetry,
    percentile_distance,
    recording_qc,
    relative_mad,
    relative_noise,
    signal_qc,
    sliding_qc,
    sliding_windows,
    window_starts,
)
from iblnm.signal.responses import (
    baseline_mean,
    mask_after,
    peri_event,
    response_magnitude,
    subtract_baseline,
)
from iblnm.signal.verdict import qc_verdict

__all__ = [
    'ArtefactResult',
    'detect_artefacts',
    'estimate_floor',
    'PreprocessResult',
    'aggregate_windows',
    'ar_score',
    'ar_score_10hz',
    'baseline_mean',
    'bleach_correct',
    'bleaching_tau',
    'correct',
    'detrend_windows',
    'fiber_qc',
    'fit_exponential_decay',
    'fit_reference',
    'iso_correlation',
    'isosbestic_correct',
    'light_above_floor',
    'lowpass_baseline',
    'mask_after',
    'median_absolute_deviance',
    'n_band_inversions',
    'n_dropped_frames',
    'n_early_samples',
    'n_noise_levels',
    'n_unique_samples',
    'peri_event',
    'percentile_asymmetry',
    'percentile_distance',
    'preprocess_isosbestic',
    'preprocess_single_band',
    'qc_verdict',
    'recording_qc',
    'relative_mad',
    'relative_noise',
    'resample',
    'response_magnitude',
    'signal_qc',
    'sliding_qc',
    'sliding_windows',
    'subtract_baseline',
    'window_starts',
    'zscore',
]
