"""An annotated walk-through: load one session and plot its signal, responses and behaviour.

Read this module top to bottom; every step is a short function (used by
``scripts/example_session.py``)::

    catalog = pd.read_parquet(config.SESSIONS_FPATH)       # 1. the session catalog
    row = pick_session(catalog)                            # 2. one row = one session
    ps = load_session(row, source='h5')                    # 3. PhotometrySession, filled
    describe_session(ps)                                   # 4. what was loaded
    plot_signal(ps)                                        # 5. preprocessed signal
    plot_feedback_responses(ps)                            # 6. responses by outcome
    plot_psychometric(ps)                                  # 7. choices vs contrast

Units: times in s; the preprocessed signal is a z-score at 30 Hz; responses are
(trial x time) windows of [-1, 1) s around an event; contrasts in %.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iblnm import config, task
from iblnm.data import PREPROCESSED_BAND, PhotometrySession
from iblnm.gui import EVENT_COLORS, _shade_response_windows, mean_sem
from iblnm.vis import save_figure_formats

OUTCOME_COLORS = {'correct': '#2166ac', 'incorrect': '#b2182b'}


# 1-2. Choose a session -------------------------------------------------------------
def pick_session(catalog, eid=None, h5_dir=config.SESSIONS_H5_DIR):
    """A catalog row: ``eid`` if given, else the latest session of an analysable target
    (``config.TARGETNMS_TO_ANALYZE``) whose HDF5 file exists (any session with one
    otherwise).

    Raises
    ------
    LookupError
        Unknown eid, or no session has an HDF5 file (run the pipeline first).
    """
    if eid is not None:
        rows = catalog[catalog['eid'] == str(eid)]
        if rows.empty:
            raise LookupError(f'eid {eid} is not in the catalog')
        return rows.iloc[0]
    done = catalog[[(Path(h5_dir) / f'{e}.h5').exists() for e in catalog['eid']]]
    if done.empty:
        raise LookupError(f'no session has an HDF5 file in {h5_dir}: run the pipeline first')
    wanted = done['target_NM'].map(lambda t: bool(set(t) & set(config.TARGETNMS_TO_ANALYZE)))
    pool = done[wanted] if wanted.any() else done
    return pool.sort_values('start_time').iloc[-1]


# 3. Load it ----------------------------------------------------------------------
def load_session(row, source='h5', one=None, h5_dir=config.SESSIONS_H5_DIR):
    """A :class:`PhotometrySession` with trials, preprocessed signal and responses.

    ``source='h5'`` reads what the photometry stage saved (fast, no ONE needed);
    ``source='one'`` rebuilds everything from the ONE datasets: load trials and photometry,
    preprocess (bleach correction, isosbestic regression, z-score, 30 Hz) and extract
    the peri-event responses.
    """
    ps = PhotometrySession(row, one=one, h5_dir=h5_dir)
    if source == 'h5':
        ps.load_h5()  # metadata, errors, trials, photometry (preprocessed, responses, qc)
    elif source == 'one':
        ps.load_trials()  # ALF trials + contrast (%), signed_contrast, stim_side
        ps.load_photometry()  # {'GCaMP': times x regions, 'Isosbestic': ...}
        ps.preprocess()  # photometry['GCaMP_preprocessed']
        ps.extract_responses()  # {region: DataArray(event, trial, time)}
    else:
        raise ValueError(f"source must be 'h5' or 'one', not {source!r}")
    return ps


# 4. Look at it -------------------------------------------------------------------
def describe_session(ps):
    """Print the session, its regions, trials, QC rows and logged errors; return the text."""
    lines = [
        repr(ps),
        f'  regions: {", ".join(ps.regions)}',
        f'  trials: {0 if ps.trials is None else len(ps.trials)}',
        f'  events with responses: {_events(ps)}',
    ]
    if not ps.qc.empty:
        cols = ['brain_region', 'band', 'n_unique_samples', 'bleaching_tau', 'iso_correlation']
        lines += ['  QC:'] + [f'    {line}' for line in ps.qc[cols].to_string().splitlines()]
    lines += [f'  logged error [{e["error_type"]}] {e["error_message"]}' for e in ps.errors]
    text = '\n'.join(lines)
    print(text)
    return text


def _events(ps):
    if not ps.responses:
        return []
    return [str(e) for e in next(iter(ps.responses.values()))['event'].values]


# 5. The preprocessed signal ------------------------------------------------------
def plot_signal(ps, zoom_s=60.0):
    """Whole-session signal per region (top) and the first ``zoom_s`` s of the task with
    the trial events (bottom)."""
    signal = ps.photometry[PREPROCESSED_BAND]
    trials = ps.trials if ps.trials is not None else pd.DataFrame()
    first = np.nanmin(trials['stimOn_times']) if 'stimOn_times' in trials else signal.index[0]
    zoom = (first - 5.0, first - 5.0 + zoom_s)
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.5))
    for region in signal.columns:
        axes[0].plot(signal.index, signal[region], lw=0.4, label=region)
        sel = (signal.index >= zoom[0]) & (signal.index <= zoom[1])
        axes[1].plot(signal.index[sel], signal[region][sel], lw=1, label=region)
    y0, y1 = axes[1].get_ylim()
    for event, color in EVENT_COLORS.items():
        times = trials[event].to_numpy(float) if event in trials else np.array([])
        times = times[(times >= zoom[0]) & (times <= zoom[1])]
        axes[1].vlines(
            times, y0, y1, color=color, lw=1, ls='--', label=event.removesuffix('_times')
        )
    axes[1].set_ylim(y0, y1)
    axes[0].set(
        title='Preprocessed signal (isosbestic-corrected, z-scored, 30 Hz)',
        xlabel='time (s)',
        ylabel='z-score',
    )
    axes[1].set(
        title=f'Zoom {zoom[0]:.0f}-{zoom[1]:.0f} s with the trial events',
        xlabel='time (s)',
        ylabel='z-score',
    )
    axes[0].legend(title='region', fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    axes[1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.suptitle(_title(ps))
    fig.tight_layout()
    return fig


# 6. Feedback responses by outcome ------------------------------------------------
def outcome_traces(ps, region, event='feedback_times'):
    """Baseline-subtracted responses of one region split by outcome.

    Returns
    -------
    times : numpy.ndarray, shape (n_times,)
        Time from the event (s).
    traces : dict
        {'correct': (n_correct, n_times), 'incorrect': (n_incorrect, n_times)} z-scores.
    """
    responses = ps.subtract_baseline(ps.responses[region]).sel(event=event)
    responses = responses.transpose('trial', 'time')
    feedback = ps.trials.loc[responses['trial'].values, 'feedbackType'].to_numpy()
    values = responses.to_numpy()
    traces = {'correct': values[feedback == 1], 'incorrect': values[feedback == -1]}
    return responses['time'].to_numpy(), traces


def plot_feedback_responses(ps, event='feedback_times'):
    """Per region: mean ± SEM of the feedback response, correct vs incorrect trials."""
    regions = list(ps.responses)
    fig, axes = plt.subplots(
        1, len(regions), figsize=(4.2 * len(regions) + 1, 3.6), squeeze=False, sharey=True
    )
    for ax, region in zip(axes[0], regions):
        times, traces = outcome_traces(ps, region, event)
        _shade_response_windows(ax)
        for outcome, values in traces.items():
            mean, sem = mean_sem(values)
            color = OUTCOME_COLORS[outcome]
            ax.fill_between(times, mean - sem, mean + sem, color=color, alpha=0.25, lw=0)
            ax.plot(times, mean, color=color, label=f'{outcome} (n={len(values)})')
        ax.axvline(0, color='k', ls='--', lw=0.8)
        ax.set(title=region, xlabel=f'time from {event.removesuffix("_times")} (s)')
        ax.legend(fontsize=8, frameon=False, loc='upper left')
    axes[0, 0].set_ylabel('baseline-subtracted z-score')
    fig.suptitle(f'Feedback responses by outcome — {_title(ps)}')
    fig.tight_layout()
    return fig


# 7. Behaviour --------------------------------------------------------------------
def plot_psychometric(ps):
    """P(rightward choice) per signed contrast with the session's psychometric fit."""
    from iblnm.workflows.task_performance import CONTRAST_GRID, psychometric_curve

    trials = ps.trials[ps.trials['choice'].isin([-1, 1])]
    rightward = (trials['choice'] == -1).groupby(trials['signed_contrast'].round(6) + 0.0)
    fit = task.fit_psychometric(ps.trials)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(
        rightward.mean().index,
        rightward.mean().to_numpy(),
        'o',
        color='k',
        label=f'data ({len(trials)} go trials)',
    )
    ax.plot(
        CONTRAST_GRID,
        psychometric_curve(fit),
        color='#d62728',
        label=f'fit: bias {fit["bias"]:.1f} %, threshold {fit["threshold"]:.1f} %',
    )
    ax.set(
        xlabel='signed contrast (%)  (< 0: left stimulus)',
        ylabel='P(rightward choice)',
        ylim=(-0.02, 1.02),
        title=f'Choices — {_title(ps)}',
    )
    ax.legend(fontsize=8, frameon=False, loc='upper left')
    fig.tight_layout()
    return fig


def _title(ps):
    return f'{ps.subject} {ps.date} {ps.session_type} {ps.eid[:8]}'


# The whole walk-through ----------------------------------------------------------
def run_example_session(
    eid=None,
    source='h5',
    sessions_fpath=config.SESSIONS_FPATH,
    h5_dir=config.SESSIONS_H5_DIR,
    figure_dir=config.EXAMPLE_SESSION_FIGURES_DIR,
    one=None,
    formats=('svg', 'png'),
):
    """Steps 1-7 on one session; returns (session, list of figure paths)."""
    row = pick_session(pd.read_parquet(sessions_fpath), eid=eid, h5_dir=h5_dir)
    ps = load_session(row, source=source, one=one, h5_dir=h5_dir)
    describe_session(ps)
    stem = Path(figure_dir) / ps.eid[:8]
    paths = save_figure_formats(plot_signal(ps), f'{stem}_signal', formats)
    if ps.responses and 'feedback_times' in _events(ps):
        paths += save_figure_formats(plot_feedback_responses(ps), f'{stem}_feedback', formats)
    if ps.trials is not None:
        paths += save_figure_formats(plot_psychometric(ps), f'{stem}_psychometric', formats)
    return ps, paths
