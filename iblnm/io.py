"""ONE connection and session/subject metadata, the same shapes from Alyx or a local cache.

One way to connect
------------------
:func:`get_connection` decides the mode once:

* ``IBLNM_ONE_MODE=remote`` or a ONE configured for an Alyx database (ONE's parameter
  files exist) and no ``IBLNM_ONE_CACHE`` -> remote ``ONE()``;
* otherwise local mode over ``IBLNM_ONE_CACHE``, by default the embedded demo cache,
  generated on first use by :mod:`iblnm.simulate`.

Metadata
--------
The catalog needs records that ONE's cache tables do not carry (subject strain/line/
genotype, session start/end time, users, extended QC). :func:`get_metadata_source`
returns an object with the same methods and the same Alyx REST record shapes in both
modes: :class:`AlyxMetadata` asks Alyx's REST API, :class:`LocalMetadata` reads the
``alyx/`` records that a local cache holds (see :mod:`iblnm.onecache`). Data (trials,
photometry, wheel, locations, experiment description) always come through
``one.load_dataset``/``one.list_datasets``, which behave the same in both modes.
"""

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from one.alf.exceptions import ALFObjectNotFound

from iblnm import config
from iblnm import settings as _settings
from iblnm.integrity import is_local  # noqa: F401 - re-exported (one definition)
from iblnm.onecache import read_alyx_records
from iblnm.validation import exception_logger, fix_region_name, strip_hemisphere_suffix

log = logging.getLogger(__name__)

SESSIONDICT_KEYS = ['users', 'lab', 'end_time']
LOCATIONS_DATASET = 'photometryROI.locations.pqt'
DESCRIPTION_DATASET = '_ibl_experiment.description.yaml'


# ---------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------
def _one_is_configured():
    """True when the user has set ONE up for an Alyx database (ONE's params exist)."""
    try:
        from one.params import get_params_dir
    except ImportError:  # pragma: no cover - very old ONE
        return False
    caches = Path(get_params_dir()) / '.caches'
    try:  # ONE writes an empty CLIENT_MAP before asking for a database: that is not set up
        return bool(json.loads(caches.read_text()).get('CLIENT_MAP'))
    except (OSError, ValueError, AttributeError):
        return False


def get_one_mode(settings=None):
    """'remote' or 'local': the setting (``IBLNM_ONE_MODE``), else 'local' when a cache is
    given (``IBLNM_ONE_CACHE``), else 'remote' when ONE is set up for an Alyx."""
    settings = settings or _settings.current()
    if settings.one_mode:
        return settings.one_mode
    if settings.one_cache:
        return 'local'
    return 'remote' if _one_is_configured() else 'local'


def get_cache_dir(settings=None):
    """Local cache directory: the ``one_cache`` setting (``IBLNM_ONE_CACHE``) or the demo cache."""
    settings = settings or _settings.current()
    return settings.one_cache or settings.path('DEMO_CACHE_DIR')


def ensure_demo_cache(cache_dir=None, preset='demo', seed=0, n_jobs=1):
    """Generate the simulated cache at ``cache_dir`` unless it already holds ONE tables."""
    cache_dir = Path(cache_dir or config.DEMO_CACHE_DIR)
    if (cache_dir / 'sessions.pqt').exists():
        return cache_dir
    from iblnm.simulate import generate

    log.warning(f'No ONE cache at {cache_dir}: generating the {preset!r} dataset (seed {seed}) ...')
    # Built next to its place and renamed when complete: a killed first run leaves only a
    # '.partial' folder, which the next run replaces.
    partial = cache_dir.with_name(cache_dir.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    generate(partial, preset=preset, seed=seed, n_jobs=n_jobs)
    if cache_dir.exists() and not any(cache_dir.iterdir()):
        cache_dir.rmdir()
    os.replace(partial, cache_dir)
    return cache_dir


def get_connection(mode=None, cache_dir=None):
    """Return a ONE instance (remote Alyx or local cache).

    Parameters
    ----------
    mode : {'local', 'remote'}, optional
        Default from :func:`get_one_mode`.
    cache_dir : path, optional
        Local cache directory (default :func:`get_cache_dir`). The demo cache is
        generated when it does not exist yet; any other directory must hold ONE tables.
    """
    from one.api import ONE, One

    mode = mode or get_one_mode()
    if mode == 'remote':
        return ONE()
    cache_dir = Path(cache_dir or get_cache_dir())
    if cache_dir.resolve() == Path(config.DEMO_CACHE_DIR).resolve():
        ensure_demo_cache(cache_dir)
    if not (cache_dir / 'sessions.pqt').exists():
        raise FileNotFoundError(
            f'{cache_dir} holds no ONE cache tables (sessions.pqt); build one with '
            '`python scripts/simulate.py --out DIR` or `python scripts/add_real_sessions.py`'
        )
    return One(cache_dir=str(cache_dir), mode='local')


@functools.lru_cache(maxsize=1)
def _get_default_connection():
    """The default ONE connection of this process (cached)."""
    return get_connection()


# ---------------------------------------------------------------------------
# Metadata sources
# ---------------------------------------------------------------------------
class AlyxMetadata:
    """Session and subject records from Alyx's REST API."""

    def __init__(self, one, no_cache=False):
        self.one = one
        self.no_cache = no_cache  # bypass ONE's 5-minute REST cache (e.g. for --redownload)

    def _rest(self, *args, **kwargs):
        return self.one.alyx.rest(*args, no_cache=self.no_cache, **kwargs)

    def list_sessions(self, project=config.PROJECT_NAME):
        """Alyx ``sessions/list`` records of a project (list of dicts).

        Every page of Alyx's paginated answer is fetched (a page that cannot be read
        raises: an incomplete listing is never returned). ``project=None`` lists all
        sessions: no filter is sent, as ONE would send the string ``'None'``.
        """
        filters = {} if project is None else {'project': project}
        return list(self._rest('sessions', 'list', **filters))

    def read_session(self, eid):
        """Alyx ``sessions/read`` record (dict)."""
        return self._rest('sessions', 'read', id=str(eid))

    def list_subjects(self, nickname=None):
        """Alyx ``subjects/list`` records (list of dicts)."""
        kwargs = {'nickname': nickname} if nickname else {}
        return list(self._rest('subjects', 'list', **kwargs))

    def fibers(self, subjects=None):
        """Fiber insertions of ``subjects`` from Alyx (the fibers table, X-ml_um > 0 = left).

        Alyx ``chronic-insertions`` of each subject (named by the targeted region, as the
        original's ``fibers.csv``) and their ``trajectories`` (iblatlas coordinates, x right
        positive), converted by :func:`fibers_from_alyx`. ``subjects`` None: every chronic
        insertion of the database. Insertions without a trajectory give no row; a subject's
        non-fiber insertions (named after a probe, not a region) match no recording.
        """
        filters = [{}] if subjects is None else [{'subject': s} for s in sorted(set(subjects))]
        insertions = [ins for f in filters for ins in self._rest('chronic-insertions', 'list', **f)]
        trajectories = [
            t
            for ins in insertions
            for t in self._rest('trajectories', 'list', chronic_insertion=str(ins['id']))
        ]
        return fibers_from_alyx(insertions, trajectories)


class LocalMetadata:
    """The same records, read from the ``alyx/`` folder of a local cache."""

    def __init__(self, one, no_cache=False):
        self.one = one
        self.cache_dir = Path(one.cache_dir)

    @functools.cached_property
    def _sessions(self):
        return read_alyx_records(self.cache_dir, 'sessions').set_index('id', drop=False)

    @functools.cached_property
    def _subjects(self):
        return read_alyx_records(self.cache_dir, 'subjects')

    def _one_sessions(self):
        """Sessions of ONE's table, for caches without Alyx records (e.g. real data)."""
        table = self.one._cache['sessions'].reset_index()
        table['id'] = table['id'].astype(str)
        return table

    def list_sessions(self, project=config.PROJECT_NAME):
        """Session records of a project, like Alyx ``sessions/list``."""
        records = []
        for _, row in self._one_sessions().iterrows():
            rec = self._record(row['id'], row)
            if project is None or project in rec['projects']:
                records.append(
                    {
                        k: rec[k]
                        for k in (
                            'id',
                            'subject',
                            'start_time',
                            'number',
                            'lab',
                            'projects',
                            'task_protocol',
                        )
                    }
                )
        return records

    def _record(self, eid, one_row=None):
        if eid in self._sessions.index:
            rec = self._sessions.loc[eid].to_dict()
            rec['projects'] = list(rec.get('projects') if rec.get('projects') is not None else [])
            rec['users'] = list(rec.get('users') if rec.get('users') is not None else [])
            rec['extended_qc'] = _json_or_none(rec.get('extended_qc'))
            rec['json'] = _json_or_none(rec.get('json'))
            return rec
        if one_row is None:
            one_row = self._one_sessions().set_index('id', drop=False).loc[eid]
        projects = [p for p in str(one_row['projects'] or '').split(',') if p]
        return {
            'id': eid,
            'subject': one_row['subject'],
            'lab': one_row['lab'],
            'start_time': pd.Timestamp(one_row['date']).isoformat(),
            'end_time': None,
            'number': int(one_row['number']),
            'task_protocol': one_row['task_protocol'] or None,
            'projects': projects,
            'users': [],
            'qc': 'NOT_SET',
            'extended_qc': None,
            'json': None,
        }

    def read_session(self, eid):
        """Session record like Alyx ``sessions/read`` (with ``data_dataset_session_related``)."""
        rec = self._record(str(eid))
        rec['data_dataset_session_related'] = [
            {'name': Path(p).name, 'collection': str(Path(p).parent).replace('.', '') or None}
            for p in self.one.list_datasets(str(eid))
        ]
        return rec

    def list_subjects(self, nickname=None):
        """Subject records like Alyx ``subjects/list``."""
        subjects = self._subjects
        if nickname is not None:
            subjects = subjects[subjects['nickname'] == nickname]
        records = subjects.to_dict('records')
        for rec in records:
            for key in ('genotype', 'projects'):
                rec[key] = list(rec[key]) if rec.get(key) is not None else []
        return records

    def fibers(self, subjects=None):
        """Fiber insertions recorded in the cache (``alyx/fibers.pqt``, X-ml_um > 0 = left),
        of ``subjects`` (None: all)."""
        path = self.cache_dir / config.ALYX_RECORDS_DIRNAME / 'fibers.pqt'
        if not path.exists():
            return pd.DataFrame(columns=['subject', 'targeted_region', 'X-ml_um'])
        table = pd.read_parquet(path)
        return table if subjects is None else table[table['subject'].isin(list(subjects))]


def _json_or_none(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value


def get_metadata_source(one, no_cache=False):
    """:class:`LocalMetadata` for a local ONE, :class:`AlyxMetadata` otherwise.

    ``no_cache`` makes the Alyx source bypass ONE's REST cache (fresh answers).
    """
    return LocalMetadata(one) if is_local(one) else AlyxMetadata(one, no_cache=no_cache)


FIBER_COLUMNS = ['subject', 'fiber', 'targeted_region', 'X-ml_um', 'Y-ap_um', 'Z-dv_um']
# Alyx trajectory provenances, least to most refined (Alyx's own ordering)
TRAJECTORY_PROVENANCE = {
    'Planned': 10,
    'Micro-manipulator': 30,
    'Histology track': 50,
    'Ephys aligned histology track': 70,
}


def fibers_from_alyx(insertions, trajectories):
    """The fibers table from Alyx chronic-insertion and trajectory records.

    Coordinate conventions (µm from bregma):

    - Alyx trajectories (``/trajectories``: ``x``, ``y``, ``z``) follow IBL's atlas
      (iblatlas): ``x`` = ML with **right positive**, ``y`` = AP (anterior positive),
      ``z`` = DV (dorsal positive, negative below the brain surface at bregma).
    - The fibers table (``metadata/fibers.csv``, the original's file; the simulator's
      ``alyx/fibers.pqt``) has ``X-ml_um`` **> 0 = left** (:func:`iblnm.validation.fiber_side`),
      ``Y-ap_um`` and ``Z-dv_um`` as the atlas.

    So ``X-ml_um = -x``; AP and DV are copied.

    Parameters
    ----------
    insertions : list of dict
        ``chronic-insertions`` records (``id``, ``name``, ``subject``); ``name`` is the
        targeted region, a hemisphere suffix ('VTA-l') and known misspellings are removed.
    trajectories : list of dict
        ``trajectories`` records with ``chronic_insertion`` (an insertion's id), ``x``, ``y``,
        ``z`` and ``provenance``; trajectories of unknown insertions, or without ``x``, are
        skipped. Of an insertion's trajectories the most refined is used (histology over
        micro-manipulator over planned, :data:`TRAJECTORY_PROVENANCE`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FIBER_COLUMNS`, one row per insertion with a trajectory.
    """
    by_id = {str(ins['id']): ins for ins in insertions}
    best = {}  # insertion id -> its most refined trajectory
    for trajectory in trajectories:
        key = str(trajectory.get('chronic_insertion'))
        if key not in by_id or trajectory.get('x') is None:
            continue
        rank = TRAJECTORY_PROVENANCE.get(trajectory.get('provenance'), -1)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, trajectory)
    rows = []
    for key, (_, trajectory) in best.items():
        insertion = by_id[key]
        region = strip_hemisphere_suffix(fix_region_name(insertion['name']))
        rows.append(
            {
                'subject': insertion['subject'],
                'fiber': insertion['name'],
                'targeted_region': region,
                'X-ml_um': -float(trajectory['x']),
                'Y-ap_um': trajectory.get('y'),
                'Z-dv_um': trajectory.get('z'),
            }
        )
    return pd.DataFrame(rows, columns=FIBER_COLUMNS)


def get_fiber_table(one=None, fibers_fpath=config.FIBERS_FPATH, subjects=None, metadata=None):
    """Fiber insertions: the tracked ``metadata/fibers.csv`` plus the database's records.

    The database's (``metadata`` default :func:`get_metadata_source` of ``one``): the local
    cache's ``alyx/fibers.pqt``, or Alyx's chronic insertions and trajectories
    (:meth:`AlyxMetadata.fibers`, converted to the fibers-table sign), of ``subjects``
    (None: all).
    """
    frames = []
    if Path(fibers_fpath).exists():
        frames.append(pd.read_csv(fibers_fpath))
    if metadata is None and one is not None:
        metadata = get_metadata_source(one)
    if metadata is not None:
        frames.append(metadata.fibers(subjects))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=['subject', 'targeted_region', 'X-ml_um'])
    # a fiber in both sources is one insertion (else its coordinates would be ambiguous)
    return pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)


# ---------------------------------------------------------------------------
# Per-session getters (decorated: pass exlog=[] to log instead of raise)
# ---------------------------------------------------------------------------
@exception_logger
def get_subject_info(session, one=None, metadata=None):
    """Copy strain, line and genotype onto the session and derive ``NM``.

    ``NM`` = ``STRAIN2NM[strain]``, else ``LINE2NM[line]``, else None. Anything but
    exactly one subject record raises ValueError.
    """
    metadata = metadata or get_metadata_source(one or _get_default_connection())
    records = metadata.list_subjects(nickname=session['subject'])
    if len(records) != 1:
        raise ValueError(f'{len(records)} subject records for {session["subject"]!r}')
    rec = records[0]
    session['strain'] = rec.get('strain')
    session['line'] = rec.get('line')
    genotype = rec.get('genotype')
    if isinstance(genotype, list):  # Alyx may give strings or records with a name
        genotype = ', '.join(str(g.get('name', g) if isinstance(g, dict) else g) for g in genotype)
    session['genotype'] = genotype
    session['NM'] = config.STRAIN2NM.get(rec.get('strain')) or config.LINE2NM.get(rec.get('line'))
    return session


@exception_logger
def get_session_dict(session, one=None, metadata=None):
    """Copy users, lab and end time from the session record onto the session."""
    metadata = metadata or get_metadata_source(one or _get_default_connection())
    rec = metadata.read_session(session['eid'])
    for key in SESSIONDICT_KEYS:
        if key in rec:
            session[key] = rec[key]
    session['_datasets_from_session_dict'] = [
        d['name'] for d in rec.get('data_dataset_session_related') or []
    ]
    return session


def parse_location(location):
    """Split a fiber location ``'VTA-r'`` into (``'VTA-r'``, hemisphere ``'r'``).

    The hemisphere is '' when the location carries no ``-l``/``-r`` suffix. Known
    misspellings are corrected first (``config.REGION_NAME_FIXES``: ``'DRN-l'`` -> ``'DR-l'``).
    """
    location = fix_region_name(location)
    bare = strip_hemisphere_suffix(location)
    return location, (location[-1] if bare != location else '')


def _regions_from_locations(one, eid):
    """{ROI column: location} of the locations table (its index is the ROI column)."""
    from iblnm.loaders import roi_indexed

    table = roi_indexed(one.load_dataset(eid, LOCATIONS_DATASET))
    return {str(roi): str(r) for roi, r in zip(table.index, table['brain_region'])}


def _regions_from_description(one, eid):
    """{ROI column: location} of the experiment description's fibers."""
    description = one.load_dataset(eid, DESCRIPTION_DATASET)
    fibers = (description or {}).get('devices', {}).get('neurophotometrics', {}).get('fibers')
    return {str(roi): str(f['location']) for roi, f in (fibers or {}).items()}


@exception_logger
def get_brain_region(session, one=None):
    """Set ``brain_region`` (bare names) and ``hemisphere`` from the session's datasets.

    Sources, in order: ``photometryROI.locations.pqt`` (row order = signal columns),
    then the experiment description's fiber locations. A source falls through when it
    is absent or empty; when neither names a region, ALFObjectNotFound is raised.
    Hemispheres come from the ``-l``/``-r`` suffix ('' when there is none). ``roi`` is set
    to the fibers' ROI column names (the recordings table's ``roi``; not a catalog column).
    """
    one = one or _get_default_connection()
    eid = str(session['eid'])
    for source in (_regions_from_locations, _regions_from_description):
        try:
            locations = source(one, eid)
        except ALFObjectNotFound:
            continue
        if locations:
            parsed = [parse_location(loc) for loc in locations.values()]
            session['roi'] = list(locations)
            session['brain_region'] = [strip_hemisphere_suffix(loc) for loc, _ in parsed]
            session['hemisphere'] = [hemi for _, hemi in parsed]
            return session
    raise ALFObjectNotFound(f'brain_region: neither {LOCATIONS_DATASET} nor {DESCRIPTION_DATASET}')


@exception_logger
def get_datasets(session, one=None):
    """Set ``datasets`` to the relative paths ONE lists for the session."""
    one = one or _get_default_connection()
    session['datasets'] = [str(d) for d in one.list_datasets(str(session['eid']))]
    return session


def _qc_outcome(value):
    from one.alf.spec import QC

    if isinstance(value, bool):
        return 'PASS' if value else 'FAIL'
    if isinstance(value, int | np.integer):
        try:
            return QC(int(value)).name
        except ValueError:
            return value
    if value is None:
        return 'NOT_SET'
    if isinstance(value, float | str):
        return value
    raise ValueError(f'cannot interpret QC value {value!r}')


def normalise_qc_key(key):
    """``'_videoLeft_focus'`` -> ``'qc_videoLeft_focus'``; a trailing ``_qc`` is removed."""
    key = key.removesuffix('_qc')
    key = key if key.startswith('_') else f'_{key}'
    return f'qc{key}'


@exception_logger
def get_extended_qc(session, one=None, metadata=None):
    """Add ``qc_session`` and one ``qc_*`` column per extended-QC key of the session."""
    metadata = metadata or get_metadata_source(one or _get_default_connection())
    rec = metadata.read_session(session['eid'])
    session['qc_session'] = rec.get('qc')
    for key, value in (rec.get('extended_qc') or {}).items():
        column = normalise_qc_key(key)
        if isinstance(value, list):
            session[column.removeprefix('qc_')] = value[1:]
            value = value[0] if value else None
        session[column] = _qc_outcome(value)
    return session
