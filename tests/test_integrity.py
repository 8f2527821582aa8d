"""Dataset integrity: md5 verified once per file state, a changed file is hashed again and a
mismatch is an error; the fast loader gives what ibl-photometry's loader gives."""

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from one.api import One

from iblnm import integrity
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.loaders import PhotometrySessionLoader, read_raw_frames, read_raw_photometry
from iblnm.onecache import session_eid

CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)
CQ002_ROW = {'eid': CQ002, 'subject': 'CQ002', 'brain_region': ['SI', 'PPT']}


@pytest.fixture
def count_hashing(monkeypatch):
    """Count the files actually hashed (memory memo cleared)."""
    monkeypatch.setattr(integrity, '_MEMORY', {})
    hashed = []
    real = integrity.file_md5

    def counting(path):
        hashed.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(integrity, 'file_md5', counting)
    return hashed


@pytest.fixture
def copied_cache(tmp_path, real_data_dir):
    """A writable cache holding copies of the real sessions, with their md5 records."""
    from iblnm.realdata import add_real_sessions

    add_real_sessions(tmp_path / 'cache', source=real_data_dir, copy=True)
    return tmp_path / 'cache'


def test_remembered_md5_hashes_once_and_again_after_a_change(tmp_path, count_hashing):
    path = tmp_path / 'a.bin'
    path.write_bytes(b'x' * 1000)
    memo = tmp_path / 'memo'
    assert integrity.remembered_md5(path, memo) == hashlib.md5(b'x' * 1000).hexdigest()
    assert integrity.remembered_md5(path, memo) == hashlib.md5(b'x' * 1000).hexdigest()
    assert count_hashing == ['a.bin']
    integrity._MEMORY.clear()  # a new process: the sidecar answers
    integrity.remembered_md5(path, memo)
    assert count_hashing == ['a.bin']
    # same size, same mtime, different bytes: the inode change time still differs
    stat = path.stat()
    path.write_bytes(b'y' * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert integrity.remembered_md5(path, memo) == hashlib.md5(b'y' * 1000).hexdigest()
    assert count_hashing == ['a.bin', 'a.bin']


def test_session_files_verified_once(copied_cache, count_hashing):
    one = One(cache_dir=str(copied_cache), mode='local')
    assert one.list_datasets(CQ002, details=True)['hash'].str.len().eq(32).all()
    for _ in range(2):
        ps = PhotometrySession(CQ002_ROW, one=one)
        ps.load_trials()
        ps.load_photometry()
        ps.run_raw_qc()
    assert sorted(count_hashing) == sorted(
        [
            '_ibl_trials.table.pqt',
            'photometry.signal.pqt',
            'photometryROI.locations.pqt',
            '_neurophotometrics_fpData.raw.pqt',
        ]
    )
    assert len(list((copied_cache / integrity.MEMO_DIRNAME).glob('*.json'))) == 4


@pytest.mark.parametrize(
    'relpath',
    [
        'alf/photometry/photometryROI.locations.pqt',
        'alf/task_00/_ibl_trials.table.pqt',
        'raw_photometry_data/_neurophotometrics_fpData.raw.pqt',
    ],
)
def test_changed_file_is_an_error(copied_cache, count_hashing, relpath):
    one = One(cache_dir=str(copied_cache), mode='local')
    ps = PhotometrySession(CQ002_ROW, one=one)
    ps.load_trials()
    ps.load_photometry()
    ps.run_raw_qc()  # every file verified and remembered
    path = one.eid2path(CQ002) / relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    path.write_bytes(bytes(data))
    ps = PhotometrySession(CQ002_ROW, one=one)
    with pytest.raises(v.DatasetHashMismatch, match=path.name):
        ps.load_trials()
        ps.load_photometry()
        ps.run_raw_qc()


def test_cache_without_hashes_loads(real_cache, tmp_path, count_hashing):
    """Caches whose records carry no md5 (e.g. the simulated ones) load without hashing."""
    from iblnm.onecache import build_one_tables

    cache = tmp_path / 'nohash'
    for path in real_cache.rglob('*'):
        if path.is_file() and path.parent != real_cache:
            target = cache / path.relative_to(real_cache)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    build_one_tables(cache)
    ps = PhotometrySession(CQ002_ROW, one=One(cache_dir=str(cache), mode='local'))
    ps.load_trials()
    ps.load_photometry()
    assert count_hashing == []


def test_bands_match_ibl_photometry(real_one):
    """Same bands, frames and values as ibl-photometry 0.3.4 (whose loader also validates
    the table with pandera): on CQ002 its own loader; on fip_40, whose older layout its
    loader rejects, its ``from_photometry_df`` on the whole table (the previous code path)."""
    import iblphotometry.fpio as fpio

    from iblnm.loaders import data_columns, normalise_photometry_table, roi_to_region

    theirs_loader = fpio.PhotometrySessionLoader(one=real_one, eid=CQ002)
    theirs_loader.load_photometry()
    expected = {CQ002: theirs_loader.photometry}
    path = real_one.eid2path(FIP40) / 'alf/photometry'
    table = normalise_photometry_table(pd.read_parquet(path / 'photometry.signal.pqt'))
    rename = roi_to_region(pd.read_parquet(path / 'photometryROI.locations.pqt'))
    expected[FIP40] = fpio.from_photometry_df(
        table, data_columns=data_columns(table), rename=rename
    )
    for eid, theirs in expected.items():
        loader = PhotometrySessionLoader(one=real_one, eid=eid)
        loader.load_trials()
        ours = loader.load_photometry(restrict_to_session=eid == CQ002)
        assert set(ours) == set(theirs)
        for band in ours:
            renamed = ours[band].copy()
            renamed.columns = theirs[band].columns  # CQ002: ours has bare region names
            pd.testing.assert_frame_equal(renamed, theirs[band], check_names=False)


def test_raw_frames_read_two_columns_only(real_one, real_data_dir):
    loader = PhotometrySessionLoader(one=real_one, eid=CQ002)
    full = read_raw_photometry(loader.raw_photometry_path())
    times, led = read_raw_frames(loader.raw_photometry_path())
    np.testing.assert_array_equal(times, full['times'])
    np.testing.assert_array_equal(led, full['led'])
    csv = real_data_dir / 'neurophotometrics_versions/raw_snippet_60s.csv'
    times, led = read_raw_frames(csv)
    np.testing.assert_array_equal(led, read_raw_photometry(csv)['led'])


def test_raw_qc_from_extracted_table_reuses_its_read(real_one, monkeypatch):
    """Without a raw file, raw QC takes the frames kept from the photometry load."""
    from one.alf.exceptions import ALFObjectNotFound

    ps = PhotometrySession(CQ002_ROW, one=real_one)
    ps.load_trials()
    ps.load_photometry()
    with_raw = ps.run_raw_qc()

    def no_raw(self):
        raise ALFObjectNotFound('no raw file')

    monkeypatch.setattr(PhotometrySessionLoader, 'raw_photometry_path', no_raw)
    monkeypatch.setattr('iblnm.loaders.read_photometry_table', None)  # a second read would fail
    assert (
        ps.run_raw_qc()
        == with_raw
        == {
            'n_band_inversions': 0,
            'n_early_samples': 0,
            'n_dropped_frames': 0,
        }
    )


# ---------------------------------------------------------------------------
# Local-mode shortcuts: the cache table instead of ONE's per-call filtering
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('eid', [CQ002, FIP40])
def test_trials_from_the_cache_table_are_one_load_objects(real_one, monkeypatch, eid):
    """Local mode: the trials come from the cache table (ONE's load_object is not called) and
    equal ONE's load_object(...).to_df(), columns, order and dtypes included."""
    ref_loader = PhotometrySessionLoader(one=real_one, eid=eid)
    collection = ref_loader._find_behaviour_collection('trials')
    real_one.wildcards = False
    try:
        expected = real_one.load_object(
            eid, 'trials', collection=collection, attribute=r'(?!itiDuration).*'
        ).to_df()
    finally:
        real_one.wildcards = True
    loader = PhotometrySessionLoader(one=real_one, eid=eid)

    def refuse(*args, **kwargs):
        raise AssertionError('ONE load_object called in local mode')

    monkeypatch.setattr(real_one, 'load_object', refuse)
    monkeypatch.setattr(
        real_one,
        'list_datasets',
        lambda *a, details=False, **k: ref_loader._records() if details else refuse(),
    )
    loader.load_trials()
    pd.testing.assert_frame_equal(loader.trials, expected)


def test_has_dataset_is_one_list_datasets(real_one):
    loader = PhotometrySessionLoader(one=real_one, eid=CQ002)
    cases = [
        ('_ibl_trials.table.pqt', None),
        ('_ibl_trials.table.pqt', 'alf/task_00'),
        ('_ibl_trials.table.pqt', 'alf'),
        ('photometry.signal.pqt', 'alf/photometry'),
        ('photometry.signal.pqt', 'alf'),
        ('_ibl_wheel.position.npy', None),
        ('_neurophotometrics_fpData.raw.pqt', 'raw_photometry_data'),
    ]
    for name, collection in cases:
        expected = len(real_one.list_datasets(CQ002, filename=name, collection=collection)) > 0
        assert loader.has_dataset(name, collection) == expected, (name, collection)
    assert loader._find_behaviour_collection('trials') == 'alf/task_00'


def test_local_object_leaves_the_unusual_cases_to_one(tmp_path):
    from iblnm.loaders import alf_dataframe

    session = tmp_path / 'lab' / 'Subjects' / 'm' / '2024-01-01' / '001'
    (session / 'alf').mkdir(parents=True)
    (session / 'alf' / '_ibl_trials.table.pqt').write_bytes(b'x' * 10)
    (session / 'alf' / '_ibl_trials.itiDuration.npy').write_bytes(b'x' * 3)
    records = pd.DataFrame(
        {
            'rel_path': ['alf/_ibl_trials.table.pqt', 'alf/_ibl_trials.itiDuration.npy'],
            'file_size': [10, 3],
        }
    )
    local = type('LocalOne', (), {'offline': True})()
    found = integrity.local_object(local, records, session, 'trials', 'alf', r'(?!itiDuration).*')
    assert [p.name for p in found] == ['_ibl_trials.table.pqt']
    assert len(integrity.local_object(local, records, session, 'trials', 'alf')) == 2
    assert integrity.local_object(local, records, session, 'wheel', 'alf') is None
    assert integrity.local_object(local, records, session, 'trials', 'alf/task_00') is None
    remote = type('RemoteOne', (), {'offline': False, 'alyx': object()})()
    assert integrity.local_object(remote, records, session, 'trials', 'alf') is None
    resized = records.assign(file_size=[11, 3])
    assert integrity.local_object(local, resized, session, 'trials', 'alf') is None
    (session / 'alf' / '#2024-02-01#').mkdir()
    (session / 'alf' / '#2024-02-01#' / '_ibl_trials.table.pqt').write_bytes(b'x' * 10)
    revised = pd.concat(
        [
            records,
            pd.DataFrame(
                {'rel_path': ['alf/#2024-02-01#/_ibl_trials.table.pqt'], 'file_size': [10]}
            ),
        ]
    )
    assert integrity.local_object(local, revised, session, 'trials', 'alf') is None
    # AlfBunch.to_df, built in one go
    from one.alf.io import AlfBunch

    bunch = AlfBunch(
        {
            'a': np.arange(3.0),
            'b': np.ones((3, 1)),
            'c': np.ones((3, 12)),
            'intervals': np.arange(6.0).reshape(3, 2),
        }
    )
    pd.testing.assert_frame_equal(alf_dataframe(bunch), bunch.to_df())
