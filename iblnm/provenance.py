"""Where outputs came from: the data source, the iblnm version and a hash of the parameters.

Every stage table (parquet key-value metadata, key ``iblnm``) and every session HDF5 file
(root attributes) carries the same record::

    {'iblnm_version': '0.2.0', 'schema_version': 4,
     'source': 'demo' | 'local' | 'alyx', 'source_location': path or base URL,
     'params_hash': 'sha256 of the processing parameters (first 16 hex digits)',
     'scoring_hash': 'sha256 of the QC verdict rules'}

An output root remembers the record and the parameters of its first run
(``metadata/provenance.json``). A later run on another source or with other parameters
stops with :class:`iblnm.validation.ProvenanceMismatch` before writing anything, so simulated and real
sessions, or outputs of two parameter sets, never mix; ``--redo`` (``allow_change=True``)
adopts the new record and reprocesses. Other verdict rules alone do not stop it: verdicts
are re-scored from the stored metrics wherever they are read.
"""

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from iblnm import config
from iblnm import validation as v

log = logging.getLogger(__name__)
# 1: the original layout; 2: + provenance attributes; 3: ragged wheel velocity;
# 4: [-1, 3) s float32 responses and event kernels (issue 13)
SCHEMA_VERSION = 4
METADATA_KEY = 'iblnm'
# config constants whose values change what the stages compute (prefix match, so new
# thresholds and parameter sets are covered without listing them here)
PARAM_PREFIXES = (
    'PREPROCESSING',
    'QC_',
    'RESPONSE',
    'BASELINE',
    'TRIAL_BASELINE',
    'KERNEL',
    'TARGET_FS',
    'WHEEL_FS',
    'MIN_',
    'PHOTOMETRY_',
    'EARLY_',
    'N_UNIQUE',
    'ARTEFACT',
    'FLOOR',
    'DARK',
    'VERDICT',
    'EVENT',
    'KERNEL',
    'ANALYSIS_QC',
    'REQUIRED_',
    'VIDEO_',
    'LENGTH_MISMATCH',
)
_CURRENT = {}  # the record of the run in progress (set by :func:`start_run`)
_BANNER_SHOWN = []


def _jsonable(value):
    if isinstance(value, dict):
        return {
            str(k): _jsonable(val) for k, val in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, list | tuple):
        return [_jsonable(val) for val in value]
    if isinstance(value, set | frozenset):
        return sorted(_jsonable(val) for val in value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def processing_parameters():
    """The config constants that change what the stages compute, as a JSON-able dict
    (``QC_VERDICT_RULES``: the rules in force, with the settings' overrides)."""
    from iblnm.signal.verdict import active_rules

    params = {
        name: _jsonable(getattr(config, name))
        for name in sorted(vars(config))
        if name.isupper()
        and name.startswith(PARAM_PREFIXES)
        and not name.endswith(('_DIR', 'FPATH'))
    }
    params['QC_VERDICT_RULES'] = _jsonable(active_rules())
    return params


# config constants that only score metrics already computed (the QC verdict rules): every
# reader re-scores the verdicts from the stored metrics with the rules in force
# (:func:`iblnm.signal.verdict.recording_verdicts`, the photometry stage's table), so a change
# to them needs no reprocessing; they have a hash of their own (``scoring_hash``)
SCORING_PARAMETERS = ('QC_VERDICTS', 'QC_VERDICT_EXCLUDE', 'QC_VERDICT_RULES')


def _hash(params):
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``params``."""
    text = json.dumps(_jsonable(params), sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def params_hash(params=None):
    """Hash of the processing parameters (``params``: :func:`processing_parameters`) but the
    :data:`SCORING_PARAMETERS`: equal hashes, equal computed outputs."""
    params = processing_parameters() if params is None else params
    return _hash({k: val for k, val in params.items() if k not in SCORING_PARAMETERS})


def scoring_hash(params=None):
    """Hash of the :data:`SCORING_PARAMETERS` (the QC verdict rules) of ``params``."""
    params = processing_parameters() if params is None else params
    return _hash({k: params[k] for k in SCORING_PARAMETERS if k in params})


def _legacy_hashes(params):
    """The ``params_hash`` a record written before ``scoring_hash`` existed would hold for
    ``params``: the hash of every parameter, with the rules in force or the default rules (a
    settings file's ``[qc_rules]`` did not exist then)."""
    defaults = {**params, 'QC_VERDICT_RULES': _jsonable(config.QC_VERDICT_RULES)}
    return {_hash(params), _hash(defaults)}


def changed_parameters(before, after):
    """Names of the parameters whose values differ between two parameter dicts (sorted)."""
    before, after = _jsonable(before), _jsonable(after)
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def data_source(one):
    """``(kind, location)`` of a ONE connection.

    ``'alyx'`` with its base URL for a remote ONE; for a local cache ``'demo'`` when the
    cache was written by iblnm's simulator (it holds ``ground_truth/manifest.json``), else
    ``'local'``; the location is the resolved cache path.
    """
    from iblnm.io import is_local

    if not is_local(one):
        return 'alyx', str(getattr(one.alyx, 'base_url', 'unknown'))
    cache = Path(getattr(one, 'cache_dir', '') or '.').resolve()
    simulated = (cache / config.GROUND_TRUTH_DIRNAME / 'manifest.json').exists()
    return ('demo' if simulated else 'local'), str(cache)


def make_record(one, params=None):
    """The provenance record of a run on ``one`` with the current parameters (or ``params``,
    :func:`processing_parameters` already computed)."""
    from iblnm import __version__

    kind, location = data_source(one)
    params = processing_parameters() if params is None else params
    return {
        'iblnm_version': __version__,
        'schema_version': SCHEMA_VERSION,
        'source': kind,
        'source_location': location,
        'params_hash': params_hash(params),
        'scoring_hash': scoring_hash(params),
    }


def record_fpath(metadata_dir):
    """``{metadata_dir}/provenance.json``: the record of an output root's first run."""
    return Path(metadata_dir) / 'provenance.json'


def check_output_root(record, metadata_dir, allow_change=False, params=None):
    """Stop when an output root already holds outputs of another source or parameter set.

    Parameters
    ----------
    record : dict
        From :func:`make_record`.
    metadata_dir : path
        The output root's ``metadata/`` folder (where the catalog lives). The first run
        writes ``provenance.json`` there (the record and the parameters); with
        ``allow_change`` (``--redo``) a differing record replaces it.
    params : dict, optional
        The run's parameters (default :func:`processing_parameters`): kept in
        ``provenance.json`` so that a later mismatch names the parameters that changed.

    A change of the QC verdict rules alone (``scoring_hash``) does not stop the run: the
    verdicts are re-scored from the stored metrics; the new record is adopted with a warning.
    A record written before ``scoring_hash`` existed (its ``params_hash`` covered the rules
    too) is the same parameter set when that older hash of the current parameters equals it.

    Raises
    ------
    iblnm.validation.ProvenanceMismatch
        Naming what differs (and which parameters, when the root kept them) and how to
        proceed.
    """
    params = processing_parameters() if params is None else params
    fpath = record_fpath(metadata_dir)
    held = json.loads(fpath.read_text()) if fpath.exists() else None
    if held is not None:
        same_params = held.get('params_hash') == record.get('params_hash') or (
            'scoring_hash' not in held and held.get('params_hash') in _legacy_hashes(params)
        )
        differ = [k for k in ('source', 'source_location') if held.get(k) != record.get(k)]
        differ += [] if same_params else ['params_hash']
        if not differ and held.get('scoring_hash') == record.get('scoring_hash'):
            return held
        if differ and not allow_change:
            detail = '; '.join(f'{k}: {held.get(k)!r} there, {record.get(k)!r} now' for k in differ)
            if 'params_hash' in differ and 'parameters' in held:
                names = changed_parameters(held['parameters'], params)
                detail += '; parameters changed: ' + ', '.join(names)
            raise v.ProvenanceMismatch(
                f'{fpath.parent} holds outputs of another run ({detail}). Use another output '
                'root (IBLNM_ROOT), or --redo to reprocess everything with this source and '
                'these parameters.'
            )
        if not differ and 'scoring_hash' in held:
            log.warning(
                'The QC verdict rules changed since the last run in %s: the verdicts are '
                're-scored from the stored metrics (no reprocessing needed).',
                fpath.parent,
            )
    from iblnm.util import atomic_write

    text = json.dumps({**record, 'parameters': _jsonable(params)}, indent=1)
    atomic_write(fpath, lambda tmp: Path(tmp).write_text(text))
    return record


def start_run(one, metadata_dir=None, allow_change=False, banner=True):
    """Begin a stage: make the record, check the output root, remember it for the writers.

    ``metadata_dir`` None (a stage called on an in-memory catalog) skips the root check.
    The simulated-data banner is printed once per process.
    """
    params = processing_parameters()
    record = make_record(one, params)
    if metadata_dir is not None:
        check_output_root(record, metadata_dir, allow_change=allow_change, params=params)
    _set_current(record)
    if banner and record['source'] == 'demo' and not _BANNER_SHOWN:
        _BANNER_SHOWN.append(True)
        log.warning(
            '*** DATA SOURCE: the SIMULATED demo dataset '
            f'({record["source_location"]}); set IBLNM_ONE_CACHE to a real ONE cache or '
            'configure ONE for Alyx to process real data ***'
        )
    return record


def current():
    """The record of the run in progress ({} outside a run)."""
    return dict(_CURRENT)


def _set_current(record):
    _CURRENT.clear()
    _CURRENT.update(record)


@contextlib.contextmanager
def recording(record):
    """``record`` is the run's record (:func:`current`) inside the block; the previous one
    after it (a worker running a job of a run it was not started by)."""
    before = current()
    _set_current(record)
    try:
        yield record
    finally:
        _set_current(before)


def read_table_record(fpath):
    """The provenance record stored in a parquet file's metadata ({} when absent)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(fpath).metadata or {}
    raw = metadata.get(METADATA_KEY.encode())
    return json.loads(raw) if raw else {}
