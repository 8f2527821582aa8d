"""The recordings table and the one rule naming a recording (iblnm.recordings)."""

from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from iblnm import recordings as rt
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.loaders import normalise_photometry_table, roi_to_region
from iblnm.validation import fix_region_name, strip_hemisphere_suffix

EID = '00000000-0000-4000-8000-00000000000a'


def _names_before_the_recordings_table(locations):
    """The loader's naming of session 5 (kept here verbatim): H5 files written before the
    recordings table are named by it."""
    regions = [fix_region_name(r) for r in locations['brain_region']]
    bare = [strip_hemisphere_suffix(r) for r in regions]
    names = [b if bare.count(b) == 1 else r for b, r in zip(bare, regions)]
    if len(set(names)) != len(names):
        names = [f'{n}_{roi}' for n, roi in zip(names, locations.index)]
    return dict(zip(locations.index.astype(str), names))


@pytest.mark.parametrize(
    'regions, hemispheres, rois, keys',
    [
        (['VTA', 'DR'], None, None, ['VTA', 'DR']),
        (['VTA-l', 'DR'], None, None, ['VTA', 'DR']),  # unique: bare, whatever the suffix
        (['VTA', 'VTA'], ['l', 'r'], None, ['VTA-l', 'VTA-r']),
        (['VTA-l', 'VTA-r', 'SNc'], None, None, ['VTA-l', 'VTA-r', 'SNc']),
        (['VTA', 'VTA'], ['l', 'l'], ['G0', 'G1'], ['VTA-l_G0', 'VTA-l_G1']),
        (['VTA', 'VTA'], ['', None], None, ['VTA_0', 'VTA_1']),
        (['DRN-l', 'SNC'], None, None, ['DR', 'SNc']),  # config.REGION_NAME_FIXES
    ],
)
def test_recording_keys(regions, hemispheres, rois, keys):
    assert rt.recording_keys(regions, hemispheres, rois) == keys


def test_keys_equal_the_h5_names_of_files_written_before_the_table():
    """Old files still load by key: on every location layout, the loader's names (the H5
    group names) are those of the naming rule the files were written with."""
    rng = np.random.default_rng(0)
    pool = ['VTA', 'VTA-l', 'VTA-r', 'DR', 'DRN-l', 'SNc', 'LC-r', 'LC-l', 'NBM']
    for _ in range(300):
        n = int(rng.integers(1, 5))
        regions = list(rng.choice(pool, n))
        locations = pd.DataFrame(
            {'brain_region': regions}, index=pd.Index([f'G{i}' for i in range(n)], name='ROI')
        )
        assert roi_to_region(locations) == _names_before_the_recordings_table(locations)


def _session(regions, hemispheres):
    row = {
        'eid': EID,
        'subject': 'm1',
        'NM': 'DA',
        'brain_region': regions,
        'hemisphere': hemispheres,
        'target_NM': [f'{r}-DA' for r in regions],
    }
    return PhotometrySession(row)


def _table(n_rois, nan_roi=None):
    n = 21
    table = pd.DataFrame(
        {
            'times': np.arange(n) / 30.0,
            'valid': True,
            'wavelength': np.r_[np.nan, np.resize([470.0, 415.0], n - 1)],
            'name': ['', *np.resize(['GCaMP', 'Isosbestic'], n - 1)],
        }
    )
    for i in range(n_rois):
        table[f'G{i}'] = np.nan if i == nan_roi else 0.1 + 0.01 * i + 1e-3 * np.arange(n)
    return normalise_photometry_table(table)


def test_a_dropped_fiber_does_not_rename_the_other():
    """Keys are computed over all the session's fibers: when bilateral VTA-l is dropped
    (all NaN: BadFiber), the other fiber stays 'VTA-r' (it was renamed 'VTA')."""
    locations = pd.DataFrame(
        {'fiber': ['fiber00', 'fiber01'], 'brain_region': ['VTA-l', 'VTA-r']},
        index=pd.Index(['G0', 'G1'], name='ROI'),
    )
    ps = _session(['VTA', 'VTA'], ['l', 'r'])
    bands = ps._validated_bands(_table(2, nan_roi=0), locations)
    assert [e['error_type'] for e in ps.errors] == ['BadFiber']
    assert {band: list(frame.columns) for band, frame in bands.items()} == {
        'GCaMP': ['VTA-r'],
        'Isosbestic': ['VTA-r'],
    }


def test_dropped_fibers_are_counted_as_fail():
    """A fiber dropped at load has a FAIL row (``dropped_fiber``) per band, beside the kept
    fiber's rows; when every fiber is dropped the session fails (BadFiber) with a FAIL row for
    each, so the verdict counts hold every recording the locations table names."""
    locations = pd.DataFrame(
        {'fiber': ['fiber00', 'fiber01'], 'brain_region': ['VTA-l', 'VTA-r']},
        index=pd.Index(['G0', 'G1'], name='ROI'),
    )
    ps = _session(['VTA', 'VTA'], ['l', 'r'])
    bands = ps._validated_bands(_table(2, nan_roi=0), locations)
    assert len(ps.qc) == 2  # read before the bands are set: not kept as the session's table
    ps.photometry = bands
    verdicts = ps.verdicts.set_index('brain_region')
    assert verdicts.loc['VTA-l', 'verdict'] == 'FAIL'
    assert verdicts.loc['VTA-l', 'verdict_reasons'] == 'dropped_fiber'
    # no metric yet (its placeholder rows): not assessed, not a PASS
    assert verdicts.loc['VTA-r', ['verdict', 'verdict_reasons']].tolist() == [
        'FAIL',
        'not_assessed',
    ]
    assert sorted(map(tuple, ps.qc[['brain_region', 'band']].to_numpy())) == [
        ('VTA-l', 'GCaMP'),
        ('VTA-l', 'Isosbestic'),
        ('VTA-r', 'GCaMP'),
        ('VTA-r', 'Isosbestic'),
    ]
    # a reload that fails early (here: repeated times) keeps no drop of the earlier load
    bad_times = _table(2).assign(times=0.0)
    ps.trials = pd.DataFrame()  # what load_photometry needs besides the table
    ps._has_dataset = lambda *args, **kwargs: True
    ps._loader = SimpleNamespace(load_photometry_table=lambda: (bad_times, locations))
    with pytest.raises(v.InvalidPhotometryTimes):
        ps.load_photometry()
    assert 'VTA-l' not in set(ps.qc['brain_region'])
    table = _table(2, nan_roi=0).assign(G1=0.5)  # the other one constant: none left
    ps = _session(['VTA', 'VTA'], ['l', 'r'])
    with pytest.raises(v.BadFiber) as raised:
        ps._validated_bands(table, locations)
    assert list(ps.verdicts['verdict']) == ['FAIL', 'FAIL']
    assert set(ps.qc['verdict_reasons']) == {'dropped_fiber'}
    # the raised error is the stage's fatal row; the other fiber's error is logged beside it
    assert 'G0 (VTA-l)' in str(raised.value)
    assert [e['error_message'][:10] for e in ps.errors] == ['G1 (VTA-r)']


def test_the_catalog_hemispheres_name_the_columns():
    """A location without suffix whose side the catalog knows (fibers table) is named with
    the catalog's hemisphere, as in the recordings table."""
    locations = pd.DataFrame(
        {'brain_region': ['VTA', 'VTA']}, index=pd.Index(['G0', 'G1'], name='ROI')
    )
    ps = _session(['VTA', 'VTA'], ['l', 'r'])
    bands = ps._validated_bands(_table(2), locations)
    table = rt.recordings_table(pd.DataFrame([ps.metadata | {'subject': 'm1'}]))
    assert list(bands['GCaMP'].columns) == list(table['recording']) == ['VTA-l', 'VTA-r']


def test_recordings_table_rows_and_coordinates():
    sessions = pd.DataFrame(
        [
            {
                'eid': EID,
                'subject': 'm1',
                'NM': 'DA',
                'brain_region': ['VTA', 'VTA', 'SNc'],
                'hemisphere': ['l', 'r', ''],
                'target_NM': ['VTA-DA', 'VTA-DA', 'SNc-DA'],
            },
            {
                'eid': 'e2',
                'subject': 'm2',
                'NM': '5HT',
                'brain_region': [],
                'hemisphere': [],
                'target_NM': [],
            },
        ]
    )
    fibers = pd.DataFrame(
        {
            'subject': ['m1', 'm1', 'm1'],
            'targeted_region': ['VTA', 'VTA', 'SNc'],
            'X-ml_um': [500.0, -500.0, 1200.0],  # fibers table: > 0 = left
            'Y-ap_um': [-3100.0, -3200.0, -3000.0],
            'Z-dv_um': [-4300.0, -4400.0, -4200.0],
        }
    )
    table = rt.recordings_table(sessions, rois={EID: ['G0', 'G1', 'G2']}, fibers=fibers)
    assert list(table.columns) == rt.RECORDING_COLUMNS
    assert list(table['recording']) == ['VTA-l', 'VTA-r', 'SNc']
    assert list(table['recording_id']) == [f'{EID}/VTA-l', f'{EID}/VTA-r', f'{EID}/SNc']
    assert list(table['fiber_idx']) == [0, 1, 2] and list(table['roi']) == ['G0', 'G1', 'G2']
    assert list(table['X-ml_um'][:2]) == [500.0, -500.0]  # left fiber at X > 0
    assert list(table['Y-ap_um'][:2]) == [-3100.0, -3200.0]
    # SNc: hemisphere unknown and one insertion of m1 there: its coordinates
    assert table['Z-dv_um'].iloc[2] == -4200.0
    # ambiguous (two VTA insertions, hemisphere unknown): NaN, never a guess
    unknown = sessions.iloc[[0]].assign(
        hemisphere=[['', '', '']], brain_region=[['VTA', 'SNc', 'LC']]
    )
    coords = rt.recordings_table(unknown, fibers=fibers)[rt.COORDINATE_COLUMNS]
    assert coords.iloc[0].isna().all() and coords.iloc[2].isna().all()


def test_the_catalog_stage_writes_the_recordings_of_every_fiber(small_pipeline, small_cache):
    """One row per catalog fiber; its key names the fiber's H5 group and QC rows; ROI and
    coordinates from the cache's locations tables and fibers table."""
    catalog = pd.read_parquet(small_pipeline / 'metadata' / 'sessions.pqt')
    table = pd.read_parquet(small_pipeline / 'metadata' / 'recordings.pqt')
    assert list(table.columns) == rt.RECORDING_COLUMNS
    assert len(table) == int(catalog['brain_region'].map(len).sum()) > 0
    assert table['recording_id'].is_unique
    exploded = catalog.explode(['brain_region', 'hemisphere', 'target_NM']).dropna(
        subset=['brain_region']
    )
    assert list(table['brain_region']) == list(exploded['brain_region'])
    assert list(table['hemisphere']) == list(exploded['hemisphere'])
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    keys = table.groupby('eid')['recording'].agg(set)
    n_files = 0
    for path in sorted((small_pipeline / 'data' / 'sessions').glob('*.h5')):
        with h5py.File(path, 'r') as f:
            groups = set(f['photometry']) if 'photometry' in f else set()
        assert groups <= keys.get(path.stem, set()), path.stem
        n_files += bool(groups)
    assert n_files > 0
    qc_keys = qc.dropna(subset=['brain_region']).groupby('eid')['brain_region'].agg(set)
    assert all(qc_keys[eid] <= keys[eid] for eid in qc_keys.index)
    # ROI names are the locations tables' index (the simulator's G0, G1 ...)
    assert table['roi'].notna().all() and table['roi'].str.fullmatch(r'G\d').all()
    fibers = pd.read_parquet(small_cache / 'alyx' / 'fibers.pqt')
    sided = table[table['hemisphere'].isin(['l', 'r']) & table['X-ml_um'].notna()]
    assert len(sided) > 0
    assert ((sided['X-ml_um'] > 0) == (sided['hemisphere'] == 'l')).all()
    assert set(zip(sided['subject'], sided['X-ml_um'])) <= set(
        zip(fibers['subject'], fibers['X-ml_um'])
    )
