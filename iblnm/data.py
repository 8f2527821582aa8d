"""``PhotometrySession``: one session's data, validated and processed step by step.

The class holds state and delegates: loading to :mod:`iblnm.loaders`, signal work to
:mod:`iblnm.signal`, behaviour to :mod:`iblnm.task`, the HDF5 layout to :mod:`iblnm.h5`.
Each method raises a typed error from :mod:`iblnm.validation` on failure.

Data attributes start empty and are filled by explicit calls::

    ps = PhotometrySession(session_row, one=one)
    ps.load_trials()            # ps.trials (with signed_contrast, contrast, stim_side)
    ps.load_photometry()        # ps.photometry = {'GCaMP': ..., 'Isosbestic': ...}
    ps.run_raw_qc(); ps.validate_qc()
    ps.detect_artefacts()       # ps.artefacts (masks), ps.segments, artefact QC columns
    ps.run_sliding_qc()
    ps.preprocess()             # ps.photometry['GCaMP_preprocessed'] (30 Hz z-scores, NaN
                                # on masked samples) and ps.photometry['GCaMP_dff'] (ΔF/F)
    ps.extract_responses()      # ps.responses = {region: DataArray(event, trial, time)}
    ps.fit_event_kernels()      # ps.kernels = {region: Dataset(kernel (event, condition, lag))}
    ps.save_h5()
"""

import functools
import logging

import numpy as np
import pandas as pd
import xarray as xr
from one.alf.exceptions import ALFObjectNotFound

from iblnm import config, h5, provenance, recordings, task
from iblnm import validation as v
from iblnm.loaders import (
    PHOTOMETRY_COLLECTION,
    SIGNAL_DATASET,
    PhotometrySessionLoader,
    dark_frames,
    data_columns,
    raw_frames_disagreement,
    restrict_to_task,
    roi_to_region,
    split_bands,
)
from iblnm.signal import artefacts as af
from iblnm.signal import preprocess as sp
from iblnm.signal import qc as sq
from iblnm.signal import responses as sr
from iblnm.signal import verdict as sv
from iblnm.util import native_threads, thread_map

log = logging.getLogger(__name__)

PREPROCESSED_BAND = 'GCaMP_preprocessed'
MIN_KERNEL_FIT_S = 60.0  # s of valid signal below which a region gets no event kernels
DFF_BAND = 'GCaMP_dff'  # ΔF/F beside the z-scores (issue 12); responses_dff when present
TRIAL_H5_COLUMNS = [
    'stimOn_times',
    'firstMovement_times',
    'feedback_times',
    'response_times',
    'choice',
    'feedbackType',
    'probabilityLeft',
    'signed_contrast',
    'contrast',
    'stim_side',
    'intervals_0',
    'intervals_1',
    'goCue_times',
]
METADATA_FIELDS = [
    'eid',
    'subject',
    'start_time',
    'number',
    'task_protocol',
    'session_type',
    'lab',
    'NM',
    'strain',
    'line',
    'end_time',
    'session_length',
    'day_n',
    'session_n',
    'url',
    'genotype',
    'projects',
    'users',
    'brain_region',
    'hemisphere',
    'target_NM',
    'datasets',
]
QC_COLUMNS = (
    ['eid', 'brain_region', 'band']
    + config.QC_SLIDING_METRICS
    + config.QC_RAW_METRICS
    + config.QC_LOAD_METRICS
    + config.QC_PREPROCESSING
    + config.QC_SIGNAL_METRICS
    + config.QC_ARTEFACT_METRICS
)


def _fill_time_gaps(bands, factor=config.PHOTOMETRY_GAP_FACTOR):
    """Bands with NaN frames where frames are missing (:func:`iblnm.signal.preprocess.time_gaps`).

    Parameters
    ----------
    bands : dict of str → pandas.DataFrame
        Frame times (s, index) × regions per band; the bands are paired by position.
    factor : float
        An interval longer than ``factor`` × the median interval is a gap.

    Returns
    -------
    dict of str → pandas.DataFrame
        The same frames (unchanged objects when there is no gap). When every band has its
        gaps after the same frames, the first band's frame counts fill all of them, so the
        pairs by position stay pairs.
    """
    gaps = {band: sp.time_gaps(frame.index.to_numpy(), factor) for band, frame in bands.items()}
    if not any(after.size for after, _ in gaps.values()):
        return bands
    first = next(iter(gaps.values()))
    if all(np.array_equal(after, first[0]) for after, _ in gaps.values()):
        gaps = dict.fromkeys(gaps, first)
    out = {}
    for band, frame in bands.items():
        times, values = sp.fill_time_gaps(frame.index.to_numpy(), frame.to_numpy(), gaps[band])
        index = pd.Index(times, name=frame.index.name)
        out[band] = pd.DataFrame(values, index=index, columns=frame.columns)
    log.info(
        'photometry: %d time gap(s), %d missing frames filled with NaN',
        first[0].size,
        int(first[1].sum()),
    )
    return out


def _listify(value):
    return list(value) if isinstance(value, list | tuple | np.ndarray) else []


def session_validator(method):
    """Give a ``validate_*`` method an optional ``exlog`` keyword (as :func:`exception_logger`).

    Without ``exlog`` the typed error propagates; with a list, a typed iblnm error
    (:class:`iblnm.validation.IblnmError`) is appended to it as a log entry of the session
    and the method returns None. Anything else (a programming error) always propagates.
    """

    @functools.wraps(method)
    def wrapper(self, *args, exlog=None, **kwargs):
        if exlog is None:
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        except v.IblnmError as error:
            exlog.append(v.make_log_entry(self.eid, error=error))
            return None

    return wrapper


class PhotometrySession:
    """One photometry session: metadata from a catalog row, data loaded on demand.

    Parameters
    ----------
    session_row : pandas.Series or dict
        A row of ``metadata/sessions.pqt`` (at least ``eid``).
    one : ONE, optional
        Default :func:`iblnm.io.get_connection` (one connection per process).
    h5_dir : path
        Folder of the per-session HDF5 files.
    load_data : bool
        Call :meth:`load_trials` and :meth:`load_photometry` immediately.

    Examples
    --------
    A session of the catalog is loaded from ONE (``PhotometrySession(row, one=one,
    load_data=True)``); the examples use a simulated one (one VTA fiber, no ONE):

    >>> from iblnm.simulate import example_session
    >>> ps = example_session(seed=0)
    >>> ps.brain_region, ps.hemisphere, ps.regions
    (['VTA'], ['l'], ['VTA'])
    >>> ps.validate_n_trials()              # raises InsufficientTrials below 90 trials
    >>> qc = ps.run_sliding_qc()            # QC metrics per region x band
    >>> signal = ps.preprocess()            # z-scored, isosbestic-corrected, 30 Hz
    >>> list(signal.columns), round(float(signal.index[1] - signal.index[0]), 4)
    (['VTA'], 0.0333)
    >>> responses = ps.extract_responses()  # {region: DataArray(event, trial, time)}
    >>> responses['VTA'].dims
    ('event', 'trial', 'time')
    >>> ps.verdicts[['brain_region', 'verdict']]
      brain_region verdict
    0          VTA    PASS
    """

    def __init__(self, session_row, one=None, h5_dir=config.SESSIONS_H5_DIR, load_data=False):
        row = dict(session_row)
        self.eid = v.validate_eid(row['eid'])
        self.metadata = {key: row.get(key) for key in METADATA_FIELDS if key in row}
        self.metadata['eid'] = self.eid
        self.subject = row.get('subject')
        self.session_type = row.get('session_type')
        self.brain_region = _listify(row.get('brain_region'))
        self.hemisphere = _listify(row.get('hemisphere'))
        self._one = one
        self.h5_dir = h5_dir
        self.trials = None
        self.photometry = {}
        self.responses = {}
        self.responses_dff = {}
        self.kernels = {}
        self._qc_rows = {}  # (brain_region, band) -> {metric: value}
        self._raw_qc = {}  # whole-recording metrics, copied onto every row
        self._dropped_qc = {}  # (brain_region, band) -> {'dropped_fiber': 1.0}: fibers dropped at load
        self._qc_version = 0  # bumped by every change of the rows (the qc table's cache key)
        self._qc_table = (None, None)  # (key, table) of the last qc table built
        self.wheel = None
        self.wheel_fs = None
        self.wheel_velocity = None
        self.errors = []
        self.preprocessing_params = None
        self.provenance = None  # read from the HDF5 file by load_h5
        self.artefacts = {}  # region -> ArtefactResult on the paired raw samples
        self.floors = {}  # region -> (dark level, source)
        self._recorded_span = None  # (first, last) frame time (s) before the task restriction
        self._segments = {}  # region -> segments table read from the HDF5 file
        self._loader = None
        if load_data:
            self.load_trials()
            self.load_photometry()

    def __repr__(self):
        return f'PhotometrySession({self.subject} {self.date} {self.session_type} {self.eid[:8]})'

    # ------------------------------------------------------------------ basics
    @property
    def one(self):
        if self._one is None:
            from iblnm.io import _get_default_connection  # get_connection(), cached

            self._one = _get_default_connection()
        return self._one

    @property
    def date(self):
        """Session date 'YYYY-MM-DD' (from ``start_time``), or None.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> example_session().date
        '2024-01-01'
        """
        start = self.metadata.get('start_time')
        return None if start is None else pd.Timestamp(start).date().isoformat()

    @property
    def h5_path(self):
        """Path of the session's HDF5 file (the eid is a validated UUID).

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> example_session(h5_dir='out').h5_path.as_posix()
        'out/00000000-0000-4000-8000-000000000e0e.h5'
        """
        from pathlib import Path

        return Path(self.h5_dir) / f'{self.eid}.h5'

    @property
    def loader(self):
        if self._loader is None:
            self._loader = PhotometrySessionLoader(one=self.one, eid=self.eid)
        return self._loader

    def log_error(self, error):
        """Append an error-log entry for ``error`` to :attr:`errors`.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> from iblnm import validation as v
        >>> ps.log_error(v.MissingFiber('G1 (DR): no column in the signal table'))
        >>> ps.errors[0]['error_type'], ps.errors[0]['error_message']
        ('MissingFiber', 'G1 (DR): no column in the signal table')
        """
        self.errors.append(v.make_log_entry(self.eid, error=error))

    def _load_error(self, error, what, cls=v.MissingExtractedData):
        """The typed error of a failed load of ``what`` (:func:`iblnm.validation.as_transient`
        for request, download and I/O errors; in remote mode a listed dataset whose file ONE
        could not fetch too); otherwise ``cls`` (``MissingExtractedData`` for a dataset ONE
        cannot find), naming the library's exception."""
        from iblnm.io import is_local

        transient = v.as_transient(error, what)
        if transient is None and isinstance(error, ALFObjectNotFound) and not is_local(self.one):
            transient = v.wrap(v.RequestFailed, error, f'{what} (download)')
        if transient is not None:
            return transient
        if isinstance(error, v.IblnmError):
            return error
        return v.wrap(
            v.MissingExtractedData if isinstance(error, ALFObjectNotFound) else cls, error, what
        )

    def _has_dataset(self, name, collection=None):
        return self.loader.has_dataset(name, collection)

    def _missing_data(self, extracted_name, raw_names):
        """MissingExtractedData when any raw file exists, else MissingRawData."""
        if any(self._has_dataset(name) for name in raw_names):
            return v.MissingExtractedData(f'{extracted_name} missing (raw data present)')
        return v.MissingRawData(
            f'{extracted_name} missing and no raw data ({", ".join(raw_names)})'
        )

    # ------------------------------------------------------------------ loading
    def load_trials(self):
        """Load the trials table and add ``stim_side``, ``contrast`` (%), ``signed_contrast``."""
        if not self._has_dataset('_ibl_trials.table.pqt'):
            raise self._missing_data('_ibl_trials.table.pqt', ['_iblrig_taskData.raw.jsonable'])
        try:
            self.loader.load_trials()
        except Exception as error:  # noqa: BLE001 - typed: transient, or a data failure
            raise self._load_error(error, 'trials', v.InvalidTrialsTable) from error
        trials = self.loader.trials.copy()
        v.validate_trials_table(trials)
        contrasts = task.compute_trial_contrasts(trials)
        self.trials = pd.concat(
            [trials, contrasts[['stim_side', 'contrast', 'signed_contrast']]], axis=1
        )
        return self.trials

    def load_photometry(
        self, pre=config.PHOTOMETRY_RESTRICT_PRE, post=config.PHOTOMETRY_RESTRICT_POST
    ):
        """Load extracted photometry restricted to the task ± (pre, post) s.

        Sets ``photometry = {'GCaMP': DataFrame(times x regions), 'Isosbestic': ...}``
        (no 'Isosbestic' key for recordings without an isosbestic channel). Time gaps (frames
        not recorded, :func:`_fill_time_gaps`) hold NaN frames: the artefact masks call them
        ``missing`` and the preprocessed signal is NaN there.
        """
        self._set_dropped_fibers({}, ())  # a reload that fails keeps no earlier drop
        if not self._has_dataset(SIGNAL_DATASET, PHOTOMETRY_COLLECTION):
            raise self._missing_data(SIGNAL_DATASET, ['_neurophotometrics_fpData.raw.pqt'])
        if self.trials is None:
            self.load_trials()
        self.loader.trials = self.trials
        try:
            table, locations = self.loader.load_photometry_table()
        except Exception as error:  # noqa: BLE001 - ArrowInvalid, KeyError ... named in the log
            raise self._load_error(error, 'photometry', v.InvalidPhotometryTable) from error
        bands = self._validated_bands(table, locations)
        if 'GCaMP' not in bands:
            found = ', '.join(repr(b) for b in bands) or 'none'
            raise v.InvalidPhotometryTable(
                f'photometry: no GCaMP (470 nm) frames (bands found: {found})'
            )
        bands = _fill_time_gaps(bands)  # before the bands
        recorded = [f.index for f in bands.values() if len(f)]
        self._recorded_span = (
            (min(i[0] for i in recorded), max(i[-1] for i in recorded)) if recorded else None
        )
        bands = restrict_to_task(bands, self.trials, pre=pre, post=post)  # are cut to one length
        self.loader.photometry = bands
        self.photometry = {
            band: frame for band, frame in bands.items() if band in ('GCaMP', 'Isosbestic')
        }
        self._match_photometry_to_metadata()
        return self.photometry

    def _validated_bands(self, table, locations):
        """Per-band frames of a photometry table checked at the boundary: unique increasing
        timestamps (fatal), fibers named by the locations table (a missing or all-NaN fiber is
        logged as MissingFiber/BadFiber and dropped; the other fibers go on)."""
        v.validate_photometry_times(table['times'], labels=table['name'])
        columns = data_columns(table, list(locations.index.astype(str)))
        names = self.recording_names(locations)  # keys over all fibers: stable when one drops
        try:
            kept, dropped = v.validate_photometry_fibers(table, locations, columns)
        except (v.BadFiber, v.MissingFiber) as error:  # no fiber left: each gets its FAIL row
            for other in error.dropped[1:]:  # the first is the stage's fatal row
                self.log_error(other)
            self._set_dropped_fibers(names, set(pd.unique(table['name'])))
            raise
        for error in dropped:
            self.log_error(error)
        bad = set(locations.index.astype(str)) - set(kept.index.astype(str))
        dropped_columns = [c for c in columns if c in bad]
        if dropped_columns:  # drop copies the table: only when a fiber is dropped
            table = table.drop(columns=dropped_columns)
        try:
            self.loader.dark = dark_frames(table, kept, names)  # older layouts' LED-off frames
            bands = split_bands(table, kept, names)
        except Exception as error:  # noqa: BLE001 - pandera SchemaError ...: named in the log
            raise v.wrap(v.InvalidPhotometryTable, error, 'photometry') from error
        if bad:
            self._set_dropped_fibers({r: k for r, k in names.items() if str(r) in bad}, bands)
        return bands

    def _set_dropped_fibers(self, names, bands):
        """QC rows of the fibers dropped at load (:class:`BadFiber`: all NaN or constant;
        :class:`MissingFiber`: no column): ``dropped_fiber = 1`` on each (recording, band) of
        the session's GCaMP/isosbestic bands, so that the verdicts count them as FAIL
        (rule ``dropped_fiber``) rather than leaving them out. ``names``: {ROI: recording key};
        ``bands``: the band names the session has (any container)."""
        self._dropped_qc = {
            (key, band): {'dropped_fiber': 1.0}
            for key in names.values()
            for band in ('GCaMP', 'Isosbestic')
            if band in bands
        }
        self._qc_version += 1

    def recording_names(self, locations):
        """{ROI column: recording key} of a locations table (:mod:`iblnm.recordings`), with
        the catalog's hemispheres when the session has one per fiber.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> import pandas as pd
        >>> locations = pd.DataFrame({'brain_region': ['VTA']}, index=pd.Index(['G0'], name='ROI'))
        >>> ps.recording_names(locations)
        {'G0': 'VTA'}
        """
        hemis = self.hemisphere if len(self.hemisphere) == len(locations) else None
        return roi_to_region(locations, hemis)

    def _match_photometry_to_metadata(self):
        """Check that every band's columns are the session's regions (else AmbiguousRegionMapping)."""
        if not self.brain_region:
            return
        expected = set(self.brain_region)
        for band, frame in self.photometry.items():
            columns = {recordings.key_region(c, expected) for c in frame.columns}
            if not columns <= expected and set(frame.columns) != expected:
                raise v.AmbiguousRegionMapping(
                    f'{band} columns {list(frame.columns)} do not match regions {self.brain_region}'
                )

    @property
    def regions(self):
        """Region columns of the loaded (or preprocessed) photometry.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> example_session().regions
        ['VTA']
        """
        for band in ('GCaMP', PREPROCESSED_BAND):
            if band in self.photometry:
                return list(self.photometry[band].columns)
        return []

    # ------------------------------------------------------------------ validation
    @session_validator
    def validate_n_trials(self):
        """Raise InsufficientTrials when there are fewer than ``config.MIN_NTRIALS`` trials.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> ps.validate_n_trials()  # 133 trials: passes (returns None)
        >>> ps.trials = ps.trials.iloc[:50]
        >>> log = []
        >>> ps.validate_n_trials(exlog=log)  # logged instead of raised
        >>> log[0]['error_type']
        'InsufficientTrials'
        """
        n_trials = 0 if self.trials is None else len(self.trials)
        if n_trials < config.MIN_NTRIALS:
            raise v.InsufficientTrials(f'n_trials={n_trials} < MIN_NTRIALS={config.MIN_NTRIALS}')

    @session_validator
    def validate_block_structure(self):
        """Raise BlockStructureBug for biased/ephys sessions with implausibly short blocks.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> ps.validate_block_structure()  # one 50/50 block: nothing to check
        >>> ps.trials['probabilityLeft'] = [0.5] * 90 + [0.2] * 5 + [0.8] * (len(ps.trials) - 95)
        >>> log = []
        >>> ps.validate_block_structure(exlog=log)  # a 5-trial block
        >>> log[0]['error_type']
        'BlockStructureBug'
        """
        if self.session_type not in config.BLOCK_SESSION_TYPES:
            return
        result = task.validate_block_structure(self.trials)
        if result['flagged']:
            raise v.BlockStructureBug(
                f'Min block length: {result["min_block_length"]}, n_blocks: {result["n_blocks"]}'
            )

    @session_validator
    def validate_event_completeness(self, events=config.RESPONSE_EVENTS):
        """Raise IncompleteEventTimes listing events absent or < 90 % non-NaN.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> ps.validate_event_completeness()
        >>> ps.trials.loc[:40, 'feedback_times'] = float('nan')
        >>> log = []
        >>> ps.validate_event_completeness(exlog=log)
        >>> log[0]['error_type']
        'IncompleteEventTimes'
        """
        missing = task.missing_events(self.trials, events=events)
        if missing:
            raise v.IncompleteEventTimes(missing)

    @session_validator
    def validate_trials_in_photometry_time(self, band=None):
        """Raise TrialsNotInPhotometryTime unless all stimOn..feedback times are recorded.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> ps.validate_trials_in_photometry_time()
        >>> ps.trials['feedback_times'] += 1000.0  # feedbacks after the recording's end
        >>> log = []
        >>> ps.validate_trials_in_photometry_time(exlog=log)
        >>> log[0]['error_type']
        'TrialsNotInPhotometryTime'
        """
        band = band or (PREPROCESSED_BAND if PREPROCESSED_BAND in self.photometry else 'GCaMP')
        times = self.photometry[band].index.to_numpy()
        first = np.nanmin(self.trials['stimOn_times'].to_numpy(float))
        last = np.nanmax(self.trials['feedback_times'].to_numpy(float))
        if len(times) == 0 or first < times[0] or last > times[-1]:
            span = self._recorded_span
            if len(times):
                where = f'photometry {times[0]:.1f}-{times[-1]:.1f} s'
            elif span is not None:  # nothing left within the task: say what was recorded
                where = f'photometry {span[0]:.1f}-{span[1]:.1f} s, none within the task'
            else:
                where = 'no photometry samples'
            raise v.TrialsNotInPhotometryTime(f'trials {first:.1f}-{last:.1f} s, {where}')

    @session_validator
    def validate_qc(self):
        """Raise BandInversion or EarlySamples (both QCValidationError) after raw QC.

        BandInversion when frames of one LED follow each other (the message also names early
        samples if there are some), else EarlySamples when frames came early. The counts stay
        in :attr:`qc` (and so in ``qc_photometry.pqt`` and the H5 file).
        """
        counts, qc = {}, self.qc
        for name in ('n_band_inversions', 'n_early_samples'):
            column = qc.get(name, pd.Series(dtype=float))
            values = pd.to_numeric(column, errors='coerce').fillna(0)
            counts[name] = int(values.max()) if len(values) else 0
        issues = [
            f'{label} detected (n={counts[name]})'
            for name, label in (
                ('n_band_inversions', 'band inversions'),
                ('n_early_samples', 'early samples'),
            )
            if counts[name] > 0
        ]
        if counts['n_band_inversions'] > 0:
            raise v.BandInversion('; '.join(issues))
        if counts['n_early_samples'] > 0:
            raise v.EarlySamples('; '.join(issues))

    @session_validator
    def validate_few_unique_samples(self, threshold=None):
        """Raise FewUniqueSamples naming every region/band below the threshold (non-fatal).

        The test is ``n_noise_levels`` < ``config.N_NOISE_LEVELS_THRESHOLD`` (distinct values
        within ±1 robust SD: independent of rate and ADC resolution); tables without that
        column fall back to ``n_unique_samples`` < ``config.N_UNIQUE_SAMPLES_THRESHOLD``.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> ps.validate_few_unique_samples()  # a good fiber: many distinct values
        """
        qc = self.qc
        metric = (
            'n_noise_levels'
            if 'n_noise_levels' in qc and qc['n_noise_levels'].notna().any()
            else 'n_unique_samples'
        )
        if qc.empty or metric not in qc:
            return
        if threshold is None:
            threshold = (
                config.N_NOISE_LEVELS_THRESHOLD
                if metric == 'n_noise_levels'
                else config.N_UNIQUE_SAMPLES_THRESHOLD
            )
        low = qc[pd.to_numeric(qc[metric], errors='coerce') < threshold]
        if len(low):
            items = [
                f'{r.brain_region}/{r.band}={getattr(r, metric):.3g}' for r in low.itertuples()
            ]
            raise v.FewUniqueSamples(
                f'few distinct values ({metric} < {threshold}): {", ".join(items)}'
            )

    # ------------------------------------------------------------------ QC
    def _raw_frames(self):
        """(frame times, LED codes) of the whole recording: raw file, else extracted table.

        A raw file that cannot be read (corrupt, unknown layout) or whose frames cannot be
        the extracted table's recording (:func:`iblnm.loaders.raw_frames_disagreement`) is
        logged as :class:`iblnm.validation.InvalidRawData`, and the extracted table's frames
        are counted instead: raw QC then checks the frames that are processed.
        """
        import pyarrow as pa

        try:
            times, led = self.loader.raw_frames()
        except (pa.ArrowException, ValueError, KeyError) as error:  # not OSError: transient
            problem = v.wrap(v.InvalidRawData, error, 'raw photometry file')
        else:
            frames = self.loader.extracted_frames
            reason = raw_frames_disagreement(times, None if frames is None else len(frames[0]))
            if reason is None:
                return times, led
            problem = v.InvalidRawData(f'raw photometry file: {reason}')
        log.warning('%s; raw QC counts the extracted table instead', problem)
        self.log_error(problem)
        return self.loader.table_frames()

    def run_raw_qc(self):
        """Count band inversions, early frames and dropped frames over the whole recording.

        Uses the raw Neurophotometrics file when present (LED codes ``LedState & 7``), else
        the extracted table. The counts are copied onto every ``qc`` row. A recording with a
        single LED code has nothing to alternate: ``n_band_inversions`` is NaN.
        """
        times, led = self._raw_frames()
        codes = sq.distinct_codes(led)
        present = [c for c in codes if c in (1, 2)]
        channels = tuple(present) if len(present) == 2 else tuple(codes)
        if v.shared_pair_times(times, led):  # one time per pair: no interleaved frame clock
            per_band = [times[led == c] for c in channels]
            return self._set_raw_qc(
                {
                    'n_band_inversions': np.nan,  # the order within a pair is not recorded
                    'n_early_samples': max(sq.n_early_samples(t) for t in per_band),
                    'n_dropped_frames': sum(sq.n_dropped_frames(t) for t in per_band),
                }
            )
        if len(channels) < 2:  # one LED on every frame: nothing alternates, no inversion
            inversions = np.nan
        else:
            inversions = sq.n_band_inversions(led, channel_codes=channels, times=times)
        raw_qc = {
            'n_band_inversions': inversions,
            'n_early_samples': sq.n_early_samples(times),
            'n_dropped_frames': sq.n_dropped_frames(times),
        }
        return self._set_raw_qc(raw_qc)

    def _set_raw_qc(self, raw_qc):
        """Keep the whole-recording counts of raw QC (copied onto every ``qc`` row)."""
        self._raw_qc = raw_qc
        self._qc_version += 1
        return raw_qc

    @property
    def qc(self):
        """QC table: one row per (brain_region, band), with the recording's verdict.

        Raw metrics are copied onto every row. Before the sliding QC (e.g. when
        :meth:`validate_qc` stopped the session) there is one row per loaded region × band
        holding the raw counts (a single row without region when nothing is loaded).
        ``verdict`` / ``verdict_reasons`` (:func:`iblnm.signal.verdict.add_verdicts`) are
        the same on every row of a recording; columns not in :data:`QC_COLUMNS` (metrics
        added by other steps) follow them.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> ps.qc[['brain_region', 'band', 'verdict']]
          brain_region        band verdict
        0          VTA       GCaMP    PASS
        1          VTA  Isosbestic    PASS
        """
        # built once per state of the rows (a few ms with the verdicts; the stage reads it
        # ~5 times per session); without rows it follows the loaded bands, so is not kept
        key = (id(self._qc_rows), id(self._raw_qc), self._qc_version, self.eid)
        if self._qc_rows and self._qc_table[0] == key:
            return self._qc_table[1].copy()
        table = self._build_qc_table()
        self._qc_table = (key, table) if self._qc_rows else (None, None)
        return table.copy()

    def _build_qc_table(self):
        keys = self._qc_rows or {
            (r, b): {}
            for b, frame in self.photometry.items()
            if b in ('GCaMP', 'Isosbestic')
            for r in frame.columns
        }
        keys = {**keys, **self._dropped_qc}  # a dropped fiber has no other metric
        rows = [
            {'eid': self.eid, 'brain_region': r, 'band': b, **m, **self._raw_qc}
            for (r, b), m in keys.items()
        ]
        if not rows and self._raw_qc:
            rows = [{'eid': self.eid, 'brain_region': None, 'band': None, **self._raw_qc}]
        extra = list(dict.fromkeys(k for row in rows for k in row if k not in QC_COLUMNS))
        extra = [k for k in extra if k not in sv.VERDICT_COLUMNS]
        table = pd.DataFrame(rows, columns=QC_COLUMNS + extra)
        if not rows:
            return table.assign(
                verdict=pd.Series(dtype=object), verdict_reasons=pd.Series(dtype=object)
            )
        return sv.add_verdicts(table)

    @property
    def _has_qc_rows(self):
        """True once a QC step (or a fiber dropped at load) has written rows of its own."""
        return bool(self._qc_rows or self._dropped_qc)

    @qc.setter
    def qc(self, table):
        self._raw_qc = {}
        self._qc_rows = {}
        self._dropped_qc = {}
        self._qc_version += 1
        for row in pd.DataFrame(table).to_dict('records'):
            key = (row.pop('brain_region', None), row.pop('band', None))
            row.pop('eid', None)
            for column in sv.VERDICT_COLUMNS:  # recomputed from the metrics
                row.pop(column, None)
            self._qc_rows[key] = row

    @property
    def verdicts(self):
        """One row per recording: eid, brain_region, verdict, verdict_reasons.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> ps.verdicts[['brain_region', 'verdict', 'verdict_reasons']]
          brain_region verdict verdict_reasons
        0          VTA    PASS
        """
        return sv.recording_verdicts(self.qc)

    def _upsert_qc(self, values, region, band):
        self._qc_rows.setdefault((region, band), {}).update(values)
        self._qc_version += 1

    def run_sliding_qc(self, bands=('GCaMP', 'Isosbestic'), threads=None):
        """Sliding-window QC (120 s windows, 60 s steps) per region x band, plus the
        whole-recording metrics of each GCaMP row (:func:`iblnm.signal.qc.recording_qc`:
        bleaching τ of the raw GCaMP, iso correlation of the bleach-corrected pair, the "no
        signal" and "artefact" metrics).

        The corrected-signal metrics leave out the samples the artefact masks removed when
        :meth:`detect_artefacts` ran first (as the photometry stage runs them).

        Fills one ``qc`` row per (brain_region, band); window values are averaged. The
        (region, band) windows and the recordings are scored on up to ``threads`` threads
        (default :func:`iblnm.util.session_threads`; the values do not depend on it).
        """
        self._check_qc_span()
        jobs = [
            ('sliding', band, region)
            for band in bands
            if band in self.photometry
            for region in self.photometry[band].columns
        ]
        if 'GCaMP' in self.photometry:  # the longer jobs first
            jobs = [('recording', 'GCaMP', r) for r in self.photometry['GCaMP'].columns] + jobs
        results = dict(zip(jobs, thread_map(self._qc_job, jobs, threads), strict=True))
        for job in sorted(jobs, key=lambda job: job[0] == 'recording'):  # sliding rows first
            self._upsert_qc(results[job], region=job[2], band=job[1])
        return self.qc

    def _check_qc_span(self, w_len=config.QC_SLIDING_KWARGS['w_len']):
        """Log :class:`~iblnm.validation.RecordingTooShort` (once) when the GCaMP recording
        is no longer than one sliding window (s): no window fits, so no QC metric exists."""
        frame = self.photometry.get('GCaMP')
        if frame is None or any(e['error_type'] == 'RecordingTooShort' for e in self.errors):
            return
        span = float(frame.index[-1] - frame.index[0]) if len(frame) > 1 else 0.0
        if span <= w_len:
            self.log_error(
                v.RecordingTooShort(
                    f'recording {span:.1f} s, shorter than one {w_len:g}-s QC window: not assessed'
                )
            )

    def _qc_job(self, job):
        """QC metrics of one ``('sliding', band, region)`` or ``('recording', 'GCaMP', region)``."""
        kind, band, region = job
        frame = self.photometry[band]
        times, values = frame.index.to_numpy(), frame[region].to_numpy()
        if kind == 'sliding':
            _, per_window = sq.sliding_qc(times, values)
            return sq.aggregate_windows(per_window, how=config.QC_AGGREGATION)
        reference = self.photometry.get('Isosbestic')
        masks = self.artefacts.get(region) if self.artefacts else None
        return sq.recording_qc(
            times,
            values,
            None if reference is None else reference[region].to_numpy(),
            artefacts=None if masks is None else ~masks.valid,
        )

    # ------------------------------------------------------------------ artefacts
    def estimate_floors(self, default=config.DARK_LEVEL):
        """Camera dark level per region: median of the dark frames when the file has them
        (older Neurophotometrics layouts), else ``default`` (the rig's value in config)."""
        dark = getattr(self._loader, 'dark', None) or {}
        self.floors = {
            region: af.estimate_floor(dark.get(region), default=default) for region in self.regions
        }
        return self.floors

    def _floor(self, region):
        """The dark level of a region (:meth:`estimate_floors`; ``config.DARK_LEVEL`` if unknown)."""
        return self.floors.get(region, (config.DARK_LEVEL, 'config'))[0]

    def _paired(self, region, signal_band='GCaMP', reference_band='Isosbestic'):
        """(times, signal, reference or None) of one region, paired by position."""
        signal = self.photometry[signal_band]
        times, values = signal.index.to_numpy(), signal[region].to_numpy()
        if reference_band is None or reference_band not in self.photometry:
            return times, values, None
        return sp.pair_by_position(
            times, values, self.photometry[reference_band][region].to_numpy()
        )

    def detect_artefacts(
        self, signal_band='GCaMP', reference_band='Isosbestic', params=None, threads=None
    ):
        """Artefact masks and segments per region (:func:`iblnm.signal.artefacts.detect_artefacts`).

        Stores :attr:`artefacts` (``{region: ArtefactResult}``) and copies the fractions and
        counts by kind (``config.QC_ARTEFACT_METRICS``) onto every ``qc`` row of the region.
        Regions are scored on up to ``threads`` threads (default
        :func:`iblnm.util.session_threads`; the values do not depend on it).

        Returns
        -------
        pandas.DataFrame
            :attr:`segments`.
        """
        if not self.floors:
            self.estimate_floors()
        regions = list(self.photometry[signal_band].columns)

        def detect(region):
            times, signal, reference = self._paired(region, signal_band, reference_band)
            return af.detect_artefacts(
                times, signal, reference, floor=self._floor(region), params=params
            )

        for region, result in zip(regions, thread_map(detect, regions, threads), strict=True):
            self.artefacts[region] = result
            for band in (b for b in ('GCaMP', 'Isosbestic') if b in self.photometry):
                self._upsert_qc(result.summary, region=region, band=band)
        self._artefact_params = af.resolve_params(params)
        return self.segments

    @property
    def segments(self):
        """Artefact segments of every region: brain_region, start, stop, start_time, stop_time, kind.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> artefacts = ps.detect_artefacts()
        >>> ps.segments[['brain_region', 'kind']]
          brain_region   kind
        0          VTA  valid
        """
        tables = {r: a.segments for r, a in self.artefacts.items()} or self._segments
        if not tables:
            return pd.DataFrame(columns=['brain_region', *af.SEGMENT_COLUMNS])
        return pd.concat([t.assign(brain_region=r) for r, t in tables.items()], ignore_index=True)[
            ['brain_region', *af.SEGMENT_COLUMNS]
        ]

    def _valid_masks(self, columns, n):
        """(n, n_regions) valid masks from :attr:`artefacts` (None when not detected)."""
        if not self.artefacts or any(r not in self.artefacts for r in columns):
            return None
        return np.column_stack([self.artefacts[r].valid[:n] for r in columns])

    # ------------------------------------------------------------------ preprocessing
    def preprocess(
        self,
        signal_band='GCaMP',
        reference_band='Isosbestic',
        params=None,
        output_band=PREPROCESSED_BAND,
        mask_artefacts=True,
    ):
        """Bleach correction → isosbestic regression → z-score → resample to 30 Hz.

        All regions are processed at once. Without a reference band (or with
        ``reference_band=None``) the single-band path is used (bleach → z-score →
        resample). With ``mask_artefacts`` the masks of :meth:`detect_artefacts` (run
        here if not yet) leave artefacts out of every fit and make them NaN in the output;
        the floor of :meth:`estimate_floors` is subtracted when ``params['floor']['subtract']``.
        The parameters used are kept in :attr:`preprocessing_params` and saved with the
        output. The ΔF/F before the z-score goes to ``photometry['GCaMP_dff']`` and the
        isosbestic fit to the GCaMP ``qc`` rows (``iso_slope``, ``iso_intercept``, ``iso_r2``).

        Returns
        -------
        pandas.DataFrame
            ``photometry[output_band]``: times (s, 30 Hz grid) x regions, z-scores.
        """
        signal = self.photometry[signal_band]
        times = signal.index.to_numpy()
        isosbestic = reference_band is not None and reference_band in self.photometry
        if mask_artefacts and not self.artefacts:
            self.detect_artefacts(signal_band, reference_band if isosbestic else None)
        if not self.floors:
            self.estimate_floors()
        floor = [self._floor(r) for r in signal.columns]
        if isosbestic:
            reference = self.photometry[reference_band][signal.columns].to_numpy()
            n = min(len(times), len(reference))
            valid = self._valid_masks(signal.columns, n) if mask_artefacts else None
            result = sp.preprocess_isosbestic(
                times,
                signal.to_numpy(),
                reference,
                params=params,
                compute_qc=False,
                valid=valid,
                floor=floor,
            )
            self._store_fit_qc(signal.columns, result)
        else:
            valid = self._valid_masks(signal.columns, len(times)) if mask_artefacts else None
            result = sp.preprocess_single_band(
                times, signal.to_numpy(), params=params, compute_qc=False, valid=valid, floor=floor
            )
        index = pd.Index(result.times, name='times')
        for band, values in ((output_band, result.values), (DFF_BAND, result.dff)):
            values = np.asarray(values).reshape(len(result.times), -1)
            self.photometry[band] = pd.DataFrame(values, index=index, columns=signal.columns)
        self.preprocessing_params = {
            **result.params,
            'reference_band': reference_band if isosbestic else None,
            'artefacts': getattr(self, '_artefact_params', None) if valid is not None else None,
        }
        return self.photometry[output_band]

    def _store_fit_qc(self, regions, result):
        for i, region in enumerate(regions):
            values = {
                name: float(np.atleast_1d(getattr(result, attr))[i])
                for name, attr in (
                    ('iso_slope', 'slope'),
                    ('iso_intercept', 'intercept'),
                    ('iso_r2', 'r2'),
                )
            }
            self._upsert_qc(values, region=region, band='GCaMP')

    # ------------------------------------------------------------------ responses
    def extract_responses(
        self,
        events=config.RESPONSE_EVENTS,
        band=PREPROCESSED_BAND,
        window=config.RESPONSE_WINDOW,
        align=config.RESPONSE_ALIGN,
    ):
        """Peri-event responses per region: ``{region: DataArray(event, trial, time)}``.

        Window [t0, t1) s around each event at the band's rate (120 samples for [-1, 3) at
        30 Hz), linearly interpolated at event + t (``align='linear'``). Trials with a NaN
        event or a window outside the recording are NaN; a window overlapping masked (NaN)
        samples is NaN as a whole and counted in ``attrs['n_masked']`` ({event: n}).
        Values are float32. The z-scored band fills :attr:`responses`, the ΔF/F band
        (``DFF_BAND``) :attr:`responses_dff`.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> responses = ps.extract_responses()
        >>> dict(responses['VTA'].sizes)  # 3 events, 133 trials, [-1, 3) s at 30 Hz
        {'event': 3, 'trial': 133, 'time': 120}
        """
        frame = self.photometry[band]
        times, values = frame.index.to_numpy(), frame.to_numpy()
        stacked, masked, tpts = [], [], None
        for event in events:
            resp, tpts, lost = sr.peri_event(
                times,
                values,
                self.trials[event].to_numpy(float),
                window=window,
                align=align,
                return_masked=True,
            )
            stacked.append(resp.reshape(len(self.trials), len(tpts), -1))
            masked.append(lost.reshape(len(self.trials), -1).sum(axis=0))
        n_regions = len(frame.columns)
        data = np.stack(stacked) if stacked else np.empty((0, len(self.trials), 0, n_regions))
        fs = float(np.round(1 / np.median(np.diff(times))))
        out = {
            region: xr.DataArray(
                data[..., i].astype(np.float32),
                dims=('event', 'trial', 'time'),
                coords={'event': list(events), 'trial': self.trials.index.to_numpy(), 'time': tpts},
                attrs={
                    'fs': fs,
                    'response_window': tuple(window),
                    'align': align,
                    'band': band,
                    'n_masked': {e: int(m[i]) for e, m in zip(events, masked)},
                },
            )
            for i, region in enumerate(frame.columns)
        }
        if band == DFF_BAND:
            self.responses_dff = out
        else:
            self.responses = out
        return out

    def trial_baseline(
        self, responses, window=config.TRIAL_BASELINE_WINDOW, event=config.TRIAL_BASELINE_EVENT
    ):
        """Per-trial baseline: mean of ``event``'s trace over ``window`` (s), shape (trial,).

        Raises MissingResponses when ``responses`` holds no trace of ``event``.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> responses = ps.extract_responses()
        >>> da = responses['VTA']
        >>> ps.trial_baseline(da).shape  # one value per trial
        (133,)
        """
        if event not in responses['event'].values:
            raise v.MissingResponses(f'the trial baseline needs {event} responses')
        anchor = responses.sel(event=event)
        return sr.baseline_mean(
            anchor.transpose('trial', 'time').to_numpy(), anchor['time'].to_numpy(), window=window
        )

    def subtract_baseline(self, responses, mode=config.BASELINE_MODE, window=None):
        """Baseline-subtracted copy of ``responses`` (event, trial, time).

        ``mode='trial'`` (default): every event of a trial minus the trial baseline
        (:meth:`trial_baseline`, [-0.5, 0) s before stimulus onset); ``'event'``: each trace
        minus its own mean over ``window`` (default [-0.1, 0) s before the event); None:
        unchanged.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> responses = ps.extract_responses()
        >>> da = responses['VTA']
        >>> ps.subtract_baseline(da, mode='trial').dims
        ('event', 'trial', 'time')
        """
        if mode is None:
            return responses
        ordered = responses.transpose('trial', 'time', 'event')  # kernels: (trial, time, ...)
        tpts = ordered['time'].to_numpy()
        if mode == 'trial':
            base = self.trial_baseline(responses, window=window or config.TRIAL_BASELINE_WINDOW)
            data = sr.subtract_baseline(
                ordered.to_numpy(),
                tpts,
                baseline=np.repeat(base[:, None], ordered.sizes['event'], 1),
            )
        elif mode == 'event':
            data = sr.subtract_baseline(
                ordered.to_numpy(), tpts, window=window or config.BASELINE_WINDOW
            )
        else:
            raise ValueError(f"baseline mode must be 'trial', 'event' or None, not {mode!r}")
        return ordered.copy(data=data).transpose(*responses.dims)

    def _region_hemisphere(self, region):
        """The side recording ``region`` (its key) is lateral to: 'l', 'r' or None.

        :func:`iblnm.recordings.laterality` of the session's recordings-table row with that
        key (the catalog's region and hemisphere of the fiber): None for a midline region
        (DR, MR), an unknown hemisphere, or a key the catalog lists do not give.
        """
        session = {'eid': self.eid, 'subject': self.subject, 'NM': None}
        session.update(brain_region=self.brain_region, hemisphere=self.hemisphere)
        rows = [r for r in recordings.session_recordings(session) if r['recording'] == region]
        if len(rows) != 1:
            return None
        return recordings.laterality(rows[0]['brain_region'], rows[0]['hemisphere'])

    def fit_event_kernels(
        self,
        events=config.RESPONSE_EVENTS,
        band=PREPROCESSED_BAND,
        windows=config.RESPONSE_WINDOWS,
        **options,
    ):
        """Event-kernel regression of each region's continuous signal (docs/methods.md §4.4).

        The signal (valid samples only) is modelled as the sum of time-lagged kernels per
        event x condition ('mean', 'contrast', 'side', 'reward'; effect-coded as the mixed
        models), on a tent basis with a GCV-chosen smoothness penalty
        (:func:`iblnm.signal.event_kernels.fit_event_kernels`; ``options`` go there).

        Returns
        -------
        dict
            ``{region: xarray.Dataset}`` (also :attr:`kernels`) with ``kernel`` and ``se``
            (event, condition, lag; signal units), ``trial_magnitudes`` (event, trial,
            window): per trial, the mean over each window of the signal minus the fitted
            responses to the *other* events, minus the trial baseline of the residual
            ([-0.5, 0) s before stimOn): magnitudes freed of the overlap between events;
            attrs: lambda, df, r2, n_samples, ar1 (residual lag-1 autocorrelation), band.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> kernels = ps.fit_event_kernels()  # {region: Dataset}
        >>> sorted(kernels), kernels['VTA']['kernel'].dims
        (['VTA'], ('event', 'condition', 'lag'))
        """
        from iblnm.signal import event_kernels as ek

        frame = self.photometry[band]
        times = frame.index.to_numpy()
        event_times = [self.trials[e].to_numpy(float) for e in events]
        self.kernels = {}
        for region in frame.columns:
            values = frame[region].to_numpy(dtype=float)
            n_valid = int(np.isfinite(values).sum())
            if n_valid < MIN_KERNEL_FIT_S * config.TARGET_FS:
                log.warning('%s %s: %d valid samples, no event kernels', self.eid, region, n_valid)
                continue  # a fiber masked (nearly) entirely: its QC says why
            weights = ek.condition_weights(self.trials, self._region_hemisphere(region))
            with native_threads(1):  # small dense solves: CQ002 317 ms on 2 BLAS threads, 268 on 1
                fit = ek.fit_event_kernels(
                    times, values, event_times, weights, events=list(events), **options
                )
            magnitudes = self._cleaned_magnitudes(times, values, fit, event_times, windows)
            self.kernels[region] = xr.Dataset(
                {
                    'kernel': (('event', 'condition', 'lag'), fit.kernels.astype(np.float32)),
                    'se': (('event', 'condition', 'lag'), fit.se.astype(np.float32)),
                    'trial_magnitudes': (('event', 'trial', 'window'), magnitudes),
                },
                coords={
                    'event': list(events),
                    'condition': fit.conditions,
                    'lag': fit.lags,
                    'trial': self.trials.index.to_numpy(),
                    'window': list(windows),
                },
                attrs={
                    'lambda': fit.fit.lam,
                    'df': fit.fit.df,
                    'r2': fit.fit.r2,
                    'n_samples': fit.fit.n_samples,
                    'ar1': fit.fit.ar1,
                    'band': band,
                    'windows': {k: list(w) for k, w in windows.items()},
                    'kernel_lags': list(options.get('lags', config.KERNEL_LAGS)),
                    'spacing': options.get('spacing', config.KERNEL_SPACING),
                },
            )
        return self.kernels

    def _cleaned_magnitudes(self, times, values, fit, event_times, windows):
        """(event, trial, window) float32: window means of the signal minus the other events'
        fitted responses, minus the residual's trial baseline."""
        total = np.nansum(fit.contributions, axis=0)
        residual = values - total
        anchor = self.trials[config.TRIAL_BASELINE_EVENT].to_numpy(float)
        base_tr, base_t = sr.peri_event(
            times, residual, anchor, window=config.TRIAL_BASELINE_WINDOW
        )
        baseline = sr.baseline_mean(base_tr, base_t, window=config.TRIAL_BASELINE_WINDOW)
        span = (min(w[0] for w in windows.values()), max(w[1] for w in windows.values()))
        out = np.full((len(event_times), len(self.trials), len(windows)), np.nan, np.float32)
        for e, t_event in enumerate(event_times):
            cleaned = residual + fit.contributions[e]
            traces, tpts = sr.peri_event(times, cleaned, t_event, window=span)
            for w, window in enumerate(windows.values()):
                out[e, :, w] = sr.response_magnitude(traces, tpts, window=window) - baseline
        return out

    def mask_subsequent_events(self, responses, event_order=config.RESPONSE_EVENTS):
        """NaN the samples of each event's trace after the next event.

        For consecutive events (e0, e1) of ``event_order``, samples of e0's trace later
        than ``trials[e1] - trials[e0]`` become NaN; the last event of a trial (feedback) is
        masked at the first event of the next trial (its stimulus onset: 2.1-4 s after a
        correct feedback, 3.1-5 s after an error in IBL sessions, so the next trial's
        responses would otherwise differ by outcome late in a [-1, 3) s window). A NaN
        interval (e.g. the last trial) leaves the trial as is.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> responses = ps.extract_responses()
        >>> da = responses['VTA']
        >>> import numpy as np
        >>> masked = ps.mask_subsequent_events(da)  # stimOn traces end at the first movement
        >>> bool(np.isnan(da.sel(event='stimOn_times')).any()), bool(
        ...     np.isnan(masked.sel(event='stimOn_times')).any())
        (False, True)
        """
        if self.trials is None or len(self.trials) == 0:
            return responses
        out = responses.copy()
        tpts = responses['time'].to_numpy()
        present = [e for e in event_order if e in responses['event'].values and e in self.trials]
        trial_ids = responses['trial'].to_numpy()
        following = [self.trials[e1] for e1 in present[1:]]
        if present:
            following.append(self.trials[present[0]].shift(-1))  # the next trial's first event
        for e0, t1 in zip(present, following):
            dt = (t1 - self.trials[e0]).reindex(trial_ids).to_numpy(float)
            idx = list(responses['event'].values).index(e0)
            out.values[idx] = sr.mask_after(out.values[idx], tpts, dt)
        return out

    # ------------------------------------------------------------------ behaviour
    def basic_performance(self):
        """Fraction correct (all, easy), no-go fraction and the 50/50 psychometric fit.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> perf = ps.basic_performance()
        >>> perf['n_trials'], round(perf['fraction_correct'], 2)
        (133, 0.74)
        """
        return task.basic_performance(self.trials)

    def block_performance(self):
        """Per-block psychometrics and bias shift (biased/ephys sessions only; else {}).

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> perf = ps.block_performance()  # 50/50 only here: no 20/80 blocks to fit
        >>> perf['psych_20_n_trials'], perf['bias_shift']
        (nan, nan)
        """
        if self.session_type not in config.BLOCK_SESSION_TYPES:
            return {}
        return task.block_performance(self.trials)

    def fit_psychometric(self, probability_left=None):
        """Psychometric fit {bias, threshold, lapse_left, lapse_right, r_squared, n_trials}.

        Examples
        --------
        >>> from iblnm.simulate import example_session
        >>> ps = example_session()
        >>> fit = ps.fit_psychometric()  # bias and threshold in % contrast
        >>> sorted(fit)
        ['bias', 'lapse_left', 'lapse_right', 'n_trials', 'r_squared', 'threshold']
        """
        return task.fit_psychometric(self.trials, probability_left=probability_left)

    # ------------------------------------------------------------------ wheel
    def load_wheel(self, fs=config.WHEEL_FS):
        """Wheel velocity (rad/s) on a uniform ``fs`` Hz grid, float64 times.

        Position is interpolated at 1 kHz and low-passed (8th-order Butterworth, 20 Hz,
        zero phase) as brainbox does, then every ``1000 / fs``-th sample is kept.
        Sets and returns ``self.wheel`` (DataFrame: times, velocity).
        """
        from brainbox.behavior import wheel as bbwheel

        if not self._has_dataset('_ibl_wheel.position.npy'):
            raise self._missing_data('_ibl_wheel.position.npy', ['_iblrig_taskData.raw.jsonable'])
        try:
            collection = self.loader._find_behaviour_collection('wheel')
            raw = self.loader.load_object('wheel', collection=collection)
        except Exception as error:  # noqa: BLE001 - typed: transient, or a data failure
            raise self._load_error(error, 'wheel') from error
        v.validate_wheel(raw.get('timestamps'), raw.get('position'))
        position, times = bbwheel.interpolate_position(
            raw['timestamps'], raw['position'], freq=1000
        )
        velocity = bbwheel.velocity_filtered(position, 1000)[0]
        step = int(round(1000 / fs))
        self.wheel = pd.DataFrame({'times': times[::step], 'velocity': velocity[::step]})
        self.wheel_fs = fs
        return self.wheel

    def extract_wheel_velocity(self, t0_event='stimOn_times', t1_event='feedback_times'):
        """Per-trial wheel velocity from ``t0_event`` to ``t1_event``, NaN-padded.

        Returns ``{'velocity': float32 (n_trials, n_samples), 'fs', 't0_event', 't1_event'}``
        where n_samples covers the longest trial (end inclusive); trials with a NaN event
        are all-NaN rows.
        """
        starts = self.trials[t0_event].to_numpy(float)
        ends = self.trials[t1_event].to_numpy(float)
        times, values = self.wheel['times'].to_numpy(), self.wheel['velocity'].to_numpy()
        # pad with NaN up to the longest window after the last start, so that a short last
        # trial is not dropped because the longest trial's window would leave the recording
        horizon = np.nanmax(starts) + np.nanmax(ends - starts) + 2 / self.wheel_fs
        extra = np.arange(times[-1] + 1 / self.wheel_fs, horizon, 1 / self.wheel_fs)
        times, values = np.r_[times, extra], np.r_[values, np.full(extra.size, np.nan)]
        velocity, _ = sr.peri_event(
            times, values, starts, window=(0, 1), fs=self.wheel_fs, t1=ends, align='sample'
        )
        velocity[np.isnan(starts)] = np.nan
        self.wheel_velocity = {
            'velocity': velocity.astype(np.float32),
            'fs': self.wheel_fs,
            't0_event': t0_event,
            't1_event': t1_event,
        }
        return self.wheel_velocity

    # ------------------------------------------------------------------ HDF5
    def _photometry_h5(self):
        if (
            PREPROCESSED_BAND not in self.photometry
            and not self.responses
            and not self._has_qc_rows
            and not self._raw_qc
        ):
            return None
        out = {}
        qc = self.qc  # its columns once, then each region's rows (not a table per region)
        qc_region = qc['brain_region'].to_numpy()
        qc_columns = {col: values.to_numpy() for col, values in qc.items()}
        pre = self.photometry.get(PREPROCESSED_BAND)
        dff = self.photometry.get(DFF_BAND)
        segments = {r: a.segments for r, a in self.artefacts.items()} or self._segments
        # regions with QC rows but no signal (fibers dropped at load) keep their rows
        qc_only = [r for r in dict.fromkeys(qc_region) if isinstance(r, str)]
        for region in dict.fromkeys([*(self.regions or list(self.responses)), *qc_only]):
            entry = {}
            if pre is not None and region in pre:
                entry['preprocessed'] = {
                    'times': pre.index.to_numpy(),
                    'signal': pre[region].to_numpy(),
                    'fs': config.TARGET_FS,
                    'params': self.preprocessing_params or {},
                }
                if dff is not None and region in dff:
                    entry['preprocessed']['dff'] = dff[region].to_numpy()
            if region in segments:  # the rows of :attr:`segments` of this region
                entry['artefacts'] = segments[region].reindex(columns=af.SEGMENT_COLUMNS)
            if region in self.responses:
                entry['responses'] = self.responses[region]
            if region in self.responses_dff:
                entry['responses_dff'] = self.responses_dff[region]
            if region in self.kernels:
                entry['kernels'] = self.kernels[region]
            rows = np.flatnonzero(qc_region == region)
            if len(rows):
                entry['qc'] = {col: values[rows] for col, values in qc_columns.items()}
            out[region] = entry
        return out

    def _trials_h5(self):
        if self.trials is None:
            return None
        return self.trials[[c for c in TRIAL_H5_COLUMNS if c in self.trials]]

    def _wheel_h5(self):
        if self.wheel_velocity is None:
            return None
        return self.wheel_velocity

    def _provenance_h5(self):
        """The run record, the processing parameters and the session's input datasets."""
        parameters = provenance.processing_parameters()
        record = provenance.current() or provenance.make_record(self.one, parameters)
        try:  # the records the loader verified the files against, else listed now
            listed = self._loader is not None and self._loader._dataset_records is not None
            inputs = (
                self._loader._dataset_records
                if listed
                else self.one.list_datasets(self.eid, details=True)
            ).reset_index()
            inputs = inputs.reindex(
                columns=['rel_path', 'id', 'hash', 'file_size', 'default_revision']
            )
        except Exception:  # noqa: BLE001 - a session without a dataset listing (e.g. from NWB)
            inputs = None
        return {'record': record, 'parameters': parameters, 'inputs': inputs}

    def save_h5(self, fpath=None, groups=None, mode='a'):
        """Save the available groups (or only ``groups``) to the session's HDF5 file.

        Every full save also records the provenance (source, iblnm version, parameters,
        input datasets) in the file's ``provenance`` group and root attributes.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.data import PhotometrySession
        >>> from iblnm.simulate import example_session
        >>> ps = example_session(h5_dir=tempfile.mkdtemp())
        >>> path = ps.save_h5(groups=['metadata', 'trials'])
        >>> path.name
        '00000000-0000-4000-8000-000000000e0e.h5'
        """
        values = {
            'metadata': self.metadata,
            'errors': self.errors,
            'photometry': self._photometry_h5(),
            'trials': self._trials_h5(),
            'wheel': self._wheel_h5(),
        }
        if groups is None or 'provenance' in groups:
            values['provenance'] = self._provenance_h5()
        wanted = groups or list(values)
        return h5.save_h5(fpath or self.h5_path, {g: values[g] for g in wanted}, mode=mode)

    def load_h5(self, fpath=None, groups=None, regions=None, parts=None):
        """Load groups of the session's HDF5 file into the attributes.

        ``regions`` restricts the photometry group to those regions (single-region reads
        only touch that region's data on disk); ``parts`` to some of its subgroups
        ('preprocessed', 'responses', 'responses_dff', 'kernels', 'qc', 'artefacts').

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.data import PhotometrySession
        >>> from iblnm.simulate import example_session
        >>> ps = example_session(h5_dir=tempfile.mkdtemp())
        >>> qc = ps.run_sliding_qc()
        >>> signal = ps.preprocess()
        >>> path = ps.save_h5()
        >>> back = PhotometrySession({'eid': ps.eid}, h5_dir=ps.h5_dir)
        >>> data = back.load_h5()
        >>> len(back.trials), back.regions, list(back.qc['verdict'])
        (133, ['VTA'], ['PASS', 'PASS'])
        """
        options = {} if parts is None else {'parts': tuple(parts)}
        data = h5.load_h5(fpath or self.h5_path, groups=groups, regions=regions, **options)
        if 'metadata' in data:
            self.metadata.update(data['metadata'])
        if 'errors' in data:
            self.errors = data['errors'].to_dict('records')
        if 'trials' in data:
            self.trials = data['trials']
        if 'photometry' in data:
            self._set_photometry_from_h5(data['photometry'])
        if 'wheel' in data:
            self.wheel_velocity = data['wheel']
        if 'provenance' in data:
            self.provenance = data['provenance']
        return data

    # ------------------------------------------------------------------ NWB
    def to_nwb(self, path, **options):
        """Write the session as one NWB file (ndx-fiber-photometry); see :mod:`iblnm.nwb`."""
        from iblnm import nwb

        return nwb.write_nwb(self, path, **options)

    @classmethod
    def from_nwb(cls, path):
        """A session read from a fiber-photometry NWB file (ours or neuroconv's), no ONE."""
        from iblnm import nwb

        return nwb.read_nwb(path)

    def _set_photometry_from_h5(self, photometry):
        series, dff, qc_rows = {}, {}, []
        for region, parts in photometry.items():
            if 'preprocessed' in parts:
                pre = parts['preprocessed']
                index = pd.Index(pre['times'], name='times')
                series[region] = pd.Series(pre['signal'], index=index)
                if 'dff' in pre:
                    dff[region] = pd.Series(pre['dff'], index=index)
                self.preprocessing_params = pre['params']
            if 'artefacts' in parts:
                self._segments[region] = parts['artefacts']
            if 'responses' in parts:
                self.responses[region] = parts['responses']
            if 'responses_dff' in parts:
                self.responses_dff[region] = parts['responses_dff']
            if 'kernels' in parts:
                self.kernels[region] = parts['kernels']
            if 'qc' in parts:
                qc_rows.append(parts['qc'])
        if series:
            self.photometry[PREPROCESSED_BAND] = pd.DataFrame(series)
        if dff:
            self.photometry[DFF_BAND] = pd.DataFrame(dff)
        if qc_rows:
            self.qc = pd.concat(qc_rows, ignore_index=True)


def __getattr__(name):
    """``iblnm.data.PhotometrySessionGroup``, the original import path of the group class.

    Resolved on first use (PEP 562) rather than imported here, so that :mod:`iblnm.data`
    and :mod:`iblnm.group` do not import each other.
    """
    if name == 'PhotometrySessionGroup':
        from iblnm.group import PhotometrySessionGroup

        return PhotometrySessionGroup
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['PhotometrySession', 'PhotometrySessionGroup']  # noqa: F822 - see __getattr__
