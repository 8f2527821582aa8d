"""Benchmark: iblnm signal kernels versus ibl-photometry 0.3.4 on the same data, same run.

Per dataset (the real CQ002 session, two fibers, ~46 min restricted to the task ±5 s; and
a synthetic 1 h two-fiber session made here) and per implementation:

- QC: the 5 sliding metrics (120 s windows, 60 s steps, detrended) on both bands of both
  fibers, plus the bleaching τ of the raw GCaMP and the GCaMP/isosbestic R²;
- preprocessing: low-pass bleach correction of both bands → isosbestic regression →
  z-score, resampled to 30 Hz;
- peri-event extraction for stimOn, firstMovement and feedback (−1…1 s).

ibl-photometry runs ``qc.qc_signals`` (same metrics and kwargs; it also scores the whole
signal), the original iblnm way of getting τ and the R² with its ``Regression`` class,
``pipelines.run_pipeline(isosbestic_correction_pipeline)`` + ``processing.zscore`` +
``processing.resample_signal(fs=30, method='pchip')`` and ``processing.psth``.

Each implementation runs in its own subprocess so that its peak memory (max RSS, imports
included) is its own; loading the files is not timed. Times are medians of ``--repeats``
runs after one warm-up. Results are printed and written to ``benchmarks/README.md``.

Usage: ``.venv/bin/python benchmarks/bench_signal.py [--repeats 5] [--no-readme]``
"""

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402

from iblnm import config  # noqa: E402

CQ002 = 'ibl/cortexlab/Subjects/CQ002/2024-11-05/001'
EVENTS = ('stimOn_times', 'firstMovement_times', 'feedback_times')


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def load_cq002():
    """Task-restricted bands of CQ002 (as ``fpio.restrict_to_session_time``), paired by position."""
    session = config.REAL_DATA_DIR / CQ002
    signal = pd.read_parquet(session / 'alf/photometry/photometry.signal.pqt')
    trials = pd.read_parquet(session / 'alf/task_00/_ibl_trials.table.pqt')
    t0 = trials['intervals_0'].iloc[0] + config.PHOTOMETRY_RESTRICT_PRE
    t1 = trials['intervals_1'].iloc[-1] + config.PHOTOMETRY_RESTRICT_POST
    signal = signal[(signal['name'] != '') & (signal['times'] > t0) & (signal['times'] < t1)]
    gcamp, iso = (signal[signal['name'] == band] for band in ('GCaMP', 'Isosbestic'))
    n = min(len(gcamp), len(iso))
    return {
        'times': gcamp['times'].to_numpy()[:n],
        'iso_times': iso['times'].to_numpy()[:n],
        'gcamp': gcamp[['G0', 'G4']].to_numpy()[:n],
        'iso': iso[['G0', 'G4']].to_numpy()[:n],
        'events': {e: trials[e].to_numpy() for e in EVENTS},
    }


def make_synthetic(duration_s=3600, seed=0):
    """A 1 h, two-fiber session: 60 Hz interleaved frames, bleaching, motion, transients, trials."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * 30)
    times = 20.0 + np.arange(n) / 30 + rng.uniform(-5e-5, 5e-5, n)
    t = times - times[0]
    motion = np.convolve(rng.normal(0, 1, n), np.ones(30) / 30, 'same')[:, None] * [0.02, 0.03]
    onsets = rng.random((n, 2)) < 0.2 / 30
    kernel = np.exp(-np.arange(60) / 12)
    transients = np.column_stack([np.convolve(onsets[:, i], kernel)[:n] for i in range(2)]) * 0.05
    bleach = 0.7 + 0.3 * np.exp(-t[:, None] / [600, 900])
    gcamp = 0.012 * bleach * (1 + transients) * (1 + motion) + rng.normal(0, 2e-5, (n, 2))
    iso = 0.009 * bleach * (1 + 0.6 * motion) + rng.normal(0, 2e-5, (n, 2))
    stim_on = np.arange(times[0] + 10, times[-1] - 10, 8.0) + rng.uniform(0, 2, 1)
    first_move = stim_on + rng.uniform(0.1, 1.0, stim_on.size)
    first_move[rng.random(stim_on.size) < 0.05] = np.nan
    return {
        'times': times,
        'iso_times': times + 1 / 60,
        'gcamp': gcamp,
        'iso': iso,
        'events': {
            'stimOn_times': stim_on,
            'firstMovement_times': first_move,
            'feedback_times': stim_on + rng.uniform(0.5, 3, stim_on.size),
        },
    }


# ---------------------------------------------------------------------------
# The two implementations: each returns {step: seconds}
# ---------------------------------------------------------------------------
def run_ours(data):
    from iblnm.signal import peri_event, preprocess_isosbestic, sliding_qc

    timings, tic = {}, time.perf_counter()
    for times, values in ((data['times'], data['gcamp']), (data['iso_times'], data['iso'])):
        for fiber in range(values.shape[1]):
            sliding_qc(times, values[:, fiber])
    timings['sliding QC'] = time.perf_counter() - tic
    tic = time.perf_counter()
    result = preprocess_isosbestic(data['times'], data['gcamp'], data['iso'])
    timings['preprocess + τ + iso R²'] = time.perf_counter() - tic
    tic = time.perf_counter()
    responses = {  # the output grid is uniform at TARGET_FS (ibl-photometry's psth also gets fs)
        e: peri_event(result.times, result.values, ev, fs=config.TARGET_FS)
        for e, ev in data['events'].items()
    }
    timings['peri-event'] = time.perf_counter() - tic
    return timings, result.values[:, 0], responses['feedback_times'][0][:, :, 0]


def _ibl_tau_and_r2(times, signal, signal_bc, reference_bc):
    """τ and R² the way the original iblnm computed them with iblphotometry's Regression."""
    from iblphotometry.processing import ExponDecay, LinearModel, Regression

    bleach = Regression(model=ExponDecay())
    bleach.fit(times, signal)
    line = Regression(model=LinearModel())
    line.fit(reference_bc, signal_bc)
    fitted = line.model.eq(reference_bc, *line.popt)
    return bleach.popt[1], 1 - np.sum((signal_bc - fitted) ** 2) / np.sum(
        (signal_bc - signal_bc.mean()) ** 2
    )


def run_theirs(data):
    import iblphotometry.fpio  # noqa: F401  (import first: circular import in 0.3.4)
    from iblphotometry import metrics, pipelines, processing, qc

    fibers = ['G0', 'G4']
    bands = {
        'GCaMP': pd.DataFrame(data['gcamp'], index=data['times'], columns=fibers),
        'Isosbestic': pd.DataFrame(data['iso'], index=data['iso_times'], columns=fibers),
    }
    timings, tic = {}, time.perf_counter()
    qc.qc_signals(
        bands,
        [getattr(metrics, name) for name in config.QC_SLIDING_METRICS],
        metrics_kwargs=config.QC_METRICS_KWARGS,
        sliding_kwargs=dict(config.QC_SLIDING_KWARGS),
    )
    timings['sliding QC'] = time.perf_counter() - tic
    tic, processed = time.perf_counter(), []
    for i, fiber in enumerate(fibers):
        signal = bands['GCaMP'][fiber]
        reference = pd.Series(data['iso'][:, i], index=data['times'])  # paired by position
        out = pipelines.run_pipeline(
            pipelines.isosbestic_correction_pipeline, signal, reference, full_output=True
        )
        _ibl_tau_and_r2(
            data['times'],
            signal.to_numpy(),
            out['signal_bleach_corrected'].to_numpy(),
            out['reference_bleach_corrected'].to_numpy(),
        )
        zscored = processing.zscore(out['result'])
        processed.append(processing.resample_signal(zscored, fs=30, method='pchip'))
    timings['preprocess + τ + iso R²'] = time.perf_counter() - tic
    tic, responses = time.perf_counter(), {}
    for event, event_times in data['events'].items():
        for series in processed:
            responses[event] = processing.psth(
                series.to_numpy(), series.index.to_numpy(), event_times, fs=30, event_window=[-1, 1]
            )[0]
    timings['peri-event'] = time.perf_counter() - tic
    return timings, processed[0].to_numpy(), responses['feedback_times'].T


# ---------------------------------------------------------------------------
# Worker (one implementation × one dataset, in a subprocess) and driver
# ---------------------------------------------------------------------------
def worker(implementation, dataset, repeats):
    data = load_cq002() if dataset == 'CQ002' else make_synthetic()
    run = run_ours if implementation == 'ours' else run_theirs
    run(data)  # warm-up (imports, caches)
    runs = [run(data)[0] for _ in range(repeats)]
    tracemalloc.start()
    _, preprocessed, feedback = run(data)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    steps = {step: float(np.median([r[step] for r in runs])) for step in runs[0]}
    np.save(f'/tmp/bench_signal_{implementation}_{dataset}.npy', preprocessed)
    return {
        'total_s': float(np.median([sum(r.values()) for r in runs])),
        'steps_s': steps,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'traced_peak_mb': traced_peak / 2**20,
        'n_samples': int(len(data['times'])),
        'n_trials': int(len(data['events']['stimOn_times'])),
        'feedback_shape': list(np.shape(feedback)),
    }


def spawn(implementation, dataset, repeats):
    cmd = [sys.executable, __file__, '--worker', implementation, '--dataset', dataset]
    out = subprocess.run(
        cmd + ['--repeats', str(repeats)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(dataset):
    ours = np.load(f'/tmp/bench_signal_ours_{dataset}.npy')
    theirs = np.load(f'/tmp/bench_signal_theirs_{dataset}.npy')
    n = min(len(ours), len(theirs))
    return float(np.corrcoef(ours[:n], theirs[:n])[0, 1])


def report(results, repeats):
    lines = [
        f'Last run: {datetime.date.today().isoformat()}, `.venv/bin/python benchmarks/bench_signal.py'
        f' --repeats {repeats}`  ',
        f'Machine: {machine()}  ',
        f'Median of {repeats} repeats after a warm-up; each implementation in its own process. '
        'Peak RSS includes the interpreter and imports (iblphotometry pulls in ibllib/ONE); '
        '"traced" is the peak of Python/numpy allocations during one full run.',
        '',
        '| dataset | implementation | sliding QC (s) | preprocess + τ + iso R² (s) '
        '| peri-event (s) | total (s) | speed-up | peak RSS (MB) | traced (MB) |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for dataset, pair in results.items():
        for impl in ('ours', 'theirs'):
            r, steps = pair[impl], pair[impl]['steps_s']
            speedup = pair['theirs']['total_s'] / r['total_s']
            name = 'iblnm.signal' if impl == 'ours' else 'ibl-photometry 0.3.4'
            lines.append(
                f'| {dataset} | {name} | {steps["sliding QC"]:.3f} | '
                f'{steps["preprocess + τ + iso R²"]:.3f} | {steps["peri-event"]:.4f} | '
                f'{r["total_s"]:.3f} | {speedup:.1f}× | {r["peak_rss_mb"]:.0f} | '
                f'{r["traced_peak_mb"]:.0f} |'
            )
    lines.append('')
    for dataset, pair in results.items():
        lines.append(
            f'- {dataset}: {pair["ours"]["n_samples"]} samples per band × 2 bands × 2 fibers, '
            f'{pair["ours"]["n_trials"]} trials; r(ours, theirs) of the preprocessed fiber 0 = '
            f'{pair["agreement"]:.6f}.'
        )
    return '\n'.join(lines)


def write_readme(text):
    """Replace this script's section of ``benchmarks/README.md``."""
    write_section(
        'bench_signal', 'bench_signal.py — signal kernels (QC, preprocessing, peri-event)', text
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--no-readme', action='store_true', help='do not update benchmarks/README.md'
    )
    parser.add_argument('--worker', choices=['ours', 'theirs'], help=argparse.SUPPRESS)
    parser.add_argument('--dataset', choices=['CQ002', 'synthetic 1 h'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dataset, args.repeats)))
        return
    print(f'Machine: {machine()}')
    datasets = ['synthetic 1 h']
    if (config.REAL_DATA_DIR / CQ002).exists():
        datasets.insert(0, 'CQ002')
    else:
        print(f'CQ002 skipped: {config.REAL_DATA_DIR / CQ002} not found')
    results = {}
    for dataset in datasets:
        results[dataset] = {impl: spawn(impl, dataset, args.repeats) for impl in ('ours', 'theirs')}
        results[dataset]['agreement'] = agreement(dataset)
    text = report(results, args.repeats)
    print(text)
    if not args.no_readme:
        write_readme(text)


if __name__ == '__main__':
    main()
