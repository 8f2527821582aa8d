"""Task performance across training: learning curves and psychometric trajectories per target-NM.

Input: ``data/performance.pqt`` (one row per session, the task stage) joined with the
catalog (subject, session type, ``session_n``, target-NMs, dataset flags). A session
counts under every valid target-NM of its mouse. Outputs:

- ``figures/task_performance/learning``: target-NMs as columns; rows: mice reaching each
  stage, cumulative distributions of the sessions to biased and of the biased sessions to
  ephys, fraction correct, and the 50/50-block psychometric bias, threshold and lapses
  across sessions (one line per mouse; thick: mice with photometry data);
- ``figures/task_performance/psychometrics`` (sessions with extracted photometry only):
  the 50/50-block curve of every session and their mean, the mean curve per block
  (pL 0.2/0.5/0.8), bias and threshold per block, and the bias shift across sessions;
- ``results/task_performance/performance_by_session.csv`` (one row per session and
  target-NM) and ``training_progression.csv`` (one row per target-NM and mouse).
"""

from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import psychofit
from matplotlib.ticker import MaxNLocator

from iblnm import config, task, util
from iblnm.vis import order_target_nms, save_figure_formats, target_nm_colors

STAGES = ('training', 'biased', 'ephys')
BLOCK_COLORS = {'20': '#e6550d', '50': '#636363', '80': '#3182bd'}  # pL of the block
BLOCK_LABELS = {'20': 'pL 0.2 (right block)', '50': 'pL 0.5', '80': 'pL 0.8 (left block)'}
TRAJECTORY_ROWS = {
    'fraction_correct': 'fraction correct',
    'psych_50_bias': 'bias (% contrast)',
    'psych_50_threshold': 'threshold (% contrast)',
    'psych_50_lapse_left': 'lapse left (γ1)',
    'psych_50_lapse_right': 'lapse right (γ2)',
}
PSYCH_PARAMS = ('bias', 'threshold', 'lapse_left', 'lapse_right')
CONTRAST_GRID = np.linspace(-100, 100, 201)  # signed contrast (%)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def performance_by_target(catalog, performance):
    """One row per (session, target-NM of its mouse) with the session's performance.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``metadata/sessions.pqt``.
    performance : pandas.DataFrame
        ``data/performance.pqt``; sessions without a row keep NaN performance (they still
        count for the training stages).

    Returns
    -------
    pandas.DataFrame
        Catalog columns subject, session_type, session_n, day_n, start_time, eid,
        ``target_NM`` (one label), ``has_photometry`` (extracted photometry listed),
        ``mouse_has_photometry`` and the performance columns.
    """
    cat = catalog[catalog['session_type'].isin(STAGES)]
    cat = cat[~cat['subject'].isin(config.SUBJECTS_TO_EXCLUDE)]
    cat = util.add_dataset_flags(cat)
    cat['has_photometry'] = cat['has_extracted_photometry_signal']
    mouse_targets = mouse_target_nms(cat)
    cat['target_NM'] = cat['subject'].map(lambda s: mouse_targets.get(s, []))
    cat = cat.explode('target_NM').dropna(subset=['target_NM'])
    keep = [
        'eid',
        'subject',
        'session_type',
        'session_n',
        'day_n',
        'start_time',
        'target_NM',
        'has_photometry',
    ]
    df = cat[keep].drop_duplicates(['eid', 'target_NM'])
    perf = performance.drop(columns=[c for c in ('contrasts',) if c in performance])
    df = df.merge(perf, on='eid', how='left')
    mouse = df.groupby(['target_NM', 'subject'])['has_photometry'].transform('any')
    df['mouse_has_photometry'] = mouse.astype(bool)
    return df.sort_values(['target_NM', 'subject', 'session_n']).reset_index(drop=True)


def mouse_target_nms(catalog):
    """{subject: sorted valid target-NMs over all its sessions}.

    Learning is a property of the mouse: every session of a mouse counts under each of the
    mouse's target-NMs, also a session whose own location label is wrong or missing.
    """
    labels = catalog[['subject', 'target_NM']].explode('target_NM')
    labels = labels[labels['target_NM'].isin(config.VALID_TARGETNMS)]
    return labels.groupby('subject')['target_NM'].agg(lambda t: sorted(set(t))).to_dict()


def training_progression(df):
    """Per target-NM and mouse: :func:`iblnm.task.count_sessions_to_stage` plus flags."""
    frames = []
    for target, sessions in df.groupby('target_NM'):
        counts = task.count_sessions_to_stage(sessions.drop_duplicates('eid'))
        counts.insert(0, 'target_NM', target)
        photometry = sessions.groupby('subject')['mouse_has_photometry'].first()
        counts['has_photometry'] = counts['subject'].map(photometry).astype(bool)
        frames.append(counts)
    if not frames:
        return pd.DataFrame(columns=['target_NM', 'subject'])
    return pd.concat(frames, ignore_index=True)


def psychometric_curve(params, contrasts=CONTRAST_GRID):
    """P(rightward choice) at ``contrasts`` (%) for one fit {bias, threshold, lapse_left,
    lapse_right} (psychofit ``erf_psycho_2gammas``); NaN when a parameter is NaN."""
    values = np.array([params.get(key, np.nan) for key in PSYCH_PARAMS], dtype=float)
    if not np.all(np.isfinite(values)):
        return np.full(len(contrasts), np.nan)
    return psychofit.erf_psycho_2gammas(values, np.asarray(contrasts, dtype=float))


def session_curves(sessions, block='50', contrasts=CONTRAST_GRID):
    """(n_sessions, n_contrasts) P(rightward) of each session's fit of ``block``."""
    prefix = f'psych_{block}_'
    curves = [
        psychometric_curve({k: row.get(prefix + k) for k in PSYCH_PARAMS}, contrasts)
        for _, row in sessions.iterrows()
    ]
    return np.array(curves).reshape(len(curves), len(contrasts))


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def _columns(targets, n_rows, width=3.2, height=2.3):
    fig, axes = plt.subplots(
        n_rows, len(targets), figsize=(width * len(targets) + 1.5, height * n_rows), squeeze=False
    )
    for j, target in enumerate(targets):
        axes[0, j].set_title(target, fontsize=12, fontweight='bold')
    return fig, axes


def _no_data(ax, text='no data'):
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center', color='0.4', fontsize=8
    )


def _stage_bars(ax, progression, color):
    counts = [(progression[f'n_{s}'] > 0).sum() if f'n_{s}' in progression else 0 for s in STAGES]
    ax.bar(range(len(STAGES)), counts, color=color)
    ax.set_xticks(range(len(STAGES)), STAGES)
    ax.set(ylabel='mice reaching stage', ylim=(0, max(counts + [1]) + 0.5))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _stage_cdfs(ax, progression):
    plotted = False
    for col, label, ls in (
        ('sessions_to_biased', 'training → biased', '-'),
        ('biased_sessions_to_ephys', 'biased → ephys', '--'),
    ):
        values = np.sort(progression[col].dropna().to_numpy(float)) if col in progression else []
        if len(values):
            frac = np.arange(1, len(values) + 1) / len(progression)
            ax.step(
                np.r_[0, values, values[-1] + 1],
                np.r_[0, frac, frac[-1]],
                where='post',
                ls=ls,
                color='k',
                label=label,
            )
            plotted = True
    ax.set(xlabel='sessions before the stage', ylabel='fraction of mice', ylim=(0, 1.05))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if plotted:
        ax.legend(fontsize=7, frameon=False, loc='upper left')
    else:
        _no_data(ax)


def _trajectories(ax, sessions, column, color):
    for _, mouse in sessions.groupby('subject'):
        mouse = mouse.sort_values('session_n')
        thick = bool(mouse['mouse_has_photometry'].iloc[0])
        ax.plot(
            mouse['session_n'],
            mouse[column],
            '-o',
            ms=3,
            color=color,
            lw=2.2 if thick else 0.8,
            alpha=0.9 if thick else 0.5,
        )
    ax.set(xlabel='session number', ylabel=TRAJECTORY_ROWS[column])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if sessions[column].notna().sum() == 0:
        _no_data(ax)


def plot_learning(df, progression):
    """Learning figure: target-NMs as columns (see the module docstring for the rows)."""
    targets = order_target_nms(df['target_NM'])
    colors = target_nm_colors(targets)
    fig, axes = _columns(targets, 2 + len(TRAJECTORY_ROWS))
    for j, target in enumerate(targets):
        prog = progression[progression['target_NM'] == target]
        _stage_bars(axes[0, j], prog, colors[target])
        _stage_cdfs(axes[1, j], prog)
        for i, column in enumerate(TRAJECTORY_ROWS, start=2):
            _trajectories(axes[i, j], df[df['target_NM'] == target], column, colors[target])
    handles = [
        plt.Line2D([], [], color='k', lw=2.2, label='mouse with photometry'),
        plt.Line2D([], [], color='k', lw=0.8, alpha=0.5, label='mouse without'),
    ]
    fig.legend(handles=handles, loc='upper right', frameon=False)
    fig.suptitle('Training progression and 50/50-block psychometrics per target-NM', y=1.0)
    fig.tight_layout()
    return fig


def _curves_panel(ax, sessions, color):
    curves = session_curves(sessions, '50')
    for curve in curves:
        ax.plot(CONTRAST_GRID, curve, color=color, lw=0.7, alpha=0.5)
    if len(curves) and np.isfinite(curves).any():
        ax.plot(
            CONTRAST_GRID,
            np.nanmean(curves, axis=0),
            color='k',
            lw=2,
            label=f'mean of {np.isfinite(curves[:, 0]).sum()} sessions',
        )
        ax.legend(fontsize=7, frameon=False, loc='upper left')
    ax.set(xlabel='signed contrast (%)', ylabel='P(rightward choice)', ylim=(-0.02, 1.02))


def _block_curves_panel(ax, sessions):
    for block, color in BLOCK_COLORS.items():
        curves = session_curves(sessions, block)
        n = int(np.isfinite(curves[:, 0]).sum()) if len(curves) else 0
        if n:
            ax.plot(
                CONTRAST_GRID,
                np.nanmean(curves, axis=0),
                color=color,
                lw=2,
                label=f'{BLOCK_LABELS[block]} (n={n})',
            )
    ax.set(xlabel='signed contrast (%)', ylabel='P(rightward choice)', ylim=(-0.02, 1.02))
    ax.legend(fontsize=6.5, frameon=False, loc='lower right')


def _block_boxes(ax, sessions, param, ylabel):
    data = [sessions[f'psych_{b}_{param}'].dropna().to_numpy(float) for b in BLOCK_COLORS]
    positions = [i for i, values in enumerate(data) if len(values)]
    if positions:
        boxes = ax.boxplot(
            [data[i] for i in positions],
            positions=positions,
            widths=0.6,
            patch_artist=True,
            medianprops={'color': 'k'},
        )
        for patch, i in zip(boxes['boxes'], positions):
            patch.set(facecolor=list(BLOCK_COLORS.values())[i], alpha=0.6)
    ax.set_xticks(range(len(BLOCK_COLORS)), [f'pL {int(b) / 100:g}' for b in BLOCK_COLORS])
    ax.set(xlim=(-0.6, len(BLOCK_COLORS) - 0.4), ylabel=ylabel, xlabel='block')


def _bias_shift_panel(ax, sessions, color):
    biased = sessions[sessions['session_type'].isin(config.BLOCK_SESSION_TYPES)]
    for _, mouse in biased.groupby('subject'):
        mouse = mouse.sort_values('session_n')
        ax.plot(mouse['session_n'], mouse['bias_shift'], '-o', ms=3, color=color)
    ax.axhline(0, color='k', lw=0.8)
    ax.set(xlabel='session number', ylabel='bias shift (% contrast)\nbias pL0.8 − pL0.2')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if biased['bias_shift'].notna().sum() == 0:
        _no_data(ax, 'no session with both biased blocks fitted')


def plot_psychometrics(df):
    """Psychometric figure of the sessions with extracted photometry (target-NM columns)."""
    df = df[df['has_photometry']]
    targets = order_target_nms(df['target_NM'])
    colors = target_nm_colors(targets)
    fig, axes = _columns(targets, 5)
    for j, target in enumerate(targets):
        sessions = df[df['target_NM'] == target]
        _curves_panel(axes[0, j], sessions, colors[target])
        _block_curves_panel(axes[1, j], sessions)
        _block_boxes(axes[2, j], sessions, 'bias', 'bias (% contrast)')
        _block_boxes(axes[3, j], sessions, 'threshold', 'threshold (% contrast)')
        _bias_shift_panel(axes[4, j], sessions, colors[target])
    fig.suptitle('Psychometric curves and parameters per block (sessions with photometry)', y=1.0)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# The tool
# ---------------------------------------------------------------------------
@dataclass
class TaskPerformanceResult:
    table: pd.DataFrame
    progression: pd.DataFrame
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)

    def summary(self):
        lines = [
            f'task_performance: {self.table["eid"].nunique()} sessions, '
            f'{self.table["subject"].nunique()} mice, '
            f'{self.table["target_NM"].nunique()} target-NMs'
        ]
        lines += [f'  {p}' for p in self.figures + self.tables]
        return '\n'.join(lines)


def run_task_performance(
    performance_fpath=config.PERFORMANCE_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    figure_dir=config.TASK_PERFORMANCE_FIGURES_DIR,
    results_dir=config.TASK_PERFORMANCE_DIR,
    formats=('svg', 'png'),
):
    """Build the task-performance tables and figures; returns a TaskPerformanceResult."""
    df = performance_by_target(pd.read_parquet(sessions_fpath), pd.read_parquet(performance_fpath))
    if df.empty:
        raise ValueError('no session of a valid target-NM in the catalog')
    progression = training_progression(df)
    result = TaskPerformanceResult(df, progression)
    result.tables += [
        util.write_csv(df, results_dir / 'performance_by_session.csv'),
        util.write_csv(progression, results_dir / 'training_progression.csv'),
    ]
    result.figures += save_figure_formats(
        plot_learning(df, progression), figure_dir / 'learning', formats
    )
    if df['has_photometry'].any():
        result.figures += save_figure_formats(
            plot_psychometrics(df), figure_dir / 'psychometrics', formats
        )
    return result
