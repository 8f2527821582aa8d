"""Dataset integrity: each file's md5 is checked against ONE's record once, then remembered.

ONE checks a file's md5 at every load (``check_hash=True``), with ``iblutil``'s hasher,
which allocates a 256 MB buffer per call: about 0.1 s per file however small, 0.5 s
for a photometry session's four files, at every load of every stage. In local mode a
mismatch is then only a logged warning and the file is used anyway.

Here a file's md5 is computed once (``hashlib``) and remembered together with the file's
state: absolute path, size, modification time and inode change time (``st_ctime_ns``,
which no user-level tool can set back). Any change to the file changes that state, so
the file is hashed again. The verdicts are kept in memory and in a small sidecar folder
of the ONE cache (``<cache_dir>/.iblnm_md5/``, one JSON file per dataset file, written
atomically, so parallel workers never corrupt each other's entries); a read-only cache
keeps them in memory only.

A mismatch is an error (:class:`iblnm.validation.DatasetHashMismatch`). In remote mode
the dataset is first fetched again through ONE with its own hash check, which
re-downloads a file whose hash does not match; the error is raised only when the fresh
copy does not match either.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from iblnm.validation import DatasetHashMismatch

MEMO_DIRNAME = '.iblnm_md5'
_MEMORY = {}  # (path, size, mtime_ns, ctime_ns) -> md5, for this process


def file_md5(path):
    """md5 hex digest of a file (``hashlib.file_digest``: 256 KiB buffer)."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'md5').hexdigest()


def _state(path):
    st = os.stat(path)  # follows symlinks: a changed target is a changed file
    return (str(Path(path).absolute()), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _entry_path(memo_dir, key):
    return Path(memo_dir) / (hashlib.sha1(key[0].encode()).hexdigest() + '.json')


def remembered_md5(path, memo_dir=None):
    """md5 of ``path``, computed only when the file changed since it was last hashed.

    Parameters
    ----------
    path : path
        The file.
    memo_dir : path, optional
        Sidecar folder of remembered hashes (created on demand); None keeps them in memory.

    Returns
    -------
    str
        The md5 hex digest of the file as it is now.
    """
    key = _state(path)
    if key in _MEMORY:
        return _MEMORY[key]
    entry = None if memo_dir is None else _entry_path(memo_dir, key)
    if entry is not None:
        try:
            saved = json.loads(entry.read_text())
            if tuple(saved['state']) == key:
                _MEMORY[key] = saved['md5']
                return saved['md5']
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent, stale or unreadable: hash again
    digest = file_md5(path)
    if _state(path) != key:  # changed while being hashed: do not remember
        return digest
    _MEMORY[key] = digest
    if entry is not None:
        _save_entry(entry, {'state': list(key), 'md5': digest})
    return digest


def _save_entry(entry, content):
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(content, f)
        os.replace(tmp, entry)
    except OSError:
        pass  # read-only cache: remembered in memory only


def memo_dir(one):
    """Sidecar folder of remembered hashes for a ONE instance (None without a cache dir)."""
    cache_dir = getattr(one, 'cache_dir', None)
    return None if cache_dir is None else Path(cache_dir) / MEMO_DIRNAME


def is_local(one):
    """True for a ONE without an Alyx client (local mode)."""
    return getattr(one, 'offline', False) or not hasattr(one, 'alyx')


def expected_hashes(records, files):
    """ONE's md5 record for each file (None when the record has no hash).

    ``records`` is a session's ``one.list_datasets(eid, details=True)``; the record of a
    file is the dataset whose ``rel_path`` ends the file's path.
    """
    hashes = dict(zip(records['rel_path'], records['hash'])) if len(records) else {}
    out = []
    for file in files:
        posix = Path(file.without_uuid() if hasattr(file, 'without_uuid') else file).as_posix()
        match = [h for rel, h in hashes.items() if posix.endswith('/' + rel)]
        out.append(match[0] if match and isinstance(match[0], str) and match[0] else None)
    return out


def mismatched(one, files, records):
    """The files (of ``files``, None entries ignored) whose md5 differs from their record."""
    present = [f for f in files if f is not None]
    memo = memo_dir(one)
    return [
        f
        for f, expected in zip(present, expected_hashes(records, present))
        if expected is not None and remembered_md5(f, memo) != expected
    ]


def verified(one, eid, fetch, records=None):
    """Fetch dataset files through ONE without its per-load hashing, then verify them once.

    Parameters
    ----------
    one : one.api.One
        Local or remote.
    eid : str
    fetch : callable
        ``fetch(check_hash=bool)`` returns a path or a list of paths (e.g. a
        ``one.load_dataset(..., download_only=True)`` call).
    records : pandas.DataFrame, optional
        The session's ``one.list_datasets(eid, details=True)`` in local mode (listed when
        not given, and always in remote mode, after the fetch has added the records).

    Returns
    -------
    path or list of paths
        What ``fetch`` returned.

    Raises
    ------
    DatasetHashMismatch
        A file does not match its md5 record (in remote mode: after a fresh download).
    """
    files = fetch(check_hash=False)
    if records is None or not is_local(one):  # remote: the records as they are after the fetch
        records = one.list_datasets(eid, details=True)
    listed = files if isinstance(files, list | tuple) else [files]
    bad = mismatched(one, listed, records)
    if bad and not is_local(one):
        files = fetch(check_hash=True)  # ONE re-downloads the files that do not match
        listed = files if isinstance(files, list | tuple) else [files]
        bad = mismatched(one, listed, one.list_datasets(eid, details=True))
    if bad:
        raise DatasetHashMismatch(
            f'md5 of {", ".join(Path(f).name for f in bad)} differs from its ONE record '
            '(the file changed after it was registered)'
        )
    return files


def local_dataset(one, records, session_path, rel_path):
    """Path of a dataset straight from the cache table in local mode, or None.

    Only for the simple case: local mode, exactly one record named ``rel_path`` (no
    revision of it), the file present with its recorded size. Anything else (remote
    mode, revisions, missing or resized files) is left to ONE (return None). The md5 is
    verified (once) by the caller.
    """
    if not is_local(one) or not len(records) or not session_path:
        return None
    name = rel_path.rsplit('/', 1)[-1]
    same_name = records[
        records['rel_path'].str.endswith('/' + name) | (records['rel_path'] == name)
    ]
    if len(same_name) != 1 or same_name['rel_path'].iloc[0] != rel_path:
        return None
    path = Path(session_path) / rel_path
    try:
        size = path.stat().st_size
    except OSError:
        return None
    recorded = same_name['file_size'].iloc[0]
    if recorded and recorded == recorded and int(recorded) != size:  # NaN != NaN: no record
        return None
    return path


def local_object(one, records, session_path, obj, collection, attribute=None):
    """Files of an ALF object straight from the cache table in local mode, or None.

    The local-mode shortcut of ``one.load_object(..., download_only=True)`` (~25 ms of
    table filtering per call on a session of 9 records): the records of ``obj`` in exactly
    ``collection`` whose attribute matches the regular expression ``attribute`` (all when
    None). None (leave it to ONE) in remote mode, when a record of the object has a
    revision, when a file is absent or differs from its recorded size, or when nothing
    matches. The md5s are verified (once) by the caller.
    """
    import re

    from one.alf.path import rel_path_parts

    if not is_local(one) or not len(records) or not session_path:
        return None
    files = []
    for rel, recorded in zip(records['rel_path'], records['file_size']):
        parts = rel_path_parts(rel, as_dict=True, assert_valid=False)
        if parts['object'] != obj or (parts['collection'] or '') != (collection or ''):
            continue
        if parts['revision']:
            return None
        if attribute is not None and not re.fullmatch(attribute, parts['attribute'] or ''):
            continue
        path = Path(session_path) / rel
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if recorded and recorded == recorded and int(recorded) != size:  # NaN: no record
            return None
        files.append(path)
    return files or None
