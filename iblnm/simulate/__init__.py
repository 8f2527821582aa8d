"""Realistic simulated IBL fiber-photometry datasets with an exact ground-truth manifest.

``generate(out_dir, preset='demo', seed=0, n_jobs=1, **overrides)`` writes a local
ONE cache in IBL's on-disk layouts (trials, wheel, camera times, raw and extracted
Neurophotometrics photometry, experiment descriptions), the Alyx records the
pipeline reads offline (subjects, sessions, fibers) and ``ground_truth/``
(``manifest.json`` plus one ``{eid}.npz`` of true ΔF/F per session).
``load_manifest(cache_dir)`` reads the manifest back, ``load_truth(cache_dir, eid)`` a
session's truth (true ΔF/F, artefact masks). ``simulate_fiber(...)`` simulates one
fiber's raw bands with the same code, without files (fast tests of detectors and QC);
``example_session()`` puts one in a :class:`iblnm.data.PhotometrySession` with its
pseudo-trials (the examples of the API's docstrings).

Modules: ``presets`` (sizes), ``cohort`` (mice, fibers, training histories,
fault assignment), ``behaviour`` (trials), ``wheel``, ``kernels`` (NM response
model), ``signals`` (frame clock, bleaching, motion, noise), ``artefacts``
(disconnections, dropouts, dark offset, fiber qualities, shared steps/excursions),
``fiber`` (one fiber without files), ``photometry``
(per-session assembly and tables), ``faults``, ``session`` (one session),
``writer`` (files, manifest) and ``generator`` (the whole cache).
"""

from iblnm.simulate.artefacts import ARTEFACT_KINDS, QUALITIES, artefact_mask, expected_verdict
from iblnm.simulate.example import example_session
from iblnm.simulate.faults import CAMERA_FAULTS, FAULTS, expected_errors
from iblnm.simulate.fiber import simulate_fiber
from iblnm.simulate.generator import generate
from iblnm.simulate.presets import PRESETS, Preset, get_preset
from iblnm.simulate.writer import load_manifest, load_truth

__all__ = [
    'ARTEFACT_KINDS',
    'CAMERA_FAULTS',
    'FAULTS',
    'PRESETS',
    'QUALITIES',
    'Preset',
    'artefact_mask',
    'example_session',
    'expected_errors',
    'expected_verdict',
    'generate',
    'get_preset',
    'load_manifest',
    'load_truth',
    'simulate_fiber',
]
