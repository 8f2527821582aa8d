"""NWB files of photometry sessions: write one per session, read fiber-photometry NWB back.

The layout follows ``ndx-fiber-photometry`` (with ``ndx-ophys-devices``) as neuroconv writes
Neurophotometrics recordings, so that DANDI, pynapple, GuPPy and Spyglass read our files and
the pipeline reads theirs::

    general/devices          one OpticalFiber per region (FiberInsertion: AP/ML/DV mm from
                             bregma and hemisphere when the fiber table knows them), one
                             ExcitationSource per wavelength (470 / 415 nm LEDs), the camera
    lab_meta_data/fiber_photometry
        FiberPhotometryTable one row per region x wavelength: location (region), excitation
                             and emission wavelength (nm), indicator, fiber, LED, detector;
                             column ``iblnm_column`` keeps the pipeline's column name
        FiberPhotometryIndicators  one Indicator (GCaMP)
    acquisition/{band}_{nm}nm      FiberPhotometryResponseSeries (time x region) of the raw
                             band the pipeline loaded (task ± 5 s), camera intensity (a.u.)
    processing/ophys/{key}   the processed signals of ``ps.photometry`` (``GCaMP_preprocessed``:
                             z-scores at 30 Hz; ``GCaMP_dff``: ΔF/F when present), same series
                             type, referencing the 470 nm rows; ``qc``: ``ps.qc`` (every
                             column, verdicts included); ``processing_errors``: the error log
    processing/behavior/wheel  wheel velocity (rad/s, ``ps.wheel``) and raw position (rad)
    intervals/trials         the whole IBL trials table (intervals_0/1 -> start/stop_time)
    general/subject          subject id, species, strain, genotype (line + genotype list)
    session_id, lab, protocol, session_start_time, notes (the catalog fields as JSON)

Time stamps are the task (Bpod) clock in seconds. Regularly sampled series are written as
``starting_time`` + ``rate`` (nwbinspector's rule: all intervals equal to 1e-9 s), the others
with explicit time stamps. Files are written atomically (temporary file, then rename).

:func:`read_nwb` returns an :class:`NWBPhotometrySession`: a ``PhotometrySession`` whose
loaders read the file instead of ONE, so QC, preprocessing and responses run unchanged.
Files written by neuroconv from Neurophotometrics data are read too: bands come from the
excitation wavelength of the table rows each series references, region names from their
``location``.
"""

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from iblnm import config
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.util import atomic_write

RAW_BANDS = config.BAND_WAVELENGTHS  # the raw bands exported, nm
EMISSION_NM = {'GCaMP': 525.0, 'Isosbestic': 525.0, 'RCaMP': 600.0}
PROCESSED_UNITS = {'preprocessed': 'z-score', 'dff': 'dF/F'}
SPECIES = 'Mus musculus'
BRACES = str.maketrans('{}', '()')
NAMESPACE_UUID = uuid.UUID('5d6f3c1e-4a9b-4f0e-9c2d-7b1a8e6f0a11')
TMP_SUFFIX = '.tmp.nwb'  # an atomic write's temporary file (pynwb wants '.nwb')
TIME_DECIMALS = 9  # nwbinspector's check_regular_timestamps tolerance
IBL_TRIAL_DOCS = {
    'stimOn_times': 'Time of the visual stimulus onset (s).',
    'goCue_times': 'Time of the go cue tone (s).',
    'response_times': 'Time the response was recorded (s).',
    'firstMovement_times': 'Time of the first detected wheel movement (s).',
    'feedback_times': 'Time of the feedback (reward or error noise) (s).',
    'choice': 'Choice: -1 turn CCW (stimulus on the right), +1 CW (left), 0 no-go.',
    'feedbackType': 'Feedback: +1 correct (reward), -1 error.',
    'contrastLeft': 'Contrast of the left stimulus (0-1; NaN when on the right).',
    'contrastRight': 'Contrast of the right stimulus (0-1; NaN when on the left).',
    'probabilityLeft': 'Prior probability that the stimulus appears on the left.',
    'rewardVolume': 'Reward volume (uL).',
    'signed_contrast': 'Stimulus contrast in %, negative on the left (iblnm).',
    'contrast': 'Absolute stimulus contrast in % (iblnm).',
    'stim_side': "Stimulus side, 'left' or 'right' (iblnm).",
}


def _ndx():
    """Import the extensions (registers their namespaces with pynwb)."""
    import ndx_fiber_photometry
    import ndx_ophys_devices

    return ndx_fiber_photometry, ndx_ophys_devices


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------
def _dandi_label(text):
    """DANDI entity label: letters, digits and '-' only ('fip_40' -> 'fip-40')."""
    out = ''.join(c if c.isalnum() or c == '-' else '-' for c in str(text))
    return out.strip('-') or 'unknown'


def nwb_relpath(ps):
    """``sub-<subject>/sub-<subject>_ses-<date>-<number>-<eid8>_ophys.nwb`` (DANDI layout)."""
    subject = _dandi_label(ps.subject or ps.metadata.get('subject') or 'unknown')
    number = ps.metadata.get('number')
    parts = [ps.date or 'nodate']
    if number is not None and not pd.isna(number):
        parts.append(f'{int(number):03d}')
    parts.append(ps.eid[:8])
    session = _dandi_label('-'.join(parts))
    return Path(f'sub-{subject}') / f'sub-{subject}_ses-{session}_ophys.nwb'


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _timing(times):
    """``starting_time``/``rate`` for a regular time base, else ``timestamps``."""
    times = np.asarray(times, dtype=np.float64)
    if times.size > 2:
        steps = np.unique(np.round(np.diff(times), TIME_DECIMALS))
        if steps.size == 1 and steps[0] > 0:
            rate = (times.size - 1) / (times[-1] - times[0])
            return {'starting_time': float(times[0]), 'rate': float(rate)}
    return {'timestamps': _compressed(times)}


def _compressed(array):
    from pynwb import H5DataIO

    array = np.asarray(array)
    if array.size < 1000:
        return array
    return H5DataIO(array, compression='gzip', compression_opts=4, shuffle=True)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return [_jsonable(x) for x in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(x) for x in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(x) for k, x in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _start_time(ps):
    """Session start (tz-aware). Alyx keeps lab-local times without a zone: marked UTC."""
    from datetime import UTC

    start = ps.metadata.get('start_time')
    stamp = pd.Timestamp(start) if start is not None else pd.Timestamp('1970-01-01')
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return stamp.to_pydatetime()


def _genotype(ps):
    line = ps.metadata.get('line')
    extra = ps.metadata.get('genotype')
    parts = [str(line)] if line and not pd.isna(line) else []
    if isinstance(extra, list | tuple | np.ndarray):
        parts += [str(g) for g in extra if g]
    elif isinstance(extra, str) and extra:
        parts.append(extra)
    return '; '.join(parts) or None


def _subject(ps):
    from pynwb.file import Subject

    strain = ps.metadata.get('strain')
    return Subject(
        subject_id=str(ps.subject or ps.metadata.get('subject') or 'unknown'),
        species=SPECIES,
        strain=str(strain) if strain and not pd.isna(strain) else None,
        genotype=_genotype(ps),
        sex='U',
        age='P0D/',
        description=(
            'IBL mouse. Sex and age are not in the iblnm catalog (sex U = unknown, '
            'age P0D/ = unknown); see the IBL database for the full subject record.'
        ),
    )


def _fiber_coordinates(ps, fibers):
    """{region: (ap, ml, dv) in mm} from a fiber table (X-ml_um, Y-ap_um, Z-dv_um in um)."""
    if fibers is None or len(fibers) == 0:
        return {}
    rows = fibers[fibers['subject'].astype(str) == str(ps.subject)]
    out = {}
    for row in rows.to_dict('records'):
        coords = [row.get(k) for k in ('Y-ap_um', 'X-ml_um', 'Z-dv_um')]
        if all(c is not None and not pd.isna(c) for c in coords):
            region = v.strip_hemisphere_suffix(str(row['targeted_region']))
            out[region] = tuple(float(c) / 1000 for c in coords)
    return out


def _hemisphere(ps, column):
    """'left'/'right' of a region column from the catalog hemispheres, else None."""
    bare = v.strip_hemisphere_suffix(column)
    for region, hemi in zip(ps.brain_region, ps.hemisphere):
        if column in (region, v.strip_hemisphere_suffix(region)) or bare == region:
            return {'l': 'left', 'r': 'right'}.get(str(hemi)[:1].lower())
    suffix = str(column).rsplit('-', 1)[-1] if '-' in str(column) else ''
    return {'l': 'left', 'r': 'right'}.get(suffix)


def _add_devices(nwbfile, ps, columns, bands, fibers):
    """Devices, indicator and the FiberPhotometryTable; returns (table, {(band, col): row})."""
    fp, od = _ndx()
    coordinates = _fiber_coordinates(ps, fibers)
    fiber_model = od.OpticalFiberModel(
        name='optical_fiber_model',
        manufacturer='unknown',
        numerical_aperture=float('nan'),
        description='Chronically implanted optic fiber (model not recorded in the catalog).',
    )
    camera_model = od.PhotodetectorModel(
        name='camera_model',
        manufacturer='Neurophotometrics',
        detector_type='CMOS camera',
        description='Camera of the Neurophotometrics FP3002 system; values are ROI means '
        'normalised to 0-1 (1/255 = no light).',
    )
    nwbfile.add_device_model(fiber_model)
    nwbfile.add_device_model(camera_model)
    camera = od.Photodetector(
        name='camera', description='Neurophotometrics camera.', model=camera_model
    )
    nwbfile.add_device(camera)
    sources = {}
    for band in bands:
        nm = RAW_BANDS[band]
        model = od.ExcitationSourceModel(
            name=f'led_{nm:.0f}nm_model',
            manufacturer='Neurophotometrics',
            source_type='LED',
            excitation_mode='one-photon',
            wavelength_range_in_nm=[nm, nm],
            description=f'{nm:.0f} nm LED of the FP3002 ({band} excitation).',
        )
        nwbfile.add_device_model(model)
        sources[band] = od.ExcitationSource(
            name=f'led_{nm:.0f}nm', description=f'{nm:.0f} nm LED', model=model
        )
        nwbfile.add_device(sources[band])
    optical_fibers = {}
    for column in columns:
        region = v.strip_hemisphere_suffix(column)
        kwargs = {'hemisphere': _hemisphere(ps, column), 'position_reference': 'bregma'}
        if region in coordinates:
            ap, ml, dv = coordinates[region]
            kwargs.update(
                insertion_position_ap_in_mm=ap,
                insertion_position_ml_in_mm=ml,
                insertion_position_dv_in_mm=dv,
            )
        insertion = od.FiberInsertion(**{k: x for k, x in kwargs.items() if x is not None})
        optical_fibers[column] = od.OpticalFiber(
            name=f'fiber_{_dandi_label(column)}',
            description=f'Optic fiber above {region}.',
            fiber_insertion=insertion,
            model=fiber_model,
        )
        nwbfile.add_device(optical_fibers[column])
    line = ps.metadata.get('line')
    of_line = f' (mouse line {line})' if isinstance(line, str) and line else ''
    indicator = od.Indicator(
        name='GCaMP',
        label='GCaMP',
        description=f'Genetically encoded calcium indicator{of_line}.',
    )
    table = fp.FiberPhotometryTable(
        name='fiber_photometry_table',
        description='One row per recorded region and excitation wavelength.',
    )
    table.add_column(name='iblnm_column', description='Region column name in iblnm.')
    rows = {}
    for band in bands:
        for column in columns:
            rows[(band, column)] = len(rows)
            table.add_row(
                location=v.strip_hemisphere_suffix(column),
                excitation_wavelength_in_nm=RAW_BANDS[band],
                emission_wavelength_in_nm=EMISSION_NM[band],
                indicator=indicator,
                optical_fiber=optical_fibers[column],
                excitation_source=sources[band],
                photodetector=camera,
                iblnm_column=str(column),
            )
    nwbfile.add_lab_meta_data(
        fp.FiberPhotometry(
            name='fiber_photometry',
            fiber_photometry_table=table,
            fiber_photometry_indicators=fp.FiberPhotometryIndicators(indicators=[indicator]),
        )
    )
    return table, rows


def _response_series(name, frame, table, rows, unit, description):
    fp, _ = _ndx()
    region = table.create_fiber_photometry_table_region(
        region=rows, description=f'Table rows of the columns of {name}.'
    )
    data = frame.to_numpy(dtype=np.float64)
    return fp.FiberPhotometryResponseSeries(
        name=name,
        description=description,
        data=_compressed(data),
        unit=unit,
        fiber_photometry_table_region=region,
        **_timing(frame.index.to_numpy()),
    )


def _processed_unit(key):
    return next((u for k, u in PROCESSED_UNITS.items() if str(key).endswith(k)), 'n.a.')


def _table(name, description, frame):
    """A DynamicTable of a DataFrame (text as str, numbers as float64, None as '')."""
    from hdmf.common import DynamicTable, VectorData

    columns = []
    for col in frame.columns:
        columns.append(
            VectorData(name=str(col), description=f'{col}', data=_column_data(frame[col]))
        )
    return DynamicTable(name=name, description=description, columns=columns)


def _column_data(values):
    """float64 for numbers and booleans, str for anything else (None/NaN as '')."""
    if values.dtype.kind in 'fiub':
        return values.to_numpy(dtype=np.float64)
    return ['' if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in values]


def _trials(nwbfile, trials):
    """The whole trials table: intervals_0/1 become start/stop_time, the rest columns."""
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    trials = trials.copy()
    start = trials.pop('intervals_0') if 'intervals_0' in trials else trials['stimOn_times']
    stop = trials.pop('intervals_1') if 'intervals_1' in trials else trials['feedback_times']
    columns = [
        VectorData(
            name='start_time',
            description='Trial start (intervals_0, s).',
            data=start.to_numpy(np.float64),
        ),
        VectorData(
            name='stop_time',
            description='Trial end (intervals_1, s).',
            data=stop.to_numpy(np.float64),
        ),
    ]
    columns += [
        VectorData(
            name=str(col),
            description=IBL_TRIAL_DOCS.get(col, f'IBL trials column {col}.'),
            data=_column_data(trials[col]),
        )
        for col in trials.columns
    ]
    nwbfile.trials = TimeIntervals(
        name='trials',
        description='IBL trials table (all columns).',
        columns=columns,
        id=[int(i) for i in trials.index],
    )


def _wheel(nwbfile, ps, wheel_position):
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries

    series = []
    if ps.wheel is not None and len(ps.wheel):
        series.append(
            TimeSeries(
                name='wheel_velocity',
                data=_compressed(ps.wheel['velocity'].to_numpy(float)),
                unit='rad/s',
                description='Wheel velocity: position interpolated at 1 kHz, '
                'low-passed (8th-order Butterworth, 20 Hz, zero phase), subsampled (brainbox).',
                **_timing(ps.wheel['times'].to_numpy(float)),
            )
        )
    if wheel_position is not None:
        times, position = wheel_position
        series.append(
            TimeSeries(
                name='wheel_position',
                data=_compressed(np.asarray(position, float)),
                unit='rad',
                description='Raw wheel position (rotary encoder, IBL _ibl_wheel.position).',
                **_timing(times),
            )
        )
    if series:
        module = nwbfile.create_processing_module('behavior', 'Behavioural signals.')
        module.add(BehavioralTimeSeries(time_series=series, name='wheel'))


def build_nwbfile(ps, fibers=None, wheel_position=None):
    """An in-memory ``NWBFile`` of a session (see the module docstring for the layout).

    Parameters
    ----------
    ps : PhotometrySession
        With ``photometry`` (raw bands and processed signals), ``trials``, ``qc``, optionally
        ``wheel`` (times, velocity).
    fibers : pandas.DataFrame, optional
        Fiber insertions (subject, targeted_region, X-ml_um, Y-ap_um, Z-dv_um, um from bregma).
    wheel_position : (times, position), optional
        Raw wheel position (s, rad).
    """
    from pynwb import NWBFile

    bands = [b for b in RAW_BANDS if b in ps.photometry]
    if not bands:
        raise v.MissingExtractedData('no raw photometry band to export')
    columns = list(ps.photometry[bands[0]].columns)
    protocol = ps.metadata.get('task_protocol')
    users = ps.metadata.get('users')
    nwbfile = NWBFile(
        session_description=f'IBL fiber photometry during {protocol or "a task"} '
        f'({ps.session_type or "unknown"} session), regions {", ".join(map(str, columns))}.',
        identifier=str(ps.eid),
        session_start_time=_start_time(ps),
        session_id=str(ps.eid),
        lab=ps.metadata.get('lab'),
        institution='International Brain Laboratory',
        protocol=protocol,
        experimenter=[str(u) for u in users]
        if isinstance(users, list | tuple | np.ndarray) and len(users)
        else None,
        experiment_description='IBL neuromodulators project: fiber photometry of '
        'neuromodulator activity in mice performing the IBL decision-making task.',
        keywords=[
            k
            for k in ('fiber photometry', 'IBL', 'neuromodulators', ps.metadata.get('NM'))
            if isinstance(k, str) and k
        ],
        notes=json.dumps(
            {
                'iblnm_metadata': _jsonable(ps.metadata),
                'preprocessing_params': _jsonable(ps.preprocessing_params),
            },
            default=str,
        ),
        subject=_subject(ps),
    )
    table, rows = _add_devices(nwbfile, ps, columns, bands, fibers)
    for band in bands:
        frame = ps.photometry[band][columns]
        nwbfile.add_acquisition(
            _response_series(
                f'{band}_{RAW_BANDS[band]:.0f}nm',
                frame,
                table,
                [rows[(band, c)] for c in columns],
                'a.u.',
                f'Raw {band} fluorescence ({RAW_BANDS[band]:.0f} nm excitation): camera ROI '
                'means (0-1), task period +/- 5 s, one column per region.',
            )
        )
    processed = {k: f for k, f in ps.photometry.items() if k not in RAW_BANDS}
    ophys = nwbfile.create_processing_module('ophys', 'Processed fiber photometry and its QC.')
    for key, frame in processed.items():
        cols = [c for c in columns if c in frame.columns and ('GCaMP', c) in rows]
        ophys.add(
            _response_series(
                key,
                frame[cols],
                table,
                [rows[('GCaMP', c)] for c in cols],
                _processed_unit(key),
                f'{key}: processed GCaMP signal (iblnm), parameters in NWBFile.notes.',
            )
        )
    qc = ps.qc
    if len(qc):
        ophys.add(_table('qc', 'iblnm QC: one row per region x band (metrics, verdicts).', qc))
    if ps.errors:
        # no traceback, and no braces: nwbinspector reads '{...}' in a table cell as a
        # dictionary to unpack (a best-practice violation); the full log stays in the HDF5
        errors = pd.DataFrame(ps.errors).reindex(columns=['eid', 'error_type', 'error_message'])
        errors['error_message'] = [
            str(m).translate(BRACES) if m is not None else None for m in errors['error_message']
        ]
        ophys.add(_table('processing_errors', 'iblnm error log of this session.', errors))
    if ps.trials is not None and len(ps.trials):
        _trials(nwbfile, ps.trials)
    _wheel(nwbfile, ps, wheel_position)
    return nwbfile


def write_nwb(ps, path, fibers=None, wheel_position=None):
    """Write a session's NWB file atomically; returns the path.

    See :func:`build_nwbfile` for the arguments.
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    nwbfile = build_nwbfile(ps, fibers=fibers, wheel_position=wheel_position)

    def write(tmp):
        with NWBHDF5IO(str(tmp), 'w') as io:
            io.write(nwbfile)

    return atomic_write(path, write, suffix=TMP_SUFFIX)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def _band_of(nm):
    """Band name of an excitation wavelength (nm): 400-430 iso, 450-500 GCaMP, 540-600 RCaMP."""
    if 400 <= nm <= 430:
        return 'Isosbestic'
    if 450 <= nm <= 500:
        return 'GCaMP'
    if 540 <= nm <= 600:
        return 'RCaMP'
    return f'{nm:.0f}nm'


def _times(series):
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    n = series.data.shape[0]
    return series.starting_time + np.arange(n, dtype=np.float64) / series.rate


def _column_names(table, rows):
    """Column names of table rows: ``iblnm_column`` when present, else the locations
    (made unique with the hemisphere, then the row index)."""
    if 'iblnm_column' in table.colnames:
        return [str(table['iblnm_column'][i]) for i in rows]
    names = [str(table['location'][i]) for i in rows]
    if len(set(names)) < len(names):
        hemis = []
        for i in rows:
            fiber = table['optical_fiber'][i]
            insertion = getattr(fiber, 'fiber_insertion', None)
            hemis.append(str(getattr(insertion, 'hemisphere', None) or '')[:1])
        names = [f'{n}-{h}' if h else n for n, h in zip(names, hemis)]
    if len(set(names)) < len(names):
        names = [f'{n}_{i}' for n, i in zip(names, rows)]
    return names


def _series_frame(series):
    data = np.asarray(series.data[:], dtype=np.float64)
    data = data.reshape(len(data), -1)
    region = series.fiber_photometry_table_region
    if region is None:
        names, band = [f'ch{i}' for i in range(data.shape[1])], None
    else:
        rows = [int(i) for i in region.data[:]]
        table = region.table
        names = _column_names(table, rows)
        wavelengths = {float(table['excitation_wavelength_in_nm'][i]) for i in rows}
        band = _band_of(wavelengths.pop()) if len(wavelengths) == 1 else None
    frame = pd.DataFrame(data, index=pd.Index(_times(series), name='times'), columns=names)
    return band, frame


def _fiber_series(container):
    fp, _ = _ndx()
    return [s for s in container.values() if isinstance(s, fp.FiberPhotometryResponseSeries)]


def _read_table(table):
    frame = table.to_dataframe().reset_index(drop=True)
    return frame.replace({'': None})


def _read_trials(trials):
    frame = trials.to_dataframe()
    frame = frame.rename(columns={'start_time': 'intervals_0', 'stop_time': 'intervals_1'})
    frame.index = pd.Index(frame.index.to_numpy(np.int64))
    frame = frame.drop(columns=[c for c in ('tags', 'timeseries') if c in frame])
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].replace({'': None})
    if 'signed_contrast' not in frame and {'contrastLeft', 'contrastRight'} <= set(frame):
        from iblnm import task

        contrasts = task.compute_trial_contrasts(frame)
        frame = pd.concat([frame, contrasts[['stim_side', 'contrast', 'signed_contrast']]], axis=1)
    return frame


def _read_contents(path):
    """Everything the pipeline uses from a file, as plain pandas/numpy objects."""
    from pynwb import NWBHDF5IO

    _ndx()
    path = Path(path)
    if not path.exists():
        raise v.MissingRawData(f'{path} does not exist')
    try:
        io = NWBHDF5IO(str(path), 'r')
        nwbfile = io.read()
    except Exception as error:  # noqa: BLE001 - any unreadable file is a data failure
        raise v.MissingExtractedData(f'{path.name}: {type(error).__name__}: {error}') from error
    try:
        out = {'raw': {}, 'processed': {}, 'qc': None, 'errors': [], 'wheel': None}
        for series in _fiber_series(nwbfile.acquisition):
            band, frame = _series_frame(series)
            out['raw'][band or series.name] = frame
        if 'ophys' in nwbfile.processing:
            module = nwbfile.processing['ophys']
            for series in _fiber_series(module.data_interfaces):
                out['processed'][series.name] = _series_frame(series)[1]
            if 'qc' in module.data_interfaces:
                out['qc'] = _read_table(module['qc'])
            if 'processing_errors' in module.data_interfaces:
                out['errors'] = _read_table(module['processing_errors']).to_dict('records')
        if (
            'behavior' in nwbfile.processing
            and 'wheel' in nwbfile.processing['behavior'].data_interfaces
        ):
            wheel = nwbfile.processing['behavior']['wheel'].time_series
            if 'wheel_velocity' in wheel:
                ts = wheel['wheel_velocity']
                out['wheel'] = pd.DataFrame({'times': _times(ts), 'velocity': ts.data[:]})
                out['wheel_fs'] = float(ts.rate) if ts.rate else None
        out['trials'] = _read_trials(nwbfile.trials) if nwbfile.trials is not None else None
        notes = _json_notes(nwbfile.notes)
        out['metadata'] = _metadata(nwbfile, notes.get('iblnm_metadata', {}))
        out['preprocessing_params'] = notes.get('preprocessing_params')
    finally:
        io.close()
    return out


def _json_notes(notes):
    try:
        value = json.loads(notes) if notes else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _eid(nwbfile, metadata):
    for candidate in (metadata.get('eid'), nwbfile.session_id, nwbfile.identifier):
        try:
            return v.validate_eid(candidate)
        except (v.InvalidEid, TypeError, ValueError, AttributeError):
            continue
    return str(uuid.uuid5(NAMESPACE_UUID, str(nwbfile.identifier)))


def _metadata(nwbfile, stored):
    subject = nwbfile.subject
    row = {
        'subject': getattr(subject, 'subject_id', None),
        'strain': getattr(subject, 'strain', None),
        'start_time': pd.Timestamp(nwbfile.session_start_time).tz_localize(None).isoformat(),
        'lab': nwbfile.lab,
        'task_protocol': nwbfile.protocol,
    }
    row.update({k: x for k, x in stored.items() if x is not None})
    row['eid'] = _eid(nwbfile, stored)
    return row


def read_nwb(path):
    """A session built from a fiber-photometry NWB file (ours or neuroconv's).

    The raw bands, processed signals, trials, wheel velocity, QC table and error log of the
    file are loaded; ``load_trials``/``load_photometry``/``run_raw_qc``/``load_wheel`` work
    from the file, so the pipeline's methods run without ONE.

    Returns
    -------
    NWBPhotometrySession
    """
    contents = _read_contents(path)
    ps = NWBPhotometrySession(contents, path)
    ps.load_trials()
    ps.load_photometry()
    for key, frame in contents['processed'].items():
        ps.photometry[key] = frame
    ps.preprocessing_params = contents['preprocessing_params']
    if contents['qc'] is not None:
        ps.qc = contents['qc']
    ps.errors = list(contents['errors'])
    if contents['wheel'] is not None:
        ps.load_wheel()
    return ps


class NWBPhotometrySession(PhotometrySession):
    """A ``PhotometrySession`` whose loaders read an NWB file instead of ONE."""

    def __init__(self, contents, path):
        super().__init__(contents['metadata'], one=None, h5_dir=config.SESSIONS_H5_DIR)
        self.nwb_path = Path(path)
        self._nwb = contents

    @property
    def one(self):
        raise v.MissingRawData(f'{self.nwb_path.name}: a session read from NWB has no ONE')

    def _has_dataset(self, name, collection=None):
        return False

    def load_trials(self):
        """The file's trials table (``intervals_0``/``intervals_1`` from start/stop)."""
        if self._nwb['trials'] is None:
            raise v.MissingExtractedData(f'{self.nwb_path.name} has no trials table')
        self.trials = self._nwb['trials'].copy()
        return self.trials

    def load_photometry(
        self, pre=config.PHOTOMETRY_RESTRICT_PRE, post=config.PHOTOMETRY_RESTRICT_POST
    ):
        """The file's raw bands, restricted to the task ± (pre, post) s like ONE's."""
        from iblnm.loaders import restrict_to_task

        bands = {b: f.copy() for b, f in self._nwb['raw'].items() if b in ('GCaMP', 'Isosbestic')}
        if not bands:
            raise v.MissingExtractedData(f'{self.nwb_path.name} has no 470/415 nm series')
        if self.trials is not None and 'intervals_0' in self.trials:
            bands = restrict_to_task(bands, self.trials, pre=pre, post=post)
        self.photometry = bands
        self._match_photometry_to_metadata()
        return self.photometry

    def _raw_frames(self):
        """Frame times and LED codes (1 = 415, 2 = 470 nm) rebuilt from the raw series."""
        times, codes = [], []
        for band, code in (('Isosbestic', 1), ('GCaMP', 2)):
            if band in self._nwb['raw']:
                t = self._nwb['raw'][band].index.to_numpy()
                times.append(t)
                codes.append(np.full(t.size, code))
        times, codes = np.concatenate(times), np.concatenate(codes)
        order = np.argsort(times, kind='stable')
        return times[order], codes[order]

    def run_raw_qc(self):
        """Band inversions and early frames of the frames the file holds.

        Two bands with their own frame times (ours): counted on the interleaved frames, as
        for a raw file. Bands sharing one time base (neuroconv gives the signal channels the
        isosbestic channel's times) or a single band: neither count is measurable on the
        frames the file holds; the values of the file's QC table (the pipeline's, over the
        whole raw recording) are kept, else early frames per band and NaN inversions.
        """
        from iblnm.signal import qc as sq

        raw = {b: f for b, f in self._nwb['raw'].items() if b in ('GCaMP', 'Isosbestic')}
        shared = len(raw) == 2 and np.array_equal(raw['GCaMP'].index, raw['Isosbestic'].index)
        if len(raw) == 2 and not shared:
            return super().run_raw_qc()
        stored = self._nwb['qc']

        def from_file(metric):
            if stored is not None and metric in stored and stored[metric].notna().any():
                return float(stored[metric].max())
            return None

        early = from_file('n_early_samples')
        if early is None:
            early = max(sq.n_early_samples(f.index.to_numpy()) for f in raw.values())
        inversions, dropped = from_file('n_band_inversions'), from_file('n_dropped_frames')
        return self._set_raw_qc(
            {
                'n_band_inversions': np.nan if inversions is None else inversions,
                'n_early_samples': early,
                'n_dropped_frames': np.nan if dropped is None else dropped,
            }
        )

    def load_wheel(self, fs=None):
        """The file's wheel velocity (rad/s)."""
        if self._nwb['wheel'] is None:
            raise v.MissingExtractedData(f'{self.nwb_path.name} has no wheel velocity')
        self.wheel = self._nwb['wheel'].copy()
        self.wheel_fs = self._nwb.get('wheel_fs') or fs or config.WHEEL_FS
        return self.wheel
