"""Overview of the photometry QC metrics: distributions, target-NM differences, PCA, trends.

Input: ``data/qc_photometry.pqt`` (one row per eid x brain_region x band) joined with the
catalog (target-NM, subject, days since the subject's first session). Outputs:

- figures (``figures/qc_overview/``): ``histograms`` (every metric, GCaMP vs isosbestic),
  ``violins_{band}`` (every metric per target-NM), ``pca`` (scores coloured by target-NM
  and loadings of the GCaMP metrics), ``temporal_trends`` (every GCaMP metric against the
  day of recording, one line per recording site);
- tables (``results/qc_overview/``): ``qc_recordings.csv`` (the joined table),
  ``pca_scores.csv``, ``pca_loadings.csv`` and ``temporal_trends.csv`` (Spearman ρ of
  each metric with the day, per target-NM).
"""

import logging
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from iblnm import config, util
from iblnm.vis import order_target_nms, save_figure_formats, target_nm_colors

log = logging.getLogger(__name__)

QC_METRICS = config.QC_SLIDING_METRICS + config.QC_RAW_METRICS + config.QC_PREPROCESSING
METRIC_LABELS = {
    'n_unique_samples': 'unique samples (fraction)',
    'median_absolute_deviance': 'median absolute deviation (a.u.)',
    'percentile_distance': 'percentile distance (p75-p25)/p50',
    'percentile_asymmetry': 'percentile asymmetry',
    'ar_score': 'AR(1) coefficient',
    'n_early_samples': 'early frames (count)',
    'n_band_inversions': 'band inversions (count)',
    'n_dropped_frames': 'dropped frames (count)',
    'bleaching_tau': 'bleaching time constant τ (s)',
    'iso_correlation': 'GCaMP-isosbestic correlation (r²)',
}
BAND_COLORS = {'GCaMP': '#2ca02c', 'Isosbestic': '#7b3294'}
THRESHOLDS = {'n_unique_samples': config.N_UNIQUE_SAMPLES_THRESHOLD}
RECORDING_COLUMNS = [
    'eid',
    'brain_region',
    'target_NM',
    'subject',
    'NM',
    'session_type',
    'day_n',
    'session_n',
    'start_time',
]


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def recording_table(catalog):
    """One row per (eid, brain_region) of the catalog with its target-NM and session info."""
    cols = [c for c in RECORDING_COLUMNS if c in catalog or c in config.PARALLEL_LIST_COLUMNS]
    rec = util.validate_parallel_lists(catalog, verbose=False)
    rec = rec.explode(['brain_region', 'target_NM'])
    return rec.dropna(subset=['brain_region']).reindex(columns=cols).reset_index(drop=True)


def qc_with_recordings(qc, catalog):
    """QC rows joined with :func:`recording_table` on (eid, brain_region).

    Returns
    -------
    pandas.DataFrame
        The QC columns plus target_NM ('unknown' when the catalog has none), subject,
        NM, session_type, day_n, session_n and start_time.
    """
    rec = recording_table(catalog).drop_duplicates(['eid', 'brain_region'])
    df = qc.merge(rec, on=['eid', 'brain_region'], how='left')
    df['target_NM'] = df['target_NM'].fillna('unknown').astype(str)
    return df


def present_metrics(df, metrics=QC_METRICS):
    """Metrics that are columns of ``df`` with at least one finite value."""
    return [m for m in metrics if m in df and np.isfinite(df[m].astype(float)).any()]


def qc_pca(df, metrics=QC_METRICS, band='GCaMP', n_components=3):
    """PCA of the z-scored QC metrics of one band.

    Metrics that are constant or all-NaN are dropped; remaining NaNs are replaced by the
    metric's median. Returns ``(scores, loadings, explained)``: scores (n_rows, k) with
    the identifying columns, loadings (n_metrics, k) and the explained variance ratios (k,).
    """
    from sklearn.decomposition import PCA

    rows = df[df['band'] == band].reset_index(drop=True)
    values = rows[present_metrics(rows, metrics)].astype(float)
    values = values.fillna(values.median())
    values = values.loc[:, values.std() > 0]
    k = min(n_components, values.shape[1], len(values))
    if k < 2:
        raise ValueError(f'PCA needs >= 2 varying metrics and rows (got {values.shape})')
    z = (values - values.mean()) / values.std()
    pca = PCA(n_components=k).fit(z.to_numpy())
    pcs = [f'PC{i + 1}' for i in range(k)]
    scores = pd.DataFrame(pca.transform(z.to_numpy()), columns=pcs)
    ids = rows[['eid', 'brain_region', 'target_NM', 'subject']]
    scores = pd.concat([ids, scores], axis=1)
    loadings = pd.DataFrame(pca.components_.T, index=values.columns, columns=pcs)
    return scores, loadings, pca.explained_variance_ratio_


def temporal_trends(df, metrics=QC_METRICS, band='GCaMP'):
    """Spearman ρ of each metric with ``day_n`` per target-NM (and over all recordings).

    Returns
    -------
    pandas.DataFrame
        Columns target_NM ('all' for the pooled row), metric, n, rho, p_value.
    """
    rows = df[(df['band'] == band) & df['day_n'].notna()]
    out = []
    groups = [('all', rows)] + [(t, g) for t, g in rows.groupby('target_NM')]
    for target, group in groups:
        for metric in present_metrics(group, metrics):
            ok = group[[metric, 'day_n']].astype(float).dropna()
            rho, p = (np.nan, np.nan)
            if len(ok) >= 3 and ok[metric].nunique() > 1 and ok['day_n'].nunique() > 1:
                rho, p = stats.spearmanr(ok['day_n'], ok[metric])
            out.append(
                {
                    'target_NM': target,
                    'metric': metric,
                    'n': len(ok),
                    'rho': float(rho),
                    'p_value': float(p),
                }
            )
    return pd.DataFrame(out, columns=['target_NM', 'metric', 'n', 'rho', 'p_value'])


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def _grid(n_panels, n_cols=3, size=(3.6, 2.8)):
    n_rows = int(np.ceil(n_panels / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(size[0] * n_cols, size[1] * n_rows), squeeze=False
    )
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes.flat


def _threshold_line(ax, metric, vertical=True):
    if metric in THRESHOLDS:
        line = ax.axvline if vertical else ax.axhline
        line(THRESHOLDS[metric], color='k', ls='--', lw=1, label='QC threshold')


def plot_metric_histograms(df, metrics=QC_METRICS, bins=20):
    """One histogram per metric, GCaMP and isosbestic bands overlaid (counts of rows)."""
    metrics = present_metrics(df, metrics)
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        finite = df[metric].astype(float)
        edges = np.histogram_bin_edges(finite[np.isfinite(finite)], bins=bins)
        for band, color in BAND_COLORS.items():
            values = finite[(df['band'] == band) & np.isfinite(finite)]
            if len(values):
                ax.hist(values, bins=edges, color=color, alpha=0.25)
                ax.hist(
                    values,
                    bins=edges,
                    color=color,
                    histtype='step',
                    lw=1.6,
                    label=f'{band} (n={len(values)})',
                )
        _threshold_line(ax, metric)
        ax.set(title=metric, xlabel=METRIC_LABELS.get(metric, metric), ylabel='recordings')
        ax.ticklabel_format(axis='x', style='sci', scilimits=(-3, 4))
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle('Photometry QC metrics: distributions per band', y=1.0)
    fig.tight_layout()
    return fig


def plot_metric_violins(df, band='GCaMP', metrics=QC_METRICS):
    """One panel per metric: a violin per target-NM (points: recordings) for one band."""
    rows = df[df['band'] == band]
    metrics = present_metrics(rows, metrics)
    targets = order_target_nms(rows['target_NM'])
    colors = target_nm_colors(targets)
    fig, axes = _grid(len(metrics), size=(max(3.6, 0.55 * len(targets) + 1.5), 3.0))
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        data = [rows.loc[rows['target_NM'] == t, metric].astype(float).dropna() for t in targets]
        for i, values in enumerate(data):
            if values.nunique() > 1:
                parts = ax.violinplot(values, positions=[i], showextrema=False, widths=0.8)
                for body in parts['bodies']:
                    body.set(facecolor=colors[targets[i]], alpha=0.45)
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, len(values)),
                values,
                s=9,
                color=colors[targets[i]],
                edgecolor='k',
                linewidth=0.3,
                zorder=3,
            )
        _threshold_line(ax, metric, vertical=False)
        ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 4))
        ax.set_xticks(range(len(targets)), targets, rotation=45, ha='right')
        ax.set(title=metric, ylabel=METRIC_LABELS.get(metric, metric), xlabel='target-NM')
    fig.suptitle(f'{band} QC metrics per target-NM (points: recordings)', y=1.0)
    fig.tight_layout()
    return fig


def plot_qc_pca(scores, loadings, explained):
    """PC1-PC2 scores coloured by target-NM, and the loadings of PC1 and PC2."""
    fig, (ax_s, ax_l) = plt.subplots(1, 2, figsize=(12, 4.8), width_ratios=(1.2, 1))
    colors = target_nm_colors(scores['target_NM'])
    for target, color in colors.items():
        sel = scores['target_NM'] == target
        ax_s.scatter(
            scores.loc[sel, 'PC1'],
            scores.loc[sel, 'PC2'],
            color=color,
            s=25,
            edgecolor='k',
            linewidth=0.3,
            label=f'{target} (n={sel.sum()})',
        )
    ax_s.set(
        xlabel=f'PC1 ({100 * explained[0]:.0f} % variance)',
        ylabel=f'PC2 ({100 * explained[1]:.0f} % variance)',
        title='GCaMP recordings in QC-metric space',
    )
    ax_s.legend(
        title='target-NM', fontsize=8, frameon=False, loc='upper left', bbox_to_anchor=(1.01, 1)
    )
    y = np.arange(len(loadings))
    ax_l.barh(y - 0.2, loadings['PC1'], height=0.4, color='#4c72b0', label='PC1')
    ax_l.barh(y + 0.2, loadings['PC2'], height=0.4, color='#dd8452', label='PC2')
    ax_l.set_yticks(y, loadings.index)
    ax_l.invert_yaxis()
    ax_l.axvline(0, color='k', lw=0.8)
    ax_l.set(xlabel='loading (z-scored metric)', title='Loadings')
    ax_l.legend(frameon=False)
    fig.suptitle('PCA of the photometry QC metrics (GCaMP band)')
    fig.tight_layout()
    return fig


def plot_temporal_trends(df, metrics=QC_METRICS, band='GCaMP'):
    """Every metric against days since the subject's first session, one line per site."""
    rows = df[(df['band'] == band) & df['day_n'].notna()]
    metrics = present_metrics(rows, metrics)
    colors = target_nm_colors(rows['target_NM'])
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        for (_, _, target), site in rows.groupby(['subject', 'brain_region', 'target_NM']):
            site = site.sort_values('day_n')
            ax.plot(
                site['day_n'],
                site[metric],
                '-o',
                ms=3,
                lw=1,
                color=colors[target],
                alpha=0.8,
                label=target,
            )
        _threshold_line(ax, metric, vertical=False)
        ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 4))
        ax.set(
            title=metric,
            xlabel='days since first session',
            ylabel=METRIC_LABELS.get(metric, metric),
        )
    handles = [plt.Line2D([], [], color=c, marker='o', label=t) for t, c in colors.items()]
    fig.legend(
        handles=handles,
        title='target-NM (one line per subject and site)',
        loc='upper left',
        bbox_to_anchor=(1.0, 0.95),
        frameon=False,
    )
    fig.suptitle(f'{band} QC metrics across days', y=1.0)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# The tool
# ---------------------------------------------------------------------------
@dataclass
class QCOverviewResult:
    table: pd.DataFrame
    trends: pd.DataFrame
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)

    def summary(self):
        n_sites = self.table[['eid', 'brain_region']].drop_duplicates().shape[0]
        lines = [
            f'qc_overview: {len(self.table)} QC rows, {n_sites} recordings, '
            f'{self.table["eid"].nunique()} sessions'
        ]
        lines += [f'  {p}' for p in self.figures + self.tables]
        return '\n'.join(lines)


def run_qc_overview(
    qc_fpath=config.QCPHOTOMETRY_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    figure_dir=config.QC_OVERVIEW_FIGURES_DIR,
    results_dir=config.QC_OVERVIEW_DIR,
    formats=('svg', 'png'),
):
    """Build the QC overview figures and tables; returns a :class:`QCOverviewResult`."""
    qc = pd.read_parquet(qc_fpath)
    if qc.empty:
        raise ValueError(f'{qc_fpath} holds no QC rows')
    df = qc_with_recordings(qc, pd.read_parquet(sessions_fpath))
    trends = temporal_trends(df)
    result = QCOverviewResult(df, trends)
    figures = {'histograms': plot_metric_histograms(df)}
    for band in BAND_COLORS:
        if (df['band'] == band).any():
            figures[f'violins_{band}'] = plot_metric_violins(df, band)
    try:
        scores, loadings, explained = qc_pca(df)
        figures['pca'] = plot_qc_pca(scores, loadings, explained)
        result.tables += [
            util.write_csv(scores, results_dir / 'pca_scores.csv'),
            util.write_csv(
                loadings.rename_axis('metric').reset_index(), results_dir / 'pca_loadings.csv'
            ),
        ]
    except ValueError as error:
        log.warning(f'qc_overview: no PCA ({error})')
    figures['temporal_trends'] = plot_temporal_trends(df)
    for name, fig in figures.items():
        result.figures += save_figure_formats(fig, figure_dir / name, formats)
    result.tables += [
        util.write_csv(df, results_dir / 'qc_recordings.csv'),
        util.write_csv(trends, results_dir / 'temporal_trends.csv'),
    ]
    return result
