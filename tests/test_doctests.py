"""The ``Examples`` sections of the public API run as doctests (numpydoc, issue 17).

Every docstring with examples in the modules below is one test: its examples run on a
small simulated session (:func:`iblnm.simulate.example_session`: one fiber, 600 s, about
130 pseudo-trials; simulated once per process), in a temporary working folder so that
nothing is written into the project. A docstring whose output no longer matches fails
with doctest's report (expected vs got).
"""

import doctest
import importlib

import pytest

MODULES = [
    'iblnm.analysis.lmm',
    'iblnm.data',
    'iblnm.group',
    'iblnm.recordings',
    'iblnm.simulate.example',
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples and test.name.startswith(name):
                found.append(test)
    return sorted(found, key=lambda t: t.name)


DOCTESTS = _doctests()


def test_the_public_classes_have_examples():
    """Every public method and property of the two session classes shows how it is
    called, but those of :data:`EXEMPT` (each with its reason)."""
    from iblnm.data import PhotometrySession
    from iblnm.group import PhotometrySessionGroup

    with_examples = {t.name for t in DOCTESTS}
    missing = [
        f'{cls.__module__}.{cls.__name__}.{name}'
        for cls in (PhotometrySession, PhotometrySessionGroup)
        for name, member in vars(cls).items()
        if not name.startswith('_')
        and callable(getattr(member, 'fget', member))
        and name not in EXEMPT
        and f'{cls.__module__}.{cls.__name__}.{name}' not in with_examples
    ]
    assert not missing, f'public methods without an Examples section: {missing}'


# public members without their own Examples section, and why
EXEMPT = {
    # need ONE with the session's datasets, or a NWB file: shown in README.md
    'one': 'ONE connection',
    'loader': 'ONE connection',
    'load_trials': 'ONE connection',
    'load_photometry': 'ONE connection',
    'load_wheel': 'ONE connection',
    'extract_wheel_velocity': 'needs load_wheel',
    'run_raw_qc': 'needs the raw Neurophotometrics frames (ONE)',
    'validate_qc': 'needs run_raw_qc',
    'to_nwb': 'NWB export: tests/test_nwb.py',
    'from_nwb': 'NWB import: tests/test_nwb.py',
    # the lead's preprocessing/QC methods (changing in issue 12/19): the class example
    # of PhotometrySession runs run_sliding_qc, preprocess, verdicts
    'run_sliding_qc': 'class example',
    'preprocess': 'class example',
    'estimate_floors': 'class example (preprocess)',
    'detect_artefacts': 'the segments example',
    # statistics over a cohort of mice (several subjects and target-NMs): tests/test_group.py
    'decode_target': 'cohort',
    'fit_lmm': 'cohort',
    'get_flmm_inputs': 'cohort',
    'fit_flmm': 'cohort',
    'RESULT_ATTRIBUTES': 'a tuple, not a method',
}


@pytest.mark.parametrize('test', DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=_collect(report := []))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, ''.join(report)


def _collect(report):
    return report.append
