"""The catalog stage in remote mode: the real ONE client against a loopback Alyx.

The server (:mod:`alyx_server`) serves a local cache's records with Alyx's shapes and
pagination on ``127.0.0.1``; ONE (``one.api.ONE(base_url=...)``) talks to it over HTTP
exactly as it would to a real database: token authentication, REST queries, the REST
cache under ``<cache_dir>/.rest`` and dataset downloads. Nothing reaches the network.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
from alyx_server import AlyxServer, connect, write_one_params
from one.api import ONE, One

from iblnm.io import AlyxMetadata, LocalMetadata, get_metadata_source
from iblnm.onecache import session_eid
from iblnm.pipeline.catalog import query_database

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'query_database.py'
CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)
FIBER_COLUMNS = ['subject', 'targeted_region', 'X-ml_um']


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """ONE's parameter files (and its cached token) go to a temporary HOME."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    ONE.cache_clear()
    yield home
    ONE.cache_clear()


@pytest.fixture(params=['real_cache', 'small_cache'])
def cache(request):
    """Each local cache available: the real sessions, and the simulated one if it exists."""
    if request.param == 'small_cache':
        try:
            from iblnm.simulate import generate  # noqa: F401
        except ImportError as error:
            pytest.skip(f'iblnm.simulate is not available: {error}')
    return request.getfixturevalue(request.param)


@pytest.fixture
def make_server(tmp_path):
    """Start loopback Alyx servers (page size 1: every listing is paginated)."""
    servers = []

    def make(cache_dir):
        server = AlyxServer(cache_dir, page_size=1).start()
        servers.append(server)
        write_one_params(server, tmp_path / f'one_params_cache_{len(servers)}')
        return server

    yield make
    for server in servers:
        server.stop()


def write_fibers_csv(cache_dir, path):
    """A fibers CSV from the cache's ``alyx/fibers.pqt`` (empty when there is none)."""
    source = Path(cache_dir) / 'alyx' / 'fibers.pqt'
    fibers = pd.read_parquet(source) if source.exists() else pd.DataFrame(columns=FIBER_COLUMNS)
    fibers.to_csv(path, index=False)
    return path


def outputs(folder, fibers_fpath):
    folder = Path(folder)
    return {
        'sessions_fpath': folder / 'sessions.pqt',
        'log_fpath': folder / 'query_database_log.pqt',
        'qc_fpath': folder / 'sessions_qc.pqt',
        'fibers_fpath': fibers_fpath,
    }


def run(one, paths, **kwargs):
    return query_database(one=one, progress=False, **paths, **kwargs)


def read_catalog(paths):
    return pd.read_parquet(paths['sessions_fpath'])


def log_entries(log):
    """Log rows without the traceback text (which names different call paths)."""
    rows = log[['eid', 'error_type', 'error_message']].astype(str)
    return sorted(map(tuple, rows.to_numpy()))


def error_types(paths, eid):
    log = pd.read_parquet(paths['log_fpath'])
    return set(log.loc[log['eid'] == eid, 'error_type'])


def assert_complete(paths, expected_eids):
    """One row per expected session, no transient error left, no duplicated log row."""
    catalog = read_catalog(paths)
    assert sorted(catalog['eid']) == sorted(expected_eids)
    assert not catalog['eid'].duplicated().any()
    log = pd.read_parquet(paths['log_fpath'])
    assert not log.duplicated(['eid', 'error_type', 'error_message']).any()
    transient = {'HTTPError', 'ConnectionError', 'JSONDecodeError'}
    assert not transient & set(log['error_type'])
    return catalog


@pytest.fixture
def fibers_csv(real_cache, tmp_path):
    return write_fibers_csv(real_cache, tmp_path / 'fibers.csv')


@pytest.fixture
def local_catalog(real_cache, fibers_csv, tmp_path):
    """The catalog of the real sessions from the local path."""
    paths = outputs(tmp_path / 'local', fibers_csv)
    run(One(cache_dir=str(real_cache), mode='local'), paths)
    return read_catalog(paths)


# ---------------------------------------------------------------------------
# (1) same catalog from the loopback Alyx as from the local cache
# ---------------------------------------------------------------------------
def test_remote_catalog_equals_local(cache, make_server, tmp_path):
    fibers = write_fibers_csv(cache, tmp_path / 'fibers.csv')
    local_paths = outputs(tmp_path / 'local', fibers)
    local = run(One(cache_dir=str(cache), mode='local'), local_paths, extended_qc=True)

    server = make_server(cache)
    remote_paths = outputs(tmp_path / 'remote', fibers)
    remote = run(connect(server, tmp_path / 'one_remote'), remote_paths, extended_qc=True)

    assert len(remote.catalog) == len(local.catalog) > 0
    pd.testing.assert_frame_equal(remote.catalog, local.catalog)
    pd.testing.assert_frame_equal(read_catalog(remote_paths), read_catalog(local_paths))
    pd.testing.assert_frame_equal(remote.qc, local.qc)
    assert log_entries(remote.log) == log_entries(local.log)
    assert remote.deferred == local.deferred == []
    # it really went through HTTP: token login, paginated listing, detail reads, downloads
    assert len(server.calls('/auth-token', method='POST')) == 1
    pages = [r.query.get('offset', '0') for r in server.calls('/sessions')]
    assert len(pages) == len(local.catalog) and len(set(pages)) == len(pages)
    assert server.calls('/sessions/*') and server.calls('/files/*')
    assert all(r.status == 200 for r in server.calls('/files/*'))


def test_remote_fibers_come_from_alyx_insertions_with_the_atlas_sign(
    small_cache, make_server, tmp_path
):
    """No fibers.csv: the local run reads the cache's fibers table (X-ml_um > 0 = left), the
    remote run Alyx's chronic insertions and trajectories (iblatlas x, right positive):
    same hemispheres, coordinates and recordings."""
    from iblnm import io

    no_csv = tmp_path / 'absent_fibers.csv'
    local_paths = outputs(tmp_path / 'local', no_csv)
    local = run(One(cache_dir=str(small_cache), mode='local'), local_paths)
    server = make_server(small_cache)
    remote_paths = outputs(tmp_path / 'remote', no_csv)
    remote = run(connect(server, tmp_path / 'one_remote'), remote_paths)
    pd.testing.assert_frame_equal(remote.catalog, local.catalog)
    pd.testing.assert_frame_equal(remote.recordings, local.recordings)
    assert log_entries(remote.log) == log_entries(local.log)
    sided = remote.recordings[remote.recordings['X-ml_um'].notna()]
    assert len(sided) > 0.8 * len(remote.recordings)  # coordinates found for most fibers
    assert ((sided['X-ml_um'] > 0) == (sided['hemisphere'] == 'l')).all()
    assert server.calls('/chronic-insertions') and server.calls('/trajectories')
    # the served trajectories are in the atlas convention: x = -X-ml_um
    fibers = pd.read_parquet(small_cache / 'alyx' / 'fibers.pqt')
    served = io.get_metadata_source(connect(server, tmp_path / 'one_remote')).fibers()
    cols = ['subject', 'targeted_region', 'X-ml_um', 'Y-ap_um', 'Z-dv_um']
    pd.testing.assert_frame_equal(
        served[cols].sort_values(cols, ignore_index=True).astype({'Y-ap_um': float}),
        fibers[cols].sort_values(cols, ignore_index=True),
        check_dtype=False,
    )
    x = {(i['subject'], t['probe_name']): t['x'] for i, t in server.records.fibers()}
    assert [x[k] for k in zip(fibers['subject'], fibers['fiber'])] == list(-fibers['X-ml_um'])


SESSION_KEYS = [
    'subject',
    'lab',
    'start_time',
    'end_time',
    'number',
    'task_protocol',
    'projects',
    'users',
    'qc',
    'extended_qc',
    'json',
]
SUBJECT_KEYS = ['nickname', 'lab', 'strain', 'line', 'genotype', 'projects']


def test_alyx_metadata_records_match_local(real_cache, make_server, tmp_path):
    local = LocalMetadata(One(cache_dir=str(real_cache), mode='local'))
    one = connect(make_server(real_cache), tmp_path / 'one_remote')
    remote = get_metadata_source(one)
    assert isinstance(remote, AlyxMetadata)

    def by_id(records):
        return sorted(records, key=lambda r: r['id'])

    assert by_id(remote.list_sessions()) == by_id(local.list_sessions())
    assert by_id(remote.list_sessions(project=None)) == by_id(local.list_sessions(project=None))
    assert remote.list_sessions(project='another_project') == []
    for eid in (CQ002, FIP40):
        rem, loc = remote.read_session(eid), local.read_session(eid)
        assert {k: rem[k] for k in SESSION_KEYS} == {k: loc[k] for k in SESSION_KEYS}
        names = [sorted(d['name'] for d in r['data_dataset_session_related']) for r in (rem, loc)]
        assert names[0] == names[1]
        assert one.list_datasets(eid) == local.one.list_datasets(eid)
    for nickname in ('CQ002', 'fip_40'):
        (rem,), (loc,) = remote.list_subjects(nickname), local.list_subjects(nickname)
        assert {k: rem[k] for k in SUBJECT_KEYS} == {k: loc[k] for k in SUBJECT_KEYS}


# ---------------------------------------------------------------------------
# (2) HTTP 500 on one session's detail: logged and deferred; a rerun completes
# ---------------------------------------------------------------------------
def test_http_500_defers_session_and_rerun_completes(
    real_cache, make_server, fibers_csv, local_catalog, tmp_path
):
    server = make_server(real_cache)
    server.fail(f'/sessions/{CQ002}', times=None, status=500)
    one = connect(server, tmp_path / 'one_remote')
    paths = outputs(tmp_path / 'remote', fibers_csv)

    first = run(one, paths)
    assert first.deferred == [CQ002]
    assert list(read_catalog(paths)['eid']) == [FIP40]  # the failed session is not written
    assert 'HTTPError' in error_types(paths, CQ002)
    assert 'deferred to the next run' in first.summary()

    server.clear_faults()
    n_fip40_reads = len(server.calls(f'/sessions/{FIP40}'))
    second = run(one, paths)
    assert (second.n_found, second.n_new, second.deferred) == (2, 1, [])
    assert len(server.calls(f'/sessions/{FIP40}')) == n_fip40_reads  # only CQ002 re-queried
    catalog = assert_complete(paths, [CQ002, FIP40])
    pd.testing.assert_frame_equal(catalog, local_catalog)
    assert run(one, paths).n_new == 0


# ---------------------------------------------------------------------------
# (3) the session list cannot be read: the stage raises, the script exits non-zero
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    'fault, error',
    [
        ({'kind': 'fail'}, requests.HTTPError),
        ({'kind': 'fail', 'offset': '1'}, requests.HTTPError),  # a later page only
        ({'kind': 'truncate'}, ValueError),
        ({'kind': 'stall'}, requests.ConnectionError),
    ],
    ids=['http500', 'second-page-500', 'truncated', 'timeout'],
)
def test_unreadable_session_list_raises(
    real_cache, make_server, fibers_csv, tmp_path, fault, error
):
    server = make_server(real_cache)
    kind = fault.pop('kind')
    kwargs = {'seconds': 0.1} if kind == 'stall' else {}
    getattr(server, kind)('/sessions', times=None, **kwargs, **fault)
    paths = outputs(tmp_path / 'remote', fibers_csv)
    with pytest.raises(error):
        run(connect(server, tmp_path / 'one_remote'), paths)
    assert not paths['sessions_fpath'].exists() and not paths['log_fpath'].exists()


def run_script(home, root):
    """``scripts/query_database.py`` in a subprocess, ONE configured only through ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('IBLNM_', 'ONE_'))}
    env.update(HOME=str(home), IBLNM_ROOT=str(root), IBLNM_ONE_MODE='remote')
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope='module')
def script_runs(real_cache, tmp_path_factory):
    """The script against the loopback Alyx: list failing, one session failing, then none.

    The failures answer with a debug page echoing the request headers (the token).
    """
    tmp = tmp_path_factory.mktemp('script')
    home, root = tmp / 'home', tmp / 'root'
    server = AlyxServer(real_cache, page_size=1).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('HOME', str(home))
            write_one_params(server, tmp / 'one_cache', store_password=True)
        runs = {}
        server.fail('/sessions', times=None, echo_headers=True)
        runs['list_fails'] = run_script(home, root)
        server.clear_faults()
        server.fail(f'/sessions/{CQ002}', times=None, echo_headers=True)
        runs['one_session_fails'] = run_script(home, root)
        partial = {p: p.read_bytes() for p in (root / 'metadata').glob('*.pqt')}
        server.clear_faults()
        runs['rerun'] = run_script(home, root)
        yield {'server': server, 'root': root, 'runs': runs, 'partial_outputs': partial}
    finally:
        server.stop()


def test_script_exit_codes(script_runs):
    runs, metadata = script_runs['runs'], script_runs['root'] / 'metadata'
    failed = runs['list_fails']
    assert failed.returncode == 1, failed.stderr
    assert 'query_database failed: HTTPError' in failed.stderr
    partial = runs['one_session_fails']
    assert partial.returncode == 0, partial.stderr  # FIP40 could be read
    assert 'deferred to the next run (request failed): 1' in partial.stdout
    rerun = runs['rerun']
    assert rerun.returncode == 0, rerun.stderr
    assert 'sessions found: 2, new: 1, in catalog: 2' in rerun.stdout
    paths = {
        'sessions_fpath': metadata / 'sessions.pqt',
        'log_fpath': metadata / 'query_database_log.pqt',
    }
    assert_complete(paths, [CQ002, FIP40])


# ---------------------------------------------------------------------------
# (4) truncated JSON and a timeout: logged, not crashes
# ---------------------------------------------------------------------------
def test_truncated_json_and_timeout_are_logged(
    real_cache, make_server, fibers_csv, local_catalog, tmp_path
):
    server = make_server(real_cache)
    server.truncate(f'/sessions/{CQ002}', times=None)
    server.stall(f'/sessions/{FIP40}', times=None, seconds=0.1)
    one = connect(server, tmp_path / 'one_remote')
    paths = outputs(tmp_path / 'remote', fibers_csv)

    first = run(one, paths)
    assert sorted(first.deferred) == sorted([CQ002, FIP40])
    assert len(read_catalog(paths)) == 0
    assert 'JSONDecodeError' in error_types(paths, CQ002)
    assert 'ConnectionError' in error_types(paths, FIP40)
    assert any(r.fault == 'stall' and r.status is None for r in server.requests)

    server.clear_faults()
    second = run(one, paths)
    assert (second.n_new, second.deferred) == (2, [])
    pd.testing.assert_frame_equal(assert_complete(paths, [CQ002, FIP40]), local_catalog)


def test_failed_download_is_logged_and_deferred(real_cache, make_server, fibers_csv, tmp_path):
    server = make_server(real_cache)
    server.fail('/files/cortexlab/*', times=None, status=503)
    paths = outputs(tmp_path / 'remote', fibers_csv)
    result = run(connect(server, tmp_path / 'one_remote'), paths)
    assert result.deferred == [CQ002]
    assert 'HTTPError' in error_types(paths, CQ002)


# ---------------------------------------------------------------------------
# (5) credentials never appear in outputs, logs or messages
# ---------------------------------------------------------------------------
def assert_no_secret(blob, secrets, where):
    text = blob.decode(errors='replace') if isinstance(blob, bytes) else str(blob)
    for secret in secrets:
        assert secret not in text, f'a credential appears in {where}'


def test_credentials_never_in_outputs(real_cache, make_server, fibers_csv, tmp_path):
    server = make_server(real_cache)
    server.fail(f'/sessions/{CQ002}', times=None, echo_headers=True)
    server.fail('/subjects', times=None, echo_headers=True, nickname='fip_40')
    paths = outputs(tmp_path / 'remote', fibers_csv)
    result = run(connect(server, tmp_path / 'one_remote'), paths, extended_qc=True)
    secrets = [server.password, server.token]

    # the token did reach the error pages, and from there the exceptions ...
    assert sorted(result.deferred) == sorted([CQ002, FIP40])
    messages = result.log['error_message'].str.cat(sep='\n')
    assert 'HTTP_AUTHORIZATION' in messages
    # ... but not the log entries, the files or the summary
    for column in ('error_message', 'traceback'):
        assert_no_secret(result.log[column].str.cat(sep='\n'), secrets, f'log {column}')
    for key in ('sessions_fpath', 'log_fpath', 'qc_fpath'):
        assert_no_secret(paths[key].read_bytes(), secrets, paths[key].name)
    assert_no_secret(result.summary(), secrets, 'the summary')


def test_credentials_never_in_script_outputs(script_runs):
    server = script_runs['server']
    secrets = [server.password, server.token]
    assert any('HTTP_AUTHORIZATION' in r.stderr for r in script_runs['runs'].values())
    for name, proc in script_runs['runs'].items():
        assert_no_secret(proc.stdout, secrets, f'stdout of {name}')
        assert_no_secret(proc.stderr, secrets, f'stderr of {name}')
    for path, data in script_runs['partial_outputs'].items():
        assert_no_secret(data, secrets, path.name)
    for path in (script_runs['root'] / 'metadata').glob('*.pqt'):
        assert_no_secret(path.read_bytes(), secrets, path.name)
