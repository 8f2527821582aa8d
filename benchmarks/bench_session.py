"""Benchmark: the whole per-session photometry path, end to end, against ibl-photometry and
against the cost of reading the input files.

Datasets: the real CQ002 session (two fibers, 46 min) and a simulated 1 h two-fiber
session, each in a local ONE cache built here in a temporary folder, with the real md5
of every file in ``datasets.pqt`` (as a real user's cache has, so that loading verifies
the files as it would for them).

Per dataset, in the same run, each in its own subprocess (its own peak memory):

- **iblnm**: the public :class:`iblnm.data.PhotometrySession` API, step by step as the
  photometry stage runs it: load trials → load photometry → raw QC (+ validate) →
  sliding QC → preprocess → responses → save H5; then ``load_h5`` of the whole file and of
  one region.
- **ibl-photometry 0.3.4**: its ``fpio.PhotometrySessionLoader.load_photometry`` (which
  loads the trials) + ``qc.qc_signals`` (the sliding metrics it has: 5 of our 10) +
  ``pipelines.isosbestic_correction_pipeline`` per fiber: fewer steps than ours (no raw
  QC, no responses, no file written).
- **floor**: ``pyarrow.parquet.read_table`` of the same input files (all columns), and
  ``hashlib`` md5 of them.

Times are medians of ``--rounds`` × ``--repeats`` runs: the implementations run in turn
(iblnm, ibl-photometry, floor, iblnm, ...) ``--rounds`` times (default 3), each time in a
fresh process with one warm-up, on a fresh session object each run with the same ONE
instance (as a stage worker). "First run" is the first run
of a fresh process (modules imported beforehand) with an empty hash memo: every file is
hashed once. Peak memory: max
RSS of the process (imports included) and the tracemalloc peak of one run.

Usage: ``.venv/bin/python benchmarks/bench_session.py [--repeats 5] [--rounds 3] [--no-readme]``;
``--h5-dir data/sessions`` only reports the sizes of a pipeline run's HDF5 files.
"""

import argparse
import datetime
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402

from iblnm import config  # noqa: E402
from iblnm.util import session_threads  # noqa: E402

DATASETS = ('CQ002', 'simulated 1 h')
IMPLEMENTATIONS = ('iblnm', 'ibl-photometry', 'floor')
INPUTS = (
    '_ibl_trials.table.pqt',
    'photometry.signal.pqt',
    'photometryROI.locations.pqt',
    '_neurophotometrics_fpData.raw.pqt',
)


# ---------------------------------------------------------------------------
# Caches (built by the parent, in a temporary folder)
# ---------------------------------------------------------------------------
def build_cq002(root):
    """A local cache holding the real sessions (copied), with md5 hashes; CQ002's eid."""
    from iblnm.onecache import session_eid
    from iblnm.realdata import add_real_sessions

    add_real_sessions(root, copy=True)
    return session_eid('cortexlab', 'CQ002', '2024-11-05', 1)


def build_simulated(root):
    """A simulated cache with one fault-free 1 h task session of a two-fiber mouse."""
    import pandas as pd

    from iblnm.onecache import build_one_tables
    from iblnm.simulate import generate

    for seed in range(20):
        generate(
            root,
            preset='small',
            seed=seed,
            mice_per_nm={'DA': 1},
            n_sessions=1,
            strainless_sessions=0,
            task_minutes=(60.0, 60.0),
            fault_fraction=0.0,
            all_faults=False,
            camera_fault_fraction=0.0,
        )
        eid = pd.read_parquet(Path(root) / 'sessions.pqt').index[0]
        locations = list(Path(root).rglob('photometryROI.locations.pqt'))
        if len(locations) == 1 and len(pd.read_parquet(locations[0])) == 2:
            build_one_tables(root, hashes=True)
            return str(eid)
    raise RuntimeError('no two-fiber session in 20 seeds')


def session_row(one, eid):
    """The catalog fields PhotometrySession uses (regions from the locations file)."""
    import pandas as pd

    path = one.load_dataset(eid, 'photometryROI.locations.pqt', download_only=True)
    from iblnm.validation import strip_hemisphere_suffix

    regions = [strip_hemisphere_suffix(str(r)) for r in pd.read_parquet(path)['brain_region']]
    return {'eid': eid, 'subject': one.get_details(eid)['subject'], 'brain_region': regions}


def input_files(one, eid):
    session = Path(one.eid2path(eid))
    return [next(session.rglob(name)) for name in INPUTS]


# ---------------------------------------------------------------------------
# The three implementations: each returns {step: seconds}
# ---------------------------------------------------------------------------
def _timer():
    """``(timings, lap)``: ``lap(step)`` adds the wall and CPU seconds since the last lap.

    ``timings[step] = wall s`` and ``timings['cpu:' + step] = CPU s`` (user + system of this
    process: what the step costs whatever else runs on the machine).
    """
    timings, last = {}, [time.perf_counter(), time.process_time()]

    def lap(step):
        now = time.perf_counter(), time.process_time()
        timings[step] = timings.get(step, 0.0) + now[0] - last[0]
        timings['cpu:' + step] = timings.get('cpu:' + step, 0.0) + now[1] - last[1]
        last[:] = now

    return timings, lap


def _medians(runs, cpu):
    steps = [k for k in runs[0] if k.startswith('cpu:') == cpu]
    per_step = {k.removeprefix('cpu:'): float(np.median([r[k] for r in runs])) for k in steps}
    total = float(np.median([sum(r[k] for k in steps) for r in runs]))
    return per_step, total


def run_iblnm(one, eid, row, h5_dir):
    from iblnm import validation as v
    from iblnm.data import PhotometrySession

    timings, lap = _timer()
    ps = PhotometrySession(row, one=one, h5_dir=h5_dir)
    ps.load_trials()
    lap('load trials')
    ps.load_photometry()
    ps.validate_trials_in_photometry_time()
    lap('load photometry')
    ps.run_raw_qc()
    ps.validate_qc()
    lap('raw QC')
    ps.run_sliding_qc()
    try:
        ps.validate_few_unique_samples()
    except v.FewUniqueSamples:
        pass
    lap('sliding QC')
    ps.preprocess()
    lap('preprocess')
    ps.validate_n_trials()
    ps.extract_responses()
    lap('responses')
    ps.save_h5(mode='w')
    lap('save H5')
    return timings


def run_h5_reads(path, region):
    from iblnm import h5

    timings, lap = _timer()
    h5.load_h5(path)
    lap('load_h5 whole file')
    h5.load_h5(path, groups=['photometry'], regions=[region])
    lap('load_h5 one region')
    return timings


def run_theirs(one, eid):
    import iblphotometry.fpio as fpio  # import first: circular import in 0.3.4
    from iblphotometry import metrics, pipelines, qc

    timings, lap = _timer()
    loader = fpio.PhotometrySessionLoader(one=one, eid=eid)
    loader.load_photometry()
    bands = loader.photometry
    lap('load trials + photometry')
    qc.qc_signals(
        bands,
        # the metrics it has (5 of our 10: the rate/ADC-independent ones are iblnm's own)
        [getattr(metrics, name) for name in config.QC_SLIDING_METRICS if hasattr(metrics, name)],
        metrics_kwargs=config.QC_METRICS_KWARGS,
        sliding_kwargs=dict(config.QC_SLIDING_KWARGS),
    )
    lap('sliding QC')
    for fiber in bands['GCaMP'].columns:
        pipelines.run_pipeline(
            pipelines.isosbestic_correction_pipeline,
            bands['GCaMP'][fiber],
            bands['Isosbestic'][fiber],
        )
    lap('preprocess')
    return timings


def run_floor(files):
    import pyarrow.parquet as pq

    timings, lap = _timer()
    for f in files:
        pq.read_table(f)
    lap('read (pyarrow)')
    for f in files:
        with open(f, 'rb') as handle:
            hashlib.file_digest(handle, 'md5')
    lap('md5 (hashlib)')
    return timings


# ---------------------------------------------------------------------------
# Worker (one implementation × one dataset, in a subprocess) and driver
# ---------------------------------------------------------------------------
def worker(implementation, cache, eid, repeats):
    from one.api import One

    from iblnm.integrity import MEMO_DIRNAME

    shutil.rmtree(Path(cache) / MEMO_DIRNAME, ignore_errors=True)  # first run: cold memo
    one = One(cache_dir=str(cache), mode='local')
    out = {}
    h5_dir = Path(tempfile.mkdtemp(prefix='bench_session_h5_'))
    if implementation == 'iblnm':
        row = session_row(one, eid)

        def run():
            return run_iblnm(one, eid, row, h5_dir)
    elif implementation == 'ibl-photometry':

        def run():
            return run_theirs(one, eid)
    else:
        files = input_files(one, eid)
        out['input_mb'] = sum(f.stat().st_size for f in files) / 1e6

        def run():
            return run_floor(files)

    _imports(implementation)  # one-off import costs are not part of the first run
    tic = time.perf_counter()
    run()
    out['first_run_s'] = time.perf_counter() - tic
    runs = [run() for _ in range(repeats)]
    tracemalloc.start()
    run()
    out['traced_peak_mb'] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out['runs'] = runs
    out['steps_s'], out['total_s'] = _medians(runs, cpu=False)
    out['steps_cpu_s'], out['total_cpu_s'] = _medians(runs, cpu=True)
    if implementation == 'iblnm':
        path = h5_dir / f'{eid}.h5'
        out['wheel'] = add_wheel(one, row, h5_dir)
        legacy = write_legacy_copy(path, h5_dir / 'legacy.h5')
        files = {'h5': path, 'h5_legacy': legacy}
        reads = {key: [] for key in files}
        for i in range(repeats + 1):  # interleaved, the order alternating: a fair A/B
            for key in list(files)[:: 1 if i % 2 == 0 else -1]:
                reads[key].append(run_h5_reads(files[key], row['brain_region'][0]))
        for key, file in files.items():
            out[key] = {
                **h5_report(file),
                'reads_s': _medians(reads[key][1:], cpu=False)[0],
                'reads_cpu_s': _medians(reads[key][1:], cpu=True)[0],
            }
    out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(h5_dir, ignore_errors=True)
    return out


def add_wheel(one, row, h5_dir):
    """Add the wheel group as the wheel stage does (when the session has a wheel)."""
    from iblnm import validation as v
    from iblnm.data import PhotometrySession

    ps = PhotometrySession(row, one=one, h5_dir=h5_dir)
    try:
        ps.load_trials()
        ps.load_wheel()
    except v.IblnmError:
        return False
    ps.extract_wheel_velocity()
    ps.save_h5(groups=['wheel'])
    return True


def write_legacy_copy(src, dst):
    """The same file in the layout before issue 19: contiguous, uncompressed datasets and the
    wheel velocity as one NaN-padded (T x W) float32 matrix."""
    import h5py

    from iblnm import h5

    with h5py.File(src, 'r') as fin, h5py.File(dst, 'w') as fout:

        def copy(name, obj):
            if name.startswith('wheel/responses/velocity_'):
                return
            if isinstance(obj, h5py.Group):
                target = fout.require_group(name)
            else:
                target = fout.create_dataset(name, data=obj[()], dtype=obj.dtype)
            for key, value in obj.attrs.items():
                if key not in ('n_samples', 'layout'):
                    target.attrs[key] = value

        for key, value in fin.attrs.items():
            fout.attrs[key] = value
        fin.visititems(copy)
        if 'wheel' in fin:
            fout['wheel/responses'].create_dataset('velocity', data=h5.read_wheel(fin)['velocity'])
    return dst


def _imports(implementation):
    """Import what a run uses (xarray imports dask on its first DataArray: ~1 s)."""
    if implementation == 'iblnm':
        import h5py  # noqa: F401
        import xarray as xr

        import iblnm.data  # noqa: F401

        xr.DataArray(np.zeros(1))
    elif implementation == 'ibl-photometry':
        import iblphotometry.fpio  # noqa: F401
        from iblphotometry import metrics, pipelines, qc  # noqa: F401


def h5_report(path):
    """File size and, per top-level group, stored bytes and bytes of the non-NaN values."""
    import h5py

    groups = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            group = name.split('/')[0]
            entry = groups.setdefault(group, {'stored': 0, 'values': 0, 'logical': 0})
            entry['stored'] += obj.id.get_storage_size()
            entry['logical'] += obj.size * obj.dtype.itemsize
            data = obj[()]
            if obj.dtype.kind == 'f':
                entry['values'] += int(np.count_nonzero(~np.isnan(data))) * obj.dtype.itemsize
            elif obj.dtype.kind == 'O':
                entry['values'] += sum(len(str(x).encode()) for x in np.ravel(data))
            else:
                entry['values'] += obj.size * obj.dtype.itemsize

    with h5py.File(path, 'r') as f:
        f.visititems(visit)
    return {'file_bytes': os.path.getsize(path), 'groups': groups}


def spawn(implementation, cache, eid, repeats):
    cmd = [
        sys.executable,
        __file__,
        '--worker',
        implementation,
        '--cache',
        str(cache),
        '--eid',
        eid,
        '--repeats',
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f'{implementation} worker failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn_rounds(cache, eid, repeats, rounds):
    """Every implementation ``rounds`` times, alternating (iblnm, ibl-photometry, floor, iblnm,
    ...), so that a drift of the machine's speed during the run (a shared host) weighs on all
    of them alike; the step and total medians are over the runs of all rounds, the first-run
    time, memory and file figures those of the first round."""
    outs = {impl: [] for impl in IMPLEMENTATIONS}
    for _ in range(rounds):
        for impl in IMPLEMENTATIONS:
            outs[impl].append(spawn(impl, cache, eid, repeats))
    merged = {}
    for impl, rounds_out in outs.items():
        runs = [run for out in rounds_out for run in out.pop('runs')]
        out = rounds_out[0]
        out['steps_s'], out['total_s'] = _medians(runs, cpu=False)
        out['steps_cpu_s'], out['total_cpu_s'] = _medians(runs, cpu=True)
        out['n_runs'] = len(runs)
        merged[impl] = out
    return merged


def report(results, repeats, load, rounds=1):
    lines = [
        f'{datetime.date.today().isoformat()} · `.venv/bin/python benchmarks/bench_session.py '
        f'--repeats {repeats} --rounds {rounds}` · {machine()} · load average at start '
        f'{load[0]:.1f}, '
        f'at end {load[1]:.1f} (shared machine: absolute times are upper bounds; ratios are '
        'of the same run)',
        '',
        f'Median of {rounds} × {repeats} runs: {rounds} round(s), each implementation in its '
        f'own process in turn, {repeats} runs after a warm-up per process. '
        f'iblnm runs as a lone user runs it: its sliding QC step on {session_threads()} '
        'thread(s) (`IBLNM_SESSION_THREADS`; its CPU time is then above its wall time), '
        'pyarrow reads on its own threads, ibl-photometry on one.',
        '',
        '| dataset | implementation | step | wall s | CPU s |',
        '|---|---|---|---|---|',
    ]
    for dataset, res in results.items():
        for impl in IMPLEMENTATIONS:
            r = res[impl]
            for step, sec in r['steps_s'].items():
                lines.append(
                    f'| {dataset} | {impl} | {step} | {sec:.4f} | {r["steps_cpu_s"][step]:.4f} |'
                )
            lines.append(
                f'| {dataset} | {impl} | **total** | **{r["total_s"]:.3f}** | '
                f'**{r["total_cpu_s"]:.3f}** |'
            )
    lines += [
        '',
        'Summary (wall seconds; in brackets CPU seconds, which do not depend on the load):',
        '',
        '| dataset | iblnm whole path (s) | ibl-photometry load + QC + isosbestic (s) | '
        'speed-up | pyarrow read floor (s) | md5 of the inputs (s) | iblnm ÷ read floor | '
        'iblnm first run, files hashed (s) | peak RSS MB: iblnm / ibl-photometry / floor | '
        'traced peak MB: iblnm / ibl-photometry |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for dataset, res in results.items():
        ours, theirs, floor = res['iblnm'], res['ibl-photometry'], res['floor']
        read, read_cpu = (floor[k]['read (pyarrow)'] for k in ('steps_s', 'steps_cpu_s'))
        md5, md5_cpu = (floor[k]['md5 (hashlib)'] for k in ('steps_s', 'steps_cpu_s'))
        lines.append(
            f'| {dataset} | {ours["total_s"]:.3f} ({ours["total_cpu_s"]:.3f}) | '
            f'{theirs["total_s"]:.3f} ({theirs["total_cpu_s"]:.3f}) | '
            f'**{theirs["total_s"] / ours["total_s"]:.1f}×** '
            f'({theirs["total_cpu_s"] / ours["total_cpu_s"]:.1f}×) | {read:.3f} ({read_cpu:.3f}) | '
            f'{md5:.3f} ({md5_cpu:.3f}) | **{ours["total_s"] / read:.1f}×** '
            f'({ours["total_cpu_s"] / read_cpu:.1f}×) | '
            f'{ours["first_run_s"]:.3f} | {ours["peak_rss_mb"]:.0f} / '
            f'{theirs["peak_rss_mb"]:.0f} / {floor["peak_rss_mb"]:.0f} | '
            f'{ours["traced_peak_mb"]:.0f} / {theirs["traced_peak_mb"]:.0f} |'
        )
    lines += [
        '',
        "HDF5 file of the session (the photometry stage's groups, plus the wheel group of the "
        'wheel stage when the session has a wheel), in this layout and in the layout before '
        'issue 19 (the same data rewritten contiguous, uncompressed, wheel velocity NaN-padded): '
        'bytes on disk against the bytes of the non-NaN values at the stored dtypes (strings as '
        'UTF-8), and `h5.load_h5` of the whole file and of one region (median wall s; CPU s in '
        'brackets; the two layouts read in turn, the order alternating).',
        '',
        '| dataset | layout | file (MB) | non-NaN values (MB) | file ÷ values | '
        'load_h5 whole (s) | load_h5 one region (s) | per group: stored / values (MB) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for dataset, res in results.items():
        for key, name in (('h5', 'issue 19'), ('h5_legacy', 'before')):
            h5 = res['iblnm'][key]
            wall, cpu = h5['reads_s'], h5['reads_cpu_s']
            values = sum(g['values'] for g in h5['groups'].values())
            groups = ', '.join(
                f'{g} {v["stored"] / 1e6:.2f} / {v["values"] / 1e6:.2f}'
                for g, v in h5['groups'].items()
            )
            lines.append(
                f'| {dataset} | {name} | {h5["file_bytes"] / 1e6:.2f} | {values / 1e6:.2f} | '
                f'{h5["file_bytes"] / values:.2f} | {wall["load_h5 whole file"]:.4f} '
                f'({cpu["load_h5 whole file"]:.4f}) | {wall["load_h5 one region"]:.4f} '
                f'({cpu["load_h5 one region"]:.4f}) | {groups} |'
            )
    lines.append('')
    for dataset, res in results.items():
        lines.append(
            f'- {dataset}: input files {res["floor"]["input_mb"]:.1f} MB ({", ".join(INPUTS)}).'
        )
    return '\n'.join(lines)


def h5_dir_report(h5_dir):
    """Sizes of a pipeline run's session files: median file, file ÷ non-NaN values, per group."""
    reports = {p.name: h5_report(p) for p in sorted(Path(h5_dir).glob('*.h5'))}
    if not reports:
        raise SystemExit(f'no .h5 files in {h5_dir}')
    sizes = np.array([r['file_bytes'] for r in reports.values()])
    ratios = np.array(
        [r['file_bytes'] / sum(g['values'] for g in r['groups'].values()) for r in reports.values()]
    )
    groups = sorted({g for r in reports.values() for g in r['groups']})
    lines = [
        f'{datetime.date.today().isoformat()} · `.venv/bin/python benchmarks/bench_session.py '
        f'--h5-dir {h5_dir}` · {len(reports)} files',
        '',
        f'- file size: median **{np.median(sizes) / 1e6:.2f} MB**, max {sizes.max() / 1e6:.2f} MB, '
        f'total {sizes.sum() / 1e6:.0f} MB',
        f'- file ÷ bytes of its non-NaN values (stored dtypes): median {np.median(ratios):.2f}, '
        f'max **{ratios[sizes >= 1e5].max():.2f}** over the {np.count_nonzero(sizes >= 1e5)} '
        f'files ≥ 100 kB; the {np.count_nonzero(sizes < 1e5)} smaller ones (sessions that failed '
        f"before any data: metadata, errors, provenance) are HDF5's fixed overhead "
        f'(max {sizes[sizes < 1e5].max(initial=0) / 1e3:.0f} kB, ratio up to {ratios.max():.1f})',
        '',
        '| group | median stored (MB) | median non-NaN values (MB) | max stored ÷ values |',
        '|---|---|---|---|',
    ]
    for group in groups:
        stored = [r['groups'][group]['stored'] for r in reports.values() if group in r['groups']]
        values = [r['groups'][group]['values'] for r in reports.values() if group in r['groups']]
        ratio = max(a / b for a, b in zip(stored, values) if b) if any(values) else float('nan')
        lines.append(
            f'| {group} | {np.median(stored) / 1e6:.3f} | {np.median(values) / 1e6:.3f} '
            f'| {ratio:.2f} |'
        )
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--rounds', type=int, default=3, help='alternating rounds of the implementations'
    )
    parser.add_argument('--no-readme', action='store_true', help='do not update the README')
    parser.add_argument('--h5-dir', help='only report the sizes of the .h5 files of a run')
    parser.add_argument('--worker', choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument('--cache', help=argparse.SUPPRESS)
    parser.add_argument('--eid', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.cache, args.eid, args.repeats)))
        return
    if args.h5_dir:
        text = h5_dir_report(args.h5_dir)
        print(text)
        if not args.no_readme:
            write_section(
                'bench_session_h5', 'bench_session.py --h5-dir — HDF5 sizes of a run', text
            )
        return
    print(f'Machine: {machine()}')
    load_start = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix='bench_session_') as tmp:
        builders = {'CQ002': build_cq002, 'simulated 1 h': build_simulated}
        for dataset in DATASETS:
            if dataset == 'CQ002' and not (config.REAL_DATA_DIR / 'ibl').exists():
                print(f'CQ002 skipped: {config.REAL_DATA_DIR / "ibl"} not found')
                continue
            cache = Path(tmp) / dataset.replace(' ', '_')
            eid = builders[dataset](cache)
            results[dataset] = spawn_rounds(cache, eid, args.repeats, args.rounds)
            print(dataset, {k: round(v['total_s'], 4) for k, v in results[dataset].items()})
    text = report(results, args.repeats, (load_start, os.getloadavg()[0]), args.rounds)
    print(text)
    if not args.no_readme:
        write_section('bench_session', 'bench_session.py — the whole per-session path', text)


if __name__ == '__main__':
    main()
