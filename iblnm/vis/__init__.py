"""Plotting: data in, a matplotlib Axes or Figure out; files are saved by callers.

This module holds the shared pieces (colours, target-NM order, saving, the dataset-overview
plots); :mod:`iblnm.vis.responses` and :mod:`iblnm.vis.encoding` hold the figures of those
analyses.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, to_hex, to_rgb
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from iblnm import config
from iblnm.util import atomic_write

# ---------------------------------------------------------------------------
# Colours, order and saving shared by every figure
# ---------------------------------------------------------------------------
_SHADES = (0.0, 0.35, -0.3, 0.55)  # > 0 towards white, < 0 towards black


def order_target_nms(labels):
    """Unique labels in the order of ``config.VALID_TARGETNMS`` (unknown ones last, sorted)."""
    unique = sorted({str(label) for label in labels})
    return sorted(unique, key=lambda t: (config.TARGETNM2POSITION.get(t, 99), t))


def target_nm_color(label):
    """Hex colour of a target-NM: its NM's colour, shaded by the region's rank within the NM."""
    nm = str(label).rsplit('-', 1)[-1]
    base = np.array(to_rgb(config.NM_COLORS.get(nm, '#7f7f7f')))
    same_nm = [t for t in config.VALID_TARGETNMS if t.endswith(f'-{nm}')]
    rank = same_nm.index(label) if label in same_nm else 0
    shade = _SHADES[rank % len(_SHADES)]
    target = np.ones(3) if shade > 0 else np.zeros(3)
    return to_hex(base + abs(shade) * (target - base))


_OTHER_GREYS = ('#7f7f7f', '#c7c7c7', '#4d4d4d', '#a5a5a5', '#262626')


def target_nm_colors(labels):
    """{label: hex colour}: valid target-NMs by :func:`target_nm_color`, others in greys."""
    ordered = order_target_nms(labels)
    valid = [t for t in ordered if t in config.VALID_TARGETNMS]
    other = [t for t in ordered if t not in config.VALID_TARGETNMS]
    colors = {t: target_nm_color(t) for t in valid}
    colors.update({t: _OTHER_GREYS[i % len(_OTHER_GREYS)] for i, t in enumerate(other)})
    return colors


def save_figure_formats(fig, stem, formats=('svg', 'png')):
    """Save ``fig`` as ``{stem}.{fmt}`` for every format, each file written atomically.

    The one figure saver of the package (``config.FIGURE_DPI``, tight bounding box).

    Parameters
    ----------
    fig : matplotlib.figure.Figure or None
        None (no figure to draw) writes nothing.
    stem : path
        File path without the format suffix (``figures/qc_overview/pca``).
    formats : sequence of str

    Returns
    -------
    list of pathlib.Path
        The files written; the figure is closed.
    """
    if fig is None:
        return []
    stem = Path(stem)
    # The tight bounding box is laid out once, not once per format (saves a layout pass each).
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox().padded(plt.rcParams['savefig.pad_inches'])
    paths = []
    for fmt in formats:
        path = stem.with_name(f'{stem.name}.{fmt}')

        def write(tmp, fmt=fmt):
            fig.savefig(tmp, format=fmt, dpi=config.FIGURE_DPI, bbox_inches=bbox)

        paths.append(atomic_write(path, write, suffix=f'.{fmt}.tmp'))
    plt.close(fig)
    return paths


SESSION_TYPE_COLORS = {
    'habituation': '#bdbdbd',
    'training': '#6baed6',
    'biased': '#fd8d3c',
    'ephys': '#e6550d',
    'misc': '#756bb1',
}


def session_overview_matrix(df, columns='session_n', highlight=None, ax=None, title=None):
    """Subject x session grid coloured by session type.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``subject``, ``session_type`` and ``columns`` (``session_n`` or ``day_n``).
    highlight : pandas.Series of bool, optional
        Sessions drawn opaque; the others at 30 % opacity (e.g. "has raw data").
    """
    if df.duplicated(['subject', columns]).any():
        raise ValueError(f'more than one session per (subject, {columns}) cell')
    subjects = sorted(df['subject'].unique())
    n_cols = int(df[columns].max()) + 1 if len(df) else 1
    types = list(SESSION_TYPE_COLORS)
    grid = np.full((len(subjects), n_cols), np.nan)
    alpha = np.zeros_like(grid)
    for i, (_, row) in enumerate(df.iterrows()):
        r, c = subjects.index(row['subject']), int(row[columns])
        stype = row['session_type'] if row['session_type'] in types else 'misc'
        grid[r, c] = types.index(stype)
        alpha[r, c] = 1.0 if highlight is None or bool(highlight.iloc[i]) else 0.3
    ax = ax or plt.subplots(figsize=(max(4, 0.25 * n_cols + 2), max(2, 0.3 * len(subjects) + 1)))[1]
    cmap = ListedColormap([SESSION_TYPE_COLORS[t] for t in types])
    ax.imshow(
        grid,
        cmap=cmap,
        vmin=-0.5,
        vmax=len(types) - 0.5,
        alpha=np.nan_to_num(alpha),
        aspect='auto',
        interpolation='nearest',
    )
    ax.set_yticks(range(len(subjects)), subjects)
    if len(df):  # session numbers start at 1, days at 0
        ax.set_xlim(int(df[columns].min()) - 0.5, n_cols - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('session number' if columns == 'session_n' else 'days since first session')
    ax.set_ylabel('subject')
    present = [t for t in types if t in set(df['session_type'])]
    ax.legend(
        handles=[Patch(color=SESSION_TYPE_COLORS[t], label=t) for t in present],
        loc='upper left',
        bbox_to_anchor=(1.01, 1),
        frameon=False,
        title='session type',
    )
    if title:
        ax.set_title(title)
    return ax


def count_barplot(counts, xlabel, title, ax=None, colors=None):
    """Horizontal bar plot of counts (a pandas Series) with the count printed on each bar."""
    ax = ax or plt.subplots(figsize=(6, max(2, 0.35 * len(counts) + 1)))[1]
    colors = colors or ['#4c72b0'] * len(counts)
    ax.barh(range(len(counts)), counts.to_numpy(), color=colors)
    ax.set_yticks(range(len(counts)), [str(i) for i in counts.index])
    for i, n in enumerate(counts.to_numpy()):
        ax.text(n, i, f' {n}', va='center')
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return ax


VERDICT_COLORS = {'PASS': '#2ca02c', 'WARNING': '#ff7f0e', 'FAIL': '#d62728'}


def qc_verdict_overview(by_verdict, by_reason, title='QC verdicts per target-NM'):
    """Recordings per target-NM by QC verdict (stacked bars) and by reason (counts).

    Parameters
    ----------
    by_verdict : pandas.DataFrame
        Index target-NM, columns PASS / WARNING / FAIL (counts of recordings).
    by_reason : pandas.DataFrame
        Long table with columns target_NM, reason, n_recordings (a recording counts once
        per reason that fired).

    Returns
    -------
    matplotlib.figure.Figure
    """
    targets = list(by_verdict.index)
    reasons = sorted(set(by_reason['reason'])) if len(by_reason) else []
    fig, (ax_v, ax_r) = plt.subplots(
        1,
        2,
        figsize=(12, max(3, 0.45 * len(targets) + 1.8)),
        gridspec_kw={'width_ratios': [1, max(1, 0.35 * len(reasons))]},
    )
    left = np.zeros(len(targets))
    for verdict in config.QC_VERDICTS:
        counts = by_verdict[verdict].to_numpy() if verdict in by_verdict else np.zeros(len(targets))
        ax_v.barh(
            range(len(targets)),
            counts,
            left=left,
            color=VERDICT_COLORS[verdict],
            label=f'{verdict} (n={int(counts.sum())})',
        )
        left += counts
    ax_v.set_yticks(range(len(targets)), targets)
    ax_v.invert_yaxis()
    ax_v.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_v.set_xlabel('recordings')
    ax_v.set_title(f'{title} (n={int(left.sum())} recordings)')
    ax_v.legend(loc='upper center', bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False, fontsize=8)
    matrix = np.zeros((len(targets), len(reasons)))
    for row in by_reason.itertuples():
        if row.target_NM in targets:
            matrix[targets.index(row.target_NM), reasons.index(row.reason)] += row.n_recordings
    ax_r.imshow(
        matrix if reasons else np.zeros((len(targets), 1)),
        cmap='Reds',
        aspect='auto',
        vmin=0,
        vmax=max(1, matrix.max()) if reasons else 1,
    )
    for (i, j), n in np.ndenumerate(matrix):
        ax_r.text(
            j,
            i,
            f'{int(n)}',
            ha='center',
            va='center',
            fontsize=8,
            color='white' if n > matrix.max() / 2 else 'black',
        )
    ax_r.set_xticks(range(len(reasons)), reasons, rotation=45, ha='right')
    ax_r.set_yticks(range(len(targets)), targets)
    ax_r.set_xlabel('reason (rule that fired)')
    ax_r.set_title('recordings per reason' if reasons else 'no rule fired')
    fig.tight_layout()
    return fig


def target_overview_barplot(recordings, ax=None):
    """Complete recordings per target-NM (``recordings``: one row per recording)."""
    counts = recordings['target_NM'].value_counts().sort_index()
    colors = [config.NM_COLORS.get(t.split('-')[-1], '#4c72b0') for t in counts.index]
    return count_barplot(
        counts, 'complete recordings', 'Complete recordings per target', ax, colors
    )


def mouse_overview_barplot(recordings, ax=None):
    """Complete recordings per mouse, labelled 'subject (target-NMs)'."""
    grouped = recordings.groupby('subject')
    counts = grouped.size()
    targets = grouped['target_NM'].agg(lambda t: ', '.join(sorted(set(t))))
    counts.index = [f'{s} ({targets[s]})' for s in counts.index]
    return count_barplot(counts, 'complete recordings', 'Complete recordings per mouse', ax)
