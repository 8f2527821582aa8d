"""Write simulated sessions, Alyx records, ground truth and the manifest to disk.

Files are written with fixed settings (no timestamps inside the data files) so
that the same seed gives byte-identical session files.
"""

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from iblnm import config

MANIFEST_NAME = 'manifest.json'
PARQUET_OPTIONS = {'engine': 'pyarrow', 'compression': 'zstd'}
LARGE_TABLE_ROWS = 10_000  # tables longer than this get column encodings for size


def parquet_options(table):
    """pyarrow writer options: zstd, and for long tables byte-stream-split floats and delta ints.

    Float columns (timestamps, ROI intensities) compress 2-3x better byte-split; a
    frame counter delta-encodes to nearly nothing. Readers need no option.
    """
    if len(table) <= LARGE_TABLE_ROWS:
        return dict(PARQUET_OPTIONS)
    encodings = {}
    for col, dtype in table.dtypes.items():
        if dtype == np.float64:
            encodings[col] = 'BYTE_STREAM_SPLIT'
        elif dtype == np.int64:
            encodings[col] = 'DELTA_BINARY_PACKED'
    dictionary = [c for c in table.columns if c not in encodings]
    return {**PARQUET_OPTIONS, 'use_dictionary': dictionary, 'column_encoding': encodings}


def _to_builtin(obj):
    """JSON fallback for numpy scalars and arrays."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'not JSON serialisable: {type(obj).__name__}')


def write_dataset(path, payload):
    """Write one dataset; the format follows the file extension.

    ``.pqt``: DataFrame (parquet, zstd); ``.npy``: ndarray; ``.yaml``: dict;
    ``.jsonable``: list of dict, one JSON document per line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == '.pqt':
        payload.to_parquet(path, **parquet_options(payload))
    elif path.suffix == '.npy':
        np.save(path, np.asarray(payload))
    elif path.suffix == '.yaml':
        path.write_text(yaml.safe_dump(payload, sort_keys=True))
    elif path.suffix == '.jsonable':
        lines = (json.dumps(doc, default=_to_builtin) for doc in payload)
        path.write_text('\n'.join(lines) + '\n')
    else:
        raise ValueError(f'no writer for {path.name}')


def write_session(cache_dir, session):
    """Write a simulated session's datasets and its ground-truth ``.npz``.

    Parameters
    ----------
    cache_dir : path
    session : dict
        From :func:`iblnm.simulate.session.simulate_session`.
    """
    from iblnm.onecache import session_path

    man = session['manifest']
    folder = session_path(cache_dir, man['lab'], man['subject'], man['date'], man['number'])
    for rel_path, payload in session['files'].items():
        write_dataset(folder / rel_path, payload)
    truth_dir = Path(cache_dir) / config.GROUND_TRUTH_DIRNAME
    truth_dir.mkdir(parents=True, exist_ok=True)
    save_npz(truth_dir / f'{session["eid"]}.npz', session['truth'])


def save_npz(path, arrays):
    """Write arrays to a deflated ``.npz`` with fixed zip timestamps (reproducible bytes)."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f'{key}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, 'w', force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asarray(value), allow_pickle=False)


def write_fibers(cache_dir, fibers):
    """Write the Alyx chronic-insertion table ``alyx/fibers.pqt``."""
    folder = Path(cache_dir) / config.ALYX_RECORDS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    fibers.to_parquet(folder / 'fibers.pqt', index=False, **PARQUET_OPTIONS)


def write_manifest(cache_dir, manifest):
    """Write ``ground_truth/manifest.json`` (sorted keys, 1-space indent)."""
    folder = Path(cache_dir) / config.GROUND_TRUTH_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, sort_keys=True, default=_to_builtin)
    (folder / MANIFEST_NAME).write_text(text + '\n')


def load_manifest(cache_dir):
    """Read the manifest of a simulated cache.

    Parameters
    ----------
    cache_dir : path
        Root of the simulated ONE cache.

    Returns
    -------
    dict
        ``{'preset', 'seed', 'parameters', 'sessions': [entry, ...], ...}``;
        see ``docs/simulated_data.md`` for the schema.

    Raises
    ------
    FileNotFoundError
        No manifest: the directory was not written by :func:`iblnm.simulate.generate`.
    """
    path = Path(cache_dir) / config.GROUND_TRUTH_DIRNAME / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f'no simulation manifest at {path}')
    return json.loads(path.read_text())


def load_truth(cache_dir, eid):
    """Ground truth of one session: ``times`` (s), ``dff``/``motion`` (n, n_rois), ``rois``."""
    path = Path(cache_dir) / config.GROUND_TRUTH_DIRNAME / f'{eid}.npz'
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def clear_cache(cache_dir):
    """Remove a previous simulation from ``cache_dir`` (only what it wrote).

    An empty or missing directory is fine; a non-empty directory without a manifest
    raises ``FileExistsError`` so that nothing else is ever deleted.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.exists() or not any(cache_dir.iterdir()):
        return
    old = load_manifest(cache_dir) if _has_manifest(cache_dir) else None
    if old is None:
        raise FileExistsError(f'{cache_dir} is not empty and holds no simulation manifest')
    for lab in {s['lab'] for s in old['sessions']}:
        shutil.rmtree(cache_dir / lab, ignore_errors=True)
    for name in (config.ALYX_RECORDS_DIRNAME, config.GROUND_TRUTH_DIRNAME):
        shutil.rmtree(cache_dir / name, ignore_errors=True)
    for name in ('sessions.pqt', 'datasets.pqt'):
        (cache_dir / name).unlink(missing_ok=True)


def _has_manifest(cache_dir):
    return (Path(cache_dir) / config.GROUND_TRUTH_DIRNAME / MANIFEST_NAME).exists()


def alyx_sessions_frame(records):
    """Alyx session records as a DataFrame sorted by id."""
    return pd.DataFrame(records).sort_values('id').reset_index(drop=True)
