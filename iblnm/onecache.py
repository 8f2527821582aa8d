"""Write a ONE local cache (IBL on-disk layout + ONE tables + Alyx records).

A local cache directory looks like this::

    cache_dir/
    ├── sessions.pqt, datasets.pqt      ONE's cache tables (with ``date_created``)
    ├── alyx/
    │   ├── subjects.pqt                Alyx subject records (nickname, strain, line, genotype, lab ...)
    │   └── sessions.pqt                Alyx session details (start/end time, users, protocol ...)
    ├── ground_truth/                   only for simulated caches: manifest and true signals
    └── <lab>/Subjects/<subject>/<YYYY-MM-DD>/<NNN>/   one IBL session folder per session

Eids are derived from the session path (``uuid3``, as ONE itself uses), so rebuilding a cache never changes
them. Dataset ids are derived from the eid and the relative path in the same way.
ONE's tables are rebuilt from what is on disk, so they always list exactly the files
that exist.
"""

import datetime
import uuid
from pathlib import Path

import pandas as pd
from iblutil.io import parquet
from one.alf.cache import DATASETS_COLUMNS, QC_TYPE, SESSIONS_COLUMNS
from one.alf.io import iter_datasets, iter_sessions
from one.alf.path import session_path_parts

from iblnm.config import ALYX_RECORDS_DIRNAME
from iblnm.integrity import file_md5

# Fixed namespace for the project's deterministic eids (never change it: it would change every eid).
EID_NAMESPACE = uuid.UUID('6b1f3c52-9a0e-4a47-8d7e-1f0b6a1c2e11')

SUBJECT_RECORD_COLUMNS = [
    'id',
    'nickname',
    'lab',
    'strain',
    'line',
    'genotype',
    'sex',
    'birth_date',
    'projects',
    'responsible_user',
    'description',
]
SESSION_RECORD_COLUMNS = [
    'id',
    'subject',
    'lab',
    'start_time',
    'end_time',
    'number',
    'task_protocol',
    'projects',
    'users',
    'qc',
    'extended_qc',
    'json',
]


def session_eid(lab, subject, date, number):
    """Deterministic eid of a session.

    Parameters
    ----------
    lab, subject : str
    date : str or datetime.date
        Session date, ``YYYY-MM-DD``.
    number : int or str
        Session number of the day (1 -> ``001``).

    Returns
    -------
    str
        A UUID string, the same for the same session on every machine and every build.
    """
    key = f'{lab}/{subject}/{pd.Timestamp(date).date().isoformat()}/{int(number):03d}'
    return str(uuid.uuid3(EID_NAMESPACE, key))


def subject_id(lab, nickname):
    """Deterministic Alyx-like id of a subject."""
    return str(uuid.uuid3(EID_NAMESPACE, f'subject/{lab}/{nickname}'))


def dataset_id(eid, rel_path):
    """Deterministic id of a dataset: ``uuid3(eid, rel_path)``."""
    return str(uuid.uuid3(uuid.UUID(str(eid)), str(rel_path)))


def session_path(cache_dir, lab, subject, date, number):
    """Path of a session folder in IBL's layout ``lab/Subjects/subject/date/NNN``."""
    date = pd.Timestamp(date).date().isoformat()
    return Path(cache_dir) / lab / 'Subjects' / subject / date / f'{int(number):03d}'


def _metadata(origin):
    return {
        'date_created': datetime.datetime.now().isoformat(sep=' ', timespec='minutes'),
        'origin': str(origin),
    }


def _atomic_parquet_save(path, table, metadata):
    tmp = path.with_name(path.name + '.tmp')
    parquet.save(tmp, table, metadata)
    tmp.replace(path)


def read_alyx_records(cache_dir, name):
    """Read ``alyx/{name}.pqt`` of a cache, or an empty frame when it does not exist."""
    path = Path(cache_dir) / ALYX_RECORDS_DIRNAME / f'{name}.pqt'
    if not path.exists():
        cols = SUBJECT_RECORD_COLUMNS if name == 'subjects' else SESSION_RECORD_COLUMNS
        return pd.DataFrame(columns=cols)
    return pd.read_parquet(path)


def write_alyx_records(cache_dir, subjects=None, sessions=None, merge=True):
    """Write (or merge into) the Alyx records of a local cache.

    Parameters
    ----------
    cache_dir : path
    subjects : pandas.DataFrame, optional
        Columns of :data:`SUBJECT_RECORD_COLUMNS` (``genotype`` and ``projects`` are lists).
    sessions : pandas.DataFrame, optional
        Columns of :data:`SESSION_RECORD_COLUMNS`; ``start_time``/``end_time`` are ISO 8601
        strings, ``projects``/``users`` lists, ``extended_qc``/``json`` JSON strings or None.
    merge : bool
        Keep existing records whose id is not in the new ones.
    """
    folder = Path(cache_dir) / ALYX_RECORDS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    for name, new, cols in (
        ('subjects', subjects, SUBJECT_RECORD_COLUMNS),
        ('sessions', sessions, SESSION_RECORD_COLUMNS),
    ):
        if new is None:
            continue
        new = new.reindex(columns=cols)
        if merge:
            old = read_alyx_records(cache_dir, name)
            old = old[~old['id'].isin(new['id'])]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        new = new.sort_values('id').reset_index(drop=True)
        _atomic_parquet_save(folder / f'{name}.pqt', new, _metadata(cache_dir))


def build_one_tables(cache_dir, hashes=False):
    """(Re)build ONE's ``sessions.pqt`` and ``datasets.pqt`` from the session folders on disk.

    ``task_protocol`` and ``projects`` come from the Alyx session records when present
    (``alyx/sessions.pqt``), else stay empty. Eids and dataset ids are deterministic.
    With ``hashes``, every file's md5 is recorded in ``hash``, as in the tables a real
    Alyx gives (loads then verify each file once, see :mod:`iblnm.integrity`).

    Returns
    -------
    sessions, datasets : pandas.DataFrame
        The tables as written (indexed like ONE's).
    """
    cache_dir = Path(cache_dir)
    records = read_alyx_records(cache_dir, 'sessions').set_index('id')
    ses_rows, dset_rows = [], []
    for ses_path in iter_sessions(cache_dir):
        parts = session_path_parts(ses_path, as_dict=True)
        lab = parts['lab'] or ''
        eid = session_eid(lab, parts['subject'], parts['date'], parts['number'])
        rec = records.loc[eid] if eid in records.index else None
        projects = '' if rec is None else ','.join(list(rec['projects'] or []))
        ses_rows.append(
            {
                'id': eid,
                'lab': lab,
                'subject': parts['subject'],
                'date': pd.Timestamp(parts['date']).date(),
                'number': int(parts['number']),
                'task_protocol': '' if rec is None else (rec['task_protocol'] or ''),
                'projects': projects,
            }
        )
        for rel in iter_datasets(ses_path):
            rel = Path(rel).as_posix()
            dset_rows.append(
                {
                    'eid': eid,
                    'id': dataset_id(eid, rel),
                    'rel_path': rel,
                    'file_size': (ses_path / rel).stat().st_size,
                    'hash': file_md5(ses_path / rel) if hashes else None,
                    'exists': True,
                    'qc': 'NOT_SET',
                }
            )
    sessions = pd.DataFrame(ses_rows, columns=list(SESSIONS_COLUMNS)).astype(SESSIONS_COLUMNS)
    sessions = sessions.sort_values('id').set_index('id')
    dcols = {k: v for k, v in DATASETS_COLUMNS.items() if k != 'qc'}
    datasets = pd.DataFrame(dset_rows, columns=list(DATASETS_COLUMNS)).astype(dcols)
    datasets['qc'] = datasets['qc'].astype(QC_TYPE)
    datasets['default_revision'] = True  # as in remote-derived tables: no revision warnings
    datasets = datasets.sort_values(['eid', 'id']).set_index(['eid', 'id'])
    meta = _metadata(cache_dir)
    _atomic_parquet_save(cache_dir / 'sessions.pqt', sessions, meta)
    _atomic_parquet_save(cache_dir / 'datasets.pqt', datasets, meta)
    return sessions, datasets
