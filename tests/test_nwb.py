"""NWB export and import (issue 16): layout, nwbinspector, round trip, pynapple, neuroconv files."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from iblnm import config, nwb
from iblnm.data import PREPROCESSED_BAND, PhotometrySession
from iblnm.loaders import restrict_to_task
from iblnm.onecache import session_eid

EID = '6b1f3c52-9a0e-4a47-8d7e-1f0b6a1c2e11'
CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)


def serious_issues(path):
    """nwbinspector messages of importance BEST_PRACTICE_VIOLATION or CRITICAL (DANDI config)."""
    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = inspect_nwbfile(
        nwbfile_path=path,
        config=load_config('dandi'),
        importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
    )
    return [
        f'{m.importance.name} {m.check_function_name} {m.object_name}: {m.message}'
        for m in messages
        if m is not None
    ]


def synthetic_session(seed=0, dff=True):
    """Two regions (bilateral VTA), 600 s, jittered 30 Hz frames, the IBL trials columns."""
    rng = np.random.default_rng(seed)
    n_trials = 150
    onsets = np.arange(n_trials) * 3.7 + 20
    trials = pd.DataFrame(
        {
            'intervals_0': onsets - 0.5,
            'intervals_1': onsets + 2.5,
            'stimOn_times': onsets,
            'goCue_times': onsets + 0.01,
            'firstMovement_times': onsets + 0.3,
            'response_times': onsets + 0.55,
            'feedback_times': onsets + 0.6,
            'feedbackType': np.where(rng.random(n_trials) < 0.7, 1.0, -1.0),
            'choice': rng.choice([-1.0, 1.0], n_trials),
            'probabilityLeft': np.full(n_trials, 0.5),
            'contrastLeft': np.where(np.arange(n_trials) % 2, 1.0, np.nan),
            'contrastRight': np.where(np.arange(n_trials) % 2, np.nan, 0.25),
            'rewardVolume': np.full(n_trials, 1.5),
        }
    )
    trials.index = pd.RangeIndex(n_trials) + 3  # a non-default index survives the trip
    trials['stim_side'] = np.where(np.arange(n_trials) % 2, 'left', 'right')
    trials['contrast'] = np.where(np.arange(n_trials) % 2, 100.0, 25.0)
    trials['signed_contrast'] = np.where(np.arange(n_trials) % 2, -100.0, 25.0)
    frames = np.arange(0, 600, 1 / 60) + rng.normal(0, 5e-5, 36000)
    t_iso, t_gcamp = frames[0::2], frames[1::2]
    bleach = np.exp(-t_gcamp / 300)[:, None]
    reward = np.zeros_like(t_gcamp)
    for t, fb in zip(trials['feedback_times'], trials['feedbackType']):
        reward += (fb > 0) * 0.02 * np.exp(-np.clip(t_gcamp - t, 0, None) / 0.4) * (t_gcamp > t)
    iso = 0.3 + 0.2 * bleach + rng.normal(0, 1e-3, (t_iso.size, 2))
    gcamp = 0.4 + 0.3 * bleach + reward[:, None] + rng.normal(0, 1e-3, (t_gcamp.size, 2))
    row = {
        'eid': EID,
        'subject': 'ZFM_01',
        'session_type': 'biased',
        'lab': 'testlab',
        'start_time': '2024-03-05T09:30:00',
        'number': 2,
        'strain': 'C57BL/6J',
        'line': 'Ai148xDat',
        'genotype': ['Dat-Cre'],
        'NM': 'DA',
        'task_protocol': '_iblrig_tasks_biasedChoiceWorld8.0.0',
        'brain_region': ['VTA-l', 'VTA-r'],
        'hemisphere': ['l', 'r'],
        'users': ['olivier'],
    }
    ps = PhotometrySession(row, one=object())
    ps.trials = trials
    columns = ['VTA-l', 'VTA-r']
    ps.photometry = restrict_to_task(
        {
            'GCaMP': pd.DataFrame(gcamp, index=pd.Index(t_gcamp, name='times'), columns=columns),
            'Isosbestic': pd.DataFrame(iso, index=pd.Index(t_iso, name='times'), columns=columns),
        },
        trials,
    )
    ps.run_sliding_qc()
    ps.preprocess()
    if dff:  # the ΔF/F helper's key; any processed frame is exported
        ps.photometry['GCaMP_dff'] = ps.photometry[PREPROCESSED_BAND] * 0.01
    ps.extract_responses()
    ps.wheel = pd.DataFrame(
        {'times': np.arange(0, 600, 0.01), 'velocity': np.sin(np.arange(60000) / 100)}
    )
    ps.wheel_fs = 100
    return ps


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    ps = synthetic_session()
    root = tmp_path_factory.mktemp('nwb')
    fibers = pd.DataFrame(
        {
            'subject': ['ZFM_01'],
            'targeted_region': ['VTA'],
            'X-ml_um': [500.0],
            'Y-ap_um': [-3100.0],
            'Z-dv_um': [-4300.0],
        }
    )
    path = ps.to_nwb(
        root / nwb.nwb_relpath(ps),
        fibers=fibers,
        wheel_position=(np.arange(0, 600, 0.5), np.arange(1200) * 0.01),
    )
    return ps, path


def test_dandi_file_name(exported):
    ps, path = exported
    assert path.parent.name == 'sub-ZFM-01'
    assert path.name == 'sub-ZFM-01_ses-2024-03-05-002-6b1f3c52_ophys.nwb'
    assert not list(path.parent.glob('.*'))  # no temporary file left


def test_inspector_clean(exported):
    assert serious_issues(exported[1]) == []


def test_layout(exported):
    from pynwb import NWBHDF5IO

    ps, path = exported
    with NWBHDF5IO(str(path), 'r') as io:
        f = io.read()
        table = f.lab_meta_data['fiber_photometry'].fiber_photometry_table.to_dataframe()
        assert list(table['location']) == ['VTA'] * 4
        assert list(table['excitation_wavelength_in_nm']) == [470, 470, 415, 415]
        assert set(f.acquisition) == {'GCaMP_470nm', 'Isosbestic_415nm'}
        assert set(f.processing['ophys'].data_interfaces) == {PREPROCESSED_BAND, 'GCaMP_dff', 'qc'}
        fiber = f.devices['fiber_VTA-l'].fiber_insertion
        assert fiber.hemisphere == 'left' and fiber.insertion_position_ap_in_mm == -3.1
        assert f.subject.strain == 'C57BL/6J' and f.subject.genotype == 'Ai148xDat; Dat-Cre'
        assert f.session_id == EID and f.lab == 'testlab' and f.protocol.startswith('_iblrig')
        assert f.session_start_time.isoformat().startswith('2024-03-05T09:30:00')
        qc = f.processing['ophys']['qc'].to_dataframe()
        assert list(qc.columns) == list(ps.qc.columns) and len(qc) == len(ps.qc) == 4
        trials = f.trials.to_dataframe()
        assert set(ps.trials.columns) - {'intervals_0', 'intervals_1'} <= set(trials.columns)
        assert f.processing['behavior']['wheel']['wheel_velocity'].rate == pytest.approx(100)
        assert f.processing['ophys'][PREPROCESSED_BAND].rate == pytest.approx(30)


def test_round_trip(exported):
    """export -> from_nwb -> the same data, and QC, preprocessing and responses recomputed equal."""
    ps, path = exported
    back = PhotometrySession.from_nwb(path)
    assert back.eid == ps.eid and back.subject == ps.subject and back.regions == ps.regions
    assert back.session_type == 'biased' and back.brain_region == ps.brain_region
    for band in ('GCaMP', 'Isosbestic', 'GCaMP_dff'):
        pd.testing.assert_frame_equal(back.photometry[band], ps.photometry[band], rtol=1e-12)
    pd.testing.assert_frame_equal(back.trials, ps.trials, check_dtype=False)
    pd.testing.assert_frame_equal(back.qc, ps.qc)
    assert back.preprocessing_params == pd.Series(ps.preprocessing_params).to_dict()
    original_qc, original_pre = ps.qc, ps.photometry[PREPROCESSED_BAND]
    pd.testing.assert_frame_equal(back.photometry[PREPROCESSED_BAND], original_pre, atol=1e-9)
    back.run_sliding_qc()
    back.preprocess()
    back.extract_responses()
    pd.testing.assert_frame_equal(back.qc, original_qc, rtol=1e-9)
    pd.testing.assert_frame_equal(back.photometry[PREPROCESSED_BAND], original_pre, rtol=1e-9)
    for region in ps.regions:
        xr.testing.assert_allclose(back.responses[region], ps.responses[region])
    np.testing.assert_allclose(back.wheel['velocity'], ps.wheel['velocity'])
    assert back.wheel_fs == pytest.approx(100)
    # raw QC from the interleaved frames of the file: strict alternation, no early frame
    assert back.run_raw_qc() == {
        'n_band_inversions': 0,
        'n_early_samples': 0,
        'n_dropped_frames': 0,
    }


def test_round_trip_detects_a_changed_signal(exported, tmp_path):
    """The comparison above can fail: a perturbed raw band gives other z-scores."""
    ps, _ = exported
    other = synthetic_session(dff=False)
    gcamp = other.photometry['GCaMP']
    gcamp.iloc[5000:5030, 0] += 1e-6  # one second, 1/1000 of the noise
    back = PhotometrySession.from_nwb(other.to_nwb(tmp_path / 'x.nwb'))
    back.preprocess()
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(
            back.photometry[PREPROCESSED_BAND], ps.photometry[PREPROCESSED_BAND], rtol=1e-9
        )


def test_pynapple_reads_the_signal(exported):
    import pynapple as nap

    ps, path = exported
    data = nap.load_file(str(path))
    signal = data['GCaMP_470nm']
    np.testing.assert_allclose(signal.t, ps.photometry['GCaMP'].index, atol=1e-9)
    np.testing.assert_allclose(signal.values, ps.photometry['GCaMP'].to_numpy())
    z = data[PREPROCESSED_BAND]
    np.testing.assert_allclose(z.values, ps.photometry[PREPROCESSED_BAND].to_numpy())
    np.testing.assert_allclose(z.t, ps.photometry[PREPROCESSED_BAND].index, atol=1e-6)
    assert len(data['trials']) == len(ps.trials)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failing write leaves the previous file and no temporary file."""
    ps = synthetic_session(dff=False)
    path = ps.to_nwb(tmp_path / 'a.nwb')
    before = path.read_bytes()
    ps.photometry['GCaMP'] = ps.photometry['GCaMP'].iloc[:, :1]  # fewer regions than rows
    monkeypatch.setattr(nwb, '_wheel', lambda *a: (_ for _ in ()).throw(RuntimeError('boom')))
    with pytest.raises(RuntimeError):
        ps.to_nwb(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.nwb']


# ---------------------------------------------------------------------------
# A file laid out as neuroconv writes Neurophotometrics data
# ---------------------------------------------------------------------------
def neuroconv_like_file(path, seed=1):
    """Two fibers (VTA, NAc), 415 and 470 nm series sharing one time base from 0 s at
    ``starting_time`` + ``rate`` (neuroconv's NPM interface), devices with their models,
    an indicator, and an IBL-like trials table; NAc responds to reward, VTA does not."""
    import ndx_ophys_devices as od
    from ndx_fiber_photometry import (
        FiberPhotometry,
        FiberPhotometryIndicators,
        FiberPhotometryResponseSeries,
        FiberPhotometryTable,
    )
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    rng = np.random.default_rng(seed)
    fs, n = 20.0, 20 * 900
    t = np.arange(n) / fs
    nwbfile = NWBFile(
        session_description='NPM recording',
        identifier='npm-session-7',
        session_start_time=pd.Timestamp('2025-01-10T10:00:00Z').to_pydatetime(),
        session_id='npm-7',
        lab='Other lab',
        subject=Subject(subject_id='mouse7', species='Mus musculus', sex='F', age='P90D'),
    )
    fiber_model = od.OpticalFiberModel(
        name='fiber_model', manufacturer='Doric', numerical_aperture=0.48, core_diameter_in_um=400.0
    )
    nwbfile.add_device_model(fiber_model)
    fibers = []
    for name, ap in (('Fiber1', -3.1), ('Fiber2', 1.4)):
        fibers.append(
            od.OpticalFiber(
                name=name,
                model=fiber_model,
                fiber_insertion=od.FiberInsertion(
                    insertion_position_ap_in_mm=ap, hemisphere='right'
                ),
            )
        )
        nwbfile.add_device(fibers[-1])
    sources = {}
    for nm in (415.0, 470.0):
        model = od.ExcitationSourceModel(
            name=f'led{nm:.0f}_model',
            manufacturer='NPM',
            source_type='LED',
            excitation_mode='one-photon',
        )
        nwbfile.add_device_model(model)
        sources[nm] = od.ExcitationSource(name=f'ExcitationSource{nm:.0f}', model=model)
        nwbfile.add_device(sources[nm])
    cam_model = od.PhotodetectorModel(name='cmos_model', manufacturer='NPM', detector_type='CMOS')
    nwbfile.add_device_model(cam_model)
    camera = od.Photodetector(name='PhotodetectorCMOS', model=cam_model)
    nwbfile.add_device(camera)
    indicator = od.Indicator(name='GCaMP6f', label='GCaMP6f')
    table = FiberPhotometryTable(name='FiberPhotometryTable', description='NPM fibers')
    for nm in (470.0, 415.0):
        for fiber, location in zip(fibers, ('VTA', 'NAc')):
            table.add_row(
                location=location,
                excitation_wavelength_in_nm=nm,
                emission_wavelength_in_nm=520.0,
                indicator=indicator,
                optical_fiber=fiber,
                excitation_source=sources[nm],
                photodetector=camera,
            )
    nwbfile.add_lab_meta_data(
        FiberPhotometry(
            name='fiber_photometry',
            fiber_photometry_table=table,
            fiber_photometry_indicators=FiberPhotometryIndicators(indicators=[indicator]),
        )
    )
    onsets = np.arange(200) * 4.0 + 30
    feedback = onsets + 0.7
    rewarded = rng.random(200) < 0.6
    kernel = np.zeros(n)
    for tf, r in zip(feedback, rewarded):
        kernel += r * 0.05 * np.exp(-np.clip(t - tf, 0, None) / 0.5) * (t > tf)
    bleach = np.exp(-t / 400)
    iso = 0.2 + 0.1 * bleach[:, None] + rng.normal(0, 5e-4, (n, 2))
    sig = 0.3 + 0.15 * bleach[:, None] + rng.normal(0, 5e-4, (n, 2))
    sig[:, 1] += kernel
    for name, data, rows in (('Signal', sig, [0, 1]), ('Isosbestic', iso, [2, 3])):
        nwbfile.add_acquisition(
            FiberPhotometryResponseSeries(
                name=name,
                description=f'{name} channel',
                data=data,
                unit='a.u.',
                fiber_photometry_table_region=table.create_fiber_photometry_table_region(
                    region=rows, description='fibers'
                ),
                starting_time=0.0,
                rate=fs,
            )
        )
    for col in (
        'stimOn_times',
        'feedback_times',
        'firstMovement_times',
        'feedbackType',
        'choice',
        'contrastLeft',
        'contrastRight',
        'probabilityLeft',
    ):
        nwbfile.add_trial_column(col, col)
    for i, (t0, tf, r) in enumerate(zip(onsets, feedback, rewarded)):
        left = i % 2 == 0
        nwbfile.add_trial(
            start_time=t0 - 0.5,
            stop_time=tf + 1.0,
            stimOn_times=t0,
            feedback_times=tf,
            firstMovement_times=t0 + 0.3,
            feedbackType=1.0 if r else -1.0,
            choice=1.0 if left else -1.0,
            contrastLeft=1.0 if left else np.nan,
            contrastRight=np.nan if left else 1.0,
            probabilityLeft=0.5,
        )
    with NWBHDF5IO(str(path), 'w') as io:
        io.write(nwbfile)
    return path, rewarded


def test_reads_a_neuroconv_layout_file(tmp_path):
    path, rewarded = neuroconv_like_file(tmp_path / 'npm.nwb')
    ps = PhotometrySession.from_nwb(path)
    assert ps.regions == ['VTA', 'NAc'] and ps.subject == 'mouse7'
    assert set(ps.photometry) == {'GCaMP', 'Isosbestic'}
    assert ps.trials['signed_contrast'].abs().max() == 100
    ps.validate_trials_in_photometry_time()
    raw = ps.run_raw_qc()
    assert raw['n_early_samples'] == 0 and np.isnan(raw['n_band_inversions'])
    assert np.isnan(raw['n_dropped_frames'])
    ps.validate_qc()
    ps.run_sliding_qc()
    ps.preprocess()
    responses = ps.extract_responses()
    assert ps.photometry[PREPROCESSED_BAND].index[1] - ps.photometry[PREPROCESSED_BAND].index[
        0
    ] == pytest.approx(1 / 30)
    for region, planted in (('NAc', True), ('VTA', False)):
        resp = ps.subtract_baseline(responses[region])
        after = resp.sel(event='feedback_times', time=slice(0.1, 0.5)).mean('time').to_numpy()
        gap = np.nanmean(after[rewarded]) - np.nanmean(after[~rewarded])
        assert (gap > 0.5) if planted else (abs(gap) < 0.3), (region, gap)


# ---------------------------------------------------------------------------
# Real sessions (skip when ../shared is absent)
# ---------------------------------------------------------------------------
REAL_ROWS = {
    CQ002: {
        'subject': 'CQ002',
        'lab': 'cortexlab',
        'start_time': '2024-11-05T12:00:00',
        'number': 1,
        'strain': 'C57BL/6J',
        'line': 'Ai148xChat',
    },
    FIP40: {
        'subject': 'fip_40',
        'lab': 'wittenlab',
        'start_time': '2023-05-18T12:00:00',
        'number': 1,
        'strain': 'C57BL/6J',
        'line': 'Ai148xDat',
    },
}


def _processed_real(real_one, eid, h5_dir):
    from iblnm.pipeline.photometry import _run_tiers

    row = {
        'eid': eid,
        'session_type': 'training',
        'task_protocol': '_iblrig_tasks_trainingChoiceWorld',
        **REAL_ROWS[eid],
    }
    ps = PhotometrySession(row, one=real_one, h5_dir=h5_dir)
    _run_tiers(ps)
    ps.save_h5(mode='w')
    return row, ps


@pytest.mark.parametrize('eid', [CQ002, FIP40])
def test_real_session_export_and_round_trip(real_one, tmp_path, eid):
    import pynapple as nap

    from iblnm.pipeline.export_nwb import run_export_stage

    row, ps = _processed_real(real_one, eid, tmp_path / 'h5')
    result = run_export_stage(
        one=real_one,
        catalog=pd.DataFrame([row]),
        h5_dir=tmp_path / 'h5',
        out_dir=tmp_path / 'nwb',
        table_fpath=tmp_path / 'nwb.pqt',
        log_fpath=tmp_path / 'log.pqt',
        progress=False,
    )
    assert result.table['status'].tolist() == ['exported'], result.table
    path = result.table['path'].iloc[0]
    assert serious_issues(path) == []
    back = PhotometrySession.from_nwb(path)
    assert back.trials.shape[0] == ps.trials.shape[0]
    for band in ps.photometry:
        pd.testing.assert_frame_equal(
            back.photometry[band], ps.photometry[band], check_names=False, rtol=1e-12
        )
    assert back.run_raw_qc() == ps.run_raw_qc() or eid == FIP40  # single band: see below
    back.run_sliding_qc()
    back.preprocess()
    back.extract_responses(events=list(ps.responses[ps.regions[0]]['event'].values))
    cols = [c for c in ps.qc.columns if c not in config.QC_RAW_METRICS]

    def by_row(qc):
        return qc[cols].sort_values(['brain_region', 'band']).reset_index(drop=True)

    pd.testing.assert_frame_equal(by_row(back.qc), by_row(ps.qc), rtol=1e-9)
    pd.testing.assert_frame_equal(
        back.photometry[PREPROCESSED_BAND], ps.photometry[PREPROCESSED_BAND], rtol=1e-9, atol=1e-9
    )
    for region in ps.regions:
        xr.testing.assert_allclose(back.responses[region], ps.responses[region])
    signal = nap.load_file(path)['GCaMP_470nm']
    np.testing.assert_allclose(signal.values, ps.photometry['GCaMP'].to_numpy())
    if eid == FIP40:  # no isosbestic: inversions not measurable from the file, stored value kept
        assert back.run_raw_qc()['n_band_inversions'] == 0


def test_export_stage_on_simulated_pipeline(small_pipeline, small_one, tmp_path):
    """Every session the pipeline processed is exported, inspector-clean, and reads back."""
    from iblnm.pipeline.export_nwb import run_export_stage, summary

    catalog = pd.read_parquet(small_pipeline / 'metadata' / 'sessions.pqt')
    kwargs = dict(
        one=small_one,
        catalog=catalog,
        h5_dir=small_pipeline / 'data' / 'sessions',
        out_dir=tmp_path / 'nwb',
        table_fpath=tmp_path / 'nwb.pqt',
        log_fpath=tmp_path / 'log.pqt',
        progress=False,
    )
    result = run_export_stage(**kwargs)
    table = result.table
    exported = table[table['status'] == 'exported']
    assert len(exported) > 0 and not (table['status'] == 'failed').any(), summary(result)
    for path in exported['path']:
        assert serious_issues(path) == [], path
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    processed = set(qc.dropna(subset=['brain_region'])['eid'])
    assert set(exported['eid']) <= processed
    back = PhotometrySession.from_nwb(exported['path'].iloc[0])
    back.preprocess()
    back.extract_responses()
    assert back.responses and np.isfinite(back.photometry[PREPROCESSED_BAND].to_numpy()).all()
    again = run_export_stage(**kwargs)  # a second run skips what is there
    assert (again.table['reason'] == 'already exported').sum() == len(exported)
    assert not [r for o in again.outcomes for r in o.rows if r['status'] != 'skipped']
