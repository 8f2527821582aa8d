"""Photometry loading from ONE for the real layouts (CQ002: current; fip_40: older, no isosbestic)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iblnm.loaders import (
    PhotometrySessionLoader,
    normalise_photometry_table,
    read_raw_photometry,
    roi_to_region,
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
