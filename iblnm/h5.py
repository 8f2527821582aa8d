"""The per-session HDF5 layout (``data/sessions/{eid}.h5``), one handler pair per group.

::

    metadata/   attrs: scalar session fields; datasets: list-valued fields
    errors/     eid, error_type, error_message, traceback (str[M])
    photometry/{region}/preprocessed/  times, signal (z-score), dff (ΔF/F; files from before
                                       issue 12 have none) (float64, N, NaN = masked);
                                       attrs fs, params (JSON)
    photometry/{region}/artefacts/     segments table: start, stop (raw sample index),
                                       start_time, stop_time (s), kind (str)
    photometry/{region}/responses/     times (W), trials (int64, T), {event} (float32, T x W;
                                       float64 in files written before issue 13); attrs fs,
                                       response_window (W follows from it and fs), events,
                                       align ('linear'/'sample'), band, n_masked ({event: n})
    photometry/{region}/responses_dff/ the same for the ΔF/F band, when it exists
    photometry/{region}/kernels/       kernel, se (float32, E x C x L), lags (L), trials (T),
                                       trial_magnitudes (float32, E x T x n_windows); attrs
                                       events, conditions, windows (JSON) and the fit
                                       (lambda, df, r2, n_samples, ar1, band, ...)
    photometry/{region}/qc/            one dataset per QC column (one row per band)
    trials/     one dataset per trial column (float64; stim_side str)
    wheel/responses/velocity_values   float32, every trial's samples one after the other
    wheel/responses/velocity_offsets  int64 (T + 1): trial i is values[offsets[i]:offsets[i+1]]
                                      attrs fs, t0_event, t1_event, n_samples (W), layout
                                      'ragged'; read back as ``velocity`` (T x W, NaN-padded)
    provenance/ attrs: the run record (iblnm_version, schema_version, source, source_location,
                params_hash) and ``parameters`` (JSON); ``inputs/``: the session's datasets
                (rel_path, id, hash, file_size, default_revision) as columns. The run record is
                also written as attributes of the file's root.

Storage: datasets go through :func:`create_dataset`, which compresses (gzip level 1 with
byte shuffle, chunked) the integer and boolean arrays that compress at least 2× (indices,
offsets, masks) and stores float arrays contiguous: noisy measurements gzip to ~90 % for
10-20× their write time, and compressed time grids made loading slower. Nothing stores NaN
padding. Files written before (``wheel/responses/velocity`` as a padded T x W matrix) are
read as before.

Writes are atomic: the file is copied (when it exists) to a temporary file next to it,
the groups are written there and the copy is renamed over the original. A run killed
mid-write leaves the previous file intact. A truncated or corrupt file raises
:class:`iblnm.validation.CorruptH5`.
"""

import json
import shutil
import zlib
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from h5py import h5d, h5p, h5s, h5t

from iblnm.util import atomic_write
from iblnm.validation import LOG_COLUMNS, CorruptH5, MissingH5

GROUPS = ('metadata', 'errors', 'photometry', 'trials', 'wheel', 'provenance')
NONE_STR = '__none__'  # a stored None (strings and attributes)
ESCAPE_STR = '__str__'  # prefix of a real string that reads as NONE_STR or starts with this
STR = h5py.string_dtype(encoding='utf-8')


# Compression of the datasets that pay for it (see :func:`create_dataset`).
COMPRESSION = {'compression': 'gzip', 'compression_opts': 1, 'shuffle': True}
MIN_COMPRESSED_BYTES = 4096  # below this, chunk indexing costs more than it saves
MAX_CHUNK_BYTES = 2**20
COMPRESS_IF_RATIO = 0.5  # compress when a sample of the data shrinks at least 2×
# Integer, boolean kinds only (indices, offsets, masks). Float arrays stay contiguous: noisy ones
# gzip to ~90 %, and even the 30 Hz time grids (4 % of their size) cost 2x their read CPU
# time, which made single-region loads 12-25 % slower than the uncompressed layout
# (bench_session, 2026-12-01); ``load_h5`` must not be slower.
COMPRESSED_KINDS = 'biu'
MOSTLY_NAN = 0.5  # float arrays with more NaN than this are compressed too
_SAMPLE_ITEMS = 8192


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def _compressible_kind(array):
    """Integer and boolean arrays, and float arrays mostly NaN (a fiber the artefact masks
    removed: its preprocessed signal, ΔF/F and responses are all NaN)."""
    if array.dtype.kind in COMPRESSED_KINDS:
        return True
    return array.dtype.kind == 'f' and np.isnan(array).mean() > MOSTLY_NAN


def _compresses(array):
    """True when a byte-shuffled sample (≤ 8192 items) of ``array`` gzips to ≤ half."""
    sample = np.ascontiguousarray(array.reshape(-1)[:_SAMPLE_ITEMS])
    shuffled = sample.view(np.uint8).reshape(-1, array.dtype.itemsize).T.tobytes()
    return len(zlib.compress(shuffled, 1)) <= COMPRESS_IF_RATIO * len(shuffled)


def _chunks(array):
    """Chunk shape: whole rows along the first axis, at most ``MAX_CHUNK_BYTES`` per chunk."""
    row_bytes = max(1, array[:1].nbytes)
    return (max(1, min(array.shape[0], MAX_CHUNK_BYTES // row_bytes)), *array.shape[1:])


# The creation properties h5py's ``create_dataset`` gives a contiguous dataset (no modification
# times), made once. h5py's high-level call costs ~0.13 ms a dataset in Python (property lists,
# dtype checks, the Dataset object) on top of HDF5's own ~0.1 ms, and a session file holds ~130
# datasets (one per QC column of each region: the original layout), so the contiguous ones are
# written with the same low-level calls it makes (see :func:`_write_contiguous`).
_CONTIGUOUS = h5p.create(h5p.DATASET_CREATE)
_CONTIGUOUS.set_obj_track_times(False)
_TYPES = {}


def _h5_type(dtype):
    """HDF5 file type of a numpy dtype, as h5py's ``create_dataset`` makes it (cached)."""
    if dtype not in _TYPES:
        _TYPES[dtype] = h5t.py_create(dtype, logical=1)
    return _TYPES[dtype]


def _write_contiguous(group, name, array, dtype=None):
    """``group.create_dataset(name, data=array, dtype=dtype)`` of a contiguous dataset: the same
    HDF5 calls (type, dataspace, creation properties, one write), without the Python wrapping.

    ``array`` is a C-contiguous ndarray; ``dtype`` the stored dtype when it differs from the
    array's (h5py's string dtype for object arrays of str). A name with a '/' (a path)
    goes through h5py, which creates the intermediate groups.
    """
    if '/' in name:
        group.create_dataset(name, data=array, dtype=dtype)
        return
    dsid = h5d.create(
        group.id,
        name.encode(),
        _h5_type(dtype or array.dtype),
        h5s.create_simple(array.shape),
        dcpl=_CONTIGUOUS,
    )
    dsid.write(h5s.ALL, h5s.ALL, array)


def create_dataset(group, name, data, dtype=None):
    """Write a numeric array, compressed when that pays (the one dataset writer of the layout).

    Parameters
    ----------
    group : h5py.Group
    name : str
    data : array_like
    dtype : numpy dtype, optional
        Stored dtype (default: the array's).

    Notes
    -----
    The dataset is chunked and compressed (:data:`COMPRESSION`: gzip 1 + shuffle, readable by
    any HDF5 tool) when the array is of a :data:`COMPRESSED_KINDS` kind (or a float array more
    than :data:`MOSTLY_NAN` NaN), holds at least :data:`MIN_COMPRESSED_BYTES` and a sample
    compresses at least 2×; contiguous otherwise.
    """
    array = np.ascontiguousarray(data, dtype=dtype)
    if array.ndim and array.nbytes >= MIN_COMPRESSED_BYTES and _compressible_kind(array):
        if _compresses(array):
            group.create_dataset(name, data=array, chunks=_chunks(array), **COMPRESSION)
            return
    _write_contiguous(group, name, array)


def _replace_group(parent, name):
    if name in parent:
        del parent[name]
    return parent.create_group(name)


def _clean(text):
    """Escape what HDF5 UTF-8 strings cannot hold: NUL characters and lone surrogates.

    NUL becomes the four characters ``\\x00`` and a lone surrogate (e.g. from a file name
    decoded with ``surrogateescape``) its ``\\udXXX`` escape, so saving never fails.
    """
    text = str(text).replace('\x00', '\\x00')
    return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def _to_stored(value):
    """A string (or None) as stored: None is :data:`NONE_STR`; a real string that would read
    back as something else (``NONE_STR`` itself, or one starting with :data:`ESCAPE_STR`) gets
    the :data:`ESCAPE_STR` prefix."""
    if value is None:
        return NONE_STR
    value = _clean(value)
    return ESCAPE_STR + value if value == NONE_STR or value.startswith(ESCAPE_STR) else value


def _from_stored(value):
    """Inverse of :func:`_to_stored`."""
    if value == NONE_STR:
        return None
    return value[len(ESCAPE_STR) :] if value.startswith(ESCAPE_STR) else value


def _write_strings(group, name, values):
    values = [_to_stored(v) for v in values]
    _write_contiguous(group, name, np.array(values, dtype=object), dtype=STR)


def _read_strings(dataset):
    return [_from_stored(v) for v in dataset.asstr()[()]]


def _scalar_attr(value):
    if value is None or isinstance(value, str):
        return _to_stored(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _from_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return _from_stored(value) if isinstance(value, str) else value


# ---------------------------------------------------------------------------
# Handlers: write_<group>(h5, value) / read_<group>(h5, **options)
# ---------------------------------------------------------------------------
def write_metadata(h5, metadata):
    """Scalars as attributes, lists/arrays as string datasets."""
    group = _replace_group(h5, 'metadata')
    for key, value in metadata.items():
        if isinstance(value, list | tuple | np.ndarray):
            _write_strings(group, key, list(value))
        else:
            group.attrs[key] = _scalar_attr(value)


def read_metadata(h5, **_):
    group = h5['metadata']
    metadata = {key: _from_attr(value) for key, value in group.attrs.items()}
    metadata.update({key: _read_strings(group[key]) for key in group})
    return metadata


def write_errors(h5, errors):
    """Error-log entries (list of dicts or DataFrame) as four string datasets."""
    group = _replace_group(h5, 'errors')
    if not len(errors):  # the usual case: four empty datasets, without building a table
        for col in LOG_COLUMNS:
            _write_strings(group, col, [])
        return
    frame = pd.DataFrame(list(errors) if not isinstance(errors, pd.DataFrame) else errors)
    frame = frame.reindex(columns=LOG_COLUMNS)
    for col in LOG_COLUMNS:
        _write_strings(group, col, [None if pd.isna(v) else v for v in frame[col]])


def read_errors(h5, **_):
    group = h5['errors']
    return pd.DataFrame({col: _read_strings(group[col]) for col in LOG_COLUMNS})


def _write_preprocessed(group, preprocessed):
    sub = group.create_group('preprocessed')
    create_dataset(sub, 'times', preprocessed['times'], dtype=np.float64)
    create_dataset(sub, 'signal', preprocessed['signal'], dtype=np.float64)
    if preprocessed.get('dff') is not None:
        create_dataset(sub, 'dff', preprocessed['dff'], dtype=np.float64)
    sub.attrs['fs'] = preprocessed.get('fs', 30)
    sub.attrs['params'] = json.dumps(preprocessed.get('params', {}))


def _write_responses(group, responses, name='responses'):
    sub = group.create_group(name)
    create_dataset(sub, 'times', responses['time'], dtype=np.float64)
    create_dataset(sub, 'trials', responses['trial'], dtype=np.int64)
    traces = responses.transpose('event', 'trial', 'time').to_numpy()  # one xarray call
    for event, data in zip(responses['event'].to_numpy(), traces):
        create_dataset(sub, str(event), data, dtype=np.float32)
    sub.attrs['events'] = json.dumps([str(e) for e in responses['event'].to_numpy()])
    sub.attrs['fs'] = responses.attrs.get('fs', 30)
    sub.attrs['response_window'] = list(responses.attrs.get('response_window', (-1.0, 1.0)))
    for key in ('align', 'band'):
        if key in responses.attrs:
            sub.attrs[key] = str(responses.attrs[key])
    if 'n_masked' in responses.attrs:
        sub.attrs['n_masked'] = json.dumps(
            {str(k): int(n) for k, n in responses.attrs['n_masked'].items()}
        )


def _write_kernels(group, kernels):
    sub = group.create_group('kernels')
    for name in ('kernel', 'se', 'trial_magnitudes'):
        create_dataset(sub, name, kernels[name].to_numpy(), dtype=np.float32)
    create_dataset(sub, 'lags', kernels['lag'], dtype=np.float64)
    create_dataset(sub, 'trials', kernels['trial'], dtype=np.int64)
    for name in ('event', 'condition', 'window'):
        sub.attrs[f'{name}s'] = json.dumps([str(x) for x in kernels[name].to_numpy()])
    sub.attrs['fit'] = json.dumps({k: _scalar_attr(v) for k, v in kernels.attrs.items()})


def _read_kernels(group):
    names = {n: json.loads(group.attrs[f'{n}s']) for n in ('event', 'condition', 'window')}
    dims = ('event', 'condition', 'lag')
    return xr.Dataset(
        {
            'kernel': (dims, group['kernel'][()]),
            'se': (dims, group['se'][()]),
            'trial_magnitudes': (('event', 'trial', 'window'), group['trial_magnitudes'][()]),
        },
        coords={**names, 'lag': group['lags'][()], 'trial': group['trials'][()]},
        attrs=json.loads(group.attrs['fit']),
    )


def _write_columns(group, frame):
    """One dataset per column (numbers as float64, text as strings); column order in attrs.

    ``frame``: a DataFrame, or ``{column: 1-D array}`` (the same columns, without building
    the table).
    """
    names = []
    for col, values in frame.items():
        values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if values.dtype.kind in 'fiub':
            create_dataset(group, col, values, dtype=np.float64)
        else:
            _write_strings(group, col, [None if pd.isna(v) else v for v in values])
        names.append(str(col))
    group.attrs['columns'] = json.dumps(names)


def _read_columns(group):
    """{column: values} written by :func:`_write_columns`, in the written column order.

    Groups written before the order was recorded fall back to HDF5's (alphabetical) order.
    """
    columns = json.loads(group.attrs['columns']) if 'columns' in group.attrs else list(group)
    return {
        c: _read_strings(group[c]) if group[c].dtype.kind == 'O' else group[c][()] for c in columns
    }


def _write_qc(group, qc):
    _write_columns(group.create_group('qc'), qc)


def _write_artefacts(group, segments):
    _write_columns(group.create_group('artefacts'), segments)


def write_photometry(h5, photometry):
    """``photometry = {region: {'preprocessed': {...}, 'responses': DataArray, 'qc': DataFrame,
    'artefacts': DataFrame}}``.

    Only the regions (and, within a region, the parts) present are replaced.
    """
    root = h5.require_group('photometry')
    for region, parts in photometry.items():
        group = root.require_group(str(region))
        for part, writer in (
            ('preprocessed', _write_preprocessed),
            ('responses', _write_responses),
            ('responses_dff', partial(_write_responses, name='responses_dff')),
            ('kernels', _write_kernels),
            ('qc', _write_qc),
            ('artefacts', _write_artefacts),
        ):
            if parts.get(part) is not None:
                if part in group:
                    del group[part]
                writer(group, parts[part])


def _read_responses(group):
    events = json.loads(group.attrs['events'])
    times, trials = group['times'][()], group['trials'][()]
    data = (
        np.stack([group[e][()] for e in events])
        if events
        else np.empty((0, len(trials), len(times)), dtype=np.float32)
    )
    attrs = {
        'fs': float(group.attrs['fs']),
        'response_window': tuple(group.attrs['response_window']),
    }
    for key in ('align', 'band'):
        if key in group.attrs:
            attrs[key] = _from_attr(group.attrs[key])
    if 'n_masked' in group.attrs:
        attrs['n_masked'] = json.loads(group.attrs['n_masked'])
    return xr.DataArray(
        data,
        dims=('event', 'trial', 'time'),
        coords={'event': events, 'trial': trials, 'time': times},
        attrs=attrs,
    )


def _read_qc(group):
    return pd.DataFrame(_read_columns(group))


def _read_artefacts(group):
    frame = pd.DataFrame(_read_columns(group))
    for col in ('start', 'stop'):
        if col in frame:
            frame[col] = frame[col].astype(np.int64)
    return frame


def read_photometry(
    h5,
    regions=None,
    parts=('preprocessed', 'responses', 'responses_dff', 'kernels', 'qc', 'artefacts'),
    **_,
):
    """Read some or all regions; only the requested subgroups are touched on disk."""
    root = h5['photometry']
    out = {}
    for region in regions if regions is not None else list(root):
        if region not in root:
            continue
        group, entry = root[region], {}
        if 'preprocessed' in parts and 'preprocessed' in group:
            pre = group['preprocessed']
            entry['preprocessed'] = {
                'times': pre['times'][()],
                'signal': pre['signal'][()],
                'fs': float(pre.attrs['fs']),
                'params': json.loads(pre.attrs['params']),
            }
            if 'dff' in pre:
                entry['preprocessed']['dff'] = pre['dff'][()]
        for name in ('responses', 'responses_dff'):
            if name in parts and name in group:
                entry[name] = _read_responses(group[name])
        if 'kernels' in parts and 'kernels' in group:
            entry['kernels'] = _read_kernels(group['kernels'])
        if 'qc' in parts and 'qc' in group:
            entry['qc'] = _read_qc(group['qc'])
        if 'artefacts' in parts and 'artefacts' in group:
            entry['artefacts'] = _read_artefacts(group['artefacts'])
        out[region] = entry
    return out


def write_trials(h5, trials):
    """One dataset per column: numbers as float64, text (stim_side) as strings."""
    group = _replace_group(h5, 'trials')
    _write_columns(group, trials)
    group.attrs['index'] = np.asarray(trials.index, dtype=np.int64)


def read_trials(h5, **_):
    group = h5['trials']
    index = pd.Index(group.attrs['index'], dtype=np.int64)
    return pd.DataFrame(_read_columns(group), index=index)


def ragged_rows(matrix):
    """NaN-padded rows -> (values, offsets): row i is its samples up to its last non-NaN one.

    Parameters
    ----------
    matrix : ndarray, shape (T, W)
        Rows padded with trailing NaN (an all-NaN row is empty).

    Returns
    -------
    values : ndarray, shape (sum of row lengths,)
        The rows one after the other (NaNs inside a row kept).
    offsets : ndarray of int64, shape (T + 1,)
        Row i is ``values[offsets[i]:offsets[i + 1]]``.
    """
    matrix = np.asarray(matrix)
    finite = ~np.isnan(matrix)
    lengths = np.zeros(len(matrix), dtype=np.int64)
    if matrix.shape[1]:
        last = matrix.shape[1] - np.argmax(finite[:, ::-1], axis=1)
        lengths = np.where(finite.any(axis=1), last, 0)
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    return matrix[keep], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def padded_rows(values, offsets, width, dtype=np.float32):
    """Inverse of :func:`ragged_rows`: ``(T, width)`` with each row NaN-padded."""
    offsets = np.asarray(offsets)
    out = np.full((len(offsets) - 1, int(width)), np.nan, dtype=dtype)
    for i, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):  # ~4x a boolean mask
        out[i, : stop - start] = values[start:stop]
    return out


def write_wheel(h5, wheel):
    """``wheel = {'velocity': (T, W) NaN-padded, 'fs': Hz, 't0_event': str, 't1_event': str}``.

    Stored ragged (``velocity_values`` + ``velocity_offsets``, no padding).
    """
    group = _replace_group(h5, 'wheel')
    sub = group.create_group('responses')
    velocity = np.asarray(wheel['velocity'], dtype=np.float32)
    values, offsets = ragged_rows(velocity)
    create_dataset(sub, 'velocity_values', values, dtype=np.float32)
    create_dataset(sub, 'velocity_offsets', offsets, dtype=np.int64)
    for key in ('fs', 't0_event', 't1_event'):
        sub.attrs[key] = wheel[key]
    sub.attrs['n_samples'] = velocity.shape[1]
    sub.attrs['layout'] = 'ragged'


def read_wheel(h5, **_):
    """``{'velocity': float32 (T, W) NaN-padded, 'fs', 't0_event', 't1_event'}`` (both layouts)."""
    sub = h5['wheel']['responses']
    attrs = {k: _from_attr(v) for k, v in sub.attrs.items() if k not in ('n_samples', 'layout')}
    if 'velocity' in sub:  # files written before the ragged layout
        return {'velocity': sub['velocity'][()], **attrs}
    velocity = padded_rows(
        sub['velocity_values'][()], sub['velocity_offsets'][()], sub.attrs['n_samples']
    )
    return {'velocity': velocity, **attrs}


def write_provenance(h5, provenance):
    """``provenance = {'record': dict, 'parameters': dict, 'inputs': DataFrame}``."""
    group = _replace_group(h5, 'provenance')
    for key, value in provenance.get('record', {}).items():
        group.attrs[key] = _scalar_attr(value)
        h5.attrs[key] = _scalar_attr(value)
    group.attrs['parameters'] = json.dumps(provenance.get('parameters', {}), sort_keys=True)
    inputs = provenance.get('inputs')
    if inputs is not None:
        _write_columns(group.create_group('inputs'), pd.DataFrame(inputs))


def read_provenance(h5, **_):
    group = h5['provenance']
    attrs = {k: _from_attr(val) for k, val in group.attrs.items() if k != 'parameters'}
    out = {'record': attrs, 'parameters': json.loads(group.attrs.get('parameters', '{}'))}
    if 'inputs' in group:
        out['inputs'] = pd.DataFrame(_read_columns(group['inputs']))
    return out


_SAVE_HANDLERS = {
    'metadata': write_metadata,
    'errors': write_errors,
    'photometry': write_photometry,
    'trials': write_trials,
    'wheel': write_wheel,
    'provenance': write_provenance,
}
_LOAD_HANDLERS = {
    'metadata': read_metadata,
    'errors': read_errors,
    'photometry': read_photometry,
    'trials': read_trials,
    'wheel': read_wheel,
    'provenance': read_provenance,
}


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def save_h5(fpath, data, mode='a'):
    """Write groups atomically.

    Parameters
    ----------
    fpath : path
    data : dict
        ``{group: value}`` for groups of :data:`GROUPS`; None values are skipped.
    mode : {'a', 'w'}
        'a' keeps the other groups of an existing file; 'w' starts a new file.
    """
    fpath = Path(fpath)
    unknown = set(data) - set(GROUPS)
    if unknown:
        raise ValueError(f'unknown H5 groups {sorted(unknown)}; groups: {GROUPS}')

    def write(tmp):
        if mode == 'a' and fpath.exists():
            _check_readable(fpath)
            shutil.copyfile(fpath, tmp)
        with h5py.File(tmp, 'a' if mode == 'a' and fpath.exists() else 'w') as h5:
            for group, value in data.items():
                if value is not None:
                    _SAVE_HANDLERS[group](h5, value)

    return atomic_write(fpath, write, suffix='.h5.tmp')


def _check_readable(fpath):
    try:
        with h5py.File(fpath, 'r'):
            pass
    except OSError as error:
        raise CorruptH5(f'{Path(fpath).name} cannot be read: {error}') from None


def load_h5(fpath, groups=None, **options):
    """Read groups (all present ones by default) into ``{group: value}``.

    ``options`` go to the handlers, e.g. ``regions=['VTA']`` for a single-region read
    of the photometry group. Missing files raise :class:`MissingH5`; unreadable ones
    :class:`CorruptH5`.
    """
    fpath = Path(fpath)
    if not fpath.exists():
        raise MissingH5(f'{fpath.name} does not exist (run the photometry stage first)')
    _check_readable(fpath)
    try:
        with h5py.File(fpath, 'r') as h5:
            wanted = [g for g in (groups or GROUPS) if g in h5]
            return {g: _LOAD_HANDLERS[g](h5, **options) for g in wanted}
    except (OSError, KeyError, ValueError) as error:
        raise CorruptH5(f'{fpath.name} is corrupt: {type(error).__name__}: {error}') from None


def h5_groups(fpath):
    """Top-level groups present in a file (empty list when it does not exist)."""
    if not Path(fpath).exists():
        return []
    _check_readable(fpath)
    with h5py.File(fpath, 'r') as h5:
        return list(h5)


def read_metadata_attr(fpath, key):
    """One scalar of the ``metadata`` group without reading the rest of the file.

    None when the file, the group or the attribute is absent; :class:`CorruptH5` when the
    file cannot be read.
    """
    if not Path(fpath).exists():
        return None
    try:
        with h5py.File(fpath, 'r') as h5:
            if 'metadata' not in h5 or key not in h5['metadata'].attrs:
                return None
            return _from_attr(h5['metadata'].attrs[key])
    except OSError as error:
        raise CorruptH5(f'{Path(fpath).name} cannot be read: {error}') from None
