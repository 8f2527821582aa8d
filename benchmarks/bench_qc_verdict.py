"""QC verdict thresholds against simulated fibers of known quality and real recordings.

Computes the QC metrics and the verdict (``iblnm.signal.qc.fiber_qc`` +
``iblnm.signal.verdict``, the kernels ``PhotometrySession.run_sliding_qc`` uses) on

- simulated fibers of known quality (``iblnm.simulate.simulate_fiber``: good, good with
  moderate artefacts, no signal, low light, large artefacts; with and without disconnected
  edges, dropouts, dark offsets), whose manifest gives the expected verdict;
- the real recordings in ``../shared/data/real`` (CQ002 and fip_40 within their task, the
  Neurophotometrics layout versions 1, 2 and 5 whole), with the labels of SOURCES.md;

draws the distribution of every rule's metric with its threshold
(``docs/figures/qc_verdict_distributions.{svg,png}``), writes the per-fiber table
(``docs/figures/qc_verdict_fibers.csv``) and prints the agreement with the manifest and a
markdown summary for docs/methods.md.

    .venv/bin/python benchmarks/bench_qc_verdict.py            # 60 simulated fibers, 900 s
    .venv/bin/python benchmarks/bench_qc_verdict.py --n-sim 40 --duration 600
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from iblnm import config
from iblnm.signal import qc
from iblnm.signal import verdict as sv

DOCS_FIGURES = config.PACKAGE_DIR.parent / 'docs' / 'figures'
QUALITY_MIX = (  # (quality, moderate, share of the simulated fibers)
    ('good', False, 0.30),
    ('good', True, 0.10),
    ('no_signal', False, 0.20),
    ('low_light', False, 0.15),
    ('large_artefacts', False, 0.25),
)
REAL = config.REAL_DATA_DIR / 'ibl'
# name: (folder, ROI, expected, note). 'not FAIL': PASS or WARNING accepted.
REAL_FIBERS = [
    ('CQ002', 'G0', 'not FAIL', 'SI, task period; dropouts'),
    ('CQ002', 'G4', 'not FAIL', 'PPT, task period; dropouts'),
    ('fip_40', 'Region0G', 'not FAIL', 'DLS, no isosbestic band'),
    ('fip_40', 'Region1G', 'not FAIL', 'DMS, no isosbestic band'),
    ('fip_40', 'Region2G', 'not FAIL', 'NAcc, no isosbestic band'),
    ('version_5', 'G0', 'FAIL', 'almost no light'),
    ('version_5', 'G1', 'FAIL', 'almost no light'),
    ('version_2', 'Region1G', 'FAIL', 'flat at the floor'),
    ('version_2', 'Region4G', 'FAIL', 'flat at the floor'),
    ('version_2', 'Region5G', 'FAIL', 'no fiber (0.3 % above the floor)'),
    ('version_2', 'Region3G', '?', 'signal (SOURCES.md)'),
    ('version_2', 'Region6G', '?', 'signal (SOURCES.md)'),
    ('version_1', 'Region1G', '?', 'signal (SOURCES.md)'),
    ('version_1', 'Region4G', '?', 'signal (SOURCES.md); 470 nm 2.4 % above the floor'),
    ('version_1', 'Region6G', '?', 'signal (SOURCES.md); 470 nm 5.5 % above the floor'),
]
CQ002 = 'cortexlab/Subjects/CQ002/2024-11-05/001'
FIP40 = 'wittenlab/Subjects/fip_40/2023-05-18/001'


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def simulated_fibers(n, duration, seed=0):
    """Yield (name, quality, moderate, expected, times, gcamp, iso) of ``n`` simulated fibers."""
    from iblnm.simulate import simulate_fiber

    rng = np.random.default_rng(seed)
    counts = [int(round(share * n)) for *_, share in QUALITY_MIX]
    counts[0] += n - sum(counts)
    k = 0
    for (quality, moderate, _), count in zip(QUALITY_MIX, counts):
        for _ in range(count):
            flags = {
                name: bool(rng.random() < p)
                for name, p in (
                    ('edge_start', 0.5),
                    ('edge_end', 0.5),
                    ('dropouts', 0.5),
                    ('dark_offset', 0.5),
                    ('mid_disconnect', 0.3),
                )
            }
            out = simulate_fiber(
                duration,
                quality,
                seed=seed * 1000 + k,
                moderate=moderate,
                nm=('DA', '5HT', 'NE', 'ACh')[k % 4],
                **flags,
            )
            label = f'{quality}{"+moderate" if moderate else ""}'
            yield (
                f'sim{k:02d}',
                label,
                out['expected_verdict'],
                out['times'],
                out['gcamp'],
                out['iso'],
                ','.join(f for f, on in flags.items() if on),
            )
            k += 1


def _task_bands(folder, rois, band_names=('GCaMP', 'Isosbestic')):
    signal = pd.read_parquet(REAL / folder / 'alf/photometry/photometry.signal.pqt')
    trials_path = next((REAL / folder).glob('alf/**/_ibl_trials.table.pqt'))
    trials = pd.read_parquet(trials_path)
    t0 = trials['intervals_0'].iloc[0] + config.PHOTOMETRY_RESTRICT_PRE
    t1 = trials['intervals_1'].iloc[-1] + config.PHOTOMETRY_RESTRICT_POST
    bands = {}
    for band in band_names:
        rows = signal[(signal['name'] == band) & (signal['times'] > t0) & (signal['times'] < t1)]
        if len(rows):
            bands[band] = (rows['times'].to_numpy(), rows[rois].to_numpy())
    return bands


def _raw_bands(path, rois):
    from iblnm.loaders import read_raw_photometry

    raw = read_raw_photometry(path)
    gcamp, iso = raw[raw['led'] == 2], raw[raw['led'] == 1]
    bands = {'GCaMP': (gcamp['times'].to_numpy(), gcamp[rois].to_numpy())}
    if len(iso):
        bands['Isosbestic'] = (iso['times'].to_numpy(), iso[rois].to_numpy())
    return bands


def real_fibers():
    """Yield (name, label, expected, times, gcamp, iso, note) of the real recordings."""
    if not REAL.exists():
        print(f'real recordings not found at {REAL}: skipped')
        return
    by_session = {}
    for session, roi, expected, note in REAL_FIBERS:
        by_session.setdefault(session, []).append((roi, expected, note))
    for session, items in by_session.items():
        rois = [roi for roi, *_ in items]
        if session == 'CQ002':
            bands = _task_bands(CQ002, rois)
        elif session == 'fip_40':
            bands = _task_bands(FIP40, rois, ('GCaMP',))
        else:
            folder = REAL / 'neurophotometrics_versions' / session
            bands = _raw_bands(folder / '_neurophotometrics_fpData.raw.pqt', rois)
        times, gcamp = bands['GCaMP']
        iso = bands.get('Isosbestic', (None, None))[1]
        for i, (roi, expected, note) in enumerate(items):
            yield (
                f'{session}/{roi}',
                session,
                expected,
                times,
                gcamp[:, i],
                None if iso is None else iso[:, i],
                note,
            )


def _with_pipeline_metrics(bands, times, gcamp, iso):
    """Add what the photometry stage adds to the QC rows before the verdict: the artefact
    fractions and counts (both rows, ``PhotometrySession.detect_artefacts``) and the
    isosbestic fit of the default preprocessing on the valid samples (GCaMP row:
    ``iso_slope``, ``iso_intercept``, ``iso_r2``)."""
    from iblnm.signal import artefacts as af
    from iblnm.signal import preprocess as sp

    n = len(times) if iso is None else min(len(times), len(gcamp), len(iso))
    times, gcamp = np.asarray(times[:n], float), np.asarray(gcamp[:n], float)
    iso = None if iso is None else np.asarray(iso[:n], float)
    found = af.detect_artefacts(times, gcamp, iso, floor=config.DARK_LEVEL)
    for metrics in bands.values():
        metrics.update(found.summary)
    if iso is not None:
        fit = sp.preprocess_isosbestic(times, gcamp, iso, valid=found.valid, compute_qc=False)
        bands['GCaMP'].update(
            iso_slope=float(fit.slope), iso_intercept=float(fit.intercept), iso_r2=float(fit.r2)
        )
    return bands


def score(fibers):
    """One row per fiber: metrics of both bands (recording_metrics keys), verdict, reasons."""
    rows = []
    for name, label, expected, times, gcamp, iso, note in fibers:
        t0 = time.perf_counter()
        bands = qc.fiber_qc(times, gcamp, iso)
        bands = _with_pipeline_metrics(bands, times, gcamp, iso)
        table = pd.DataFrame(
            [
                {'eid': name, 'brain_region': name, 'band': band, **metrics}
                for band, metrics in bands.items()
            ]
        )
        metrics = sv.recording_metrics(table)
        verdict, reasons = sv.qc_verdict(metrics)
        rows.append(
            {
                'fiber': name,
                'label': label,
                'expected': expected,
                'verdict': verdict,
                'reasons': sv.join_reasons(reasons),
                'note': note,
                'seconds': time.perf_counter() - t0,
                **metrics,
            }
        )
    return pd.DataFrame(rows)


def agrees(expected, verdict):
    if expected == 'not FAIL':
        return verdict != 'FAIL'
    if expected == '?':
        return np.nan
    return expected == verdict


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------
LOG_METRICS = {
    'light_above_floor',
    'Isosbestic:light_above_floor',
    'n_noise_levels',
    'Isosbestic:n_noise_levels',
    'residual_power_ratio',
    'Isosbestic:relative_noise',
    'frac_shared_excursion',
}
UNITS = {
    'light_above_floor': 'floors above the floor',
    'n_noise_levels': 'distinct values in ±1 SD',
    'residual_power_ratio': 'power 0.1–1 Hz / 2–3.5 Hz',
    'relative_noise': 'noise / light',
    'frac_shared_excursion': 'fraction of time',
    'n_shared_steps': 'steps',
    'iso_slope': 'slope',
    'frac_valid': 'fraction',
    'frac_saturated': 'fraction',
    'upper_tail_excess': 'fraction above +3 − below −3 robust SD',
    'iso_explained': 'fraction of GCaMP variance',
    'n_band_inversions': 'count',
    'n_early_samples': 'count',
}


def plot(sim, real, fpath_stem):
    import matplotlib.pyplot as plt

    from iblnm import vis

    rules = [r for r in config.QC_VERDICT_RULES if r['metric'] in sim or r['metric'] in real]
    metrics = list(
        dict.fromkeys(
            m for r in rules for m in (r['metric'], *(c['metric'] for c in r.get('and', ())))
        )
    )
    metrics = [
        m
        for m in metrics
        if pd.concat([sim.get(m, pd.Series(dtype=float)), real.get(m, pd.Series(dtype=float))])
        .notna()
        .any()
    ]
    labels = list(dict.fromkeys(sim['label'])) + list(dict.fromkeys(real['label']))
    colors = {
        'PASS': vis.VERDICT_COLORS['PASS'],
        'WARNING': vis.VERDICT_COLORS['WARNING'],
        'FAIL': vis.VERDICT_COLORS['FAIL'],
    }
    n_cols = 3
    n_rows = int(np.ceil(len(metrics) / n_cols))
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(5.2 * n_cols, 0.32 * len(labels) * n_rows + 1.5 * n_rows),
        squeeze=False,
    )
    both = pd.concat([sim, real], ignore_index=True)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes.ravel(), metrics):
        for i, label in enumerate(labels):
            rows = both[both['label'] == label]
            values = pd.to_numeric(rows.get(metric), errors='coerce')
            ok = values.notna().to_numpy()
            x = values.to_numpy(float)[ok]
            if metric in LOG_METRICS:
                x = np.maximum(x, 1e-4)
            marker = 'o' if label in set(sim['label']) else 'D'
            ax.scatter(
                x,
                i + rng.uniform(-0.2, 0.2, x.size),
                s=16,
                marker=marker,
                c=[colors[v] for v in rows['verdict'].to_numpy()[ok]],
                edgecolors='k',
                linewidths=0.3,
            )
        conditions = [
            {**c, 'name': r['name'], 'severity': r['severity']}
            for r in rules
            for c in (r, *r.get('and', ()))
            if c['metric'] == metric and c['op'] != sv.MISSING  # no threshold to draw
        ]
        for rule in conditions:
            style = '-' if rule['severity'] == 'FAIL' else '--'
            ax.axvline(
                rule['threshold'] if metric not in LOG_METRICS else max(rule['threshold'], 1e-4),
                color=colors[rule['severity']],
                ls=style,
                lw=1.2,
            )
            ax.text(
                rule['threshold'],
                -0.6,
                f' {rule["name"]}',
                rotation=90,
                fontsize=6,
                va='bottom',
                color=colors[rule['severity']],
            )
        if metric in LOG_METRICS:
            ax.set_xscale('log')
        ax.set_yticks(
            range(len(labels)),
            [f'{lab} (n={int((both["label"] == lab).sum())})' for lab in labels],
            fontsize=7,
        )
        ax.axhline(len(set(sim['label'])) - 0.5, color='grey', lw=0.5)
        ax.invert_yaxis()
        ax.set_xlabel(f'{metric} ({UNITS.get(metric.split(":")[-1], "")})', fontsize=8)
        ax.set_title(metric, fontsize=9)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis('off')
    handles = [
        plt.Line2D([], [], marker='o', ls='', color=c, label=f'verdict {v}')
        for v, c in colors.items()
    ]
    handles += [
        plt.Line2D([], [], ls='-', color='k', label='FAIL threshold'),
        plt.Line2D([], [], ls='--', color='k', label='WARNING threshold'),
        plt.Line2D([], [], marker='o', ls='', mfc='w', color='k', label='simulated'),
        plt.Line2D([], [], marker='D', ls='', mfc='w', color='k', label='real'),
    ]
    fig.legend(handles=handles, loc='lower center', ncol=4, frameon=False, fontsize=8)
    fig.suptitle(
        f'QC metrics of {len(sim)} simulated fibers (by manifest quality) and '
        f'{len(real)} real fibers (by recording), with the verdict thresholds'
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return vis.save_figure_formats(fig, fpath_stem)


def rules_markdown(rules=None):
    """The verdict rules as a markdown table (docs/methods.md §2.5)."""
    rules = config.QC_VERDICT_RULES if rules is None else rules
    lines = ['| rule (reason) | metric | fires when | severity |', '|---|---|---|---|']
    for r in rules:
        extra = ''.join(
            f' and `{c["metric"]}` {c["op"]} {c["threshold"]:g}' for c in r.get('and', ())
        )
        fires = (
            'absent or NaN, and no FAIL fired'
            if r['op'] == sv.MISSING
            else f'{r["op"]} {r["threshold"]:g}{extra}'
        )
        lines.append(f'| `{r["name"]}` | `{r["metric"]}` | {fires} | {r["severity"]} |')
    return '\n'.join(lines)


def markdown(sim, real):
    lines = []
    ok = sim.apply(lambda r: agrees(r['expected'], r['verdict']), axis=1).astype(bool)
    lines.append(
        f'Simulated: {int(ok.sum())}/{len(sim)} fibers agree with the manifest '
        f'({100 * ok.mean():.1f} %).\n'
    )
    confusion = pd.crosstab(sim['label'], sim['verdict']).reindex(
        columns=list(config.QC_VERDICTS), fill_value=0
    )
    expected = sim.groupby('label')['expected'].first()
    lines.append('| simulated quality | expected | PASS | WARNING | FAIL |')
    lines.append('|---|---|---|---|---|')
    for label, row in confusion.iterrows():
        lines.append(
            f'| {label} | {expected[label]} | '
            + ' | '.join(str(row[v]) for v in config.QC_VERDICTS)
            + ' |'
        )
    lines.append('')
    lines.append('| real fiber | expected | verdict | reasons | note |')
    lines.append('|---|---|---|---|---|')
    for r in real.itertuples():
        lines.append(f'| {r.fiber} | {r.expected} | {r.verdict} | {r.reasons or "–"} | {r.note} |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n-sim', type=int, default=60)
    parser.add_argument('--duration', type=float, default=900.0, help='s per simulated fiber')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=DOCS_FIGURES)
    args = parser.parse_args()
    warnings.filterwarnings('ignore', category=RuntimeWarning)
    t0 = time.perf_counter()
    sim = score(simulated_fibers(args.n_sim, args.duration, args.seed))
    real = score(real_fibers())
    sim['agrees'] = [agrees(e, v) for e, v in zip(sim['expected'], sim['verdict'])]
    if len(real):
        real['agrees'] = [agrees(e, v) for e, v in zip(real['expected'], real['verdict'])]
    args.out.mkdir(parents=True, exist_ok=True)
    pd.concat([sim.assign(source='simulated'), real.assign(source='real')]).to_csv(
        args.out / 'qc_verdict_fibers.csv', index=False, float_format='%.6g'
    )
    paths = plot(sim, real, args.out / 'qc_verdict_distributions')
    print(rules_markdown())
    print()
    print(markdown(sim, real))
    print(
        f'\nQC per fiber: median {sim["seconds"].median():.2f} s (simulated, '
        f'{args.duration:.0f} s recordings); total {time.perf_counter() - t0:.0f} s'
    )
    print('figures:', *paths)


if __name__ == '__main__':
    main()
