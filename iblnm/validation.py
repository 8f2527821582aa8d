"""Typed exceptions, the error-log entry, ``exception_logger`` and the catalog validators.

Every failure the pipeline can meet has its own exception class; a stage catches it,
turns it into one log entry (eid, error_type, error_message, traceback) and goes on
with the next session. Validators raise on failure and return ``None`` on success.
"""

import functools
import re
import traceback as tb
import uuid

import numpy as np
import pandas as pd

from iblnm import config

LOG_COLUMNS = ['eid', 'error_type', 'error_message', 'traceback']


# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------
class IblnmError(Exception):
    """Base class of every typed iblnm error."""


# Metadata (catalog) errors
class InvalidSubject(IblnmError):
    """The subject is in the exclusion list."""


class InvalidStrain(IblnmError):
    """The subject's strain is not a valid strain."""


class InvalidLine(IblnmError):
    """The subject's line is not a valid line."""


class InvalidNeuromodulator(IblnmError):
    """The neuromodulator could not be determined from strain or line."""


class InvalidBrainRegion(IblnmError):
    """A recorded brain region is not a valid target."""


class MissingBrainRegion(IblnmError):
    """No brain region is known for the session."""


class MissingHemisphere(IblnmError):
    """No hemisphere is known for the session."""


class HemisphereMismatch(IblnmError):
    """The region's hemisphere suffix disagrees with the fiber coordinates."""


class MissingInsertion(IblnmError):
    """No fiber insertion is known for a (subject, region) pair."""


class MissingHemiSuffix(IblnmError):
    """A region has no hemisphere and none can be inferred."""


class DataNotListed(IblnmError):
    """A required dataset category is absent from the session's datasets."""


class InvalidSessionType(IblnmError):
    """The task protocol does not map to exactly one session type."""


class InvalidTargetNM(IblnmError):
    """A region-neuromodulator label is not a valid target-NM."""


class InvalidSessionLength(IblnmError):
    """Start and end time fall on different days (or cannot be parsed)."""


class InvalidEid(IblnmError):
    """An eid is not a UUID string (it would be unsafe as a file name)."""


class TrueDuplicateSession(IblnmError):
    """Several valid sessions share a subject and day."""

    def __init__(self, msg, fallback_row=None):
        super().__init__(msg)
        self.fallback_row = fallback_row


# Data errors
class MissingExtractedData(IblnmError):
    """Raw data exist but the extracted dataset does not."""


class MissingRawData(IblnmError):
    """Neither raw nor extracted data exist."""


class InvalidRawData(IblnmError):
    """The raw Neurophotometrics file cannot be read (corrupt, unknown layout) or cannot be
    the recording of the extracted table (too few frames, non-finite times): raw QC counts
    the extracted table's frames instead. Not fatal."""


class RecordingTooShort(IblnmError):
    """The recording is shorter than one sliding-QC window: its fibers are not assessed
    (verdict FAIL ``not_assessed``). Not fatal: the signal is still preprocessed."""


class AmbiguousTaskCollection(IblnmError):
    """A behaviour object (trials, wheel) is in several collections (several task runs in one
    session): which one goes with the photometry is not decided for the user."""


class DatasetHashMismatch(IblnmError):
    """A dataset file's md5 differs from its ONE record (changed or corrupt file)."""


class MissingResponses(IblnmError):
    """No peri-event responses are available."""


class MissingH5(IblnmError):
    """The session's HDF5 file does not exist (run the photometry stage first)."""


class ProvenanceMismatch(IblnmError):
    """An output root holds outputs of another data source or parameter set."""


class CorruptH5(IblnmError):
    """The session's HDF5 file cannot be read (truncated or corrupt)."""


class InsufficientTrials(IblnmError):
    """Fewer trials than ``config.MIN_NTRIALS``."""


class BlockStructureBug(IblnmError):
    """The probabilityLeft block structure is implausible."""


class IncompleteEventTimes(IblnmError):
    """Event times are missing or mostly NaN."""

    def __init__(self, missing_events):
        self.missing_events = list(missing_events)
        super().__init__(f'Incomplete events: {", ".join(self.missing_events)}')


class TrialsNotInPhotometryTime(IblnmError):
    """Trials start before or end after the photometry recording."""


class QCValidationError(IblnmError):
    """One or more raw QC checks failed (base of :class:`BandInversion`, :class:`EarlySamples`)."""


class BandInversion(QCValidationError):
    """The GCaMP/isosbestic frame alternation is broken."""


class EarlySamples(QCValidationError):
    """Frames arrived earlier than the frame clock allows."""


class FewUniqueSamples(IblnmError):
    """A channel has too few distinct values for its noise (dead, clipped or saturated)."""


class AmbiguousRegionMapping(IblnmError):
    """Photometry columns cannot be mapped to the session's brain regions."""


# Video errors
class MissingVideoTimestamps(IblnmError):
    """Camera timestamps are missing."""


class VideoLengthError(IblnmError):
    """Video and session lengths differ by more than the threshold."""


class VideoTimestampsQCError(IblnmError):
    """Video timestamps QC did not pass."""


class VideoDroppedFramesQCError(IblnmError):
    """Video dropped-frames QC did not pass."""


class VideoPinStateQCError(IblnmError):
    """Video pin-state QC did not pass."""


# Input-table errors (validated at the boundary, see the section "Input tables" below)
class InvalidCatalog(IblnmError):
    """The catalog as a whole cannot be used (no ``eid`` column, unreadable file ...)."""


class DuplicateEid(IblnmError):
    """The catalog lists the same eid more than once (the first row is kept)."""


class MismatchedParallelLists(IblnmError):
    """``brain_region``, ``hemisphere`` and ``target_NM`` of a session differ in length."""


class InvalidTrialsTable(IblnmError):
    """The trials table lacks a required column or holds a column of the wrong type."""


class InvalidPhotometryTable(IblnmError):
    """The photometry table cannot be read or does not follow the IBL schema."""


class InvalidPhotometryTimes(IblnmError):
    """Photometry timestamps are not finite, strictly increasing and unique."""


class InvalidWheelData(IblnmError):
    """Wheel timestamps are not finite and increasing (or position and times differ in size)."""


class MissingFiber(IblnmError):
    """A fiber of the locations table has no column in the signal table (the fiber is dropped)."""


class PreprocessingFailed(IblnmError):
    """Preprocessing failed on this recording's values (a singular fit, non-finite data)."""


class BadFiber(IblnmError):
    """A fiber's signal is unusable (all NaN or constant): it is dropped, the others go on."""


# Failure kinds: transient (retried), output (stops the stage), unexpected (a bug)
class TransientError(IblnmError):
    """A request, download or input read failed: retried within a run, never "done"."""


class RequestFailed(TransientError):
    """An Alyx request or a dataset download failed (HTTP error, timeout, connection)."""


class InputReadError(TransientError):
    """An input file exists but could not be read (I/O or permission error)."""


class OutputWriteError(IblnmError):
    """An output could not be written (disk full, permission, HDF5 error): the stage stops."""


class UnexpectedError(Exception):
    """Anything that is not an expected data problem: a bug. Logged with its traceback,
    counted apart, makes the stage exit non-zero; the session is retried by the next run.

    Deliberately not an :class:`IblnmError` (which are the expected, permanent data errors).
    """


# ---------------------------------------------------------------------------
# Error types by name (logs store class names) and blockers
# ---------------------------------------------------------------------------
# A session whose upstream logs hold one of a stage's blockers (or a subclass of one) is not
# processed by that stage (``pipeline.stage.select_sessions``) or analysed (the group's
# ``filter_sessions(qc_blockers=...)``).
PHOTOMETRY_BLOCKERS = (
    MissingRawData,
    MissingExtractedData,
    AmbiguousTaskCollection,
    InsufficientTrials,
    TrialsNotInPhotometryTime,
    QCValidationError,
    FewUniqueSamples,
)
VIDEO_BLOCKERS = (
    MissingRawData,
    MissingExtractedData,
    AmbiguousTaskCollection,
    InsufficientTrials,
    TrialsNotInPhotometryTime,
    QCValidationError,
)
ANALYSIS_QC_BLOCKERS = (
    MissingExtractedData,
    AmbiguousTaskCollection,
    MissingRawData,
    InsufficientTrials,
    IncompleteEventTimes,
    TrialsNotInPhotometryTime,
    QCValidationError,
    AmbiguousRegionMapping,
)


def error_class(error_type):
    """The exception class of this module named ``error_type`` (a logged type name), or None."""
    cls = globals().get(str(error_type))
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def error_lineage(error_type):
    """Names of an error type and of its iblnm base classes, e.g. ``'BandInversion'`` →
    ``{'BandInversion', 'QCValidationError'}``; an unknown name → ``{name}``."""
    cls = error_class(error_type)
    if cls is None or not issubclass(cls, IblnmError):
        return {str(error_type)}
    return {base.__name__ for base in cls.__mro__ if issubclass(base, IblnmError)} - {'IblnmError'}


def is_blocked(error_types, blockers):
    """True when any logged error type is one of ``blockers`` or a subclass of one.

    Parameters
    ----------
    error_types : iterable of str
        Logged error type names (``error_type`` of the log rows).
    blockers : iterable of exception classes
        E.g. :data:`PHOTOMETRY_BLOCKERS`; a logged ``'BandInversion'`` is blocked by
        :class:`QCValidationError`. A name that is not a class of this module blocks nothing.

    Raises
    ------
    TypeError
        A blocker is not an exception class (e.g. its name as a string).
    """
    blockers = tuple(blockers)
    for blocker in blockers:
        if not (isinstance(blocker, type) and issubclass(blocker, BaseException)):
            raise TypeError(f'blockers are exception classes, got {blocker!r}')
    classes = [error_class(e) for e in error_types]
    return any(cls is not None and issubclass(cls, blockers) for cls in classes)


def error_matches(logged_type, expected_type):
    """True when ``logged_type`` is ``expected_type`` or one of its subclasses (by name)."""
    return expected_type in error_lineage(logged_type)


# ---------------------------------------------------------------------------
# Log entries and the decorator
# ---------------------------------------------------------------------------
_SECRET_PATTERNS = [
    # "Authorization: Token abc", "Authorization=Bearer abc"
    (
        re.compile(r'(?i)\b(authorization)\s*[:=]\s*(?:token|bearer|basic)?\s*[^\s"\',}]+'),
        r'\1: <redacted>',
    ),
    # "Token abc.def", "Bearer abc"
    (re.compile(r'(?i)\b(token|bearer)\s+[A-Za-z0-9._\-]{8,}'), r'\1 <redacted>'),
    # password=..., "token": "...", secret: ...
    (
        re.compile(
            r'(?i)(["\']?\b(?:password|passwd|token|secret|api_key)["\']?\s*[:=]\s*["\']?)'
            r'[^\s"\',}]+'
        ),
        r'\1<redacted>',
    ),
]


def redact(text):
    """Remove credentials (tokens, passwords) from a message before it is logged.

    Lone surrogates (undecodable file names) are escaped, so every log row is valid UTF-8 for
    parquet and HDF5.
    """
    if text is None:
        return None
    text = str(text).encode('utf-8', 'backslashreplace').decode('utf-8')
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def make_log_entry(eid, error=None, error_type=None, error_message=None):
    """Build one error-log entry.

    Parameters
    ----------
    eid : str
    error : Exception, optional
        Takes precedence: type name, message and the current traceback are recorded.
    error_type, error_message : str, optional
        Explicit strings (traceback None) when no exception object exists.

    Returns
    -------
    dict
        Keys :data:`LOG_COLUMNS`. Credentials are redacted from message and traceback.
    """
    if error is not None:
        trace = ''.join(tb.format_exception(type(error), error, error.__traceback__))
        return {
            'eid': eid,
            'error_type': type(error).__name__,
            'error_message': redact(str(error)),
            'traceback': redact(trace),
        }
    if error_type is not None:
        return {
            'eid': eid,
            'error_type': error_type,
            'error_message': redact(error_message),
            'traceback': None,
        }
    raise ValueError('make_log_entry needs an error or an error_type')


def exception_logger(func):
    """Decorate ``func(series, *args, **kwargs)`` with an optional ``exlog`` keyword.

    With ``exlog=None`` exceptions propagate. With a list, an exception is appended to
    it as a log entry and the input is returned unchanged (for a DataFrame input from a
    groupby-apply, the exception's ``fallback_row`` or the first row), so that
    ``df.apply(f, axis='columns', exlog=log)`` goes on past bad rows.
    """

    @functools.wraps(func)
    def wrapper(series, *args, exlog=None, **kwargs):
        if exlog is None:
            return func(series, *args, **kwargs)
        try:
            return func(series, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - logging every failure is the point
            if isinstance(series, pd.DataFrame):
                eid = series['eid'].iloc[0] if len(series) and 'eid' in series else 'unknown'
                exlog.append(make_log_entry(eid, error=error))
                fallback = getattr(error, 'fallback_row', None)
                if fallback is not None:
                    return fallback
                return series.iloc[0] if len(series) else series
            eid = series.get('eid', 'unknown') if hasattr(series, 'get') else 'unknown'
            exlog.append(make_log_entry(eid, error=error))
            return series

    return wrapper


# ---------------------------------------------------------------------------
# Eids
# ---------------------------------------------------------------------------
def validate_eid(eid):
    """Return ``eid`` as a canonical UUID string or raise :class:`InvalidEid`.

    Used before an eid names a file or folder, so that e.g. ``'../x'`` can never
    escape the output directory.
    """
    text = str(eid)
    try:
        parsed = uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        raise InvalidEid(f'eid {text[:80]!r} is not a UUID') from None
    if str(parsed) != text.lower():
        raise InvalidEid(f'eid {text[:80]!r} is not a canonical UUID string')
    return str(parsed)


# ---------------------------------------------------------------------------
# Catalog validators (take a session Series, return None or raise)
# ---------------------------------------------------------------------------
def _is_listlike(value):
    return isinstance(value, list | tuple | np.ndarray)


def strip_hemisphere_suffix(region):
    """``'VTA-r'`` -> ``'VTA'``; names without a ``-l``/``-r`` suffix are returned unchanged."""
    region = str(region)
    return region[:-2] if re.search(r'-[lr]$', region) else region


def fix_region_name(location, fixes=None):
    """Apply ``config.REGION_NAME_FIXES`` (``'DRN' -> 'DR'``, ``'SNC' -> 'SNc'``) to a location.

    The bare name is replaced and the hemisphere suffix kept: ``'DRN-l'`` -> ``'DR-l'``.
    Used wherever a location is read (catalog and photometry columns), so that both agree.
    """
    fixes = config.REGION_NAME_FIXES if fixes is None else fixes
    location = str(location)
    bare = strip_hemisphere_suffix(location)
    return fixes.get(bare, bare) + location[len(bare) :]


@exception_logger
def validate_subject(session):
    """Raise :class:`InvalidSubject` when the subject is excluded."""
    if session['subject'] in config.SUBJECTS_TO_EXCLUDE:
        raise InvalidSubject(f'subject {session["subject"]} is in SUBJECTS_TO_EXCLUDE')


@exception_logger
def validate_strain(session):
    """Raise :class:`InvalidStrain` when the strain is not in ``config.VALID_STRAINS``."""
    if session.get('strain') not in config.VALID_STRAINS:
        raise InvalidStrain(f'invalid strain {session.get("strain")!r}')


@exception_logger
def validate_line(session):
    """Raise :class:`InvalidLine` when the line is not in ``config.VALID_LINES``."""
    if session.get('line') not in config.VALID_LINES:
        raise InvalidLine(f'invalid line {session.get("line")!r}')


@exception_logger
def validate_neuromodulator(session):
    """Raise :class:`InvalidNeuromodulator` when NM is not a valid neuromodulator."""
    if session.get('NM') not in config.VALID_NEUROMODULATORS:
        raise InvalidNeuromodulator(f'could not determine NM (got {session.get("NM")!r})')


@exception_logger
def validate_brain_region(session):
    """Raise when the region list is empty or names a region outside ``VALID_TARGETS``."""
    regions = session.get('brain_region')
    if not _is_listlike(regions) or len(regions) == 0:
        raise MissingBrainRegion('no brain region listed')
    invalid = [r for r in regions if strip_hemisphere_suffix(r) not in config.VALID_TARGETS]
    if invalid:
        raise InvalidBrainRegion(f'invalid brain region(s): {", ".join(map(str, invalid))}')


def fiber_side(x_ml_um):
    """Hemisphere of a fiber from its ML coordinate (µm): > 0 left, < 0 right, 0 midline ('').

    The fibers-table convention (the original's ``fibers.csv``), opposite to IBL's atlas and
    Alyx trajectories (x right positive): :func:`iblnm.io.fibers_from_alyx` converts.
    """
    if x_ml_um is None or not np.isfinite(x_ml_um):
        return None
    return 'l' if x_ml_um > 0 else ('r' if x_ml_um < 0 else '')


def fiber_hemisphere_lookup(fibers):
    """Map (subject, targeted_region) -> hemisphere from a fibers table.

    Parameters
    ----------
    fibers : pandas.DataFrame
        Columns ``subject``, ``targeted_region``, ``X-ml_um`` (µm, > 0 = left).

    Returns
    -------
    dict
        ``{(subject, bare_region): 'l' | 'r' | '' | None}``; None when the subject has
        fibers in that region in both hemispheres (ambiguous).
    """
    lookup = {}
    if fibers is None or len(fibers) == 0:
        return lookup
    for (subject, region), grp in fibers.groupby(['subject', 'targeted_region']):
        sides = {fiber_side(x) for x in grp['X-ml_um']}
        key = (subject, strip_hemisphere_suffix(region))
        lookup[key] = sides.pop() if len(sides) == 1 else None
    return lookup


def fill_hemisphere_from_fiber_insertion_table(session, fiber_lookup=None):
    """Fill ``None`` hemisphere entries from the fiber lookup; never overwrite a value.

    Returns a copy of the session.
    """
    session = session.copy()
    regions = session.get('brain_region')
    hemis = session.get('hemisphere')
    if not _is_listlike(regions) or not _is_listlike(hemis) or not fiber_lookup:
        return session
    filled = list(hemis)
    for i, (region, hemi) in enumerate(zip(regions, hemis)):
        if hemi is None:
            filled[i] = fiber_lookup.get((session['subject'], strip_hemisphere_suffix(region)))
    session['hemisphere'] = filled
    return session


@exception_logger
def validate_hemisphere(session, fiber_lookup=None):
    """Check each (region, hemisphere) pair against the fiber insertions.

    Raises :class:`MissingHemisphere` for an empty list, :class:`HemisphereMismatch` when
    the hemisphere and the fiber's side are both known and differ,
    :class:`MissingInsertion` when no fiber side is known and :class:`MissingHemiSuffix`
    when the hemisphere is unknown.
    """
    hemis = session.get('hemisphere')
    regions = session.get('brain_region')
    if not _is_listlike(hemis) or len(hemis) == 0:
        raise MissingHemisphere('no hemisphere listed')
    lookup = fiber_lookup or {}
    for region, hemi in zip(regions, hemis):
        key = (session['subject'], strip_hemisphere_suffix(region))
        side = lookup.get(key)  # None: unknown or fibers in both hemispheres
        if hemi not in (None, '') and side not in (None, '') and hemi != side:
            raise HemisphereMismatch(
                f'{region}: hemisphere {hemi!r} but the fiber is in {side!r} (X-ml_um)'
            )
        if key not in lookup:
            raise MissingInsertion(f'no fiber insertion known for {session["subject"]} {region}')
        if hemi is None:
            raise MissingHemiSuffix(f'{region} has no hemisphere')


@exception_logger
def validate_datasets(session, categories=config.REQUIRED_DATASET_CATEGORIES):
    """Raise :class:`DataNotListed` naming every required category with no listed dataset."""
    datasets = session.get('datasets')
    listed = set(datasets) if _is_listlike(datasets) else set()
    missing = [cat for cat in categories if not listed.intersection(config.DATASET_CATEGORIES[cat])]
    if missing:
        raise DataNotListed(f'missing dataset categories: {", ".join(missing)}')


@exception_logger
def validate_video_length(session):
    """Raise :class:`VideoLengthError` when video - session length >= the threshold (s)."""
    discrepancy = session.get('length_discrepancy')
    if discrepancy is not None and np.isfinite(discrepancy):
        if discrepancy >= config.LENGTH_MISMATCH_THRESHOLD:
            raise VideoLengthError(
                f'video is {discrepancy:.1f} s longer than the session '
                f'(threshold {config.LENGTH_MISMATCH_THRESHOLD} s)'
            )


@exception_logger
def validate_video_covers_session(session):
    """Raise :class:`VideoLengthError` when the video is shorter than the session by
    ``LENGTH_MISMATCH_THRESHOLD`` s or more (the camera stopped or started late).

    The original checks only the other direction (:func:`validate_video_length`, video longer
    than the session); a video that misses minutes of the task is at least as unusable.
    """
    discrepancy = session.get('length_discrepancy')
    if discrepancy is not None and np.isfinite(discrepancy):
        if -discrepancy >= config.LENGTH_MISMATCH_THRESHOLD:
            raise VideoLengthError(
                f'video is {-discrepancy:.1f} s shorter than the session '
                f'(threshold {config.LENGTH_MISMATCH_THRESHOLD} s)'
            )


def _video_qc_validator(column, error_class):
    @exception_logger
    def validator(session):
        value = session.get(column)
        if value != 'PASS':
            raise error_class(f'{column} = {value}')

    validator.__name__ = f'validate_{column.removeprefix("qc_videoLeft_")}_qc'
    validator.__doc__ = f'Raise :class:`{error_class.__name__}` unless ``{column}`` is PASS.'
    return validator


validate_video_timestamps_qc = _video_qc_validator(
    'qc_videoLeft_timestamps', VideoTimestampsQCError
)
validate_video_dropped_frames_qc = _video_qc_validator(
    'qc_videoLeft_dropped_frames', VideoDroppedFramesQCError
)
validate_video_pin_state_qc = _video_qc_validator('qc_videoLeft_pin_state', VideoPinStateQCError)


# ---------------------------------------------------------------------------
# Failure kinds: what a stage logs for an exception
# ---------------------------------------------------------------------------
_REQUEST_PACKAGES = ('requests', 'urllib3', 'botocore', 's3transfer', 'aiohttp', 'globus_sdk')
_REQUEST_MODULES = ('http.client', 'urllib.error', 'socket', 'ssl')


def qualified_name(error):
    """``'pyarrow.lib.ArrowInvalid'`` for a library exception, ``'KeyError'`` for a builtin."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == 'builtins' else f'{module}.{cls.__qualname__}'


def describe(error):
    """``'<qualified exception name>: <message>'``: the library's name stays in the log."""
    return f'{qualified_name(error)}: {error}'


def is_request_error(error):
    """True for a failed HTTP request or download (requests/urllib3/urllib/http.client/socket errors,
    connection errors and timeouts)."""
    for cls in type(error).__mro__:
        module = cls.__module__
        if module.split('.')[0] in _REQUEST_PACKAGES or module in _REQUEST_MODULES:
            return True
    return isinstance(error, ConnectionError | TimeoutError)


def is_transient(error):
    """True when retrying may succeed: request, download and I/O errors."""
    return isinstance(error, TransientError) or (
        not isinstance(error, IblnmError | UnexpectedError)
        and (is_request_error(error) or isinstance(error, OSError))
    )


def wrap(cls, error, context=None):
    """``cls('<context>: <qualified name>: <message>')`` chained to ``error``, with its traceback."""
    message = describe(error) if context is None else f'{context}: {describe(error)}'
    new = cls(message)
    new.__cause__ = error
    return new.with_traceback(error.__traceback__)


def as_transient(error, context=None):
    """The :class:`TransientError` for a request/download/I/O ``error``, else None."""
    if isinstance(error, TransientError):
        return error
    if isinstance(error, IblnmError | UnexpectedError):
        return None
    if is_request_error(error):
        return wrap(RequestFailed, error, context)
    if isinstance(error, OSError):
        return wrap(InputReadError, error, context)
    return None


def classify(error):
    """The exception a stage logs for ``error``.

    Typed iblnm errors are kept; request, download and I/O errors become a
    :class:`TransientError` (retried, never "done"); anything else is a bug:
    :class:`UnexpectedError`, whose message starts with the original's qualified name and
    whose traceback is the original's.
    """
    if isinstance(error, IblnmError | UnexpectedError):
        return error
    return as_transient(error) or wrap(UnexpectedError, error)


@functools.cache
def request_error_names():
    """Type names of request and download errors (requests, urllib3, builtin connection
    errors and timeouts), for logs that hold only the type name."""
    import urllib.error

    import requests.exceptions
    import urllib3.exceptions

    names = {
        'ConnectionError',
        'TimeoutError',
        'BrokenPipeError',
        'ConnectionResetError',
        'ConnectionRefusedError',
        'ConnectionAbortedError',
        'timeout',
    }
    for module in (requests.exceptions, urllib3.exceptions, urllib.error):
        names |= {
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, BaseException)
        }
    return frozenset(names)


def failure_kind(error_type):
    """'unexpected', 'transient', 'output' or 'data' for a logged error type name."""
    if error_type == UnexpectedError.__name__:
        return 'unexpected'
    if error_type == OutputWriteError.__name__:
        return 'output'
    if error_type in {cls.__name__ for cls in (TransientError, *_subclasses(TransientError))}:
        return 'transient'
    return 'data'


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# ---------------------------------------------------------------------------
# Input tables: validated where they enter the pipeline
# ---------------------------------------------------------------------------
CATALOG_REQUIRED_COLUMNS = ('eid',)
TRIALS_REQUIRED_COLUMNS = (
    'choice',
    'feedbackType',
    'contrastLeft',
    'contrastRight',
    'probabilityLeft',
    'intervals_0',
    'intervals_1',
)
TRIALS_CODES = {'choice': {-1, 0, 1}, 'feedbackType': {-1, 1}}


def normalise_eid(eid):
    """Canonical (lower-case) UUID string of ``eid``; :class:`InvalidEid` when it is not one."""
    return validate_eid(str(eid).strip().lower())


def validate_catalog(catalog, schema=None, parallel=config.PARALLEL_LIST_COLUMNS):
    """Check a session catalog where a stage reads it; return (usable sessions, log entries).

    - the schema: a missing ``eid`` column (or a non-table) raises :class:`InvalidCatalog`;
      other missing schema columns get their defaults;
    - eids are normalised to lower case; a non-UUID eid is logged (:class:`InvalidEid`);
    - a duplicated eid is logged once (:class:`DuplicateEid`) and only its first row kept;
    - parallel lists of different lengths are logged (:class:`MismatchedParallelLists`).

    Logged sessions other than duplicates are left out of the returned table, so no stage
    processes them; the log entries are the stage's to write.
    """
    from iblnm import util

    if not isinstance(catalog, pd.DataFrame):
        raise InvalidCatalog(f'the catalog is a {type(catalog).__name__}, not a table')
    missing = [c for c in CATALOG_REQUIRED_COLUMNS if c not in catalog.columns]
    if missing:
        raise InvalidCatalog(f'the catalog has no column {", ".join(missing)}')
    df = util.enforce_schema(catalog, schema or config.SESSION_SCHEMA).reset_index(drop=True)
    for col in ('subject', 'session_type'):
        df[col] = df[col].astype(object)
    log, keep = [], np.ones(len(df), bool)
    eids = []
    for i, raw in enumerate(df['eid']):
        try:
            eids.append(normalise_eid(raw))
        except InvalidEid as error:
            log.append(make_log_entry(redact(str(raw))[:80], error=error))
            eids.append(str(raw))
            keep[i] = False
    df['eid'] = eids
    duplicated = df['eid'].duplicated() & keep
    for eid in df.loc[duplicated, 'eid'].unique():
        n = int((df['eid'] == eid).sum())
        error = DuplicateEid(f'eid listed {n} times in the catalog; the first row is used')
        log.append(make_log_entry(eid, error=error))
    keep &= ~duplicated.to_numpy()
    for i, row in df.iterrows():
        lengths = {c: len(row[c]) if _is_listlike(row[c]) else None for c in parallel}
        if keep[i] and len(set(lengths.values())) > 1:
            detail = ', '.join(f'{c} {n}' for c, n in lengths.items())
            error = MismatchedParallelLists(f'parallel lists differ in length: {detail}')
            log.append(make_log_entry(row['eid'], error=error))
            keep[i] = False
    return df[keep].reset_index(drop=True), log


def validate_trials_table(trials, required=TRIALS_REQUIRED_COLUMNS):
    """Raise :class:`InvalidTrialsTable` unless the trials table can be analysed.

    Required columns must exist and be numeric (a ``choice`` stored as text would make
    every comparison with -1/1 false); ``choice`` and ``feedbackType`` may only hold their
    IBL codes (or NaN); every ``*_times`` column must be numeric.
    """
    if not isinstance(trials, pd.DataFrame):
        raise InvalidTrialsTable(f'trials is a {type(trials).__name__}, not a table')
    missing = [c for c in required if c not in trials.columns]
    if missing:
        raise InvalidTrialsTable(f'missing column(s): {", ".join(missing)}')
    times = [c for c in trials.columns if str(c).endswith('_times')]
    wrong = [
        f'{c} ({trials[c].dtype})'
        for c in [*required, *times]
        if not pd.api.types.is_numeric_dtype(trials[c]) or pd.api.types.is_bool_dtype(trials[c])
    ]
    if wrong:
        raise InvalidTrialsTable(f'column(s) not numeric: {", ".join(wrong)}')
    for col, codes in TRIALS_CODES.items():
        values = trials[col].dropna()
        bad = sorted(set(values.unique()) - codes)
        if bad:
            raise InvalidTrialsTable(f'{col} holds values outside {sorted(codes)}: {bad[:5]}')


def shared_pair_times(times, labels, min_fraction=0.9):
    """Whether a table gives each 470/415 pair one timestamp (a layout some exporters use).

    Parameters
    ----------
    times : array of float, shape (n_frames,)
        Frame times (s) in table order.
    labels : array, shape (n_frames,)
        Band of each frame (names or LED codes).
    min_fraction : float
        At least this fraction of the frames of the smaller band share their time with a
        frame of another band.

    Returns
    -------
    bool
        True when the times never go back, each band's own times are strictly increasing,
        and the shared times are the layout (not one corrupt frame).
    """
    times, labels = np.asarray(times, dtype=float), np.asarray(labels)
    steps = np.diff(times)
    if times.size < 3 or not (steps >= 0).all():
        return False
    values, counts = np.unique(labels, return_counts=True)
    if values.size < 2 or np.count_nonzero(steps == 0) < min_fraction * np.sort(counts)[-2]:
        return False
    return all((np.diff(times[labels == value]) > 0).all() for value in values)


def validate_photometry_times(times, what='photometry', labels=None):
    """Raise :class:`InvalidPhotometryTimes` unless ``times`` (s) are finite, strictly
    increasing and unique; with ``labels`` (each frame's band), one time per 470/415 pair
    is accepted too (:func:`shared_pair_times`)."""
    times = np.asarray(times, dtype=float)
    if times.size == 0:
        raise InvalidPhotometryTimes(f'{what}: no samples')
    n_bad = int((~np.isfinite(times)).sum())
    if n_bad:
        raise InvalidPhotometryTimes(f'{what}: {n_bad} non-finite timestamps')
    steps = np.diff(times)
    if (steps <= 0).any() and not (labels is not None and shared_pair_times(times, labels)):
        raise InvalidPhotometryTimes(
            f'{what}: timestamps not strictly increasing ({int((steps == 0).sum())} repeated, '
            f'{int((steps < 0).sum())} going back)'
        )


def validate_photometry_fibers(table, locations, columns):
    """Check the fibers of a photometry table against its locations table.

    Parameters
    ----------
    table : pandas.DataFrame
        Normalised extracted photometry (``times``, ``valid``, ROI columns ...).
    locations : pandas.DataFrame
        ``photometryROI.locations`` (index: ROI column names; ``brain_region``).
    columns : list of str
        The ROI columns of ``table``.

    Returns
    -------
    (locations, errors)
        The locations of the usable fibers, and one :class:`MissingFiber` (a ROI of the
        locations table with no signal column) or :class:`BadFiber` (all NaN or constant
        over the valid frames) per dropped fiber. Raises the first of them when no fiber
        is left, with all of them as its ``dropped`` attribute.
    """
    if 'brain_region' not in getattr(locations, 'columns', ()):
        raise InvalidPhotometryTable('the locations table has no brain_region column')
    errors, keep = [], []
    valid = table['valid'].to_numpy(bool) if 'valid' in table else np.ones(len(table), bool)
    for roi, region in zip(locations.index.astype(str), locations['brain_region']):
        if roi not in columns:
            errors.append(MissingFiber(f'{roi} ({region}): no column in the signal table'))
            continue
        values = table[roi].to_numpy(float)[valid]
        finite = values[np.isfinite(values)]
        if finite.size == 0 or np.ptp(finite) == 0:
            if not valid.any():
                kind = "all NaN: every frame is flagged invalid (column 'valid')"
            else:
                kind = 'all NaN' if finite.size == 0 else 'constant'
            errors.append(BadFiber(f'{roi} ({region}): signal is {kind}; fiber dropped'))
            continue
        keep.append(roi)
    if not keep:
        if not errors:
            raise InvalidPhotometryTable('the locations table is empty')
        errors[0].dropped = errors  # every dropped fiber, for the caller's log
        raise errors[0]
    return locations.loc[locations.index.astype(str).isin(keep)], errors


def validate_wheel(times, position):
    """Raise :class:`InvalidWheelData` unless wheel times (s) are finite and never decrease
    and match the positions in length."""
    times, position = np.asarray(times, dtype=float), np.asarray(position, dtype=float)
    if times.shape != position.shape:
        raise InvalidWheelData(f'{times.size} timestamps for {position.size} positions')
    if times.size < 2:
        raise InvalidWheelData(f'{times.size} wheel samples')
    if not np.isfinite(times).all():
        raise InvalidWheelData(f'{int((~np.isfinite(times)).sum())} non-finite wheel timestamps')
    n_back = int((np.diff(times) < 0).sum())
    if n_back:
        raise InvalidWheelData(f'wheel timestamps go back {n_back} times (not monotonic)')
