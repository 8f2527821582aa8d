"""The loopback Alyx (:mod:`alyx_server`) answers in the shapes IBL's real Alyx does.

The reference is what ONE ships: IBL's OpenAPI 3 schema of the Alyx REST API and REST
responses recorded from the real (test) Alyx (``one/tests/fixtures/rest_responses/``). Every
record the fake server returns for the endpoints the pipeline uses must have the fields the
schema requires, no field the schema does not know, and values of the declared types; its
dataset records must have the same fields as the recorded real ones.
"""

import json
import re
import uuid
from pathlib import Path

import one
import pandas as pd
import pytest
from alyx_server import AlyxServer

from iblnm import validation as v

REST = Path(one.__file__).parent / 'tests' / 'fixtures' / 'rest_responses'
OPENAPI = REST / 'openapiv3.json'
# Recorded real responses (names are hashes of the request): a dataset detail and a
# paginated dataset list of the IBL test Alyx.
REAL_DATASET = REST / '47893cf67c985e6361cdee009334963f49fb0746'
REAL_DATASET_LIST = REST / '6dc96f7e9bcc6ac2e7581489b9580a6cd3f28293'

pytestmark = pytest.mark.skipif(
    not OPENAPI.exists(), reason=f'ONE-api without its recorded Alyx schema ({OPENAPI})'
)

TYPES = {
    'string': str,
    'integer': int,
    'number': (int, float),
    'boolean': bool,
    'array': list,
    'object': dict,
}
DATE_TIME = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?$')
DATE = re.compile(r'\d{4}-\d\d-\d\d$')


@pytest.fixture(scope='module')
def schemas():
    return json.loads(OPENAPI.read_text())['components']['schemas']


def _method_field(schema):
    """A read-only field the schema types only as a bare string: a serializer method field,
    whose real values are of other types (``experiment_number`` 1, ``protected`` False)."""
    return schema.get('readOnly') and set(schema) <= {'type', 'readOnly'}


def violations(value, schema, schemas, where='$'):
    """Differences of ``value`` from an OpenAPI 3.0 ``schema``: list of str (empty: valid).

    Checks ``$ref``/``allOf``, ``required``, unknown object fields, types, ``enum`` and the
    ``uuid``/``date-time``/``date``/``uri`` formats. Two departures from the letter of the
    schema, both because the recorded real responses depart from it: null is accepted for
    any field (real datasets have ``revision`` and file records ``data_url`` null, which the
    schema declares not nullable), and the bare-string read-only (method) fields take any
    type.
    """
    if '$ref' in schema:
        return violations(value, schemas[schema['$ref'].rsplit('/', 1)[-1]], schemas, where)
    if 'allOf' in schema:
        return [v for part in schema['allOf'] for v in violations(value, part, schemas, where)]
    if value is None:  # real records hold nulls the schema calls not nullable (see above)
        return []
    kind = schema.get('type', 'object' if 'properties' in schema else None)
    if kind is None or _method_field(schema):  # any value
        return []
    if not isinstance(value, TYPES[kind]) or (kind in ('integer', 'number') and value is True):
        return [f'{where}: {type(value).__name__} {value!r:.60}, not {kind}']
    if 'enum' in schema and value not in schema['enum']:
        return [f'{where}: {value!r} not in {schema["enum"]}']
    out = []
    fmt = schema.get('format')
    if kind == 'string' and fmt == 'uuid':
        try:
            uuid.UUID(value)
        except ValueError:
            out.append(f'{where}: {value!r} is not a uuid')
    elif kind == 'string' and fmt == 'date-time' and not DATE_TIME.match(value):
        out.append(f'{where}: {value!r} is not a date-time')
    elif kind == 'string' and fmt == 'date' and not DATE.match(value):
        out.append(f'{where}: {value!r} is not a date')
    elif kind == 'string' and fmt == 'uri' and not re.match(r'https?://', value):
        out.append(f'{where}: {value!r} is not a URI')
    if kind == 'array':
        for i, item in enumerate(value):
            out += violations(item, schema.get('items', {}), schemas, f'{where}[{i}]')
    if kind == 'object' and 'properties' in schema:
        props = schema['properties']
        out += [
            f'{where}.{k}: required, missing' for k in schema.get('required', []) if k not in value
        ]
        out += [f'{where}.{k}: not a field of the real schema' for k in value if k not in props]
        for key, item in value.items():
            if key in props:
                out += violations(item, props[key], schemas, f'{where}.{key}')
    return out


def test_the_checker_finds_each_kind_of_difference(schemas):
    """The checker is not vacuous: a missing, an extra and a mistyped field are reported."""
    real = json.loads(REAL_DATASET.read_text())[0]
    assert violations(real, {'$ref': '#/components/schemas/Dataset'}, schemas) == []
    broken = {k: v for k, v in real.items() if k != 'name'}
    broken.update(file_size='14176', colour='red', session='not a url', data_format=3)
    found = violations(broken, {'$ref': '#/components/schemas/Dataset'}, schemas)
    assert sorted(found) == sorted(
        [
            '$.name: required, missing',
            "$.file_size: str '14176', not integer",
            '$.colour: not a field of the real schema',
            "$.session: 'not a url' is not a URI",
            '$.data_format: int 3, not string',
        ]
    )


@pytest.fixture(scope='module')
def server(real_cache):
    with AlyxServer(real_cache, page_size=1) as alyx:
        yield alyx


def get(server, path, **query):
    status, body = server.route('GET', path, {k: str(v) for k, v in query.items()}, {})
    assert status == 200, (path, body)
    return body


def assert_matches(value, name, schemas):
    assert violations(value, {'$ref': f'#/components/schemas/{name}'}, schemas) == []


def test_session_records_have_the_real_alyx_fields(server, schemas):
    page = get(server, '/sessions')
    assert_matches(page, 'PaginatedSessionListList', schemas)
    assert page['count'] == 2 and len(page['results']) == 1 and page['next']  # paginated
    for eid in server.records.eids():
        assert_matches(get(server, '/sessions', id=eid), 'PaginatedSessionListList', schemas)
        assert_matches(get(server, f'/sessions/{eid}'), 'SessionDetail', schemas)


def test_dataset_records_have_the_real_alyx_fields(server, schemas):
    eid = server.records.eids()[0]
    page = get(server, '/datasets', session=eid, limit=100)
    assert_matches(page, 'PaginatedDatasetList', schemas)
    assert page['count'] == len(page['results']) > 0 and page['next'] is None
    record = get(server, f'/datasets/{page["results"][0]["url"].rsplit("/", 1)[-1]}')
    assert_matches(record, 'Dataset', schemas)
    # every field of the recorded real records (the recordings predate the dataset 'qc'
    # field, which the schema has)
    real = json.loads(REAL_DATASET.read_text())[0]
    assert set(real) <= set(record) and set(record) - set(real) == {'qc'}
    assert set(record['file_records'][0]) == set(real['file_records'][0])
    real_page = json.loads(REAL_DATASET_LIST.read_text())[0]
    assert set(page) == set(real_page)
    assert set(page['results'][0]) - set(real_page['results'][0]) == {'qc'}


def test_subject_records_have_the_real_alyx_fields(server, schemas):
    page = get(server, '/subjects', limit=100)
    assert_matches(page, 'PaginatedSubjectListList', schemas)
    assert page['count'] == len(page['results']) > 0


# ---------------------------------------------------------------------------
# The remote path against records that differ from the local ones as real Alyx's do
# ---------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    """ONE's parameter files (and its cached token) go to a temporary HOME."""
    from one.api import ONE

    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    (tmp_path / 'home').mkdir()
    ONE.cache_clear()
    yield
    ONE.cache_clear()


def remote_and_local_catalogs(real_cache, tmp_path, rewrites):
    """(remote result, local result) of the catalog stage, the server's records rewritten."""
    from alyx_server import write_one_params
    from one.api import One
    from test_remote_catalog import connect, outputs, run, write_fibers_csv

    fibers = write_fibers_csv(real_cache, tmp_path / 'fibers.csv')
    local = run(
        One(cache_dir=str(real_cache), mode='local'),
        outputs(tmp_path / 'l', fibers),
        extended_qc=True,
    )
    with AlyxServer(real_cache, page_size=1) as alyx:  # every listing paginated
        write_one_params(alyx, tmp_path / 'one_params_cache')
        for kind, function in rewrites.items():
            alyx.rewrite(kind, function)
        remote = run(
            connect(alyx, tmp_path / 'one_remote'),
            outputs(tmp_path / 'r', fibers),
            extended_qc=True,
        )
        assert len(alyx.calls('/sessions')) >= 2  # went through the pages
    return remote, local


def test_remote_catalog_ignores_fields_real_alyx_added(real_cache, home, tmp_path):
    """A newer Alyx adds fields (and nested ones): the catalog is the local one."""
    from test_remote_catalog import log_entries

    def add(record):
        return {**record, 'new_field': {'nested': [1, None]}, 'another_new_field': None}

    rewrites = dict.fromkeys(('session', 'session_detail', 'session_dataset', 'subject'), add)
    remote, local = remote_and_local_catalogs(real_cache, tmp_path, rewrites)
    assert len(remote.catalog) == len(local.catalog) > 0
    pd.testing.assert_frame_equal(remote.catalog, local.catalog)
    pd.testing.assert_frame_equal(remote.qc, local.qc)
    assert log_entries(remote.log) == log_entries(local.log)


def test_remote_catalog_with_null_and_missing_optional_fields(real_cache, home, tmp_path):
    """Real records hold nulls and lack optional fields (no end time, no settings JSON, no
    extended QC, no narrative): the catalog does not crash, keeps every session and fills
    what it cannot read with missing values (a session without an end time is logged as
    InvalidSessionLength)."""
    from test_remote_catalog import log_entries

    def strip(record):
        record = {**record, 'end_time': None, 'json': None, 'extended_qc': None}
        record.pop('narrative', None)
        record.pop('n_trials', None)
        return record

    remote, local = remote_and_local_catalogs(real_cache, tmp_path, {'session_detail': strip})
    assert sorted(remote.catalog['eid']) == sorted(local.catalog['eid'])
    no_end = [
        (eid, 'InvalidSessionLength', 'start or end time missing') for eid in local.catalog['eid']
    ]
    assert log_entries(remote.log) == sorted(log_entries(local.log) + no_end)  # typed, logged
    assert remote.catalog['end_time'].isna().all() and remote.catalog['session_length'].isna().all()
    shared = [c for c in local.catalog.columns if c not in ('end_time', 'session_length')]
    pd.testing.assert_frame_equal(remote.catalog[shared], local.catalog[shared])
    pd.testing.assert_frame_equal(remote.qc, local.qc)  # the real sessions have no extended QC
    assert all(
        issubclass(v.error_class(t) or Exception, v.IblnmError) for t in remote.log['error_type']
    )


# ---------------------------------------------------------------------------
# Coordinates: Alyx (iblatlas, x right positive) -> fibers table (X-ml_um > 0 = left)
# ---------------------------------------------------------------------------
def alyx_fiber_records(x_um):
    """A chronic insertion and its trajectory as Alyx serves them (ids, subject, µm)."""
    insertion = {
        'id': '8c4a1a6e-0f0e-4a4f-9d0b-3f2f6d5e9a01',
        'name': 'VTA',
        'subject': 'ZFM-01',
        'lab': 'mainenlab',
        'model': 'Fiber',
        'start_time': '2024-01-05T10:00:00',
        'serial': '',
        'json': None,
        'probe_insertion': '2f0c4c0d-8a53-4bde-8e0b-3d6ab2c45b10',
    }
    trajectory = {
        'id': '51d6b8b6-4a16-4f0a-9a33-6f1b2a0f7c22',
        'probe_insertion': None,
        'chronic_insertion': insertion['id'],
        'x': x_um,
        'y': -3300.0,
        'z': -4300.0,
        'depth': 4300.0,
        'theta': 0.0,
        'phi': 0.0,
        'roll': 0.0,
        'provenance': 'Planned',
        'session': None,
        'probe_name': 'VTA',
        'coordinate_system': 'IBL-Allen',
        'datetime': '2024-01-05T10:00:00',
        'json': None,
    }
    return insertion, trajectory


def test_alyx_coordinates_give_the_fiber_hemisphere(schemas):
    """iblatlas x > 0 is the right hemisphere; the fibers table's X-ml_um > 0 the left."""
    from iblnm import io

    insertion, trajectory = alyx_fiber_records(600.0)
    assert_matches(insertion, 'ChronicInsertionList', schemas)  # shaped as real Alyx's
    assert_matches(trajectory, 'TrajectoryEstimate', schemas)
    right = io.fibers_from_alyx([insertion], [trajectory])
    assert right.to_dict('records') == [
        {
            'subject': 'ZFM-01',
            'fiber': 'VTA',
            'targeted_region': 'VTA',
            'X-ml_um': -600.0,
            'Y-ap_um': -3300.0,
            'Z-dv_um': -4300.0,
        }
    ]
    insertion_l, trajectory_l = alyx_fiber_records(-600.0)
    left = io.fibers_from_alyx([insertion_l], [trajectory_l])
    lookup = v.fiber_hemisphere_lookup(
        pd.concat([right.assign(subject='a'), left.assign(subject='b')])
    )
    assert lookup == {('a', 'VTA'): 'r', ('b', 'VTA'): 'l'}
    session = pd.Series(
        {'eid': 'e', 'subject': 'a', 'brain_region': ['VTA-r'], 'hemisphere': ['r']}
    )
    assert v.validate_hemisphere(session, fiber_lookup=lookup) is None
    with pytest.raises(v.HemisphereMismatch):
        v.validate_hemisphere(pd.Series({**session, 'hemisphere': ['l']}), fiber_lookup=lookup)
    assert io.fibers_from_alyx([insertion], [{**trajectory, 'chronic_insertion': 'other'}]).empty


def test_the_most_refined_trajectory_of_an_insertion_is_used(schemas):
    """Alyx keeps several trajectories per insertion (planned, histology...): one fiber row,
    from the most refined, whatever their order."""
    from iblnm import io

    insertion, histology = alyx_fiber_records(-650.0)
    histology = {**histology, 'provenance': 'Histology track'}
    planned = {**histology, 'id': '51d6b8b6-4a16-4f0a-9a33-6f1b2a0f7c23', 'x': 600.0}
    planned['provenance'] = 'Planned'
    assert_matches(histology, 'TrajectoryEstimate', schemas)
    for order in ([planned, histology], [histology, planned]):
        fibers = io.fibers_from_alyx([insertion], order)
        assert fibers['X-ml_um'].tolist() == [650.0]  # left: iblatlas x < 0
