"""Add the real IBL test recordings (``../shared/data/real``) to a local ONE cache.

The files are linked (or copied) into the cache in their IBL layout, Alyx-like records
are written for them, and ONE's tables are rebuilt (with every file's md5, as a real
user's cache has), so the real sessions then go through exactly the same code as
simulated ones.

The records hold what the files do not say. Those values are marked as inferred in
the subject description: the lines are guessed from the recorded targets (CQ002: SI
and PPT, cholinergic targets; fip_40: striatal dopamine terminals), start times are
noon of the session date, and end times come from the last trial.
"""

import os
import shutil
from pathlib import Path

import pandas as pd

from iblnm import config
from iblnm.onecache import build_one_tables, session_eid, subject_id, write_alyx_records

REAL_SESSIONS = {
    'cortexlab/Subjects/CQ002/2024-11-05/001': {
        'task_protocol': '_iblrig_tasks_trainingChoiceWorld',
        'line': 'Ai148xChat',
        'strain': 'C57BL/6J',
        'trials': 'alf/task_00/_ibl_trials.table.pqt',
    },
    'wittenlab/Subjects/fip_40/2023-05-18/001': {
        'task_protocol': '_iblrig_tasks_trainingChoiceWorld',
        'line': 'Ai148xDat',
        'strain': 'C57BL/6J',
        'trials': 'alf/_ibl_trials.table.pqt',
    },
}


def _place(src, dst, copy):
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def _records(rel, facts, source):
    lab, _, subject, date, number = rel.split('/')
    eid = session_eid(lab, subject, date, number)
    trials = pd.read_parquet(source / rel / facts['trials'])
    start = pd.Timestamp(f'{date}T12:00:00')
    end = start + pd.Timedelta(seconds=float(trials['intervals_1'].max()))
    subject_rec = {
        'id': subject_id(lab, subject),
        'nickname': subject,
        'lab': lab,
        'strain': facts['strain'],
        'line': facts['line'],
        'genotype': [],
        'sex': None,
        'birth_date': None,
        'projects': [config.PROJECT_NAME],
        'responsible_user': None,
        'description': 'real IBL test recording; strain/line inferred by iblnm from the targets',
    }
    session_rec = {
        'id': eid,
        'subject': subject,
        'lab': lab,
        'start_time': start.isoformat(),
        'end_time': end.isoformat(),
        'number': int(number),
        'task_protocol': facts['task_protocol'],
        'projects': [config.PROJECT_NAME],
        'users': [],
        'qc': 'NOT_SET',
        'extended_qc': None,
        'json': None,
    }
    return subject_rec, session_rec


def add_real_sessions(cache_dir, source=None, copy=False):
    """Link (or copy) the real IBL sessions into ``cache_dir`` and rebuild ONE's tables.

    Parameters
    ----------
    cache_dir : path
        A new or existing local cache (e.g. the demo cache).
    source : path, optional
        Folder holding ``cortexlab/…`` and ``wittenlab/…`` (default
        ``config.REAL_DATA_DIR / 'ibl'``).
    copy : bool
        Copy the files instead of symlinking them.

    Returns
    -------
    list of str
        The eids of the added sessions.
    """
    cache_dir = Path(cache_dir)
    source = Path(source or config.REAL_DATA_DIR / 'ibl')
    if not source.exists():
        raise FileNotFoundError(f'real data folder {source} does not exist')
    subjects, sessions = [], []
    for rel, facts in REAL_SESSIONS.items():
        ses_src = source / rel
        for path in sorted(p for p in ses_src.rglob('*') if p.is_file()):
            _place(path, cache_dir / rel / path.relative_to(ses_src), copy)
        subject_rec, session_rec = _records(rel, facts, source)
        subjects.append(subject_rec)
        sessions.append(session_rec)
    write_alyx_records(cache_dir, pd.DataFrame(subjects), pd.DataFrame(sessions))
    build_one_tables(cache_dir, hashes=True)  # real md5 records, as from Alyx
    return [s['id'] for s in sessions]
