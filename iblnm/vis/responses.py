"""Figures of the responses analysis: data in, a matplotlib Figure out (saved by callers).

Colours follow ``config.NM_COLORS``; every axis is labelled with its units.
"""

import matplotlib.pyplot as plt
import numpy as np

from iblnm import config
from iblnm.analysis import waveforms
from iblnm.analysis.lmm import MARGINAL_LEVELS
from iblnm.vis import order_target_nms, target_nm_color

OUTCOME_COLORS = {1.0: '#1a9850', -1.0: '#d73027'}
OUTCOME_NAMES = {1.0: 'correct', -1.0: 'incorrect'}
EVENT_NAMES = {
    'stimOn_times': 'stimulus onset',
    'firstMovement_times': 'first movement',
    'feedback_times': 'feedback',
}


MIN_TRIAL_FRACTION = 0.25  # a recording's mean trace is drawn where >= 25 % of its trials remain


def _shade_windows(ax, event):
    """Baseline (stimulus onset only: the trial baseline is read there) and late windows."""
    if event == config.TRIAL_BASELINE_EVENT:
        ax.axvspan(*config.TRIAL_BASELINE_WINDOW, color='#9ecae1', alpha=0.35, lw=0)
    for name in ('late', 'outcome'):
        if name in config.RESPONSE_WINDOWS:
            ax.axvspan(
                *config.RESPONSE_WINDOWS[name],
                color='#bdbdbd',
                alpha=0.25 if name == 'late' else 0.12,
                lw=0,
            )


def _counts(sub):
    """(n recordings, n mice, n trials) of a recording-mean trace table."""
    per_rec = sub.groupby(['eid', 'fiber_idx'])['n_trials'].max()
    n_mice = sub['subject'].nunique() if 'subject' in sub else np.nan
    return len(per_rec), n_mice, int(per_rec.sum())


def plot_mean_traces(traces, tests=None, n_boot=1000):
    """Grid of mean traces: rows target-NM, columns event, correct vs incorrect.

    Parameters
    ----------
    traces : pandas.DataFrame
        Long form of recording-mean traces with columns target_NM, event, feedbackType,
        eid, fiber_idx, subject, time (s), response (z), n_trials.
    tests : dict, optional
        ``{(target_NM, event): cluster test result}``; samples in significant clusters
        are marked by a black bar.
    n_boot : int
        Bootstrap resamples (over recordings) of the 95 % band.

    Each legend entry gives n recordings / n mice / n trials of its outcome; blue: the
    trial baseline ([-0.5, 0) s before stimulus onset, subtracted from every event of the
    trial); grey: the late (0.35-1 s) and outcome (1-2 s) windows. A recording's samples
    left with fewer than 25 % of its trials (masked at the next event) are not drawn.
    """
    targets = order_target_nms(traces['target_NM'].unique())
    events = [e for e in config.RESPONSE_EVENTS if e in set(traces['event'])]
    fig, axes = plt.subplots(
        len(targets),
        len(events),
        figsize=(4.2 * len(events), 2.6 * len(targets)),
        sharex=True,
        squeeze=False,
    )
    for r, target in enumerate(targets):
        for c, event in enumerate(events):
            ax = axes[r, c]
            _shade_windows(ax, event)
            sub = traces[(traces['target_NM'] == target) & (traces['event'] == event)]
            for outcome, color in OUTCOME_COLORS.items():
                rows = sub[sub['feedbackType'] == outcome]
                wide = rows.pivot(index=['eid', 'fiber_idx'], columns='time', values='response')
                if wide.empty:
                    continue
                if 'n_trials' in rows:  # hide samples left to few trials by the masking
                    counts = rows.pivot(
                        index=['eid', 'fiber_idx'], columns='time', values='n_trials'
                    )
                    few = counts.lt(MIN_TRIAL_FRACTION * counts.max(axis=1), axis=0)
                    wide = wide.mask(few.reindex_like(wide).fillna(True).astype(bool))
                mean, lo, hi = waveforms.bootstrap_ci(wide.to_numpy(), n_boot=n_boot)
                t = wide.columns.to_numpy(dtype=float)
                n_rec, n_mice, n_trials = _counts(rows)
                ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
                ax.plot(
                    t,
                    mean,
                    color=color,
                    lw=1.5,
                    label=f'{OUTCOME_NAMES[outcome]}: {n_rec} rec, {n_mice} mice, '
                    f'{n_trials} trials',
                )
            _mark_significance(ax, (tests or {}).get((target, event)), sub)
            ax.axvline(0, color='k', lw=0.6, ls='--')
            ax.axhline(0, color='grey', lw=0.5)
            if r == 0:
                ax.set_title(EVENT_NAMES.get(event, event))
            if c == 0:
                ax.set_ylabel(f'{target}\nresponse (z)', color=target_nm_color(target))
            if r == len(targets) - 1:
                ax.set_xlabel('time from event (s)')
            ax.legend(fontsize=6, frameon=False, loc='upper right')
    fig.suptitle(
        'Mean responses across recordings (95 % bootstrap band over recordings). Blue: trial '
        'baseline (before stimulus onset, applied to every event); grey: late (0.35-1 s) and '
        'outcome (1-2 s) windows;\nbar: paired cluster permutation test correct vs incorrect, '
        'p < 0.05 (needs >= 6 recordings)',
        fontsize=9,
    )
    fig.tight_layout()
    return fig


CONDITION_NAMES = {
    'mean': 'average trial',
    'contrast': 'per unit ln(contrast + 1)',
    'side': 'contra - ipsi',
    'reward': 'correct - error',
}


def plot_kernels(kernels, target, n_boot=1000):
    """Event kernels of one target-NM: rows condition, columns event.

    Parameters
    ----------
    kernels : pandas.DataFrame
        Long table of :meth:`PhotometrySessionGroup.get_kernels` (eid, fiber_idx, subject,
        event, condition, lag (s), kernel) for the recordings of ``target``.
    target : str
    n_boot : int
        Bootstrap resamples (over recordings) of the 95 % band; with one recording the
        band is its own ±1.96 SE.
    """
    events = [e for e in config.RESPONSE_EVENTS if e in set(kernels['event'])]
    conditions = [c for c in CONDITION_NAMES if c in set(kernels['condition'])]
    color = target_nm_color(target)
    n_rec = kernels.groupby(['eid', 'fiber_idx']).ngroups
    n_mice = kernels['subject'].nunique() if 'subject' in kernels else np.nan
    fig, axes = plt.subplots(
        len(conditions),
        len(events),
        figsize=(3.8 * len(events), 2.1 * len(conditions)),
        sharex=True,
        squeeze=False,
    )
    for r, cond in enumerate(conditions):
        for c, event in enumerate(events):
            ax = axes[r, c]
            sub = kernels[(kernels['event'] == event) & (kernels['condition'] == cond)]
            wide = sub.pivot(index=['eid', 'fiber_idx'], columns='lag', values='kernel').dropna()
            ax.axvline(0, color='k', lw=0.6, ls='--')
            ax.axhline(0, color='grey', lw=0.5)
            if wide.empty:
                ax.text(
                    0.5,
                    0.5,
                    'not modelled' if sub['kernel'].isna().all() else 'no data',
                    transform=ax.transAxes,
                    ha='center',
                    va='center',
                    fontsize=8,
                    color='#777',
                )
            else:
                t = wide.columns.to_numpy(dtype=float)
                if len(wide) > 1:
                    mean, lo, hi = waveforms.bootstrap_ci(wide.to_numpy(), n_boot=n_boot)
                else:
                    se = sub.pivot(index=['eid', 'fiber_idx'], columns='lag', values='se')
                    mean = wide.to_numpy()[0]
                    lo, hi = mean - 1.96 * se.to_numpy()[0], mean + 1.96 * se.to_numpy()[0]
                ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
                ax.plot(t, mean, color=color, lw=1.5)
            if r == 0:
                ax.set_title(EVENT_NAMES.get(event, event))
            if c == 0:
                ax.set_ylabel(f'{cond}\n({CONDITION_NAMES[cond]})\nkernel (z)', fontsize=8)
            if r == len(conditions) - 1:
                ax.set_xlabel('lag from event (s)')
    fig.suptitle(
        f'{target}: event kernels (regression of the continuous signal), mean over '
        f'{n_rec} recordings / {n_mice} mice, 95 % band (bootstrap over recordings, '
        'or ±1.96 SE for one)',
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _mark_significance(ax, test, sub):
    if test is None or not test['significant'].any():
        return
    t = np.sort(sub['time'].unique())
    ymin, ymax = ax.get_ylim()
    y = ymin + 0.03 * (ymax - ymin)
    for start, stop in waveforms.runs(test['significant']):
        ax.plot([t[start], t[stop - 1]], [y, y], color='k', lw=3, solid_capstyle='butt')


def plot_lmm_coefficients(coefficients, group_col='target_NM', terms=None):
    """Dot-and-whisker plot of fixed effects (95 % CI): one panel per event.

    Parameters
    ----------
    coefficients : pandas.DataFrame
        :func:`iblnm.analysis.lmm.coefficient_table` output.
    group_col : str
        Column distinguishing the fits within an event (colour).
    """
    terms = terms or [t for t in coefficients['term'].unique() if t != 'Intercept']
    events = [e for e in config.RESPONSE_EVENTS if e in set(coefficients['event'])]
    groups = (
        order_target_nms(coefficients[group_col].unique())
        if group_col == 'target_NM'
        else sorted(coefficients[group_col].unique())
    )
    fig, axes = plt.subplots(
        1,
        len(events),
        figsize=(4.2 * len(events), 0.45 * len(terms) * len(groups) / 2 + 2),
        sharey=True,
        squeeze=False,
    )
    offsets = np.linspace(-0.3, 0.3, len(groups)) if len(groups) > 1 else [0.0]
    for ax, event in zip(axes[0], events):
        sub = coefficients[coefficients['event'] == event]
        for g, offset in zip(groups, offsets):
            rows = sub[sub[group_col] == g].set_index('term').reindex(terms)
            y = np.arange(len(terms)) + offset
            kind = rows['kind'].dropna().iloc[0] if rows['kind'].notna().any() else ''
            ax.errorbar(
                rows['coef'],
                y,
                xerr=[rows['coef'] - rows['ci_lower'], rows['ci_upper'] - rows['coef']],
                fmt='o' if kind != 'ols' else 's',
                ms=4,
                color=target_nm_color(g),
                lw=1,
                mfc='white' if kind == 'ols' else target_nm_color(g),
                label=f'{g}' + (' (OLS)' if kind == 'ols' else ''),
            )
        ax.axvline(0, color='k', lw=0.6)
        ax.set_yticks(range(len(terms)), terms)
        ax.invert_yaxis()
        ax.set_title(EVENT_NAMES.get(event, event))
        ax.set_xlabel('coefficient (z per unit predictor)')
    axes[0, 0].set_ylabel('fixed effect')
    axes[0, -1].legend(fontsize=8, frameon=False, bbox_to_anchor=(1.02, 1), loc='upper left')
    response = coefficients['response'].iloc[0] if 'response' in coefficients else 'response_early'
    fig.suptitle(
        f'Mixed models {response} ~ log_contrast * side * reward + (1|subject), by {group_col}'
    )
    fig.tight_layout()
    return fig


def plot_similarity_matrix(similarity):
    """Cosine similarity heatmap, recordings ordered by target-NM with block labels."""
    targets = similarity.index.get_level_values('target_NM').to_numpy()
    order = np.argsort([config.TARGETNM2POSITION.get(t, 99) for t in targets], kind='stable')
    values = similarity.to_numpy()[np.ix_(order, order)]
    labels = targets[order]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(values, cmap='RdBu_r', vmin=-1, vmax=1, interpolation='nearest')
    fig.colorbar(im, ax=ax, label='cosine similarity')
    bounds = [0] + [i for i in range(1, n) if labels[i] != labels[i - 1]] + [n]
    for b in bounds[1:-1]:
        ax.axhline(b - 0.5, color='k', lw=0.8)
        ax.axvline(b - 0.5, color='k', lw=0.8)
    centres = [(a + b - 1) / 2 for a, b in zip(bounds[:-1], bounds[1:])]
    names = [labels[a] for a in bounds[:-1]]
    ax.set_xticks(centres, names, rotation=45, ha='right')
    ax.set_yticks(centres, names)
    ax.set_xlabel('recording (grouped by target-NM)')
    ax.set_ylabel('recording (grouped by target-NM)')
    ax.set_title(f'Response-vector similarity ({n} recordings)')
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion, title='LOSO decoding confusion matrix'):
    """Row-normalised confusion matrix (recall per true class) with counts annotated."""
    counts = confusion.to_numpy()
    with np.errstate(invalid='ignore'):
        frac = counts / counts.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.0 * len(confusion) + 2.5, 0.9 * len(confusion) + 2))
    im = ax.imshow(frac, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label='fraction of true class')
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                f'{counts[i, j]}',
                ha='center',
                va='center',
                color='white' if frac[i, j] > 0.5 else 'black',
            )
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=45, ha='right')
    ax.set_yticks(range(len(confusion.index)), confusion.index)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_decoding_summary(decoder, n_top=10):
    """Balanced accuracy vs chance, per-class recall and the top feature-group contributions."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={'width_ratios': [1, 1.4]})
    recall = decoder.recall
    ax = axes[0]
    ax.bar(range(len(recall)), recall.to_numpy(), color=[target_nm_color(c) for c in recall.index])
    ax.axhline(decoder.chance, color='k', ls='--', lw=1, label=f'chance = {decoder.chance:.2f}')
    ax.axhline(
        decoder.balanced_accuracy,
        color='#444',
        lw=1.5,
        label=f'balanced accuracy = {decoder.balanced_accuracy:.2f}',
    )
    n_per_class = decoder.confusion.sum(axis=1)
    ax.set_xticks(range(len(recall)), [f'{c}\n(n={n_per_class[c]})' for c in recall.index])
    ax.set_ylim(0, 1.35)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel('recall (LOSO)')
    ax.set_title('Decoding target from response vectors')
    ax.legend(fontsize=8, frameon=False, loc='upper right')
    ax = axes[1]
    contrib = decoder.contributions
    if contrib is not None and len(contrib):
        top = contrib.head(n_top).iloc[::-1]
        ax.barh(range(len(top)), top['delta'], color='#4c72b0')
        ax.set_yticks(range(len(top)), top['feature_group'])
        ax.axvline(0, color='k', lw=0.6)
        if np.allclose(top['delta'], 0):
            ax.text(
                0.5,
                0.5,
                'no feature group carries unique information:\n'
                'leaving any one out does not change the accuracy',
                transform=ax.transAxes,
                ha='center',
                va='center',
                fontsize=9,
                bbox={'facecolor': 'white', 'edgecolor': '#999'},
            )
    ax.set_xlabel('drop in balanced accuracy when left out')
    ax.set_title('Unique contribution of feature groups')
    fig.tight_layout()
    return fig


MARGINAL_FACTORS = (
    ('contrast', 'contrast (%)'),
    ('reward', 'outcome'),
    ('side', 'stimulus side'),
)


def _group_labels(groups, coefficients, group_col):
    """Legend label per group: the group with its n subjects and n trials (from the fits),
    and 'OLS' for a group fitted without the subject term (one mouse)."""
    labels = {g: str(g) for g in groups}
    if coefficients is None or not {'n_subjects', 'n_obs'} <= set(coefficients.columns):
        return labels
    for g in groups:
        rows = coefficients[coefficients[group_col] == g]
        if len(rows):
            n_subjects, n_obs = rows['n_subjects'].max(), rows['n_obs'].max()
            mice = 'mouse' if n_subjects == 1 else 'mice'
            ols = '; OLS' if 'kind' in rows and (rows['kind'] == 'ols').any() else ''
            labels[g] = f'{g} ({n_subjects:.0f} {mice}, up to {n_obs:.0f} trials{ols})'
    return labels


def plot_marginal_means(means, coefficients=None, group_col='target_NM', response='response_early'):
    """Model means of the response per contrast, outcome and side (95 % CI).

    One row per event and one column per factor; in each panel the mixed model's mean at
    each level of the factor, the other factors averaged (side and outcome at their
    midpoints, contrast at the mean coded contrast), one colour per group.

    Parameters
    ----------
    means : pandas.DataFrame
        :func:`iblnm.analysis.lmm.marginal_means_table` output (``group_col``, event, factor,
        level, mean, ci_lower, ci_upper, kind), in memory or read back from its CSV.
    coefficients : pandas.DataFrame, optional
        The fits' :func:`iblnm.analysis.lmm.coefficient_table` (``n_subjects``, ``n_obs``
        for the legend).
    group_col : str
        Column distinguishing the fits within an event (colour).
    response : str
        Name of the modelled response (axis label; z units).
    """
    events = [e for e in config.RESPONSE_EVENTS if e in set(means['event'])]
    factors = [(f, label) for f, label in MARGINAL_FACTORS if f in set(means['factor'])]
    groups = (
        order_target_nms(means[group_col].unique())
        if group_col == 'target_NM'
        else sorted(means[group_col].unique())
    )
    colors = {g: target_nm_color(g) for g in groups}
    labels = _group_labels(groups, coefficients, group_col)
    fig, axes = plt.subplots(
        len(events),
        len(factors),
        figsize=(3.6 * len(factors) + 2.4, 2.7 * len(events) + 0.6),
        sharey='row',
        squeeze=False,
        gridspec_kw={'width_ratios': [2 if f == 'contrast' else 1 for f, _ in factors]},
    )
    offsets = np.linspace(-0.2, 0.2, len(groups)) if len(groups) > 1 else [0.0]
    for row, event in zip(axes, events):
        for ax, (factor, xlabel) in zip(row, factors):
            sub = means[(means['event'] == event) & (means['factor'] == factor)]
            levels = _factor_levels(sub['level'], factor)
            for g, offset in zip(groups, offsets):
                rows = sub[sub[group_col] == g]
                if rows.empty:
                    continue
                x = np.array([levels.index(str(v)) for v in rows['level']], float)
                kw = dict(color=colors[g], ms=4, lw=1.2, label=labels[g])
                if factor == 'contrast':
                    order = np.argsort(x)
                    ax.plot(x[order], rows['mean'].to_numpy()[order], marker='o', **kw)
                    ax.fill_between(
                        x[order],
                        rows['ci_lower'].to_numpy()[order],
                        rows['ci_upper'].to_numpy()[order],
                        color=colors[g],
                        alpha=0.15,
                        lw=0,
                    )
                else:
                    ax.errorbar(
                        x + offset,
                        rows['mean'],
                        yerr=[rows['mean'] - rows['ci_lower'], rows['ci_upper'] - rows['mean']],
                        fmt='o',
                        **kw,
                    )
            ax.axhline(0, color='k', lw=0.5)
            ax.set_xticks(range(len(levels)), [_level_label(v, factor) for v in levels])
            ax.set_xlim(-0.5, len(levels) - 0.5)
            if event == events[-1]:
                ax.set_xlabel(xlabel)
            ax.set_title(f'{EVENT_NAMES.get(event, event)}: {factor}', fontsize=9)
        row[0].set_ylabel(f'model mean\n{response} (z)')
    handles, names = [], []
    for ax in axes.flat:  # one legend entry per group, wherever it was drawn
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, fontsize=8, frameon=False, loc='center right')
    fig.suptitle(
        f'Mixed-model means of {response} (95 % CI), other factors averaged, by {group_col}\n'
        f'{response} ~ log_contrast * side * reward + (1|subject); a midline region has no side'
    )
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return fig


def _factor_levels(levels, factor):
    """The levels of a factor in plotting order, as strings (the CSV reads them back as text)."""
    unique = {str(v) for v in levels}
    if factor == 'contrast':
        return sorted(unique, key=float)
    order = list(MARGINAL_LEVELS.get(factor, ()))
    return [v for v in order if v in unique] + sorted(unique - set(order))


def _level_label(level, factor):
    return f'{float(level):g}' if factor == 'contrast' else level


WHEEL_DV_LABELS = {
    'reaction_time': 'reaction time',
    'movement_time': 'movement time',
    'peak_velocity': 'peak wheel speed',
}


def plot_wheel_lmm(summary, alpha=0.05):
    """Variance in movement explained by the response, beyond side x choice.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`iblnm.analysis.lmm.fit_wheel_lmms` output: one bar per target-NM and contrast
        in each movement-variable panel; * marks a likelihood-ratio p < ``alpha``.
    """
    dvs = [dv for dv in config.TIMING_VARS if dv in set(summary['dv'])]
    targets = order_target_nms(summary['target_NM'].unique())
    contrasts = sorted(summary['contrast'].unique())
    fig, axes = plt.subplots(1, len(dvs), figsize=(4.2 * len(dvs), 3.6), sharey=True, squeeze=False)
    width = 0.8 / max(len(targets), 1)
    for ax, dv in zip(axes[0], dvs):
        sub = summary[summary['dv'] == dv]
        for i, target in enumerate(targets):
            rows = sub[sub['target_NM'] == target].set_index('contrast').reindex(contrasts)
            x = np.arange(len(contrasts)) + (i - (len(targets) - 1) / 2) * width
            ax.bar(x, rows['delta_r2'], width, color=target_nm_color(target), label=target)
            for xi, (d, p) in zip(x, zip(rows['delta_r2'], rows['lrt_pvalue'])):
                if p < alpha:
                    ax.text(xi, d, '*', ha='center', va='bottom', fontsize=10)
        ax.axhline(0, color='k', lw=0.6)
        ax.set_xticks(range(len(contrasts)), [f'{c:g}' for c in contrasts])
        ax.set_xlabel('contrast (%)')
        ax.set_title(WHEEL_DV_LABELS.get(dv, dv))
    axes[0, 0].set_ylabel('Δ marginal R² (response added)')
    axes[0, -1].legend(fontsize=8, frameon=False, bbox_to_anchor=(1.02, 1), loc='upper left')
    fig.suptitle(
        f'Does the stimulus response predict the movement? dv ~ side * choice '
        f'(+ response) + (1|subject); * likelihood ratio p < {alpha:g}'
    )
    fig.tight_layout()
    return fig


FLMM_PANELS = (
    ('feedback_times', 'reward', 'outcome (correct − incorrect)'),
    ('stimOn_times', 'log_contrast', 'contrast (per unit coded contrast)'),
)


def plot_flmm(coefficients, cluster_masks=None, panels=FLMM_PANELS):
    """FLMM coefficient functions with pointwise and joint 95 % bands, per target-NM.

    Parameters
    ----------
    coefficients : pandas.DataFrame
        :func:`iblnm.analysis.flmm.coefficient_table` output (target_NM, event, term, time,
        estimate, ci_*, joint_*, significant, n_subjects, n_obs).
    cluster_masks : dict, optional
        ``{(target_NM, event): bool array over the same time samples}`` of the cluster
        permutation test (correct vs incorrect); drawn under the outcome panels, with the
        samples where it and the FLMM disagree marked in orange.
    panels : sequence of (event, term, label)
    """
    targets = order_target_nms(coefficients['target_NM'].unique())
    fig, axes = plt.subplots(
        len(targets),
        len(panels),
        squeeze=False,
        sharex=True,
        figsize=(4.4 * len(panels), 2.5 * len(targets)),
    )
    for r, target in enumerate(targets):
        for c, (event, term, label) in enumerate(panels):
            ax = axes[r, c]
            sub = coefficients[
                (coefficients['target_NM'] == target)
                & (coefficients['event'] == event)
                & (coefficients['term'] == term)
            ].sort_values('time')
            if sub.empty:
                ax.text(
                    0.5,
                    0.5,
                    'not fitted (< 2 subjects)',
                    ha='center',
                    va='center',
                    transform=ax.transAxes,
                    fontsize=8,
                    color='grey',
                )
            else:
                _flmm_panel(
                    ax,
                    sub,
                    target,
                    (cluster_masks or {}).get((target, event)) if term == 'reward' else None,
                )
            if r == 0:
                ax.set_title(f'{EVENT_NAMES.get(event, event)}: {label}', fontsize=9)
            if c == 0:
                ax.set_ylabel(f'{target}\ncoefficient (z)', color=target_nm_color(target))
            if r == len(targets) - 1:
                ax.set_xlabel('time from event (s)')
    handles = [
        plt.Rectangle((0, 0), 1, 1, color='0.55', alpha=0.35, label='pointwise 95 %'),
        plt.Rectangle((0, 0), 1, 1, color='0.55', alpha=0.15, label='joint 95 %'),
        plt.Rectangle((0, 0), 1, 1, color='gold', alpha=0.35, label='joint band excludes 0'),
        plt.Line2D([], [], color='k', lw=3, label='cluster test p < 0.05'),
        plt.Line2D([], [], color='tab:orange', lw=3, label='FLMM and cluster test disagree'),
    ]
    fig.legend(handles=handles, loc='lower center', ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        'Functional mixed models: response(t) ~ reward + log_contrast + side + '
        '(1 | subject), fast univariate inference'
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def _flmm_panel(ax, sub, target, cluster):
    t = sub['time'].to_numpy(dtype=float)
    color = target_nm_color(target)
    ax.fill_between(t, sub['joint_lower'], sub['joint_upper'], color=color, alpha=0.15, lw=0)
    ax.fill_between(t, sub['ci_lower'], sub['ci_upper'], color=color, alpha=0.35, lw=0)
    n = f'{int(sub["n_subjects"].iloc[0])} mice, {int(sub["n_obs"].max())} trials'
    ax.plot(t, sub['estimate'], color=color, lw=1.5, label=n)
    ax.axhline(0, color='grey', lw=0.5)
    ax.axvline(0, color='k', lw=0.6, ls='--')
    significant = sub['significant'].to_numpy(dtype=bool)
    step = np.median(np.diff(t)) if len(t) > 1 else 0
    for start, stop in waveforms.runs(significant):
        ax.axvspan(t[start] - step / 2, t[stop - 1] + step / 2, color='gold', alpha=0.35, lw=0)
    if cluster is not None and len(cluster) == len(t):
        ymin, ymax = ax.get_ylim()
        y = ymin + 0.03 * (ymax - ymin)
        for start, stop in waveforms.runs(cluster):
            ax.plot([t[start], t[stop - 1]], [y, y], color='k', lw=3, solid_capstyle='butt')
        for start, stop in waveforms.runs(np.asarray(cluster, bool) != significant):
            ax.plot(
                [t[start], t[stop - 1]],
                [y + 0.04 * (ymax - ymin)] * 2,
                color='tab:orange',
                lw=3,
                solid_capstyle='butt',
            )
    ax.legend(fontsize=7, frameon=False, loc='upper left')
