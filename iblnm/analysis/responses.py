"""Response magnitudes, condition feature vectors and their cosine similarity.

Pure functions on arrays and tables (no files, no sessions):

- :func:`magnitude_table` turns one recording's peri-event traces (event, trial, time) into
  the long trial table of the README (one row per event x trial, behaviour columns and the
  mean response in the early window).
- :func:`response_features` averages those rows per condition (event x contrast x
  contra/ipsi x correct/incorrect) into one feature vector per recording.
- :func:`cosine_similarity_matrix` and :func:`similarity_pairs` compare the vectors.

Units: times in s, contrasts in %, responses in the units of the traces (z-scored ΔF/F for
the pipeline's preprocessed signal).
"""

import numpy as np
import pandas as pd

from iblnm import config, task
from iblnm.signal import responses as sr

BEHAVIOUR_COLUMNS = [
    'stim_side',
    'signed_contrast',
    'contrast',
    'choice',
    'feedbackType',
    'probabilityLeft',
]
RECORDING_COLUMNS = [
    'eid',
    'subject',
    'session_type',
    'NM',
    'target_NM',
    'brain_region',
    'hemisphere',
    'fiber_idx',
]
WINDOW_COLUMNS = [f'response_{name}' for name in config.RESPONSE_WINDOWS]
MAGNITUDE_COLUMNS = RECORDING_COLUMNS + ['event', 'trial'] + BEHAVIOUR_COLUMNS + ['reaction_time']
MAGNITUDE_COLUMNS += WINDOW_COLUMNS  # response_early, response_late, response_outcome
SIDES = ('contra', 'ipsi')
OUTCOMES = {1: 'correct', -1: 'incorrect'}
FEATURE_INDEX = ['eid', 'target_NM', 'fiber_idx']


def magnitude_table(traces, tpts, events, trials, trial_ids=None, windows=None):
    """Long table of per-trial response magnitudes of one recording.

    Parameters
    ----------
    traces : ndarray, shape (n_events, n_trials, n_samples)
        Peri-event traces (baseline-subtracted and masked as the caller wishes).
    tpts : ndarray, shape (n_samples,)
        Sample times relative to the event (s).
    events : sequence of str, length n_events
    trials : pandas.DataFrame
        Trials table indexed by trial id, with the columns of :data:`BEHAVIOUR_COLUMNS`
        (missing ones become NaN) and ``stimOn_times``/``firstMovement_times`` (s).
    trial_ids : ndarray, shape (n_trials,), optional
        Trial id of each trace row; default ``trials.index``.
    windows : dict, optional
        ``{name: (t0, t1)}`` (s); one column ``response_{name}`` each. Default
        ``config.RESPONSE_WINDOWS`` (early 0.1-0.35 s, late 0.35-1 s, outcome 1-2 s); a
        window beyond the traces' time axis gives NaN.

    Returns
    -------
    pandas.DataFrame, n_events x n_trials rows
        ``event``, ``trial``, the behaviour columns, ``reaction_time`` (s, firstMovement -
        stimOn) and one ``response_{name}`` column per window.
    """
    windows = windows or config.RESPONSE_WINDOWS
    traces = np.asarray(traces, dtype=float)
    n_events, n_trials = traces.shape[:2]
    by_trial = traces.transpose(1, 2, 0)  # (trial, time, event): the kernels' layout
    magnitudes = {}
    for name, window in windows.items():
        if window[0] > tpts[-1] or window[1] <= tpts[0]:  # e.g. 'outcome' in an old [-1, 1) file
            magnitudes[name] = np.full((n_events, n_trials), np.nan)
            continue
        magnitudes[name] = np.asarray(sr.response_magnitude(by_trial, tpts, window=window)).T
    return trial_table(magnitudes, events, trials, trial_ids)


def trial_table(magnitudes, events, trials, trial_ids=None):
    """Long trial table from per-event, per-trial magnitudes (any source: PSTH, kernels).

    Parameters
    ----------
    magnitudes : dict
        ``{name: ndarray (n_events, n_trials)}``; one column ``response_{name}`` each.
    events : sequence of str, length n_events
    trials : pandas.DataFrame
        As in :func:`magnitude_table`.
    trial_ids : ndarray, shape (n_trials,), optional

    Returns
    -------
    pandas.DataFrame, n_events x n_trials rows (columns as :func:`magnitude_table`)
    """
    trial_ids = trials.index.to_numpy() if trial_ids is None else np.asarray(trial_ids)
    n_events, n_trials = len(events), len(trial_ids)
    behaviour = trials.reindex(trial_ids)
    out = {
        'event': np.repeat(np.asarray(events, dtype=object), n_trials),
        'trial': np.tile(trial_ids.astype(np.int64), n_events),
    }
    for col in BEHAVIOUR_COLUMNS:
        values = behaviour[col].to_numpy() if col in behaviour else np.full(n_trials, np.nan)
        out[col] = np.tile(values, n_events)
    rt = _column(behaviour, 'firstMovement_times') - _column(behaviour, 'stimOn_times')
    out['reaction_time'] = np.tile(rt, n_events)
    for name, values in magnitudes.items():
        out[f'response_{name}'] = np.asarray(values, dtype=float).reshape(-1)
    return pd.DataFrame(out)


def _column(frame, name):
    if name not in frame:
        return np.full(len(frame), np.nan)
    return frame[name].to_numpy(dtype=float)


def add_side(magnitudes):
    """Add ``side`` ('contra'/'ipsi' relative to the fiber's hemisphere) to a trial table.

    Uses :func:`iblnm.task.add_relative_contrast` (left fiber: right stimuli are contra;
    a recording lateral to no side, a midline region such as the DR or an unknown
    hemisphere, gets None: neither contra nor ipsi). Returns a copy.
    """
    return task.add_relative_contrast(magnitudes).drop(columns=['hemi_sign', 'relative_contrast'])


def contrast_label(contrast):
    """'25' for 25.0 %, '6.25' for 6.25 % (integers without a decimal point)."""
    contrast = float(contrast)
    return str(int(contrast)) if contrast.is_integer() else f'{contrast:g}'


def condition_label(event, contrast, side, feedback_type):
    """Feature label, e.g. ``stimOn_c25_contra_correct``.

    Parameters
    ----------
    event : str
        Event name, with or without the ``_times`` suffix.
    contrast : float
        Unsigned contrast (%).
    side : {'contra', 'ipsi'}
    feedback_type : {1, -1}
    """
    event = str(event).removesuffix('_times')
    return f'{event}_c{contrast_label(contrast)}_{side}_{OUTCOMES[int(feedback_type)]}'


def condition_columns(events, contrasts):
    """All labels of event x sorted contrasts x (contra, ipsi) x (correct, incorrect)."""
    return [
        condition_label(e, c, s, f)
        for e in events
        for c in sorted(contrasts)
        for s in SIDES
        for f in OUTCOMES
    ]


def response_features(magnitudes, response_col='response_early', min_trials=1, index=FEATURE_INDEX):
    """Mean response per condition, one row per recording.

    Parameters
    ----------
    magnitudes : pandas.DataFrame
        Trial table of :func:`magnitude_table` with the recording columns (``hemisphere``
        and the ``index`` columns at least).
    response_col : str
    min_trials : int
        Conditions with fewer non-NaN trials than this are NaN.
    index : list of str
        Columns identifying a recording (the row index of the result).

    Returns
    -------
    pandas.DataFrame, shape (n_recordings, n_conditions)
        Columns :func:`condition_columns` over the events and the union of the contrasts
        present (in that order); NaN where a recording lacks the condition. A recording
        lateral to no side (:func:`add_side` None: a midline region) has the same value,
        its mean over both stimulus sides, in the contra and the ipsi column.
    """
    df = add_side(magnitudes[magnitudes['feedbackType'].isin(list(OUTCOMES))])
    df = df[df['contrast'].notna()]
    # a recording lateral to no side (midline, unknown hemisphere) has no contra/ipsi split:
    # both columns of a condition hold its mean over both stimulus sides (same columns for
    # every recording, so it stays in the feature matrix)
    neither = df['side'].isna()
    if neither.any():
        pooled = df[neither]
        df = pd.concat([df[~neither], *(pooled.assign(side=s) for s in SIDES)])
    label = [
        condition_label(e, c, s, f)
        for e, c, s, f in zip(df['event'], df['contrast'], df['side'], df['feedbackType'])
    ]
    df = df.assign(condition=label)
    grouped = df.groupby([*index, 'condition'], observed=True, sort=False)[response_col]
    stats = grouped.agg(['mean', 'count'])
    means = stats['mean'].where(stats['count'] >= min_trials).unstack('condition')
    events = list(dict.fromkeys(magnitudes['event']))
    columns = condition_columns(events, magnitudes['contrast'].dropna().unique())
    return means.reindex(columns=[c for c in columns if c in means.columns]).sort_index()


def apply_nan_handling(features, nan_handling='drop_sessions', nan_threshold=0.3):
    """Deal with missing conditions in a feature matrix.

    Parameters
    ----------
    features : pandas.DataFrame, shape (n_recordings, n_conditions)
    nan_handling : {'drop_sessions', 'drop_features'}
        'drop_sessions' drops every row holding a NaN; 'drop_features' drops the columns
        whose NaN fraction exceeds ``nan_threshold`` (remaining NaN stay).
    nan_threshold : float
        Fraction of rows (0-1).

    Raises
    ------
    ValueError
        Unknown ``nan_handling``.
    """
    if nan_handling == 'drop_sessions':
        return features.dropna(axis=0, how='any')
    if nan_handling == 'drop_features':
        return features.loc[:, features.isna().mean() <= nan_threshold]
    raise ValueError(
        f"nan_handling must be 'drop_sessions' or 'drop_features', not {nan_handling!r}"
    )


def cosine_similarity_matrix(features):
    """Pairwise cosine similarity between rows.

    Parameters
    ----------
    features : pandas.DataFrame, shape (n_rows, n_features)
        Rows with any NaN are dropped first.

    Returns
    -------
    pandas.DataFrame, shape (n_kept, n_kept)
        Symmetric, indexed (rows and columns) by the kept rows' index; 1 on the diagonal;
        NaN for rows of zero norm.
    """
    kept = features.dropna(axis=0, how='any')
    x = kept.to_numpy(dtype=float)
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        unit = x / norms[:, None]
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    return pd.DataFrame(sim, index=kept.index, columns=kept.index)


def similarity_pairs(similarity, labels, subjects=None):
    """Upper-triangle pairs of a similarity matrix, tagged within/between label.

    Parameters
    ----------
    similarity : pandas.DataFrame, shape (n, n)
    labels : array-like, shape (n,)
        Class of each row (e.g. target_NM).
    subjects : array-like, shape (n,), optional
        Subject of each row; adds ``same_subject``.

    Returns
    -------
    pandas.DataFrame
        One row per pair i < j: ``i``, ``j``, ``label_i``, ``label_j``, ``similarity``,
        ``within`` (same label) and, with subjects, ``same_subject``.
    """
    values = similarity.to_numpy(dtype=float)
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(values), k=1)
    pairs = pd.DataFrame(
        {
            'i': i,
            'j': j,
            'label_i': labels[i],
            'label_j': labels[j],
            'similarity': values[i, j],
            'within': labels[i] == labels[j],
        }
    )
    if subjects is not None:
        subjects = np.asarray(subjects)
        pairs['same_subject'] = subjects[i] == subjects[j]
    return pairs


def mean_traces(traces, tpts, meta, events):
    """Trial-mean trace per event of one recording, in long form.

    Parameters
    ----------
    traces : ndarray, shape (n_events, n_trials, n_samples)
    tpts : ndarray, shape (n_samples,)
        Times relative to the event (s).
    meta : dict
        Recording columns copied onto every row (eid, subject, target_NM, ...).
    events : sequence of str, length n_events

    Returns
    -------
    pandas.DataFrame, n_events x n_samples rows
        The ``meta`` columns, ``event``, ``time`` (s), ``response`` (NaN-mean over trials)
        and ``n_trials`` (trials with a finite sample at that time).
    """
    traces = np.asarray(traces, dtype=float)
    finite = np.isfinite(traces)
    counts = finite.sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        means = np.where(finite, traces, 0).sum(axis=1) / counts
    n_events, n_samples = means.shape
    frame = pd.DataFrame(
        {
            'event': np.repeat(np.asarray(events, dtype=object), n_samples),
            'time': np.tile(tpts, n_events),
            'response': means.reshape(-1),
            'n_trials': counts.reshape(-1),
        }
    )
    for key, value in reversed(list(meta.items())):
        frame.insert(0, key, value)
    return frame
