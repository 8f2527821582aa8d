"""Typed errors, log entries, exception_logger and the catalog validators (spec §3, §15)."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import iblnm
from iblnm import config
from iblnm import validation as v
from iblnm.validation import LOG_COLUMNS


def session(**fields):
    base = {'eid': 'e1', 'subject': 'mouse1', 'strain': 'C57BL/6J', 'line': 'Ai148xDat', 'NM': 'DA'}
    return pd.Series({**base, **fields})


TYPE_CHECKS = {'isinstance', 'issubclass'}  # a class named there is not produced


def _produced_error_names(package=Path(iblnm.__file__).parent):
    """Names of the classes the package instantiates (``X(...)``) or hands to a factory
    (``wrap(X, ...)``, ``_video_qc_validator(column, X)``), outside their own definitions."""
    names = set()
    for path in package.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or getattr(node.func, 'id', None) in TYPE_CHECKS:
                continue
            for part in (node.func, *node.args):
                if isinstance(part, ast.Name):
                    names.add(part.id)
                elif isinstance(part, ast.Attribute):
                    names.add(part.attr)
    return names


def _iblnm_errors():
    return [c for c in vars(v).values() if isinstance(c, type) and issubclass(c, v.IblnmError)]


def test_every_typed_error_is_produced_and_every_blocker_can_occur():
    """No dead exception class: each leaf is raised or logged somewhere in the package, each
    base class has a produced subclass, and every blocker is one of these."""
    produced = _produced_error_names()
    leaves = [c for c in _iblnm_errors() if not c.__subclasses__()]
    assert [c.__name__ for c in leaves if c.__name__ not in produced] == []

    def occurs(cls):
        return cls.__name__ in produced or any(occurs(sub) for sub in cls.__subclasses__())

    assert [c.__name__ for c in _iblnm_errors() if not occurs(c)] == []
    for blockers in (v.PHOTOMETRY_BLOCKERS, v.VIDEO_BLOCKERS, v.ANALYSIS_QC_BLOCKERS):
        assert all(issubclass(b, v.IblnmError) and occurs(b) for b in blockers), blockers


def test_blockers_match_subclasses_by_logged_name():
    assert v.is_blocked(['BandInversion'], (v.QCValidationError,))  # subclass of a blocker
    assert v.is_blocked(['InsufficientTrials', 'X'], v.PHOTOMETRY_BLOCKERS)
    assert not v.is_blocked(['InvalidSubject'], v.PHOTOMETRY_BLOCKERS)
    assert not v.is_blocked(['QCValidationError'], (v.BandInversion,))  # not the other way
    assert not v.is_blocked(['NotAnErrorName', 'ValueError'], v.ANALYSIS_QC_BLOCKERS)
    assert not v.is_blocked(['BandInversion'], ())
    with pytest.raises(TypeError, match='exception classes'):
        v.is_blocked(['BandInversion'], {'QCValidationError'})  # names are not blockers


def test_typed_error_attributes_and_messages():
    err = v.IncompleteEventTimes(['stimOn_times', 'feedback_times'])
    assert err.missing_events == ['stimOn_times', 'feedback_times']
    assert str(err) == 'Incomplete events: stimOn_times, feedback_times'
    assert v.TrueDuplicateSession('x', fallback_row='row').fallback_row == 'row'
    assert v.error_lineage('BandInversion') == {'BandInversion', 'QCValidationError'}
    assert v.error_lineage('KeyError') == {'KeyError'}


def test_video_length_checks_at_the_threshold():
    """A discrepancy of exactly ``LENGTH_MISMATCH_THRESHOLD`` s fails, just under passes, in
    both directions (video longer, video shorter)."""
    limit = config.LENGTH_MISMATCH_THRESHOLD
    for check, sign in ((v.validate_video_length, 1), (v.validate_video_covers_session, -1)):
        assert check(pd.Series({'eid': 'e', 'length_discrepancy': sign * (limit - 0.01)})) is None
        with pytest.raises(v.VideoLengthError):
            check(pd.Series({'eid': 'e', 'length_discrepancy': sign * limit}))
        assert check(pd.Series({'eid': 'e', 'length_discrepancy': -sign * 10 * limit})) is None


def test_session_length_needs_start_and_end_on_one_day():
    from iblnm import util

    day = {'eid': 'e', 'start_time': '2024-01-01T00:00:00', 'end_time': '2024-01-01T23:59:59'}
    assert util.get_session_length(pd.Series(day))['session_length'] == 86399
    with pytest.raises(v.InvalidSessionLength, match='different days'):
        util.get_session_length(pd.Series({**day, 'end_time': '2024-01-02T00:00:00'}))
    with pytest.raises(v.InvalidSessionLength, match='missing'):
        util.get_session_length(pd.Series({**day, 'end_time': None}))


def test_validate_subject_raises_and_logs():
    bad = session(subject='SP076')
    with pytest.raises(v.InvalidSubject):
        v.validate_subject(bad)
    assert v.validate_subject(session()) is None
    log = []
    out = v.validate_subject(bad, exlog=log)
    assert out is bad and len(log) == 1
    assert log[0]['error_type'] == 'InvalidSubject' and log[0]['eid'] == 'e1'
    assert set(log[0]) == set(LOG_COLUMNS)


def test_strain_line_nm():
    with pytest.raises(v.InvalidStrain):
        v.validate_strain(session(strain='bogus'))
    with pytest.raises(v.InvalidStrain):
        v.validate_strain(session(strain=None))
    assert v.validate_strain(session()) is None
    with pytest.raises(v.InvalidLine):
        v.validate_line(session(line=None))
    with pytest.raises(v.InvalidNeuromodulator):
        v.validate_neuromodulator(session(NM=None))
    assert v.validate_neuromodulator(session()) is None


def test_brain_region():
    with pytest.raises(v.InvalidBrainRegion):
        v.validate_brain_region(session(brain_region=['CA1']))
    with pytest.raises(v.MissingBrainRegion):
        v.validate_brain_region(session(brain_region=[]))
    with pytest.raises(v.MissingBrainRegion):
        v.validate_brain_region(session(brain_region=np.nan))
    assert v.validate_brain_region(session(brain_region=['VTA-r', 'SNc'])) is None


def test_fill_hemisphere():
    lookup = {('sub1', 'VTA'): 'r', ('sub1', 'DR'): 'l'}
    s = pd.Series(
        {'subject': 'sub1', 'brain_region': ['VTA-r', 'DR', 'NAc'], 'hemisphere': [None, 'r', None]}
    )
    filled = v.fill_hemisphere_from_fiber_insertion_table(s, lookup)
    assert filled['hemisphere'] == ['r', 'r', None]  # suffix stripped; values kept; unknown stays
    assert s['hemisphere'] == [None, 'r', None]  # copy, not in place
    empty = pd.Series({'subject': 'sub1', 'brain_region': [], 'hemisphere': []})
    assert v.fill_hemisphere_from_fiber_insertion_table(empty, lookup)['hemisphere'] == []
    none = v.fill_hemisphere_from_fiber_insertion_table(s, None)
    assert none['hemisphere'] == [None, 'r', None]


def test_fiber_lookup_sides_and_ambiguity():
    fibers = pd.DataFrame(
        {
            'subject': ['m', 'm', 'm', 'k'],
            'targeted_region': ['VTA', 'DR', 'DR', 'LC'],
            'X-ml_um': [500.0, -300.0, 300.0, -900.0],
        }
    )
    lookup = v.fiber_hemisphere_lookup(fibers)
    assert lookup[('m', 'VTA')] == 'l'  # X > 0 is left
    assert lookup[('k', 'LC')] == 'r'
    assert lookup[('m', 'DR')] is None  # both hemispheres: ambiguous


def test_validate_hemisphere():
    lookup = {('mouse1', 'VTA'): 'r', ('mouse1', 'DR'): None}
    with pytest.raises(v.MissingHemisphere):
        v.validate_hemisphere(session(brain_region=['VTA'], hemisphere=[]), lookup)
    with pytest.raises(v.HemisphereMismatch):
        v.validate_hemisphere(session(brain_region=['VTA'], hemisphere=['l']), lookup)
    with pytest.raises(v.MissingInsertion):
        v.validate_hemisphere(session(brain_region=['LC'], hemisphere=['l']), lookup)
    with pytest.raises(v.MissingHemiSuffix):
        v.validate_hemisphere(session(brain_region=['DR'], hemisphere=[None]), lookup)
    assert v.validate_hemisphere(session(brain_region=['VTA'], hemisphere=['r']), lookup) is None
    # a bilateral region (ambiguous lookup) with a known hemisphere passes
    assert v.validate_hemisphere(session(brain_region=['DR'], hemisphere=['l']), lookup) is None


def test_validate_datasets_lists_all_missing():
    ok = [
        'raw_task_data_00/_iblrig_taskData.raw.jsonable',
        'raw_photometry_data/_neurophotometrics_fpData.raw.pqt',
        'alf/task_00/_ibl_trials.table.pqt',
        'alf/photometry/photometry.signal.pqt',
    ]
    assert v.validate_datasets(session(datasets=ok)) is None
    with pytest.raises(v.DataNotListed, match='extracted_task.*extracted_photometry_signal'):
        v.validate_datasets(session(datasets=ok[:2]))
    with pytest.raises(v.DataNotListed):
        v.validate_datasets(session(datasets=None))


def test_video_validators():
    with pytest.raises(v.VideoLengthError):
        v.validate_video_length(pd.Series({'eid': 'e', 'length_discrepancy': 200.0}))
    with pytest.raises(v.VideoLengthError):
        v.validate_video_length(pd.Series({'eid': 'e', 'length_discrepancy': 120.0}))
    for ok in (50.0, np.nan, -500.0):
        assert v.validate_video_length(pd.Series({'eid': 'e', 'length_discrepancy': ok})) is None
    log = []
    v.validate_video_length(pd.Series({'eid': 'e', 'length_discrepancy': 200.0}), exlog=log)
    assert log[0]['error_type'] == 'VideoLengthError'
    for bad in ('FAIL', np.nan, 'NOT_SET'):
        with pytest.raises(v.VideoTimestampsQCError):
            v.validate_video_timestamps_qc(pd.Series({'qc_videoLeft_timestamps': bad}))
    assert v.validate_video_pin_state_qc(pd.Series({'qc_videoLeft_pin_state': 'PASS'})) is None
    log = []
    v.validate_video_dropped_frames_qc(
        pd.Series({'eid': 'e', 'qc_videoLeft_dropped_frames': 'WARNING'}), exlog=log
    )
    assert [e['error_type'] for e in log] == ['VideoDroppedFramesQCError']


def test_make_log_entry():
    try:
        raise v.InsufficientTrials('n_trials=50 < MIN_NTRIALS=90')
    except v.InsufficientTrials as error:
        entry = v.make_log_entry('e1', error=error)
    assert list(entry) == LOG_COLUMNS
    assert entry['error_type'] == 'InsufficientTrials' and 'Traceback' in entry['traceback']
    explicit = v.make_log_entry('e1', error_type='MissingH5', error_message='run photometry')
    assert explicit['traceback'] is None
    both = v.make_log_entry('e1', error=ValueError('x'), error_type='Other')
    assert both['error_type'] == 'ValueError'
    with pytest.raises(ValueError):
        v.make_log_entry('e1')


def test_credentials_are_redacted():
    secret = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.dG9rZW4'
    err = RuntimeError(f'request failed: Authorization: Token {secret} password=hunter2')
    entry = v.make_log_entry('e1', error=err)
    assert secret not in entry['error_message'] and 'hunter2' not in entry['error_message']
    assert secret not in entry['traceback'] and 'hunter2' not in entry['traceback']


def test_exception_logger_on_groups():
    @v.exception_logger
    def fail(group):
        raise v.TrueDuplicateSession('dup', fallback_row=group.iloc[1])

    df = pd.DataFrame({'eid': ['a', 'b'], 'x': [1, 2]})
    log = []
    out = fail(df, exlog=log)
    assert out['eid'] == 'b' and log[0]['eid'] == 'a'


@pytest.mark.parametrize('bad', ['../x', 'abc', '', '6b1f3c52-9a0e-4a47-8d7e-1f0b6a1c2e11/..'])
def test_validate_eid_refuses_unsafe(bad):
    with pytest.raises(v.InvalidEid):
        v.validate_eid(bad)


def test_validate_eid_accepts_uuid():
    eid = '6b1f3c52-9a0e-4a47-8d7e-1f0b6a1c2e11'
    assert v.validate_eid(eid) == eid


def test_log_entries_are_valid_utf8(tmp_path):
    entry = v.make_log_entry('e', FileNotFoundError('no file /data/\udcffbad.pqt'))
    assert '\\udcff' in entry['error_message']
    pd.DataFrame([entry]).to_parquet(tmp_path / 'log.pqt')  # would raise on a lone surrogate


def test_classify_keeps_typed_errors_and_names_the_library():
    import requests

    typed = v.InsufficientTrials('few')
    assert v.classify(typed) is typed
    assert isinstance(v.classify(requests.exceptions.ReadTimeout('slow')), v.RequestFailed)
    assert isinstance(v.classify(PermissionError(13, 'denied')), v.InputReadError)
    try:
        {}['missing']
    except KeyError as error:
        bug = v.classify(error)
    assert isinstance(bug, v.UnexpectedError) and str(bug) == "KeyError: 'missing'"
    assert 'in test_classify' in v.make_log_entry('e', error=bug)['traceback']
    assert v.qualified_name(ValueError()) == 'ValueError'
    assert v.failure_kind('RequestFailed') == 'transient'
    assert v.failure_kind('UnexpectedError') == 'unexpected'
    assert v.failure_kind('InsufficientTrials') == 'data'


def test_validate_catalog_normalises_and_logs():
    eid = '7787ec7d-4468-33a4-bc9b-e15ae39efb5e'
    other = 'e67ccb8a-13d9-38e5-acf6-fb653fc41cf2'
    catalog = pd.DataFrame(
        {
            'eid': [eid.upper(), eid, other, '../etc'],
            'brain_region': [['VTA'], ['VTA'], ['VTA', 'DR'], ['VTA']],
            'hemisphere': [['l'], ['l'], ['l'], ['l']],
            'target_NM': [['VTA-DA'], ['VTA-DA'], ['VTA-DA', 'DR-5HT'], ['VTA-DA']],
        }
    )
    kept, log = v.validate_catalog(catalog)
    assert list(kept['eid']) == [eid]
    assert sorted(e['error_type'] for e in log) == [
        'DuplicateEid',
        'InvalidEid',
        'MismatchedParallelLists',
    ]
    kept, log = v.validate_catalog(catalog.iloc[:0])
    assert kept.empty and log == []
    with pytest.raises(v.InvalidCatalog):
        v.validate_catalog(pd.DataFrame({'subject': ['a']}))


def test_trials_photometry_and_wheel_checks():
    trials = pd.DataFrame(
        {
            'choice': [-1, 1, 0],
            'feedbackType': [1, -1, -1],
            'contrastLeft': [1.0, np.nan, 0.5],
            'contrastRight': [np.nan, 1, np.nan],
            'probabilityLeft': 0.5,
            'intervals_0': [0.0, 1, 2],
            'intervals_1': [0.5, 1.5, 2.5],
            'stimOn_times': [0.1, 1.1, 2.1],
        }
    )
    v.validate_trials_table(trials)
    for bad in (
        trials.drop(columns='feedbackType'),
        trials.assign(choice=['-1', '1', '0']),
        trials.assign(choice=[-1, 2, 0]),
        trials.assign(stimOn_times=['a', 'b', 'c']),
    ):
        with pytest.raises(v.InvalidTrialsTable):
            v.validate_trials_table(bad)
    v.validate_photometry_times([0.0, 0.1, 0.2])
    for bad in ([0.0, 0.1, 0.1], [0.0, 0.2, 0.1], [0.0, np.nan, 0.2], []):
        with pytest.raises(v.InvalidPhotometryTimes):
            v.validate_photometry_times(bad)
    v.validate_wheel([0.0, 0.1, 0.1, 0.2], [0, 1, 2, 3])  # repeated times are allowed
    with pytest.raises(v.InvalidWheelData):
        v.validate_wheel([0.0, 0.2, 0.1], [0, 1, 2])
    table = pd.DataFrame(
        {'times': [0.0, 1, 2], 'valid': True, 'G0': [1.0, 2, 3], 'G1': np.nan, 'G2': [5.0, 5, 5]}
    )
    locations = pd.DataFrame(
        {'brain_region': ['VTA', 'DR', 'LC', 'SI']}, index=['G0', 'G1', 'G2', 'G3']
    )
    kept, errors = v.validate_photometry_fibers(table, locations, ['G0', 'G1', 'G2'])
    assert list(kept.index) == ['G0']
    assert [type(e).__name__ for e in errors] == ['BadFiber', 'BadFiber', 'MissingFiber']
    with pytest.raises(v.BadFiber):
        v.validate_photometry_fibers(table, locations.loc[['G1']], ['G1'])


def test_one_time_per_band_pair_is_accepted_with_labels():
    from iblnm.validation import (
        InvalidPhotometryTimes,
        shared_pair_times,
        validate_photometry_times,
    )

    frame = np.arange(200) / 60.0
    labels = np.tile(['GCaMP', 'Isosbestic'], 100)
    shared = frame.copy()
    shared[1::2] = shared[0::2]
    assert shared_pair_times(shared, labels)
    validate_photometry_times(shared, labels=labels)
    with pytest.raises(InvalidPhotometryTimes, match='100 repeated'):
        validate_photometry_times(shared)  # without the bands: repeats
    one = frame.copy()
    one[51] = one[50]  # one corrupt time is no layout
    assert not shared_pair_times(one, labels)
    with pytest.raises(InvalidPhotometryTimes, match='1 repeated'):
        validate_photometry_times(one, labels=labels)
    same_band = shared.copy()
    same_band[2] = same_band[0]  # a band repeating its own time
    assert not shared_pair_times(same_band, labels)
    assert not shared_pair_times(shared[::-1], labels)  # going back
