"""The analysis tools on the ``small`` preset: qc_overview, task_performance, example_session
and the session viewer (driven headless through its widgets)."""

import html
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from iblnm import config, gui, h5, task  # noqa: E402
from iblnm.analysis import lmm  # noqa: E402
from iblnm.simulate import load_manifest  # noqa: E402
from iblnm.workflows import qc_overview, task_performance  # noqa: E402

SCRIPTS = config.PACKAGE_DIR.parent / 'scripts'


@pytest.fixture(scope='module')
def tool_root(tmp_path_factory, small_pipeline):
    """An output root sharing the pipeline's metadata/ and data/ (figures/results are new)."""
    root = tmp_path_factory.mktemp('tools_root')
    for name in ('metadata', 'data'):
        (root / name).symlink_to(small_pipeline / name)
    return root


def run_script(name, root, cache, *args):
    env = {
        **os.environ,
        'IBLNM_ROOT': str(root),
        'IBLNM_ONE_CACHE': str(cache),
        'MPLBACKEND': 'Agg',
    }
    env.pop('IBLNM_ONE_MODE', None)
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / f'{name}.py'), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def assert_not_blank(png):
    """An image with contrast (pixel SD) and many distinct colours."""
    image = plt.imread(png)[..., :3]
    assert image.std() > 0.05, png
    colours = np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50, (png, len(colours))


def svg_texts(svg):
    """Every text matplotlib drew in an SVG figure (titles, labels, ticks, legend entries), one
    string per line of text: matplotlib writes each text as a comment before its glyphs."""
    return [html.unescape(t) for t in re.findall(r'<!-- (.*?) -->', Path(svg).read_text())]


def legend_counts(texts, pattern):
    return Counter(t for t in texts if re.fullmatch(pattern, t))


# ---------------------------------------------------------------------------
# QC overview
# ---------------------------------------------------------------------------
def test_qc_pca_finds_the_shared_axis():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=200)
    df = pd.DataFrame(
        {
            'band': 'GCaMP',
            'eid': 'e',
            'brain_region': 'VTA',
            'target_NM': 'VTA-DA',
            'subject': 's',
            'ar_score': latent + 0.05 * rng.normal(size=200),
            'bleaching_tau': 2 * latent + 0.1 * rng.normal(size=200),
            'iso_correlation': rng.normal(size=200),
            'n_early_samples': 0,
        }
    )
    scores, loadings, explained = qc_overview.qc_pca(df)
    assert 'n_early_samples' not in loadings.index  # constant: dropped
    assert explained[0] > 0.6
    assert abs(loadings.loc['iso_correlation', 'PC1']) < 0.2
    assert len(scores) == 200 and {'eid', 'target_NM', 'PC1', 'PC2'} <= set(scores)


def test_violins_have_one_tick_per_target():
    df = pd.DataFrame(
        {
            'band': 'GCaMP',
            'target_NM': ['VTA-DA', 'LC-NE', 'VTA-DA', 'DR-5HT'],
            'ar_score': [0.9, 0.8, 0.95, 0.7],
        }
    )
    fig = qc_overview.plot_metric_violins(df, metrics=['ar_score'])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ['VTA-DA', 'DR-5HT', 'LC-NE']  # config order
    plt.close(fig)


def test_qc_overview_script(small_cache, small_pipeline, tool_root):
    run_script('qc_overview', tool_root, small_cache)
    figures = tool_root / 'figures' / 'qc_overview'
    for name in ('histograms', 'violins_GCaMP', 'violins_Isosbestic', 'pca', 'temporal_trends'):
        assert (figures / f'{name}.svg').exists()
        assert_not_blank(figures / f'{name}.png')
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    results = tool_root / 'results' / 'qc_overview'
    table = pd.read_csv(results / 'qc_recordings.csv')
    assert len(table) == len(qc) and (table['target_NM'] != 'unknown').all()
    metrics = qc_overview.present_metrics(table, qc_overview.QC_METRICS)
    labels = [qc_overview.METRIC_LABELS.get(m, m) for m in metrics]

    # histograms: a panel per metric (title, x label with its unit), one legend entry per band
    # with the number of its finite values
    texts = svg_texts(figures / 'histograms.svg')
    assert 'Photometry QC metrics: distributions per band' in texts
    assert set(metrics) | set(labels) <= set(texts) and texts.count('recordings') == len(metrics)
    finite = {m: np.isfinite(table[m].astype(float)) for m in metrics}
    n_band = Counter(
        f'{band} (n={n})'
        for m in metrics
        for band in qc_overview.BAND_COLORS
        if (n := int((finite[m] & (table['band'] == band)).sum()))
    )
    assert legend_counts(texts, r'(GCaMP|Isosbestic) \(n=\d+\)') == n_band

    # violins: every target-NM of the band on the x axis of every panel
    gcamp = table[table['band'] == 'GCaMP']
    texts = svg_texts(figures / 'violins_GCaMP.svg')
    for target in gcamp['target_NM'].unique():
        assert texts.count(target) == len(qc_overview.present_metrics(gcamp, metrics)), target
    assert texts.count('target-NM') == len(qc_overview.present_metrics(gcamp, metrics))

    # PCA: a legend entry per target-NM with the number of its scored recordings
    loadings = pd.read_csv(results / 'pca_loadings.csv')
    assert set(loadings['metric']) <= set(qc_overview.QC_METRICS)
    scores = pd.read_csv(results / 'pca_scores.csv')
    texts = svg_texts(figures / 'pca.svg')
    expected = Counter(f'{t} (n={n})' for t, n in scores['target_NM'].value_counts().items())
    assert legend_counts(texts, r'\S+ \(n=\d+\)') == expected
    assert sum(bool(re.fullmatch(r'PC[12] \(\d+ % variance\)', t)) for t in texts) == 2

    # temporal trends: Spearman ρ of each metric with the day, recomputed from the table
    trends = pd.read_csv(results / 'temporal_trends.csv')
    assert list(trends.columns) == ['target_NM', 'metric', 'n', 'rho', 'p_value']
    assert set(trends['target_NM']) == {'all', *gcamp['target_NM']}
    for row in trends.itertuples():
        rows = gcamp if row.target_NM == 'all' else gcamp[gcamp['target_NM'] == row.target_NM]
        ok = rows[['day_n', row.metric]].astype(float).dropna()
        assert row.n == len(ok), row
        if ok[row.metric].nunique() > 1 and ok['day_n'].nunique() > 1 and len(ok) >= 3:
            rho, p = stats.spearmanr(ok['day_n'], ok[row.metric])
            assert (row.rho, row.p_value) == pytest.approx((rho, p), abs=1e-12), row
        else:
            assert np.isnan(row.rho), row
    assert trends['rho'].notna().sum() > 0
    texts = svg_texts(figures / 'temporal_trends.svg')
    assert texts.count('days since first session') == len(
        qc_overview.present_metrics(gcamp, metrics)
    )


def test_temporal_trends_rank_correlation_with_the_day():
    day = np.arange(8.0)
    df = pd.DataFrame(
        {
            'band': 'GCaMP',
            'target_NM': ['VTA-DA'] * 4 + ['LC-NE'] * 4,
            'day_n': day,
            'ar_score': np.exp(day),  # monotone, not linear
            'bleaching_tau': -day,
            'n_unique_samples': 0.5,
        }
    )
    df.loc[6, 'bleaching_tau'] = np.nan  # not counted
    trends = qc_overview.temporal_trends(df).set_index(['target_NM', 'metric'])
    assert trends.loc[('all', 'ar_score'), 'rho'] == pytest.approx(1.0)
    assert trends.loc[('VTA-DA', 'bleaching_tau'), 'rho'] == pytest.approx(-1.0)
    assert trends.loc[('LC-NE', 'bleaching_tau'), 'n'] == 3
    assert np.isnan(trends.loc[('all', 'n_unique_samples'), 'rho'])  # constant metric
    shuffled = df.assign(ar_score=[3.0, 1, 4, 1, 5, 9, 2, 6])
    rho = qc_overview.temporal_trends(shuffled).set_index(['target_NM', 'metric'])
    assert rho.loc[('all', 'ar_score'), 'rho'] == pytest.approx(
        stats.spearmanr(day, shuffled['ar_score'])[0]
    )


# ---------------------------------------------------------------------------
# Responses analysis and its --plot mode
def test_responses_script_and_redraw_from_saved_tables(small_cache, tool_root, tmp_path):
    out = run_script(
        'responses', tool_root, small_cache, '--n-boot', '50', '--n-permutations', '50'
    ).stdout
    assert 'responses:' in out and 'trial rows' in out
    tables = tool_root / 'results' / 'responses'
    for name in (
        'responses.pqt',
        'mean_traces.pqt',
        'response_matrix.pqt',
        'lmm_coefficients.pqt',
        'lmm_coefficients_by_NM.csv',
        'flmm_coefficients.pqt',
        'flmm_intervals.csv',
        'kernels.pqt',
        'lmm_coefficients_kernel_by_NM.csv',
    ):
        assert (tables / name).exists(), name
    magnitudes = pd.read_parquet(tables / 'responses.pqt')
    assert {'response_early', 'response_late', 'response_outcome'} <= set(magnitudes.columns)
    kernels = pd.read_parquet(tables / 'kernels.pqt')
    assert set(kernels['condition']) == {'mean', 'contrast', 'side', 'reward'}
    log = pd.read_parquet(tables / 'responses_log.pqt')  # the analysis' errors, next to it
    assert list(log.columns) == ['eid', 'error_type', 'error_message', 'traceback']
    if len(log):
        assert 'responses_log.pqt' in out
    means = pd.read_csv(tables / 'lmm_marginal_means.csv')
    coefficients = pd.read_csv(tables / 'lmm_coefficients.csv')
    # per fitted group: 2 reward + 5 contrast levels, + 2 side levels when the model has a
    # side term (not for a midline region such as the DR: neither contra nor ipsi)
    groups = coefficients.groupby(['target_NM', 'event'])['term']
    expected = sum(9 if (terms == 'side').any() else 7 for _, terms in groups)
    assert len(means) == expected
    midline = means[means['target_NM'].str.startswith(('DR', 'MR'))]
    assert 'side' not in set(midline['factor'])
    figures = sorted(p.name for p in (tool_root / 'figures' / 'responses').iterdir())
    assert {'mean_traces.png', 'lmm_coefficients.svg', 'lmm_marginal_means.png'} <= set(figures)
    texts = svg_texts(tool_root / 'figures' / 'responses' / 'lmm_marginal_means.svg')
    for target, rows in coefficients.groupby('target_NM'):  # legend: each fit's n
        n_mice = rows['n_subjects'].max()
        mice = 'mouse' if n_mice == 1 else 'mice'
        ols = '; OLS' if (rows['kind'] == 'ols').any() else ''
        assert f'{target} ({n_mice} {mice}, up to {rows["n_obs"].max()} trials{ols})' in texts
    targets = set(kernels['target_NM'])
    assert {f'kernels_{t}.png' for t in targets} <= set(figures)  # one figure per target-NM
    # mean traces: a row per target-NM, a legend entry per outcome with its n
    traces = pd.read_parquet(tables / 'mean_traces.pqt')
    texts = svg_texts(tool_root / 'figures' / 'responses' / 'mean_traces.svg')
    expected = Counter()
    for (_, _, outcome), rows in traces.groupby(['target_NM', 'event', 'feedbackType']):
        per_recording = rows.groupby(['eid', 'fiber_idx'])['n_trials'].max()
        name = {1: 'correct', -1: 'incorrect'}[outcome]
        n_mice = rows['subject'].nunique()
        expected[
            f'{name}: {len(per_recording)} rec, {n_mice} mice, {per_recording.sum()} trials'
        ] += 1
    assert legend_counts(texts, r'(correct|incorrect): \d+ rec, \d+ mice, \d+ trials') == expected
    assert set(traces['target_NM']) <= set(texts) and texts.count('response (z)') == len(
        set(traces['target_NM'])
    )
    summary = pd.read_csv(tables / 'wheel_lmm_summary.csv')  # one mouse per NM: no fits here
    assert list(summary.columns) == lmm.WHEEL_LMM_COLUMNS
    kinematics = pd.read_parquet(tables / 'peak_velocity.pqt')
    eid = kinematics['eid'].iloc[0]
    data = h5.load_h5(tool_root / 'data' / 'sessions' / f'{eid}.h5', groups=['trials', 'wheel'])
    one_session = kinematics[kinematics['eid'] == eid]
    speed = np.abs(data['wheel']['velocity']).astype(float)
    np.testing.assert_allclose(one_session['peak_velocity'], np.nanmax(speed, axis=1), rtol=1e-6)
    trials = data['trials']
    np.testing.assert_allclose(
        one_session['reaction_time'], trials['firstMovement_times'] - trials['stimOn_times']
    )

    # --plot: a root with the tables and the catalog only; no session HDF5 file to read
    replot = tmp_path / 'replot'
    (replot / 'metadata').mkdir(parents=True)
    shutil.copy(tool_root / 'metadata' / 'sessions.pqt', replot / 'metadata')
    shutil.copytree(tables, replot / 'results' / 'responses')
    out = run_script('responses', replot, small_cache, '--plot', '--n-boot', '50').stdout
    assert 'redrawn' in out
    redrawn = sorted(p.name for p in (replot / 'figures' / 'responses').iterdir())
    assert redrawn == figures
    assert_not_blank(replot / 'figures' / 'responses' / 'mean_traces.png')
    for name in (n for n in figures if n.endswith('.png')):  # same tables, same pixels
        original = plt.imread(tool_root / 'figures' / 'responses' / name)
        np.testing.assert_array_equal(
            plt.imread(replot / 'figures' / 'responses' / name), original, err_msg=name
        )


# ---------------------------------------------------------------------------
# Task performance
# ---------------------------------------------------------------------------
def test_psychometric_curve_midpoint_and_asymptotes():
    fit = {'bias': 10.0, 'threshold': 20.0, 'lapse_left': 0.1, 'lapse_right': 0.2}
    p = task_performance.psychometric_curve(fit, [-1000.0, 10.0, 1000.0])
    np.testing.assert_allclose(p, [0.1, 0.1 + 0.7 / 2, 0.8], atol=1e-6)
    assert np.isnan(task_performance.psychometric_curve({'bias': np.nan})).all()


def _manifest_progression(manifest):
    """{(target_NM, subject): sessions_to_biased} from the generator's training histories."""
    sessions = pd.DataFrame(
        [
            {
                'subject': s['subject'],
                'session_type': s['session_type'],
                'start_time': s['start_time'],
                'targets': [f['target_NM'] for f in s['fibers']],
            }
            for s in manifest['sessions']
        ]
    )
    counts = task.count_sessions_to_stage(sessions)
    return counts.set_index('subject')['sessions_to_biased']


def test_task_performance_script(small_cache, small_pipeline, tool_root):
    run_script('task_performance', tool_root, small_cache)
    figures = tool_root / 'figures' / 'task_performance'
    for name in ('learning', 'psychometrics'):
        assert (figures / f'{name}.svg').exists()
        assert_not_blank(figures / f'{name}.png')
    results = tool_root / 'results' / 'task_performance'
    table = pd.read_csv(results / 'performance_by_session.csv')
    targets = table['target_NM'].unique()
    texts = svg_texts(figures / 'learning.svg')
    assert 'Training progression and 50/50-block psychometrics per target-NM' in texts
    assert all(t in texts for t in targets)  # one column per target-NM
    assert texts.count('fraction correct') == len(targets)
    assert {'mouse with photometry', 'mouse without', 'session number'} <= set(texts)
    # psychometrics: per target-NM and block, n = sessions with photometry and a fit
    texts = svg_texts(figures / 'psychometrics.svg')
    assert texts.count('signed contrast (%)') == 2 * len(targets)
    assert texts.count('P(rightward choice)') == 2 * len(targets)
    photometry = table[table['has_photometry'].astype(bool)]
    fitted = {
        b: photometry[[f'psych_{b}_{k}' for k in task_performance.PSYCH_PARAMS]].notna().all(axis=1)
        for b in task_performance.BLOCK_LABELS
    }
    expected = Counter(
        f'{task_performance.BLOCK_LABELS[b]} (n={n})'
        for _, sessions in photometry.groupby('target_NM')
        for b in task_performance.BLOCK_LABELS
        if (n := int(fitted[b][sessions.index].sum()))
    )
    assert legend_counts(texts, r'pL .* \(n=\d+\)') == expected
    means = Counter(
        f'mean of {n} sessions' for n in photometry[fitted['50']].groupby('target_NM').size()
    )
    assert legend_counts(texts, r'mean of \d+ sessions') == means
    perf = pd.read_parquet(small_pipeline / 'data' / 'performance.pqt').set_index('eid')
    merged = table.dropna(subset=['fraction_correct']).set_index('eid')
    np.testing.assert_allclose(
        merged['fraction_correct'], perf.loc[merged.index, 'fraction_correct']
    )
    assert table['target_NM'].isin(config.VALID_TARGETNMS).all()
    progression = pd.read_csv(results / 'training_progression.csv')
    truth = _manifest_progression(load_manifest(small_cache))
    for row in progression.itertuples():
        assert row.sessions_to_biased == truth[row.subject], row  # one target-NM per mouse here


# ---------------------------------------------------------------------------
# Example session
# ---------------------------------------------------------------------------
def test_example_session_script(small_cache, tool_root):
    result = run_script('example_session', tool_root, small_cache)
    assert 'PhotometrySession(' in result.stdout
    pngs = sorted((tool_root / 'figures' / 'example_session').glob('*.png'))
    assert {p.stem.split('_', 1)[1] for p in pngs} == {'signal', 'feedback', 'psychometric'}
    for png in pngs:
        assert_not_blank(png)
    prefix = pngs[0].stem.split('_', 1)[0]
    catalog = pd.read_parquet(tool_root / 'metadata' / 'sessions.pqt')
    row = catalog[catalog['eid'].str.startswith(prefix)].iloc[0]
    data = h5.load_h5(tool_root / 'data' / 'sessions' / f'{row["eid"]}.h5', groups=['trials'])
    trials = data['trials']
    figures = tool_root / 'figures' / 'example_session'
    texts = svg_texts(figures / f'{prefix}_feedback.svg')
    assert f'Feedback responses by outcome — {row["subject"]}' in ' '.join(texts)
    assert {'time from feedback (s)', 'baseline-subtracted z-score'} <= set(texts)
    n_regions = len(row['brain_region'])
    assert texts.count(f'correct (n={int((trials["feedbackType"] == 1).sum())})') == n_regions
    assert texts.count(f'incorrect (n={int((trials["feedbackType"] == -1).sum())})') == n_regions
    texts = svg_texts(figures / f'{prefix}_psychometric.svg')
    assert f'data ({int(trials["choice"].isin([-1, 1]).sum())} go trials)' in texts
    assert 'P(rightward choice)' in texts
    texts = svg_texts(figures / f'{prefix}_signal.svg')
    assert texts.count('z-score') == 2 and texts.count('time (s)') == 2
    assert {'stimOn', 'firstMovement', 'feedback'} <= set(texts)  # the event legend


# ---------------------------------------------------------------------------
# Session viewer
# ---------------------------------------------------------------------------
def test_viewer_helpers():
    assert gui.order_events(['feedback_times', 'x', 'stimOn_times']) == [
        'stimOn_times',
        'feedback_times',
        'x',
    ]
    assert gui.heatmap_limits(np.array([[0.0, 2.0], [np.nan, -2.0]]))[1] == pytest.approx(
        3 * np.nanstd([0, 2, -2])
    )
    assert gui.heatmap_limits(np.full((2, 2), np.nan)) == (-1e-6, 1e-6)
    trials = pd.DataFrame(
        {
            'feedbackType': [1, -1],
            'contrast': [100.0, 6.25],
            'stim_side': ['left', 'right'],
            'choice': [-1, 0],
            'probabilityLeft': [0.8, 0.2],
        }
    )
    assert list(gui.condition_labels(trials, 'feedback')) == ['correct', 'incorrect']
    assert list(gui.condition_labels(trials, 'contrast')) == ['100 %', '6.25 %']
    assert list(gui.condition_labels(trials, 'block')) == ['pL 0.8', 'pL 0.2']
    fig, ax = plt.subplots()
    spans = [p.get_x() for p in gui._shade_response_windows(ax)]
    assert spans == [w[0] for w in config.RESPONSE_WINDOWS.values()]
    plt.close(fig)


def test_find_session():
    catalog = pd.DataFrame(
        {
            'eid': ['a', 'b', 'c'],
            'subject': ['m1', 'm1', 'm2'],
            'start_time': ['2024-01-02', '2024-01-01', '2024-01-01'],
        }
    )
    assert gui.find_session(catalog, subject='m1', index=-1)['eid'] == 'a'
    assert gui.find_session(catalog, subject='m1', index=0)['eid'] == 'b'
    assert gui.find_session(catalog, eid='c')['subject'] == 'm2'
    for kwargs in ({'eid': 'zz'}, {'subject': 'nobody'}, {'subject': 'm1', 'index': 2}):
        with pytest.raises(LookupError):
            gui.find_session(catalog, **kwargs)


@pytest.fixture(scope='module')
def two_region_session(small_one, small_pipeline):
    """A session of the small preset with two recorded regions, loaded for the viewer."""
    from iblnm.data import PhotometrySession

    catalog = pd.read_parquet(small_pipeline / 'metadata' / 'sessions.pqt')
    qc = pd.read_parquet(small_pipeline / 'data' / 'qc_photometry.pqt')
    n_regions = qc.groupby('eid')['brain_region'].nunique()
    h5_dir = small_pipeline / 'data' / 'sessions'
    eids = [e for e in n_regions[n_regions == 2].index if (h5_dir / f'{e}.h5').exists()]
    row = catalog[catalog['eid'] == sorted(eids)[0]].iloc[0]
    ps = PhotometrySession(row, one=small_one, h5_dir=h5_dir)
    return gui.load_session_data(ps)


def test_viewer_is_driven_through_its_widgets(two_region_session, tmp_path):
    viewer = gui.PhotometrySessionViewer(two_region_session)
    fig = viewer.plot()
    assert viewer.has_raw and viewer.has_responses and len(viewer.regions) == 2
    assert [ax.get_title() for ax in viewer.axes['heatmap']] == [
        'stimOn: raw responses',
        'firstMovement: raw responses',
        'feedback: raw responses',
    ]
    viewer.widgets['region'].set_active(1)
    assert viewer.region == viewer.regions[1]
    assert viewer.axes['signal'].get_title().startswith(viewer.regions[1])
    for i, label in enumerate(gui.TOGGLES):
        before = viewer.state[label]
        viewer.widgets['toggles'].set_active(i)
        assert viewer.state[label] is not before
    assert len(viewer.axes['signal'].collections) == 3  # event lines: one colour per event
    for i, split in enumerate(gui.SPLITS):
        viewer.widgets['split'].set_active(i)
        assert viewer.split == split
    mean_ax = viewer.axes['mean'][-1]
    n_levels = two_region_session.trials['probabilityLeft'].round(1).nunique()
    assert len(mean_ax.get_lines()) == n_levels + 1  # one per block + the event line
    image = viewer.axes['heatmap'][0].images[0]
    assert image.get_cmap().name == 'RdBu_r' and image.origin == 'lower'
    vmin, vmax = image.get_clim()
    assert vmin == -vmax
    png = viewer.save(tmp_path / 'viewer.png')
    assert_not_blank(png)
    plt.close(fig)


def test_session_viewer_script_saves_a_screenshot(small_cache, tool_root, tmp_path):
    catalog = pd.read_parquet(tool_root / 'metadata' / 'sessions.pqt').sort_values('start_time')
    h5_dir = tool_root / 'data' / 'sessions'
    subject, index = next(
        (subject, i)
        for subject, sessions in catalog.groupby('subject')
        for i, eid in enumerate(sessions['eid'])
        if (h5_dir / f'{eid}.h5').exists()
    )
    png = tmp_path / 'screenshot.png'
    result = run_script(
        'session_viewer',
        tool_root,
        small_cache,
        subject,
        str(index),
        '--split',
        'contrast',
        '--save',
        str(png),
    )
    assert 'saved' in result.stdout
    assert_not_blank(png)
    missing = subprocess.run(
        [sys.executable, str(SCRIPTS / 'session_viewer.py'), '--eid', 'x'],
        env={**os.environ, 'IBLNM_ROOT': str(tool_root), 'IBLNM_ONE_CACHE': str(small_cache)},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and 'LookupError' in missing.stderr
