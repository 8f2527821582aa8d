"""HDF5 layout: exact round trips (property tests), single-region reads, atomicity, corruption."""

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iblnm import h5
from iblnm.validation import CorruptH5, MissingH5

floats = st.floats(allow_nan=True, allow_infinity=False, width=64)
floats32 = st.floats(allow_nan=True, allow_infinity=False, width=32)
# NUL and lone surrogates are escaped on save (tested below), so exact round trips exclude them
text = st.text(
    alphabet=st.characters(blacklist_characters='\x00', blacklist_categories=('Cs',)), max_size=20
)


@st.composite
def responses(draw):
    n_events = draw(st.integers(0, 3))
    n_trials = draw(st.integers(0, 12))
    n_time = draw(st.integers(1, 8))
    data = draw(arrays(np.float32, (n_events, n_trials, n_time), elements=floats32))
    events = [f'event{i}_times' for i in range(n_events)]
    trials = draw(arrays(np.int64, n_trials, elements=st.integers(0, 10_000), unique=True))
    attrs = {'fs': 30.0, 'response_window': (-1.0, 3.0)}
    if draw(st.booleans()):  # written by extract_responses since issue 13
        attrs.update(
            align='linear',
            band='GCaMP_preprocessed',
            n_masked={e: draw(st.integers(0, 50)) for e in events},
        )
    return xr.DataArray(
        data,
        dims=('event', 'trial', 'time'),
        coords={'event': events, 'trial': trials, 'time': np.arange(n_time) / 30 - 1},
        attrs=attrs,
    )


@st.composite
def segments(draw):
    n = draw(st.integers(0, 6))
    stops = np.cumsum(draw(arrays(np.int64, n, elements=st.integers(1, 1000))))
    return pd.DataFrame(
        {
            'start': np.r_[0, stops[:-1]].astype(np.int64)[:n],
            'stop': stops.astype(np.int64),
            'start_time': draw(arrays(np.float64, n, elements=floats)),
            'stop_time': draw(arrays(np.float64, n, elements=floats)),
            'kind': draw(
                st.lists(
                    st.sampled_from(['valid', 'floor', 'dropout', 'disconnected']),
                    min_size=n,
                    max_size=n,
                )
            ),
        }
    )


@st.composite
def session_data(draw):
    n = draw(st.integers(0, 50))
    regions = draw(
        st.lists(
            st.sampled_from(['VTA', 'DR', 'LC-l', 'LC-r', 'NBM']),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    photometry = {}
    for region in regions:
        photometry[region] = {
            'preprocessed': {
                'times': draw(arrays(np.float64, n, elements=floats)),
                'signal': draw(arrays(np.float64, n, elements=floats)),
                'dff': draw(arrays(np.float64, n, elements=floats)),
                'fs': 30,
                'params': {'bleach': {'cutoff_hz': 0.01}},
            },
            'artefacts': draw(segments()),
            'responses': draw(responses()),
            'qc': pd.DataFrame(
                {
                    'band': ['GCaMP', 'Isosbestic'],
                    'ar_score': draw(arrays(np.float64, 2, elements=floats)),
                }
            ),
        }
    n_trials = draw(st.integers(0, 20))
    trials = pd.DataFrame(
        {
            'stimOn_times': draw(arrays(np.float64, n_trials, elements=floats)),
            'choice': draw(
                arrays(np.float64, n_trials, elements=st.sampled_from([-1.0, 0.0, 1.0]))
            ),
            'stim_side': draw(
                st.lists(
                    st.sampled_from(['left', 'right', None]), min_size=n_trials, max_size=n_trials
                )
            ),
        }
    )
    metadata = {
        'eid': 'e',
        'subject': draw(text),
        'number': 1,
        'session_length': draw(floats),
        'NM': None,
        'brain_region': regions,
        'hemisphere': ['l'] * len(regions),
    }
    errors = [{'eid': 'e', 'error_type': 'X', 'error_message': draw(text), 'traceback': None}]
    wheel = {
        'velocity': draw(
            arrays(
                np.float32,
                (n_trials, 5),
                elements=st.floats(allow_nan=True, allow_infinity=False, width=32),
            )
        ),
        'fs': 100,
        't0_event': 'stimOn_times',
        't1_event': 'feedback_times',
    }
    return {
        'metadata': metadata,
        'errors': errors,
        'photometry': photometry,
        'trials': trials,
        'wheel': wheel,
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=session_data())
def test_roundtrip_is_exact(tmp_path, data):
    path = tmp_path / 'x.h5'
    h5.save_h5(path, data, mode='w')
    back = h5.load_h5(path)
    assert back['metadata'] == {
        **data['metadata'],
        'session_length': back['metadata']['session_length'],
    }
    np.testing.assert_equal(back['metadata']['session_length'], data['metadata']['session_length'])
    pd.testing.assert_frame_equal(back['errors'], pd.DataFrame(data['errors']))
    pd.testing.assert_frame_equal(back['trials'], data['trials'], check_dtype=False)
    np.testing.assert_array_equal(back['wheel']['velocity'], data['wheel']['velocity'])
    assert back['wheel']['velocity'].dtype == np.float32
    for region, parts in data['photometry'].items():
        got = back['photometry'][region]
        for name in ('signal', 'dff'):
            np.testing.assert_array_equal(got['preprocessed'][name], parts['preprocessed'][name])
        pd.testing.assert_frame_equal(got['artefacts'], parts['artefacts'])
        assert got['preprocessed']['params'] == parts['preprocessed']['params']
        xr.testing.assert_identical(got['responses'], parts['responses'])
        pd.testing.assert_frame_equal(got['qc'], parts['qc'])  # column order kept


def test_single_region_read_and_groups(tmp_path):
    resp = xr.DataArray(
        np.ones((1, 2, 3)),
        dims=('event', 'trial', 'time'),
        coords={'event': ['stimOn_times'], 'trial': [0, 1], 'time': [0.0, 0.1, 0.2]},
        attrs={'fs': 30.0, 'response_window': (-1.0, 1.0)},
    )
    data = {'photometry': {r: {'responses': resp} for r in ('VTA', 'DR')}, 'errors': []}
    path = h5.save_h5(tmp_path / 'x.h5', data, mode='w')
    only = h5.load_h5(path, groups=['photometry'], regions=['DR'])
    assert list(only) == ['photometry'] and list(only['photometry']) == ['DR']
    h5.save_h5(
        path, {'wheel': {'velocity': np.zeros((2, 3)), 'fs': 100, 't0_event': 'a', 't1_event': 'b'}}
    )
    assert set(h5.h5_groups(path)) == {'photometry', 'errors', 'wheel'}  # append kept the rest
    with pytest.raises(ValueError, match='unknown H5 groups'):
        h5.save_h5(path, {'bogus': 1})


def test_responses_of_the_original_layout_still_read(tmp_path):
    """Files written before issue 13: float64 T x 60, window [-1, 1), no align/n_masked."""
    path = tmp_path / 'old.h5'
    with h5py.File(path, 'w') as f:
        sub = f.create_group('photometry/VTA/responses')
        sub['times'] = np.arange(-30, 30) / 30
        sub['trials'] = np.arange(4, dtype=np.int64)
        sub['stimOn_times'] = np.ones((4, 60))
        sub.attrs['events'] = '["stimOn_times"]'
        sub.attrs['fs'] = 30
        sub.attrs['response_window'] = [-1.0, 1.0]
    got = h5.load_h5(path, groups=['photometry'])['photometry']['VTA']['responses']
    assert got.shape == (1, 4, 60) and got.dtype == np.float64
    assert got.attrs == {'fs': 30.0, 'response_window': (-1.0, 1.0)}
    new = got.astype(np.float32).assign_attrs(n_masked={'stimOn_times': 2}, align='linear')
    h5.save_h5(path, {'photometry': {'VTA': {'responses': new}}})
    with h5py.File(path, 'r') as f:  # the original reader's view: one T x W dataset per event
        assert f['photometry/VTA/responses/stimOn_times'].dtype == np.float32
        assert list(f['photometry/VTA/responses'].attrs['response_window']) == [-1.0, 1.0]
    back = h5.load_h5(path, groups=['photometry'])['photometry']['VTA']['responses']
    assert back.attrs['n_masked'] == {'stimOn_times': 2} and back.attrs['align'] == 'linear'


def test_files_without_dff_or_artefacts_stay_readable(tmp_path):
    """Files written before issue 12 have neither preprocessed/dff nor artefacts/."""
    path = tmp_path / 'old.h5'
    with h5py.File(path, 'w') as f:
        pre = f.create_group('photometry/VTA/preprocessed')
        pre.create_dataset('times', data=np.arange(3.0))
        pre.create_dataset('signal', data=np.zeros(3))
        pre.attrs['fs'] = 30
        pre.attrs['params'] = '{}'
    back = h5.load_h5(path)['photometry']['VTA']
    assert set(back) == {'preprocessed'} and 'dff' not in back['preprocessed']
    np.testing.assert_array_equal(back['preprocessed']['signal'], np.zeros(3))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(MissingH5):
        h5.load_h5(tmp_path / 'nope.h5')
    path = h5.save_h5(tmp_path / 'x.h5', {'errors': []}, mode='w')
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # truncated
    with pytest.raises(CorruptH5):
        h5.load_h5(path)
    path.write_bytes(b'not an hdf5 file at all')
    with pytest.raises(CorruptH5):
        h5.load_h5(path)
    with pytest.raises(CorruptH5):  # appending to a corrupt file is refused, not overwritten
        h5.save_h5(path, {'errors': []})


def test_failed_write_keeps_previous_file(tmp_path):
    path = h5.save_h5(
        tmp_path / 'x.h5',
        {'errors': [{'eid': 'e', 'error_type': 'A', 'error_message': 'm', 'traceback': None}]},
        mode='w',
    )
    with pytest.raises(AttributeError):
        h5.save_h5(path, {'trials': 'not a frame'})
    assert h5.load_h5(path)['errors']['error_type'].tolist() == ['A']
    assert [p.name for p in tmp_path.iterdir()] == ['x.h5']
    with h5py.File(path, 'r') as f:
        assert 'trials' not in f


def test_nul_characters_are_escaped_not_fatal(tmp_path):
    entry = {'eid': 'e', 'error_type': 'X', 'error_message': 'a\x00b', 'traceback': None}
    path = h5.save_h5(
        tmp_path / 'x.h5', {'errors': [entry], 'metadata': {'subject': 'm\x00'}}, mode='w'
    )
    back = h5.load_h5(path)
    assert back['errors']['error_message'][0] == 'a\\x00b'
    assert back['metadata']['subject'] == 'm\\x00'


def test_lone_surrogates_are_escaped_not_fatal(tmp_path):
    entry = {'eid': 'e', 'error_type': 'X', 'error_message': 'bad \udcff name', 'traceback': None}
    h5.save_h5(tmp_path / 'x.h5', {'errors': [entry], 'metadata': {'subject': '\ud800'}}, mode='w')
    back = h5.load_h5(tmp_path / 'x.h5')
    assert back['errors']['error_message'][0] == 'bad \\udcff name'
    assert back['metadata']['subject'] == '\\ud800'


@pytest.mark.parametrize(
    'text', [h5.NONE_STR, h5.ESCAPE_STR, h5.ESCAPE_STR + h5.NONE_STR, h5.ESCAPE_STR * 2, '', 'x']
)
def test_strings_that_look_like_the_none_marker_read_back_as_written(tmp_path, text):
    entries = [
        {'eid': 'e', 'error_type': 'X', 'error_message': text, 'traceback': None},
        {'eid': 'e', 'error_type': text, 'error_message': None, 'traceback': 'tb'},
    ]
    path = h5.save_h5(tmp_path / 'x.h5', {'errors': entries, 'metadata': {'subject': text}})
    back = h5.load_h5(path)
    assert back['errors']['error_message'].tolist() == [text, None]
    assert back['errors']['error_type'].tolist() == ['X', text]
    assert back['metadata']['subject'] == text


def _padded_wheel(rng, n_trials=300, fs=100):
    """Per-trial velocity as the wheel stage makes it: rows of 0.3-6 s, NaN-padded to the longest
    row, a few all-NaN rows (NaN events) and NaNs inside rows past the end of the recording."""
    lengths = (rng.uniform(0.3, 6, n_trials) * fs).astype(int)
    lengths[-1] = 30 * fs  # one long trial makes the matrix mostly padding
    velocity = np.full((n_trials, lengths.max()), np.nan, np.float32)
    for i, n in enumerate(lengths):
        velocity[i, :n] = rng.normal(0, 2, n)
    velocity[5] = np.nan
    velocity[7, 10:20] = np.nan  # inside the row: kept as it is
    return velocity


def test_wheel_stored_ragged_and_old_padded_files_still_load(tmp_path):
    velocity = _padded_wheel(np.random.default_rng(0))
    wheel = {
        'velocity': velocity,
        'fs': 100,
        't0_event': 'stimOn_times',
        't1_event': 'feedback_times',
    }
    path = h5.save_h5(tmp_path / 'new.h5', {'wheel': wheel}, mode='w')
    with h5py.File(path, 'r') as f:
        sub = f['wheel/responses']
        assert 'velocity' not in sub and sub.attrs['layout'] == 'ragged'
        assert sub['velocity_values'].shape == (np.count_nonzero(~np.isnan(velocity)) + 10,)
    back = h5.load_h5(path)['wheel']
    np.testing.assert_array_equal(back['velocity'], velocity)
    assert back['velocity'].dtype == np.float32
    assert {k: back[k] for k in ('fs', 't0_event', 't1_event')} == {
        'fs': 100,
        't0_event': 'stimOn_times',
        't1_event': 'feedback_times',
    }
    # a file of the previous layout (padded T x W matrix), written as the old writer did
    old = tmp_path / 'old.h5'
    with h5py.File(old, 'w') as f:
        sub = f.create_group('wheel').create_group('responses')
        sub.create_dataset('velocity', data=velocity)
        for key in ('fs', 't0_event', 't1_event'):
            sub.attrs[key] = wheel[key]
    old_back = h5.load_h5(old)['wheel']
    np.testing.assert_array_equal(old_back['velocity'], velocity)
    assert set(old_back) == set(back)
    assert path.stat().st_size < 0.2 * old.stat().st_size


def test_no_padding_and_compression_only_where_it_pays(tmp_path):
    rng = np.random.default_rng(1)
    n = 108_000  # 1 h at 30 Hz
    times = 20 + np.arange(n) / 30
    trials = pd.DataFrame({'stimOn_times': np.sort(rng.uniform(0, 3600, 400))})
    resp = xr.DataArray(
        rng.normal(size=(1, 400, 60)),
        dims=('event', 'trial', 'time'),
        coords={'event': ['stimOn_times'], 'trial': np.arange(400), 'time': np.arange(60) / 30 - 1},
        attrs={'fs': 30.0, 'response_window': (-1.0, 1.0)},
    )
    photometry = {
        r: {
            'preprocessed': {'times': times, 'signal': rng.normal(size=n), 'fs': 30},
            'responses': resp,
        }
        for r in ('VTA', 'DR')
    }
    wheel = {
        'velocity': _padded_wheel(rng, n_trials=1000),
        'fs': 100,
        't0_event': 'a',
        't1_event': 'b',
    }
    path = h5.save_h5(
        tmp_path / 'x.h5', {'photometry': photometry, 'trials': trials, 'wheel': wheel}, mode='w'
    )
    values = 0
    with h5py.File(path, 'r') as f:
        assert f['photometry/VTA/preprocessed/times'].compression is None  # float: contiguous
        assert f['photometry/VTA/preprocessed/signal'].compression is None
        assert f['photometry/VTA/responses/trials'].compression is None  # < 4 KiB
        assert f['wheel/responses/velocity_offsets'].compression == 'gzip'  # 8 KB of int64

        def count(_, obj):
            nonlocal values
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                finite = np.count_nonzero(~np.isnan(data)) if data.dtype.kind == 'f' else data.size
                values += finite * data.dtype.itemsize

        f.visititems(count)
    assert path.stat().st_size <= 1.3 * values
    regions = h5.load_h5(path, groups=['photometry'], regions=['DR'])['photometry']
    np.testing.assert_array_equal(regions['DR']['preprocessed']['times'], times)


def test_all_nan_float_arrays_are_compressed_and_read_back(tmp_path):
    """A fiber the artefact masks removed entirely stores all-NaN traces: compressed (they
    made a demo file 3.9x its real values), noisy float data stays contiguous."""
    n = 100_000
    noisy = np.random.default_rng(0).normal(size=n)
    path = tmp_path / 'nan.h5'
    with h5py.File(path, 'w') as f:
        h5.create_dataset(f, 'masked', np.full(n, np.nan))
        h5.create_dataset(f, 'noisy', noisy)
    with h5py.File(path, 'r') as f:
        assert f['masked'].compression == 'gzip' and f['masked'].id.get_storage_size() < n
        assert f['noisy'].compression is None
        assert np.isnan(f['masked'][()]).all()
        np.testing.assert_array_equal(f['noisy'][()], noisy)


# ---------------------------------------------------------------------------
# The low-level writer (issue 19, session 7): the files h5py's high-level calls made
# ---------------------------------------------------------------------------
def _objects(path):
    """{name: (kind, dtype, shape, values, attrs, storage, creation properties, type class,
    string encoding, link encoding, object header)} of every object of a file: what two files
    holding "the same datasets" agree on (storage and timestamps included)."""
    out = {}
    with h5py.File(path, 'r') as f:

        def visit(name, obj):
            parent = obj.parent  # held: the link proxy does not keep its group open
            link = parent.id.links.get_info(name.rsplit('/', 1)[-1].encode()).cset
            attrs = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Group):
                out[name] = ('group', list(obj), attrs, link)
                return
            dcpl, tid = obj.id.get_create_plist(), obj.id.get_type()
            info = h5py.h5o.get_info(obj.id)  # header messages: timestamps, fill value, ...
            header = (info.hdr.version, info.hdr.nmesgs, info.hdr.flags, info.ctime != 0)
            values = obj.asstr()[()] if obj.dtype.kind == 'O' else obj[()]
            out[name] = (
                'dataset',
                obj.dtype.str,
                obj.shape,
                np.asarray(values).tolist(),
                attrs,
                (obj.chunks, obj.compression, obj.compression_opts, obj.shuffle),
                (dcpl.get_layout(), dcpl.get_obj_track_times(), dcpl.fill_value_defined()),
                (dcpl.get_fill_time(), dcpl.get_alloc_time(), tid.get_class()),
                tid.get_cset() if isinstance(tid, h5py.h5t.TypeStringID) else None,
                link,
                header,
            )

        f.visititems(visit)
        out['/'] = ('group', list(f), {k: np.asarray(v).tolist() for k, v in f.attrs.items()})
    return out


def _high_level_contiguous(group, name, array, dtype=None):
    """The writer before session 7: h5py's ``create_dataset`` (the reference)."""
    group.create_dataset(name, data=array, dtype=dtype)


def _nan_to_none(values):
    """NaN -> None in nested dicts and lists, so that NaN compares equal to NaN."""
    if isinstance(values, dict):
        return {k: _nan_to_none(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [_nan_to_none(v) for v in values]
    return None if isinstance(values, float) and np.isnan(values) else values


numeric_arrays = st.one_of(
    *(
        arrays(
            dtype,
            st.one_of(
                st.just(()),
                st.tuples(st.integers(0, 9)),
                (st.tuples(st.integers(0, 4), st.integers(1, 4))),
            ),
        )
        for dtype in (np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_)
    )
)


@settings(max_examples=60, deadline=None)
@given(array=numeric_arrays, strings=st.lists(st.one_of(text, st.none()), max_size=5))
def test_low_level_writer_makes_what_h5py_create_dataset_makes(tmp_path_factory, array, strings):
    """Same dataset (dtype, shape, values, layout, creation properties, encodings) as
    ``group.create_dataset`` for every dtype and shape the layout stores, strings included."""
    folder = tmp_path_factory.mktemp('writer')
    for path, write in (('fast.h5', h5._write_contiguous), ('ref.h5', _high_level_contiguous)):
        with h5py.File(folder / path, 'w') as f:
            write(f.create_group('g'), 'values', np.ascontiguousarray(array))
            values = [h5.NONE_STR if s is None else s for s in strings]
            write(f['g'], 'text', np.array(values, dtype=object), dtype=h5.STR)
    assert _nan_to_none(_objects(folder / 'fast.h5')) == _nan_to_none(_objects(folder / 'ref.h5'))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=session_data(), no_errors=st.booleans())
def test_files_equal_those_of_the_previous_writer(tmp_path, monkeypatch, data, no_errors):
    """A session written now holds the datasets and attributes the writer before session 7
    (h5py's high-level ``create_dataset``, per-column tables) wrote, and loads identically."""
    if no_errors:
        data = {**data, 'errors': []}
    fast = h5.save_h5(tmp_path / 'fast.h5', data, mode='w')
    with monkeypatch.context() as patch:
        patch.setattr(h5, '_write_contiguous', _high_level_contiguous)
        ref = h5.save_h5(tmp_path / 'ref.h5', data, mode='w')
    assert _nan_to_none(_objects(fast)) == _nan_to_none(_objects(ref))
    got, want = h5.load_h5(fast), h5.load_h5(ref)
    pd.testing.assert_frame_equal(got['errors'], want['errors'])
    pd.testing.assert_frame_equal(got['trials'], want['trials'])
    for region, parts in want['photometry'].items():
        pd.testing.assert_frame_equal(got['photometry'][region]['qc'], parts['qc'])
        pd.testing.assert_frame_equal(got['photometry'][region]['artefacts'], parts['artefacts'])
        xr.testing.assert_identical(got['photometry'][region]['responses'], parts['responses'])


def test_empty_error_log_and_column_mappings(tmp_path):
    """No errors: four empty string datasets (read back as an empty log with its columns);
    a {column: array} mapping is stored as the DataFrame of the same columns is."""
    from iblnm.validation import LOG_COLUMNS

    qc = pd.DataFrame({'band': ['GCaMP', None], 'ar_score': [0.5, np.nan], 'n': [1, 2]})
    as_frame = h5.save_h5(
        tmp_path / 'frame.h5', {'errors': [], 'photometry': {'VTA': {'qc': qc}}}, mode='w'
    )
    as_dict = h5.save_h5(
        tmp_path / 'dict.h5',
        {
            'errors': pd.DataFrame(columns=LOG_COLUMNS),
            'photometry': {'VTA': {'qc': {c: qc[c].to_numpy() for c in qc}}},
        },
        mode='w',
    )
    assert _nan_to_none(_objects(as_frame)) == _nan_to_none(_objects(as_dict))
    with h5py.File(as_frame, 'r') as f:
        assert list(f['errors']) == sorted(LOG_COLUMNS)
        assert all(
            f['errors'][c].shape == (0,) and f['errors'][c].dtype.kind == 'O' for c in LOG_COLUMNS
        )
    back = h5.load_h5(as_frame)
    assert list(back['errors'].columns) == list(LOG_COLUMNS) and back['errors'].empty
    pd.testing.assert_frame_equal(back['photometry']['VTA']['qc'], qc.assign(n=[1.0, 2.0]))
