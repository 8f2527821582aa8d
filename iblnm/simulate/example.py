"""A small simulated :class:`~iblnm.data.PhotometrySession` in memory (no ONE, no files).

For examples and doctests: the photometry of one fiber from :func:`iblnm.simulate.
simulate_fiber` (raw GCaMP and isosbestic bands, the same model as the ONE-cache generator)
and its pseudo-trials with the columns the trials loader adds, in a session whose catalog
fields name the fiber (``brain_region`` ['VTA'], ``hemisphere`` ['l'], ``target_NM``
['VTA-DA']).
"""

import functools

import pandas as pd

from iblnm.simulate.fiber import simulate_fiber

EXAMPLE_EID = '00000000-0000-4000-8000-000000000e0e'


def example_trials(events, pseudo):
    """The trials table of :func:`iblnm.data.PhotometrySession.load_trials`'s shape.

    Parameters
    ----------
    events : dict
        Event times (s) of :func:`iblnm.simulate.fiber.pseudo_trials`.
    pseudo : pandas.DataFrame
        Its trials (contrasts as fractions, choice, feedbackType, stimOn/feedback times).

    Returns
    -------
    pandas.DataFrame
        Adds ``firstMovement_times``, ``response_times`` (= feedback, s), ``goCue_times``
        (= stimOn), ``intervals_0``/``intervals_1`` (s), ``probabilityLeft`` 0.5 and
        ``stim_side``, ``contrast``, ``signed_contrast`` (%, :func:`iblnm.task.
        compute_trial_contrasts`).
    """
    from iblnm import task

    trials = pseudo.copy()
    trials['firstMovement_times'] = events['firstMovement_times']
    trials['response_times'] = trials['feedback_times']
    trials['goCue_times'] = trials['stimOn_times']
    trials['intervals_0'] = trials['stimOn_times'] - 0.5
    trials['intervals_1'] = trials['feedback_times'] + 1.0
    trials['probabilityLeft'] = 0.5
    trials['choice'] = trials['choice'].astype(float)
    trials['feedbackType'] = trials['feedbackType'].astype(float)
    contrasts = task.compute_trial_contrasts(trials)
    return pd.concat([trials, contrasts[['stim_side', 'contrast', 'signed_contrast']]], axis=1)


def example_session(duration_s=600.0, seed=0, quality='good', nm='DA', h5_dir=None):
    """A PhotometrySession with simulated trials and raw photometry of one fiber (VTA-l).

    Parameters
    ----------
    duration_s : float
        Recording length (s): 600 s gives about 130 pseudo-trials (3-6 s apart).
    seed : int
        Same seed, same session.
    quality : str
        Fiber quality of :func:`iblnm.simulate.simulate_fiber` ('good', 'no_signal' ...).
    nm : str
        Neuromodulator of the response kernels ('DA', '5HT', 'NE', 'ACh').
    h5_dir : path, optional
        Folder of the session's HDF5 file (``{eid}.h5``) for :meth:`save_h5`.

    Returns
    -------
    iblnm.data.PhotometrySession
        ``trials`` and ``photometry`` ({'GCaMP', 'Isosbestic'}: times (s) x ['VTA'], raw
        values 0-1) set; nothing loaded from ONE.

    Examples
    --------
    >>> ps = example_session(seed=0)
    >>> ps.regions, sorted(ps.photometry)
    (['VTA'], ['GCaMP', 'Isosbestic'])
    >>> len(ps.trials) > 90
    True
    """
    from iblnm import config
    from iblnm.data import PhotometrySession

    fiber = _fiber(float(duration_s), quality, int(seed), nm)
    row = {
        'eid': EXAMPLE_EID,
        'subject': 'sim01',
        'session_type': 'biased',
        'NM': nm,
        'brain_region': ['VTA'],
        'hemisphere': ['l'],
        'target_NM': [f'VTA-{nm}'],
        'start_time': '2024-01-01T10:00:00',
        'lab': 'simlab',
        'day_n': 1,
        'session_n': 1,
    }
    ps = PhotometrySession(row, h5_dir=h5_dir or config.SESSIONS_H5_DIR)
    ps.trials = example_trials(fiber['events'], fiber['trials'])
    ps.photometry = {  # copies: a session never changes the cached fiber
        'GCaMP': pd.DataFrame(
            {'VTA': fiber['gcamp'].copy()}, index=pd.Index(fiber['times'].copy(), name='times')
        ),
        'Isosbestic': pd.DataFrame(
            {'VTA': fiber['iso'].copy()},
            index=pd.Index(fiber['times_iso'].copy(), name='times'),
        ),
    }
    return ps


@functools.lru_cache(maxsize=4)
def _fiber(duration_s, quality, seed, nm):
    """The simulated fiber (deterministic: computed once per process and arguments)."""
    return simulate_fiber(duration_s, quality, seed, nm=nm)


def example_group(h5_dir, seed=0, kernels=False):
    """A :class:`~iblnm.group.PhotometrySessionGroup` over one processed example session.

    The session of :func:`example_session` is QC'd, preprocessed, its responses (and, with
    ``kernels``, its event kernels) extracted and written to ``{h5_dir}/{eid}.h5``, as the
    photometry stage does; the group reads it back from there.

    Parameters
    ----------
    h5_dir : path
        Folder for the HDF5 file (created if needed).
    seed : int
        Seed of the session.
    kernels : bool
        Also fit and store the event kernels (a few seconds).

    Returns
    -------
    iblnm.group.PhotometrySessionGroup
        One session, one recording (VTA-DA), no filter applied.

    Examples
    --------
    >>> import tempfile
    >>> group = example_group(tempfile.mkdtemp())
    >>> len(group), list(group.recordings['recording_id'])
    (1, ['00000000-0000-4000-8000-000000000e0e/VTA'])
    """
    import shutil
    from pathlib import Path

    from iblnm.group import PhotometrySessionGroup

    h5_dir = Path(h5_dir)
    h5_dir.mkdir(parents=True, exist_ok=True)
    source, row = _processed_file(int(seed), bool(kernels))
    shutil.copyfile(source, h5_dir / source.name)
    return PhotometrySessionGroup(pd.DataFrame([row]), h5_dir=h5_dir)


@functools.lru_cache(maxsize=4)
def _processed_file(seed, kernels):
    """(HDF5 file, catalog row) of a processed example session (written once per process)."""
    import tempfile

    ps = example_session(seed=seed, h5_dir=tempfile.mkdtemp(prefix='iblnm_example_'))
    ps.run_sliding_qc()
    ps.preprocess()
    ps.extract_responses()
    if kernels:
        ps.fit_event_kernels()
    ps.save_h5()
    return ps.h5_path, {**ps.metadata, 'session_type': ps.session_type}
