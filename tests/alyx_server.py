"""A small Alyx on loopback, serving the records of a local ONE cache over HTTP.

It answers the REST endpoints the catalog stage reaches through the real ONE client
(``one.api.OneAlyx`` / ``one.webclient.AlyxClient``), with Alyx's response shapes:

========================  =================================================================
``POST /auth-token``      form ``username``/``password`` -> ``{"token": ...}`` (400 otherwise)
``GET /api/schema``       a minimal OpenAPI 3 document listing the endpoints below
``GET /cache/info``       404: no cache tables, so ONE stays in remote mode
``GET /sessions``         SessionList records; filters ``project``, ``projects``, ``subject``,
                          ``lab``, ``id``, ``django`` (``pk``/``pk__in``)
``GET /sessions/<eid>``   SessionDetail with ``data_dataset_session_related``
``GET /subjects``         SubjectList records; filters ``nickname``, ``lab``, ``project``
``GET /datasets``         Dataset records with ``file_records``; filter ``session``
``GET /datasets/<id>``    one Dataset record
``GET /chronic-insertions`` ChronicInsertionList records of the cache's ``alyx/fibers.pqt``
                          (named by the targeted region); filters ``subject``, ``id``
``GET /trajectories``     TrajectoryEstimate records of those insertions in IBL's atlas
                          convention (``x`` = ML, right positive: ``x = -X-ml_um``); filter
                          ``chronic_insertion``
``GET /data-repository/`` 404 (no AWS repository: ONE falls back to HTTP downloads)
``GET /files/<path>``     dataset files, named ``<name>.<dataset uuid>.<ext>`` as on the
                          IBL file server; ``HTTP_DATA_SERVER`` is ``<base_url>/files``
========================  =================================================================

Lists are paginated like Alyx (``limit``/``offset``; ``{count, next, previous, results}``).
Every REST request but ``/auth-token`` must carry ``Authorization: Token <token>``
(401 without it, 403 ``Invalid token.`` with a wrong one); file downloads need none, as
the IBL file server uses its own HTTP credentials.

Faults are injected per path (optionally per query parameters): :meth:`AlyxServer.fail`
(HTTP error status, optionally echoing the request headers as a Django debug page does),
:meth:`AlyxServer.truncate` (a 200 answer whose JSON body is cut) and
:meth:`AlyxServer.stall` (no answer for a while, then the connection is dropped, as a
proxy does on a timeout). Every request is recorded in :attr:`AlyxServer.requests`.

Only ``127.0.0.1`` is ever bound.
"""

import dataclasses
import functools
import hashlib
import http
import http.server
import json
import math
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

HOST = '127.0.0.1'
DEFAULT_PAGE_SIZE = 2  # small, so that the catalog's listings are paginated
NOT_FOUND = {'detail': 'Not found.'}

# Query parameters declared in the schema (ONE warns about any other filter).
LIST_PARAMETERS = {
    'sessions': [
        'django',
        'id',
        'lab',
        'limit',
        'number',
        'offset',
        'project',
        'projects',
        'subject',
        'task_protocol',
        'users',
    ],
    'subjects': [
        'django',
        'id',
        'lab',
        'limit',
        'line',
        'nickname',
        'offset',
        'project',
        'projects',
        'strain',
    ],
    'datasets': [
        'collection',
        'dataset_type',
        'django',
        'exists',
        'id',
        'limit',
        'name',
        'offset',
        'session',
        'subject',
    ],
    'chronic-insertions': ['id', 'lab', 'limit', 'model', 'name', 'offset', 'subject'],
    'trajectories': ['chronic_insertion', 'id', 'limit', 'offset', 'provenance', 'subject'],
}
DETAIL_PATHS = {
    'sessions': '/sessions/{id}',
    'subjects': '/subjects/{nickname}',
    'datasets': '/datasets/{id}',
    'data-repository': '/data-repository/{name}',
}


# ---------------------------------------------------------------------------
# Records: the cache's tables in Alyx's shapes
# ---------------------------------------------------------------------------
def _jsonable(value):
    """Plain JSON types from pandas/numpy values (NaN and NA -> None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _json_field(value):
    """An Alyx JSON field stored as a JSON string in the cache (or None)."""
    value = _jsonable(value)
    return json.loads(value) if isinstance(value, str) else value


def _read_table(path, index=None):
    if not path.exists():
        return pd.DataFrame()
    table = pd.read_parquet(path).reset_index()
    return table.set_index(index, drop=False) if index else table


def _dataset_type(name):
    """Alyx dataset type of a file name: ``_ibl_trials.table.pqt`` -> ``trials.table``."""
    stem = '.'.join(name.split('.')[:-1])
    return re.sub(r'^_[^_]+_', '', stem)


@dataclasses.dataclass
class DatasetFile:
    """One dataset of the served cache."""

    id: str
    eid: str
    session_path: str
    rel_path: str
    path: Path
    qc: str
    default_revision: bool

    @property
    def name(self):
        return Path(self.rel_path).name

    @property
    def collection(self):
        parent = Path(self.rel_path).parent.as_posix()
        return None if parent == '.' else parent

    @property
    def url_path(self):
        """Path of the file on the server, with the dataset uuid before the extension."""
        stem, _, ext = self.name.rpartition('.')
        parts = [self.session_path, self.collection, f'{stem}.{self.id}.{ext}']
        return '/'.join(p for p in parts if p)

    @functools.cached_property
    def md5(self):
        return hashlib.md5(self.path.read_bytes()).hexdigest()

    @property
    def size(self):
        return self.path.stat().st_size


class CacheRecords:
    """The sessions, subjects and datasets of a local ONE cache, as Alyx serves them.

    Parameters
    ----------
    cache_dir : path
        A local cache: ONE's ``sessions.pqt``/``datasets.pqt`` and the ``alyx/`` records
        (see :mod:`iblnm.onecache`).
    """

    def __init__(self, cache_dir):
        self.cache_dir = Path(cache_dir)
        self.one_sessions = _read_table(self.cache_dir / 'sessions.pqt', 'id')
        self.one_sessions['id'] = self.one_sessions['id'].astype(str)
        self.one_sessions.index = self.one_sessions['id']
        self.alyx_sessions = _read_table(self.cache_dir / 'alyx' / 'sessions.pqt', 'id')
        self.alyx_subjects = _read_table(self.cache_dir / 'alyx' / 'subjects.pqt')
        self.datasets = self._datasets()

    def _datasets(self):
        table = _read_table(self.cache_dir / 'datasets.pqt')
        files = {}
        for rec in table.to_dict('records'):
            eid = str(rec['eid'])
            session_path = self.session_path(eid)
            files[str(rec['id'])] = DatasetFile(
                id=str(rec['id']),
                eid=eid,
                session_path=session_path,
                rel_path=rec['rel_path'],
                path=self.cache_dir / session_path / rec['rel_path'],
                qc=str(rec.get('qc') or 'NOT_SET'),
                default_revision=bool(rec.get('default_revision', True)),
            )
        return files

    def session_path(self, eid):
        """``lab/Subjects/subject/YYYY-MM-DD/NNN`` of a session."""
        row = self.one_sessions.loc[eid]
        date = pd.Timestamp(row['date']).date().isoformat()
        return f'{row["lab"]}/Subjects/{row["subject"]}/{date}/{int(row["number"]):03d}'

    def eids(self):
        """Eids of the cache, sorted by start time (as Alyx orders sessions)."""
        return sorted(self.one_sessions.index, key=lambda e: self.session(e)['start_time'])

    def session(self, eid):
        """The full session record (Alyx detail fields, without datasets)."""
        if eid in self.alyx_sessions.index:
            rec = _jsonable(self.alyx_sessions.loc[eid].to_dict())
            rec['projects'] = rec.get('projects') or []
            rec['users'] = rec.get('users') or []
            rec['extended_qc'] = _json_field(rec.get('extended_qc'))
            rec['json'] = _json_field(rec.get('json'))
            return rec
        row = _jsonable(self.one_sessions.loc[eid].to_dict())
        return {
            'id': eid,
            'subject': row['subject'],
            'lab': row['lab'],
            'start_time': pd.Timestamp(row['date']).isoformat(),
            'end_time': None,
            'number': row['number'],
            'task_protocol': row['task_protocol'] or '',
            'projects': [p for p in (row['projects'] or '').split(',') if p],
            'users': [],
            'qc': 'NOT_SET',
            'extended_qc': None,
            'json': None,
        }

    def subjects(self):
        """Subject records (dicts)."""
        records = [_jsonable(r) for r in self.alyx_subjects.to_dict('records')]
        for rec in records:
            rec['genotype'] = rec.get('genotype') or []
            rec['projects'] = rec.get('projects') or []
        return records

    def fibers(self):
        """``(chronic insertion, trajectory)`` records of the cache's ``alyx/fibers.pqt``.

        The fibers table has ``X-ml_um`` > 0 = left; Alyx trajectories follow IBL's atlas
        (x right positive), so ``x = -X-ml_um`` (AP and DV as they are).
        """
        path = self.cache_dir / 'alyx' / 'fibers.pqt'
        if not path.exists():
            return []
        labs = {s['nickname']: s.get('lab') for s in self.subjects()}
        out = []
        for rec in _read_table(path).to_dict('records'):
            rec = _jsonable(rec)
            key = f'{rec["subject"]}/{rec["fiber"]}'
            insertion = {
                'id': str(uuid.uuid5(uuid.NAMESPACE_URL, f'chronic-insertion/{key}')),
                'name': rec['targeted_region'],
                'subject': rec['subject'],
                'lab': labs.get(rec['subject']),
                'model': 'Fiber',
                'start_time': None,
                'serial': '',
                'json': None,
                'probe_insertion': None,
            }
            trajectory = {
                'id': str(uuid.uuid5(uuid.NAMESPACE_URL, f'trajectory/{key}')),
                'probe_insertion': None,
                'chronic_insertion': insertion['id'],
                'x': -rec['X-ml_um'],
                'y': rec.get('Y-ap_um'),
                'z': rec.get('Z-dv_um'),
                'depth': None,
                'theta': None,
                'phi': None,
                'roll': None,
                'provenance': 'Histology track',
                'session': None,
                'probe_name': rec['fiber'],
                'coordinate_system': 'IBL-Allen',
                'datetime': None,
                'json': None,
            }
            out.append((insertion, trajectory))
        return out

    def session_datasets(self, eid):
        """Datasets of a session, sorted by relative path."""
        dsets = [d for d in self.datasets.values() if d.eid == eid]
        return sorted(dsets, key=lambda d: d.rel_path)

    def file_by_url_path(self, url_path):
        """The dataset served at ``/files/<url_path>`` (None when there is none)."""
        match = re.search(
            r'\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.', url_path
        )
        dset = self.datasets.get(match.group(1)) if match else None
        return dset if dset is not None and dset.url_path == url_path else None


# ---------------------------------------------------------------------------
# Alyx serializers
# ---------------------------------------------------------------------------
def session_list_record(rec):
    """SessionList fields of a session record."""
    keys = ('id', 'subject', 'start_time', 'number', 'lab', 'projects', 'task_protocol')
    return {k: rec.get(k) for k in keys}


def session_dataset_record(dset, base_url):
    """One ``data_dataset_session_related`` entry (SessionDatasets)."""
    return {
        'id': dset.id,
        'name': dset.name,
        'dataset_type': _dataset_type(dset.name),
        'data_url': f'{base_url}/files/{dset.url_path}',
        'url': f'{base_url}/datasets/{dset.id}',
        'file_size': dset.size,
        'hash': dset.md5,
        'version': None,
        'collection': dset.collection,
        'revision': None,
        'default_revision': str(dset.default_revision),
        'qc': dset.qc,
    }


def session_detail_record(rec, datasets, base_url):
    """SessionDetail of a session record."""
    return {
        'subject': rec['subject'],
        'users': rec['users'],
        'location': None,
        'procedures': [],
        'lab': rec['lab'],
        'projects': rec['projects'],
        'type': 'Experiment',
        'task_protocol': rec['task_protocol'],
        'number': rec['number'],
        'start_time': rec['start_time'],
        'end_time': rec['end_time'],
        'narrative': '',
        'parent_session': None,
        'n_correct_trials': None,
        'n_trials': None,
        'url': f'{base_url}/sessions/{rec["id"]}',
        'extended_qc': rec['extended_qc'],
        'qc': rec['qc'],
        'wateradmin_session_related': [],
        'data_dataset_session_related': [session_dataset_record(d, base_url) for d in datasets],
        'auto_datetime': rec['start_time'],
        'id': rec['id'],
        'json': rec['json'],
        'probe_insertion': [],
        'field_of_view': [],
        'notes': [],
    }


def subject_list_record(rec, base_url):
    """SubjectList fields of a subject record."""
    return {
        'nickname': rec['nickname'],
        'url': f'{base_url}/subjects/{rec["nickname"]}',
        'id': rec['id'],
        'responsible_user': rec.get('responsible_user'),
        'birth_date': rec.get('birth_date'),
        'age_weeks': None,
        'death_date': None,
        'species': 'Mus musculus',
        'sex': rec.get('sex') or 'U',
        'litter': None,
        'strain': rec.get('strain'),
        'source': None,
        'line': rec.get('line'),
        'projects': rec['projects'],
        'session_projects': rec['projects'],
        'lab': rec['lab'],
        'genotype': rec['genotype'],
        'description': rec.get('description') or '',
        'alive': True,
        'reference_weight': None,
        'last_water_restriction': None,
        'expected_water': None,
        'remaining_water': None,
        'json': None,
    }


def dataset_record(dset, session, base_url):
    """Dataset record (``/datasets``) with its file record on the HTTP server."""
    relative_path = f'{dset.session_path.split("/Subjects/", 1)[1]}/{dset.rel_path}'
    return {
        'url': f'{base_url}/datasets/{dset.id}',
        'name': dset.name,
        'created_by': None,
        'created_datetime': session['start_time'],
        'dataset_type': _dataset_type(dset.name),
        'data_format': dset.name.rsplit('.', 1)[-1],
        'collection': dset.collection,
        'session': f'{base_url}/sessions/{dset.eid}',
        'file_size': dset.size,
        'hash': dset.md5,
        'version': None,
        'experiment_number': 1,
        'file_records': [
            {
                'id': str(uuid.uuid3(uuid.UUID(dset.id), 'file_record')),
                'data_repository': 'flatiron_' + dset.session_path.split('/')[0],
                'data_repository_path': f'/{dset.session_path.split("/")[0]}/Subjects/',
                'relative_path': relative_path,
                'data_url': f'{base_url}/files/{dset.url_path}',
                'exists': True,
            }
        ],
        'auto_datetime': session['start_time'],
        'revision': None,
        'default_dataset': dset.default_revision,
        'protected': False,
        'public': False,
        'tags': [],
        'qc': dset.qc,
    }


def openapi_schema():
    """Minimal OpenAPI 3 document: the endpoints, actions and list filters served."""
    paths = {'/auth-token': {'post': {'operationId': 'auth_token_create'}}}
    for endpoint, params in LIST_PARAMETERS.items():
        paths[f'/{endpoint}'] = {
            'get': {
                'operationId': f'{endpoint}_list',
                'parameters': [
                    {'name': p, 'in': 'query', 'schema': {'type': 'string'}} for p in params
                ],
            }
        }
    for endpoint, path in DETAIL_PATHS.items():
        key = path.rsplit('{', 1)[1].rstrip('}')
        paths[path] = {
            'get': {
                'operationId': f'{endpoint}_retrieve',
                'parameters': [{'name': key, 'in': 'path', 'required': True}],
            }
        }
    paths['/cache/info/'] = {'get': {'operationId': 'cache_info_retrieve'}}
    return {
        'openapi': '3.0.3',
        'info': {'title': 'iblnm test Alyx', 'version': '0.0.0'},
        'paths': paths,
        'components': {'schemas': {}},
    }


# ---------------------------------------------------------------------------
# Filters and pagination
# ---------------------------------------------------------------------------
def _icontains(values, needle):
    return any(needle.lower() in str(v).lower() for v in values or [])


def _django_ids(expression):
    """Ids selected by a ``django`` filter (``pk,<id>`` or ``pk__in,[...]``); None if other."""
    match = re.fullmatch(r'(?:pk|id)(?:__in)?,(.*)', expression.strip())
    if not match:
        return None
    return set(
        re.findall(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', match.group(1))
    )


def filter_sessions(records, query):
    """Apply Alyx's session filters to session records."""
    ids = {query['id']} if 'id' in query else None
    if 'django' in query:
        ids = _django_ids(query['django'])
        if ids is None:
            raise ValueError(f'unsupported django filter {query["django"]!r}')
    out = []
    for rec in records:
        if ids is not None and rec['id'] not in ids:
            continue
        if 'project' in query and not _icontains(rec['projects'], query['project']):
            continue
        if 'projects' in query and not _icontains(rec['projects'], query['projects']):
            continue
        if any(k in query and str(rec[k]) != query[k] for k in ('subject', 'lab', 'number')):
            continue
        if 'task_protocol' in query and query['task_protocol'] not in (rec['task_protocol'] or ''):
            continue
        out.append(rec)
    return out


def filter_subjects(records, query):
    """Apply Alyx's subject filters to subject records."""
    out = []
    for rec in records:
        if any(k in query and str(rec.get(k)) != query[k] for k in ('nickname', 'lab', 'id')):
            continue
        if any(k in query and str(rec.get(k)) != query[k] for k in ('strain', 'line')):
            continue
        project = query.get('project', query.get('projects'))
        if project is not None and not _icontains(rec['projects'], project):
            continue
        out.append(rec)
    return out


def paginate(results, query, page_url, page_size):
    """Alyx's ``{count, next, previous, results}`` page of ``results``."""
    limit = int(query.get('limit', page_size))
    offset = int(query.get('offset', 0))
    others = {k: v for k, v in query.items() if k not in ('limit', 'offset')}

    def link(off):
        return f'{page_url}?{urllib.parse.urlencode({**others, "limit": limit, "offset": off})}'

    return {
        'count': len(results),
        'next': link(offset + limit) if offset + limit < len(results) else None,
        'previous': link(max(offset - limit, 0)) if offset > 0 else None,
        'results': results[offset : offset + limit],
    }


# ---------------------------------------------------------------------------
# Faults and the request log
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Fault:
    """A fault applied to the requests matching ``path`` (and ``params``).

    ``path`` ending in ``*`` matches by prefix. ``times`` None applies it forever.
    """

    path: str
    kind: str  # 'status', 'truncate' or 'stall'
    times: int | None = 1
    status: int = 500
    seconds: float = 0.0
    echo_headers: bool = False
    params: dict = dataclasses.field(default_factory=dict)

    def matches(self, path, query):
        if self.times is not None and self.times <= 0:
            return False
        ok = path.startswith(self.path[:-1]) if self.path.endswith('*') else path == self.path
        return ok and all(query.get(k) == str(v) for k, v in self.params.items())


@dataclasses.dataclass
class RequestRecord:
    """One request received by the server."""

    method: str
    path: str
    query: dict
    status: int | None = None
    fault: str | None = None


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------
class AlyxServer:
    """A threaded Alyx serving a local cache on ``127.0.0.1`` (ephemeral port).

    Parameters
    ----------
    cache_dir : path
        The local ONE cache whose records and files are served.
    username, password : str
        The only accepted credentials (a random password by default).
    page_size : int
        Default page size of the list endpoints.
    """

    def __init__(
        self, cache_dir, username='iblnm-tester', password=None, page_size=DEFAULT_PAGE_SIZE
    ):
        self.records = CacheRecords(cache_dir)
        self.username = username
        self.password = password or f'pw-{secrets.token_urlsafe(12)}'
        self.token = secrets.token_hex(20)
        self.page_size = page_size
        self.rewrites = {}  # record kind -> function(record) -> record (see rewrite)
        self.requests = []
        self._faults = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # -- lifecycle ----------------------------------------------------------
    @property
    def base_url(self):
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}'

    @property
    def data_url(self):
        """``HTTP_DATA_SERVER`` of the ONE parameters."""
        return f'{self.base_url}/files'

    def start(self):
        """Bind ``127.0.0.1:0`` and serve in a daemon thread."""
        handler = functools.partial(_Handler, alyx=self)
        self._httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, kwargs={'poll_interval': 0.05}
        )
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- fault injection ----------------------------------------------------
    def fail(self, path, times=1, status=500, echo_headers=False, **params):
        """Answer the next ``times`` matching requests with HTTP ``status``.

        With ``echo_headers`` the body is a plain-text page listing the request headers
        (the Authorization header included), as Django's debug error page does.
        """
        self._add(
            Fault(path, 'status', times, status=status, echo_headers=echo_headers, params=params)
        )

    def truncate(self, path, times=1, **params):
        """Answer the next ``times`` matching requests with a cut JSON body (status 200)."""
        self._add(Fault(path, 'truncate', times, params=params))

    def stall(self, path, times=1, seconds=0.5, **params):
        """Hold the next ``times`` matching requests ``seconds``, then drop the connection."""
        self._add(Fault(path, 'stall', times, seconds=seconds, params=params))

    def rewrite(self, kind, function):
        """Pass every served record of ``kind`` through ``function(record) -> record``.

        ``kind``: 'session' (list entries), 'session_detail', 'session_dataset' (entries of
        ``data_dataset_session_related``), 'dataset', 'subject', 'chronic_insertion' or
        'trajectory'; e.g. to add fields a newer
        Alyx has, or to null or drop fields, as records of the real database can differ
        from the local cache's.
        """
        self.rewrites[kind] = function

    def _out(self, kind, record):
        function = self.rewrites.get(kind)
        return record if function is None else function(dict(record))

    def clear_faults(self):
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def _add(self, fault):
        with self._lock:
            self._faults.append(fault)

    def take_fault(self, path, query):
        """The first pending fault matching a request (its count decremented), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, query):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # -- request log --------------------------------------------------------
    def log_request(self, record):
        with self._lock:
            self.requests.append(record)

    def calls(self, path, method='GET'):
        """Requests received for a path (``*`` suffix: prefix) with a method."""
        probe = Fault(path, 'probe', None)
        return [r for r in self.requests if r.method == method and probe.matches(r.path, {})]

    # -- routes -------------------------------------------------------------
    def route(self, method, path, query, form):
        """Answer a REST request: (status, JSON-able body)."""
        if method == 'POST' and path == '/auth-token':
            return self._auth_token(form)
        if method != 'GET':
            return 405, {'detail': f'Method "{method}" not allowed.'}
        parts = [p for p in path.split('/') if p]
        if parts in (['api', 'schema'], ['docs']):
            return 200, openapi_schema()
        if parts[:1] == ['cache']:
            return 404, NOT_FOUND
        handler = {
            'sessions': self._sessions,
            'subjects': self._subjects,
            'datasets': self._datasets,
            'chronic-insertions': self._chronic_insertions,
            'trajectories': self._trajectories,
        }.get(parts[0] if parts else None)
        if handler is None or len(parts) > 2:
            return 404, NOT_FOUND
        return handler(parts[1] if len(parts) == 2 else None, query, f'{self.base_url}{path}')

    def _auth_token(self, form):
        if form.get('username') == self.username and form.get('password') == self.password:
            return 200, {'token': self.token}
        return 400, {'non_field_errors': ['Unable to log in with provided credentials.']}

    def _sessions(self, eid, query, page_url):
        records = self.records
        if eid is not None:
            if eid not in records.one_sessions.index:
                return 404, NOT_FOUND
            detail = session_detail_record(
                records.session(eid), records.session_datasets(eid), self.base_url
            )
            related = [
                self._out('session_dataset', d) for d in detail['data_dataset_session_related']
            ]
            return 200, self._out(
                'session_detail', {**detail, 'data_dataset_session_related': related}
            )
        try:
            selected = filter_sessions([records.session(e) for e in records.eids()], query)
        except ValueError as error:
            return 400, {'detail': str(error)}
        results = [self._out('session', session_list_record(r)) for r in selected]
        return 200, paginate(results, query, page_url, self.page_size)

    def _subjects(self, nickname, query, page_url):
        subjects = self.records.subjects()
        if nickname is not None:
            found = [s for s in subjects if s['nickname'] == nickname]
            return (
                (200, self._out('subject', subject_list_record(found[0], self.base_url)))
                if found
                else (404, NOT_FOUND)
            )
        results = [
            self._out('subject', subject_list_record(s, self.base_url))
            for s in filter_subjects(subjects, query)
        ]
        return 200, paginate(results, query, page_url, self.page_size)

    def _datasets(self, did, query, page_url):
        records = self.records
        if did is not None:
            dset = records.datasets.get(did)
            if dset is None:
                return 404, NOT_FOUND
            return 200, self._out(
                'dataset', dataset_record(dset, records.session(dset.eid), self.base_url)
            )
        dsets = sorted(records.datasets.values(), key=lambda d: (d.eid, d.rel_path))
        if 'session' in query:
            dsets = [d for d in dsets if d.eid == query['session']]
        if 'id' in query:
            dsets = [d for d in dsets if d.id == query['id']]
        results = [
            self._out('dataset', dataset_record(d, records.session(d.eid), self.base_url))
            for d in dsets
        ]
        return 200, paginate(results, query, page_url, self.page_size)

    def _fiber_records(self, which, rid, query, page_url, filters):
        records = [pair[which] for pair in self.records.fibers()]
        if rid is not None:
            found = [r for r in records if r['id'] == rid]
            return (200, self._out(KINDS[which], found[0])) if found else (404, NOT_FOUND)
        records = [r for r in records if all(str(r[k]) == query[k] for k in filters if k in query)]
        results = [self._out(KINDS[which], r) for r in records]
        return 200, paginate(results, query, page_url, self.page_size)

    def _chronic_insertions(self, rid, query, page_url):
        return self._fiber_records(0, rid, query, page_url, ('subject', 'id', 'name', 'lab'))

    def _trajectories(self, rid, query, page_url):
        return self._fiber_records(1, rid, query, page_url, ('chronic_insertion', 'id'))


KINDS = ('chronic_insertion', 'trajectory')  # rewrite kinds of the fiber records


class _Handler(http.server.BaseHTTPRequestHandler):
    """Request handler: token check, faults, routes, file downloads."""

    def __init__(self, *args, alyx, **kwargs):
        self.alyx = alyx
        self.truncate_body = False
        super().__init__(*args, **kwargs)

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle('GET')

    def do_POST(self):  # noqa: N802
        self._handle('POST')

    def _handle(self, method):
        split = urllib.parse.urlsplit(self.path)
        path = split.path.rstrip('/') or '/'
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        record = RequestRecord(method, path, query)
        self.alyx.log_request(record)
        fault = self.alyx.take_fault(path, query)
        self.truncate_body = fault is not None and fault.kind == 'truncate'
        if fault is not None:
            record.fault = fault.kind
            if self._apply_fault(fault, record):
                return
        if path.startswith('/files/'):
            record.status = self._send_file(path.removeprefix('/files/'))
            return
        form = self._read_form() if method == 'POST' else {}
        if path != '/auth-token' and not self._authorised():
            auth = self.headers.get('Authorization')
            status, body = (401, {'detail': 'Authentication credentials were not provided.'})
            if auth:
                status, body = 403, {'detail': 'Invalid token.'}
        else:
            status, body = self.alyx.route(method, path, query, form)
        record.status = status
        self._send_json(status, body)

    def _authorised(self):
        return self.headers.get('Authorization') == f'Token {self.alyx.token}'

    def _read_form(self):
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length).decode() if length else ''
        try:
            return json.loads(raw) if raw.startswith('{') else dict(urllib.parse.parse_qsl(raw))
        except ValueError:
            return {}

    def _apply_fault(self, fault, record):
        """Apply a fault; True when the request is answered (or dropped) by it."""
        if fault.kind == 'stall':
            time.sleep(fault.seconds)
            self.close_connection = True
            record.status = None
            return True
        if fault.kind == 'status':
            record.status = fault.status
            if fault.echo_headers:
                self._send_text(fault.status, self._debug_page(fault.status))
            else:
                self._send_json(fault.status, {'detail': http.HTTPStatus(fault.status).phrase})
            return True
        return False  # 'truncate': answered normally, with its body cut

    def _debug_page(self, status):
        """Plain-text error page listing the request's headers, as Django's debug page does."""
        meta = [f'HTTP_{k.upper().replace("-", "_")} = {v!r}' for k, v in self.headers.items()]
        return '\n'.join(
            [
                f'RuntimeError at {self.path}',
                'injected fault',
                '',
                f'Request Method: {self.command}',
                f'Request URL: {self.alyx.base_url}{self.path}',
                f'Status: {status}',
                '',
                'META:',
                *meta,
                '',
            ]
        )

    def _send_text(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, body):
        data = json.dumps(body).encode()
        if self.truncate_body:
            data = data[: max(1, len(data) // 2)]
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_file(self, url_path):
        dset = self.alyx.records.file_by_url_path(urllib.parse.unquote(url_path))
        if dset is None or not dset.path.exists():
            self._send_json(404, NOT_FOUND)
            return 404
        data = dset.path.read_bytes()
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return 200


# ---------------------------------------------------------------------------
# Helpers for tests
# ---------------------------------------------------------------------------
@contextmanager
def alyx_server(cache_dir, **kwargs):
    """Start an :class:`AlyxServer` for ``cache_dir``; stop it on exit."""
    server = AlyxServer(cache_dir, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def write_one_params(server, cache_dir, store_password=False):
    """Write ONE's parameter files (under the current ``HOME``) for the loopback Alyx.

    Sets ``HTTP_DATA_SERVER`` to the server's ``/files`` and makes it ONE's default
    database, so that a plain ``ONE()`` connects to it. ``store_password`` also stores
    ``ALYX_PWD`` (ONE's plain-text password parameter) for unattended logins.
    """
    import one.params

    Path.home().mkdir(parents=True, exist_ok=True)
    one.params.setup(
        client=server.base_url,
        silent=True,
        username=server.username,
        cache_dir=str(cache_dir),
        make_default=True,
    )
    par = one.params.get(client=server.base_url, silent=True)
    par = par.set('HTTP_DATA_SERVER', server.data_url)
    if store_password:
        par = par.set('ALYX_PWD', server.password)
    one.params.save(par, server.base_url)


def connect(server, cache_dir):
    """The real ONE client in remote mode, logged in to ``server`` with its credentials
    (the REST cache and downloads under ``cache_dir``)."""
    from one.api import ONE

    return ONE(
        base_url=server.base_url,
        username=server.username,
        password=server.password,
        cache_dir=str(cache_dir),
        silent=True,
    )
