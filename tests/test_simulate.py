"""The simulated dataset: IBL on-disk layouts readable by ONE, determinism, faults, ground truth."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml

from iblnm import config
from iblnm.loaders import PhotometrySessionLoader, read_raw_photometry
from iblnm.onecache import read_alyx_records, session_eid
from iblnm.simulate import CAMERA_FAULTS, FAULTS, generate, load_manifest, load_truth

TRIALS_COLUMNS = {
    'intervals_0', 'intervals_1', 'stimOn_times', 'goCue_times', 'response_times', 'choice',
    'firstMovement_times', 'feedback_times', 'feedbackType', 'contrastLeft', 'contrastRight',
    'probabilityLeft', 'rewardVolume',
}  # fmt: skip


def file_digests(cache):
    """sha1 of every file of a cache (relative path -> digest).

    The ONE tables and Alyx records carry their creation time in the parquet metadata, so
    their content (the table) is hashed instead of their bytes.
    """
    digests = {}
    for path in (p for p in cache.rglob('*') if p.is_file()):
        rel = path.relative_to(cache)
        if rel.parts[0] == 'alyx' or len(rel.parts) == 1:
            content = pd.util.hash_pandas_object(pd.read_parquet(path).astype(str)).to_numpy()
            digests[str(rel)] = hashlib.sha1(content.tobytes()).hexdigest()
        else:
            digests[str(rel)] = hashlib.sha1(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture(scope='module')
def tiny_caches(tmp_path_factory):
    """The same tiny dataset generated twice with one seed, and once with another."""
    kwargs = dict(preset='small', n_sessions=4, strainless_sessions=0, task_minutes=(4, 5),
                  min_trials=0, fault_fraction=0.5, all_faults=False, camera_fault_fraction=0.5)  # fmt: skip
    caches = [tmp_path_factory.mktemp(f'tiny{i}') for i in range(3)]
    generate(caches[0], seed=7, **kwargs)
    generate(caches[1], seed=7, n_jobs=2, **kwargs)
    generate(caches[2], seed=8, **kwargs)
    return caches


def test_same_seed_gives_identical_files(tiny_caches):
    first, second, other = (file_digests(c) for c in tiny_caches)
    assert first == second  # independent of the number of worker processes
    assert first != other


def test_eids_follow_the_session_path(small_cache):
    sessions = pd.read_parquet(small_cache / 'sessions.pqt').reset_index()
    for _, s in sessions.iterrows():
        assert s['id'] == session_eid(s['lab'], s['subject'], str(s['date']), int(s['number']))


def test_manifest_covers_every_fault_and_session(small_cache):
    manifest = load_manifest(small_cache)
    injected = {f for s in manifest['sessions'] for f in s['faults']}
    assert injected == set(FAULTS)
    assert {f for s in manifest['sessions'] for f in s['camera_faults']} == set(CAMERA_FAULTS)
    one_sessions = pd.read_parquet(small_cache / 'sessions.pqt').reset_index()
    assert sorted(one_sessions['id']) == sorted(s['eid'] for s in manifest['sessions'])
    assert all(len(s['faults']) <= 1 for s in manifest['sessions'])


def test_datasets_table_lists_exactly_the_files(small_cache, small_one):
    datasets = pd.read_parquet(small_cache / 'datasets.pqt').reset_index()
    manifest = {s['eid']: s for s in load_manifest(small_cache)['sessions']}
    for eid, session in manifest.items():
        listed = sorted(datasets.loc[datasets['eid'] == eid, 'rel_path'])
        assert listed == sorted(session['datasets'])
        session_path = small_one.eid2path(eid)
        assert all((session_path / rel).exists() for rel in listed)
    assert datasets['file_size'].gt(0).all()


def clean_sessions(cache):
    return [s for s in load_manifest(cache)['sessions'] if not s['faults']]


def test_clean_session_layouts_load_through_one(small_cache, small_one):
    session = clean_sessions(small_cache)[0]
    eid = session['eid']
    trials = small_one.load_dataset(eid, '_ibl_trials.table.pqt', collection='alf/task_00')
    assert set(trials.columns) == TRIALS_COLUMNS and len(trials) == session['n_trials']
    assert trials['intervals_0'].is_monotonic_increasing
    wheel_t = small_one.load_dataset(eid, '_ibl_wheel.timestamps.npy', collection='alf/task_00')
    wheel_pos = small_one.load_dataset(eid, '_ibl_wheel.position.npy', collection='alf/task_00')
    assert wheel_t.shape == wheel_pos.shape and np.all(np.diff(wheel_t) > 0)

    signal = small_one.load_dataset(eid, 'photometry.signal.pqt', collection='alf/photometry')
    assert {'times', 'valid', 'wavelength', 'name', 'color'} <= set(signal.columns)
    names = signal.loc[signal['name'] != '', 'name'].to_numpy()  # '' = all-LED first frame
    assert set(names) == {'GCaMP', 'Isosbestic'}
    assert (names[1:] != names[:-1]).all()  # interleaved
    assert set(signal.loc[signal['name'] != '', 'wavelength']) == {470, 415}

    loader = PhotometrySessionLoader(one=small_one, eid=eid)
    loader.load_photometry()
    regions = sorted(loader.photometry['GCaMP'].columns)
    assert regions == sorted(f['brain_region'].split('-')[0] for f in session['fibers'])

    raw = read_raw_photometry(small_one.eid2path(eid) / 'raw_photometry_data'
                              / '_neurophotometrics_fpData.raw.pqt')  # fmt: skip
    assert set(np.unique(raw['led'])) <= {1, 2, 7}


def test_alyx_records_describe_every_subject(small_cache, small_one):
    subjects = read_alyx_records(small_cache, 'subjects')
    manifest = load_manifest(small_cache)
    assert {s['subject'] for s in manifest['sessions']} <= set(subjects['nickname'])
    valid = subjects.dropna(subset=['strain'])
    assert set(valid['strain']) <= set(config.VALID_STRAINS)
    assert set(valid['line']) <= set(config.LINE2NM)
    description = yaml.safe_load(
        (small_one.eid2path(clean_sessions(small_cache)[0]['eid'])
         / '_ibl_experiment.description.yaml').read_text()
    )  # fmt: skip
    assert 'devices' in description and 'tasks' in description


def test_truth_spans_the_recording_with_one_trace_per_fiber(small_cache):
    session = clean_sessions(small_cache)[0]
    truth = load_truth(small_cache, session['eid'])
    assert truth['dff'].shape == (truth['times'].size, len(session['fibers']))
    assert np.all(np.diff(truth['times']) > 0)
    assert np.isfinite(truth['dff']).all()
    assert 0.001 < np.std(truth['dff']) < 0.2  # ΔF/F of a few percent


def test_generate_refuses_to_overwrite_foreign_directories(tmp_path):
    (tmp_path / 'precious.txt').write_text('do not delete')
    with pytest.raises(FileExistsError):
        generate(tmp_path, preset='small', n_sessions=1)
    assert (tmp_path / 'precious.txt').exists()


def test_plain_one_brainbox_and_fpio_load_every_clean_session(small_cache):
    """Users' own tools read the simulated cache: ONE local mode, SessionLoader, fpio."""
    from brainbox.io.one import SessionLoader
    from iblphotometry import fpio
    from one.api import ONE

    one = ONE(mode='local', cache_dir=str(small_cache))
    manifest = load_manifest(small_cache)
    assert sorted(map(str, one.search())) == sorted(s['eid'] for s in manifest['sessions'])
    for session in clean_sessions(small_cache):
        loader = SessionLoader(one=one, eid=session['eid'])
        loader.load_trials()
        loader.load_wheel()
        assert len(loader.trials) == session['n_trials']
        assert len(loader.wheel) > 1000 and loader.wheel['position'].notna().all()
        bands = fpio.from_eid(session['eid'], one)
        bands = bands if isinstance(bands, dict) else bands[0]
        assert {'GCaMP', 'Isosbestic'} <= set(bands)
        assert len(bands['GCaMP'].columns) == len(session['fibers'])


IBL_CONTRASTS = {0.0, 6.25, 12.5, 25.0, 50.0, 100.0}


@pytest.mark.parametrize('session_type', ['biased', 'ephys', 'training'])
def test_blocks_and_contrasts_follow_ibl_task_structure(small_cache, small_one, session_type):
    sessions = [s for s in load_manifest(small_cache)['sessions']
                if s['session_type'] == session_type and 'missing_trials' not in s['faults']]  # fmt: skip
    assert sessions
    for session in sessions:
        trials = small_one.load_dataset(session['eid'], '_ibl_trials.table.pqt')
        contrasts = set(np.round(trials['contrastLeft'].fillna(trials['contrastRight']) * 100, 2))
        assert contrasts <= IBL_CONTRASTS
        assert contrasts == {c * 100 for c in session['contrast_set']}
        lengths, priors = session['block_lengths'], session['block_priors']
        if session_type == 'training':
            assert priors == [0.5] and set(trials['probabilityLeft']) == {0.5}
            continue
        assert priors[0] == 0.5 and lengths[0] == 90  # the 90-trial unbiased start
        assert set(priors[1:]) <= {0.2, 0.8}
        assert all(a != b for a, b in zip(priors[1:], priors[2:]))  # blocks alternate
        assert all(20 <= n <= 100 for n in lengths[1:-1])  # the last block is truncated
        assert sum(lengths) == len(trials)
        if 'block_structure_bug' not in session['faults']:
            np.testing.assert_allclose(trials['probabilityLeft'], np.repeat(priors, lengths))
