"""PhotometrySessionGroup on pipeline outputs of simulated data (iblnm.group)."""

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_pipeline_on

from iblnm import config, util
from iblnm import validation as v
from iblnm.analysis import responses as ar
from iblnm.data import PhotometrySession, PhotometrySessionGroup

NO_FILTERS = {
    'session_types': False,
    'exclude_subjects': [],
    'qc_blockers': set(),
    'targetnms': None,
    'min_performance': None,
    'required_contrasts': None,
    'exclude_verdicts': (),
}


def _logs(root):
    return util.concat_logs(
        [pd.read_parquet(p) for p in sorted((root / 'metadata').glob('*_log.pqt'))]
    )


@pytest.fixture(scope='module')
def group(small_pipeline):
    return PhotometrySessionGroup.from_catalog(
        root=small_pipeline,
        targetnms=config.VALID_TARGETNMS,
        min_performance=None,
        required_contrasts=None,
    )


def test_from_catalog_explicit_paths_keeps_lists(small_pipeline):
    root = small_pipeline
    group = PhotometrySessionGroup.from_catalog(
        root / 'metadata' / 'sessions.pqt',
        h5_dir=root / 'data' / 'sessions',
        log_dir=root / 'metadata',
        performance=root / 'data' / 'performance.pqt',
        filter=False,
    )
    catalog = pd.read_parquet(root / 'metadata' / 'sessions.pqt')
    assert len(group.sessions) == len(catalog)
    assert all(isinstance(r, list) for r in group.sessions['brain_region'])
    assert {'logged_errors', 'fraction_correct', 'contrasts'} <= set(group.sessions.columns)
    recordings = group.explode_recordings()
    assert len(recordings) == sum(len(r) for r in catalog['brain_region'])
    assert (
        recordings.groupby('eid')['fiber_idx'].apply(lambda f: list(f) == list(range(len(f)))).all()
    )


@pytest.mark.parametrize(
    'blockers', [(v.QCValidationError, v.InsufficientTrials), v.ANALYSIS_QC_BLOCKERS]
)
def test_filter_by_upstream_error_types(small_pipeline, blockers):
    group = PhotometrySessionGroup.from_catalog(root=small_pipeline, filter=False)
    logs = _logs(small_pipeline)
    blocked = set(logs.loc[[v.is_blocked([t], blockers) for t in logs['error_type']], 'eid'])
    assert blocked, 'the small preset should produce these errors'
    kept = group.filter_sessions(**{**NO_FILTERS, 'qc_blockers': blockers})
    all_eids = set(group._catalog['eid'])
    assert set(kept['eid']) == all_eids - blocked
    assert len(group._catalog) == len(all_eids)  # non-destructive


def test_filters_types_subjects_targets(small_pipeline):
    group = PhotometrySessionGroup.from_catalog(root=small_pipeline, filter=False)
    kept = group.filter_sessions(
        **{**NO_FILTERS, 'session_types': ('biased',), 'targetnms': ['LC-NE']}
    )
    assert set(kept['session_type']) == {'biased'}
    assert set(group.recordings['target_NM']) == {'LC-NE'}
    subject = group._catalog['subject'].iloc[0]
    kept = group.filter_sessions(**{**NO_FILTERS, 'exclude_subjects': [subject]})
    assert subject not in set(kept['subject'])


def test_iteration_caches_sessions(group, monkeypatch):
    calls = []
    original = PhotometrySession.load_h5
    monkeypatch.setattr(
        PhotometrySession,
        'load_h5',
        lambda self, *a, **k: calls.append(self.eid) or original(self, *a, **k),
    )
    group.flush_sessions()
    pairs = list(group)
    assert len(pairs) == len(group) > 0
    assert all(isinstance(ps, PhotometrySession) for _, ps in pairs)
    assert sorted(calls) == sorted(set(group.recordings['eid']))  # one read per session
    rec, ps = group[0]
    assert ps is pairs[0][1] and rec['eid'] == ps.eid


def test_filter_mask_shares_cache(group):
    da = group.filter(group.recordings['NM'] == 'DA')
    assert len(da) > 0 and set(da.recordings['NM']) == {'DA'}
    assert da._sessions is group._sessions


def test_response_magnitudes_schema(group):
    mags = group.get_response_magnitudes()
    assert list(mags.columns) == ar.MAGNITUDE_COLUMNS
    per_recording = mags.groupby(['eid', 'fiber_idx'], observed=True).size()
    assert len(per_recording) == len(group)
    assert set(mags['event']) == set(config.RESPONSE_EVENTS)
    assert mags['response_early'].notna().mean() > 0.8
    assert not group.errors


def test_features_similarity(group):
    features = group.get_response_features(nan_handling='drop_features')
    assert features.index.names == ['eid', 'target_NM', 'fiber_idx']
    assert 'stimOn_c100_contra_correct' in features.columns
    sim = group.response_similarity_matrix()
    np.testing.assert_allclose(np.diag(sim), 1.0)


def test_bad_h5_files_are_logged_not_raised(small_pipeline, tmp_path, group):
    eids = list(dict.fromkeys(group.recordings['eid']))
    shutil.copy(small_pipeline / 'data' / 'sessions' / f'{eids[0]}.h5', tmp_path)
    (tmp_path / f'{eids[1]}.h5').write_bytes(b'not an hdf5 file')
    broken = PhotometrySessionGroup(
        group.sessions, h5_dir=tmp_path, targetnms=config.VALID_TARGETNMS
    )
    mags = broken.get_response_magnitudes()
    assert set(mags['eid']) == {eids[0]}
    types = {e['error_type'] for e in broken.errors}
    assert {'MissingH5', 'CorruptH5'} <= types


# ---------------------------------------------------------------------------
# Two mice per NM: mixed models and decoding against the generator's ground truth
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def two_mice(tmp_path_factory):
    """8 mice (2 per NM), one 5-6 min training session each, no faults; catalog + photometry."""
    from iblnm.simulate import generate, load_manifest

    cache = tmp_path_factory.mktemp('two_mice_cache')
    root = tmp_path_factory.mktemp('two_mice_out')
    generate(
        cache,
        preset='small',
        seed=1,
        n_jobs=1,
        n_sessions=8,
        mice_per_nm={'DA': 2, '5HT': 2, 'NE': 2, 'ACh': 2},
        strainless_sessions=0,
        fault_fraction=0.0,
        all_faults=False,
        camera_fault_fraction=0.0,
        task_minutes=(5.0, 6.0),
        min_trials=100,
    )
    for stage in ('query_database', 'photometry'):
        result = run_pipeline_on(cache, root, '--only', stage, '--workers', '1')
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    group = PhotometrySessionGroup.from_catalog(
        root=root, targetnms=config.VALID_TARGETNMS, min_performance=None, required_contrasts=None
    )
    return group, load_manifest(cache)


# The generator plants main effects (contrast slope, correct - error), no interactions. The
# pipeline's default model, log_contrast * side * reward, reports `reward` at 0 % contrast on
# the midline: on this fixture its SE for NE (planted -0.008 dF/F, the weakest effect) is
# 2.2x that of the main-effects model (0.39 vs 0.17 z; |z| 1.4 vs 4.5), so 99 % power at
# p < 0.05 (|z| >= 1.96 + 2.33) would need (4.29 / 1.42)^2 = 9x the trials. The recovery test
# fits the generator's structure: power 1 - Phi(1.96 - 4.45) = 99.4 % for NE, > 99.99 % for
# the other planted effects (NOTES.md, issue 14 session 5).
MAIN_EFFECTS = '{response} ~ log_contrast + side + reward'


def test_lmm_signs_match_generator(two_mice):
    group, manifest = two_mice
    table = group.fit_lmm(by=('NM', 'event'), formula=MAIN_EFFECTS)
    table = table.set_index(['NM', 'event', 'term'])
    checked = 0
    for nm, events in manifest['effect_signs'].items():
        for event, signs in events.items():
            for term, key in (('log_contrast', 'contrast'), ('reward', 'reward')):
                if signs[key] == 0:
                    continue
                row = table.loc[(nm, event, term)]
                assert row['kind'] == 'mixed' and row['n_subjects'] == 2
                assert np.sign(row['coef']) == signs[key], (nm, event, term, row['coef'])
                assert row['p'] < 0.05, (nm, event, term, row['p'])
                checked += 1
    assert checked >= 4  # DA contrast at stimOn; DA, 5HT (+) and NE (-) reward at feedback


def test_flmm_signs_match_generator(two_mice):
    """FLMM per NM: outcome at feedback and contrast at stimulus onset have the generating
    sign where the generator planted an effect, and no significant interval where it did not:
    not in the 4 functions without an effect, not before the onset nor of the opposite sign
    in the 4 with one (family-wise 5 % over the 8, Bonferroni; the bands' family-wise rate
    with trial baselines is 5.0 % per function, benchmarks/bench_flmm.py --trial-baseline)."""
    group, manifest = two_mice
    alpha = 0.05 / 8
    checked = {'planted': 0, 'none': 0}
    for event, term, key in (
        ('feedback_times', 'reward', 'reward'),
        ('stimOn_times', 'log_contrast', 'contrast'),
    ):
        results = group.fit_flmm(event=event, by='NM')
        for nm, events in manifest['effect_signs'].items():
            result = results[(nm, event)]
            assert result.dataset.attrs['n_subjects'] == 2
            intervals = result.intervals[result.intervals['term'] == term]
            sign = events[event][key]
            if sign == 0:
                assert not (intervals['p_joint'] < alpha).any(), (nm, event, intervals)
                checked['none'] += 1
            else:
                assert len(intervals), (nm, event, 'no significant interval')
                strongest = intervals.loc[intervals['peak'].abs().idxmax()]
                # onsets are blurred by the smoothing (~ one basis spacing): test the peak time
                assert strongest['sign'] == sign and 0 < strongest['t_peak'] < 0.6, strongest
                wrong = (intervals['sign'] != sign) | (intervals['t_stop'] < 0)
                assert not (wrong & (intervals['p_joint'] < alpha)).any(), (nm, event, intervals)
                checked['planted'] += 1
    assert checked == {'planted': 4, 'none': 4}  # DA contrast; DA, 5HT (+), NE (-) outcome


def test_decoder_above_chance(two_mice):
    group, _ = two_mice
    group.get_response_features(nan_handling='drop_features')
    decoder = group.decode_target(label='NM', contributions=False)
    assert decoder.chance == pytest.approx(0.25)
    assert decoder.balanced_accuracy > decoder.chance + 0.25
    assert decoder.confusion.to_numpy().sum() == len(group.response_features)
    assert set(decoder.coefficients.index) == {'DA', '5HT', 'NE', 'ACh'}


# ---------------------------------------------------------------------------
# Synthetic HDF5 sessions (no pipeline run): region lookup and masking
# ---------------------------------------------------------------------------
def _synthetic_session(h5_dir, regions=('VTA-l', 'VTA-r'), gains=(1.0, 2.0), n=40):
    """One session whose traces step from 0 to 10 x gain at +0.25 s after every event.

    firstMovement is 0.25 s after stimOn, feedback 0.5 s after stimOn. Returns the catalog row.
    """
    import uuid

    import xarray as xr

    stim = 10.0 + 5.0 * np.arange(n)
    side = np.where(np.arange(n) % 2, 'left', 'right').astype(object)
    contrast = np.resize([0.0, 6.25, 12.5, 25.0, 100.0], n)
    trials = pd.DataFrame(
        {
            'stimOn_times': stim,
            'firstMovement_times': stim + 0.25,
            'feedback_times': stim + 0.5,
            'choice': np.where(side == 'left', 1.0, -1.0),
            'feedbackType': np.where(np.arange(n) % 3, 1.0, -1.0),
            'probabilityLeft': 0.5,
            'contrast': contrast,
            'signed_contrast': np.where(side == 'left', -contrast, contrast),
            'stim_side': side,
        }
    )
    bare = [r.split('-')[0] for r in regions]
    row = {
        'eid': str(uuid.uuid4()),
        'subject': 'm1',
        'session_type': 'biased',
        'NM': 'DA',
        'brain_region': bare,
        'hemisphere': [(r + '-r').split('-')[1] for r in regions],
        'target_NM': [f'{b}-DA' for b in bare],
        'start_time': '2024-01-01T10:00:00',
    }
    ps = PhotometrySession(row, h5_dir=h5_dir)
    ps.trials = trials
    tpts = np.arange(-30, 30) / 30
    for region, gain in zip(regions, gains):
        trace = np.where(tpts >= 0.25, 10.0 * gain, 0.0)
        ps.responses[region] = xr.DataArray(
            np.broadcast_to(trace, (3, n, len(tpts))).copy(),
            dims=('event', 'trial', 'time'),
            coords={
                'event': list(config.RESPONSE_EVENTS),
                'trial': trials.index.to_numpy(),
                'time': tpts,
            },
            attrs={'fs': 30.0, 'response_window': (-1.0, 1.0)},
        )
    ps.save_h5(groups=['metadata', 'errors', 'trials', 'photometry'])
    return row


def test_bilateral_region_recordings_read_their_own_hemisphere(tmp_path):
    """Bilateral VTA: H5 keys 'VTA-l'/'VTA-r', catalog regions 'VTA' + hemispheres."""
    row = _synthetic_session(tmp_path, regions=('VTA-l', 'VTA-r'), gains=(1.0, 2.0))
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path)
    window = {'late': (0.35, 0.6)}  # after the step: 10 x gain, unmasked for stimOn
    mags = group.get_response_magnitudes(events=['feedback_times'], windows=window)
    assert not group.errors
    late = mags.groupby('hemisphere', observed=True)['response_late'].mean()
    assert late.to_dict() == pytest.approx({'l': 10.0, 'r': 20.0})
    # the same through the cached sessions of __iter__
    list(group)
    mags = group.get_response_magnitudes(events=['feedback_times'], windows=window)
    late = mags.groupby('hemisphere', observed=True)['response_late'].mean()
    assert late.to_dict() == pytest.approx({'l': 10.0, 'r': 20.0})


def test_recordings_are_found_by_exact_key_never_by_name_matching(tmp_path):
    """The key of the recordings table names the H5 group; a group whose name only
    resembles it ('VTA-l' for the key 'VTA') is not used: the recording is logged."""
    row = _synthetic_session(tmp_path, regions=('VTA-l', 'DR'), gains=(1.0, 2.0))
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path)
    assert list(group.recordings['recording']) == ['VTA', 'DR']
    assert list(group.recordings['recording_id']) == [f'{row["eid"]}/VTA', f'{row["eid"]}/DR']
    mags = group.get_response_magnitudes(events=['feedback_times'])
    assert set(mags['brain_region']) == {'DR'}
    assert [e['error_type'] for e in group.errors] == ['MissingResponses']
    assert 'no responses for VTA' in group.errors[0]['error_message']
    list(group)  # the same with whole sessions cached (every H5 group read)
    group.errors.clear()
    assert set(group.get_response_magnitudes(events=['feedback_times'])['brain_region']) == {'DR'}
    assert [e['error_type'] for e in group.errors] == ['MissingResponses']
    # the recordings table of the catalog stage names the key (here the ROI-qualified one)
    table = group.recording_table.assign(recording=['VTA-l', 'DR'])
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path, recordings=table)
    mags = group.get_response_magnitudes(events=['feedback_times'])
    assert not group.errors and set(mags['brain_region']) == {'VTA', 'DR'}
    # another catalog's table (a fiber missing, the whole session missing): refused
    for stale in (table.iloc[:1], table.iloc[:0]):
        with pytest.raises(ValueError, match='rerun query_database'):
            PhotometrySessionGroup(
                pd.DataFrame([row]), h5_dir=tmp_path, recordings=stale
            ).explode_recordings()


@pytest.mark.parametrize('events', [['stimOn_times'], ['stimOn_times', 'feedback_times']])
def test_masking_uses_the_next_trial_event_whatever_events_are_requested(tmp_path, events):
    """stimOn traces are cut at firstMovement (+0.25 s) even when it is not requested."""
    row = _synthetic_session(tmp_path, regions=('VTA',), gains=(1.0,))
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path)
    full = group.get_response_magnitudes()
    subset = group.get_response_magnitudes(events=events)
    stim_full = full.loc[full['event'] == 'stimOn_times', 'response_early']
    stim_subset = subset.loc[subset['event'] == 'stimOn_times', 'response_early']
    np.testing.assert_allclose(stim_full, 0.0)  # masked before the step
    np.testing.assert_allclose(stim_subset.to_numpy(), stim_full.to_numpy())


def test_deduplicate_keeps_one_session_per_mouse_and_day(small_pipeline, tmp_path):
    catalog = pd.read_parquet(small_pipeline / 'metadata' / 'sessions.pqt')
    catalog['logged_errors'] = [[] for _ in range(len(catalog))]
    first, second = catalog.iloc[0].copy(), catalog.iloc[1].copy()
    twin = first.copy()  # two valid sessions of one mouse on one day
    twin['eid'] = '00000000-0000-4000-8000-000000000001'
    restarted = second.copy()  # the first attempt of the day stopped early
    restarted['eid'] = '00000000-0000-4000-8000-000000000002'
    restarted['logged_errors'] = ['InsufficientTrials']
    sessions = pd.concat([catalog, pd.DataFrame([restarted, twin])], ignore_index=True)
    group = PhotometrySessionGroup(sessions)
    group.filter_sessions(**NO_FILTERS, verbose=False)
    assert len(group.sessions) == len(catalog) + 2

    log = group.deduplicate()
    kept = set(group.sessions['eid'])
    assert kept == set(catalog['eid'])  # the twin's first-listed session and the valid one win
    assert list(log['eid']) == [first['eid']] and set(log['error_type']) == {'TrueDuplicateSession'}
    assert group.errors[-1]['error_type'] == 'TrueDuplicateSession'
    assert set(group.recordings['eid']) <= kept

    group.filter_sessions(**NO_FILTERS, verbose=False)  # a new selection resets it
    assert len(group.sessions) == len(catalog) + 2

    loaded = PhotometrySessionGroup.from_catalog(  # deduplicates after filtering; no logs
        sessions.drop(columns='logged_errors'), root=small_pipeline, log_dir=tmp_path, **NO_FILTERS
    )
    assert set(loaded.sessions['eid']) == set(catalog['eid'])
    assert {e['eid'] for e in loaded.errors} == {first['eid'], second['eid']}


def test_fail_recordings_are_excluded_by_default_and_counted(small_pipeline, caplog):
    """A FAIL recording keeps its H5 file and QC rows but leaves the group's recordings."""
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    assert {'verdict', 'verdict_reasons'} <= set(qc.columns)
    everything = PhotometrySessionGroup.from_catalog(root=small_pipeline, **NO_FILTERS)
    passed = set(zip(*qc.loc[qc['verdict'] == 'PASS', ['eid', 'brain_region']].T.to_numpy()))
    rec = next(
        r for _, r in everything.recordings.iterrows() if (r['eid'], r['brain_region']) in passed
    )
    dark = qc.copy()
    chosen = (dark['eid'] == rec['eid']) & (dark['brain_region'] == rec['brain_region'])
    dark.loc[chosen & (dark['band'] == 'GCaMP'), 'light_above_floor'] = 0.0
    dark = dark.drop(columns=['verdict', 'verdict_reasons'])  # recomputed from the metrics
    caplog.clear()
    caplog.set_level('INFO', logger='iblnm')
    group = PhotometrySessionGroup.from_catalog(
        root=small_pipeline,
        qc=dark,
        **{k: x for k, x in NO_FILTERS.items() if k != 'exclude_verdicts'},
    )
    kept = set(zip(group.recordings['eid'], group.recordings['brain_region']))
    assert (rec['eid'], rec['brain_region']) not in kept
    n_fail = len(group.excluded_recordings)
    assert n_fail >= 1 and set(group.excluded_recordings['verdict']) == {'FAIL'}
    assert len(group.recordings) == len(everything.recordings) - n_fail
    assert f'{n_fail} of {len(everything.recordings)} recordings excluded' in caplog.text
    assert (small_pipeline / 'data' / 'sessions' / f'{rec["eid"]}.h5').exists()
    kept_all = PhotometrySessionGroup.from_catalog(root=small_pipeline, qc=dark, **NO_FILTERS)
    assert len(kept_all.recordings) == len(everything.recordings)  # exclude_verdicts=(): all


def test_default_filters_exclude_the_failing_fault_recordings(small_pipeline):
    """Dead and saturated channels (FewUniqueSamples faults) FAIL and leave the group."""
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    failed = set(zip(*qc.loc[qc['verdict'] == 'FAIL', ['eid', 'brain_region']].T.to_numpy()))
    assert failed, 'the small preset has dead/saturated channels and raw QC faults'
    group = PhotometrySessionGroup.from_catalog(
        root=small_pipeline, **{k: x for k, x in NO_FILTERS.items() if k != 'exclude_verdicts'}
    )
    kept = set(zip(group.recordings['eid'], group.recordings['brain_region']))
    assert not kept & failed


def test_kernel_magnitudes_and_kernels_from_the_h5(tmp_path):
    """source='kernel': the stored overlap-free magnitudes, in the table of the PSTH ones."""
    import uuid

    from iblnm.data import PREPROCESSED_BAND
    from iblnm.simulate.overlap import simulate_overlapping_session

    sim = simulate_overlapping_session('DA', n_trials=200, seed=0)
    row = {
        'eid': str(uuid.uuid4()),
        'subject': 'm1',
        'session_type': 'biased',
        'NM': 'DA',
        'brain_region': ['VTA'],
        'hemisphere': ['l'],
        'target_NM': ['VTA-DA'],
        'start_time': '2024-01-01T10:00:00',
    }
    ps = PhotometrySession(row, h5_dir=tmp_path)
    ps.trials = sim['trials'].assign(choice=1.0, probabilityLeft=0.5)
    ps.photometry[PREPROCESSED_BAND] = pd.DataFrame(
        {'VTA': sim['values']}, index=pd.Index(sim['times'], name='times')
    )
    ps.extract_responses()
    kernels = ps.fit_event_kernels()
    ps.save_h5(groups=['metadata', 'errors', 'trials', 'photometry'])
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path)
    psth = group.get_response_magnitudes()
    kernel = group.get_response_magnitudes(source='kernel')
    assert not group.errors
    assert list(kernel.columns) == list(psth.columns) == ar.MAGNITUDE_COLUMNS
    assert len(kernel) == len(psth) == 3 * len(sim['trials'])
    stored = kernels['VTA']['trial_magnitudes'].sel(event='feedback_times', window='early')
    got = kernel.loc[kernel['event'] == 'feedback_times', 'response_early'].to_numpy()
    np.testing.assert_allclose(got, stored.values, rtol=1e-6)
    table = group.get_kernels()
    assert {'event', 'condition', 'lag', 'kernel', 'se', 'target_NM'} <= set(table.columns)
    assert len(table) == 3 * 4 * kernels['VTA'].sizes['lag']
    with pytest.raises(ValueError, match='source'):
        group.get_response_magnitudes(source='nope')
    ps.kernels = {}
    ps.save_h5(groups=['photometry'], mode='w')  # no kernels: logged, not raised
    group = PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=tmp_path)
    assert group.get_response_magnitudes(source='kernel').empty
    assert {e['error_type'] for e in group.errors} == {'MissingResponses'}
