"""Catalog stage (query_database) on local caches: schema, validation, incremental runs."""

import pandas as pd
import pytest

from iblnm.onecache import session_eid
from iblnm.pipeline.catalog import query_database

CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)


@pytest.fixture
def out_paths(tmp_path):
    return {
        'sessions_fpath': tmp_path / 'metadata' / 'sessions.pqt',
        'log_fpath': tmp_path / 'metadata' / 'query_database_log.pqt',
        'qc_fpath': tmp_path / 'metadata' / 'sessions_qc.pqt',
        'fibers_fpath': tmp_path / 'fibers.csv',
    }


def run(one, paths, **kwargs):
    return query_database(one=one, progress=False, **paths, **kwargs)


def test_real_sessions_catalog(real_one, out_paths):
    result = run(real_one, out_paths, extended_qc=True)
    cat = pd.read_parquet(out_paths['sessions_fpath'])
    assert sorted(cat['eid']) == sorted([CQ002, FIP40])
    cq = cat.set_index('eid').loc[CQ002]
    assert list(cq['brain_region']) == ['SI', 'PPT'] and list(cq['target_NM']) == [
        'SI-ACh',
        'PPT-ACh',
    ]
    assert cq['session_type'] == 'training' and cq['NM'] == 'ACh'
    assert cq['session_length'] == pytest.approx(2756.9, abs=0.1)
    for col in ('brain_region', 'hemisphere', 'target_NM'):  # parallel lists
        assert all(len(a) == len(b) for a, b in zip(cat[col], cat['brain_region']))
    log = pd.read_parquet(out_paths['log_fpath'])
    fip_errors = set(log.loc[log['eid'] == FIP40, 'error_type'])
    # DLS/DMS/NAcc are not project targets; the raw task file is not in the test copy
    assert fip_errors == {'InvalidBrainRegion', 'DataNotListed'}
    assert 'InvalidTargetNM' not in fip_errors  # root cause only
    assert result.n_found == 2 and out_paths['qc_fpath'].exists()
    assert 'sessions found: 2' in result.summary()


def test_schema_types(real_one, out_paths):
    run(real_one, out_paths)
    cat = pd.read_parquet(out_paths['sessions_fpath'])
    expected = [
        'eid',
        'subject',
        'start_time',
        'end_time',
        'number',
        'lab',
        'projects',
        'users',
        'task_protocol',
        'session_type',
        'strain',
        'line',
        'genotype',
        'NM',
        'brain_region',
        'hemisphere',
        'target_NM',
        'datasets',
        'session_length',
        'day_n',
        'session_n',
    ]
    assert list(cat.columns) == expected
    assert cat['session_length'].dtype == float and cat['session_n'].dtype == float
    assert cat['day_n'].dtype.kind == 'i'
    assert all(isinstance(x, str) for x in cat['start_time'])


def test_incremental_and_redownload(real_one, out_paths):
    run(real_one, out_paths)
    cat = pd.read_parquet(out_paths['sessions_fpath'])
    # drop one session from the catalog: the next incremental run queries only that one
    cat[cat['eid'] != CQ002].to_parquet(out_paths['sessions_fpath'], index=False)
    result = run(real_one, out_paths)
    assert result.n_new == 1
    again = pd.read_parquet(out_paths['sessions_fpath'])
    assert sorted(again['eid']) == sorted(cat['eid'])  # no duplicates
    log = pd.read_parquet(out_paths['log_fpath'])
    assert not log.duplicated(['eid', 'error_type', 'error_message']).any()
    assert run(real_one, out_paths).n_new == 0
    assert run(real_one, out_paths, redownload=True).n_new == 2
