"""Photometry loading from ONE for the real layouts (CQ002: current; fip_40: older, no isosbestic)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iblnm import validation as v
from iblnm.loaders import (
    PhotometrySessionLoader,
    band_names,
    data_columns,
    normalise_photometry_table,
    pair_bands,
    pair_by_time,
    raw_frames_disagreement,
    read_raw_photometry,
    roi_to_region,
    task_span,
)
from iblnm.onecache import session_eid

CQ002 = session_eid('cortexlab', 'CQ002', '2024-11-05', 1)
FIP40 = session_eid('wittenlab', 'fip_40', '2023-05-18', 1)


def test_cq002_bands_restricted_to_task(real_one):
    loader = PhotometrySessionLoader(one=real_one, eid=CQ002)
    bands = loader.load_photometry()
    assert set(bands) == {'GCaMP', 'Isosbestic'}
    gcamp = bands['GCaMP']
    assert list(gcamp.columns) == ['SI', 'PPT']
    # matches ibl-photometry's restrict_to_session_time on this session (domain.md §1.6)
    assert len(gcamp) == len(bands['Isosbestic']) == 82213
    assert 21.6 < gcamp.index[0] < 21.62 and 2761.8 < gcamp.index[-1] < 2761.9
    assert np.median(np.diff(gcamp.index)) == pytest.approx(1 / 29.99, rel=1e-3)


def test_fip40_older_layout_without_isosbestic(real_one):
    loader = PhotometrySessionLoader(one=real_one, eid=FIP40)
    bands = loader.load_photometry()
    assert set(bands) == {'GCaMP'}
    assert list(bands['GCaMP'].columns) == ['DLS', 'DMS', 'NAcc']
    trials = loader.trials
    assert bands['GCaMP'].index[0] >= trials['intervals_0'].iloc[0] - 5


def test_raw_file_decodes_led_states(real_one, real_data_dir):
    loader = PhotometrySessionLoader(one=real_one, eid=CQ002)
    raw = read_raw_photometry(loader.raw_photometry_path())
    assert raw['led_state'].iloc[0] == 7  # all LEDs on the first frame
    counts = raw['band'].value_counts()
    assert counts['GCaMP'] == counts['Isosbestic'] == 93994
    # version_1: input bits (256/512) on top of Output0 (16) + LED: masking keeps every frame
    v1 = read_raw_photometry(
        real_data_dir / 'neurophotometrics_versions/version_1/_neurophotometrics_fpData.raw.pqt'
    )
    assert set(v1['led_state']) >= {273, 274, 529, 530}
    decoded = v1['band'].isin(['GCaMP', 'Isosbestic']).sum()
    assert decoded >= len(v1) - 10  # iblphotometry's table loses 494 of these frames
    # raw and extracted agree on sample counts
    extracted = pd.read_parquet(loader.one.eid2path(CQ002) / 'alf/photometry/photometry.signal.pqt')
    assert (extracted['name'] == 'GCaMP').sum() == counts['GCaMP']


def test_normalise_and_roi_names():
    table = pd.DataFrame(
        {
            'Region0G': [0.1, 0.2],
            'times': [0.0, 0.01],
            'wavelength': [0.0, 470.0],
            'name': ['None', 'GCaMP'],
            'color': [None, 'Blue'],
            'include': [False, True],
        }
    )
    out = normalise_photometry_table(table)
    assert out['valid'].tolist() == [False, True] and out['name'].tolist() == ['', 'GCaMP']
    assert np.isnan(out['wavelength'].iloc[0])
    locations = pd.DataFrame(
        {'brain_region': ['VTA-l', 'VTA-r', 'DR']}, index=pd.Index(['G0', 'G1', 'G2'], name='ROI')
    )
    assert roi_to_region(locations) == {'G0': 'VTA-l', 'G1': 'VTA-r', 'G2': 'DR'}


def test_band_names_that_contradict_the_leds_are_rejected(real_data_dir):
    """CQ002 with 'GCaMP' and 'Isosbestic' swapped (wavelengths kept): a ValueError naming the
    disagreement (the photometry stage logs it as InvalidPhotometryTable); the file as it is,
    dark frames without a wavelength and other band names pass."""
    path = real_data_dir / 'cortexlab/Subjects/CQ002/2024-11-05/001/alf/photometry'
    table = pd.read_parquet(path / 'photometry.signal.pqt')
    normalise_photometry_table(table)  # consistent as recorded
    swapped = table.assign(name=table['name'].map({'GCaMP': 'Isosbestic', 'Isosbestic': 'GCaMP'}))
    with pytest.raises(ValueError, match="named 'GCaMP' have wavelength 415 nm"):
        normalise_photometry_table(swapped)
    dark = pd.DataFrame(
        {'G0': [0.1] * 3, 'times': [0.0, 1.0, 2.0], 'wavelength': [0.0, 560.0, np.nan]}
    ).assign(name=['GCaMP', 'RCaMP', 'Isosbestic'])
    normalise_photometry_table(dark)


def _split_by_masks(table):
    """split_bands as written before session 8 (boolean masks, pandas' order of appearance):
    the reference its index-based version must equal."""
    from iblnm.loaders import data_columns

    rois = data_columns(table)
    cat = pd.Categorical(table['name'])[1:]
    codes, categories = cat.codes, cat.categories
    times, values = table['times'].to_numpy()[1:], table[rois].to_numpy(dtype=float)[1:]
    bands = {}
    for code in pd.unique(codes):
        band = '' if code < 0 else str(categories[code])
        if band not in ('', 'None'):
            rows = codes == code
            index = pd.Index(times[rows], name='times')
            bands[band] = pd.DataFrame(values[rows], index=index, columns=rois)
    return bands


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(['GCaMP', 'Isosbestic', 'RCaMP', '', 'None', None]), max_size=40),
    st.integers(0, 3),
)
def test_split_bands_equals_the_mask_based_split(names, n_rois):
    from iblnm.loaders import split_bands

    n = len(names)
    table = pd.DataFrame(
        {
            'times': np.arange(n, dtype=float) / 30,
            'valid': True,
            'wavelength': 470.0,
            'name': pd.Categorical(names),
            **{f'G{i}': np.arange(n, dtype=float) * (i + 1) for i in range(n_rois)},
        }
    )
    got, want = split_bands(table), _split_by_masks(table)
    assert list(got) == list(want)  # bands in order of first appearance
    for band in want:
        pd.testing.assert_frame_equal(got[band], want[band], check_exact=True)
        assert got[band].to_numpy().flags['C_CONTIGUOUS']


# ---------------------------------------------------------------------------
# Inputs from other labs and other extractions (fault sweep on the real sessions)
# ---------------------------------------------------------------------------
def test_bands_pair_by_position_unless_a_frame_is_missing_from_one():
    period = 1 / 30
    gcamp = np.arange(1000) * period
    iso = gcamp + period / 2  # 415 nm frames half a frame after the 470 nm ones
    assert pair_by_time(gcamp, iso) is None  # paired by position: left alone
    assert pair_by_time(gcamp, iso[:-3]) is None  # a shorter band is only cut
    jitter = np.random.default_rng(0).normal(0, 2e-4, iso.size)
    assert pair_by_time(gcamp, iso + jitter) is None
    missing = np.delete(iso, [100, 500, 501])
    index = pair_by_time(gcamp, missing)
    assert index.shape == (1000,)
    assert np.array_equal(np.flatnonzero(index < 0), [100, 500, 501])
    paired = index >= 0
    np.testing.assert_allclose(missing[index[paired]] - gcamp[paired], period / 2)


def test_pair_bands_reindexes_only_the_band_that_lost_frames():
    times = np.arange(600) / 30
    gcamp = pd.DataFrame({'VTA': np.arange(600.0)}, index=pd.Index(times, name='times'))
    keep = np.setdiff1d(np.arange(600), [10, 11, 300])
    iso = pd.DataFrame({'VTA': -np.arange(600.0)[keep]}, index=times[keep] + 1 / 60)
    other = pd.DataFrame({'VTA': np.zeros(100)}, index=times[:100])
    out = pair_bands({'GCaMP': gcamp, 'Isosbestic': iso, 'RCaMP': other})
    assert len(out['GCaMP']) == len(out['Isosbestic']) == 600
    values = out['Isosbestic']['VTA'].to_numpy()
    assert np.isnan(values[[10, 11, 300]]).all()
    np.testing.assert_array_equal(values[keep], -keep)  # each sample beside its own pair
    assert len(out['RCaMP']) == 100  # a band not paired is not cut


def test_band_names_come_from_the_leds_when_they_are_not_a_bands():
    wavelength = np.array([np.nan, 470.0, 415.0, 470.0, 415.0, 560.0, np.nan])
    names = pd.Categorical(['', 'GCAMP', 'iso', '', 'Isosbestic', '', 'None'])
    assert list(band_names(names, wavelength)) == [
        '',
        'GCaMP',
        'Isosbestic',
        'GCaMP',
        'Isosbestic',
        'RCaMP',
        'None',
    ]
    assert list(band_names(None, wavelength[1:3])) == ['GCaMP', 'Isosbestic']
    with pytest.raises(ValueError, match='disagree'):  # a known name on another LED
        band_names(pd.Categorical(['gcamp']), np.array([415.0]))


def test_task_span_of_tables_without_trial_times_is_typed():
    trials = pd.DataFrame({'intervals_0': [1.0, np.nan, 5.0], 'intervals_1': [2.0, 6.0, np.nan]})
    assert task_span(trials) == (1.0, 6.0)
    with pytest.raises(v.InsufficientTrials, match='n_trials=0'):
        task_span(trials.iloc[:0])
    with pytest.raises(v.InvalidTrialsTable, match='intervals_0'):
        task_span(trials.assign(intervals_0=np.nan))


def test_raw_frames_that_cannot_be_the_tables_recording():
    times = np.arange(1000) / 60
    assert raw_frames_disagreement(times, 1000) is None
    assert raw_frames_disagreement(times, 995) is None  # within 1 %
    assert raw_frames_disagreement(times, None) is None
    assert '0 frame' in raw_frames_disagreement(times[:0], 1000)
    assert 'non-finite' in raw_frames_disagreement(np.where(times > 5, np.nan, times), 1000)
    assert 'extracted table 2000' in raw_frames_disagreement(times, 2000)


def test_text_and_boolean_columns_are_no_rois():
    table = pd.DataFrame({'G0': [1.0], 'R1': [2], 'Rig': ['NPH'], 'Good': [True], 'times': [0.0]})
    assert data_columns(table) == ['G0', 'R1']
    assert data_columns(list(table.columns)) == ['G0', 'R1', 'Rig', 'Good']  # names only


def test_the_locations_table_names_rois_of_any_name():
    table = pd.DataFrame({'Fiber1': [1.0], 'G0': [2.0], 'CH2': [3], 'Rig': ['NPH'], 'times': [0.0]})
    assert data_columns(table) == ['G0']  # Neurophotometrics names only
    assert data_columns(table, rois=['Fiber1', 'CH2']) == ['Fiber1', 'G0', 'CH2']
    assert data_columns(table, rois=['Rig', 'times']) == ['G0']  # text and meta never ROIs
