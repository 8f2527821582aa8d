"""Peri-event responses: extraction (sub-sample aligned), baselines, masking and magnitudes.

Responses are arrays of shape ``(n_events, n_samples)`` (or ``(n_events, n_samples,
n_signals)`` for several signals), with a shared vector ``tpts`` of sample times relative
to the event (s). Everything is vectorised over events (fancy indexing, no loop per trial).
"""

import warnings

import numpy as np

from iblnm import config


def _as_float(values):
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(float)


def peri_event(
    times,
    values,
    events,
    window=config.RESPONSE_WINDOW,
    fs=None,
    t1=None,
    align='linear',
    nan_rows=None,
    return_masked=False,
):
    """Cut a uniformly sampled signal around events.

    Parameters
    ----------
    times : ndarray, shape (n_times,)
        Sample times (s), increasing, (nearly) uniform.
    values : ndarray, shape (n_times,) or (n_times, n_signals)
        Signal(s); float32 input stays float32. NaN marks masked (invalid) samples.
    events : ndarray, shape (n_events,)
        Event times (s); NaN allowed.
    window : (float, float)
        (t0, t1) relative to the event (s). Sample offsets run from round(t0·fs) to
        round(t1·fs), end exclusive: (−1, 3) at 30 Hz gives 120 samples, −1.0 … +2.967 s.
    fs : float, optional
        Sampling rate (Hz); default round(1/median(dt)), so 29.97 Hz counts as 30 Hz.
    t1 : ndarray, shape (n_events,), optional
        Absolute per-event end times (s), e.g. the next event; replaces ``window[1]``. The
        window then extends to the longest t1 − event (|t0| if all are NaN) and samples
        with tpts > t1 − event (strictly) are NaN; a NaN t1 keeps the full window.
    align : {'linear', 'sample'}
        'linear' (default): the signal is linearly interpolated at exactly event + tpts
        (sub-sample alignment, no lag). 'sample': values at anchor + offset, where the
        anchor is the first sample at or after the event (0 to 1/fs late, 1/(2 fs) on
        average; the original behaviour).
    nan_rows : bool, optional
        A window touching a NaN (masked) sample becomes NaN as a whole (per signal), so
        that a partly masked trial never enters a mean. Default True for 'linear' and
        False for 'sample' (which keeps NaN samples where they are, e.g. padded wheel
        traces).
    return_masked : bool
        Also return which windows were blanked by NaN samples.

    Returns
    -------
    responses : ndarray, shape (n_events, n_samples) or (n_events, n_samples, n_signals)
        Rows of NaN events, and of events whose window (event + t0 … event + t1_max)
        leaves the recording, are NaN.
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    masked : ndarray of bool, shape (n_events,) or (n_events, n_signals)
        Only with ``return_masked``: windows inside the recording set to NaN because
        they overlap NaN samples (with ``nan_rows``; else windows holding any NaN).
    """
    times = np.asarray(times, dtype=float)
    values = _as_float(values)
    events = np.atleast_1d(np.asarray(events, dtype=float))
    fs = round(1.0 / np.median(np.diff(times))) if fs is None else fs
    nan_rows = (align == 'linear') if nan_rows is None else nan_rows
    t0, t_end = window
    t1_rel = None
    if t1 is not None:
        t1_rel = np.atleast_1d(np.asarray(t1, dtype=float)) - events
        t_end = np.nanmax(t1_rel) if np.any(np.isfinite(t1_rel)) else abs(t0)
    offsets = np.arange(int(np.round(t0 * fs)), int(np.round(t_end * fs)))
    tpts = offsets / fs
    valid = (events + t0 >= times[0]) & (events + t_end <= times[-1])  # False for NaN events
    if align == 'linear':
        responses = _interpolate(times, values, np.where(valid, events, times[0]), tpts)
    elif align == 'sample':
        anchors = np.searchsorted(times, np.where(valid, events, times[0]), side='left')
        responses = values[np.clip(anchors[:, None] + offsets[None, :], 0, len(times) - 1)]
    else:
        raise ValueError(f"align must be 'linear' or 'sample', not {align!r}")
    masked = np.isnan(responses).any(axis=1) & (valid if values.ndim == 1 else valid[:, None])
    if nan_rows:
        np.moveaxis(responses, 1, -1)[masked] = np.nan  # whole windows, per signal
    if t1_rel is not None:
        responses[tpts[None, :] > t1_rel[:, None]] = np.nan
    responses[~valid] = np.nan
    return (responses, tpts, masked) if return_masked else (responses, tpts)


def _interpolate(times, values, events, tpts):
    """Linear interpolation of ``values`` at events[:, None] + tpts (NaN-propagating)."""
    query = events[:, None] + tpts[None, :]
    left = np.clip(np.searchsorted(times, query, side='right') - 1, 0, len(times) - 2)
    frac = np.clip((query - times[left]) / (times[left + 1] - times[left]), 0.0, 1.0)
    v0, v1 = values[left], values[left + 1]
    if values.ndim == 2:
        frac = frac[..., None]
    with np.errstate(invalid='ignore'):
        out = v0 + frac * (v1 - v0)
    exact = np.broadcast_to(frac == 0, out.shape)  # on a sample: its value, whatever follows
    out[exact] = v0[exact]
    return out.astype(values.dtype, copy=False)


def _window_slice(tpts, window):
    """Samples from searchsorted(tpts, w0) to searchsorted(tpts, w1) (end exclusive)."""
    start, stop = np.searchsorted(tpts, window[0]), np.searchsorted(tpts, window[1])
    if stop <= start:
        raise ValueError(f'window {tuple(window)} s holds no sample of tpts')
    return slice(start, stop)


def _time_axis(responses):
    return 0 if responses.ndim == 1 else 1


def _nanmean(values, axis, keepdims=False):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN trials give NaN silently
        return np.nanmean(values, axis=axis, keepdims=keepdims)


def baseline_mean(responses, tpts, window=config.TRIAL_BASELINE_WINDOW):
    """Each trial's mean over a baseline window (NaN samples ignored).

    Parameters
    ----------
    responses : ndarray, shape (n_events, n_samples[, n_signals]) or (n_samples,)
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    window : (float, float)
        Samples from searchsorted(w0) to searchsorted(w1); (−0.5, 0) at 30 Hz: the 15
        samples before the event.

    Returns
    -------
    ndarray, shape (n_events[, n_signals]) (a float for one trace)
        NaN for an all-NaN baseline.
    """
    responses = _as_float(responses)
    axis = _time_axis(responses)
    index = [slice(None)] * responses.ndim
    index[axis] = _window_slice(tpts, window)
    return _nanmean(responses[tuple(index)], axis=axis)


def subtract_baseline(responses, tpts, window=config.BASELINE_WINDOW, divide=False, baseline=None):
    """Subtract each trial's baseline: its own mean over a window, or given values.

    Parameters
    ----------
    responses : ndarray, shape (n_events, n_samples[, n_signals]) or (n_samples,)
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    window : (float, float)
        Baseline window (s) when ``baseline`` is None; samples from searchsorted(w0) to
        searchsorted(w1), so the default (−0.1, 0) takes the 3 samples before the event.
    divide : bool
        Also divide by the baseline ((r − b)/b), as the original ``normalize_responses``.
    baseline : ndarray, shape (n_events[, n_signals]), optional
        Per-trial baselines to subtract instead (e.g. the trial baseline before stimulus
        onset, :func:`baseline_mean` of the stimOn responses, applied to every event).

    Returns
    -------
    ndarray, shape of ``responses``
        NaN samples are ignored in the baseline; an all-NaN baseline gives a NaN trial.
    """
    responses = _as_float(responses)
    axis = _time_axis(responses)
    if baseline is None:
        baseline = baseline_mean(responses, tpts, window)
    baseline = np.expand_dims(np.asarray(baseline, dtype=responses.dtype), axis)
    corrected = responses - baseline
    return corrected / baseline if divide else corrected


def mask_after(responses, tpts, dt):
    """NaN every sample later than a per-trial delay (e.g. the next event).

    Parameters
    ----------
    responses : ndarray, shape (n_events, n_samples[, n_signals])
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    dt : ndarray, shape (n_events,)
        Delay of the masking event after this one (s); samples with tpts > dt (strictly)
        become NaN. A NaN dt leaves its trial unmasked.

    Returns
    -------
    ndarray, a masked copy of ``responses``
    """
    masked = _as_float(responses).copy()
    masked[np.asarray(tpts)[None, :] > np.asarray(dt, dtype=float)[:, None]] = np.nan
    return masked


def response_magnitude(responses, tpts, window=config.RESPONSE_WINDOWS['early']):
    """Mean response in a window, ignoring NaN samples.

    Parameters
    ----------
    responses : ndarray, shape (n_samples,), (n_events, n_samples) or
        (n_events, n_samples, n_signals)
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    window : (float, float)
        Window (s); samples from searchsorted(w0) to searchsorted(w1).

    Returns
    -------
    float or ndarray, shape (n_events,) or (n_events, n_signals)
    """
    responses = _as_float(responses)
    axis = _time_axis(responses)
    index = [slice(None)] * responses.ndim
    index[axis] = _window_slice(tpts, window)
    return _nanmean(responses[tuple(index)], axis=axis)
