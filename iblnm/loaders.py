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
from iblnm.validation import AmbiguousTaskCollection, DatasetHashMismatch

SIGNAL_DATASET = 'photometry.signal.pqt'
LOCATIONS_DATASET = 'photometryROI.locations.pqt'
RAW_PHOTOMETRY_DATASET = '_neurophotometrics_fpData.raw.pqt'
PHOTOMETRY_COLLECTION = 'alf/photometry'
RAW_PHOTOMETRY_COLLECTION = 'raw_photometry_data'
# LED code (LedState & 7) -> band name; 0 = dark frame, 7 = all LEDs (first frame)
LED_BANDS = {1: 'Isosbestic', 2: 'GCaMP', 4: 'RCaMP'}

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


def normalise_photometry_table(table, copy=True):
    """Map an extracted photometry table to the current IBL layout.

    ``include`` is renamed ``valid``; 'None'/None channel names and colours become '';
    dark frames (wavelength 0) get wavelength NaN; data columns are float64. These
    coercions are the schema check: a column that cannot take its type raises here
    (``ValueError``/``TypeError``), a missing ``times``/``name``/``wavelength`` ``KeyError``.
    ``copy=False`` modifies ``table`` in place (a table read for this call only).
    """
    table = table.copy() if copy else table
    if 'valid' not in table and 'include' in table:
        table = table.rename(columns={'include': 'valid'})
    if 'valid' not in table:
        table['valid'] = True
    for col in ('name', 'color'):
        if col in table or col == 'name':
            table[col] = _normalise_names(table[col])
    wavelength = table['wavelength'].to_numpy(dtype=float, copy=True)
    wavelength[wavelength == 0.0] = np.nan
    table['wavelength'] = wavelength
    check_band_wavelengths(table['name'], wavelength)
    for col, dtype in (
        ('valid', bool),
        ('times', float),
        *((c, float) for c in data_columns(table)),
    ):
        if table[col].dtype != dtype:
            table[col] = table[col].astype(dtype)
    return table


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


def data_columns(table):
    """ROI columns of a photometry table (``Region*``, else ``G*``/``R*`` names).

    ``table`` is a DataFrame or a list of column names.
    """
    names = table.columns if hasattr(table, 'columns') else table
    candidates = [c for c in names if c not in META_COLUMNS]
    regions = [c for c in candidates if str(c).startswith('Region')]
    return regions or [c for c in candidates if str(c)[:1] in ('G', 'R')]


def read_photometry_table(path):
    """Read the columns the pipeline uses of an extracted table, normalised.

    Only ``times``, ``valid``/``include``, ``wavelength``, ``name`` and the ROI columns are
    read (the file's ``color`` and any other column are not), with pyarrow; the result is
    as :func:`normalise_photometry_table` (without ``color``).
    """
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    columns = [c for c in READ_COLUMNS if c in names] + data_columns(names)
    dictionary = ['name'] if 'name' in names else None
    arrow = pq.read_table(path, columns=columns, read_dictionary=dictionary)
    # one block per column (no consolidation copy: half the time of building it from arrays)
    table = arrow.to_pandas(split_blocks=True, ignore_metadata=True)
    return normalise_photometry_table(table, copy=False)


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
    rois = data_columns(table)
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
    return {rename.get(c, c): dark[c].to_numpy(float) for c in data_columns(table)}


def restrict_to_task(
    bands, trials, pre=config.PHOTOMETRY_RESTRICT_PRE, post=config.PHOTOMETRY_RESTRICT_POST
):
    """Keep samples within [first trial start + pre, last trial end + post] (s).

    Like ``fpio.restrict_to_session_time`` but NaN-safe (first/last finite interval) and
    without mutating the input; every band is cut to the shortest length.
    """
    t_start = np.nanmin(trials['intervals_0'].to_numpy(float))
    t_stop = np.nanmax(trials['intervals_1'].to_numpy(float))
    restricted = {}
    for band, frame in bands.items():
        t = frame.index.to_numpy()
        restricted[band] = frame.loc[(t > t_start + pre) & (t < t_stop + post)]
    n = min((len(f) for f in restricted.values()), default=0)
    return {band: frame.iloc[:n] for band, frame in restricted.items()}


# ---------------------------------------------------------------------------
# Raw Neurophotometrics file
# ---------------------------------------------------------------------------
def _raw_columns(names):
    time_col = 'SystemTimestamp' if 'SystemTimestamp' in names else 'Timestamp'
    state_col = 'LedState' if 'LedState' in names else 'Flags'
    return time_col, state_col


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
    return raw[time_col].to_numpy(float), raw[state_col].to_numpy(np.int64) & LED_CODE_MASK


def alf_dataframe(bunch):
    """``one.alf.io.dataframe`` (``AlfBunch.to_df``) built in one go: same columns, order and
    values (2-D attributes split into ``name_0``, ``name_1``, ... up to 10, 3-D skipped),
    without its one-column-at-a-time inserts (~15 ms for a trials table)."""
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
    return pd.DataFrame(columns)


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
        table = read_photometry_table(self._dataset_path(SIGNAL_DATASET, PHOTOMETRY_COLLECTION))
        locations = pd.read_parquet(self._dataset_path(LOCATIONS_DATASET, PHOTOMETRY_COLLECTION))
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
            times, led = read_raw_frames(self.raw_photometry_path())
        except ALFObjectNotFound:
            if self.extracted_frames is None:
                self.load_photometry_table()
            times, wavelength = self.extracted_frames
            led = np.select([wavelength == 415, wavelength == 470], [1, 2], 0)
        return times[1:], led[1:]
