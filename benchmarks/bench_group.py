"""Benchmark: ``PhotometrySessionGroup.get_response_magnitudes`` over many sessions' HDF5 files.

Generating and running the pipeline on the ``large`` preset (1,000 sessions) takes hours on
a small machine, so the benchmark builds its group differently: it takes the sessions of
an existing pipeline output (``--source ROOT``, e.g. the demo run) that have responses and
symlinks their HDF5 files N times under new eids, with catalog rows copied accordingly.
Every file is then a real pipeline output (same layout and sizes); the caveat is that the
OS page cache holds the few distinct files, so disk reads are cheaper than on N distinct
files. Each size runs in its own subprocess; we report wall time, peak RSS (imports
included), the size of the returned table and the traced Python peak minus that table
(the working memory, which must not grow with N).

Usage: ``.venv/bin/python benchmarks/bench_group.py --source ROOT [--sizes 250 1000]
[--no-readme]``; ROOT holds ``metadata/sessions.pqt`` and ``data/sessions/*.h5``.
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402


def build_group_dir(source, n_sessions, out):
    """Catalog of ``n_sessions`` rows whose H5 files are symlinks to the source's files."""
    import h5py

    from iblnm import config

    catalog = pd.read_parquet(source / 'metadata' / 'sessions.pqt')
    h5_dir = source / 'data' / 'sessions'

    def has_responses(row):
        fpath = h5_dir / f'{row.eid}.h5'
        if not fpath.exists() or not set(row.target_NM) <= set(config.VALID_TARGETNMS):
            return False
        with h5py.File(fpath, 'r') as f:
            regions = f.get('photometry', {})
            return all(r in regions and 'responses' in regions[r] for r in row.brain_region)

    usable = [r for _, r in catalog.iterrows() if has_responses(r)]
    rows = []
    (out / 'data' / 'sessions').mkdir(parents=True)
    (out / 'metadata').mkdir()
    for i in range(n_sessions):
        row = usable[i % len(usable)].copy()
        eid = str(uuid.uuid5(uuid.NAMESPACE_URL, f'bench-{i}'))
        (out / 'data' / 'sessions' / f'{eid}.h5').symlink_to(h5_dir / f'{row.eid}.h5')
        row['eid'] = eid
        rows.append(row)
    pd.DataFrame(rows).to_parquet(out / 'metadata' / 'sessions.pqt', index=False)
    return len(usable)


def worker(root):
    from iblnm import config
    from iblnm.group import PhotometrySessionGroup

    group = PhotometrySessionGroup.from_catalog(
        root=root,
        targetnms=config.VALID_TARGETNMS,
        session_types=False,
        qc_blockers=set(),
        min_performance=None,
        required_contrasts=None,
        verbose=False,
        deduplicate=False,
    )  # copies share mouse and day: keep them all
    group.get_response_magnitudes(events=config.RESPONSE_EVENTS[:1])  # warm-up (imports)
    group.response_magnitudes = None
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    table = group.get_response_magnitudes()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced_end, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    table_mb = traced_end / 1e6  # what stays allocated: the returned table
    print(
        json.dumps(
            {
                'n_sessions': len(group.sessions),
                'n_recordings': len(group),
                'n_rows': len(table),
                'seconds': seconds,
                'cpu_seconds': cpu,
                'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
                'table_mb': table_mb,
                'working_mb': traced_peak / 1e6 - table_mb,
                'table_deep_mb': table.memory_usage(deep=True).sum() / 1e6,
                'n_errors': len(group.errors),
            }
        )
    )


def run_size(source, n_sessions):
    with tempfile.TemporaryDirectory(prefix='bench_group_') as tmp:
        n_usable = build_group_dir(source, n_sessions, Path(tmp))
        proc = subprocess.run(
            [sys.executable, __file__, '--worker', tmp], capture_output=True, text=True, check=True
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result['n_distinct_files'] = n_usable
        return result


def report(results, source):
    lines = [
        f'Date: {datetime.date.today().isoformat()}. Machine: {machine()}; 1-min load average '
        f'when written {os.getloadavg()[0]:.1f}.',
        f'Command: `.venv/bin/python benchmarks/bench_group.py --source {source} '
        f'--sizes {" ".join(str(r["n_sessions"]) for r in results)}`',
        '',
        '| sessions | recordings | trial rows | seconds | s / session | CPU s / session | '
        'peak RSS (MB) | table (MB) | working memory (MB) |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        lines.append(
            f'| {r["n_sessions"]} | {r["n_recordings"]} | {r["n_rows"]} | {r["seconds"]:.1f} | '
            f'{r["seconds"] / r["n_sessions"] * 1e3:.1f} ms | '
            f'{r.get("cpu_seconds", float("nan")) / r["n_sessions"] * 1e3:.1f} ms | '
            f'{r["peak_rss_mb"]:.0f} | '
            f'{r["table_mb"]:.0f} | {r["working_mb"]:.1f} |'
        )
    lines += [
        '',
        f'HDF5 files: symlinks to {results[0]["n_distinct_files"]} distinct pipeline '
        'outputs (see the script docstring). Table = Python memory still allocated after '
        'the call (the returned trial table); working memory = traced Python peak minus '
        'the table. One session is held at a time; the rest of the working memory is '
        'the per-recording column pieces gathered before the table is assembled column '
        'by column, so peak / table stays constant (memory grows with the output only, '
        'not with sessions held).',
    ]
    return '\n'.join(lines)


def write_readme(text):
    """Replace this script's section of ``benchmarks/README.md``."""
    write_section(
        'bench_group', 'bench_group.py — get_response_magnitudes over many sessions', text
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', type=Path, help='pipeline output root to replicate')
    parser.add_argument('--sizes', type=int, nargs='+', default=[250, 1000])
    parser.add_argument('--no-readme', action='store_true')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.source is None:
        from iblnm import config

        args.source = config.PROJECT_ROOT
    results = [run_size(args.source, n) for n in args.sizes]
    text = report(results, args.source)
    print(text)
    if not args.no_readme:
        write_readme(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
