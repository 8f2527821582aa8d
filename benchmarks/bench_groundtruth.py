"""Ground-truth validation of the photometry preprocessing on simulated sessions (issue 4).

On every fault-free session of a simulated cache (``iblnm.simulate``), for each fiber:

(a) **signal fidelity**: Pearson r between the preprocessed signal and the true ΔF/F
    (``ground_truth/{eid}.npz``, sampled at the GCaMP frame times) interpolated onto the
    signal's 30 Hz grid;
(b) **kernel recovery**: early-window magnitudes (mean over [0.1, 0.35) s minus the mean
    over [-0.1, 0) s after each event), per trial against the same quantity computed on
    the true ΔF/F, and, per fiber x event, the OLS effects on [1, L(c), correct] against
    the generating ``true_effects`` of the manifest (slope and r of the pooled points);
(c) the same for ibl-photometry 0.3.4's own ``isosbestic_correction_pipeline`` run on
    the same loaded bands (then z-scored and resampled to 30 Hz with its
    ``resample_signal(fs=30, method='pchip')``), plus diagnostics of its known bugs.

"ours" is ``PhotometrySession.preprocess()`` / ``extract_responses()`` /
``subtract_baseline()`` exactly as the photometry stage runs them. Both pipelines output
z-scores; for amplitudes in ΔF/F units the z-scores are multiplied back by the SD of the
pipeline's own ΔF/F output before the z-score (for ours this is checked to reproduce the
z-scored output to 1e-9).

Usage::

    .venv/bin/python benchmarks/bench_groundtruth.py [--preset demo|small] [--seed 0]
        [--cache DIR] [--no-readme] [--no-figure]

``--cache DIR`` reuses a simulated cache when DIR holds one (else generates it there).
Results are printed, the figure goes to ``docs/figures/groundtruth_validation.{svg,png}``
and the numbers to the ``bench_groundtruth`` section of ``benchmarks/README.md``.
"""

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py
from _report import machine, write_section  # noqa: E402

from iblnm import config  # noqa: E402
from iblnm.simulate import kernels as kn  # noqa: E402
from iblnm.simulate.faults import FLOOR  # noqa: E402
from iblnm.simulate.signals import bleach_curve  # noqa: E402

FIGURE = REPO / 'docs' / 'figures' / 'groundtruth_validation'
EVENTS = tuple(config.RESPONSE_EVENTS)
COEFS = ('intercept', 'log_contrast', 'reward')
EARLY = config.RESPONSE_WINDOWS['early']
PIPELINES = ('ours', 'ibl')
LABELS = {'ours': 'iblnm', 'ibl': 'ibl-photometry 0.3.4'}
SHORT = {'ours': 'iblnm', 'ibl': 'ibl-phot.'}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def get_cache(preset='demo', seed=0, cache=None):
    """A simulated cache: reuse ``cache`` if it holds a manifest, else generate it."""
    from iblnm.simulate import generate

    cache = Path(cache) if cache else Path(tempfile.mkdtemp(prefix=f'iblnm_gt_{preset}_'))
    if (cache / config.GROUND_TRUTH_DIRNAME / 'manifest.json').exists():
        return cache
    t0 = time.perf_counter()
    generate(cache, preset=preset, seed=seed, n_jobs=1)
    print(f'generated {preset} (seed {seed}) in {time.perf_counter() - t0:.0f} s at {cache}')
    return cache


def clean_sessions(manifest):
    """Manifest entries of the sessions without any pipeline fault.

    Only their fibers whose ``expected_verdict`` is PASS are evaluated (good fibers).
    """
    return [entry for entry in manifest['sessions'] if not entry['faults']]


def fiber_columns(entry):
    """ROI -> column name of the loaded photometry frames (as the loader names them)."""
    from iblnm.loaders import roi_to_region

    rois = [f['ROI'] for f in entry['fibers']]
    locations = pd.DataFrame(
        {'brain_region': [f['brain_region'] for f in entry['fibers']]},
        index=pd.Index(rois, name='ROI'),
    )
    return roi_to_region(locations)


def expected_kappa(fiber, t_rec):
    """Fraction of the GCaMP light above the camera floor, L(t) / (floor + L(t)).

    The pipelines' ΔF/F is relative to the total fluorescence F0 = floor + L(t), the
    simulator's ΔF/F to the light L(t) above the 1/255 floor, so recovered amplitudes
    in ΔF/F units are the true ones times this factor (``t_rec``: s since the first frame;
    the dark level is the floor plus the session's ``dark_offset``).
    """
    light = fiber['level_gcamp'] * bleach_curve(np.asarray(t_rec, float), fiber['bleach_gcamp'])
    return light / (FLOOR + fiber.get('dark_offset', 0.0) + light)


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------
def ours_dff(times, signal, reference, params=None):
    """Our isosbestic pipeline up to (not including) the z-score: (times, ΔF/F, slope).

    :func:`iblnm.signal.preprocess.preprocess_isosbestic` (no artefact mask) with its
    ΔF/F output; used only to recover the ΔF/F scale that the z-score removes.
    """
    from iblnm.signal import preprocess as sp

    result = sp.preprocess_isosbestic(times, signal, reference, params=params, compute_qc=False)
    return result.times, result.dff, result.slope


def _pair_series(gcamp, iso, column):
    """GCaMP and isosbestic Series of one fiber, paired by position (as both pipelines do)."""
    n = min(len(gcamp), len(iso))
    sig = pd.Series(gcamp[column].to_numpy()[:n], index=gcamp.index.to_numpy()[:n], name=column)
    ref = pd.Series(iso[column].to_numpy()[:n], index=iso.index.to_numpy()[:n], name=column)
    return sig, ref


def ibl_isosbestic(sig, ref, sort_bug=False):
    """ibl-photometry's ``isosbestic_correction_pipeline`` → 30 Hz (pchip): (times, ΔF/F, slope).

    ``sort_bug`` re-creates the development branch's ``Regression.predict`` (it sorts x,
    so the fitted isosbestic is subtracted in amplitude order instead of time order).
    """
    from iblphotometry import fpio, pipelines, processing  # noqa: F401 (fpio first: import cycle)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = pipelines.run_pipeline(
            pipelines.isosbestic_correction_pipeline, sig, ref, full_output=True
        )
    sig_bc, ref_bc = res['signal_bleach_corrected'], res['reference_bleach_corrected']
    reg = processing.Regression(model=processing.LinearModel(), method='mse')
    reg.fit(ref_bc.values, sig_bc.values)
    slope = float(reg.popt[0])
    out = res['result']
    if sort_bug:
        fit = reg.model.eq(np.sort(ref_bc.values), *reg.popt)
        out = pd.Series(sig_bc.values - fit, index=sig_bc.index)
    resampled = processing.resample_signal(out, fs=config.TARGET_FS, method='pchip')
    return resampled.index.to_numpy(), resampled.to_numpy(), slope


def ibl_sliding_mad(sig):
    """ibl-photometry's single-band ``sliding_mad_pipeline`` → 30 Hz (pchip): (times, values)."""
    from iblphotometry import fpio, pipelines, processing  # noqa: F401 (fpio first: import cycle)

    out = pipelines.run_pipeline(pipelines.sliding_mad_pipeline, sig)
    resampled = processing.resample_signal(out, fs=config.TARGET_FS, method='pchip')
    return resampled.index.to_numpy(), resampled.to_numpy()


def ibl_regression_methods(sig_bc, ref_bc, methods=('mse', 'huber', 'mae', 'irls')):
    """Slopes returned by ibl-photometry's ``Regression`` per loss, and its start (OLS) slope."""
    from iblphotometry import fpio, processing  # noqa: F401 (fpio first: import cycle)

    out = {'p0': float(np.polyfit(ref_bc, sig_bc, 1)[0])}
    for method in methods:
        reg = processing.Regression(model=processing.LinearModel(), method=method)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                reg.fit(ref_bc, sig_bc)
            out[method] = float(reg.popt[0])
        except ValueError:
            out[method] = np.nan
    return out


def zscore(values):
    return (values - values.mean()) / values.std()


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------
def early_magnitudes(times, values, trials, events=EVENTS):
    """Baseline-subtracted early-window magnitude per event and trial: (n_events, n_trials)."""
    from iblnm.signal import responses as sr

    out = []
    for event in events:
        resp, tpts = sr.peri_event(
            times, values, trials[event].to_numpy(float), window=config.RESPONSE_WINDOW
        )
        resp = sr.subtract_baseline(resp, tpts, window=config.BASELINE_WINDOW)
        out.append(sr.response_magnitude(resp, tpts, window=EARLY))
    return np.array(out)


def session_magnitudes(ps, column, events=EVENTS):
    """Early-window magnitudes (z units) through PhotometrySession: (n_events, n_trials)."""
    from iblnm.signal import responses as sr

    # the per-event baseline, as early_magnitudes applies to the truth (compare like with like)
    resp = ps.subtract_baseline(ps.responses[column].sel(event=list(events)), mode='event')
    tpts = resp['time'].to_numpy()
    return sr.response_magnitude(
        resp.transpose('event', 'trial', 'time').to_numpy().reshape(-1, len(tpts)),
        tpts,
        window=EARLY,
    ).reshape(len(events), -1)


def trial_design(trials):
    """Covariates of the generator's effects: L(c), correct, valid (non-no-go) per trial."""
    contrast = trials['contrastLeft'].fillna(trials['contrastRight']).to_numpy(float) * 100
    return {
        'log_contrast': kn.log_contrast(contrast),
        'correct': (trials['feedbackType'].to_numpy() == 1).astype(float),
        'valid': trials['choice'].to_numpy() != 0,
    }


def fit_effects(magnitudes, design):
    """OLS of magnitudes on [1, L(c), correct] over valid trials, per event: (n_events, 3)."""
    x = np.column_stack([np.ones(len(design['valid'])), design['log_contrast'], design['correct']])
    out = np.full((len(magnitudes), 3), np.nan)
    for i, y in enumerate(magnitudes):
        ok = design['valid'] & np.isfinite(y)
        if ok.sum() >= 10:
            out[i] = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
    return out


# ---------------------------------------------------------------------------
# One session
# ---------------------------------------------------------------------------
def _highpass_like_bleach(times, values):
    """The true ΔF/F minus its 0.01 Hz low-pass: what a low-pass bleach correction keeps."""
    from iblnm.signal.preprocess import lowpass_baseline

    bleach = config.QC_BLEACH  # the fixed 0.01 Hz low-pass (ibl-photometry's and our default)
    fs = 1 / np.median(np.diff(times))
    return values - lowpass_baseline(
        values, fs, order=bleach['order'], cutoff_hz=bleach['cutoff_hz']
    )


def _slope(x, y):
    """Least-squares slope of y on x over the samples where both are finite."""
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def _corr(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def evaluate_session(cache, one, entry, extras=True):
    """Evaluate both pipelines on one clean session against its ground truth.

    Returns
    -------
    dict
        ``fibers``: one record per fiber (r values, regression slopes, diagnostics);
        ``trials``: per fiber x event x trial magnitudes (ΔF/F) of truth, ours, ibl;
        ``effects``: per fiber x event x coefficient, true (manifest) and recovered;
        ``example``: traces of the first fiber (times, truth, ours, ibl; z-scored).
    ``extras`` adds the slower diagnostics (single-band paths, regression losses,
    the development-branch sort bug).
    """
    from iblnm.data import PhotometrySession
    from iblnm.signal import preprocess as sp
    from iblnm.simulate import load_truth

    ps = PhotometrySession({'eid': entry['eid'], 'session_type': entry['session_type']}, one=one)
    ps.load_trials()
    ps.load_photometry()
    pre = ps.preprocess()
    ps.extract_responses()
    times = pre.index.to_numpy()
    truth = load_truth(cache, entry['eid'])
    gcamp, iso = ps.photometry['GCaMP'], ps.photometry['Isosbestic']
    design = trial_design(ps.trials)
    columns = fiber_columns(entry)
    t_first = entry['recording']['first_frame_s']
    fibers, trials, effects, example = [], [], [], None
    for fiber in entry['fibers']:
        if fiber.get('expected_verdict', 'PASS') != 'PASS':  # no_signal, low_light, artefacts
            continue
        col = columns[fiber['ROI']]
        j = list(truth['rois']).index(fiber['ROI'])
        true_dff = truth['dff'][:, j].astype(float)
        motion = truth['motion'][:, j].astype(float)
        # ours: the stage's z-scored output, and its ΔF/F scale
        z_ours = pre[col].to_numpy()
        t_o, dff_o = times, ps.photometry['GCaMP_dff'][col].to_numpy()
        gcamp_qc = ps.qc[(ps.qc['brain_region'] == col) & (ps.qc['band'] == 'GCaMP')]
        slope_o = float(gcamp_qc['iso_slope'].iloc[0])
        assert np.allclose(sp.zscore(dff_o), z_ours, atol=1e-9, equal_nan=True), 'ΔF/F != z'
        sd_o = np.nanstd(dff_o)
        # ibl-photometry on the same loaded bands
        sig, ref = _pair_series(gcamp, iso, col)
        t_i, dff_i, slope_i = ibl_isosbestic(sig, ref)
        true_o = np.interp(t_o, truth['times'], true_dff)
        true_i = np.interp(t_i, truth['times'], true_dff)
        true_hp_o = _highpass_like_bleach(t_o, true_o)
        rec = {
            'eid': entry['eid'],
            'NM': entry['NM'],
            'session_type': entry['session_type'],
            'region': col,
            'ROI': fiber['ROI'],
            'duration_s': float(t_o[-1] - t_o[0]),
            'noise_rel': entry['noise']['noise_rel'],
            'level_gcamp': fiber['level_gcamp'],
            'gain': fiber['gain'],
            'n_dips': fiber['motion']['n_dips'],
            'n_steps': fiber['motion']['n_steps'],
            'kappa': float(np.mean(expected_kappa(fiber, t_o - t_first))),
            'true_sd': float(true_o.std()),
            'r_ours': _corr(z_ours, true_o),
            'r_ibl': _corr(dff_i, true_i),
            'r_ours_hp': _corr(z_ours, true_hp_o),
            'r_truth_hp': _corr(true_o, true_hp_o),
            'best_lag': _best_lag(z_ours, true_hp_o),
            'r_ours_motion_resid': _motion_leak(
                z_ours, true_o, np.interp(t_o, truth['times'], motion)
            ),
            'slope_ours': float(slope_o),
            'slope_ibl': slope_i,
            # ΔF/F gain: output on the truth without what a 0.01 Hz bleach correction removes
            'dff_slope_ours': _slope(true_hp_o, dff_o),
            'dff_slope_ibl': _slope(_highpass_like_bleach(t_i, true_i), dff_i),
        }
        if extras:
            rec.update(_extras(ps, col, sig, ref, truth['times'], true_dff))
        fibers.append(rec)
        # (b) early-window magnitudes, ΔF/F units
        mags = {
            'truth': early_magnitudes(t_o, true_o, ps.trials),
            'ours': session_magnitudes(ps, col) * sd_o,
            'ibl': early_magnitudes(t_i, dff_i, ps.trials),
        }
        kappa_trials = expected_kappa(fiber, ps.trials['stimOn_times'].to_numpy(float) - t_first)
        for k, event in enumerate(EVENTS):
            trials.append(
                pd.DataFrame(
                    {
                        'eid': entry['eid'],
                        'NM': entry['NM'],
                        'region': col,
                        'event': event,
                        'trial': np.arange(len(ps.trials)),
                        'valid': design['valid'],
                        'kappa': kappa_trials,
                        **{name: m[k] for name, m in mags.items()},
                    }
                )
            )
        fitted = {name: fit_effects(m, design) for name, m in mags.items()}
        for k, event in enumerate(EVENTS):
            for c, coef in enumerate(COEFS):
                effects.append(
                    {
                        'eid': entry['eid'],
                        'NM': entry['NM'],
                        'region': col,
                        'event': event,
                        'coef': coef,
                        'true': fiber['true_effects'][event][coef],
                        'kappa': rec['kappa'],
                        **{f'{name}': f[k, c] for name, f in fitted.items()},
                    }
                )
        if example is None:
            example = {
                'eid': entry['eid'],
                'NM': entry['NM'],
                'region': col,
                'times': t_o,
                'truth': zscore(true_o),
                'ours': z_ours,
                'ibl': np.interp(t_o, t_i, zscore(dff_i)),
                'events': {e: ps.trials[e].to_numpy(float) for e in EVENTS},
            }
    return {'fibers': fibers, 'trials': trials, 'effects': effects, 'example': example}


def _best_lag(y, x, max_lag=3):
    """Lag (samples, positive = y late) in -max_lag..max_lag maximising r(y, x)."""
    n = len(y) - 2 * max_lag
    lags = np.arange(-max_lag, max_lag + 1)
    rs = [_corr(y[max_lag + lag : max_lag + lag + n], x[max_lag : max_lag + n]) for lag in lags]
    return int(lags[int(np.argmax(rs))])


def _motion_leak(z, true, motion):
    """Correlation of the residual (z minus its best linear fit on the truth) with the motion."""
    a = np.column_stack([true, np.ones_like(true)])
    residual = z - a @ np.linalg.lstsq(a, z, rcond=None)[0]
    return _corr(residual, motion)


def _extras(ps, col, sig, ref, truth_times, true_dff):
    """Single-band paths, Huber, the develop sort bug and ibl-photometry's regression losses."""
    from iblphotometry import processing

    single = ps.preprocess(reference_band=None, output_band='single')[col]
    t_s = single.index.to_numpy()
    huber = ps.preprocess(params={'regression': {'method': 'huber'}}, output_band='huber')[col]
    ps.preprocess()  # restore the default parameters record
    t_m, mad = ibl_sliding_mad(sig)
    t_b, bug, _ = ibl_isosbestic(sig, ref, sort_bug=True)
    sig_bc = processing.lowpass_bleachcorrect(sig).values
    ref_bc = processing.lowpass_bleachcorrect(ref).values
    slopes = ibl_regression_methods(sig_bc, ref_bc)
    return {
        'r_ours_single': _corr(single.to_numpy(), np.interp(t_s, truth_times, true_dff)),
        'r_ours_huber': _corr(huber.to_numpy(), np.interp(t_s, truth_times, true_dff)),
        'r_ibl_sliding_mad': _corr(mad, np.interp(t_m, truth_times, true_dff)),
        'r_ibl_sort_bug': _corr(bug, np.interp(t_b, truth_times, true_dff)),
        **{f'ibl_slope_{k}': v for k, v in slopes.items()},
    }


def evaluate_cache(cache, sessions=None, extras=True, progress=True):
    """Evaluate every clean session of a cache: (fibers, trials, effects, examples)."""
    from one.api import One

    from iblnm.simulate import load_manifest

    one = One(cache_dir=str(cache), mode='local')
    entries = clean_sessions(load_manifest(cache))
    if sessions is not None:
        entries = entries[:sessions]
    fibers, trials, effects, examples = [], [], [], []
    for i, entry in enumerate(entries):
        out = evaluate_session(cache, one, entry, extras=extras)
        fibers += out['fibers']
        trials += out['trials']
        effects += out['effects']
        examples.append(out['example'])
        if progress:
            print(f'\r  session {i + 1}/{len(entries)}', end='', flush=True)
    if progress:
        print()
    return (
        pd.DataFrame(fibers),
        pd.concat(trials, ignore_index=True),
        pd.DataFrame(effects),
        examples,
    )


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------
def line_fit(x, y):
    """OLS slope (y on x, with intercept) and Pearson r over finite pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    slope = float(np.polyfit(x[ok], y[ok], 1)[0])
    return slope, float(np.corrcoef(x[ok], y[ok])[0, 1]), int(ok.sum())


def summarise(fibers, trials, effects):
    """The headline numbers as a dict."""
    per_session = fibers.groupby('eid')[['r_ours', 'r_ibl']].mean()
    out = {
        'n_sessions': int(fibers['eid'].nunique()),
        'n_fibers': len(fibers),
        'n_trials': int(trials.groupby(['eid', 'region'])['trial'].nunique().sum()),
        'hours': float(fibers.drop_duplicates('eid')['duration_s'].sum() / 3600),
    }
    for name in PIPELINES:
        out[f'median_r_session_{name}'] = float(per_session[f'r_{name}'].median())
        out[f'median_r_fiber_{name}'] = float(fibers[f'r_{name}'].median())
        out[f'min_r_fiber_{name}'] = float(fibers[f'r_{name}'].min())
        valid = trials[trials['valid']]
        out[f'trial_{name}'] = line_fit(valid['truth'], valid[name])
        out[f'trial_kappa_{name}'] = line_fit(valid['truth'], valid[name] / valid['kappa'])
        out[f'effect_{name}'] = line_fit(effects['true'], effects[name])
        out[f'effect_kappa_{name}'] = line_fit(effects['true'], effects[name] / effects['kappa'])
    out['effect_truthgrid'] = line_fit(effects['true'], effects['truth'])
    out['n_fibers_lag0'] = int((fibers['best_lag'] == 0).sum())
    out['max_abs_r_diff'] = float((fibers['r_ours'] - fibers['r_ibl']).abs().max())
    for col in (
        'r_ours_hp',
        'r_truth_hp',
        'r_ours_single',
        'r_ours_huber',
        'r_ibl_sliding_mad',
        'r_ibl_sort_bug',
        'r_ours_motion_resid',
        'kappa',
        'dff_slope_ours',
    ):
        if col in fibers:
            out[f'median_{col}'] = float(fibers[col].median())
    if 'ibl_slope_p0' in fibers:
        for method in ('mse', 'huber', 'mae', 'irls'):
            rel = (fibers[f'ibl_slope_{method}'] - fibers['ibl_slope_p0']).abs()
            out[f'ibl_{method}_max_rel_change'] = float((rel / fibers['ibl_slope_p0'].abs()).max())
    return out


def report(s, fibers, effects):
    """Markdown text of the results."""
    lines = [
        f'{s["n_sessions"]} fault-free sessions, {s["n_fibers"]} fibers, '
        f'{s["hours"]:.1f} h of recording, {s["n_trials"]} fiber-trials.',
        '',
        '| | iblnm | ibl-photometry 0.3.4 (isosbestic pipeline) |',
        '|---|---|---|',
        f'| median r(signal, true ΔF/F) over sessions | {s["median_r_session_ours"]:.3f} '
        f'| {s["median_r_session_ibl"]:.3f} |',
        f'| median r over fibers (min) | {s["median_r_fiber_ours"]:.3f} '
        f'({s["min_r_fiber_ours"]:.3f}) | {s["median_r_fiber_ibl"]:.3f} '
        f'({s["min_r_fiber_ibl"]:.3f}) |',
    ]
    for key, label in (
        ('trial', 'per-trial early-window magnitude vs true, ΔF/F: slope / r'),
        ('trial_kappa', '  same, ÷ κ (light above the camera floor): slope / r'),
        ('effect', 'effects vs generating `true_effects`, ΔF/F: slope / r'),
        ('effect_kappa', '  same, ÷ κ: slope / r'),
    ):
        ours, ibl = s[f'{key}_ours'], s[f'{key}_ibl']
        lines.append(f'| {label} | {ours[0]:.3f} / {ours[1]:.3f} | {ibl[0]:.3f} / {ibl[1]:.3f} |')
    lines += [
        '',
        f'Largest per-fiber |r_iblnm − r_ibl|: {s["max_abs_r_diff"]:.1e}. '
        f'Effects from the true ΔF/F through the same windows (sampling, event times and '
        f'spontaneous activity only): slope {s["effect_truthgrid"][0]:.3f}, '
        f'r {s["effect_truthgrid"][1]:.3f}. Median κ = L/(floor + L) = {s["median_kappa"]:.2f}.',
    ]
    if 'median_r_ours_single' in s:
        lines += [
            '',
            'Diagnostics (median r over fibers): the true ΔF/F against itself high-passed '
            f'like the bleach correction (0.01 Hz low-pass removed) {s["median_r_truth_hp"]:.3f}; '
            'iblnm against that high-passed truth '
            f'{s["median_r_ours_hp"]:.3f}; Huber regression '
            f'{s["median_r_ours_huber"]:.3f}; no-isosbestic path: iblnm '
            f'{s["median_r_ours_single"]:.3f}, ibl-photometry `sliding_mad_pipeline` '
            f'{s["median_r_ibl_sliding_mad"]:.3f}; ibl-photometry development-branch '
            f'`predict` sort bug re-created: {s["median_r_ibl_sort_bug"]:.3f}. '
            'ibl-photometry `Regression` (L-BFGS-B) largest relative change of the slope from '
            'its OLS start: '
            + ', '.join(
                f'{m} {s[f"ibl_{m}_max_rel_change"]:.1e}' for m in ('mse', 'huber', 'mae', 'irls')
            )
            + '.',
        ]
        lines += [
            '',
            'Reading: r is bounded by the bleach correction, whose 0.01 Hz low-pass baseline also '
            'takes out the slow part of the true ΔF/F (true vs its own high-passed self: '
            f'{s["median_r_truth_hp"]:.3f}); against that high-passed truth the output reaches '
            f'{s["median_r_ours_hp"]:.3f}, the rest being the measurement noise of both bands '
            'and a little residual motion (time alignment: the best lag is 0 samples for '
            f'{s["n_fibers_lag0"]}/{s["n_fibers"]} fibers). Amplitudes in '
            "ΔF/F are κ = L/(floor + L) times the simulator's, whose ΔF/F is relative to the "
            'light L above the 1/255 camera floor while F0 includes the floor; divided by κ the '
            "recovery is unbiased. ibl-photometry 0.3.4's isosbestic pipeline computes the same "
            'thing (its L-BFGS-B "mse" fit never leaves its `np.polyfit` start); its "huber" fit '
            'does not move either (δ = 3 in ΔF/F units), so it has no working robust option.',
        ]
    per_nm = fibers.groupby('NM')[['r_ours', 'r_ibl']].median().round(3)
    lines += [
        '',
        'Median r per neuromodulator: '
        + ', '.join(f'{nm} {row.r_ours:.3f} / {row.r_ibl:.3f}' for nm, row in per_nm.iterrows())
        + '.',
    ]
    per_event = effects.groupby('event').apply(
        lambda d: line_fit(d['true'], d['ours'])[:2], include_groups=False
    )
    lines.append(
        'Effects per event (iblnm slope / r): '
        + ', '.join(
            f'{e.replace("_times", "")} {v[0]:.2f} / {v[1]:.2f}' for e, v in per_event.items()
        )
        + '.'
    )
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------
def make_figure(fibers, trials, effects, examples, path=FIGURE, span_s=40.0):
    """Four panels: example trace, r per fiber, per-trial magnitudes, effects. SVG + PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    colors = {'truth': 'k', 'ours': '#d62728', 'ibl': '#1f77b4'}
    fig = plt.figure(figsize=(12, 8.5), layout='constrained')
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.15))
    ax_trace = fig.add_subplot(grid[0, :2])
    ax_r = fig.add_subplot(grid[0, 2])
    ax_trial = fig.add_subplot(grid[1, 0])
    ax_trial_i = fig.add_subplot(grid[1, 1], sharex=ax_trial, sharey=ax_trial)
    ax_eff = fig.add_subplot(grid[1, 2])

    # A: example trace around the fiber with the median r
    median_fiber = fibers.iloc[(fibers['r_ours'] - fibers['r_ours'].median()).abs().argmin()]
    ex = next(e for e in examples if e['eid'] == median_fiber['eid'])
    t = ex['times']
    stim = ex['events']['stimOn_times']
    stim = stim[np.isfinite(stim) & (stim > t[0]) & (stim < t[-1] - span_s)]
    n_in = np.searchsorted(stim, stim + span_s) - np.arange(len(stim))
    t0 = stim[np.argmax(n_in)] - 1.0 if len(stim) else t[0]  # the busiest window
    sel = (t >= t0) & (t < t0 + span_s)
    offsets = {'truth': 0.0, 'ours': -5.0, 'ibl': -10.0}
    names = {'truth': 'true ΔF/F (z)', 'ours': 'iblnm', 'ibl': 'ibl-photometry'}
    for key, off in offsets.items():
        ax_trace.plot(t[sel] - t0, ex[key][sel] + off, color=colors[key], lw=0.8)
        ax_trace.text(span_s * 1.005, off, names[key], color=colors[key], va='center', fontsize=9)
    ax_trace.plot(t[sel] - t0, ex['truth'][sel] - 5.0, color='k', lw=0.6, alpha=0.35)
    ax_trace.plot(t[sel] - t0, ex['truth'][sel] - 10.0, color='k', lw=0.6, alpha=0.35)
    markers = {
        'stimOn_times': ('stimOn', '#2ca02c'),
        'firstMovement_times': ('move', '#9467bd'),
        'feedback_times': ('feedback', '#ff7f0e'),
    }
    bottom = ax_trace.get_ylim()[0]
    for event, (label, color) in markers.items():
        ev = ex['events'][event]
        ev = ev[(ev >= t0) & (ev < t0 + span_s)] - t0
        ax_trace.plot(
            ev, np.full(len(ev), bottom - 0.6), '|', color=color, ms=8, mew=1.5, label=label
        )
    r_ex = fibers[(fibers['eid'] == ex['eid']) & (fibers['region'] == ex['region'])].iloc[0]
    ax_trace.set(
        xlim=(0, span_s * 1.17),
        ylim=(bottom - 1.2, None),
        xlabel='time (s)',
        ylabel='z-score (offset by 5)',
        yticks=[],
        title=f'A  example fiber ({ex["NM"]}, {ex["region"]}): r = '
        f'{r_ex.r_ours:.3f} (iblnm), {r_ex.r_ibl:.3f} (ibl-phot.); truth in grey',
    )
    ax_trace.legend(
        loc='upper right', ncols=1, fontsize=7.5, frameon=False, handletextpad=0.1, borderaxespad=0
    )
    ax_trace.spines[['top', 'right', 'left']].set_visible(False)

    # B: r per fiber, both pipelines + diagnostics
    cols = [
        ('r_ours', 'iblnm'),
        ('r_ibl', 'ibl-phot.'),
        ('r_truth_hp', 'truth vs\nHP truth'),
        ('r_ours_hp', 'iblnm vs\nHP truth'),
        ('r_ours_single', 'iblnm\nno iso'),
        ('r_ibl_sliding_mad', 'ibl-phot.\nsliding MAD'),
        ('r_ibl_sort_bug', 'ibl-phot.\nsort bug'),
    ]
    cols = [(c, label) for c, label in cols if c in fibers]
    rng = np.random.default_rng(0)
    for i, (col, _) in enumerate(cols):
        color = colors['ibl'] if 'ibl' in col else colors['ours']
        color = 'grey' if col == 'r_truth_hp' else color
        x = i + rng.uniform(-0.18, 0.18, len(fibers))
        ax_r.plot(x, fibers[col], 'o', ms=3, color=color, alpha=0.6)
        ax_r.plot([i - 0.3, i + 0.3], [fibers[col].median()] * 2, color='k', lw=2)
    ax_r.axhline(0.9, color='grey', ls=':', lw=1)
    ax_r.set_xticks(
        range(len(cols)),
        [label.replace('\n', ' ') for _, label in cols],
        fontsize=8,
        rotation=35,
        ha='right',
        rotation_mode='anchor',
    )
    low = np.floor(np.nanmin(fibers[[c for c, _ in cols]].to_numpy()) * 20) / 20
    ax_r.set(
        ylabel='r with the true ΔF/F (per fiber)',
        ylim=(min(low, 0.85), 1.0),
        title=f'B  signal fidelity, {len(fibers)} fibers',
    )
    ax_r.spines[['top', 'right']].set_visible(False)

    # C, D: per-trial magnitudes (ΔF/F, %), iblnm as is and divided by κ
    valid = trials[trials['valid']]
    lim = np.nanpercentile(np.abs(valid[['truth', 'ours']].to_numpy()), 99.8) * 100
    panels = (
        (ax_trial, valid['ours'], 'C  per trial, iblnm', 'recovered'),
        (ax_trial_i, valid['ours'] / valid['kappa'], 'D  per trial, iblnm ÷ κ', 'recovered ÷ κ'),
    )
    for ax, recovered, title, ylabel in panels:
        slope, r, n = line_fit(valid['truth'], recovered)
        slope_i, r_i, _ = line_fit(
            valid['truth'], valid['ibl'] / (1 if ax is ax_trial else valid['kappa'])
        )
        ax.plot(
            valid['truth'] * 100,
            recovered * 100,
            '.',
            ms=1.5,
            alpha=0.25,
            color=colors['ours'],
            rasterized=True,
        )
        ax.plot([-lim, lim], [-lim, lim], 'k--', lw=0.8, label='identity')
        ax.plot(
            [-lim, lim],
            [-lim * slope, lim * slope],
            color='k',
            lw=1.2,
            label=f'OLS slope {slope:.2f}',
        )
        ax.set(
            xlim=(-lim, lim),
            ylim=(-lim, lim),
            xlabel='true early-window ΔF/F (%)',
            ylabel=f'{ylabel} early-window ΔF/F (%)',
            title=f'{title}\nr = {r:.3f}, n = {n} (ibl-phot.: {slope_i:.2f}, {r_i:.3f})',
        )
        ax.legend(loc='upper left', fontsize=8, frameon=False)
        ax.spines[['top', 'right']].set_visible(False)
    ax_trial.text(
        0.98,
        0.03,
        "κ = L/(floor + L): the pipelines' ΔF/F is relative to\n"
        'all light, the true ΔF/F to the light above\nthe camera floor (1/255)',
        transform=ax_trial.transAxes,
        ha='right',
        va='bottom',
        fontsize=7.5,
    )

    # E: effects vs generating true effects
    shapes = {'intercept': 'o', 'log_contrast': 's', 'reward': '^'}
    for name, fill in (('ours', True), ('ibl', False)):
        for coef, marker in shapes.items():
            d = effects[effects['coef'] == coef]
            ax_eff.plot(
                d['true'] * 100,
                d[name] * 100,
                marker,
                ms=4,
                alpha=0.7,
                color=colors[name],
                mfc=colors[name] if fill else 'none',
                label=f'{coef} ({SHORT[name]})',
            )
    emax = np.nanmax(np.abs(effects[['true', 'ours', 'ibl']].to_numpy())) * 105
    slope, r, _ = line_fit(effects['true'], effects['ours'])
    slope_k, r_k, _ = line_fit(effects['true'], effects['ours'] / effects['kappa'])
    ax_eff.plot([-emax, emax], [-emax, emax], 'k--', lw=0.8)
    ax_eff.set(
        xlim=(-emax, emax),
        ylim=(-emax, emax),
        xlabel='generating effect (ΔF/F, %)',
        ylabel='recovered effect (ΔF/F, %)',
        title=f'E  effects (fiber × event × term)\niblnm slope {slope:.2f}, r {r:.3f}; '
        f'÷κ: slope {slope_k:.2f}',
    )
    ax_eff.legend(fontsize=6.5, frameon=False, loc='upper left', ncols=2)
    ax_eff.spines[['top', 'right']].set_visible(False)
    fig.suptitle(
        'Ground-truth validation on simulated sessions: preprocessed signal vs true ΔF/F',
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix('.svg'))
    fig.savefig(path.with_suffix('.png'), dpi=config.FIGURE_DPI)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------
def write_readme(text):
    """Replace this script's section of ``benchmarks/README.md``."""
    write_section(
        'bench_groundtruth',
        'bench_groundtruth.py — preprocessing against simulated ground truth',
        text,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='demo', choices=('demo', 'small'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cache', help='simulated cache to reuse (generated there if absent)')
    parser.add_argument('--no-readme', action='store_true', help='do not update the README')
    parser.add_argument('--no-figure', action='store_true', help='do not write the figure')
    args = parser.parse_args()
    cache = get_cache(args.preset, args.seed, args.cache)
    t0 = time.perf_counter()
    fibers, trials, effects, examples = evaluate_cache(cache)
    elapsed = time.perf_counter() - t0
    summary = summarise(fibers, trials, effects)
    text = report(summary, fibers, effects)
    print(text)
    with pd.option_context('display.width', 200, 'display.max_columns', 30):
        print(
            fibers[
                [
                    'NM',
                    'region',
                    'noise_rel',
                    'kappa',
                    'r_ours',
                    'r_ibl',
                    'r_ours_hp',
                    'r_ours_motion_resid',
                    'slope_ours',
                    'slope_ibl',
                ]
            ].round(3)
        )
    if not args.no_figure:
        make_figure(fibers, trials, effects, examples)
        print(f'figure: {FIGURE.with_suffix(".svg")} (.png)')
    if not args.no_readme:
        command = (
            f'.venv/bin/python benchmarks/bench_groundtruth.py --preset {args.preset} '
            f'--seed {args.seed}'
        )
        write_readme(
            f'{datetime.date.today().isoformat()} · `{command}` · {machine()} · '
            f'evaluation {elapsed:.0f} s.\n\n{text}\n\n'
            '![ground-truth validation](../docs/figures/groundtruth_validation.png)\n'
        )
    return summary


if __name__ == '__main__':
    main()
