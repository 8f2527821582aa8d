"""Benchmark: the whole pipeline on simulated caches (issues 3 and 5).

Three measurements, each in fresh subprocesses (times are wall-clock, memory is the peak
RSS of the largest process of each command, from ``getrusage(RUSAGE_CHILDREN)``):

``speedup``
    ``scripts/run_pipeline.py`` on the demo preset with ``--workers 1`` and ``--workers 2``
    (fresh output roots); per-stage times and the speed-up of the parallel stages.
``scaling``
    photometry + task + wheel stages on the ``large`` preset's sessions at two sizes
    (``--sizes``, default 100 and 400 sessions), as seconds per session; the single-session
    cost is the median in-process time of the three per-session functions on one session of
    the same preset (imports warmed up), so the ratio says what batching costs on top.
``catalog``
    the catalog stage (query_database, local mode) on the ``large`` preset (≥ 1,000 sessions).

Results are printed and written to ``benchmarks/README.md`` between
``<!-- bench_pipeline:start -->`` and ``<!-- bench_pipeline:end -->``.

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py [speedup scaling catalog] [--no-readme]
        [--work /tmp/bench_pipeline] [--sizes 100 400] [--large-sessions 1000]
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iblnm.simulate import generate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402

PYTHON = sys.executable
STAGE_TIME = re.compile(r'^--- (\w+): (\w+) \(([\d.]+) s\)', re.M)


# Runs a command and reports the peak RSS of its largest process (kB) on the last stderr line.
PEAK_WRAPPER = (
    'import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); '
    'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); '
    'sys.exit(code)'
)


def run(args, cache, root):
    """Run a script with the cache/root env; return (seconds, peak RSS MB, stdout)."""
    env = {**os.environ, 'IBLNM_ONE_CACHE': str(cache), 'IBLNM_ROOT': str(root)}
    env.pop('IBLNM_ONE_MODE', None)
    command = [PYTHON, '-c', PEAK_WRAPPER, PYTHON, *map(str, args)]
    t0 = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f'{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
    peak = int(result.stderr.strip().splitlines()[-1]) / 1024
    return seconds, peak, result.stdout


def ensure_cache(path, preset, **overrides):
    if not (path / 'ground_truth' / 'manifest.json').exists():
        print(f'generating {preset} {overrides} in {path} ...', flush=True)
        generate(path, preset=preset, seed=0, n_jobs=2, **overrides)
    return path


def fresh(root):
    subprocess.run(['rm', '-rf', str(root)], check=True)
    return root


def stage_times(stdout):
    return {m.group(1): float(m.group(3)) for m in STAGE_TIME.finditer(stdout)}


IMPORTS = 'import iblnm.pipeline.photometry, iblnm.pipeline.task, iblnm.pipeline.video'


def bench_speedup(work, name='demo', repeat=1, **overrides):
    """``run_pipeline.py`` with 1 and 2 workers on one cache; per-stage table lines.

    With ``repeat`` > 1 the two configurations alternate ``repeat`` times and every cell is
    the median over the runs (the machine's noise is a few per cent from run to run).
    """
    cache = ensure_cache(work / name, 'demo' if name == 'demo' else 'large', **overrides)
    runs = {1: [], 2: []}
    for _ in range(repeat):
        for workers in (1, 2):
            root = fresh(work / f'{name}_out_w{workers}')
            seconds, peak, out = run(
                [REPO / 'scripts/run_pipeline.py', '--workers', workers], cache, root
            )
            runs[workers].append({'total': seconds, 'peak_mb': peak, **stage_times(out)})
            print(f'{name}, --workers {workers}: {seconds:.1f} s, {stage_times(out)}', flush=True)
    rows = {w: pd.DataFrame(r).median().to_dict() for w, r in runs.items()}
    totals = ', '.join(f'{a["total"]:.1f}/{b["total"]:.1f}' for a, b in zip(runs[1], runs[2]))
    ratios = ', '.join(f'{a["total"] / b["total"]:.2f}×' for a, b in zip(runs[1], runs[2]))
    imports = min(run(['-c', IMPORTS], cache, work)[0] for _ in range(3))
    parallel = ('photometry', 'task', 'wheel', 'video')
    par = [sum(rows[w].get(s, 0) for s in parallel) for w in (1, 2)]
    n_sessions = len(pd.read_parquet(cache / 'sessions.pqt'))
    lines = [
        f'Median of {repeat} run(s) per configuration; whole-run seconds with 1/2 workers, '
        f'run by run: {totals} (speed-ups '
        f'{ratios}).',
        '',
        f'| {name} preset ({n_sessions} sessions) | --workers 1 | --workers 2 | speed-up |',
        '|---|---|---|---|',
    ]
    for stage in ('query_database', *parallel, 'dataset_overview'):
        a, b = rows[1].get(stage, float('nan')), rows[2].get(stage, float('nan'))
        lines.append(f'| {stage} (s) | {a:.1f} | {b:.1f} | {a / b:.2f}× |')
    lines.append(
        f'| per-session stages (s) | {par[0]:.1f} | {par[1]:.1f} | **{par[0] / par[1]:.2f}×** |'
    )
    total = [rows[w]['total'] for w in (1, 2)]
    lines.append(
        f'| whole `run_pipeline.py` (s) | {total[0]:.1f} | {total[1]:.1f} | '
        f'**{total[0] / total[1]:.2f}×** |'
    )
    lines.append(
        f'| whole run minus the one-off imports ({imports:.1f} s) | '
        f'{total[0] - imports:.1f} | {total[1] - imports:.1f} | '
        f'{(total[0] - imports) / (total[1] - imports):.2f}× |'
    )
    return lines


def per_session_cost(cache, root, workers=1):
    """Seconds of photometry+task+wheel (query_database run first, not counted)."""
    run([REPO / 'scripts/run_pipeline.py', '--only', 'query_database'], cache, fresh(root))
    total = 0.0
    for stage in ('photometry', 'task', 'wheel'):
        seconds, peak, _ = run(
            [REPO / 'scripts' / f'{stage}.py', '--workers', workers], cache, root
        )
        total += seconds
    return total, peak


SINGLE_SESSION = """
import json, sys, time
import pandas as pd
from iblnm import config
from iblnm.io import _get_default_connection
from iblnm.pipeline import photometry, wheel
from iblnm.pipeline import task as task_stage
from iblnm.pipeline.stage import make_jobs

one = _get_default_connection()
catalog = pd.read_parquet(config.SESSIONS_FPATH)
jobs = make_jobs(catalog, one, {'h5_dir': str(config.SESSIONS_H5_DIR)})
config.SESSIONS_H5_DIR.mkdir(parents=True, exist_ok=True)
seconds = []
for job in jobs:  # the first session warms up imports and caches; the others are timed
    t0 = time.perf_counter()
    for module in (photometry, task_stage, wheel):
        outcome = module.process_session(job)
        assert outcome.fatal is None, (module.__name__, outcome.errors)
    seconds.append(time.perf_counter() - t0)
print(json.dumps(seconds[1:]))
"""


def single_session_cost(work):
    """Median in-process seconds of the three per-session functions on one session."""
    cache = work / 'large_single'
    if not (cache / 'ground_truth/manifest.json').exists():
        generate(
            cache,
            preset='large',
            seed=1,
            n_jobs=2,
            n_sessions=6,
            strainless_sessions=0,
            fault_fraction=0.0,
            all_faults=False,
            camera_fault_fraction=0.0,
        )
    root = fresh(work / 'large_single_out')
    run([REPO / 'scripts/query_database.py'], cache, root)
    _, _, out = run(['-c', SINGLE_SESSION], cache, root)
    seconds = sorted(float(x) for x in out.strip().splitlines()[-1].strip('[]').split(','))
    return seconds[len(seconds) // 2]


def bench_scaling(work, sizes):
    lines = [
        '| sessions (large preset) | stage seconds | s / session | peak RSS (MB) |',
        '|---|---|---|---|',
    ]
    single = single_session_cost(work)
    lines.append(f'| 1 (in-process, median of 5) | | {single:.3f} | |')
    per = {}
    for n in sizes:
        cache = ensure_cache(work / f'large_{n}', 'large', n_sessions=n)
        seconds, peak = per_session_cost(cache, work / f'large_{n}_out')
        per[n] = seconds / n
        lines.append(f'| {n} | {seconds:.1f} | {per[n]:.3f} | {peak:.0f} |')
        print(f'large preset {n} sessions: {seconds:.1f} s ({per[n]:.3f} s/session)', flush=True)
    lines.append('')
    lines.append(
        f'Per-session cost at {sizes[-1]} vs {sizes[0]} sessions: '
        f'{per[sizes[-1]] / per[sizes[0]]:.2f}× (1.0 = linear). Batch per-session cost '
        f'at {sizes[-1]} sessions (three stage scripts, `--workers 1`, start-up '
        f'included) vs one session in-process: {per[sizes[-1]] / single:.2f}×.'
    )
    return lines


def bench_catalog(work, n_sessions):
    cache = ensure_cache(work / f'large_{n_sessions}', 'large', n_sessions=n_sessions)
    root = fresh(work / 'catalog_out')
    seconds, peak, out = run([REPO / 'scripts/query_database.py'], cache, root)
    found = re.search(r'sessions found: (\d+)', out)
    n_found = found.group(1) if found else '?'
    print(f'catalog of {n_found} sessions: {seconds:.1f} s, {peak:.0f} MB', flush=True)
    return [
        '| catalog stage, local mode | sessions | seconds | peak RSS (MB) |',
        '|---|---|---|---|',
        f'| `scripts/query_database.py` (large preset) | {n_found} | {seconds:.1f} | {peak:.0f} |',
    ]


TITLES = {
    'speedup': 'bench_pipeline.py speedup — make run on the demo preset, 1 vs 2 workers',
    'speedup_large': 'bench_pipeline.py speedup_large — the whole pipeline on the large preset, '
    '1 vs 2 workers',
    'scaling': 'bench_pipeline.py scaling — per-session cost on the large preset',
    'catalog': 'bench_pipeline.py catalog — the catalog stage on the large preset',
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', nargs='*', default=['speedup', 'scaling', 'catalog'])
    parser.add_argument('--work', type=Path, default=Path('/tmp/bench_pipeline'))
    parser.add_argument('--sizes', type=int, nargs=2, default=[100, 400])
    parser.add_argument('--large-sessions', type=int, default=1000)
    parser.add_argument(
        '--repeat',
        type=int,
        default=3,
        help='runs per configuration for speedup (medians are reported)',
    )
    parser.add_argument('--no-readme', action='store_true')
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    benches = {
        'speedup': lambda: bench_speedup(args.work, repeat=args.repeat),
        'speedup_large': lambda: bench_speedup(
            args.work, f'large_{args.sizes[-1]}', n_sessions=args.sizes[-1]
        ),
        'scaling': lambda: bench_scaling(args.work, args.sizes),
        'catalog': lambda: bench_catalog(args.work, args.large_sessions),
    }
    for name in args.what:  # each measurement owns its README section
        header = (
            f'{datetime.date.today()} · `.venv/bin/python benchmarks/bench_pipeline.py '
            f'{name}` · {machine()} · load average at start {os.getloadavg()[0]:.1f}'
        )
        text = '\n'.join([header, '', *benches[name]()])
        print(f'## {TITLES[name]}\n\n{text}\n', flush=True)
        if not args.no_readme:
            write_section(f'bench_pipeline_{name}', TITLES[name], text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
