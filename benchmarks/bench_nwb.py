"""Benchmark: NWB export per session (time, file size), with the HDF5 save as anchor.

Sessions: the processed demo sessions of a pipeline output (``--source ROOT``, default the
project root after ``make run``) and the real CQ002 session (processed here, two fibers,
~46 min). Per session, after one warm-up export (imports, extension namespaces):

- load: what the export stage reads (ONE's trials, raw bands and wheel; the HDF5 results);
- write: :func:`iblnm.nwb.write_nwb` (build the NWBFile, write it, rename);
- read: :func:`iblnm.nwb.read_nwb` (``PhotometrySession.from_nwb``);
- anchor: ``PhotometrySession.save_h5`` of the same session (our own HDF5 layout), same run.

Results are printed and written to ``benchmarks/README.md``.

Usage: ``.venv/bin/python benchmarks/bench_nwb.py [--source ROOT] [--max-sessions 10] [--no-readme]``
"""

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402

from iblnm import config, io, nwb  # noqa: E402
from iblnm.data import PhotometrySession  # noqa: E402
from iblnm.pipeline.export_nwb import has_preprocessed, load_for_export  # noqa: E402


def measure(ps, out, fibers):
    """Seconds of load / write / read / H5 save and the two file sizes (MB) of one session."""
    t0 = time.perf_counter()
    position, _ = load_for_export(ps)
    t1 = time.perf_counter()
    path = nwb.write_nwb(ps, out / nwb.nwb_relpath(ps), fibers=fibers, wheel_position=position)
    t2 = time.perf_counter()
    nwb.read_nwb(path)
    t3 = time.perf_counter()
    h5_path = ps.save_h5(out / f'{ps.eid}.h5', mode='w')
    t4 = time.perf_counter()
    n = len(ps.photometry['GCaMP'])
    return {
        'eid': ps.eid[:8],
        'subject': ps.subject,
        'regions': len(ps.regions),
        'minutes': (ps.photometry['GCaMP'].index[-1] - ps.photometry['GCaMP'].index[0]) / 60,
        'samples': n,
        'load_s': t1 - t0,
        'write_s': t2 - t1,
        'read_s': t3 - t2,
        'h5_s': t4 - t3,
        'nwb_mb': path.stat().st_size / 1e6,
        'h5_mb': h5_path.stat().st_size / 1e6,
    }


def demo_sessions(root, one, max_sessions):
    catalog = pd.read_parquet(root / 'metadata' / 'sessions.pqt')
    h5_dir = root / 'data' / 'sessions'
    out = []
    for row in catalog.to_dict('records'):
        path = h5_dir / f'{row["eid"]}.h5'
        if path.exists() and has_preprocessed(path):
            out.append(PhotometrySession(row, one=one, h5_dir=h5_dir))
        if len(out) == max_sessions:
            break
    return out


def cq002_session(tmp):
    from one.api import One

    from iblnm.onecache import session_eid
    from iblnm.pipeline.photometry import _run_tiers
    from iblnm.realdata import add_real_sessions

    add_real_sessions(tmp / 'real_cache')
    one = One(cache_dir=str(tmp / 'real_cache'), mode='local')
    row = {
        'eid': session_eid('cortexlab', 'CQ002', '2024-11-05', 1),
        'subject': 'CQ002',
        'session_type': 'training',
        'lab': 'cortexlab',
        'number': 1,
        'start_time': '2024-11-05T12:00:00',
        'task_protocol': '_iblrig_tasks_trainingChoiceWorld',
        'strain': 'C57BL/6J',
        'line': 'Ai148xChat',
    }
    ps = PhotometrySession(row, one=one, h5_dir=tmp / 'real_h5')
    _run_tiers(ps)
    ps.save_h5(mode='w')
    return PhotometrySession(row, one=one, h5_dir=tmp / 'real_h5')


def table(rows):
    lines = [
        '| data | sessions | regions | minutes | load s | **write s** | read s | H5 save s '
        '(anchor) | write / H5 | NWB MB | H5 MB | NWB / H5 size |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, frame in rows:
        med = frame.median(numeric_only=True)
        ratio_t = (frame['write_s'] / frame['h5_s']).median()
        ratio_s = (frame['nwb_mb'] / frame['h5_mb']).median()
        lines.append(
            f'| {name} | {len(frame)} | {med["regions"]:.0f} | {med["minutes"]:.0f} | '
            f'{med["load_s"]:.2f} | **{med["write_s"]:.2f}** | {med["read_s"]:.2f} | '
            f'{med["h5_s"]:.2f} | {ratio_t:.1f} | {med["nwb_mb"]:.1f} | {med["h5_mb"]:.1f} | '
            f'{ratio_s:.2f} |'
        )
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', type=Path, default=config.PROJECT_ROOT)
    parser.add_argument('--max-sessions', type=int, default=10)
    parser.add_argument('--no-readme', action='store_true')
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (args.source / 'metadata' / 'sessions.pqt').exists():
            one = io.get_connection()
            fibers = io.get_fiber_table(one)
            sessions = demo_sessions(args.source, one, args.max_sessions)
            measure(sessions[0], tmp / 'warmup', fibers)  # imports, namespaces
            demo = [measure(ps, tmp / 'demo', fibers) for ps in sessions]
            results.append(('demo (simulated)', pd.DataFrame(demo)))
        else:
            print(f'no pipeline output under {args.source} (run `make run`): demo skipped')
        if (config.REAL_DATA_DIR / 'ibl').exists():
            ps = cq002_session(tmp)
            measure(ps, tmp / 'cq_warmup', None)  # imports, namespaces (if no demo ran)
            results.append(('CQ002 (real)', pd.DataFrame([measure(ps, tmp / 'cq', None)])))
        else:
            print(f'real data not found at {config.REAL_DATA_DIR}: CQ002 skipped')
    for name, frame in results:
        print(name)
        print(frame.round(3).to_string(index=False))
    load = os.getloadavg()
    text = (
        f'{datetime.date.today().isoformat()} · `.venv/bin/python benchmarks/bench_nwb.py '
        f'--max-sessions {args.max_sessions}` · {machine()} · load average '
        f'{load[0]:.1f} (machine shared with other jobs).\n\n'
        + table(results)
        + '\n\nMedians over sessions. *load*: what the export stage reads through ONE and the '
        'HDF5 file (trials, raw bands, wheel at 1 kHz filtered, results); *write*: build and write '
        'the NWB file (gzip level 4 for arrays of ≥ 1000 values) and rename it; *read*: '
        '`PhotometrySession.from_nwb`; anchor: `save_h5` of the same session in the same run. '
        'The NWB file holds more than the HDF5 file (raw bands and the whole trials table, '
        'wheel velocity and raw position, devices), the HDF5 file the responses.\n'
    )
    print(text)
    if not args.no_readme and results:
        write_section('bench_nwb', 'bench_nwb.py — NWB export per session', text)
    return 0 if results else 1


if __name__ == '__main__':
    sys.exit(main())
