"""Realistic simulated IBL fiber-photometry datasets with an exact ground-truth manifest.

``generate(out_dir, preset='demo', seed=0, n_jobs=1, **overrides)`` writes a local
ONE cache in IBL's on-disk layouts (trials, wheel, camera times, raw and extracted
Neurophotometrics photometry, experiment descriptions), the Alyx records the
pipeline reads offline (subjects, sessions, fibers) and ``ground_truth/``
(``manifest.json`` plus one ``{eid}.npz`` of true ΔF/F per session).
``load_manifest(cache_dir)`` reads the manifest back.

Modules: ``presets`` (sizes), ``cohort`` (mice, fibers, training histories,
fault assignment), ``behaviour`` (trials), ``wheel``, ``kernels`` (NM response
model), ``signals`` (frame clock, bleaching, artefacts, noise), ``photometry``
(per-session assembly and tables), ``faults``, ``session`` (one session),
``writer`` (files, manifest) and ``generator`` (the whole cache).
"""

from iblnm.simulate.faults import CAMERA_FAULTS, FAULTS, expected_errors
from iblnm.simulate.generator import generate
from iblnm.simulate.presets import PRESETS, Preset, get_preset
from iblnm.simulate.writer import load_manifest, load_truth

__all__ = [
    'CAMERA_FAULTS',
    'FAULTS',
    'PRESETS',
    'Preset',
    'expected_errors',
    'generate',
    'get_preset',
    'load_manifest',
    'load_truth',
]
