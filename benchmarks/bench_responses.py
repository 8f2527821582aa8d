"""Benchmark: event-kernel regression vs PSTH magnitudes on overlapping events (issue 13).

Simulated recordings (:func:`iblnm.simulate.overlap.simulate_overlapping_session`: the
generator's NM kernels and per-trial amplitudes, stimOn -> movement -> feedback 0.15-0.2 s
apart) are analysed three ways:

- **PSTH, original**: window means after the 3-sample baseline [-0.1, 0) s before each
  event, masked at the next event (the pipeline before issue 13);
- **PSTH, trial baseline**: the same with the trial baseline [-0.5, 0) s before stimOn
  (the default since issue 13);
- **kernels**: ``fit_event_kernels`` (tent basis, GCV-chosen penalty; on the 'ibl' and
  'untuned' sessions also with AR prewhitening, for comparison); the model's
  response of each trial set, and the per-trial overlap-free ("cleaned") magnitudes.

Reported: kernel recovery (r and amplitude vs the true condition kernels, per session and
for the mean over sessions), the bias of each estimate of the early-window response and of
the outcome effect (correct - error), per-trial reliability against the truth, the
split-half reliability of the condition means on the real sessions (trial vs 3-sample
baseline), and the fit time of a 1 h recording at 30 Hz.

Usage: ``.venv/bin/python benchmarks/bench_responses.py [--seeds 20] [--trials 900]
[--no-readme]``
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from iblnm import config  # noqa: E402
from iblnm.signal import event_kernels as ek  # noqa: E402
from iblnm.signal import responses as sr  # noqa: E402
from iblnm.simulate.overlap import (  # noqa: E402
    EVENTS,
    UNTUNED,
    simulate_overlapping_session,
    true_condition_kernels,
    true_trial_responses,
)

NMS = ('DA', '5HT', 'NE', 'ACh')
WINDOWS = config.RESPONSE_WINDOWS
PREWHITEN_ORDER = 10  # the prewhitened fit compared with the default (no prewhitening)
REGIMES = {'ibl': ('ibl', NMS), 'tight': ('tight', NMS), 'untuned': (UNTUNED['delays'], ('X',))}


def _window_mean(x, lags, window):
    sel = (lags >= window[0] - 1e-9) & (lags < window[1] - 1e-9)
    return np.nanmean(x[..., sel], axis=-1)


def psth_magnitudes(sim, baseline):
    """{event: (n_trials, n_windows)} window means, masked at the next event."""
    times, values, trials = sim['times'], sim['values'], sim['trials']
    out = {}
    stim_tr, tpts = sr.peri_event(times, values, trials['stimOn_times'].to_numpy())
    trial_base = sr.baseline_mean(stim_tr, tpts, config.TRIAL_BASELINE_WINDOW)
    for k, event in enumerate(EVENTS):
        traces, tpts = sr.peri_event(times, values, trials[event].to_numpy())
        if baseline == 'trial':
            traces = sr.subtract_baseline(traces, tpts, baseline=trial_base)
        else:
            traces = sr.subtract_baseline(traces, tpts, window=config.BASELINE_WINDOW)
        if k + 1 < len(EVENTS):
            dt = (trials[EVENTS[k + 1]] - trials[event]).to_numpy()
            traces = sr.mask_after(traces, tpts, dt)
        out[event] = np.column_stack(
            [sr.response_magnitude(traces, tpts, window=w) for w in WINDOWS.values()]
        )
    return out


def cleaned_magnitudes(sim, fit):
    """{event: (n_trials, n_windows)} overlap-free magnitudes (as PhotometrySession does)."""
    times, values, trials = sim['times'], sim['values'], sim['trials']
    residual = values - np.nansum(fit.contributions, axis=0)
    tr, tb = sr.peri_event(
        times, residual, trials['stimOn_times'].to_numpy(), window=config.TRIAL_BASELINE_WINDOW
    )
    base = sr.baseline_mean(tr, tb, config.TRIAL_BASELINE_WINDOW)
    out = {}
    for e, event in enumerate(EVENTS):
        traces, tpts = sr.peri_event(
            times, residual + fit.contributions[e], trials[event].to_numpy(), window=(0.0, 2.0)
        )
        out[event] = np.column_stack(
            [sr.response_magnitude(traces, tpts, window=w) - base for w in WINDOWS.values()]
        )
    return out


def analyse(nm, seed, n_trials, delays, compare=False):
    kernels = UNTUNED['kernels'] if nm == 'X' else None
    sim = simulate_overlapping_session(
        nm, n_trials=n_trials, seed=seed, delays=delays, kernels=kernels
    )
    trials = sim['trials']
    weights = ek.condition_weights(trials, hemisphere='l')
    event_times = [trials[e].to_numpy() for e in EVENTS]
    t0 = time.process_time()
    fit = ek.fit_event_kernels(
        sim['times'], sim['values'], event_times, weights, events=list(EVENTS)
    )
    seconds = time.process_time() - t0
    lags = fit.lags
    truth = true_condition_kernels(sim, lags, weights)
    fits = {'default': fit}
    if compare:  # the same session with AR prewhitening (GLS)
        fits['prewhitened'] = ek.fit_event_kernels(
            sim['times'],
            sim['values'],
            event_times,
            weights,
            events=list(EVENTS),
            ar_order=PREWHITEN_ORDER,
        )
    rows, kern = [], []
    for method, f in fits.items():
        for e, event in enumerate(EVENTS):
            for c, cond in enumerate(ek.CONDITIONS):
                tk, k = truth[e, c], f.kernels[e, c]
                if np.abs(tk).max() < 1e-3 or not np.isfinite(k).all():
                    continue
                half = np.abs(tk) >= 0.5 * np.abs(tk).max()
                kern.append(
                    {
                        'nm': nm,
                        'event': event,
                        'condition': cond,
                        'seed': seed,
                        'method': method,
                        'r': np.corrcoef(tk, k)[0, 1],
                        'amp': k[half].mean() / tk[half].mean(),
                        'kernel': k,
                        'truth': tk,
                        'se_rel': np.mean(f.se[e, c][half]) / np.abs(tk[half].mean()),
                        'z': np.nanmean(((k - tk) / f.se[e, c])[::6] ** 2),
                    }
                )
    estimates = {
        'psth_event': psth_magnitudes(sim, 'event'),
        'psth_trial': psth_magnitudes(sim, 'trial'),
        'cleaned': cleaned_magnitudes(sim, fit),
    }
    fine = np.arange(0, 2.0, 1 / 120)
    correct = trials['feedbackType'].to_numpy() == 1
    for e, event in enumerate(EVENTS):
        true_trial = true_trial_responses(sim, event, fine)
        true_w = np.column_stack([_window_mean(true_trial, fine, w) for w in WINDOWS.values()])
        model = np.einsum('tc,cl->tl', weights, np.nan_to_num(fit.kernels[e]))
        model_w = np.column_stack([_window_mean(model, lags, w) for w in WINDOWS.values()])
        for subset, sel in (
            ('all', np.ones(len(trials), bool)),
            ('correct', correct),
            ('error', ~correct),
        ):
            row = {'nm': nm, 'event': event, 'subset': subset, 'seed': seed}
            for w, name in enumerate(WINDOWS):
                row[f'truth_{name}'] = true_w[sel, w].mean()
                row[f'kernel_{name}'] = model_w[sel, w].mean()
                for est, values in estimates.items():
                    row[f'{est}_{name}'] = np.nanmean(values[event][sel, w])
            if subset == 'all':
                for est, values in estimates.items():
                    ok = np.isfinite(values[event][:, 0])
                    if true_w[ok, 0].std() > 0:
                        row[f'rel_{est}'] = np.corrcoef(true_w[ok, 0], values[event][ok, 0])[0, 1]
            rows.append(row)
    return rows, kern, seconds, len(sim['times'])


def split_half(magnitudes, trials, min_trials=4):
    """Split-half reliability of the condition means: r between odd- and even-trial means.

    Cells: contrast x stimulus side x outcome with >= ``min_trials`` trials in both halves
    (NaN with fewer than 4 cells). Pearson r, not Spearman-Brown corrected (the correction
    is meaningless for negative r).
    """
    df = trials.assign(mag=magnitudes, half=np.arange(len(trials)) % 2)
    df = df[np.isfinite(df['mag'])]
    cells = df.groupby(['contrast', 'stim_side', 'feedbackType', 'half'])['mag'].agg(
        ['mean', 'size']
    )
    wide = cells['mean'].unstack('half')
    counts = cells['size'].unstack('half')
    wide = wide[(counts >= min_trials).all(axis=1)].dropna()
    if len(wide) < 4:
        return np.nan
    return np.corrcoef(wide[0], wide[1])[0, 1]


def real_reliability():
    """Split-half reliability (trial vs 3-sample baseline) of the real sessions, per region."""
    rows = []
    for name, ps in _real_sessions():
        ps.extract_responses()
        for region, resp in ps.responses.items():
            for event in EVENTS:
                row = {'session': name, 'region': region, 'event': event}
                for mode in ('event', 'trial'):
                    traces = ps.mask_subsequent_events(ps.subtract_baseline(resp, mode=mode))
                    sub = traces.sel(event=event)
                    for wname, w in WINDOWS.items():
                        mags = sr.response_magnitude(sub.values, sub['time'].values, window=w)
                        row[f'{mode}_{wname}'] = split_half(mags, ps.trials)
                rows.append(row)
    return rows


def fit_time_one_hour(n_repeats=3):
    """Seconds to fit a 1 h, 30 Hz recording (~1000 trials), and to cut its PSTHs (anchor)."""
    sim = simulate_overlapping_session('DA', n_trials=1000, seed=99)
    trials = sim['trials']
    weights = ek.condition_weights(trials, hemisphere='l')
    events = [trials[e].to_numpy() for e in EVENTS]
    fits, cpus, cuts, pre = [], [], [], []
    for _ in range(n_repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ek.fit_event_kernels(sim['times'], sim['values'], events, weights)
        fits.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        c0 = time.process_time()
        ek.fit_event_kernels(sim['times'], sim['values'], events, weights, ar_order=PREWHITEN_ORDER)
        pre.append(time.process_time() - c0)
        t0 = time.perf_counter()
        for t_event in events:
            sr.peri_event(sim['times'], sim['values'], t_event)
        cuts.append(time.perf_counter() - t0)
    return (
        len(sim['times']) / 30 / 60,
        float(np.median(fits)),
        float(np.median(cuts)),
        float(np.median(cpus)),
        float(np.median(pre)),
    )


def report(rows, kern, seconds, n_samples, real, timing, args):
    df = pd.DataFrame(rows)
    kdf = pd.DataFrame(kern)
    load = os.getloadavg()[0]
    lines = [
        f'Date: {datetime.date.today().isoformat()}. Machine: {machine()}; 1-min load average '
        f'when written {load:.1f} (shared machine).',
        f'Command: `.venv/bin/python benchmarks/bench_responses.py --seeds {args.seeds} '
        f'--trials {args.trials}`; {args.seeds} sessions per NM x delay regime, '
        f'{args.trials} trials (~{n_samples / 30 / 60:.0f} min at 30 Hz) each; delays '
        "'ibl' = lognormal, medians 0.18 s (stimOn -> movement) and 0.15 s (-> feedback); "
        "'tight' = uniform 0.15-0.2 s; 'untuned' (NM 'X') = kernels and delays the defaults "
        'were not tuned on (`UNTUNED`: 40 ms rise, negative movement kernel, medians 0.25 / '
        '0.12 s, log-SD 0.3).',
        '',
        '### Kernel recovery (true kernels with a peak >= 0.001 ΔF/F)',
        '',
        'r: correlation with the true kernel over lags -0.5...3 s; amplitude: mean over the '
        'lags where the true kernel is above half its peak, relative to the truth. "mean '
        'kernel": the kernel averaged over the sessions (its bias), ± the standard error of '
        'that mean (SD of the per-session amplitudes / sqrt(n)); "10 %": the mean-kernel '
        'amplitude within 10 % of the truth. "per session": median [min, max] over sessions '
        '(its noise); "SD / prewhitened": SD of the per-session amplitudes with the default '
        f'fit and with AR prewhitening (`ar_order={PREWHITEN_ORDER}`) on the same sessions; '
        'SE/amp: median over sessions of the kernel SE over those lags relative to '
        'the amplitude (above ~0.3 the kernel is not identified in one session). z²: mean '
        'squared (error / SE) over lags (1 if the standard errors are calibrated).',
        '',
        '| delays | NM | event | condition | r (mean kernel) | amplitude (mean kernel) | 10 % | '
        'r per session | amplitude per session | SD / prewhitened | SE/amp | z² |',
        '|---|---|---|---|---:|---:|---|---|---|---|---:|---:|',
    ]
    for (delays, nm, event, cond), both in kdf.groupby(
        ['delays', 'nm', 'event', 'condition'], sort=False
    ):
        sub = both[both['method'] == 'default']
        gls = both[both['method'] == 'prewhitened']
        mk, mt = np.mean(np.stack(sub['kernel']), 0), np.mean(np.stack(sub['truth']), 0)
        half = np.abs(mt) >= 0.5 * np.abs(mt).max()
        amp = mk[half].mean() / mt[half].mean()
        sd_gls = f'{gls["amp"].std():.2f}' if len(gls) else '-'
        lines.append(
            f'| {delays} | {nm} | {event.removesuffix("_times")} | {cond} | '
            f'{np.corrcoef(mk, mt)[0, 1]:.3f} | {amp:.3f} ± {sub["amp"].sem():.3f} | '
            f'{"yes" if abs(amp - 1) <= 0.1 else "no"} | '
            f'{sub["r"].median():.3f} [{sub["r"].min():.2f}, {sub["r"].max():.2f}] | '
            f'{sub["amp"].median():.2f} [{sub["amp"].min():.2f}, {sub["amp"].max():.2f}] | '
            f'{sub["amp"].std():.2f} / {sd_gls} | {sub["se_rel"].median():.2f} | '
            f'{sub["z"].mean():.2f} |'
        )
    lines += [
        '',
        '### Bias of the early-window response (0.1-0.35 s), all trials (ΔF/F x 100)',
        '',
        'Truth: the response to this event alone. Bias = estimate - truth, mean over sessions '
        '(per-session SD in brackets).',
        '',
        '| delays | NM | event | truth | PSTH original | PSTH trial baseline | kernel model | '
        'kernel cleaned |',
        '|---|---|---|---:|---:|---:|---:|---:|',
    ]
    allrows = df[df['subset'] == 'all']
    for (delays, nm, event), sub in allrows.groupby(['delays', 'nm', 'event'], sort=False):
        truth = sub['truth_early']

        def cell(col, sub=sub, truth=truth):
            d = (sub[col] - truth) * 100
            return f'{d.mean():+.2f} ({d.std():.2f})'

        lines.append(
            f'| {delays} | {nm} | {event.removesuffix("_times")} | '
            f'{truth.mean() * 100:.2f} | {cell("psth_event_early")} | '
            f'{cell("psth_trial_early")} | {cell("kernel_early")} | '
            f'{cell("cleaned_early")} |'
        )
    lines += [
        '',
        '### Outcome effect at feedback (correct - error, ΔF/F x 100), per window',
        '',
        '| delays | NM | window | truth | PSTH original | PSTH trial baseline | kernel model | '
        'kernel cleaned |',
        '|---|---|---|---:|---:|---:|---:|---:|',
    ]
    fb = df[df['event'] == 'feedback_times']
    for (delays, nm), sub in fb.groupby(['delays', 'nm'], sort=False):
        corr = sub[sub['subset'] == 'correct'].set_index('seed')
        err = sub[sub['subset'] == 'error'].set_index('seed')
        for name in WINDOWS:
            diff = {
                est: (corr[f'{est}_{name}'] - err[f'{est}_{name}']) * 100
                for est in ('truth', 'psth_event', 'psth_trial', 'kernel', 'cleaned')
            }
            lines.append(
                f'| {delays} | {nm} | {name} {WINDOWS[name]} | '
                f'{diff["truth"].mean():+.2f} | '
                + ' | '.join(
                    f'{diff[e].mean():+.2f}'
                    for e in ('psth_event', 'psth_trial', 'kernel', 'cleaned')
                )
                + ' |'
            )
    lines += [
        '',
        '### Per-trial reliability: r(early-window magnitude, true response), median over sessions',
        '',
        '| delays | NM | event | PSTH original | PSTH trial baseline | kernel cleaned |',
        '|---|---|---|---:|---:|---:|',
    ]
    for (delays, nm, event), sub in allrows.groupby(['delays', 'nm', 'event'], sort=False):
        if sub['rel_psth_event'].isna().all():
            continue
        lines.append(
            f'| {delays} | {nm} | {event.removesuffix("_times")} | '
            f'{sub["rel_psth_event"].median():.3f} | {sub["rel_psth_trial"].median():.3f} | '
            f'{sub["rel_cleaned"].median():.3f} |'
        )
    if real:
        rdf = pd.DataFrame(real)
        lines += [
            '',
            '### Real sessions: split-half reliability of the condition means',
            '',
            'Condition = contrast x stimulus side x outcome (cells with >= 4 trials in both '
            'halves); r between the odd- and even-trial condition means; 3-sample event '
            'baseline -> trial baseline, per window (NaN: fewer than 4 cells, e.g. stimOn '
            'windows masked at the movement).',
            '',
            '| session | region | event | ' + ' | '.join(WINDOWS) + ' |',
            '|---|---|---|' + '---:|' * len(WINDOWS),
        ]
        for r in rdf.itertuples():
            cells = [
                f'{getattr(r, "event_" + w):.2f} -> {getattr(r, "trial_" + w):.2f}' for w in WINDOWS
            ]
            lines.append(
                f'| {r.session} | {r.region} | {r.event.removesuffix("_times")} | '
                + ' | '.join(cells)
                + ' |'
            )
    minutes, fit_s, cut_s, cpu_s, pre_s = timing
    lines += [
        '',
        f'### Speed: one {minutes:.0f} min recording at 30 Hz, 1000 trials, 3 events',
        '',
        f'`fit_event_kernels` {fit_s:.2f} s wall, {cpu_s:.2f} s CPU (one BLAS thread; median of '
        f'3; with prewhitening, `ar_order={PREWHITEN_ORDER}`: {pre_s:.2f} s CPU, ratio '
        f'{pre_s / cpu_s:.1f}x); '
        f'cutting the three PSTHs of the same recording (`peri_event`, the anchor) '
        f'{cut_s * 1e3:.0f} ms wall: ratio {fit_s / cut_s:.0f}x. Load average {load:.1f} on '
        f'{os.cpu_count()} cores: the machine was shared, wall times are upper bounds (the CPU '
        'time is the better estimate of an idle machine).',
    ]
    return '\n'.join(lines)


def _mean_amplitudes(sim, ar_order=None):
    """{(event, condition): half-peak amplitude / truth} of one simulated session."""
    trials = sim['trials']
    weights = ek.condition_weights(trials, hemisphere='l')
    options = {} if ar_order is None else {'ar_order': ar_order}
    fit = ek.fit_event_kernels(
        sim['times'],
        sim['values'],
        [trials[e].to_numpy() for e in EVENTS],
        weights,
        events=list(EVENTS),
        **options,
    )
    truth = true_condition_kernels(sim, fit.lags, weights)
    out = {}
    for e, event in enumerate(EVENTS):
        for c, cond in enumerate(ek.CONDITIONS):
            tk, k = truth[e, c], fit.kernels[e, c]
            if np.abs(tk).max() >= 1e-3 and np.isfinite(k).all():
                half = np.abs(tk) >= 0.5 * np.abs(tk).max()
                out[event.removesuffix('_times'), cond] = k[half].mean() / tk[half].mean()
    return out


def diagnose(n_seeds, n_trials):
    """Where the kernel-amplitude errors come from: bias (noise-free sessions) vs noise, and
    which noise (per-session SD without the slow fluctuations / without the white noise),
    with and without prewhitening; real sessions: kernels of the first vs second half."""
    from iblnm.simulate import kernels as sk

    lines = [
        '### Noise-free sessions (no noise, no trial gain; seed 0): amplitude / truth',
        '',
        f'| NM | kernel | ar_order=0 (default) | ar_order={PREWHITEN_ORDER} |',
        '|---|---|---:|---:|',
    ]
    gain_sd = sk.TRIAL_GAIN_SD
    sk.TRIAL_GAIN_SD = 0.0
    try:
        for nm in NMS:
            sim = simulate_overlapping_session(
                nm, n_trials=n_trials, seed=0, noise_sd=0, spontaneous_sd=0
            )
            ols, gls = _mean_amplitudes(sim, 0), _mean_amplitudes(sim, PREWHITEN_ORDER)
            for key in ols:
                lines.append(f'| {nm} | {" ".join(key)} | {ols[key]:.4f} | {gls[key]:.4f} |')
    finally:
        sk.TRIAL_GAIN_SD = gain_sd
    lines += [
        '',
        f'### Per-session amplitude / truth, mean ± SD over {n_seeds} sessions, by noise',
        '',
        f'| NM | kernel | noise | ar_order=0 (default) | ar_order={PREWHITEN_ORDER} |',
        '|---|---|---|---|---|',
    ]
    for nm in ('NE', 'DA'):
        for noise, opts in (
            ('all', {}),
            ('no slow fluctuations', {'spontaneous_sd': 0.0}),
            ('no white noise', {'noise_sd': 0.0}),
        ):
            res = {0: [], PREWHITEN_ORDER: []}
            for seed in range(n_seeds):
                sim = simulate_overlapping_session(nm, n_trials=n_trials, seed=seed, **opts)
                for order in res:
                    res[order].append(_mean_amplitudes(sim, order))
            for key in res[0][0]:
                if key[1] != 'mean':
                    continue
                cells = []
                for order in res:
                    a = np.array([r[key] for r in res[order]])
                    cells.append(f'{a.mean():.3f} ± {a.std(ddof=1):.3f}')
                lines.append(f'| {nm} | {" ".join(key)} | {noise} | {cells[0]} | {cells[1]} |')
    lines += [
        '',
        '### Real sessions: kernels of the first vs the second half of the recording',
        '',
        'Median [min] over the event x condition kernels of r(first half, second half); '
        'feedback reward kernel, early window (z), whole recording.',
        '',
        f'| session | region | ar_order=0 | ar_order={PREWHITEN_ORDER} | reward ar_order=0 | '
        f'reward ar_order={PREWHITEN_ORDER} |',
        '|---|---|---|---|---:|---:|',
    ]
    for row in real_split_kernels():
        lines.append('| {session} | {region} | {r0} | {r1} | {w0:+.2f} | {w1:+.2f} |'.format(**row))
    return '\n'.join(lines)


def real_split_kernels():
    """Half-split reliability of the kernels on the real sessions, with/without prewhitening."""
    rows = []
    for name, ps in _real_sessions():
        frame = ps.photometry['GCaMP_preprocessed']
        times = frame.index.to_numpy()
        events = list(config.RESPONSE_EVENTS)
        event_times = [ps.trials[e].to_numpy(float) for e in events]
        middle = np.nanmedian(ps.trials['stimOn_times'])
        fb, rw = events.index('feedback_times'), ek.CONDITIONS.index('reward')
        for region in frame.columns:
            values = frame[region].to_numpy(float)
            weights = ek.condition_weights(ps.trials, ps._region_hemisphere(region))
            row = {'session': name, 'region': region}
            for key, order in (('0', 0), ('1', PREWHITEN_ORDER)):
                options = {'ar_order': order}
                fits = [
                    ek.fit_event_kernels(
                        times,
                        np.where(half, values, np.nan),
                        event_times,
                        weights,
                        events=events,
                        **options,
                    )
                    for half in (times < middle, times >= middle)
                ]
                r = [
                    np.corrcoef(fits[0].kernels[e, c], fits[1].kernels[e, c])[0, 1]
                    for e in range(len(events))
                    for c in range(len(ek.CONDITIONS))
                    if np.isfinite(fits[0].kernels[e, c]).all()
                    and np.isfinite(fits[1].kernels[e, c]).all()
                ]
                row[f'r{key}'] = f'{np.median(r):.2f} [{np.min(r):.2f}]'
                whole = ek.fit_event_kernels(
                    times, values, event_times, weights, events=events, **options
                )
                row[f'w{key}'] = float(ek.kernel_amplitude(whole.kernels[fb, rw], whole.lags))
            rows.append(row)
    return rows


def _real_sessions():
    """(name, preprocessed PhotometrySession) of the real sessions; empty when absent."""
    import tempfile

    from one.api import One

    from iblnm.data import PhotometrySession
    from iblnm.onecache import session_eid
    from iblnm.realdata import add_real_sessions

    source = config.REAL_DATA_DIR / 'ibl'
    if not source.exists():
        return
    cache = Path(tempfile.mkdtemp())
    add_real_sessions(cache, source=source)
    one = One(cache_dir=str(cache), mode='local')
    for name, eid in (
        ('fip_40', session_eid('wittenlab', 'fip_40', '2023-05-18', 1)),
        ('CQ002', session_eid('cortexlab', 'CQ002', '2024-11-05', 1)),
    ):
        ps = PhotometrySession({'eid': eid, 'session_type': 'training'}, one=one)
        ps.load_trials()
        ps.load_photometry()
        ps.preprocess()
        yield name, ps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=20)
    parser.add_argument('--trials', type=int, default=900)
    parser.add_argument('--no-readme', action='store_true')
    parser.add_argument(
        '--diagnose',
        action='store_true',
        help='only the error diagnosis (bias vs noise, prewhitening, real halves)',
    )
    args = parser.parse_args()
    if args.diagnose:
        load = os.getloadavg()[0]
        text = (
            f'Date: {datetime.date.today().isoformat()}. Machine: {machine()}; load {load:.1f} '
            f'(shared). Command: `.venv/bin/python benchmarks/bench_responses.py --diagnose '
            f'--seeds {args.seeds} --trials {args.trials}`.\n\n' + diagnose(args.seeds, args.trials)
        )
        print(text)
        if not args.no_readme:
            write_section(
                'bench_responses_diagnose',
                'bench_responses.py --diagnose — where the '
                'kernel-amplitude errors come from (issue 13)',
                text,
            )
        return
    rows, kern, seconds = [], [], []
    n_samples = 0
    for regime, (delays, nms) in REGIMES.items():
        for nm in nms:
            for seed in range(args.seeds):
                r, k, s, n_samples = analyse(
                    nm, seed, args.trials, delays, compare=regime != 'tight'
                )
                rows += [dict(x, delays=regime) for x in r]
                kern += [dict(x, delays=regime) for x in k]
                seconds.append(s)
            print(f'{regime} {nm} done', flush=True)
    real = real_reliability()
    timing = fit_time_one_hour()
    text = report(rows, kern, seconds, n_samples, real, timing, args)
    print(text)
    if not args.no_readme:
        write_section(
            'bench_responses',
            'bench_responses.py — event kernels vs PSTH '
            'magnitudes on overlapping events (issue 13)',
            text,
        )


if __name__ == '__main__':
    main()
