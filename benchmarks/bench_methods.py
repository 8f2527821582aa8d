"""Preprocessing method comparison on simulated ground truth and on real sessions (issue 12).

Every combination of

- isosbestic fit: OLS / Huber / Tukey bisquare (``regression.method``),
- pre-fit low-pass of both bands at 3 Hz on / off (``regression.lowpass_hz``),
- bleach baseline: 0.01 Hz low-pass / robust double exponential (``bleach.method``),
- artefact masking on / off (``iblnm.signal.artefacts.detect_artefacts``),

all with the camera floor subtracted, plus ibl-photometry 0.3.4's
``isosbestic_correction_pipeline`` (+ ``zscore`` + ``resample_signal(fs=30, 'pchip')``) and
the pre-issue-12 iblnm default (OLS, low-pass bleach, no floor, no mask) as rows of the same
run, on:

1. **simulated fibers** with known ΔF/F (``_synth.make_fiber``: an independent generator;
   and ``iblnm.simulate.simulate_fiber`` when it exists), each clean and with injected
   artefacts (``_synth.inject_artefacts``): median r(output, true ΔF/F) on the clean fiber,
   r on the valid samples of the fiber with artefacts, the ΔF/F gain (slope of the output
   ΔF/F on the true one, both high-passed at 0.05 Hz: transient amplitudes), and the
   fraction of injected / clean samples masked;
2. **real sessions** (``../shared/data/real``; no truth there): CQ002's whole recording
   (with its set-up stretches before the task) and its task part: isosbestic slope with and
   without the set-up edges, the fraction of the output's variance in the stretches the
   mask removes, split-half (odd / even trials) correlation of the mean feedback responses;
   fip_40 (single band, 50 Hz): split-half agreement and the anti-aliasing check;
3. **anti-aliasing**: 8-15 Hz power of a 130 Hz fiber's 30 Hz output with and without the
   anti-alias low-pass, against the same fiber recorded at 30 Hz;
4. **timing** of ``PhotometrySession.detect_artefacts`` + ``preprocess`` on CQ002 with the
   new default and with the old one, and of ibl-photometry's pipeline, in the same run.

Usage::

    .venv/bin/python benchmarks/bench_methods.py [--n-fibers 24] [--duration 2400]
        [--no-readme] [--no-docs]

Writes the ``bench_methods`` section of ``benchmarks/README.md`` and the table between the
``bench_methods`` markers of ``docs/methods.md``.
"""

import argparse
import datetime
import itertools
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth  # noqa: E402
from _report import machine, write_section  # noqa: E402

from iblnm import config  # noqa: E402
from iblnm.signal import artefacts as af  # noqa: E402
from iblnm.signal import preprocess as sp  # noqa: E402

FITS = ('ols', 'huber', 'bisquare')
LOWPASS = (None, 3.0, 'fit')
BLEACH = ('lowpass', 'double_exponential')
MASK = (False, True)
DOCS = REPO / 'docs' / 'methods.md'
OLD_DEFAULT = {
    'floor': {'subtract': False},
    'bleach': {'method': 'lowpass'},
    'regression': {'method': 'ols', 'lowpass_hz': None, 'max_fit_samples': None},
    'resample': {'anti_alias': False},
}


def combo_params(fit, lowpass, bleach):
    output = True
    if lowpass == 'fit':  # 3 Hz low-pass for the fit only; the output keeps its bandwidth
        lowpass, output = 3.0, False
    return {
        'floor': {'subtract': True},
        'bleach': {'method': bleach},
        'regression': {
            'method': fit,
            'lowpass_hz': lowpass,
            'lowpass_output': output,
            'max_fit_samples': 20_000,
        },
    }


def methods():
    """Every row of the table: ``(fit, lowpass, bleach, mask, name)`` for each combination,
    then iblnm before issue 12 and ibl-photometry 0.3.4."""
    for fit, lowpass, bleach, mask in itertools.product(FITS, LOWPASS, BLEACH, MASK):
        yield fit, lowpass, bleach, mask, combo_name(fit, lowpass, bleach, mask)
    yield 'old', None, None, False, 'iblnm before issue 12'
    yield 'ibl', None, None, False, 'ibl-photometry 0.3.4'


def combo_name(fit, lowpass, bleach, mask):
    lp = {None: '—', 3.0: '3 Hz', 'fit': '3 Hz fit only'}[lowpass]
    return f'{fit} | {lp} | {"dexp" if bleach == "double_exponential" else "LP 0.01"} | {"mask" if mask else "—"}'


# ---------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------
def _hp(values, fs=config.TARGET_FS, cutoff=0.05):
    return values - sp.lowpass(values, fs, cutoff, order=2)


def _r(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 10 else np.nan


def _gain(dff, truth):
    ok = np.isfinite(dff) & np.isfinite(truth)
    if ok.sum() < 100:
        return np.nan
    x, y = _hp(sp.fill_invalid(truth, ok)), _hp(sp.fill_invalid(dff, ok))
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def ibl_pipeline(times, signal, reference):
    """ibl-photometry 0.3.4 isosbestic pipeline → z-score → 30 Hz pchip: (times, values)."""
    from iblphotometry import fpio, pipelines, processing  # noqa: F401 (import order)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = pipelines.run_pipeline(
            pipelines.isosbestic_correction_pipeline,
            pd.Series(signal, index=times),
            pd.Series(reference, index=times),
        )
        out = processing.resample_signal(processing.zscore(out), fs=30, method='pchip')
    return out.index.to_numpy(), out.to_numpy()


def run_one(fiber, params, mask):
    """(result, valid) of our pipeline on one fiber dict."""
    valid = None
    if mask:
        valid = af.detect_artefacts(
            fiber['times'], fiber['gcamp'], fiber['iso'], floor=fiber['floor']
        ).valid
    result = sp.preprocess_isosbestic(
        fiber['times'],
        fiber['gcamp'],
        fiber['iso'],
        params=params,
        compute_qc=False,
        valid=valid,
        floor=fiber['floor'],
    )
    return result, valid


def simulated_fibers(n_fibers, duration, seed0=0):
    fibers = []
    for k in range(n_fibers):
        clean = _synth.make_fiber(seed0 + k, duration=duration)
        fibers.append(('synth', clean, _synth.inject_artefacts(clean, seed0 + k)))
    simulate_fiber = _sim_generator()
    if simulate_fiber is not None:
        for k in range(n_fibers):
            fibers.extend(simulate_fiber(seed0 + k, duration))
    return fibers


def _sim_generator():
    """``iblnm.simulate.simulate_fiber`` adapted to (source, clean, dirty) tuples, if present."""
    try:
        from iblnm.simulate import simulate_fiber
    except ImportError:
        return None

    def generate(seed, duration):
        try:
            out = simulate_fiber(
                duration_s=duration,
                quality='good',
                seed=seed,
                edge_start=True,
                edge_end=True,
                mid_disconnect=True,
                dropouts=True,
                dark_offset=True,
                dark_frames=True,
            )
        except TypeError:  # another signature: skip this generator
            return []
        return [('sim', *_adapt_sim(out))]

    return generate


def _adapt_sim(out):
    """The sim helper's fiber dict → our (clean, dirty) fiber dicts (bands paired by position)."""
    n = min(len(out['times']), len(out['times_iso']))
    floor, _ = af.estimate_floor(out.get('dark'))
    base = {
        'times': np.asarray(out['times'][:n], float),
        'dff': np.asarray(out['dff'][:n], float),
        'floor': floor,
        'fs': 30.0,
    }
    clean = {
        **base,
        'gcamp': out['gcamp_clean'][:n],
        'iso': out['iso_clean'][:n],
        'mask': np.zeros(n, bool),
    }
    dirty = {
        **base,
        'gcamp': out['gcamp'][:n],
        'iso': out['iso'][:n],
        'mask': np.asarray(out['artefact'][:n], bool) | np.asarray(out['artefact_iso'][:n], bool),
    }
    return clean, dirty


def evaluate_simulated(fibers):
    rows = []
    for f_i, (source, clean, dirty) in enumerate(fibers):
        truth_mask = dirty['mask']
        for fit, lowpass, bleach, mask, name in methods():
            t0 = time.process_time()  # CPU time: robust to the load of the shared machine
            out = {}
            for label, fiber in (('clean', clean), ('dirty', dirty)):
                if fit == 'ibl':
                    times, z = ibl_pipeline(fiber['times'], fiber['gcamp'], fiber['iso'])
                    dff, valid = z, None
                else:
                    params = OLD_DEFAULT if fit == 'old' else combo_params(fit, lowpass, bleach)
                    res, valid = run_one(fiber, params, mask)
                    times, z, dff = res.times, res.values, res.dff
                truth = np.interp(times, fiber['times'], fiber['dff'])
                out[label] = (times, z, dff, truth, valid)
            elapsed = time.process_time() - t0
            _, z_c, dff_c, truth_c, _ = out['clean']
            t_d, z_d, dff_d, truth_d, valid_d = out['dirty']
            # r on the dirty fiber: samples valid in our mask and outside injected artefacts
            clean_grid = np.interp(t_d, dirty['times'], (~truth_mask).astype(float)) == 1
            keep = clean_grid & np.isfinite(z_d)
            row = {
                'source': source,
                'fiber': f_i,
                'method': name,
                'fit': fit,
                'lowpass': lowpass,
                'bleach': bleach,
                'mask': mask,
                'r_clean': _r(z_c, truth_c),
                'r_dirty': _r(np.where(keep, z_d, np.nan), truth_d),
                'gain': _gain(dff_c, truth_c) if fit != 'ibl' else np.nan,
                'seconds': elapsed,
            }
            if valid_d is not None:
                row['hit'] = float(np.mean(~valid_d[truth_mask]))
                row['false_alarm'] = float(np.mean(~valid_d[~truth_mask]))
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Real sessions
# ---------------------------------------------------------------------------
def _cq002(real):
    session = real / 'cortexlab/Subjects/CQ002/2024-11-05/001'
    signal = pd.read_parquet(session / 'alf/photometry/photometry.signal.pqt')
    trials = pd.read_parquet(session / 'alf/task_00/_ibl_trials.table.pqt')
    g, i = signal[signal['name'] == 'GCaMP'], signal[signal['name'] == 'Isosbestic']
    n = min(len(g), len(i))
    fibers = {
        c: (g['times'].to_numpy()[:n], g[c].to_numpy()[:n], i[c].to_numpy()[:n])
        for c in ('G0', 'G4')
    }
    return fibers, trials


def split_half(times, values, events, window=(-1.0, 1.0)):
    """r between the mean responses (window, s) of odd and even trials."""
    from iblnm.signal import responses as sr

    resp, _ = sr.peri_event(times, values, events, window=window)
    odd, even = np.nanmean(resp[1::2], axis=0), np.nanmean(resp[0::2], axis=0)
    return _r(np.ravel(odd), np.ravel(even))


def evaluate_real(real):
    fibers, trials = _cq002(real)
    t_start = trials['intervals_0'].iloc[0] + config.PHOTOMETRY_RESTRICT_PRE
    t_stop = trials['intervals_1'].iloc[-1] + config.PHOTOMETRY_RESTRICT_POST
    feedback = trials['feedback_times'].to_numpy(float)
    rows = []
    for column, (times, gcamp, iso) in fibers.items():
        task = (times > t_start) & (times < t_stop)
        full_mask = af.detect_artefacts(times, gcamp, iso).valid
        for fit, lowpass, bleach, mask, name in methods():
            row = {
                'fiber': column,
                'method': name,
                'fit': fit,
                'lowpass': lowpass,
                'bleach': bleach,
                'mask': mask,
            }
            if fit == 'ibl':
                t_full, z_full = ibl_pipeline(times, gcamp, iso)
                t_task, z_task = ibl_pipeline(times[task], gcamp[task], iso[task])
                slopes = (np.nan, np.nan)
            else:
                params = OLD_DEFAULT if fit == 'old' else combo_params(fit, lowpass, bleach)
                full = sp.preprocess_isosbestic(
                    times,
                    gcamp,
                    iso,
                    params=params,
                    compute_qc=False,
                    valid=full_mask if mask else None,
                )
                part = sp.preprocess_isosbestic(
                    times[task],
                    gcamp[task],
                    iso[task],
                    params=params,
                    compute_qc=False,
                    valid=full_mask[task] if mask else None,
                )
                t_full, z_full, t_task, z_task = full.times, full.values, part.times, part.values
                slopes = (full.slope, part.slope)
            masked_grid = np.interp(t_full, times, (~full_mask).astype(float)) > 0
            var = np.nan_to_num(z_full - np.nanmean(z_full)) ** 2
            row.update(
                {
                    'slope_full': slopes[0],
                    'slope_task': slopes[1],
                    'var_in_masked': float(var[masked_grid].sum() / var.sum()),
                    'split_half_task': split_half(t_task, z_task, feedback),
                    'split_half_full': split_half(t_full, z_full, feedback),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def evaluate_fip40(real):
    session = real / 'wittenlab/Subjects/fip_40/2023-05-18/001'
    raw = pd.read_parquet(session / 'alf/photometry/photometry.signal.pqt')
    trials = pd.read_parquet(session / 'alf/_ibl_trials.table.pqt')
    lit = raw[raw['wavelength'] == 470]
    dark = raw[raw['wavelength'] == 0]
    t = lit['times'].to_numpy()
    task = (t > trials['intervals_0'].iloc[0] - 5) & (t < trials['intervals_1'].iloc[-1] + 5)
    rows = []
    for column in ('Region0G', 'Region1G', 'Region2G'):
        floor, _ = af.estimate_floor(dark[column].to_numpy())
        values = lit[column].to_numpy()[task]
        valid = af.detect_artefacts(t[task], values, floor=floor).valid
        for bleach, aa in itertools.product(BLEACH, (False, True)):
            params = {
                'floor': {'subtract': True},
                'bleach': {'method': bleach},
                'resample': {'anti_alias': aa},
            }
            res = sp.preprocess_single_band(
                t[task], values, params=params, compute_qc=False, valid=valid, floor=floor
            )
            rows.append(
                {
                    'fiber': column,
                    'bleach': bleach,
                    'anti_alias': aa,
                    'frac_valid': float(valid.mean()),
                    'split_half': split_half(
                        res.times, res.values, trials['feedback_times'].to_numpy(float)
                    ),
                    'hf_power': _band_power(res.times, res.dff),
                }
            )
    return pd.DataFrame(rows)


def _band_power(times, values, lo=8.0, hi=15.0):
    from scipy import signal as sps

    v = values[np.isfinite(values)]
    f, pxx = sps.welch(v - v.mean(), fs=1 / np.median(np.diff(times)), nperseg=2048)
    return float(pxx[(f >= lo) & (f <= hi)].mean())


def evaluate_aliasing(duration=1200.0):
    """8-15 Hz power of the 30 Hz output of a 130 Hz fiber, with / without anti-aliasing."""
    out = {}
    for fs in (30.0, 130.0):
        fiber = _synth.make_fiber(99, duration=duration, fs=fs, noise=0.003)
        for aa in (False, True):
            params = {'floor': {'subtract': True}, 'resample': {'anti_alias': aa}}
            res = sp.preprocess_isosbestic(
                fiber['times'], fiber['gcamp'], fiber['iso'], params=params, compute_qc=False
            )
            out[(fs, aa)] = _band_power(res.times, res.dff)
    return out


def evaluate_timing(real, repeats=3):
    """Median seconds of detect_artefacts + preprocess on CQ002 (task part, 2 fibers)."""
    fibers, trials = _cq002(real)
    t_start = trials['intervals_0'].iloc[0] - 5
    t_stop = trials['intervals_1'].iloc[-1] + 5
    data = []
    for times, gcamp, iso in fibers.values():
        task = (times > t_start) & (times < t_stop)
        data.append((times[task], gcamp[task], iso[task]))
    times = data[0][0]
    gcamp, iso = np.column_stack([d[1] for d in data]), np.column_stack([d[2] for d in data])

    def new():
        valid = np.column_stack(
            [
                af.detect_artefacts(times, gcamp[:, k], iso[:, k]).valid
                for k in range(gcamp.shape[1])
            ]
        )
        return sp.preprocess_isosbestic(times, gcamp, iso, compute_qc=False, valid=valid)

    def detect():
        return [af.detect_artefacts(times, gcamp[:, k], iso[:, k]) for k in range(gcamp.shape[1])]

    def old():
        return sp.preprocess_isosbestic(times, gcamp, iso, params=OLD_DEFAULT, compute_qc=False)

    def ibl():
        return [ibl_pipeline(times, gcamp[:, k], iso[:, k]) for k in range(gcamp.shape[1])]

    out = {}
    for name, fn in (('old', old), ('ibl', ibl), ('detect', detect), ('new', new)):
        runs = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            runs.append(time.process_time() - t0)
        out[name] = float(np.median(runs))
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def summary_table(sim, real):
    agg = sim.groupby('method', sort=False).agg(
        r_clean=('r_clean', 'median'),
        r_dirty=('r_dirty', 'median'),
        r_min=('r_clean', 'min'),
        gain=('gain', 'median'),
        ms=('seconds', 'median'),
    )
    realagg = real.groupby('method', sort=False).agg(
        slope_full=('slope_full', lambda s: ' / '.join(f'{x:.2f}' for x in s)),
        slope_task=('slope_task', lambda s: ' / '.join(f'{x:.2f}' for x in s)),
        var_masked=('var_in_masked', 'median'),
        split=('split_half_task', 'median'),
        split_full=('split_half_full', 'median'),
    )
    table = agg.join(realagg)
    lines = [
        '| fit \\| pre-fit LP \\| bleach \\| mask | sim r clean (min) | sim r with artefacts | '
        'ΔF/F gain | ms/fiber | CQ002 slope full / task (G0 / G4) | var. in masked | '
        'split-half task / full |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name, row in table.iterrows():
        gain = '—' if not np.isfinite(row['gain']) else f'{row["gain"]:.2f}'
        lines.append(
            f'| {name} | {row["r_clean"]:.3f} ({row["r_min"]:.3f}) | {row["r_dirty"]:.3f} | {gain} '
            f'| {1e3 * row["ms"] / 2:.0f} | {row["slope_full"]} / {row["slope_task"]} '
            f'| {row["var_masked"]:.3f} | {row["split"]:.2f} / {row["split_full"]:.2f} |'
        )
    return table, '\n'.join(lines)


def _markdown(frame):
    cols = list(frame.columns)
    lines = ['| method | ' + ' | '.join(map(str, cols)) + ' |', '|---' * (len(cols) + 1) + '|']
    for name, row in frame.iterrows():
        lines.append(f'| {name} | ' + ' | '.join(f'{v:.3f}' for v in row) + ' |')
    return '\n'.join(lines)


def write_docs(text, path=DOCS):
    start, end = '<!-- bench_methods:start -->', '<!-- bench_methods:end -->'
    current = path.read_text()
    block = f'{start}\n{text}\n{end}'
    if start in current:
        current = re.sub(
            re.escape(start) + '.*?' + re.escape(end), lambda _: block, current, flags=re.S
        )
    else:
        current = current.rstrip('\n') + '\n\n' + block + '\n'
    path.write_text(current)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n-fibers', type=int, default=24)
    parser.add_argument('--duration', type=float, default=2400.0)
    parser.add_argument('--no-readme', action='store_true')
    parser.add_argument('--no-docs', action='store_true')
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    fibers = simulated_fibers(args.n_fibers, args.duration)
    sim = evaluate_simulated(fibers)
    real_dir = config.REAL_DATA_DIR / 'ibl'
    real = evaluate_real(real_dir)
    fip40 = evaluate_fip40(real_dir)
    aliasing = evaluate_aliasing()
    timing = evaluate_timing(real_dir)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    table, markdown = summary_table(sim, real)
    print(markdown)
    masked = sim[sim['mask'] == True]  # noqa: E712
    detection = (
        f'artefact masks on the {len(fibers)} fibers with injected artefacts: '
        f'median {100 * masked["hit"].median():.1f} % (min {100 * masked["hit"].min():.1f} %) '
        f'of the injected samples masked, median {100 * masked["false_alarm"].median():.2f} % '
        f'(max {100 * masked["false_alarm"].max():.2f} %) of the clean ones'
    )
    fip = fip40.groupby(['bleach', 'anti_alias']).agg(
        split=('split_half', 'median'), hf=('hf_power', 'median'), valid=('frac_valid', 'min')
    )
    alias = (
        f'8-15 Hz power of the 30 Hz ΔF/F output, 130 Hz fiber without / with anti-alias '
        f'low-pass: {aliasing[(130.0, False)]:.3g} / {aliasing[(130.0, True)]:.3g} '
        f'(×{aliasing[(130.0, False)] / aliasing[(130.0, True)]:.1f}); the same fiber '
        f'recorded at 30 Hz: {aliasing[(30.0, True)]:.3g}'
    )
    timing_text = (
        f'CPU time, CQ002 task part (2 fibers, 82k samples each), median of 3: old default '
        f'preprocess {1e3 * timing["old"]:.0f} ms; detect_artefacts '
        f'{1e3 * timing["detect"]:.0f} ms; detect + new default preprocess '
        f'{1e3 * timing["new"]:.0f} ms; ibl-photometry isosbestic pipeline + zscore + '
        f'resample {1e3 * timing["ibl"]:.0f} ms'
    )
    fip_lines = [
        '| fip_40 bleach | anti-alias | split-half r (median of 3) | 8-15 Hz power | min frac_valid |',
        '|---|---|---|---|---|',
    ]
    for (bleach, aa), row in fip.iterrows():
        fip_lines.append(
            f'| {bleach} | {aa} | {row["split"]:.3f} | {row["hf"]:.3g} | {row["valid"]:.3f} |'
        )
    sources = sim.groupby(['source', 'method'], sort=False)['r_clean'].median().unstack(0)
    header = (
        f'{datetime.date.today()} · `.venv/bin/python benchmarks/bench_methods.py '
        f'--n-fibers {args.n_fibers} --duration {args.duration:.0f}` · {machine()} · '
        f'{elapsed:.0f} s · load average {load0:.1f} → {load1:.1f} (machine shared)'
    )
    text = '\n\n'.join(
        [
            header,
            f'{len(fibers)} simulated fibers ({", ".join(f"{k}: {v}" for k, v in sim.groupby("source")["fiber"].nunique().items())}), '
            f'{args.duration:.0f} s each at 30 Hz; CQ002 G0 / G4 for the real columns. '
            'ms/fiber: CPU time of the preprocessing (with detection when masked) of one fiber '
            '(mean of its clean and artefact versions).',
            markdown,
            detection,
            alias,
            timing_text,
            '\n'.join(fip_lines),
            'Median r (clean) by generator:\n\n' + _markdown(sources),
        ]
    )
    print('\n\n'.join([detection, alias, timing_text, '\n'.join(fip_lines)]))
    if not args.no_readme:
        write_section('bench_methods', 'bench_methods.py — preprocessing methods (issue 12)', text)
    if not args.no_docs:
        write_docs(text)
    out = Path('/tmp/bench_methods')
    out.mkdir(exist_ok=True)
    sim.to_csv(out / 'sim.csv', index=False)
    real.to_csv(out / 'real.csv', index=False)
    fip40.to_csv(out / 'fip40.csv', index=False)
    return table


if __name__ == '__main__':
    main()
