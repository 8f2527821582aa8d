"""Fault injection on the ``small`` preset: every failure typed, no other session changed.

Each case copies one simulated cache (``small_cache``, generated once per test run), plants
one fault in one session (FAULTY) and runs the stages in this process on a two-session
catalog (FAULTY and CONTROL, both two-fiber training sessions). It asserts the typed error
row, that CONTROL's outputs equal those of an undisturbed reference run, and what a rerun
after the fault is removed gives. Subprocess cases check the scripts' exit codes, the
runner summary and that no pool worker outlives its runner.

Every case adds a row to the chaos table (fault | error type | other sessions unchanged |
rerun result), written at the end of the module to ``$IBLNM_CHAOS_TABLE`` when set (the
table in NOTES.md comes from ``IBLNM_CHAOS_TABLE=chaos.md pytest tests/test_faults.py``).
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import requests
from one.api import One

from iblnm import config, h5
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.pipeline import executor, overview, photometry, wheel
from iblnm.pipeline import task as task_stage
from iblnm.pipeline.catalog import query_database
from iblnm.pipeline.video import run_video_stage

FAULTY = '7787ec7d-4468-33a4-bc9b-e15ae39efb5e'  # CQ101 training, SNc-r + VTA-r
CONTROL = 'e67ccb8a-13d9-38e5-acf6-fb653fc41cf2'  # CQ102 training, VTA-l + SNc-r
REPO = Path(__file__).resolve().parents[1]
CHAOS = []


def chaos(fault, error_type, others_unchanged, rerun):
    """Record one row of the chaos table (called after the case's assertions passed;
    ``others_unchanged`` None where no other session is involved)."""
    mark = 'n/a' if others_unchanged is None else ('yes' if others_unchanged else 'NO')
    CHAOS.append((fault, error_type, mark, rerun))


@pytest.fixture(scope='module', autouse=True)
def chaos_table():
    yield
    target = os.environ.get('IBLNM_CHAOS_TABLE')
    if target and CHAOS:
        lines = [
            '| fault | error type | other sessions unchanged | rerun result |',
            '|---|---|---|---|',
        ]
        lines += [f'| {" | ".join(row)} |' for row in CHAOS]
        Path(target).write_text('\n'.join(lines) + '\n')


# ---------------------------------------------------------------------------
# One reference run, one copied cache per case
# ---------------------------------------------------------------------------
@dataclass
class Outputs:
    """A cache and an output root, with the stage functions bound to them."""

    cache: Path
    root: Path

    def __post_init__(self):
        self.one = One(cache_dir=str(self.cache), mode='local')
        self.h5_dir = self.root / 'sessions'
        (self.root / 'metadata').mkdir(parents=True, exist_ok=True)

    @property
    def sessions_fpath(self):
        return self.root / 'metadata' / 'sessions.pqt'

    def log_fpath(self, stage):
        return self.root / 'metadata' / f'{stage}_log.pqt'

    def photometry(self, catalog, **kwargs):
        return photometry.run_photometry_stage(
            one=self.one,
            catalog=catalog,
            h5_dir=self.h5_dir,
            qc_fpath=self.root / 'qc.pqt',
            log_fpath=self.log_fpath('photometry'),
            sessions_fpath=self.sessions_fpath,
            upstream_logs=(),
            progress=False,
            **kwargs,
        )

    def task(self, catalog, **kwargs):
        return task_stage.run_task_stage(
            one=self.one,
            catalog=catalog,
            performance_fpath=self.root / 'performance.pqt',
            log_fpath=self.log_fpath('task'),
            sessions_fpath=self.sessions_fpath,
            progress=False,
            **kwargs,
        )

    def wheel(self, catalog, **kwargs):
        return wheel.run_wheel_stage(
            one=self.one,
            catalog=catalog,
            h5_dir=self.h5_dir,
            log_fpath=self.log_fpath('wheel'),
            sessions_fpath=self.sessions_fpath,
            progress=False,
            **kwargs,
        )

    def h5(self, eid, groups=None):
        return h5.load_h5(self.h5_dir / f'{eid}.h5', groups=groups)

    def session_dir(self, eid):
        return Path(self.one.eid2path(eid))


@pytest.fixture(scope='module')
def reference(small_cache, tmp_path_factory):
    """The two-session catalog and an undisturbed run of photometry, task and wheel on it."""
    root = tmp_path_factory.mktemp('faults_reference')
    out = Outputs(small_cache, root)
    result = query_database(
        one=out.one,
        sessions_fpath=out.sessions_fpath,
        log_fpath=out.log_fpath('query_database'),
        qc_fpath=root / 'metadata' / 'sessions_qc.pqt',
        progress=False,
    )
    full = result.catalog
    catalog = full[full['eid'].isin([FAULTY, CONTROL])].reset_index(drop=True)
    assert len(catalog) == 2
    catalog.to_parquet(out.sessions_fpath)
    out.catalog, out.full_catalog = catalog, full
    for run in (out.photometry, out.task, out.wheel):
        assert run(catalog).exit_code == 0
    return out


@pytest.fixture
def case(small_cache, reference, tmp_path, monkeypatch):
    """A fresh copy of the cache and an empty output root holding the two-session catalog."""
    monkeypatch.setattr(config, 'RETRY_BACKOFF_S', 0.0)
    executor._connect.cache_clear()
    cache = tmp_path / 'cache'
    shutil.copytree(small_cache, cache, symlinks=True)
    out = Outputs(cache, tmp_path / 'out')
    reference.catalog.to_parquet(out.sessions_fpath)
    out.catalog = reference.catalog
    yield out
    executor._connect.cache_clear()


def log_types(result, eid):
    return set(result.log.loc[result.log['eid'] == eid, 'error_type'])


def log_messages(result, eid, error_type):
    rows = result.log[(result.log['eid'] == eid) & (result.log['error_type'] == error_type)]
    return ' | '.join(rows['error_message'])


def same_h5(a, b, eid):
    """True when the photometry group of a session is identical in two output roots."""
    with h5py.File(a.h5_dir / f'{eid}.h5', 'r') as fa, h5py.File(b.h5_dir / f'{eid}.h5', 'r') as fb:
        keys_a, keys_b = [], []
        fa['photometry'].visititems(
            lambda k, o: keys_a.append(k) if isinstance(o, h5py.Dataset) else None
        )
        fb['photometry'].visititems(
            lambda k, o: keys_b.append(k) if isinstance(o, h5py.Dataset) else None
        )
        if sorted(keys_a) != sorted(keys_b):
            return False
        return all(
            np.array_equal(fa['photometry'][k][()], fb['photometry'][k][()], equal_nan=True)
            if fa['photometry'][k].dtype.kind == 'f'
            else list(fa['photometry'][k][()]) == list(fb['photometry'][k][()])
            for k in keys_a
        )


def assert_dff_like_reference(case, reference, min_finite, min_r):
    """The faulty session's stored ΔF/F against the reference run's: same length, finite
    together on more than ``min_finite`` of the samples, correlated above ``min_r``."""
    ours = case.h5(FAULTY, ['photometry'])['photometry']
    theirs = reference.h5(FAULTY, ['photometry'])['photometry']
    for region in theirs:
        a = theirs[region]['preprocessed']['dff']
        b = ours[region]['preprocessed']['dff']
        assert len(a) == len(b)
        both = np.isfinite(a) & np.isfinite(b)
        assert both.mean() > min_finite
        assert np.corrcoef(a[both], b[both])[0, 1] > min_r


def qc_rows(qc, eid):
    """A session's QC rows, sorted."""
    return qc[qc['eid'] == eid].sort_values(['brain_region', 'band']).reset_index(drop=True)


def performance_row(root, eid):
    table = pd.read_parquet(root / 'performance.pqt').set_index('eid')
    return table.loc[eid].drop('contrasts')


def assert_control_unchanged(case, reference, stage='photometry'):
    if stage == 'photometry':
        assert same_h5(case, reference, CONTROL)
        pd.testing.assert_frame_equal(
            qc_rows(pd.read_parquet(case.root / 'qc.pqt'), CONTROL),
            qc_rows(pd.read_parquet(reference.root / 'qc.pqt'), CONTROL),
        )
    elif stage == 'task':
        pd.testing.assert_series_equal(
            performance_row(case.root, CONTROL), performance_row(reference.root, CONTROL)
        )
    elif stage == 'wheel':
        np.testing.assert_array_equal(
            case.h5(CONTROL, ['wheel'])['wheel']['velocity'],
            reference.h5(CONTROL, ['wheel'])['wheel']['velocity'],
        )
    return True


# ---------------------------------------------------------------------------
# Planted file faults
# ---------------------------------------------------------------------------
def trials_path(case, eid=FAULTY):
    return case.session_dir(eid) / 'alf' / 'task_00' / '_ibl_trials.table.pqt'


def signal_path(case, eid=FAULTY):
    return case.session_dir(eid) / 'alf' / 'photometry' / 'photometry.signal.pqt'


def edit_parquet(path, edit):
    """Rewrite a parquet file with ``edit(frame)``; return the original bytes."""
    original = path.read_bytes()
    edit(pd.read_parquet(path)).to_parquet(path)
    return original


def restore(path, original):
    path.write_bytes(original)
    os.utime(path)  # a fixed file is a new file: its mtime moves on


@pytest.mark.parametrize(
    'fault, edit',
    [
        ('trials table without feedbackType', lambda t: t.drop(columns='feedbackType')),
        ('trials table without choice', lambda t: t.drop(columns='choice')),
        ('choice stored as text', lambda t: t.assign(choice=t['choice'].astype(str))),
    ],
    ids=['no-feedbackType', 'no-choice', 'text-choice'],
)
def test_bad_trials_table_is_typed_in_task_and_photometry(case, reference, fault, edit):
    path = trials_path(case)
    original = edit_parquet(path, edit)
    task = case.task(case.catalog)
    assert task.exit_code == 0
    assert log_types(task, FAULTY) == {'InvalidTrialsTable'}
    assert set(task.table['eid']) == {CONTROL}
    assert_control_unchanged(case, reference, 'task')
    phot = case.photometry(case.catalog)
    assert phot.exit_code == 0
    assert log_types(phot, FAULTY) == {'InvalidTrialsTable'}
    assert_control_unchanged(case, reference)

    restore(path, original)  # the input changed since FAULTY's H5 was written
    rerun = case.photometry(case.catalog)
    assert rerun.n_skipped == 1 and [o.eid for o in rerun.outcomes] == [FAULTY]
    assert log_types(rerun, FAULTY) == set()
    assert same_h5(case, reference, FAULTY)
    task = case.task(case.catalog)
    pd.testing.assert_series_equal(
        performance_row(case.root, FAULTY), performance_row(reference.root, FAULTY)
    )
    chaos(
        fault,
        'InvalidTrialsTable (task, photometry)',
        True,
        'fixed file: reprocessed (input changed), outputs equal the reference',
    )


def test_duplicated_photometry_timestamps(case, reference):
    path = signal_path(case)
    original = edit_parquet(
        path, lambda t: t.assign(times=t['times'].where(t.index != 500, t['times'].shift(1)))
    )
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == {'InvalidPhotometryTimes'}
    assert '1 repeated' in log_messages(result, FAULTY, 'InvalidPhotometryTimes')
    assert_control_unchanged(case, reference)
    restore(path, original)
    case.photometry(case.catalog)
    assert same_h5(case, reference, FAULTY)
    chaos(
        'duplicated photometry timestamp',
        'InvalidPhotometryTimes',
        True,
        'fixed file: reprocessed, equal to the reference',
    )


def test_corrupt_signal_file_names_the_library(case, reference):
    path = signal_path(case)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # truncated parquet
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == {'InvalidPhotometryTable'}
    assert 'pyarrow' in log_messages(result, FAULTY, 'InvalidPhotometryTable')
    assert_control_unchanged(case, reference)
    restore(path, original)
    case.photometry(case.catalog)
    assert same_h5(case, reference, FAULTY)
    chaos(
        'truncated photometry.signal.pqt',
        'InvalidPhotometryTable (pyarrow ... named)',
        True,
        'fixed file: reprocessed, equal to the reference',
    )


def test_corrupt_trials_file_is_an_invalid_table_not_a_missing_one(case, reference):
    """A truncated trials table exists but cannot be read: InvalidTrialsTable naming the
    reader's error, in the photometry and the task stage (before: MissingExtractedData, as
    if it were absent)."""
    path = trials_path(case)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    for run in (case.photometry, case.task):
        result = run(case.catalog)
        assert result.exit_code == 0
        assert log_types(result, FAULTY) == {'InvalidTrialsTable'}, run
        assert 'pyarrow' in log_messages(result, FAULTY, 'InvalidTrialsTable')
    assert_control_unchanged(case, reference)
    chaos('truncated _ibl_trials.table.pqt', 'InvalidTrialsTable', True, 'typed, not "missing"')


def locations_path(case, eid=FAULTY):
    return case.session_dir(eid) / 'alf' / 'photometry' / 'photometryROI.locations.pqt'


def raw_path(case, eid=FAULTY):
    return case.session_dir(eid) / 'raw_photometry_data' / '_neurophotometrics_fpData.raw.pqt'


def test_empty_trials_table_is_insufficient_trials_not_a_bug(case, reference):
    """A session whose trials table has no rows (no trial done, or an empty extraction):
    typed in both stages, the photometry stage does not crash on the empty task span."""
    original = edit_parquet(trials_path(case), lambda t: t.iloc[:0])
    phot = case.photometry(case.catalog)
    assert phot.exit_code == 0
    assert log_types(phot, FAULTY) == {'InsufficientTrials'}
    assert 'n_trials=0' in log_messages(phot, FAULTY, 'InsufficientTrials')
    assert_control_unchanged(case, reference)
    task = case.task(case.catalog)
    assert task.exit_code == 0
    assert 'UnexpectedError' not in log_types(task, FAULTY)
    restore(trials_path(case), original)
    case.photometry(case.catalog)
    assert same_h5(case, reference, FAULTY)
    chaos(
        'trials table with no rows',
        'InsufficientTrials',
        True,
        'fixed file: reprocessed, equal to the reference',
    )


@pytest.mark.parametrize(
    'fault, edit',
    [
        (
            'truncated raw file',
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        ),
        (
            'raw file without its LED column',
            lambda p: pd.read_parquet(p).rename(columns={'LedState': 'Led'}).to_parquet(p),
        ),
        ('raw file with no frames', lambda p: pd.read_parquet(p).iloc[:0].to_parquet(p)),
        (
            'raw file with LED states missing',
            lambda p: (
                lambda t: t.assign(LedState=t['LedState'].astype(float).where(t.index % 500 != 7))
            )(pd.read_parquet(p)).to_parquet(p),
        ),
    ],
    ids=['truncated', 'no-led-column', 'empty', 'nan-led-state'],
)
def test_unusable_raw_file_is_logged_and_raw_qc_counts_the_table(case, reference, fault, edit):
    """A raw file that cannot be read, or cannot be the recording of the extracted table, is
    an InvalidRawData row; the session is processed with raw QC on the extracted frames,
    which here are the same frames: the outputs equal the reference's."""
    path = raw_path(case)
    assert path.exists()
    edit(path)
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == {'InvalidRawData'}
    assert same_h5(case, reference, FAULTY)
    assert_control_unchanged(case, reference)
    chaos(fault, 'InvalidRawData (not fatal)', True, 'processed, equal to the reference')


@pytest.mark.parametrize(
    'fault, path_of, edit',
    [
        (
            'isosbestic band named "Iso"',
            signal_path,
            lambda t: t.assign(name=t['name'].astype(str).replace('Isosbestic', 'Iso')),
        ),
        (
            'band names in lower case',
            signal_path,
            lambda t: t.assign(name=t['name'].astype(str).str.lower()),
        ),
        ('no band names', signal_path, lambda t: t.drop(columns='name')),
        ('a text column in the signal table', signal_path, lambda t: t.assign(Rig='NPH-3')),
        ('a boolean column in the trials table', trials_path, lambda t: t.assign(extra=True)),
        ('locations written without their index', locations_path, lambda t: t.reset_index()),
    ],
    ids=[
        'iso-named-Iso',
        'lower-case',
        'no-names',
        'text-column',
        'bool-trials-column',
        'locations-roi-column',
    ],
)
def test_other_labs_words_give_the_same_outputs(case, reference, fault, path_of, edit):
    """Tables that say the same in other words: bands named otherwise (the LED decides),
    a text column beside the ROIs, a boolean trials column (ONE turns the whole table
    into objects): processed as the reference, nothing logged."""
    edit_parquet(path_of(case), edit)
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == set()
    assert same_h5(case, reference, FAULTY)
    chaos(fault, '(none)', None, 'processed, equal to the reference')


def test_roi_columns_named_by_the_locations_table(case, reference):
    """Another lab's ROI names ('Fiber0' ...: neither ``Region*`` nor ``G*``/``R*``) in
    the signal table and its locations table: the locations table says which columns are
    ROIs, so the session is processed as the reference. Before: MissingFiber per fiber."""
    locations = pd.read_parquet(locations_path(case))
    rename = {roi: f'Fiber{i}' for i, roi in enumerate(locations.index.astype(str))}
    locations.rename(index=rename).to_parquet(locations_path(case))
    edit_parquet(signal_path(case), lambda t: t.rename(columns=rename))
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == set()
    assert same_h5(case, reference, FAULTY)
    chaos('ROI columns named Fiber0 ...', '(none)', None, 'processed, equal to the reference')


def share_pair_times(t):
    """One timestamp per 470/415 pair: the second frame of each pair takes the first's."""
    lit = np.flatnonzero(t['name'].astype(str).isin(['GCaMP', 'Isosbestic']).to_numpy())
    times = t['times'].to_numpy().copy()
    times[lit[1::2]] = times[lit[0::2][: len(lit[1::2])]]
    return t.assign(times=times)


@pytest.mark.parametrize('without_raw', [False, True], ids=['raw-file', 'no-raw-file'])
def test_one_timestamp_per_band_pair_is_a_layout_not_a_fault(case, reference, without_raw):
    """An exporter that gives each 470/415 pair one time: every band's own times increase,
    so the table is read (before: InvalidPhotometryTimes, the session lost). Without the
    raw file, raw QC counts early and dropped frames per band, and inversions are NaN (the
    order within a pair is not recorded). A single repeated time is still an error
    (test_duplicated_photometry_timestamps)."""
    edit_parquet(signal_path(case), share_pair_times)
    if without_raw:
        raw_path(case).unlink()
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == set()
    qc = qc_rows(pd.read_parquet(case.root / 'qc.pqt'), FAULTY)
    assert (qc['n_early_samples'] == 0).all() and (qc['n_dropped_frames'] == 0).all()
    assert qc['n_band_inversions'].isna().all() == without_raw
    assert_dff_like_reference(case, reference, min_finite=0.99, min_r=0.99)
    chaos(
        'one timestamp per 470/415 pair' + (', no raw file' if without_raw else ''),
        '(none)',
        None,
        'processed, ΔF/F r > 0.99 with the reference',
    )


def test_frames_missing_from_one_band_are_paired_by_time(case, reference):
    """Isosbestic frames missing from the extracted table only (the raw file is whole):
    the bands are paired by time, not by position, so the signal stays aligned; the
    missing frames are NaN (masked) instead of shifting every later pair."""

    def drop(t):
        iso = t.index[t['name'].astype(str) == 'Isosbestic']
        return t.drop(iso[50::400]).reset_index(drop=True)

    edit_parquet(signal_path(case), drop)
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert 'UnexpectedError' not in log_types(result, FAULTY)
    assert_dff_like_reference(case, reference, min_finite=0.9, min_r=0.99)
    chaos(
        'isosbestic frames missing from the extracted table',
        '(warning: paired by time)',
        None,
        'processed, ΔF/F r > 0.99 with the reference',
    )


def test_a_dropped_camera_frame_is_counted_not_fatal(case, reference):
    """One isosbestic frame dropped by the camera (gone from the raw file and from the
    extracted table): the LED labels stay in phase with the frame clock, so it is one
    dropped frame, not a band inversion. Before, the session was lost (BandInversion
    n=1, fatal); now it is processed, aligned with the reference."""
    raw, table = pd.read_parquet(raw_path(case)), pd.read_parquet(signal_path(case))
    assert len(raw) == len(table)  # one row per camera frame in both
    iso = np.flatnonzero(table['name'].astype(str).to_numpy() == 'Isosbestic')
    frame = iso[len(iso) // 2]
    raw.drop(index=raw.index[frame]).to_parquet(raw_path(case))
    table.drop(index=table.index[frame]).reset_index(drop=True).to_parquet(signal_path(case))
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == set()
    qc = qc_rows(pd.read_parquet(case.root / 'qc.pqt'), FAULTY)
    assert (qc['n_band_inversions'] == 0).all()
    assert (qc['n_dropped_frames'] == 1).all()
    assert_dff_like_reference(case, reference, min_finite=0.99, min_r=0.999)
    chaos(
        'one camera frame dropped (raw and extracted)',
        '(none: n_dropped_frames 1)',
        None,
        'processed, ΔF/F r > 0.999 with the reference',
    )


def test_a_single_led_recording_has_no_alternation_to_break(case, reference):
    """A rig that records 470 nm only, every frame (no isosbestic, no dark frames: the
    isosbestic frames removed from both files): nothing alternates, so no frame is a band
    inversion; the session is processed single-band (before: every frame an inversion,
    BandInversion, the session lost)."""
    raw, table = pd.read_parquet(raw_path(case)), pd.read_parquet(signal_path(case))
    iso = (raw['LedState'].to_numpy() & 7) == 1
    raw[~iso].to_parquet(raw_path(case))
    table[~iso].reset_index(drop=True).to_parquet(signal_path(case))
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == set()
    qc = qc_rows(pd.read_parquet(case.root / 'qc.pqt'), FAULTY)
    assert set(qc['band']) == {'GCaMP'}
    assert qc['n_band_inversions'].isna().all() and (qc['n_dropped_frames'] == 0).all()
    stored = case.h5(FAULTY, ['photometry'])['photometry']
    assert all(np.isfinite(stored[r]['preprocessed']['dff']).mean() > 0.9 for r in stored)
    chaos('470 nm frames only (no isosbestic, no dark frames)', '(none)', None, 'single-band')


def test_trials_of_two_task_runs_are_ambiguous_not_missing(case, reference):
    """A session with two task collections (alf/task_00 and alf/task_01, each with trials and
    wheel): typed AmbiguousTaskCollection naming both, in photometry and task (the wheel stage
    then finds no trials in the HDF5 file); before, it read as MissingExtractedData
    (brainbox's ALFMultipleCollectionsFound wrapped)."""
    from iblnm.onecache import build_one_tables

    def relist():  # the ONE tables from the folders on disk; connections that read them anew
        build_one_tables(case.cache)
        case.one = One(cache_dir=str(case.cache), mode='local')
        executor._connect.cache_clear()

    task_00 = case.session_dir(FAULTY) / 'alf' / 'task_00'
    task_01 = task_00.with_name('task_01')
    shutil.copytree(task_00, task_01)
    relist()
    for stage in (case.photometry, case.task):
        result = stage(case.catalog)
        assert result.exit_code == 0
        assert log_types(result, FAULTY) == {'AmbiguousTaskCollection'}, stage
        message = log_messages(result, FAULTY, 'AmbiguousTaskCollection')
        assert 'alf/task_00, alf/task_01' in message
    wheel_result = case.wheel(case.catalog)  # reads the trials the photometry stage saves
    assert log_types(wheel_result, FAULTY) == {'MissingExtractedData'}
    cause = log_messages(wheel_result, FAULTY, 'MissingExtractedData')
    assert 'no trials' in cause and 'the photometry stage logged AmbiguousTaskCollection' in cause
    assert_control_unchanged(case, reference)
    shutil.rmtree(task_01)
    relist()
    rerun = case.photometry(case.catalog)
    assert log_types(rerun, FAULTY) == set()
    assert same_h5(case, reference, FAULTY)
    chaos(
        'trials and wheel in two task collections',
        'AmbiguousTaskCollection (photometry, task; both collections named)',
        True,
        'one collection again: reprocessed, equal to the reference',
    )


@pytest.mark.parametrize(
    'fault, edit, error_type',
    [
        (
            'fiber column missing from the signal table',
            lambda t: t.drop(columns='G1'),
            'MissingFiber',
        ),
        ('all-NaN fiber', lambda t: t.assign(G1=np.nan), 'BadFiber'),
        ('constant fiber (dead channel at the floor)', lambda t: t.assign(G1=1 / 255), 'BadFiber'),
    ],
    ids=['missing-column', 'all-nan', 'constant'],
)
def test_one_bad_fiber_is_dropped_and_the_other_goes_on(case, reference, fault, edit, error_type):
    path = signal_path(case)
    edit_parquet(path, edit)
    result = case.photometry(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == {error_type}
    assert 'G1 (VTA-r)' in log_messages(result, FAULTY, error_type)
    assert_control_unchanged(case, reference)
    with (
        h5py.File(case.h5_dir / f'{FAULTY}.h5', 'r') as a,
        h5py.File(reference.h5_dir / f'{FAULTY}.h5', 'r') as b,
    ):
        assert set(b['photometry']) == {'SNc', 'VTA'}
        assert set(a['photometry']) == {'SNc', 'VTA'} and set(a['photometry/VTA']) == {'qc'}
        np.testing.assert_array_equal(
            a['photometry/SNc/preprocessed/signal'][()], b['photometry/SNc/preprocessed/signal'][()]
        )
    # the dropped fiber is counted: a FAIL row per band, and the same after a resumed run
    rows = qc_rows(result.table, FAULTY)
    dropped = rows[rows['brain_region'] == 'VTA']
    assert list(dropped['band']) == ['GCaMP', 'Isosbestic']
    assert set(dropped['verdict']) == {'FAIL'} and set(dropped['verdict_reasons']) == {
        'dropped_fiber'
    }

    def saved_rows(out):  # what a resumed run reads back from the HDF5 file
        saved = photometry.outcome_from_h5(FAULTY, out.h5_dir).rows
        return qc_rows(photometry.order_qc_columns(pd.DataFrame(saved)), FAULTY)

    pd.testing.assert_frame_equal(saved_rows(case)[rows.columns], rows)
    # and in the same order as the fresh table (the HDF5 file holds regions in name order)
    fresh = result.table[result.table['eid'] == FAULTY].reset_index(drop=True)
    resumed = photometry.order_qc_columns(
        pd.DataFrame(photometry.outcome_from_h5(FAULTY, case.h5_dir).rows)
    )
    pd.testing.assert_frame_equal(resumed[fresh.columns], fresh)
    kept, expected = (
        table[table['brain_region'] == 'SNc'].drop(columns=['dropped_fiber'], errors='ignore')
        for table in (rows, saved_rows(reference))
    )
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), expected[kept.columns])
    chaos(
        fault,
        f'{error_type} (fiber dropped; a FAIL row `dropped_fiber` per band)',
        True,
        "the session's other fiber processed, identical to the reference",
    )


def test_non_monotonic_wheel_timestamps(case, reference):
    assert case.photometry(case.catalog).exit_code == 0
    path = case.session_dir(FAULTY) / 'alf' / 'task_00' / '_ibl_wheel.timestamps.npy'
    original = path.read_bytes()
    times = np.load(path)
    times[100:110] = times[100:110][::-1]
    np.save(path, times)
    result = case.wheel(case.catalog)
    assert result.exit_code == 0
    assert log_types(result, FAULTY) == {'InvalidWheelData'}
    assert 'wheel' not in case.h5(FAULTY)
    assert_control_unchanged(case, reference, 'wheel')
    restore(path, original)
    case.wheel(case.catalog)
    np.testing.assert_array_equal(
        case.h5(FAULTY, ['wheel'])['wheel']['velocity'],
        reference.h5(FAULTY, ['wheel'])['wheel']['velocity'],
    )
    chaos(
        'non-monotonic wheel timestamps',
        'InvalidWheelData',
        True,
        'fixed file: wheel group written, equal to the reference',
    )


# ---------------------------------------------------------------------------
# Transient failures and bugs
# ---------------------------------------------------------------------------
class Outage:
    """Make ONE's loads of FAULTY's files raise ``requests.ConnectionError`` while on.

    The loaders' listing of the session's dataset records fails too: in local mode they
    take the files from those records without calling ``load_dataset``/``load_object``
    (in remote mode the listing is an Alyx request).
    """

    def __init__(self, monkeypatch, failures=None):
        from iblnm.loaders import PhotometrySessionLoader

        self.failures = failures  # None: for ever; n: the first n loads only
        self.calls = 0
        for name in ('load_dataset', 'load_object'):
            original = getattr(One, name)
            monkeypatch.setattr(One, name, self._wrap(original))
        records = PhotometrySessionLoader._records
        listing = self._wrap(lambda _one, _eid, loader: records(loader))
        monkeypatch.setattr(
            PhotometrySessionLoader, '_records', lambda loader: listing(None, loader.eid, loader)
        )

    def _wrap(self, original):
        outage = self

        def load(one, eid, *args, **kwargs):
            if str(eid) == FAULTY and (outage.failures is None or outage.calls < outage.failures):
                outage.calls += 1
                raise requests.exceptions.ConnectionError('Max retries exceeded (planted outage)')
            return original(one, eid, *args, **kwargs)

        return load


def test_transient_failure_is_retried_and_not_done(case, reference, monkeypatch):
    outage = Outage(monkeypatch)
    result = case.photometry(case.catalog)
    assert result.exit_code == 0  # only a session failed
    assert log_types(result, FAULTY) == {'RequestFailed'}
    assert 'requests.exceptions.ConnectionError' in log_messages(result, FAULTY, 'RequestFailed')
    (failed,) = result.of_kind('transient')
    assert failed.attempts == config.RETRY_ATTEMPTS
    assert 'the next run retries them): 1' in result.summary()
    assert not (case.h5_dir / f'{FAULTY}.h5').exists()  # not "done"
    assert_control_unchanged(case, reference)

    outage.failures = 0  # the outage is over
    rerun = case.photometry(case.catalog)
    assert [o.eid for o in rerun.outcomes] == [FAULTY] and rerun.n_skipped == 1
    assert same_h5(case, reference, FAULTY)
    chaos(
        'connection error on every download of one session',
        'RequestFailed (3 attempts)',
        True,
        'not done; the next run processes it, equal to the reference',
    )


def test_transient_failure_recovers_within_the_run(case, reference, monkeypatch):
    Outage(monkeypatch, failures=1)
    result = case.photometry(case.catalog)
    (outcome,) = [o for o in result.outcomes if o.eid == FAULTY]
    assert outcome.attempts == 2 and outcome.fatal is None
    assert log_types(result, FAULTY) == set()
    assert same_h5(case, reference, FAULTY)
    chaos('one failed download', 'none (retried within the run)', True, 'nothing to rerun')


def test_failed_download_from_alyx_is_transient(reference, tmp_path, monkeypatch):
    """Remote mode against the loopback Alyx: HTTP 503 on FAULTY's photometry files."""
    from types import SimpleNamespace

    from alyx_server import AlyxServer, connect, write_one_params
    from one.api import ONE

    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.setattr(config, 'RETRY_BACKOFF_S', 0.0)
    ONE.cache_clear()
    server = AlyxServer(reference.cache, page_size=50).start()
    try:
        write_one_params(server, tmp_path / 'one_params')
        one = connect(server, tmp_path / 'one_remote')
        monkeypatch.setattr(executor, '_connect', lambda mode, cache_dir: one)
        rel = reference.session_dir(FAULTY).relative_to(reference.cache).as_posix()
        server.fail(f'/files/{rel}/alf/photometry/*', times=None, status=503)
        out = SimpleNamespace(h5_dir=tmp_path / 'sessions')

        def run():
            return photometry.run_photometry_stage(
                one=one,
                catalog=reference.catalog,
                h5_dir=out.h5_dir,
                qc_fpath=tmp_path / 'qc.pqt',
                log_fpath=tmp_path / 'log.pqt',
                sessions_fpath=tmp_path / 'sessions.pqt',
                upstream_logs=(),
                progress=False,
            )

        first = run()
        assert first.exit_code == 0
        assert log_types(first, FAULTY) == {'RequestFailed'}
        assert log_types(first, CONTROL) == set()
        assert not (out.h5_dir / f'{FAULTY}.h5').exists()
        assert same_h5(out, reference, CONTROL)
        server.clear_faults()
        second = run()
        assert [o.eid for o in second.outcomes] == [FAULTY] and second.n_skipped == 1
        assert same_h5(out, reference, FAULTY)
    finally:
        server.stop()
        ONE.cache_clear()
    chaos(
        "HTTP 503 on one session's photometry downloads (remote Alyx)",
        'RequestFailed',
        True,
        'not done; after the outage the next run processes it, equal to local',
    )


def plant_bug(monkeypatch, cls, name):
    original = getattr(cls, name)

    def broken(self, *args, **kwargs):
        if self.eid == FAULTY:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str' (planted)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, broken)


def test_programming_error_is_unexpected_and_retried(case, reference, monkeypatch):
    plant_bug(monkeypatch, PhotometrySession, 'preprocess')
    result = case.photometry(case.catalog)
    assert result.exit_code == 1
    assert log_types(result, FAULTY) == {'UnexpectedError'}
    row = result.log[result.log['error_type'] == 'UnexpectedError'].iloc[0]
    assert row['error_message'].startswith('TypeError: ')
    assert 'in broken' in row['traceback']
    assert 'UNEXPECTED errors' in result.summary()
    assert not (case.h5_dir / f'{FAULTY}.h5').exists()
    assert_control_unchanged(case, reference)
    monkeypatch.undo()
    rerun = case.photometry(case.catalog)
    assert [o.eid for o in rerun.outcomes] == [FAULTY] and rerun.exit_code == 0
    assert same_h5(case, reference, FAULTY)

    plant_bug(monkeypatch, PhotometrySession, 'basic_performance')
    task = case.task(case.catalog)
    assert task.exit_code == 1 and log_types(task, FAULTY) == {'UnexpectedError'}
    assert_control_unchanged(case, reference, 'task')
    chaos(
        'TypeError planted in a stage',
        'UnexpectedError (traceback kept)',
        True,
        'stage exits 1; the next run retries the session',
    )


# ---------------------------------------------------------------------------
# Catalogs: empty, filtered out, malformed
# ---------------------------------------------------------------------------
def run_every_stage(case, catalog):
    results = [
        case.photometry(catalog),
        case.task(catalog),
        case.wheel(catalog),
        run_video_stage(
            one=case.one,
            catalog=catalog,
            video_fpath=case.root / 'video.pqt',
            log_fpath=case.log_fpath('video'),
            sessions_fpath=case.sessions_fpath,
            qc_fpath=None,
            upstream_logs=(),
            progress=False,
        ),
    ]
    catalog.to_parquet(case.sessions_fpath)
    result = overview.run_dataset_overview(
        sessions_fpath=case.sessions_fpath,
        logs={'photometry': case.log_fpath('photometry')},
        qc_fpath=case.root / 'qc.pqt',
        errors_fpath=case.root / 'errors.pqt',
        figure_dir=case.root / 'figures',
    )
    return results, result


@pytest.mark.parametrize('which', ['empty', 'all-filtered'])
def test_empty_selection_reports_zero_sessions(case, reference, which):
    catalog = (
        reference.full_catalog.iloc[:0]
        if which == 'empty'
        else (reference.catalog.assign(session_type='habituation'))
    )
    results, over = run_every_stage(case, catalog)
    for result in results:
        assert result.n_selected == 0 and result.exit_code == 0
        assert 'sessions selected 0' in result.summary()
    assert len(over.recordings) == 0
    chaos(
        f'{which} catalog',
        'none: "sessions selected 0"',
        None,
        'every stage exits 0; the overview runs',
    )


def test_malformed_catalog_is_logged_and_the_overview_runs(case, reference):
    catalog = reference.catalog.copy()
    upper = catalog.iloc[[1]].assign(eid=CONTROL.upper())
    twin = catalog.iloc[[0]]
    catalog.at[0, 'hemisphere'] = ['r']  # FAULTY: 2 regions, 1 hemisphere
    catalog = pd.concat(
        [catalog.iloc[[0]], upper, twin.assign(hemisphere=[['r']]), upper], ignore_index=True
    )
    results, over = run_every_stage(case, catalog)
    phot = results[0]
    assert phot.exit_code == 0
    assert log_types(phot, FAULTY) == {'MismatchedParallelLists', 'DuplicateEid'}
    assert log_types(phot, CONTROL) == {'DuplicateEid'}
    assert [o.eid for o in phot.outcomes] == [CONTROL]  # lower case, once
    assert sorted(p.name for p in case.h5_dir.glob('*.h5')) == [f'{CONTROL}.h5']
    assert list(phot.table['eid'].unique()) == [CONTROL]
    assert same_h5(case, reference, CONTROL)
    assert {'MismatchedParallelLists', 'DuplicateEid'} <= set(over.errors['error_type'])
    again = case.photometry(catalog)
    assert again.n_skipped == 1 and not again.outcomes  # the upper-case eid is done
    chaos(
        'duplicated eid, upper-case eid, mismatched parallel lists',
        'DuplicateEid, MismatchedParallelLists',
        True,
        'eid normalised: skipped as done; the overview runs',
    )


def test_unreadable_catalog_is_a_typed_stage_error(case):
    case.sessions_fpath.write_bytes(b'not a parquet file')
    with pytest.raises(v.InvalidCatalog, match='pyarrow'):
        case.photometry(None)
    with pytest.raises(v.InvalidCatalog, match='no column eid'):
        case.task(pd.DataFrame({'subject': ['a']}))


# ---------------------------------------------------------------------------
# --redo, disk full, permissions
# ---------------------------------------------------------------------------
def test_redo_keeps_the_wheel_group(case, reference):
    case.photometry(case.catalog)
    case.wheel(case.catalog)
    before = case.h5(FAULTY, ['wheel'])['wheel']['velocity']
    redo = case.photometry(case.catalog, redo=True)
    assert len(redo.outcomes) == 2
    for eid in (FAULTY, CONTROL):
        np.testing.assert_array_equal(
            case.h5(eid, ['wheel'])['wheel']['velocity'],
            reference.h5(eid, ['wheel'])['wheel']['velocity'],
        )
    assert before.shape == case.h5(FAULTY, ['wheel'])['wheel']['velocity'].shape
    chaos(
        'photometry --redo after the wheel stage',
        'none',
        True,
        'wheel group kept (trials unchanged)',
    )


def test_disk_full_stops_the_stage_cleanly(case, reference, monkeypatch):
    usage = shutil.disk_usage(case.root)
    monkeypatch.setattr(photometry.shutil, 'disk_usage', lambda _: usage._replace(free=10**6))
    result = case.photometry(case.catalog)
    assert result.exit_code == 1
    (stopped,) = result.of_kind('output')
    assert stopped.fatal == 'OutputWriteError'
    assert result.n_not_run == 1  # the stage stopped after the first failed write
    assert 'STOPPED: output could not be written' in result.summary()
    assert not list(case.h5_dir.glob('*.h5')) and not list(case.h5_dir.glob('.*tmp'))
    monkeypatch.undo()
    rerun = case.photometry(case.catalog)
    assert rerun.exit_code == 0 and len(rerun.outcomes) == 2
    assert same_h5(case, reference, FAULTY) and same_h5(case, reference, CONTROL)
    chaos(
        'disk full (free space below MIN_FREE_BYTES)',
        'OutputWriteError; stage stopped',
        True,
        'nothing half-written; the next run does every session',
    )


@pytest.mark.parametrize(
    'error',
    [
        PermissionError(errno.EACCES, 'Permission denied'),
        OSError(errno.ENOSPC, 'No space left on device'),
    ],
    ids=['permission', 'enospc'],
)
def test_failed_h5_write_is_an_output_error(case, reference, monkeypatch, error):
    original = h5.save_h5

    def failing(fpath, data, mode='a'):
        if FAULTY in str(fpath):

            def write(tmp):
                Path(tmp).write_bytes(b'partial')
                raise error

            from iblnm.util import atomic_write

            return atomic_write(fpath, write, suffix='.h5.tmp')
        return original(fpath, data, mode=mode)

    monkeypatch.setattr(h5, 'save_h5', failing)
    result = case.photometry(case.catalog)
    assert result.exit_code == 1
    assert log_types(result, FAULTY) == {'OutputWriteError'}
    assert type(error).__name__ in log_messages(result, FAULTY, 'OutputWriteError')
    assert not list(case.h5_dir.glob('.*tmp')) and not (case.h5_dir / f'{FAULTY}.h5').exists()
    monkeypatch.undo()
    case.photometry(case.catalog)
    assert same_h5(case, reference, FAULTY)
    chaos(
        f'{errno.errorcode[error.errno]} ({type(error).__name__}) while writing an H5',
        'OutputWriteError; stage stopped',
        True,
        'no file and no .tmp left; the next run writes it',
    )


# ---------------------------------------------------------------------------
# Scripts and the runner in subprocesses
# ---------------------------------------------------------------------------
def script_env(case):
    env = {**os.environ, 'IBLNM_ONE_CACHE': str(case.cache), 'IBLNM_ROOT': str(case.root)}
    env.pop('IBLNM_ONE_MODE', None)
    return env


def rerun_in_process(case):
    """The photometry stage on the outputs of ``scripts/photometry.py`` under ``case.root``."""
    return photometry.run_photometry_stage(
        one=case.one,
        catalog=None,
        h5_dir=case.root / 'data' / 'sessions',
        qc_fpath=case.root / 'data' / 'qc_photometry.pqt',
        log_fpath=case.root / 'metadata' / 'photometry_log.pqt',
        sessions_fpath=case.sessions_fpath,
        upstream_logs=(),
        progress=False,
    )


def test_runner_exits_zero_when_only_sessions_fail(case, reference):
    edit_parquet(trials_path(case), lambda t: t.drop(columns='feedbackType'))
    result = subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'run_pipeline.py'), '--from', 'photometry'],
        env=script_env(case),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split('Pipeline summary')[-1]
    lines = {line.split()[0]: line for line in summary.strip().splitlines() if line.strip()}
    assert '1 sessions with errors: InvalidTrialsTable 1' in lines['photometry']
    assert '1 sessions with errors: InvalidTrialsTable 1' in lines['task']
    performance_table = pd.read_parquet(case.root / 'data' / 'performance.pqt')
    assert list(performance_table['eid']) == [CONTROL]
    chaos(
        'runner, one session without feedbackType',
        'InvalidTrialsTable',
        True,
        'runner exits 0; summary counts it in photometry and task',
    )


PLANTED = """
import runpy, sys
from iblnm.data import PhotometrySession
original = PhotometrySession.preprocess
def broken(self, *args, **kwargs):
    if self.eid == {eid!r}:
        raise TypeError('planted bug')
    return original(self, *args, **kwargs)
PhotometrySession.preprocess = broken
sys.argv = ['photometry.py']
runpy.run_path({script!r}, run_name='__main__')
"""


def test_photometry_script_exits_nonzero_on_a_bug_and_the_next_run_retries(case, reference):
    (case.root / 'metadata').mkdir(exist_ok=True)
    reference.catalog.to_parquet(case.root / 'metadata' / 'sessions.pqt')
    script = str(REPO / 'scripts' / 'photometry.py')
    code = PLANTED.format(eid=FAULTY, script=script)
    first = subprocess.run(
        [sys.executable, '-c', code], env=script_env(case), capture_output=True, text=True
    )
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert 'UNEXPECTED errors' in first.stdout
    log = pd.read_parquet(case.root / 'metadata' / 'photometry_log.pqt')
    assert list(log['error_type']) == ['UnexpectedError']
    second = rerun_in_process(case)  # the script's output layout, without a second interpreter
    assert second.exit_code == 0 and 'processed now 1, skipped (already done) 1' in second.summary()
    assert len(second.log) == 0


def _file_size_limit(n_bytes):
    def limit():  # in the child: writes beyond n_bytes fail with EFBIG, as on a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


def test_real_write_failure_in_libhdf5_is_a_clean_stop(case, reference):
    """A file-size limit makes libhdf5's own writes fail (errno 27, like ENOSPC), past the
    free-space check: the stage stops with an OutputWriteError row and a summary, exit 1."""
    script = str(REPO / 'scripts' / 'photometry.py')
    first = subprocess.run(
        [sys.executable, script],
        env=script_env(case),
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(200_000),
    )
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert 'STOPPED: output could not be written' in first.stdout
    assert 'File too large' in first.stdout
    log = pd.read_parquet(case.root / 'metadata' / 'photometry_log.pqt')
    assert list(log['error_type']) == ['OutputWriteError']
    h5_dir = case.root / 'data' / 'sessions'
    assert not list(h5_dir.glob('*.h5')) and not list(h5_dir.glob('.*'))
    second = rerun_in_process(case)
    assert second.exit_code == 0 and 'processed now 2, skipped (already done) 0' in second.summary()
    chaos(
        'file-size limit: libhdf5 write fails (EFBIG)',
        'OutputWriteError; stage stopped',
        True,
        'exit 1 with a summary, no crash; the next run writes both sessions',
    )


def children(pid):
    """Pids of the live processes whose parent is ``pid``."""
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != 'Z':
            found.append(int(stat.parent.name))
    return found


def alive(pid):
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError:
        return False
    return fields[0] != 'Z'


@pytest.mark.skipif(not Path('/proc').exists(), reason='needs /proc (Linux)')
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL], ids=['SIGTERM', 'SIGKILL'])
def test_no_worker_outlives_its_runner(case, reference, sig):
    process = subprocess.Popen(
        [sys.executable, str(REPO / 'scripts' / 'photometry.py'), '--workers', '2'],
        env=script_env(case),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    workers = []
    while time.monotonic() < deadline and process.poll() is None and len(workers) < 2:
        workers = children(process.pid)
        time.sleep(0.1)
    assert len(workers) >= 2, 'the pool did not start'
    time.sleep(0.5)  # the workers are inside their sessions
    os.kill(process.pid, sig)
    process.wait(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], 'a worker outlived its runner'
    n_files = len(list((case.root / 'data' / 'sessions').glob('*.h5')))
    time.sleep(1.0)
    assert len(list((case.root / 'data' / 'sessions').glob('*.h5'))) == n_files
    chaos(
        f'{sig.name} to a --workers 2 photometry run',
        'none (interrupted)',
        None,
        'both workers gone within 15 s; no file written after the kill',
    )


def test_catalog_bug_is_unexpected_deferred_and_retried(reference, tmp_path, monkeypatch):
    from iblnm import util
    from iblnm.pipeline import catalog as catalog_stage

    original = util.get_session_length.__wrapped__

    @v.exception_logger
    def broken(session):
        if session['eid'] == FAULTY:
            raise AttributeError("'NoneType' object has no attribute 'days' (planted)")
        return original(session)

    monkeypatch.setattr(catalog_stage.util, 'get_session_length', broken)
    paths = {
        'sessions_fpath': tmp_path / 'sessions.pqt',
        'log_fpath': tmp_path / 'log.pqt',
        'qc_fpath': tmp_path / 'qc.pqt',
    }
    first = query_database(one=reference.one, progress=False, **paths)
    assert first.unexpected == [FAULTY] and FAULTY in first.deferred
    assert FAULTY not in set(first.catalog['eid'])
    log = pd.read_parquet(paths['log_fpath'])
    row = log[log['eid'] == FAULTY].iloc[0]
    assert row['error_type'] == 'UnexpectedError' and row['error_message'].startswith(
        'AttributeError'
    )
    assert 'UNEXPECTED errors' in first.summary()
    monkeypatch.undo()
    second = query_database(one=reference.one, progress=False, **paths)
    assert (second.n_new, second.deferred, second.unexpected) == (1, [], [])
    pd.testing.assert_frame_equal(second.catalog, reference.full_catalog)
    chaos(
        'AttributeError planted in the catalog stage',
        'UnexpectedError (deferred)',
        True,
        'query_database exits 1; the next run queries the session again',
    )
