"""Session loading in ONE remote mode (loopback Alyx, see :mod:`alyx_server`): files are
downloaded by ONE, verified once, and a local copy that no longer matches is fetched again."""

import pytest
from alyx_server import AlyxServer, connect, write_one_params
from one.api import ONE

from iblnm import integrity
from iblnm.data import PhotometrySession
from iblnm.onecache import session_eid

CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
ROW = {'eid': CQ002, 'subject': 'CQ002', 'brain_region': ['SI', 'PPT']}


@pytest.fixture
def remote_one(real_cache, tmp_path, monkeypatch):
    """The real ONE client in remote mode against a loopback Alyx serving the real cache."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.setattr(integrity, '_MEMORY', {})
    ONE.cache_clear()
    server = AlyxServer(real_cache, page_size=1).start()
    write_one_params(server, tmp_path / 'one_params_cache')
    one = connect(server, tmp_path / 'one_remote')
    yield one, server
    server.stop()
    ONE.cache_clear()


def _load(one):
    ps = PhotometrySession(ROW, one=one)
    ps.load_trials()
    ps.load_photometry()
    ps.run_raw_qc()
    return ps


def test_remote_session_loads_and_verifies(remote_one):
    one, server = remote_one
    assert not integrity.is_local(one)
    ps = _load(one)
    assert list(ps.photometry['GCaMP'].columns) == ['SI', 'PPT']
    assert len(ps.photometry['GCaMP']) == 82213 and len(ps.trials) == 328
    assert ps.run_raw_qc() == {'n_band_inversions': 0, 'n_early_samples': 0, 'n_dropped_frames': 0}
    assert server.calls('/files/*')  # really downloaded over HTTP
    memo = list((one.cache_dir / integrity.MEMO_DIRNAME).glob('*.json'))
    assert len(memo) == 4  # trials, signal, locations, raw: each verified


def test_remote_changed_local_copy_is_downloaded_again(remote_one):
    one, server = remote_one
    _load(one)
    path = one.eid2path(CQ002) / 'alf/photometry/photometryROI.locations.pqt'
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    n_downloads = len(server.calls('/files/*'))
    ps = _load(one)  # no error: ONE fetched the file again
    assert path.read_bytes() == original
    assert len(server.calls('/files/*')) == n_downloads + 1
    assert list(ps.photometry['GCaMP'].columns) == ['SI', 'PPT']
