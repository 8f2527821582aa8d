"""Benchmark: FLMM joint bands (iblnm.analysis.flmm) on simulated nested photometry groups.

Each simulated group: ``--subjects`` mice x 2 recordings x ``--trials`` trials, 40 samples
(-0.5 ... 0.8 s at 30 Hz). Every mouse has its own time-varying random intercept curve
(SD 1), every recording its own offset curve (SD 0.5), every trial autocorrelated noise
(SD 1, Gaussian-smoothed over ~0.1 s), and its own fraction correct (uniform 0.55-0.9: the
outcome is confounded with the mouse, as in real cohorts). Responses are
``reward(t) * r + noise`` with r = ±0.5 and reward(t) = A · exp(-(t-0.25)²/(2·0.12²)): A = 0
(null) or ``--effect`` (alternative). A second covariate (contrast, uniform 0-1) never has
an effect (a second null in every simulation).

Methods, per simulation:
- FLMM ``reward + contrast``, subject random intercept, analytic joint 95 % band;
- paired cluster permutation test on recording means, correct vs incorrect (the pipeline's
  test, 500 sign flips);
- pooled Welch t-test at every time point over all trials (nesting ignored), p < 0.05.

Reported: joint-band coverage of the true reward(t) (alternative) and of 0 (null), the
fraction of simulations with any significant time point per method (false positives under
the null, power under the alternative), and the time to fit a group of 30 recordings x
600 trials x 120 samples. Results are printed and written to benchmarks/README.md.

Usage: ``.venv/bin/python benchmarks/bench_flmm.py [--n-sims 200] [--jobs 2] [--no-readme]``
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.ndimage import gaussian_filter1d

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from iblnm.analysis import flmm, waveforms  # noqa: E402

TIMES = np.arange(-15, 25) / 30.0  # s


def _curves(rng, n, n_times, width):
    """n smooth unit-variance curves (Gaussian-smoothed white noise)."""
    x = gaussian_filter1d(rng.standard_normal((n, n_times)), width, axis=1, mode='reflect')
    return x * np.sqrt(2 * np.sqrt(np.pi) * width)


def simulate_group(
    seed, effect, n_subjects=8, n_recordings=2, n_trials=60, times=TIMES, trial_baseline=False
):
    """(responses (n, n_times), trial table, true reward coefficient (n_times,)).

    ``trial_baseline``: every trial minus its mean over [-0.5, 0) s, as the pipeline's trial
    baseline does (the truth too).
    """
    rng = np.random.default_rng(seed)
    n_times = len(times)
    n_rec = n_subjects * n_recordings
    subject = np.repeat(np.arange(n_subjects), n_recordings * n_trials)
    recording = np.repeat(np.arange(n_rec), n_trials)
    p_correct = rng.uniform(0.55, 0.9, n_subjects)
    correct = rng.random(len(subject)) < p_correct[subject]
    reward = np.where(correct, 0.5, -0.5)
    truth = effect * np.exp(-0.5 * ((times - 0.25) / 0.12) ** 2)
    y = truth[None] * reward[:, None]
    y += _curves(rng, n_subjects, n_times, 6.0)[subject]
    y += 0.5 * _curves(rng, n_rec, n_times, 6.0)[recording]
    y += _curves(rng, len(subject), n_times, 3.0)
    data = pd.DataFrame(
        {
            'subject': subject.astype(str),
            'recording': recording,
            'reward': reward,
            'contrast': rng.random(len(subject)),
        }
    )
    if trial_baseline:
        window = (times >= -0.5) & (times < 0)
        y = y - y[:, window].mean(axis=1, keepdims=True)
        truth = truth - truth[window].mean()
    return y, data, truth


def one_simulation(seed, effect, n_subjects, n_trials, n_permutations, trial_baseline=False):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        y, data, truth = simulate_group(
            seed, effect, n_subjects, n_trials=n_trials, trial_baseline=trial_baseline
        )
        ds = flmm.fit_flmm(y, data, 'reward + contrast', times=TIMES, seed=seed).dataset
        reward, contrast = ds.sel(term='reward'), ds.sel(term='contrast')
        covered = bool(((reward['joint_lower'] <= truth) & (reward['joint_upper'] >= truth)).all())
        pointwise = float(((reward['ci_lower'] <= truth) & (reward['ci_upper'] >= truth)).mean())
        # the pipeline's test: recording means per outcome, paired sign-flip cluster test
        means = pd.DataFrame(y).groupby([data['recording'], data['reward']]).mean()
        wide = means.unstack('reward')
        correct = wide.xs(0.5, axis=1, level='reward').to_numpy()
        incorrect = wide.xs(-0.5, axis=1, level='reward').to_numpy()
        cluster = waveforms.cluster_permutation_test(
            correct, incorrect, paired=True, seed=seed, n_permutations=n_permutations
        )
        pooled = stats.ttest_ind(y[data['reward'] > 0], y[data['reward'] < 0], equal_var=False)
        sig_pooled = pooled.pvalue < 0.05
    return {
        'effect': effect,
        'seed': seed,
        'covered': covered,
        'pointwise_coverage': pointwise,
        'flmm_any': bool(reward['significant'].any()),
        'flmm_contrast_any': bool(contrast['significant'].any()),
        'cluster_any': bool(cluster['significant'].any()),
        'pooled_any': bool(sig_pooled.any()),
        'pooled_fraction': float(sig_pooled.mean()),
        'q_joint': float(reward['q_joint']),
    }


def speed(n_recordings=30, n_trials=600, n_times=120, n_subjects=10, repeats=3):
    """(wall, CPU) seconds to fit one large group: random intercept (median of ``repeats``),
    random reward slope, and session (recording) intercepts nested in the mouse."""
    times = np.arange(n_times) / 30.0 - 1.0
    out = {}
    rng = np.random.default_rng(0)
    n = n_recordings * n_trials
    subject = np.repeat(np.arange(n_recordings), n_trials) % n_subjects
    reward = rng.choice([-0.5, 0.5], n)
    y = _curves(rng, n_subjects, n_times, 6.0)[subject] + _curves(rng, n, n_times, 3.0)
    y += 0.5 * reward[:, None] * np.exp(-0.5 * ((times - 0.25) / 0.12) ** 2)[None]
    recording = np.repeat(np.arange(n_recordings), n_trials)
    y += 0.5 * _curves(rng, n_recordings, n_times, 6.0)[recording]
    data = pd.DataFrame(
        {
            'subject': subject.astype(str),
            'reward': reward,
            'contrast': rng.random(n),
            'recording': recording,
        }
    )
    models = (
        ('random intercept', {}),
        ('random intercept + reward slope', {'re_formula': '1 + reward'}),
        ('random intercept + recording intercept nested in the mouse', {'nested': 'recording'}),
        # anchors, same run: the previous defaults
        ('random intercept, BLAS threads not limited (before session 5)', {'blas_threads': None}),
        (
            'nested, statsmodels MixedLM per time point, 2 processes (before session 5; CPU: main process only)',
            {'nested': 'recording', 'method': 'statsmodels', 'n_jobs': 2},
        ),
    )
    for label, kwargs in models:
        runs = []
        for _ in range(repeats if kwargs in ({}, {'blas_threads': None}) else 1):
            t0, c0 = time.perf_counter(), time.process_time()
            flmm.fit_flmm(y, data, 'reward + contrast', times=times, **kwargs)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        out[label] = tuple(np.median(np.array(runs), axis=0))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n-sims', type=int, default=200, help='simulations per scenario')
    parser.add_argument(
        '--effects',
        type=float,
        nargs='*',
        default=[0.25, 0.5],
        help='peak reward effects of the alternatives (SD units)',
    )
    parser.add_argument('--subjects', type=int, default=8)
    parser.add_argument('--trials', type=int, default=60, help='trials per recording')
    parser.add_argument('--n-permutations', type=int, default=500)
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--no-speed', action='store_true', help='skip the large-group timing')
    parser.add_argument('--no-readme', action='store_true')
    parser.add_argument(
        '--trial-baseline',
        action='store_true',
        help="subtract every trial's mean over [-0.5, 0) s (the pipeline default)",
    )
    args = parser.parse_args(argv)
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    effects = [0.0, *args.effects]
    jobs = [(seed, k, effect) for k, effect in enumerate(effects) for seed in range(args.n_sims)]
    rows = Parallel(n_jobs=args.jobs)(
        delayed(one_simulation)(
            seed + k * 10**6,
            effect,
            args.subjects,
            args.trials,
            args.n_permutations,
            args.trial_baseline,
        )
        for seed, k, effect in jobs
    )
    sims = pd.DataFrame(rows)
    elapsed = time.perf_counter() - t0
    timing = {} if args.no_speed else speed()
    load1 = os.getloadavg()[0]
    scenarios = [sims[sims['effect'] == e] for e in effects]

    def pct(x):
        return f'{100 * np.mean(x):.1f} %'

    def ci(x):  # binomial 95 % interval, in %
        k, n = int(np.sum(x)), len(x)
        lo, hi = stats.binomtest(k, n).proportion_ci()
        return f'{100 * k / n:.1f} % ({100 * lo:.1f}-{100 * hi:.1f})'

    def row(label, column, fmt=ci):
        return f'| {label} | ' + ' | '.join(fmt(s[column]) for s in scenarios) + ' |'

    header = ['null (A = 0)', *(f'alternative A = {e:g}' for e in args.effects)]
    table = '\n'.join(
        [
            '| | ' + ' | '.join(header) + ' |',
            '|---' * (len(header) + 1) + '|',
            row('FLMM joint band covers the true reward(t)', 'covered'),
            row('FLMM pointwise 95 % intervals, mean coverage', 'pointwise_coverage', pct),
            row('FLMM: any significant interval (reward)', 'flmm_any'),
            row('FLMM: any significant interval (contrast, never an effect)', 'flmm_contrast_any'),
            row(
                'cluster permutation test (paired, recording means): any cluster p < 0.05',
                'cluster_any',
            ),
            row(
                'pooled t-test per time point (trials, nesting ignored): any p < 0.05', 'pooled_any'
            ),
            row('pooled t-test: fraction of time points p < 0.05', 'pooled_fraction', pct),
            row('FLMM joint critical value q (median)', 'q_joint', lambda x: f'{x.median():.2f}'),
        ]
    )
    speed_lines = '\n'.join(
        f'- {k}: {wall:.1f} s wall, {cpu:.1f} s CPU' for k, (wall, cpu) in timing.items()
    )
    text = (
        f'{datetime.date.today()} · `.venv/bin/python benchmarks/bench_flmm.py --n-sims '
        f'{args.n_sims} --jobs {args.jobs} --effects {" ".join(map(str, args.effects))}{" --trial-baseline" if args.trial_baseline else ""}` · {machine()} · shared machine, load average '
        f'{load0:.1f} → {load1:.1f} · simulations {elapsed / 60:.1f} min.\n\n'
        f'{args.n_sims} simulated groups per scenario (reward(t) = A·exp(-(t-0.25)²/(2·0.12²)), '
        f'coded ±0.5): {args.subjects} mice x 2 recordings x '
        f'{args.trials} trials, 40 samples (30 Hz); mouse curves SD 1, recording curves SD 0.5, '
        'autocorrelated trial noise SD 1, fraction correct 0.55-0.9 per mouse (outcome '
        'confounded with the mouse). Binomial 95 % intervals in brackets.\n\n'
        f'{table}\n\n'
        'Time to fit one group of 30 recordings (10 mice, 3 recordings each) x 600 trials x '
        '120 samples, `reward + contrast` (median of 3 for the random intercept; one BLAS '
        'thread, the default of `fit_flmm`):\n\n'
        f'{speed_lines}\n'
    )
    print(text)
    if not args.no_readme:
        write_section(
            'bench_flmm', 'bench_flmm.py — FLMM joint bands on simulated nested groups', text
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
