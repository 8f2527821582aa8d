"""Load photometry and trials from ONE into per-band frames.

ibllib 4.1 (the PyPI release) has no ``PhotometrySessionLoader``; this module provides
the equivalent of ``iblphotometry.fpio``'s on top of ``brainbox.io.one.SessionLoader``
(same bands, same frames), and uses the upstream class as base when an installed
ibllib ships one. Loading costs what reading costs: each file's md5 is verified once
(:mod:`iblnm.integrity`), only the columns used are read, and the table's types are
enforced by the normalisation instead of a second (pandera) validation pass.

Extracted photometry (``alf/photometry/photometry.signal.pqt``) comes in two IBL
layouts: the current one (``valid`` column, names 'GCaMP'/'Isosbestic'/'') and an
older one (``include`` column, 'None' names for dark frames, e.g. the Witten lab
fip_40 session). :func:`normalise_photometry_table` maps both to the current one.
"""

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import brainbox.io.one as bbone
import numpy as np
import pandas as pd
from one.alf.exceptions import ALFObjectNotFound

from iblnm import config
from iblnm.integrity import local_dataset, local_object, mismatched, verified
from iblnm.recordings import recording_keys
from iblnm.signal.qc import LED_CODE_MASK  # the one LED mask (LedState & 7)
from iblnm.validation import (
    AmbiguousTaskCollection,
    DatasetHashMismatch,
    InsufficientTrials,
    InvalidTrialsTable,
)

SIGNAL_DATASET = 'photometry.signal.pqt'
LOCATIONS_DATASET = 'photometryROI.locations.pqt'
RAW_PHOTOMETRY_DATASET = '_neurophotometrics_fpData.raw.pqt'
PHOTOMETRY_COLLECTION = 'alf/photometry'
RAW_PHOTOMETRY_COLLECTION = 'raw_photometry_data'
# LED code (LedState & 7) -> band name; 0 = dark frame, 7 = all LEDs (first frame)
LED_BANDS = {1: 'Isosbestic', 2: 'GCaMP', 4: 'RCaMP'}

log = logging.getLogger(__name__)
_SessionLoaderBase = getattr(bbone, 'PhotometrySessionLoader', bbone.SessionLoader)


# ---------------------------------------------------------------------------
# Extracted photometry table
# ---------------------------------------------------------------------------
META_COLUMNS = ('times', 'valid', 'include', 'wavelength', 'name', 'color')
# what the loader reads of an extracted table (ROI columns are added): 'color' is not used
READ_COLUMNS = ('times', 'valid', 'include', 'wavelength', 'name')


def _normalise_names(values):
    """'None'/None/NaN -> '' over a column of channel names (a Categorical, by its values)."""
    cat = pd.Categorical(values)
    names = ['' if str(c) == 'None' else str(c) for c in cat.categories]
    codes = np.where(cat.codes < 0, len(names), cat.codes)
    unique = list(dict.fromkeys(names + ['']))
    remap = np.array([unique.index(n) for n in names + ['']], dtype=np.int32)
    return pd.Categorical.from_codes(remap[codes], categories=unique)


def normalise_photometry_table(table, copy=True, rois=()):
    """Map an extracted photometry table to the current IBL layout.

    ``include`` is renamed ``valid``; 'None'/None channel names and colours become '';
    dark frames (wavelength 0) get wavelength NaN; data columns are float64. These
    coercions are the schema check: a column that cannot take its type raises here
    (``ValueError``/``TypeError``), a missing ``times``/``name``/``wavelength`` ``KeyError``.
    ``copy=False`` modifies ``table`` in place (a table read for this call only); ``rois``:
    the locations' ROI names (:func:`data_columns`).
    """
    table = table.copy() if copy else table
    if 'valid' not in table and 'include' in table:
        table = table.rename(columns={'include': 'valid'})
    if 'valid' not in table:
        table['valid'] = True
    if 'name' not in table and 'wavelength' not in table:
        raise KeyError("neither 'name' nor 'wavelength': the frames' bands are unknown")
    if 'color' in table:
        table['color'] = _normalise_names(table['color'])
    if 'wavelength' in table:
        wavelength = table['wavelength'].to_numpy(dtype=float, copy=True)
        wavelength[wavelength == 0.0] = np.nan
    else:  # the names say the LED
        names = pd.Categorical(table['name'])
        wavelength = np.array(
            [config.BAND_WAVELENGTHS.get(str(c), np.nan) for c in names.categories] + [np.nan]
        )[np.where(names.codes < 0, len(names.categories), names.codes)]
        log.warning("photometry table without 'wavelength': taken from the band names")
    table['wavelength'] = wavelength
    names = _normalise_names(table['name']) if 'name' in table else None
    table['name'] = band_names(names, wavelength)
    for col, dtype in (
        ('valid', bool),
        ('times', float),
        *((c, float) for c in data_columns(table, rois)),
    ):
        if table[col].dtype != dtype:
            table[col] = table[col].astype(dtype)
    return table


def band_names(names, wavelength):
    """The band of every frame: its name, or its LED's when the name is not a band's.

    Names are matched to ``config.BAND_WAVELENGTHS`` case-insensitively ('gcamp' is
    'GCaMP') and then checked against the wavelength (:func:`check_band_wavelengths`).
    A lit frame whose name is none of the bands ('' , 'Iso', a sensor's name) gets the
    band of its wavelength (470 nm: 'GCaMP', 415 nm: 'Isosbestic', 560 nm: 'RCaMP'), so
    that a table named in another lab's words keeps its isosbestic band; a warning says
    which names were replaced. Frames without a wavelength keep their name.

    Parameters
    ----------
    names : pandas.Categorical or None
        Channel names of the frames (normalised: '' for none); None: no name column.
    wavelength : ndarray of float, shape (n_frames,)
        LED wavelength (nm) of each frame, NaN for dark frames.

    Returns
    -------
    pandas.Categorical, shape (n_frames,)

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> names = pd.Categorical(['', 'gcamp', 'Iso', 'None'])
    >>> list(band_names(names, np.array([470.0, 470.0, 415.0, np.nan])))
    ['GCaMP', 'GCaMP', 'Isosbestic', 'None']
    """
    bands = list(config.BAND_WAVELENGTHS)
    canonical = {band.lower(): band for band in bands}
    if names is None:
        names = pd.Categorical.from_codes(np.full(len(wavelength), 0), categories=[''])
    names = pd.Categorical(names)
    mapped = [canonical.get(str(c).lower(), str(c)) for c in names.categories]
    categories = list(dict.fromkeys(mapped + bands))
    codes = np.array([categories.index(c) for c in mapped] + [-1])[names.codes]
    renamed = pd.Categorical.from_codes(codes, categories=categories)
    check_band_wavelengths(renamed, wavelength)
    is_band = np.array([c in bands for c in categories] + [False])
    lit = np.zeros(len(wavelength), bool)
    for w in config.BAND_WAVELENGTHS.values():  # not np.isin: it sorts the frames
        lit |= wavelength == w
    unnamed = ~is_band[codes] & lit
    if not unnamed.any():
        return _without_unused(codes, categories)
    replaced = sorted({categories[c] if c >= 0 else '' for c in np.unique(codes[unnamed])})
    codes = codes.copy()
    for band, w in config.BAND_WAVELENGTHS.items():
        codes[unnamed & (wavelength == w)] = categories.index(band)
    log.warning(
        'photometry: %d lit frames named %s take the band of their wavelength',
        int(unnamed.sum()),
        ', '.join(repr(c) for c in replaced),
    )
    return _without_unused(codes, categories)


def _without_unused(codes, categories):
    """Categorical of ``codes`` (-1: missing) keeping the categories that occur (a bincount:
    ``remove_unused_categories`` sorts the frames)."""
    used = np.flatnonzero(np.bincount(codes + 1, minlength=len(categories) + 1)[1:])
    remap = np.full(len(categories) + 1, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return pd.Categorical.from_codes(remap[codes], categories=[categories[i] for i in used])


def check_band_wavelengths(names, wavelength):
    """``ValueError`` when a frame named 'GCaMP' or 'Isosbestic' has another LED's wavelength.

    The name and the wavelength of a frame are written together by the extraction; when
    they disagree (e.g. the names swapped), which one is right cannot be told from the data
    (on these rigs the 415 nm band is often the brighter), so the table is not used. Frames
    without a wavelength (dark frames, NaN) are not checked.
    """
    names = pd.Categorical(names)
    for band in ('GCaMP', 'Isosbestic'):
        expected = config.BAND_WAVELENGTHS[band]
        if band not in names.categories:
            continue
        at = wavelength[np.asarray(names == band)]
        wrong = np.isfinite(at) & (at != expected)
        if wrong.any():
            found = ', '.join(f'{w:g}' for w in np.unique(at[wrong]))
            raise ValueError(
                f"{int(wrong.sum())} frames named '{band}' have wavelength {found} nm, not "
                f'{expected:g} nm: band names and LEDs disagree'
            )


def data_columns(table, rois=()):
    """ROI columns of a photometry table, in the table's order.

    Parameters
    ----------
    table : pandas.DataFrame or list of str
        The table (its numeric, non-boolean columns only) or its column names.
    rois : iterable of str
        ROI names the locations table lists (its index): columns of these names are ROIs
        whatever their names (other labs' 'Fiber0', 'CH1' ...).

    Returns
    -------
    list
        The columns named in ``rois``, and those named as Neurophotometrics names ROIs
        (``Region*``, else ``G*``/``R*``).
    """
    names = table.columns if hasattr(table, 'columns') else table
    candidates = [c for c in names if c not in META_COLUMNS]
    if hasattr(table, 'columns'):  # a text or boolean column is no ROI ('Rig', 'Good')
        candidates = [
            c
            for c in candidates
            if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        ]
    regions = [c for c in candidates if str(c).startswith('Region')]
    named = set(regions or [c for c in candidates if str(c)[:1] in ('G', 'R')])
    named.update(c for c in candidates if str(c) in {str(r) for r in rois})
    return [c for c in candidates if c in named]


def read_photometry_table(path, rois=()):
    """Read the columns the pipeline uses of an extracted table, normalised.

    Only ``times``, ``valid``/``include``, ``wavelength``, ``name`` and the ROI columns
    (:func:`data_columns`; ``rois``: the locations' ROI names) are read (the file's
    ``color`` and any other column are not), with pyarrow; the result is as
    :func:`normalise_photometry_table` (without ``color``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    names = [  # a text or boolean column is no ROI
        f.name
        for f in schema
        if f.name in META_COLUMNS or pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
    ]
    columns = [c for c in READ_COLUMNS if c in names] + data_columns(names, rois)
    dictionary = ['name'] if 'name' in names else None
    arrow = pq.read_table(path, columns=columns, read_dictionary=dictionary)
    # one block per column (no consolidation copy: half the time of building it from arrays)
    table = arrow.to_pandas(split_blocks=True, ignore_metadata=True)
    return normalise_photometry_table(table, copy=False, rois=rois)


def roi_indexed(locations):
    """A locations table indexed by ROI column, as IBL writes it (index ``ROI``).

    A table written without its index (``reset_index``: a column ``ROI`` or ``roi`` and a
    default integer index) gets that column back as its index; other tables are returned
    as they are.
    """
    if isinstance(locations.index, pd.RangeIndex):
        for column in ('ROI', 'roi'):
            if column in locations.columns:
                return locations.set_index(column).rename_axis('ROI')
    return locations


def _roi_names(locations):
    """The ROI names a locations table lists (its index as str; none without a table)."""
    return () if locations is None else list(locations.index.astype(str))


def roi_to_region(locations, hemispheres=None):
    """Map ROI column -> recording key, the column name in the per-band frames.

    The keys of :func:`iblnm.recordings.recording_keys` (the one naming rule): the bare
    region ('VTA') when it is unique within the session; a region recorded twice (e.g.
    bilateral VTA) keeps its hemisphere ('VTA-l', 'VTA-r'). ``hemispheres``: the catalog's
    list for the same fibers (default: the locations' suffixes).
    """
    rois = locations.index.astype(str)
    keys = recording_keys(locations['brain_region'], hemispheres, rois=list(rois))
    return dict(zip(rois, keys))


def split_bands(table, locations=None, names=None):
    """Split a normalised photometry table into ``{band: DataFrame(times x regions)}``.

    What ``iblphotometry.fpio.from_photometry_df`` returns (the first frame dropped, one
    frame per channel name in order of appearance, '' and 'None' skipped, ROI columns
    renamed to regions in the order of ``locations``), without its pandera schema
    validation: the table's types are already enforced by
    :func:`normalise_photometry_table`. Only bands present in the data are returned.
    ``names`` ({ROI: key}, default :func:`roi_to_region` of ``locations``) names the
    columns; only the ROIs of ``locations`` are kept.
    """
    rois = data_columns(table, _roi_names(locations))
    if locations is not None:
        names = roi_to_region(locations) if names is None else names
        kept = set(locations.index.astype(str))
        rename = {k: v for k, v in names.items() if k in rois and k in kept}
        rois, columns = list(rename), list(rename.values())
    else:
        columns = rois
    cat = pd.Categorical(table['name'])[1:]  # a Categorical already after normalisation
    codes, categories = cat.codes, cat.categories
    times = table['times'].to_numpy()[1:]
    values = (
        np.column_stack([table[c].to_numpy(dtype=float)[1:] for c in rois])
        if rois
        else np.empty((len(times), 0))
    )
    counts = np.bincount(codes.astype(np.int64) + 1, minlength=len(categories) + 1)
    rows = {}  # band -> its row indices (a take: 10x faster than a boolean mask)
    for code in np.flatnonzero(counts) - 1:  # the codes that occur (-1: no name)
        band = '' if code < 0 else str(categories[code])
        if band not in ('', 'None'):
            rows[band] = np.flatnonzero(codes == code)
    bands = {}
    for band in sorted(rows, key=lambda b: rows[b][0]):  # in order of appearance
        bands[band] = pd.DataFrame(
            values.take(rows[band], axis=0),
            index=pd.Index(times.take(rows[band]), name='times'),
            columns=columns,
        )
    return bands


def dark_frames(table, locations=None, names=None):
    """Values of the dark (no-LED) frames per region: ``{column: ndarray}``.

    Dark frames are the frames of a normalised table without a wavelength, except the
    first frame (all LEDs on, or empty, in IBL files). Older Neurophotometrics layouts
    interleave one after every lit frame (the Witten lab fip_40 session); current ones have
    none (empty arrays). Columns are named as in :func:`split_bands`.
    """
    dark = table.iloc[1:]
    dark = dark[dark['wavelength'].isna()]
    rename = names if names is not None else {}
    if names is None and locations is not None:
        rename = roi_to_region(locations)
    columns = data_columns(table, _roi_names(locations))
    return {rename.get(c, c): dark[c].to_numpy(float) for c in columns}


PAIRED_BANDS = ('GCaMP', 'Isosbestic')  # paired frame by frame (the isosbestic correction)


def task_span(trials):
    """(first trial start, last trial end) (s) of a trials table.

    ``InsufficientTrials`` for a table without trials, ``InvalidTrialsTable`` when no
    trial has a finite start (``intervals_0``) or end (``intervals_1``).
    """
    if len(trials) == 0:
        raise InsufficientTrials('n_trials=0: the trials table is empty')
    span = []
    for column in ('intervals_0', 'intervals_1'):
        values = trials[column].to_numpy(float) if column in trials else np.array([np.nan])
        if not np.isfinite(values).any():
            raise InvalidTrialsTable(f'no trial has a finite {column} (trial start/end times)')
        span.append(values[np.isfinite(values)])
    return float(span[0].min()), float(span[1].max())


def pair_by_time(reference, times):
    """Indices into ``times`` of the frame paired with each ``reference`` frame, by time.

    Frames of two interleaved bands are paired at the lag of the first pair, taken modulo
    the reference's frame interval ``T`` (so that the pairing convention of the file is
    kept: on these rigs a 470 nm frame is equally far from the 415 nm frames before and
    after it); a frame is paired when one of ``times`` lies within ``T / 4`` of
    ``reference + lag``.

    Parameters
    ----------
    reference, times : ndarray of float, shapes (n,) and (m,)
        Increasing frame times (s) of the two bands.

    Returns
    -------
    ndarray of int, shape (n,), or None
        None when the frames are already paired by position (the first ``min(n, m)``
        pairs keep one lag within ``T / 4``); else the index into ``times`` per reference
        frame, -1 where no frame lies within the tolerance.
    """
    reference, times = np.asarray(reference, float), np.asarray(times, float)
    n = min(reference.size, times.size)
    if n < 2:
        return None
    period = float(np.nanmedian(np.diff(reference)))
    lags = times[:n] - reference[:n]
    tolerance = period / 4
    if not np.isfinite(period) or np.nanmax(np.abs(lags - lags[0])) <= tolerance:
        return None
    wrapped = (lags - lags[0] + period / 2) % period - period / 2
    lag = lags[0] + float(np.nanmedian(wrapped))
    target = reference + lag
    right = np.clip(np.searchsorted(times, target), 1, times.size - 1)
    nearest = np.where(
        np.abs(times[right] - target) < np.abs(times[right - 1] - target), right, right - 1
    )
    return np.where(np.abs(times[nearest] - target) <= tolerance, nearest, -1)


def pair_bands(bands, paired=PAIRED_BANDS):
    """The bands of ``paired`` made frame-by-frame pairs of the first one's frames.

    Bands whose frames already pair by position (:func:`pair_by_time`) are cut to one
    length, as ``iblphotometry`` does; a band whose frames do not (a frame missing from
    one band only: the extracted table disagrees with the recording) is re-indexed onto
    the reference's frames by time, NaN where it has no frame (logged). Other bands are
    returned as they are.
    """
    present = [b for b in paired if b in bands]
    if len(present) < 2:
        return dict(bands)
    reference, others = present[0], present[1:]
    pairings = {b: pair_by_time(bands[reference].index, bands[b].index) for b in others}
    by_position = [reference, *(b for b in others if pairings[b] is None)]
    n = min(len(bands[b]) for b in by_position)
    out = {b: (frame.iloc[:n] if b in by_position else frame) for b, frame in bands.items()}
    ref_times = out[reference].index
    for band in others:
        index = pairings[band]
        if index is None:
            continue
        index = index[:n]
        frame = bands[band]
        values = frame.to_numpy(float).take(np.maximum(index, 0), axis=0)
        values[index < 0] = np.nan
        times = np.where(index >= 0, frame.index.to_numpy().take(np.maximum(index, 0)), np.nan)
        lag = np.nanmedian(times - ref_times.to_numpy())
        times = np.where(index >= 0, times, ref_times.to_numpy() + lag)
        out[band] = pd.DataFrame(
            values, index=pd.Index(times, name=frame.index.name), columns=frame.columns
        )
        log.warning(
            'photometry: %s frames do not pair with %s frames by position (%d of %d unpaired, '
            '%d unused): paired by time, NaN where unpaired',
            band,
            reference,
            int((index < 0).sum()),
            index.size,
            len(frame) - int(np.unique(index[index >= 0]).size),
        )
    return out


def restrict_to_task(
    bands, trials, pre=config.PHOTOMETRY_RESTRICT_PRE, post=config.PHOTOMETRY_RESTRICT_POST
):
    """Keep samples within [first trial start + pre, last trial end + post] (s).

    Like ``fpio.restrict_to_session_time`` but NaN-safe (first/last finite interval:
    :func:`task_span`) and without mutating the input; the GCaMP and isosbestic bands are
    then made pairs (:func:`pair_bands`).
    """
    t_start, t_stop = task_span(trials)
    restricted = {}
    for band, frame in bands.items():
        t = frame.index.to_numpy()
        restricted[band] = frame.loc[(t > t_start + pre) & (t < t_stop + post)]
    return pair_bands(restricted)


# ---------------------------------------------------------------------------
# Raw Neurophotometrics file
# ---------------------------------------------------------------------------
RAW_TIME_COLUMNS = ('SystemTimestamp', 'Timestamp')  # current, older layouts
RAW_STATE_COLUMNS = ('LedState', 'Flags')


def _raw_columns(names):
    """(time column, LED state column) of a raw file's columns (``ValueError`` if none)."""
    found = []
    for candidates in (RAW_TIME_COLUMNS, RAW_STATE_COLUMNS):
        present = [c for c in candidates if c in names]
        if not present:
            raise ValueError(
                f'raw photometry file has none of the columns {", ".join(candidates)} '
                f'(columns: {", ".join(map(str, names))})'
            )
        found.append(present[0])
    return tuple(found)


def raw_frames_disagreement(times, n_table):
    """Why a raw file's frames cannot be the recording an extracted table came from, or None.

    Parameters
    ----------
    times : ndarray of float, shape (n,)
        Frame times (s) of the raw file.
    n_table : int or None
        Frames of the extracted table (None: not known, not compared).

    Returns
    -------
    str or None
        A reason when the raw file has fewer than 2 frames, non-finite frame times, or
        fewer than 99 % of the extracted table's frames (an extraction never adds frames;
        a raw file may hold more, e.g. frames recorded after the extraction's end).
    """
    times = np.asarray(times, dtype=float)
    if times.size < 2:
        return f'{times.size} frame(s)'
    n_bad = int((~np.isfinite(times)).sum())
    if n_bad:
        return f'{n_bad} non-finite frame times'
    if n_table is not None and times.size < 0.99 * n_table:
        return f'{times.size} frames, the extracted table {n_table}'
    return None


def _read_table(path, columns=None):
    """A parquet or CSV file, only ``columns`` (a callable on the names) when given."""
    if str(path).endswith('.pqt'):
        if columns is None:
            return pd.read_parquet(path)
        import pyarrow.parquet as pq

        wanted = columns(pq.read_schema(path).names)
        arrow = pq.read_table(path, columns=wanted)
        return pd.DataFrame({c: arrow.column(c).to_numpy() for c in wanted})
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, usecols=None if columns is None else columns(list(header)))


def read_raw_photometry(path):
    """Read a raw Neurophotometrics table in any IBL layout version.

    Returns
    -------
    pandas.DataFrame
        Columns ``times`` (s, the rig clock: ``SystemTimestamp`` or ``Timestamp``),
        ``led_state`` (int, as recorded), ``led`` (``led_state & 7``: 1 = 415 nm,
        2 = 470 nm, 4 = 560 nm, 0 = dark) and ``band`` (name or ''), plus the ROI columns.
    """
    raw = _read_table(path)
    time_col, state_col = _raw_columns(raw.columns)
    rois = [c for c in raw.columns if str(c).startswith('Region') or str(c)[:1] in ('G', 'R')]
    out = pd.DataFrame(
        {
            'times': raw[time_col].to_numpy(float),
            'led_state': raw[state_col].to_numpy(np.int64),
        }
    )
    out['led'] = out['led_state'] & LED_CODE_MASK
    out['band'] = out['led'].map(LED_BANDS).fillna('')
    for roi in rois:
        out[roi] = raw[roi].to_numpy(float)
    return out


def read_raw_frames(path):
    """(frame times (s, rig clock), LED codes ``state & 7``) of a raw file; only those two
    columns are read. Same frames as :func:`read_raw_photometry`."""
    raw = _read_table(path, columns=lambda names: list(_raw_columns(names)))
    time_col, state_col = _raw_columns(raw.columns)
    state = raw[state_col].to_numpy(float)
    unknown = int(np.count_nonzero(~np.isfinite(state)))
    if unknown:  # a NaN state would be cast to a code (INT_MIN & 7 = 0: "no LED")
        raise ValueError(f'{unknown} frames without an LED state ({state_col!r} is NaN)')
    return raw[time_col].to_numpy(float), state.astype(np.int64) & LED_CODE_MASK


def alf_dataframe(bunch):
    """``one.alf.io.dataframe`` (``AlfBunch.to_df``) built in one go: same columns, order and
    values (2-D attributes split into ``name_0``, ``name_1``, ... up to 10, 3-D skipped),
    without its one-column-at-a-time inserts (~15 ms for a trials table). Object columns
    holding numbers or booleans get their dtype back (``DataFrame.infer_objects``)."""
    from one.alf import io as alfio

    if alfio.check_dimensions(bunch) != 0:
        raise ValueError('Can only convert to DataFrame objects with consistent size')
    columns = {}
    for key, values in bunch.items():
        values = np.asarray(values)
        if values.ndim == 1:
            columns[key] = values
        elif values.ndim == 2 and values.shape[1] == 1:
            columns[key] = values[:, 0]
        elif values.ndim == 2:
            for i in range(min(values.shape[1], 10)):
                columns[f'{key}_{i}'] = values[:, i]
    # ONE splits a ``*.table.pqt`` with ``df.values.T``: one text or boolean column makes
    # every column an object array; give each column back the type of its values
    return pd.DataFrame(columns).infer_objects()


def _collection(rel_path):
    """Collection of a dataset's relative path, without its revision folder ('' at the root)."""
    folder = rel_path.rsplit('/', 1)[0] if '/' in rel_path else ''
    return re.sub(r'/?#[^/]*#$', '', folder)


# ---------------------------------------------------------------------------
# Session loader
# ---------------------------------------------------------------------------
@dataclass(kw_only=True)
class PhotometrySessionLoader(_SessionLoaderBase):
    """``SessionLoader`` with photometry: ``self.photometry = {band: times x regions}``.

    Every file comes through ONE (downloaded in remote mode) and is checked against its
    md5 record once (:mod:`iblnm.integrity`) rather than at every load.
    """

    photometry: dict = field(default_factory=dict, repr=False)
    dark: dict = field(default_factory=dict, repr=False)
    # (times, wavelength) of every frame of the extracted table, kept from its one read
    extracted_frames: tuple | None = field(default=None, repr=False)
    _dataset_records: object = field(default=None, repr=False)

    def _records(self):
        """The session's dataset records (``one.list_datasets(details=True)``), listed once."""
        if self._dataset_records is None:
            self._dataset_records = self.one.list_datasets(self.eid, details=True)
        return self._dataset_records

    def _check_local(self, files):
        """DatasetHashMismatch when a file taken from the cache table fails its md5 record."""
        bad = mismatched(self.one, files, self._records())
        if bad:
            raise DatasetHashMismatch(
                f'md5 of {", ".join(Path(f).name for f in bad)} differs from its ONE record '
                '(the file changed after it was registered)'
            )

    def _collections_of(self, name):
        """Collections (revision folders stripped) of the session's records of file ``name``."""
        records = self._records()
        rels = records['rel_path'] if len(records) else []
        return [_collection(r) for r in rels if r == name or r.endswith('/' + name)]

    def has_dataset(self, name, collection=None):
        """True when the session lists a file ``name`` (in ``collection`` when given, any
        revision), from the records listed once: what ``len(one.list_datasets(eid,
        filename=name, collection=collection)) > 0`` says, without its ~3 ms of filtering."""
        found = self._collections_of(name)
        return bool(found) if collection is None else collection in found

    def _find_behaviour_collection(self, obj):
        """brainbox's lookup of the trials/wheel collection, from the records listed once.

        One collection is used; none gives 'alf'. Several (a session with several task runs,
        e.g. ``alf/task_00`` and ``alf/task_01``) raise :class:`AmbiguousTaskCollection`
        naming them, where brainbox raises ``ALFMultipleCollectionsFound``: the task run the
        photometry belongs to is not guessed.
        """
        name = '_ibl_trials.table.pqt' if obj == 'trials' else '_ibl_wheel.position.npy'
        collections = set(self._collections_of(name))
        if len(collections) <= 1:
            return collections.pop() if collections else 'alf'
        raise AmbiguousTaskCollection(
            f'{name} in {len(collections)} collections ({", ".join(sorted(collections))}): '
            'the session has several task runs and iblnm does not choose one'
        )

    def _dataset_path(self, name, collection):
        """Local path of a verified dataset, through ONE (downloads it in remote mode).

        In local mode a dataset without revisions whose file has its recorded size is
        taken from the cache table directly (what ONE's ``load_dataset`` returns, without
        its ~10 ms of table filtering); everything else goes through ONE.
        """
        rel = f'{collection}/{name}' if collection else name
        path = local_dataset(self.one, self._records(), self.session_path, rel)
        if path is not None:
            self._check_local([path])
            return path
        return verified(
            self.one,
            self.eid,
            lambda check_hash: self.one.load_dataset(
                self.eid, name, collection=collection, download_only=True, check_hash=check_hash
            ),
            records=self._records(),
        )

    def load_object(self, obj, collection=None, attribute=None, revision=None):
        """``one.load_object`` with the files verified once (:func:`iblnm.integrity.verified`).

        Returns the ALF Bunch of ``obj`` in ``collection``; ``attribute`` as in ONE
        (a regular expression when ``one.wildcards`` is False).
        """
        from one.alf import io as alfio

        if not revision:  # local mode: from the cache table (None: leave it to ONE)
            pattern = attribute
            if attribute is not None and self.one.wildcards:
                pattern = fnmatch.translate(attribute)
            files = local_object(
                self.one, self._records(), self.session_path, obj, collection, pattern
            )
            if files is not None:
                self._check_local(files)
                return alfio.load_object(files, wildcards=self.one.wildcards)
        files = verified(
            self.one,
            self.eid,
            lambda check_hash: self.one.load_object(
                self.eid,
                obj,
                collection=collection,
                attribute=attribute,
                revision=revision or None,
                download_only=True,
                check_hash=check_hash,
            ),
            records=self._records(),
        )
        files = [f for f in files if f is not None]
        if not files:
            raise ALFObjectNotFound(f'{obj} in {collection}')
        return alfio.load_object(files, wildcards=self.one.wildcards)

    def load_trials(self, collection=None, revision=None, style='one'):
        """``SessionLoader.load_trials`` with the files verified once (not at every load)."""
        revision = self.revision if revision is None else revision
        collection = collection or self._find_behaviour_collection('trials')
        self.one.wildcards = False  # as brainbox: the attribute below is a regular expression
        try:
            trials = self.load_object('trials', collection, r'(?!itiDuration).*', revision)
        finally:
            self.one.wildcards = True
        self.trials = alf_dataframe(trials)
        self.data_info.loc[self.data_info['name'] == 'trials', 'is_loaded'] = True
        if style == 'tidy':
            self.trials = self.apply_tidy_transformations(self.trials)

    def load_photometry_table(self):
        """Return (normalised extracted table, locations table)."""
        locations = roi_indexed(
            pd.read_parquet(self._dataset_path(LOCATIONS_DATASET, PHOTOMETRY_COLLECTION))
        )
        table = read_photometry_table(
            self._dataset_path(SIGNAL_DATASET, PHOTOMETRY_COLLECTION), rois=_roi_names(locations)
        )
        self.extracted_frames = (table['times'].to_numpy(), table['wavelength'].to_numpy())
        return table, locations

    def load_photometry(
        self,
        restrict_to_session=True,
        pre=config.PHOTOMETRY_RESTRICT_PRE,
        post=config.PHOTOMETRY_RESTRICT_POST,
    ):
        """Load the extracted photometry into ``self.photometry`` (bands 'GCaMP', 'Isosbestic').

        With ``restrict_to_session``, samples are kept within the task ± (pre, post) s.
        """
        table, locations = self.load_photometry_table()
        bands = split_bands(table, locations)
        self.dark = dark_frames(table, locations)
        if restrict_to_session:
            if self.trials is None or len(self.trials) == 0:
                self.load_trials()
            bands = restrict_to_task(bands, self.trials, pre=pre, post=post)
        self.photometry = bands
        return bands

    def raw_photometry_path(self):
        """Local path of the raw Neurophotometrics file (ALFObjectNotFound if absent)."""
        return Path(self._dataset_path(RAW_PHOTOMETRY_DATASET, RAW_PHOTOMETRY_COLLECTION))

    def raw_frames(self):
        """(times, LED codes) of every recorded frame but the first (raw QC's input).

        From the raw Neurophotometrics file (its time and LED columns only) when the
        session has one, else from the extracted table (LED 1 = 415 nm, 2 = 470 nm),
        reusing the frames kept by :meth:`load_photometry_table` instead of reading the
        table again.
        """
        try:
            path = self.raw_photometry_path()
        except ALFObjectNotFound:
            return self.table_frames()
        times, led = read_raw_frames(path)
        return times[1:], led[1:]

    def table_frames(self):
        """(times, LED codes) of every frame but the first of the extracted table (LED 1 =
        415 nm, 2 = 470 nm, 0 = other), as :meth:`raw_frames` gives them from a raw file."""
        if self.extracted_frames is None:
            self.load_photometry_table()
        times, wavelength = self.extracted_frames
        led = np.select([wavelength == 415, wavelength == 470], [1, 2], 0)
        return times[1:], led[1:]
