"""ONE connection and metadata in local mode, on the real IBL sessions (spec §4, domain §6)."""

import pandas as pd
import pytest

from iblnm import io
from iblnm.onecache import build_one_tables, session_eid

CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)


def test_mode_selection(monkeypatch, tmp_path):
    monkeypatch.setenv('IBLNM_ONE_MODE', 'remote')
    assert io.get_one_mode() == 'remote'
    monkeypatch.setenv('IBLNM_ONE_MODE', 'bogus')
    with pytest.raises(ValueError):
        io.get_one_mode()
    monkeypatch.delenv('IBLNM_ONE_MODE')
    monkeypatch.setenv('IBLNM_ONE_CACHE', str(tmp_path))
    assert io.get_one_mode() == 'local'
    assert io.get_cache_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match='no ONE cache tables'):
        io.get_connection()  # an empty non-demo folder is never silently filled


def test_remote_only_when_one_knows_a_database(monkeypatch, tmp_path):
    import one.params

    monkeypatch.delenv('IBLNM_ONE_MODE', raising=False)
    monkeypatch.delenv('IBLNM_ONE_CACHE', raising=False)
    monkeypatch.setattr(one.params, 'get_params_dir', lambda: tmp_path)
    assert io.get_one_mode() == 'local'  # no ONE params at all
    (tmp_path / '.caches').write_text('{"CLIENT_MAP": {}}')  # left by an aborted ONE.setup()
    assert io.get_one_mode() == 'local'
    (tmp_path / '.caches').write_text('{"CLIENT_MAP": {"alyx.lab.org": "/data"}, "DEFAULT": "x"}')
    assert io.get_one_mode() == 'remote'


def test_local_connection_lists_real_sessions(real_cache, monkeypatch):
    monkeypatch.setenv('IBLNM_ONE_CACHE', str(real_cache))
    one = io.get_connection()
    assert io.is_local(one)
    assert sorted(str(e) for e in one.search()) == sorted([CQ002, FIP40])
    assert str(one.eid2path(CQ002)).endswith('cortexlab/Subjects/CQ002/2024-11-05/001')


def test_eids_stable_across_rebuilds(real_cache):
    before = pd.read_parquet(real_cache / 'datasets.pqt')
    build_one_tables(real_cache, hashes=True)  # as add_real_sessions builds it
    after = pd.read_parquet(real_cache / 'datasets.pqt')
    pd.testing.assert_frame_equal(before, after)


def test_metadata_records_have_alyx_shapes(real_one):
    md = io.get_metadata_source(real_one)
    sessions = md.list_sessions()
    assert {s['id'] for s in sessions} == {CQ002, FIP40}
    assert set(sessions[0]) == {
        'id',
        'subject',
        'start_time',
        'number',
        'lab',
        'projects',
        'task_protocol',
    }
    detail = md.read_session(CQ002)
    assert detail['end_time'].startswith('2024-11-05')
    names = {d['name'] for d in detail['data_dataset_session_related']}
    assert 'photometry.signal.pqt' in names
    subject = md.list_subjects('CQ002')
    assert len(subject) == 1 and subject[0]['line'] == 'Ai148xChat'
    assert md.list_subjects('nobody') == []


def test_session_getters(real_one):
    df = pd.DataFrame({'eid': [CQ002, FIP40], 'subject': ['CQ002', 'fip_40']})
    log = []
    df = df.apply(io.get_subject_info, axis='columns', one=real_one, exlog=log)
    df = df.apply(io.get_session_dict, axis='columns', one=real_one, exlog=log)
    df = df.apply(io.get_brain_region, axis='columns', one=real_one, exlog=log)
    df = df.apply(io.get_datasets, axis='columns', one=real_one, exlog=log)
    assert log == []
    cq, fip = df.iloc[0], df.iloc[1]
    assert cq['NM'] == 'ACh' and fip['NM'] == 'DA'  # from LINE2NM
    assert cq['brain_region'] == ['SI', 'PPT'] and cq['hemisphere'] == ['', '']
    assert fip['brain_region'] == ['DLS', 'DMS', 'NAcc']  # locations row order
    assert 'alf/task_00/_ibl_trials.table.pqt' in cq['datasets']
    assert cq['lab'] == 'cortexlab' and isinstance(cq['users'], list)


def test_brain_region_missing_sources_logged(real_one):
    log = []
    row = pd.Series({'eid': '00000000-0000-4000-8000-000000000000', 'subject': 'x'})
    io.get_brain_region(row, one=real_one, exlog=log)
    assert len(log) == 1 and log[0]['error_type'] in ('ALFObjectNotFound', 'ValueError')


def test_parse_location_and_qc_keys():
    assert io.parse_location('LC-r') == ('LC-r', 'r')
    assert io.parse_location('VTA') == ('VTA', '')
    assert io.normalise_qc_key('_videoLeft_focus') == 'qc_videoLeft_focus'
    assert io.normalise_qc_key('videoLeft_pin_state_qc') == 'qc_videoLeft_pin_state'
    assert io._qc_outcome(None) == 'NOT_SET'
    assert io._qc_outcome(10) == 'PASS'
    assert io._qc_outcome(True) == 'PASS'


def test_demo_cache_is_built_atomically(tmp_path):
    from one.api import One

    from iblnm.io import ensure_demo_cache

    cache = tmp_path / 'demo'
    (tmp_path / 'demo.partial').mkdir()  # left by a killed first run
    (tmp_path / 'demo.partial' / 'half_written.pqt').write_text('x')
    assert ensure_demo_cache(cache, preset='small', n_jobs=1) == cache
    assert not (tmp_path / 'demo.partial').exists()
    one = One(cache_dir=str(cache), mode='local')
    assert len(one.search()) == 18
    eid = one.search()[0]
    assert one.eid2path(eid).is_relative_to(cache) and one.eid2path(eid).exists()
