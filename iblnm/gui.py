"""Interactive single-session viewer built on matplotlib widgets.

``PhotometrySessionViewer(ps).plot()`` shows one :class:`iblnm.data.PhotometrySession`:

- controls (top): the brain region (radio buttons), toggles "Events" (trial event times
  on the traces), "Baseline" (subtract the [-0.1, 0) s baseline from the mean traces)
  and "Mask events" (NaN each trace after the trial's next event), and the condition
  that splits the mean traces (feedback, contrast, stimulus side, choice, block);
- rows: raw GCaMP and isosbestic (when both raw bands are loaded), the preprocessed
  z-scored signal, one heatmap per event of the raw responses (trials sorted with
  :func:`iblnm.task.sort_trials_by_type`: errors first, then by descending contrast;
  ``RdBu_r`` with symmetric limits ±max(3·SD, 1e-6)) and one mean ± SEM panel per event
  of the transformed responses, split by the condition, with the response windows shaded.

Every control calls a public method (:meth:`select_region`, :meth:`toggle`,
:meth:`set_split`), so the viewer can be driven from code and saved with :meth:`save`;
it works with the non-interactive Agg backend.
"""

import numpy as np
import pandas as pd

from iblnm import config, task
from iblnm import validation as v

EVENT_ORDER = ['stimOn_times', 'firstMovement_times', 'feedback_times']
EVENT_COLORS = {
    'stimOn_times': '#1f77b4',
    'firstMovement_times': '#ff7f0e',
    'feedback_times': '#2ca02c',
}
TOGGLES = ('Events', 'Baseline', 'Mask events')
SPLITS = ('feedback', 'contrast', 'side', 'choice', 'block')
WINDOW_COLORS = {'early': '#fdd49e', 'late': '#d9d9d9'}


# ---------------------------------------------------------------------------
# Pure helpers (tested without a figure)
# ---------------------------------------------------------------------------
def order_events(events):
    """Events in the order stimOn, firstMovement, feedback, then any other (as given)."""
    events = list(events)
    known = [e for e in EVENT_ORDER if e in events]
    return known + [e for e in events if e not in EVENT_ORDER]


def heatmap_limits(values):
    """Symmetric colour limits ±max(3·nanstd, 1e-6) of a response matrix."""
    sd = np.nanstd(values) if np.isfinite(values).any() else 0.0
    limit = max(3 * float(sd), 1e-6)
    return -limit, limit


def condition_labels(trials, split):
    """Per-trial condition labels (pandas.Series of str, NaN for trials without one).

    Parameters
    ----------
    trials : pandas.DataFrame
    split : {'feedback', 'contrast', 'side', 'choice', 'block'}
    """
    if split == 'feedback':
        labels = trials['feedbackType'].map({1: 'correct', -1: 'incorrect'})
    elif split == 'contrast':
        labels = trials['contrast'].map(lambda c: f'{c:g} %' if np.isfinite(c) else np.nan)
    elif split == 'side':
        labels = trials['stim_side'].map(lambda s: f'stim {s}' if isinstance(s, str) else np.nan)
    elif split == 'choice':
        # IBL: choice -1 = counter-clockwise ("rightward"), +1 = clockwise, 0 = no-go
        labels = trials['choice'].map({-1: 'choice CCW (-1)', 1: 'choice CW (+1)', 0: 'no-go'})
    elif split == 'block':
        labels = trials['probabilityLeft'].map(
            lambda p: f'pL {p:.1f}' if np.isfinite(p) else np.nan
        )
    else:
        raise ValueError(f'unknown split {split!r}; choose from {SPLITS}')
    return labels.astype(object)


def mean_sem(values):
    """Mean and SEM over trials of a (n_trials, n_times) array (NaN-aware)."""
    import warnings

    values = np.asarray(values, dtype=float)
    n = np.sum(np.isfinite(values), axis=0)
    with warnings.catch_warnings():  # all-NaN columns (masked samples) give NaN quietly
        warnings.simplefilter('ignore', RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        sem = np.nanstd(values, axis=0) / np.sqrt(np.maximum(n, 1))
    return mean, sem


def _shade_response_windows(ax, windows=config.RESPONSE_WINDOWS):
    """Shade exactly the ``RESPONSE_WINDOWS`` spans (s); returns the patches."""
    return [
        ax.axvspan(
            t0,
            t1,
            color=WINDOW_COLORS.get(name, '#eeeeee'),
            alpha=0.5,
            lw=0,
            zorder=0,
            label=f'{name} window',
        )
        for name, (t0, t1) in windows.items()
    ]


# ---------------------------------------------------------------------------
# The viewer
# ---------------------------------------------------------------------------
class PhotometrySessionViewer:
    """Interactive figure of one session (see the module docstring).

    Parameters
    ----------
    session : iblnm.data.PhotometrySession
        With ``photometry['GCaMP_preprocessed']`` (and, for the PSTH rows, ``responses``
        and ``trials``); raw bands are shown when both GCaMP and Isosbestic are loaded.
    split : str
        Initial condition of the mean traces (one of :data:`SPLITS`).
    """

    def __init__(self, session, split='feedback'):
        from iblnm.data import PREPROCESSED_BAND

        self.ps = session
        self.band = PREPROCESSED_BAND
        if self.band not in session.photometry:
            raise v.MissingExtractedData('the session has no preprocessed signal')
        self.regions = list(session.photometry[self.band].columns)
        self.region = self.regions[0]
        self.split = split
        self.state = {'Events': False, 'Baseline': True, 'Mask events': False}
        self.has_raw = all(b in session.photometry for b in ('GCaMP', 'Isosbestic'))
        self.has_responses = bool(session.responses) and session.trials is not None
        self.fig = None
        self.axes = {}
        self.widgets = {}

    @property
    def events(self):
        if not self.has_responses:
            return []
        return order_events(self.ps.responses[self.region]['event'].values)

    @property
    def title(self):
        ps = self.ps
        return f'{ps.subject} | {ps.date} | {ps.session_type} | {ps.eid[:8]}'

    # -------------------------------------------------------------- layout
    def plot(self, figsize=(15, 11)):
        """Build the figure with its controls and draw the first region; returns the figure."""
        import matplotlib.pyplot as plt

        self.fig = plt.figure(figsize=figsize)
        self.fig.suptitle(self.title, fontsize=13, fontweight='bold', y=0.99)
        self._build_controls()
        self._build_axes()
        self.redraw()
        return self.fig

    def _build_controls(self):
        from matplotlib.widgets import CheckButtons, RadioButtons

        ax_reg = self.fig.add_axes((0.01, 0.865, 0.16, 0.075))
        ax_reg.set_title('region', fontsize=9, loc='left')
        self.widgets['region'] = RadioButtons(ax_reg, self.regions, active=0)
        self.widgets['region'].on_clicked(self.select_region)
        toggles = TOGGLES if self.has_responses else TOGGLES[:1]
        ax_tog = self.fig.add_axes((0.19, 0.865, 0.14, 0.075))
        ax_tog.set_title('show', fontsize=9, loc='left')
        self.widgets['toggles'] = CheckButtons(
            ax_tog, list(toggles), [self.state[t] for t in toggles]
        )
        self.widgets['toggles'].on_clicked(self.toggle)
        if self.has_responses:
            ax_split = self.fig.add_axes((0.35, 0.865, 0.3, 0.075))
            ax_split.set_title('split mean traces by', fontsize=9, loc='left')
            self.widgets['split'] = RadioButtons(ax_split, SPLITS, active=SPLITS.index(self.split))
            self.widgets['split'].on_clicked(self.set_split)
        for label in self._widget_labels():
            label.set_fontsize(9)

    def _widget_labels(self):
        return [lab for w in self.widgets.values() for lab in getattr(w, 'labels', [])]

    def _build_axes(self):
        from matplotlib.gridspec import GridSpec

        rows = (['raw'] if self.has_raw else []) + ['signal']
        ratios = ([2] if self.has_raw else []) + [2]
        if self.has_responses:
            rows, ratios = rows + ['heatmap', 'mean'], ratios + [4, 2.5]
        n_cols = max(1, len(self.events))
        grid = GridSpec(
            len(rows),
            n_cols,
            figure=self.fig,
            height_ratios=ratios,
            top=0.8,
            bottom=0.05,
            left=0.07,
            right=0.86,
            hspace=0.65,
            wspace=0.4,
        )
        for i, row in enumerate(rows):
            if row in ('raw', 'signal'):
                self.axes[row] = self.fig.add_subplot(grid[i, :])
            else:
                self.axes[row] = [self.fig.add_subplot(grid[i, j]) for j in range(n_cols)]
        if 'raw' in self.axes:
            self.axes['signal'].sharex(self.axes['raw'])

    # -------------------------------------------------------------- controls
    def select_region(self, region):
        """Show ``region`` in every panel."""
        if region not in self.regions:
            raise ValueError(f'unknown region {region!r}; regions: {self.regions}')
        self.region = region
        self.redraw()

    def toggle(self, label):
        """Flip one of :data:`TOGGLES` and redraw."""
        self.state[label] = not self.state[label]
        self.redraw()

    def set_split(self, split):
        """Split the mean traces by ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; choose from {SPLITS}')
        self.split = split
        self.redraw()

    def save(self, fpath, dpi=100):
        """Save a screenshot of the current figure (PNG/SVG from the suffix)."""
        from pathlib import Path

        fpath = Path(fpath)
        fpath.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(fpath, dpi=dpi)
        return fpath

    # -------------------------------------------------------------- drawing
    def redraw(self):
        """Redraw every data panel for the current region and settings."""
        if self.fig is None:
            return
        if self.has_raw:
            self._draw_raw(self.axes['raw'])
        self._draw_signal(self.axes['signal'])
        if self.has_responses:
            for j, event in enumerate(self.events):
                self._draw_heatmap(self.axes['heatmap'][j], event)
                self._draw_mean(self.axes['mean'][j], event)
        self.fig.canvas.draw_idle()

    def _draw_event_lines(self, ax):
        if not self.state['Events'] or self.ps.trials is None:
            return
        y0, y1 = ax.get_ylim()
        for event in order_events(e for e in EVENT_ORDER if e in self.ps.trials):
            times = self.ps.trials[event].to_numpy(float)
            ax.vlines(
                times[np.isfinite(times)],
                y0,
                y1,
                color=EVENT_COLORS[event],
                lw=0.9,
                alpha=0.5,
                label=event.removesuffix('_times'),
                antialiased=False,
            )
        ax.set_ylim(y0, y1)

    def _draw_raw(self, ax):
        ax.clear()
        for band, color in (('GCaMP', '#2ca02c'), ('Isosbestic', '#7b3294')):
            frame = self.ps.photometry[band]
            if self.region in frame:
                ax.plot(frame.index, frame[self.region], color=color, lw=0.6, label=band)
        self._draw_event_lines(ax)
        ax.set(ylabel='raw fluorescence (a.u.)', title=f'{self.region}: raw bands')
        ax.legend(loc='upper left', fontsize=8, bbox_to_anchor=(1.005, 1.05), frameon=False)

    def _draw_signal(self, ax):
        ax.clear()
        signal = self.ps.photometry[self.band][self.region]
        ax.plot(signal.index, signal.to_numpy(), color='k', lw=0.5, label='GCaMP (z-score)')
        self._draw_event_lines(ax)
        ax.set(
            xlabel='time (s)',
            ylabel='signal (z-score)',
            title=f'{self.region}: preprocessed (isosbestic-corrected, z-scored, 30 Hz)',
        )
        ax.legend(loc='upper left', fontsize=8, bbox_to_anchor=(1.005, 1.05), frameon=False)

    def _responses(self, event, transformed):
        responses = self.ps.responses[self.region]
        if transformed and self.state['Mask events']:
            responses = self.ps.mask_subsequent_events(responses)
        if transformed and self.state['Baseline']:
            responses = self.ps.subtract_baseline(responses)
        sel = responses.sel(event=event)
        return sel.transpose('trial', 'time')

    def _draw_heatmap(self, ax, event):
        ax.clear()
        raw = self._responses(event, transformed=False)
        trials = self.ps.trials.loc[raw['trial'].values]
        order = task.sort_trials_by_type(trials)
        values = raw.to_numpy()[order]
        vmin, vmax = heatmap_limits(values)
        tpts = raw['time'].to_numpy()
        image = ax.imshow(
            values,
            aspect='auto',
            cmap='RdBu_r',
            vmin=vmin,
            vmax=vmax,
            origin='lower',
            interpolation='nearest',
            extent=(tpts[0], tpts[-1], 0, len(values)),
        )
        n_err = int((trials['feedbackType'] == -1).sum())
        ax.axhline(n_err, color='k', lw=0.8)
        ax.axvline(0, color='k', lw=0.8, ls='--')
        ax.set(
            title=f'{event.removesuffix("_times")}: raw responses',
            xlabel='time from event (s)',
            ylabel=f'trials (incorrect: 0-{n_err}, then correct)',
        )
        if not hasattr(ax, '_iblnm_colorbar'):
            ax._iblnm_colorbar = self.fig.colorbar(image, ax=ax, label='z-score', fraction=0.05)
        else:
            ax._iblnm_colorbar.update_normal(image)

    def _draw_mean(self, ax, event):
        import matplotlib.pyplot as plt

        ax.clear()
        responses = self._responses(event, transformed=True)
        tpts = responses['time'].to_numpy()
        trials = self.ps.trials.loc[responses['trial'].values]
        labels = condition_labels(trials, self.split).to_numpy()
        levels = sorted({lab for lab in labels if isinstance(lab, str)}, key=_level_key)
        cmap = plt.get_cmap('viridis' if self.split == 'contrast' else 'tab10')
        _shade_response_windows(ax)
        for k, level in enumerate(levels):
            color = cmap(k / max(1, len(levels) - 1)) if self.split == 'contrast' else cmap(k)
            mean, sem = mean_sem(responses.to_numpy()[labels == level])
            ax.fill_between(tpts, mean - sem, mean + sem, color=color, alpha=0.25, lw=0)
            ax.plot(tpts, mean, color=color, lw=1.5, label=f'{level} (n={(labels == level).sum()})')
        ax.axvline(0, color='k', lw=0.8, ls='--')
        steps = [
            s
            for s, on in (
                ('masked', self.state['Mask events']),
                ('baseline-subtracted', self.state['Baseline']),
            )
            if on
        ]
        ax.set(xlabel='time from event (s)', ylabel='signal (z-score)')
        ax.set_title(
            f'mean ± SEM by {self.split}\n' + (', '.join(steps) or 'raw responses'), fontsize=10
        )
        if event == self.events[-1]:
            ax.legend(fontsize=8, frameon=False, loc='upper left', bbox_to_anchor=(1.02, 1.05))


def _level_key(label):
    """Sort condition labels numerically when they start with a number."""
    head = str(label).split()[0].removeprefix('pL')
    try:
        return (0, float(head), str(label))
    except ValueError:
        return (1, 0.0, str(label))


# ---------------------------------------------------------------------------
# Choosing and loading a session (used by scripts/session_viewer.py)
# ---------------------------------------------------------------------------
def find_session(catalog, subject=None, index=-1, eid=None):
    """One catalog row, by eid or by the subject's ``index``-th session (by start time).

    Raises
    ------
    LookupError
        Unknown eid or subject, or an index outside [-n, n-1].
    """
    if eid is not None:
        rows = catalog[catalog['eid'] == str(eid)]
        if rows.empty:
            raise LookupError(f'eid {eid} is not in the catalog')
        return rows.iloc[0]
    rows = catalog[catalog['subject'] == subject].sort_values('start_time')
    if rows.empty:
        raise LookupError(f'no session of subject {subject!r} in the catalog')
    if not -len(rows) <= index < len(rows):
        raise LookupError(f'index {index} out of range for {len(rows)} sessions of {subject}')
    return rows.iloc[index]


def load_session_data(ps, raw=True):
    """Fill a session for the viewer: HDF5 first, then whatever is missing from ONE.

    The HDF5 file gives trials, the preprocessed signal and the responses; the raw bands
    come from ONE (``raw=True``). Without an HDF5 file the session is loaded,
    preprocessed and its responses extracted here.

    Raises
    ------
    MissingRawData, MissingExtractedData
        When no preprocessed signal can be had.
    """
    from iblnm.data import PREPROCESSED_BAND

    if ps.h5_path.exists():
        ps.load_h5(groups=['metadata', 'errors', 'trials', 'photometry'])
    saved = ps.photometry.get(PREPROCESSED_BAND)
    try:
        if ps.trials is None:
            ps.load_trials()
        if raw or saved is None:
            ps.load_photometry()  # replaces ps.photometry with the raw bands
            if saved is not None:
                ps.photometry[PREPROCESSED_BAND] = saved
    except (v.MissingRawData, v.MissingExtractedData, v.AmbiguousRegionMapping) as error:
        if PREPROCESSED_BAND not in ps.photometry:
            raise
        print(f'raw bands not shown: {type(error).__name__}: {error}')
    if PREPROCESSED_BAND not in ps.photometry:
        ps.preprocess()
    if not ps.responses and ps.trials is not None:
        ps.extract_responses()
    return ps


def print_session_errors(ps):
    """Print the session's logged errors as ``[type] message`` lines."""
    for entry in ps.errors:
        print(f'[{entry["error_type"]}] {entry["error_message"]}')


def open_viewer(
    subject=None,
    index=-1,
    eid=None,
    split='feedback',
    save=None,
    sessions_fpath=config.SESSIONS_FPATH,
    h5_dir=config.SESSIONS_H5_DIR,
    one=None,
):
    """Find, load and show a session; with ``save`` write a screenshot instead of showing."""
    import matplotlib.pyplot as plt

    from iblnm.data import PhotometrySession

    row = find_session(pd.read_parquet(sessions_fpath), subject=subject, index=index, eid=eid)
    ps = load_session_data(PhotometrySession(row, one=one, h5_dir=h5_dir))
    print(ps)
    print_session_errors(ps)
    viewer = PhotometrySessionViewer(ps, split=split)
    viewer.plot()
    if save:
        print(f'saved {viewer.save(save)}')
    else:
        plt.show()
    return viewer
