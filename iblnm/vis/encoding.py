"""Figures of the movement-encoding and task-encoding analyses.

Every function takes the result tables (as written to CSV) and returns a Figure; the
callers save them (:func:`iblnm.vis.save_figure_formats`).
"""

import numpy as np
import pandas as pd

from iblnm import config
from iblnm.vis import plt, target_nm_color

MODEL_COLORS = {'contrast': '#e6550d', 'timing': '#3182bd'}
TIMING_LABELS = {
    'log_reaction_time': 'log10 reaction time (s)',
    'log_movement_time': 'log10 movement time (s)',
    'log_peak_velocity': 'log10 peak wheel velocity',
}
FEATURE_LABELS = {
    'log_contrast': 'contrast',
    'side': 'side (contra)',
    'reward': 'reward',
    'log_contrast:side': 'contrast × side',
    'log_contrast:reward': 'contrast × reward',
    'side:reward': 'side × reward',
}
PSYCH_LABELS = {
    'psych_50_threshold': 'threshold',
    'psych_50_bias': 'bias',
    'psych_50_lapse_left': 'lapse left',
    'psych_50_lapse_right': 'lapse right',
}


def timing_label(col):
    return TIMING_LABELS.get(col, col)


def _short(event):
    return str(event).replace('_times', '')


# ---------------------------------------------------------------------------
# Movement encoding
# ---------------------------------------------------------------------------
def descriptive_figure(
    data,
    cohort,
    timing,
    resp='response_early',
    event='stimOn_times',
    min_trials=config.MIN_TRIALS_MOVEMENT,
    n_bins=6,
):
    """Response vs timing at each contrast: trials (dots) and binned means per subject.

    Parameters
    ----------
    data : pandas.DataFrame
        One cohort's trials (:func:`iblnm.analysis.encoding.prepare_movement_data`).
    timing : str
        Column on the x axis (log10 s).

    Returns
    -------
    matplotlib.figure.Figure or None
        None when no contrast level has ``min_trials`` trials.
    """
    levels = [c for c, sub in data.groupby('contrast') if len(sub) >= min_trials]
    if not levels:
        return None
    n_cols = min(3, len(levels))
    n_rows = int(np.ceil(len(levels) / n_cols))
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(3.3 * n_cols + 0.4, 2.9 * n_rows + 0.5),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax in axes.flat[len(levels) :]:
        ax.set_visible(False)
    subjects = sorted(data['subject'].unique())
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(subjects)}
    for ax, level in zip(axes.flat, levels):
        sub = data[data['contrast'] == level]
        for subject, rows in sub.groupby('subject'):
            x, y = rows[timing].to_numpy(float), rows[resp].to_numpy(float)
            ax.scatter(x, y, s=4, alpha=0.25, color=colors[subject], linewidths=0, rasterized=True)
            edges = np.unique(np.nanquantile(x, np.linspace(0, 1, n_bins + 1)))
            if len(edges) > 2:
                idx = np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)
                means = pd.DataFrame({'x': x, 'y': y, 'b': idx}).groupby('b').mean()
                ax.plot(means['x'], means['y'], '-o', ms=3, color=colors[subject], label=subject)
        ax.axhline(0, color='0.6', lw=0.6)
        ax.set_title(f'contrast {level:g} %', fontsize=9)
        ax.set_xlabel(timing_label(timing), fontsize=8)
        ax.tick_params(labelbottom=True)  # also above a hidden panel
    for row in axes:
        row[0].set_ylabel(f'{_short(event)} response (z, 0.1–0.35 s)', fontsize=8)
    axes[0, 0].legend(
        title='subject (binned means)',
        fontsize=7,
        title_fontsize=7,
        loc='upper right',
        frameon=False,
    )
    fig.suptitle(f'{cohort}: {_short(event)} response vs {timing_label(timing)}', fontsize=10)
    fig.tight_layout()
    return fig


def model_comparison_figure(loso, event='stimOn_times'):
    """Held-out unique R² of contrast and of timing per cohort, one panel per timing variable.

    Parameters
    ----------
    loso : pandas.DataFrame
        LOSO rows (target_NM, timing_col, subject, delta_r2_contrast, delta_r2_timing).
    """
    timings = sorted(loso['timing_col'].unique())
    cohorts = sorted(loso['target_NM'].unique())
    fig, axes = plt.subplots(
        1,
        len(timings),
        figsize=(1.3 * len(cohorts) * len(timings) + 2.5, 3.6),
        squeeze=False,
        sharey=True,
    )
    for ax, timing in zip(axes[0], timings):
        sub = loso[loso['timing_col'] == timing]
        for i, cohort in enumerate(cohorts):
            rows = sub[sub['target_NM'] == cohort]
            for j, (key, label) in enumerate(
                (('delta_r2_contrast', 'contrast'), ('delta_r2_timing', 'timing'))
            ):
                x = i + (j - 0.5) * 0.38
                vals = rows[key].to_numpy(float)
                ax.bar(
                    x,
                    np.nanmean(vals) if len(vals) else np.nan,
                    width=0.36,
                    color=MODEL_COLORS[label],
                    alpha=0.75,
                    label=f'unique R² of {label}' if i == 0 else None,
                )
                ax.scatter(
                    np.full(len(vals), x),
                    vals,
                    s=12,
                    color='k',
                    zorder=3,
                    label='held-out subject' if i == 0 and j == 0 else None,
                )
        ax.axhline(0, color='0.4', lw=0.8)
        ax.set_xticks(range(len(cohorts)), cohorts, rotation=30, ha='right')
        ax.set_title(f'timing = {timing_label(timing)}', fontsize=9)
    axes[0, 0].set_ylabel('ΔR² (held-out subject)')
    axes[0, 0].legend(fontsize=7, frameon=False, loc='upper left')
    fig.suptitle(
        f'{_short(event)} responses: leave-one-subject-out model comparison\n'
        'ΔR² = R²(full) − R²(model without the predictor)',
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def slopes_figure(slopes, event='stimOn_times'):
    """Timing slope (±95 % CI) at each contrast, one line per cohort and panel per timing."""
    timings = sorted(slopes['timing_col'].unique())
    fig, axes = plt.subplots(1, len(timings), figsize=(4.2 * len(timings), 3.4), squeeze=False)
    cohorts = sorted(slopes['target_NM'].unique())
    for ax, timing in zip(axes[0], timings):
        sub = slopes[slopes['timing_col'] == timing]
        levels = sorted(sub['contrast'].unique())
        pos = {c: i for i, c in enumerate(levels)}
        for k, cohort in enumerate(cohorts):
            rows = sub[sub['target_NM'] == cohort].sort_values('contrast')
            x = rows['contrast'].map(pos).to_numpy(float) + (k - (len(cohorts) - 1) / 2) * 0.08
            err = [rows['slope'] - rows['ci_lower'], rows['ci_upper'] - rows['slope']]
            ax.errorbar(
                x,
                rows['slope'],
                yerr=err,
                fmt='-o',
                ms=4,
                capsize=2,
                color=target_nm_color(cohort),
                label=cohort,
            )
        ax.axhline(0, color='0.5', lw=0.8)
        ax.set_xticks(range(len(levels)), [f'{c:g}' for c in levels])
        ax.set_xlabel('contrast (%)')
        ax.set_ylabel('timing slope (z per log10 s)')
        ax.set_title(f'timing = {timing_label(timing)}', fontsize=9)
    axes[0, -1].legend(fontsize=7, frameon=False, title='cohort', title_fontsize=7)
    fig.suptitle(f'{_short(event)} response ~ side + reward + timing, per contrast', fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Task encoding
# ---------------------------------------------------------------------------
def decomposition_figure(scores, components, event, method='pca'):
    """Explained variance, loadings and scores of a PCA/ICA of GLM coefficients.

    Parameters
    ----------
    scores : pandas.DataFrame
        Columns target_NM and the component columns (PC1 … or IC1 …), one row per recording.
    components : pandas.DataFrame
        Index = component names; feature columns plus ``explained_variance``.
    """
    names = list(components.index)
    feats = [c for c in components.columns if c != 'explained_variance']
    fig, axes = plt.subplots(
        1, 4, figsize=(15, 3.8), gridspec_kw={'width_ratios': [0.8, 1.3, 1.3, 1.4]}
    )
    axes[0].bar(names, 100 * components['explained_variance'], color='0.5')
    axes[0].set_ylabel('variance explained (%)')
    axes[0].set_title('variance')
    lim = np.nanmax(np.abs(components[feats].to_numpy())) or 1.0
    im = axes[1].imshow(
        components[feats].to_numpy().T, cmap='RdBu_r', vmin=-lim, vmax=lim, aspect='auto'
    )
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set_yticks(range(len(feats)), [FEATURE_LABELS.get(f, f) for f in feats], fontsize=8)
    axes[1].set_title('loadings')
    fig.colorbar(im, ax=axes[1], fraction=0.05, label='loading')
    cohorts = sorted(scores['target_NM'].unique())
    for k, cohort in enumerate(cohorts):
        rows = scores[scores['target_NM'] == cohort]
        axes[2].scatter(
            rows[names[0]],
            rows[names[1]] if len(names) > 1 else np.zeros(len(rows)),
            s=14,
            alpha=0.8,
            color=plt.cm.tab10(k % 10),
            label=cohort,
        )
    axes[2].set_xlabel(names[0])
    axes[2].set_ylabel(names[1] if len(names) > 1 else '')
    axes[2].set_title('recordings')
    axes[2].legend(fontsize=7, frameon=False, title='target-NM', title_fontsize=7)
    data = [scores.loc[scores['target_NM'] == c, names[0]].to_numpy(float) for c in cohorts]
    axes[3].boxplot(data, showfliers=False)
    for k, values in enumerate(data):
        axes[3].scatter(
            np.full(len(values), k + 1) + np.linspace(-0.1, 0.1, len(values)),
            values,
            s=8,
            color=plt.cm.tab10(k % 10),
            zorder=3,
        )
    axes[3].set_xticks(range(1, len(cohorts) + 1), cohorts, rotation=30, ha='right', fontsize=8)
    axes[3].set_ylabel(f'{names[0]} score')
    axes[3].set_title(f'{names[0]} by target-NM')
    fig.suptitle(
        f'{method.upper()} of per-recording GLM coefficients: {_short(event)}', fontsize=11
    )
    fig.tight_layout()
    return fig


def cca_scatter_figure(scores, cohort, event, r, p):
    """Neural vs behavioural CC1 variate of one cohort (one dot per recording)."""
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.scatter(scores['x_score'], scores['y_score'], s=18, color=target_nm_color(cohort), alpha=0.8)
    if len(scores) > 1:
        slope, icpt = np.polyfit(scores['x_score'], scores['y_score'], 1)
        xs = np.linspace(scores['x_score'].min(), scores['x_score'].max(), 10)
        ax.plot(xs, slope * xs + icpt, color='k', lw=1)
    ax.set_xlabel('neural variate (GLM coefficients · w)')
    ax.set_ylabel('behavioural variate (psychometrics · w)')
    ax.set_title(
        f'{cohort}, {_short(event)}: CC1 r = {r:.2f}, p = {p:.3g}\nn = {len(scores)} recordings',
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def cca_summary_figure(summary, weights, event):
    """CC1 correlation per cohort (with permutation p) and the CC1 weights of both views."""
    cohorts = list(summary['cohort'])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={'width_ratios': [1, 1.4, 1.1]})
    bars = axes[0].bar(cohorts, summary['correlation'], color=[target_nm_color(c) for c in cohorts])
    for bar, p in zip(bars, summary['p_value']):
        axes[0].annotate(
            f'p={p:.2g}',
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha='center',
            va='bottom',
            fontsize=7,
        )
    axes[0].set_ylim(0, 1.1)
    axes[0].set_ylabel('CC1 correlation (r)')
    axes[0].set_title('canonical correlation')
    axes[0].tick_params(axis='x', rotation=30, labelsize=8)
    for ax, view, labels, title in (
        (axes[1], 'neural', FEATURE_LABELS, 'neural weights'),
        (axes[2], 'behavioral', PSYCH_LABELS, 'behavioural weights'),
    ):
        rows = weights[weights['view'] == view]
        order = list(dict.fromkeys(rows['feature']))
        mat = rows.pivot(index='feature', columns='cohort', values='CC1').reindex(
            index=order, columns=cohorts
        )
        lim = np.nanmax(np.abs(mat.to_numpy())) if mat.size else 1.0
        im = ax.imshow(mat.to_numpy(), cmap='RdBu_r', vmin=-lim, vmax=lim, aspect='auto')
        ax.set_yticks(range(len(mat.index)), [labels.get(f, f) for f in mat.index], fontsize=8)
        ax.set_xticks(range(len(cohorts)), cohorts, rotation=30, ha='right', fontsize=8)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.05, label='CC1 weight')
    fig.suptitle(
        f'Per-cohort CCA: GLM coefficients vs psychometric parameters ({_short(event)})',
        fontsize=11,
    )
    fig.tight_layout()
    return fig
