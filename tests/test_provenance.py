"""Provenance of outputs, the public API of the README (issue 15): source, version, params."""

import json
import shutil

import h5py
import pandas as pd
import pytest
from one.api import One

import iblnm
from iblnm import config, provenance
from iblnm import validation as v
from iblnm.data import PhotometrySession, PhotometrySessionGroup
from iblnm.pipeline.catalog import query_database

NO_FILTERS = {
    'session_types': False,
    'exclude_subjects': [],
    'qc_blockers': set(),
    'targetnms': None,
    'min_performance': None,
    'required_contrasts': None,
}


def test_version_is_the_installed_distribution_version():
    from importlib.metadata import version

    assert iblnm.__version__ == version('iblnm')


def test_every_stage_table_and_h5_carries_source_version_and_params(small_pipeline, small_cache):
    tables = sorted((small_pipeline / 'metadata').glob('*.pqt'))
    tables += sorted((small_pipeline / 'data').glob('*.pqt'))
    assert len(tables) >= 8
    expected = {
        'source': 'demo',
        'source_location': str(small_cache.resolve()),
        'iblnm_version': iblnm.__version__,
        'schema_version': provenance.SCHEMA_VERSION,
        'params_hash': provenance.params_hash(),
        'scoring_hash': provenance.scoring_hash(),
    }
    for fpath in tables:
        assert provenance.read_table_record(fpath) == expected, fpath.name
    h5_files = sorted((small_pipeline / 'data' / 'sessions').glob('*.h5'))
    assert h5_files
    for fpath in h5_files:
        with h5py.File(fpath, 'r') as h5:
            record = {k: h5.attrs[k] for k in expected}
            assert {
                k: (x.item() if hasattr(x, 'item') else x) for k, x in record.items()
            } == expected
    listed = []
    for fpath in h5_files:
        ps = PhotometrySession({'eid': fpath.stem}, h5_dir=fpath.parent)
        ps.load_h5(groups=['provenance'])
        assert ps.provenance['record']['params_hash'] == expected['params_hash']
        assert ps.provenance['parameters'] == provenance.processing_parameters()
        inputs = ps.provenance['inputs']
        assert len(inputs) and inputs['id'].notna().all() and (inputs['file_size'] > 0).all()
        listed.append('alf/photometry/photometry.signal.pqt' in set(inputs['rel_path']))
    assert sum(listed) >= len(h5_files) - 2  # the small preset's missing_photometry session


def _catalog(one, root):
    meta = root / 'metadata'
    return query_database(
        one=one,
        progress=False,
        sessions_fpath=meta / 'sessions.pqt',
        log_fpath=meta / 'query_database_log.pqt',
    )


def test_a_second_source_or_other_parameters_stop_the_run(
    small_cache, small_one, tmp_path, monkeypatch
):
    root = tmp_path / 'out'
    _catalog(small_one, root)
    assert provenance.record_fpath(root / 'metadata').exists()
    _catalog(small_one, root)  # same source and parameters: incremental as before
    other = tmp_path / 'other_cache'
    shutil.copytree(small_cache, other, symlinks=True)
    with pytest.raises(v.ProvenanceMismatch, match='source_location'):
        _catalog(One(cache_dir=str(other), mode='local'), root)
    params = {**config.PREPROCESSING_PARAMS, 'zscore': {'mode': 'median'}}
    monkeypatch.setattr(config, 'PREPROCESSING_PARAMS', params)
    with pytest.raises(v.ProvenanceMismatch, match=r'parameters changed: PREPROCESSING_PARAMS\)'):
        _catalog(small_one, root)
    meta = root / 'metadata'
    query_database(
        one=small_one,
        progress=False,
        sessions_fpath=meta / 'sessions.pqt',
        log_fpath=meta / 'query_database_log.pqt',
        redownload=True,
    )
    assert provenance.read_table_record(meta / 'sessions.pqt')['params_hash'] == (
        provenance.params_hash()
    )


def test_other_verdict_rules_alone_do_not_stop_the_run(tmp_path, monkeypatch, caplog):
    """The verdicts are re-scored from the stored metrics: no --redo for a rule change; a
    record of the older kind (params_hash over the rules too) with the same parameters is
    the same run; one of other parameters still stops it."""
    meta = tmp_path / 'metadata'
    record = {'source': 'demo', 'source_location': 'x'}
    first = {**record, 'params_hash': provenance.params_hash()}
    provenance.check_output_root({**first, 'scoring_hash': provenance.scoring_hash()}, meta)
    rules = [r for r in config.QC_VERDICT_RULES if r['name'] != 'not_assessed']
    monkeypatch.setattr(config, 'QC_VERDICT_RULES', rules)
    now = {**first, 'scoring_hash': provenance.scoring_hash()}
    assert provenance.params_hash() == first['params_hash']
    with caplog.at_level('WARNING', logger='iblnm.provenance'):
        provenance.check_output_root(now, meta)
    assert 'verdict rules changed' in caplog.text
    held = json.loads(provenance.record_fpath(meta).read_text())
    assert held['scoring_hash'] == now['scoring_hash']
    assert held['parameters']['QC_VERDICT_RULES'] == provenance._jsonable(rules)
    # a root of the older record: its params_hash covered every parameter
    legacy = {**record, 'params_hash': provenance._hash(provenance.processing_parameters())}
    provenance.record_fpath(meta).write_text(json.dumps(legacy))
    assert provenance.check_output_root(now, meta) == now
    legacy['params_hash'] = '0' * 16  # other parameters (unknown, the root did not keep them)
    provenance.record_fpath(meta).write_text(json.dumps(legacy))
    with pytest.raises(v.ProvenanceMismatch, match='params_hash') as caught:
        provenance.check_output_root(now, meta)
    assert 'parameters changed' not in str(caught.value)


def test_a_root_of_the_older_record_resumes_under_a_settings_files_rules(tmp_path):
    """The older record's params_hash covered the default rules; a lab's [qc_rules] in the
    settings file (which did not exist then) must not make it another parameter set."""
    from iblnm import settings

    meta = tmp_path / 'metadata'
    meta.mkdir()
    legacy = {
        'source': 'demo',
        'source_location': 'x',
        'params_hash': provenance._hash(provenance.processing_parameters()),
    }
    provenance.record_fpath(meta).write_text(json.dumps(legacy))
    fpath = tmp_path / 'iblnm.toml'
    fpath.write_text('[qc_rules.weak_signal]\nthreshold = 1.5\n')
    settings.use(settings.resolve(config_file=fpath))
    try:
        now = {
            'source': 'demo',
            'source_location': 'x',
            'params_hash': provenance.params_hash(),
            'scoring_hash': provenance.scoring_hash(),
        }
        assert provenance.check_output_root(now, meta) == now
    finally:
        settings.reset()


def test_params_hash_changes_with_any_processing_parameter(monkeypatch):
    before = provenance.params_hash()
    monkeypatch.setattr(config, 'RESPONSE_WINDOW', (-1.0, 2.0))
    assert provenance.params_hash() != before
    monkeypatch.undo()
    monkeypatch.setattr(config, 'NM_COLORS', {'DA': 'black'})  # plotting only: same outputs
    assert provenance.params_hash() == before


def test_session_validators_accept_exlog():
    ps = PhotometrySession({'eid': '8a1a7c1e-6f5e-4c63-9d4c-3b2f1e0d9c8b'})
    ps.trials = pd.DataFrame({'stimOn_times': [1.0, 2.0]})
    with pytest.raises(v.InsufficientTrials):
        ps.validate_n_trials()
    log = []
    assert ps.validate_n_trials(exlog=log) is None
    assert [e['error_type'] for e in log] == ['InsufficientTrials']
    assert log[0]['eid'] == ps.eid
    ps.trials = None  # a programming error (no trials loaded) is not logged as bad data
    with pytest.raises(AttributeError):
        ps.validate_event_completeness(exlog=log)
    assert len(log) == 1


def test_selection_changes_clear_cached_results(small_pipeline):
    group = PhotometrySessionGroup.from_catalog(root=small_pipeline, **NO_FILTERS)
    features = group.get_response_features(nan_handling='drop_features')
    group.get_events()
    assert len(features) > 3
    keep = sorted(group.sessions['eid'])[:2]
    group.filter_sessions(**NO_FILTERS, verbose=False)
    assert all(getattr(group, name) is None for name in group.RESULT_ATTRIBUTES)
    narrowed = group.filter(group.recordings['eid'].isin(keep).to_numpy())
    assert narrowed.response_features is None
    rows = narrowed.get_response_features(nan_handling='drop_features')
    assert set(rows.index.get_level_values('eid')) <= set(keep)
    assert len(rows) < len(features)
    group.get_response_features(nan_handling='drop_features')
    group.deduplicate()
    assert group.response_features is None


def test_group_events_long_table(small_pipeline):
    group = PhotometrySessionGroup.from_catalog(root=small_pipeline, **NO_FILTERS)
    events = group.get_events()
    assert group.events is events
    assert set(events['event']) == set(config.RESPONSE_EVENTS)
    eid = events['eid'].iloc[0]
    ps = PhotometrySession({'eid': eid}, h5_dir=small_pipeline / 'data' / 'sessions')
    ps.load_h5(groups=['trials'])
    one = events[(events['eid'] == eid) & (events['event'] == 'feedback_times')]
    assert len(one) == len(ps.trials)
    assert one['time'].to_numpy() == pytest.approx(
        ps.trials['feedback_times'].to_numpy(), nan_ok=True
    )
