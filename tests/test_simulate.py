"""The simulated dataset: IBL on-disk layouts readable by ONE, determinism, faults, ground truth."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml

from iblnm import config
from iblnm.loaders import PhotometrySessionLoader, read_raw_photometry
from iblnm.onecache import read_alyx_records, session_eid
from iblnm.simulate import (
    ARTEFACT_KINDS,
    CAMERA_FAULTS,
    FAULTS,
    QUALITIES,
    artefact_mask,
    expected_verdict,
    generate,
    get_preset,
    load_manifest,
    load_truth,
    simulate_fiber,
)
from iblnm.simulate.faults import FLOOR

TRIALS_COLUMNS = {
    'intervals_0',
    'intervals_1',
    'stimOn_times',
    'goCue_times',
    'response_times',
    'choice',
    'firstMovement_times',
    'feedback_times',
    'feedbackType',
    'contrastLeft',
    'contrastRight',
    'probabilityLeft',
    'rewardVolume',
}


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
    kwargs = dict(
        preset='small',
        n_sessions=4,
        strainless_sessions=0,
        task_minutes=(4, 5),
        min_trials=0,
        fault_fraction=0.5,
        all_faults=False,
        camera_fault_fraction=0.5,
    )
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

    raw = read_raw_photometry(
        small_one.eid2path(eid) / 'raw_photometry_data' / '_neurophotometrics_fpData.raw.pqt'
    )
    assert set(np.unique(raw['led'])) <= {1, 2, 7}


def test_alyx_records_describe_every_subject(small_cache, small_one):
    subjects = read_alyx_records(small_cache, 'subjects')
    manifest = load_manifest(small_cache)
    assert {s['subject'] for s in manifest['sessions']} <= set(subjects['nickname'])
    valid = subjects.dropna(subset=['strain'])
    assert set(valid['strain']) <= set(config.VALID_STRAINS)
    assert set(valid['line']) <= set(config.LINE2NM)
    description = yaml.safe_load(
        (
            small_one.eid2path(clean_sessions(small_cache)[0]['eid'])
            / '_ibl_experiment.description.yaml'
        ).read_text()
    )
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
    sessions = [
        s
        for s in load_manifest(small_cache)['sessions']
        if s['session_type'] == session_type and 'missing_trials' not in s['faults']
    ]
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


# ---------------------------------------------------------------------------
# Messy recordings (issue 12): simulate_fiber, qualities, artefacts, the qc preset
# ---------------------------------------------------------------------------

EVERYTHING = dict(
    edge_start=True, edge_end=True, mid_disconnect=True, dropouts=True, dark_offset=True
)


def _highpass(x, fs=29.99, cutoff=0.01):
    from scipy import signal as sps

    return sps.sosfiltfilt(sps.butter(2, cutoff, 'highpass', fs=fs, output='sos'), x)


def _chunk_noise(values, dark_level, n=900):
    """Median over 30 s chunks of the robust SD of first differences / √2, over the light."""
    out = []
    for k in range(0, len(values) - n + 1, n):
        x = values[k : k + n]
        d = np.diff(x)
        sd = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)
        out.append(sd / (np.median(x) - dark_level))
    return float(np.median(out))


@pytest.mark.parametrize('noise_rel', [0.002, 0.005])
def test_noise_sd_per_band_at_30_hz_follows_the_parameter(noise_rel):
    # gain 0: no evoked transients, so frame-to-frame differences are the noise
    fiber = simulate_fiber(300, 'good', seed=3, noise_rel=noise_rel, gain=0.0, dark_offset=2e-4)
    dark = FLOOR + fiber['dark_offset']
    assert 1 / np.median(np.diff(fiber['times'])) == pytest.approx(29.99, rel=1e-3)
    for band, values in (('gcamp', fiber['gcamp']), ('isosbestic', fiber['iso'])):
        expected = fiber['optics'][f'noise_{band}']
        assert 0.8 * noise_rel <= expected <= 1.25 * noise_rel
        assert _chunk_noise(values, dark) == pytest.approx(expected, rel=0.1)


def test_generated_noise_matches_the_manifest(qc_cache):
    manifest = load_manifest(qc_cache)
    assert 0.002 <= min(s['noise']['noise_rel'] for s in manifest['sessions'])
    assert max(s['noise']['noise_rel'] for s in manifest['sessions']) <= 0.005
    session = next(
        s
        for s in manifest['sessions']
        if all(not f['artefacts'] and f['quality'] == 'good' for f in s['fibers'])
    )
    table = pd.read_parquet(
        _session_dir(qc_cache, session) / 'alf/photometry/photometry.signal.pqt'
    )
    for fiber in session['fibers']:
        for band, name in (('gcamp', 'GCaMP'), ('isosbestic', 'Isosbestic')):
            values = table.loc[table['name'] == name, fiber['ROI']].to_numpy()
            measured = _chunk_noise(values, FLOOR + fiber['dark_offset'])
            # the evoked transients add a little to the frame differences
            assert measured == pytest.approx(fiber[f'noise_{band}'], rel=0.25)


def _session_dir(cache, session):
    from iblnm.onecache import session_path

    return session_path(
        cache, session['lab'], session['subject'], session['date'], session['number']
    )


@pytest.mark.parametrize('seed', [5, 6])  # 5: dark edges; 6: room light through the cord
def test_disconnected_stretches_sit_at_the_floor_and_join_by_large_steps(seed):
    fiber = simulate_fiber(900, 'good', seed=seed, **EVERYTHING)
    dark = FLOOR + fiber['dark_offset']
    level = fiber['optics']['level_gcamp']
    stretches = [a for a in fiber['artefacts'] if a['kind'] == 'disconnected']
    assert len(stretches) == 3  # start, middle, end
    assert stretches[0]['start'] == pytest.approx(fiber['times'][0], abs=0.02)
    assert stretches[-1]['stop'] == pytest.approx(fiber['times_iso'][-1], abs=0.02)
    assert 20 <= stretches[0]['stop'] - stretches[0]['start'] <= 185
    assert (seed == 6) == any(a['ambient_rel'] > 0 for a in stretches)
    for a in stretches:
        floor_level = dark + a['ambient_rel'] * level
        for times, values in ((fiber['times'], fiber['gcamp']), (fiber['times_iso'], fiber['iso'])):
            core = (times > a['start'] + 2.1) & (times < a['stop'] - 2.1)  # inside the ramps
            assert np.abs(values[core] - floor_level).max() < 1e-5
        # GCaMP steps by >= 10 % of the light (>= 20 noise SDs) within 10 s of the stretch
        times, values = fiber['times'], fiber['gcamp']
        near = (np.abs(times - a['start']) < 10) | (np.abs(times - a['stop']) < 10)
        near &= ~artefact_mask(times, 'GCaMP', fiber['artefacts'])
        light = np.median(values[near]) - dark
        assert np.median(values[near]) - floor_level > 0.1 * light


def test_dropouts_reach_the_floor():
    fiber = simulate_fiber(900, 'good', seed=6, dropouts=True)
    dark = FLOOR + fiber['dark_offset']
    bursts = [a for a in fiber['artefacts'] if a['kind'] == 'dropout']
    assert len(bursts) >= 5
    assert {tuple(a['bands']) for a in bursts} <= {
        ('GCaMP',),
        ('Isosbestic',),
        ('GCaMP', 'Isosbestic'),
    }
    for key, times in (('gcamp', fiber['times']), ('iso', fiber['times_iso'])):
        band = 'GCaMP' if key == 'gcamp' else 'Isosbestic'
        hit = artefact_mask(times, band, bursts)
        assert hit.sum() <= 3 * len(bursts)  # 1-3 frames per band and burst
        left = (fiber[key][hit] - dark) / (fiber[f'{key}_clean'][hit] - dark)
        assert left.max() < 0.45  # at most 40 % of the light remains (+ noise)
        # robust z against the neighbouring samples, like CQ002's -260 ... -460
        resid = fiber[key] - pd.Series(fiber[key]).rolling(61, center=True, min_periods=1).median()
        z = resid / (1.4826 * np.median(np.abs(resid)))
        assert np.median(z[hit]) < -50


def test_no_signal_gcamp_is_explained_by_the_isosbestic_band():
    def r2(fiber):
        g = _highpass(fiber['gcamp'])
        i = _highpass(np.interp(fiber['times'], fiber['times_iso'], fiber['iso']))
        return np.corrcoef(g[300:-300], i[300:-300])[0, 1] ** 2

    for seed in range(3):
        no_signal = simulate_fiber(600, 'no_signal', seed=seed)
        assert not no_signal['dff'].any()  # the truth: no ΔF/F at all
        assert r2(no_signal) > 0.7
        assert r2(simulate_fiber(600, 'good', seed=seed)) < 0.3


def test_low_light_fiber_sits_near_the_floor():
    for seed in range(4):
        fiber = simulate_fiber(600, 'low_light', seed=seed)
        above = np.median(fiber['gcamp']) - FLOOR - fiber['dark_offset']
        assert 0 <= above < 5e-4  # version_5: 1.6e-4 above the floor
        assert fiber['expected_verdict'] == 'FAIL'


@pytest.mark.parametrize('quality', QUALITIES)
def test_artefact_mask_covers_exactly_the_injected_samples(quality):
    fiber = simulate_fiber(900, quality, seed=2, moderate=quality == 'good', **EVERYTHING)
    kinds = {a['kind'] for a in fiber['artefacts']}
    assert {'disconnected', 'dropout'} <= kinds
    if quality == 'large_artefacts':
        assert {'shared_step', 'excursion'} <= kinds
        covered = sum(
            a['stop'] - a['start'] for a in fiber['artefacts'] if a['kind'] == 'excursion'
        )
        assert covered > 0.05 * 900
    for key, band in (('gcamp', 'GCaMP'), ('iso', 'Isosbestic')):
        changed = fiber[key] != fiber[f'{key}_clean']
        mask = fiber['artefact' if key == 'gcamp' else 'artefact_iso']
        if quality == 'low_light':  # ~1e-4 of light: a ramp frame can change by < 2^-23
            assert not (changed & ~mask).any() and (mask & ~changed).sum() <= 3
        else:
            np.testing.assert_array_equal(mask, changed)
        times = fiber['times' if key == 'gcamp' else 'times_iso']
        np.testing.assert_array_equal(mask, artefact_mask(times, band, fiber['artefacts']))


def test_large_artefacts_are_large():
    fiber = simulate_fiber(900, 'large_artefacts', seed=4)
    light = fiber['gcamp_clean'] - FLOOR
    change = (
        np.abs(fiber['gcamp'] - fiber['gcamp_clean'])[fiber['artefact']] / light[fiber['artefact']]
    )
    assert np.percentile(change, 75) > 0.1  # steps and excursions of 15-60 % of the light
    moderate = simulate_fiber(900, 'good', seed=4, moderate=True)
    assert moderate['expected_verdict'] == 'WARNING'
    small = np.abs(moderate['gcamp'] - moderate['gcamp_clean'])[moderate['artefact']]
    assert np.max(small / (moderate['gcamp_clean'] - FLOOR)[moderate['artefact']]) < 0.15


def test_simulate_fiber_is_deterministic():
    a = simulate_fiber(120, 'large_artefacts', seed=9, **EVERYTHING)
    b = simulate_fiber(120, 'large_artefacts', seed=9, **EVERYTHING)
    c = simulate_fiber(120, 'large_artefacts', seed=10, **EVERYTHING)
    for key in ('times', 'gcamp', 'iso', 'dff', 'artefact'):
        np.testing.assert_array_equal(a[key], b[key])
    assert a['artefacts'] == b['artefacts']
    assert not np.array_equal(a['gcamp'], c['gcamp'])


def test_dark_frames_carry_the_floor():
    fiber = simulate_fiber(60, 'good', seed=1, dark_offset=1e-4, dark_frames=True)
    np.testing.assert_allclose(fiber['dark'], FLOOR + 1e-4, atol=2e-7)
    assert fiber['times_dark'].shape == fiber['times'].shape


def test_expected_verdict_rule():
    assert expected_verdict('good') == 'PASS'
    assert expected_verdict('good', moderate=True) == 'WARNING'
    for quality in ('no_signal', 'low_light', 'large_artefacts'):
        assert expected_verdict(quality) == 'FAIL'
    with pytest.raises(ValueError):
        expected_verdict('bad')


def test_qc_preset_has_a_known_mix_of_fiber_qualities(qc_cache):
    manifest = load_manifest(qc_cache)
    fibers = [f for s in manifest['sessions'] for f in s['fibers']]
    assert len(fibers) >= 40
    fractions = get_preset('qc').quality_fractions
    counts = {
        q: sum(f['quality'] == q and not f['moderate_artefacts'] for f in fibers) for q in QUALITIES
    }
    for quality in ('no_signal', 'low_light', 'large_artefacts'):
        assert counts[quality] == round(fractions[quality] * len(fibers))
    assert sum(f['moderate_artefacts'] for f in fibers) == round(
        fractions['moderate'] * len(fibers)
    )
    assert counts['good'] >= 15


def test_manifest_artefacts_match_the_truth_and_the_files(qc_cache):
    manifest = load_manifest(qc_cache)
    n_kinds = {kind: 0 for kind in ARTEFACT_KINDS}
    for session in manifest['sessions']:
        truth = load_truth(qc_cache, session['eid'])
        assert truth['artefact'].shape == truth['dff'].shape
        assert truth['artefact'].dtype == bool
        table = pd.read_parquet(
            _session_dir(qc_cache, session) / 'alf/photometry/photometry.signal.pqt'
        )
        gcamp = table[table['name'] == 'GCaMP']
        np.testing.assert_allclose(gcamp['times'].to_numpy(), truth['times'])
        offsets = {f['dark_offset'] for f in session['fibers']}
        assert len(offsets) == 1 and 0 <= offsets.pop() <= 3e-4  # a rig property
        for j, fiber in enumerate(session['fibers']):
            assert truth['rois'][j] == fiber['ROI']
            assert fiber['quality'] in QUALITIES
            assert fiber['expected_verdict'] == expected_verdict(
                fiber['quality'], fiber['moderate_artefacts']
            )
            for a in fiber['artefacts']:
                assert a['kind'] in ARTEFACT_KINDS and set(a['bands']) <= {'GCaMP', 'Isosbestic'}
                assert session['recording']['first_frame_s'] - 1e-3 <= a['start'] <= a['stop']
                assert a['stop'] <= session['recording']['last_frame_s'] + 1e-3
                n_kinds[a['kind']] += 1
            mask = artefact_mask(truth['times'], 'GCaMP', fiber['artefacts'])
            np.testing.assert_array_equal(truth['artefact'][:, j], mask)
            if fiber['quality'] == 'no_signal':
                assert not truth['dff'][:, j].any()
            # the files carry the disconnections: at the dark level (+ room light)
            values = gcamp[fiber['ROI']].to_numpy()
            for a in fiber['artefacts']:
                if a['kind'] == 'disconnected' and a['stop'] - a['start'] > 10:
                    core = (truth['times'] > a['start'] + 2.1) & (truth['times'] < a['stop'] - 2.1)
                    level = FLOOR + fiber['dark_offset'] + a['ambient_rel'] * fiber['level_gcamp']
                    assert np.abs(values[core] - level).max() < 1e-5
    assert all(n_kinds[k] for k in ('disconnected', 'dropout', 'shared_step', 'excursion'))


def test_demo_preset_is_mostly_good_with_a_few_messy_fibers():
    demo = get_preset('demo')
    assert 0 < sum(demo.quality_fractions.values()) <= 0.2
    assert demo.edge_start_fraction >= 0.5 and demo.dropout_fraction >= 0.3
    assert demo.noise_rel[0] >= 0.002 and demo.noise_rel[1] <= 0.005
