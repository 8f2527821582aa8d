"""``PhotometrySessionGroup``: many sessions and their recordings, for group analyses.

The group holds state and delegates: filtering works on the session catalog
(``metadata/sessions.pqt``, one row per session with the parallel list columns
``brain_region``/``hemisphere``/``target_NM``), recordings are the rows of the recordings
table (``metadata/recordings.pqt``, :mod:`iblnm.recordings`) whose key ``(eid, recording)``
names each recording's HDF5 group and QC rows exactly; data come from the per-session HDF5 files
through :class:`iblnm.data.PhotometrySession`; statistics are the pure functions of
:mod:`iblnm.analysis`. Results are stored on the group (attributes start as None)::

    group = PhotometrySessionGroup.from_catalog(root=output_root)   # load, filter, explode
    group.get_response_magnitudes()      # -> group.response_magnitudes (trial table)
    group.get_response_features()        # -> group.response_features (recording x condition)
    group.response_similarity_matrix()   # -> group.similarity_matrix
    group.decode_target()                # -> group.decoder (TargetNMDecoder)
    group.fit_lmm()                      # -> group.lmm_results, group.lmm_coefficients
    group.fit_flmm('reward + log_contrast + side', event='feedback_times')  # -> flmm_results

A session whose HDF5 file is missing or unreadable, or a recording without responses,
becomes an entry of :attr:`errors` (``MissingH5``, ``CorruptH5``, ``MissingResponses``;
log schema of :mod:`iblnm.validation`) and is skipped; it never stops a batch.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from iblnm import config, task, util
from iblnm import recordings as rec_table
from iblnm import validation as v
from iblnm.analysis import responses as ar
from iblnm.data import PhotometrySession

log = logging.getLogger(__name__)

H5_GROUPS = ('trials', 'photometry')


@v.exception_logger
def _open_session(row, one=None, h5_dir=None, regions=None, parts=None):
    """A PhotometrySession of ``row`` with its trials and photometry read from HDF5."""
    ps = PhotometrySession(row, one=one, h5_dir=h5_dir)
    ps.load_h5(groups=list(H5_GROUPS), regions=regions, parts=parts)
    return ps


def _stored(stored, rec, what='responses'):
    """The recording's entry of a session's ``{recording key: data}`` (exact key)."""
    key = rec['recording']
    if key not in stored:
        raise v.MissingResponses(f'no {what} for {key} (have {sorted(stored)})')
    return stored[key]


@v.exception_logger
def _recording_traces(
    rec, ps, events=config.RESPONSE_EVENTS, mask=True, baseline=True, part='responses'
):
    """Baseline-subtracted, masked traces of one recording: DataArray (event, trial, time).

    ``baseline``: True (``config.BASELINE_MODE``, the trial baseline), 'trial', 'event' or
    False/None. ``part``: 'responses' (z-scores) or 'responses_dff' (ΔF/F).
    """
    if ps.trials is None:
        raise v.MissingResponses(f'{ps.eid} has no trials group')
    stored = getattr(ps, part)
    responses = _stored(stored, rec)
    present = [e for e in events if e in responses['event'].values]
    if not present:
        raise v.MissingResponses(f'{rec["brain_region"]}: none of the events {list(events)}')
    if baseline:  # first: the trial baseline reads stimOn's pre-event samples, never masked
        responses = ps.subtract_baseline(
            responses, mode=config.BASELINE_MODE if baseline is True else baseline
        )
    if mask:  # before selecting: an event is masked at the next event, requested or not
        responses = ps.mask_subsequent_events(responses)
    return responses.sel(event=present)


def _recording_kernels(rec, ps, events):
    if ps.trials is None or not ps.kernels:
        raise v.MissingResponses(f'{ps.eid} has no kernels (run the photometry stage)')
    ds = _stored(ps.kernels, rec, 'kernels')
    present = [e for e in events if e in ds['event'].values]
    if not present:
        raise v.MissingResponses(f'{rec["brain_region"]}: no kernels of {list(events)}')
    return ds.sel(event=present)


def _psth_table(ps, traces, windows=None, movement_time=False):
    """Trial magnitudes of one recording's traces (:func:`iblnm.analysis.responses.
    magnitude_table`); ``movement_time`` adds :func:`iblnm.task.get_trial_timings`'
    ``movement_time`` (s, response − first movement: the one definition)."""
    table = ar.magnitude_table(
        traces.values,
        traces['time'].values,
        list(traces['event'].values),
        ps.trials,
        trial_ids=traces['trial'].values,
        windows=windows,
    )
    if movement_time:
        mt = task.get_trial_timings(ps.trials)['movement_time']
        table['movement_time'] = mt.reindex(table['trial'].to_numpy()).to_numpy(float)
    return table


@v.exception_logger
def _kernel_table(rec, ps, events):
    """Trial table of one recording's kernel (overlap-free) magnitudes."""
    ds = _recording_kernels(rec, ps, events)
    mags = ds['trial_magnitudes']
    magnitudes = {str(w): mags.sel(window=w).values for w in mags['window'].values}
    return ar.trial_table(
        magnitudes, list(ds['event'].values), ps.trials, trial_ids=ds['trial'].values
    )


@v.exception_logger
def _kernel_frame(rec, ps, events):
    ds = _recording_kernels(rec, ps, events)
    frame = ds[['kernel', 'se']].to_dataframe().reset_index()
    for col in reversed(
        ['eid', 'subject', 'NM', 'target_NM', 'brain_region', 'hemisphere', 'fiber_idx']
    ):
        frame.insert(0, col, rec.get(col))
    return frame


RECORDING_KEY_COLUMNS = ['recording', 'recording_id', 'roi']


def explode_sessions(sessions, targetnms=None, recordings=None):
    """One row per recording: the session columns on each row of the recordings table.

    Parameters
    ----------
    sessions : pandas.DataFrame
        Session rows with list columns ``brain_region``, ``hemisphere``, ``target_NM`` of
        equal lengths.
    targetnms : collection of str, optional
        Keep only recordings with these target-NMs.
    recordings : pandas.DataFrame, optional
        The recordings table (``metadata/recordings.pqt``); default: built from
        ``sessions`` by :func:`iblnm.recordings.recordings_table` (without ROI names).

    Returns
    -------
    pandas.DataFrame
        The session columns with scalar ``brain_region``, ``hemisphere``, ``target_NM``,
        then ``fiber_idx`` (position of the fiber in its session: 0, 1, ...) and the keys
        ``recording``, ``recording_id``, ``roi`` of the recordings table. Sessions in
        ``sessions`` order, fibers in session order.

    Raises
    ------
    ValueError
        When the recordings table and the catalog disagree on a session's fibers (a table
        written from another catalog: rerun the catalog stage).
    """
    columns = list(config.PARALLEL_LIST_COLUMNS)
    df = sessions.reset_index(drop=True)
    if recordings is None:
        recordings = rec_table.recordings_table(df)
    table = df[['eid']].merge(recordings, on='eid', how='inner', validate='one_to_many')
    n_fibers = df.set_index('eid')['brain_region'].map(len)
    per_session = table.groupby('eid', sort=False).size().reindex(n_fibers.index, fill_value=0)
    if not (per_session.to_numpy() == n_fibers.to_numpy()).all():
        raise ValueError('the recordings table does not match the catalog: rerun query_database')
    exploded = table[['eid', *columns, 'fiber_idx', *RECORDING_KEY_COLUMNS]].merge(
        df.drop(columns=columns), on='eid', how='left'
    )
    order = [*df.columns, 'fiber_idx', *RECORDING_KEY_COLUMNS]
    exploded = exploded[order + [c for c in exploded.columns if c not in order]]
    exploded = exploded[exploded['brain_region'].notna()]
    if targetnms:
        exploded = exploded[exploded['target_NM'].isin(list(targetnms))]
    return exploded.reset_index(drop=True)


class PhotometrySessionGroup:
    """Sessions (catalog rows) and their recordings, with lazily loaded session data.

    Parameters
    ----------
    sessions : pandas.DataFrame
        Session-level catalog (list columns intact). Optional extra columns used by
        :meth:`filter_sessions`: ``logged_errors`` (list of upstream error types),
        ``fraction_correct`` and ``contrasts`` (from ``performance.pqt``).
    one : ONE, optional
        Passed to the sessions (not needed to read HDF5 files).
    h5_dir : path, optional
        Folder of ``{eid}.h5`` (default ``config.SESSIONS_H5_DIR``).
    targetnms : collection of str, optional
        Recording-level target-NM filter (None: keep all).
    qc : pandas.DataFrame, optional
        The photometry QC table (``qc_photometry.pqt``) whose ``verdict`` per recording
        :meth:`filter_sessions` uses to leave FAIL recordings out (None: no verdicts known,
        nothing excluded on QC).
    recordings : pandas.DataFrame, optional
        The recordings table of the catalog (``metadata/recordings.pqt``); default: built
        from ``sessions`` (:func:`iblnm.recordings.recordings_table`).
    """

    def __init__(self, sessions, one=None, h5_dir=None, targetnms=None, qc=None, recordings=None):
        catalog = util.enforce_schema(pd.DataFrame(sessions))
        self._catalog = util.validate_parallel_lists(catalog).reset_index(drop=True)
        if recordings is None:
            recordings = rec_table.recordings_table(self._catalog)
        self.recording_table = recordings
        self._filter_mask = pd.Series(True, index=self._catalog.index)
        self._pre_verdict_mask = self._filter_mask
        self._dedup_mask = pd.Series(True, index=self._catalog.index)
        self._recordings_targetnms = targetnms
        self._recordings = None
        self.one = one
        self.h5_dir = Path(h5_dir or config.SESSIONS_H5_DIR)
        self._sessions = {}
        self.errors = []
        self.clear_results()
        self.verdicts = _verdict_lookup(qc)
        self._exclude_verdicts = ()
        self.excluded_recordings = pd.DataFrame()

    # results computed from the current selection; any selection change clears them
    RESULT_ATTRIBUTES = (
        'events',
        'response_magnitudes',
        'mean_traces',
        'response_features',
        'similarity_matrix',
        'decoder',
        'lmm_results',
        'lmm_coefficients',
        'flmm_results',
    )

    def clear_results(self):
        """Forget every result computed from the selection (:data:`RESULT_ATTRIBUTES`).

        Called by every selection change (:meth:`filter_sessions`, :meth:`deduplicate`,
        :meth:`filter`), so that no result describes recordings that are no longer selected.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> mags = group.get_response_magnitudes()
        >>> group.clear_results()
        >>> group.response_magnitudes is None
        True
        """
        for name in self.RESULT_ATTRIBUTES:
            setattr(self, name, None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_catalog(
        cls,
        catalog=None,
        one=None,
        h5_dir=None,
        log_dir=None,
        performance=None,
        root=None,
        filter=True,
        deduplicate=True,
        qc=None,
        recordings=None,
        **filter_kwargs,
    ):
        """Load the catalog, attach upstream errors and performance, filter and explode.

        Parameters
        ----------
        catalog : path or pandas.DataFrame, optional
            Default ``{root}/metadata/sessions.pqt`` (``config.SESSIONS_FPATH`` without root).
        h5_dir : path, optional
            Default ``{root}/data/sessions`` (``config.SESSIONS_H5_DIR``).
        log_dir : path, optional
            Folder of the stage logs ``*_log.pqt`` (default ``{root}/metadata``); their error
            types become the ``logged_errors`` list of each session.
        performance : path, pandas.DataFrame or False, optional
            ``performance.pqt`` (default ``{root}/data/performance.pqt``); adds
            ``fraction_correct`` and ``contrasts`` when it exists. False: not used.
        root : path, optional
            Output root the defaults derive from (default: ``config`` paths).
        filter : bool
            Apply :meth:`filter_sessions` with ``filter_kwargs`` (config defaults).
        deduplicate : bool
            After filtering, keep one session per mouse and day (:meth:`deduplicate`).
        qc : path, pandas.DataFrame or False, optional
            The QC table with the recordings' verdicts (default
            ``{root}/data/qc_photometry.pqt`` when it exists); FAIL recordings are left out
            by :meth:`filter_sessions` (``exclude_verdicts``). False: verdicts not used.
        recordings : path or pandas.DataFrame, optional
            The recordings table. Default: ``recordings.pqt`` beside a catalog file (built
            from the catalog when that file does not exist: outputs of a catalog stage
            before it), built from the catalog when ``catalog`` is a DataFrame.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> catalog = group.sessions  # a catalog DataFrame (default: metadata/sessions.pqt)
        >>> loaded = PhotometrySessionGroup.from_catalog(
        ...     catalog, h5_dir=group.h5_dir, log_dir=group.h5_dir, performance=False, qc=False,
        ...     filter=False)
        >>> list(loaded.recordings['recording'])
        ['VTA']
        """
        paths = _default_paths(root)
        catalog = catalog if catalog is not None else paths['catalog']
        sessions = pd.read_parquet(catalog) if not isinstance(catalog, pd.DataFrame) else catalog
        logs = sorted(Path(log_dir or paths['log_dir']).glob('*_log.pqt'))
        sessions = util.collect_session_errors(sessions, logs)
        performance = paths['performance'] if performance is None else performance
        if performance is not False:
            sessions = _attach_performance(sessions, performance)
        qc = paths['qc'] if qc is None else qc
        if qc is not False and not isinstance(qc, pd.DataFrame):
            qc = pd.read_parquet(qc) if Path(qc).exists() else None
        if recordings is None and not isinstance(catalog, pd.DataFrame):
            recordings = Path(catalog).with_name(Path(config.RECORDINGS_FPATH).name)
        if recordings is not None and not isinstance(recordings, pd.DataFrame):
            recordings = pd.read_parquet(recordings) if Path(recordings).exists() else None
        group = cls(
            sessions,
            one=one,
            h5_dir=h5_dir or paths['h5_dir'],
            qc=qc if qc is not False else None,
            recordings=recordings,
        )
        if filter:
            group.filter_sessions(**filter_kwargs)
            if deduplicate:
                group.deduplicate()
        return group

    # ------------------------------------------------------------------ session level
    @property
    def sessions(self):
        """Catalog rows passing the current session filter (and :meth:`deduplicate`).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> group.sessions[['subject', 'session_type', 'NM']]
          subject session_type  NM
        0   sim01       biased  DA
        """
        return self._catalog[self._filter_mask & self._dedup_mask]

    def filter_sessions(
        self,
        session_types=config.SESSION_TYPES_TO_ANALYZE,
        exclude_subjects=config.SUBJECTS_TO_EXCLUDE,
        exclude_eids=config.EIDS_TO_DROP,
        qc_blockers=v.ANALYSIS_QC_BLOCKERS,
        targetnms=config.TARGETNMS_TO_ANALYZE,
        min_performance=config.MIN_PERFORMANCE,
        required_contrasts=config.REQUIRED_CONTRASTS,
        lab=None,
        start_time_min=None,
        exclude_verdicts=config.QC_VERDICT_EXCLUDE,
        verbose=True,
    ):
        """Select sessions (non-destructive: recomputes the mask from the whole catalog).

        Parameters
        ----------
        session_types : collection of str or False
            Keep these types (False: no filter).
        exclude_subjects : collection of str
            Drop these subjects ([] : no filter).
        exclude_eids : collection of str
            Drop these sessions (default ``config.EIDS_TO_DROP``, IBL sessions with huge
            photometry artefacts; [] : no filter).
        qc_blockers : collection of exception classes
            Drop sessions whose ``logged_errors`` contain any of these types (empty, or no
            ``logged_errors`` column: no filter).
        targetnms : collection of str, None or False
            Keep sessions with at least one of these target-NMs; recordings are trimmed to
            them by :meth:`explode_recordings`.
        min_performance : float, dict or None
            Minimum ``fraction_correct``; a dict applies per session type (e.g.
            ``{'training': 0.7}``). Skipped when the column is absent.
        required_contrasts : collection of float or None
            The session's ``contrasts`` set (%) must equal it. Skipped when absent.
        lab : str, optional
        start_time_min : str, optional
            Keep subjects whose first session starts on or after this date.
        exclude_verdicts : collection of str
            Recordings whose QC verdict is one of these (default FAIL) are left out of
            :attr:`recordings` (they keep their H5 files and table rows); sessions whose
            recordings are all excluded are dropped. Needs the group's ``qc`` table; ()
            keeps every recording. The numbers excluded are printed and kept in
            :attr:`excluded_recordings`.

        Returns
        -------
        pandas.DataFrame
            The sessions kept.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> group.filter_sessions(session_types=('ephys',), verbose=False).empty
        True
        >>> kept = group.filter_sessions(session_types=False, targetnms=None, min_performance=None, required_contrasts=None, verbose=False)
        >>> len(kept), len(group)
        (1, 1)
        """
        cat = self._catalog
        steps = {
            'session_types': _isin(cat['session_type'], session_types) if session_types else None,
            'exclude_subjects': ~cat['subject'].isin(list(exclude_subjects or [])),
            'exclude_eids': ~cat['eid'].isin(list(exclude_eids or [])),
            'qc_blockers': _no_blockers(cat, qc_blockers),
            'targetnms': _any_target(cat, targetnms),
            'min_performance': _performance_ok(cat, min_performance),
            'required_contrasts': _contrasts_ok(cat, required_contrasts),
            'lab': cat['lab'] == lab if lab else None,
            'start_time_min': _first_session_after(cat, start_time_min),
            'qc_verdict': self._any_kept_recording(cat, exclude_verdicts),
        }
        mask = pd.Series(True, index=cat.index)
        removed = {}
        for name, step in steps.items():
            if step is not None:
                if name == 'qc_verdict':
                    self._pre_verdict_mask = mask.copy()
                removed[name] = int((mask & ~step).sum())
                mask &= step
        if steps['qc_verdict'] is None:
            self._pre_verdict_mask = mask.copy()
        self._filter_mask = mask
        self._dedup_mask = pd.Series(True, index=cat.index)  # a new selection: deduplicate again
        self._recordings_targetnms = list(targetnms) if targetnms else None
        self._exclude_verdicts = tuple(exclude_verdicts or ())
        self._recordings = None
        self.clear_results()
        self._verbose = verbose
        if verbose:
            detail = ', '.join(f'{k}: -{n}' for k, n in removed.items() if n)
            log.info(
                f'filter_sessions: {len(cat)} -> {int(mask.sum())}'
                + (f' ({detail})' if detail else '')
            )
        return self.sessions

    def deduplicate(self, disqualifying_errors=None):
        """Keep one session per (subject, day_n) among the selected sessions.

        A mouse recorded twice on one day (a restarted session, a second protocol) would
        count twice in every statistic. Per (subject, day_n), :func:`iblnm.util.
        resolve_duplicate_group` keeps the only session without a disqualifying error
        (default MissingRawData, InsufficientTrials, TrialsNotInPhotometryTime in
        ``logged_errors``); with none, the first; with several valid ones, the first valid
        one, and the day is logged as ``TrueDuplicateSession`` (in :attr:`errors`, and
        returned). Call it after :meth:`filter_sessions`, which resets it.

        Returns
        -------
        pandas.DataFrame
            Log entries (:data:`iblnm.validation.LOG_COLUMNS`) of the TrueDuplicateSession days.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> group.deduplicate().empty  # one session per mouse and day already
        True
        """
        selected = self.sessions
        if 'logged_errors' not in selected:
            selected = selected.assign(logged_errors=[[] for _ in range(len(selected))])
        log = []
        kept = [
            util.resolve_duplicate_group(day, disqualifying_errors, exlog=log)['eid']
            for _, day in selected.groupby(['subject', 'day_n'], sort=False, dropna=False)
        ]
        self._dedup_mask = self._catalog['eid'].isin(kept)
        self._recordings = None
        self.clear_results()
        self.errors.extend(log)
        return util.concat_logs([log])

    # ------------------------------------------------------------------ recording level
    def explode_recordings(self):
        """One row per recording of the filtered sessions (see :func:`explode_sessions`).

        Recordings whose QC verdict is excluded (:meth:`filter_sessions`,
        ``exclude_verdicts``) are left out; they are in :attr:`excluded_recordings`.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> group.explode_recordings()[['recording_id', 'brain_region', 'hemisphere', 'fiber_idx']]
                                        recording_id brain_region hemisphere  fiber_idx
        0  00000000-0000-4000-8000-000000000e0e/VTA          VTA          l          0
        """
        # recordings of the sessions before the verdict filter, so that the excluded count
        # includes the sessions whose recordings all failed
        # (the verdict step is the last filter and deduplicate() never saw those sessions)
        before = getattr(self, '_pre_verdict_mask', self._filter_mask)
        rows = before & (self._dedup_mask | ~self._filter_mask)
        recordings = explode_sessions(
            self._catalog[rows], self._recordings_targetnms, self.recording_table
        )
        verdicts = self._recording_verdicts(recordings)
        excluded = verdicts.isin(list(self._exclude_verdicts)).to_numpy()
        self.excluded_recordings = recordings[excluded].assign(verdict=verdicts[excluded])
        if excluded.any() and getattr(self, '_verbose', True):
            counts = verdicts[excluded].value_counts()
            detail = ', '.join(f'{v} {n}' for v, n in counts.items())
            log.info(
                f'explode_recordings: {int(excluded.sum())} of {len(recordings)} '
                f'recordings excluded by their QC verdict ({detail})'
            )
        self._recordings = recordings[~excluded].reset_index(drop=True)
        return self._recordings

    def _recording_verdicts(self, recordings):
        """QC verdict of each recording row (None when unknown), by its key (eid, recording)."""
        keys = zip(recordings['eid'], recordings['recording'])
        return pd.Series(
            [self.verdicts.get(key) for key in keys], index=recordings.index, dtype=object
        )

    def _any_kept_recording(self, cat, exclude_verdicts):
        """Session mask: at least one recording whose verdict is not excluded (None: no QC)."""
        if not self.verdicts or not exclude_verdicts:
            return None
        exclude = set(exclude_verdicts)
        keys = self.recording_table.groupby('eid', sort=False)['recording'].agg(list)

        def kept(eid):
            verdicts = [self.verdicts.get((eid, key)) for key in keys.get(eid, [])]
            return not verdicts or any(v not in exclude for v in verdicts)

        return cat['eid'].map(kept).astype(bool)

    @property
    def recordings(self):
        """Recording rows (computed on first access).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> list(group.recordings[['recording', 'target_NM', 'fiber_idx']].itertuples(index=False))
        [Pandas(recording='VTA', target_NM='VTA-DA', fiber_idx=0)]
        """
        if self._recordings is None:
            self.explode_recordings()
        return self._recordings

    def __len__(self):
        return len(self.recordings)

    def __getitem__(self, i):
        rec = self.recordings.iloc[i]
        return rec, self._session(rec['eid'])

    def __iter__(self):
        """Yield ``(recording_row, PhotometrySession)``; one HDF5 read per session."""
        for _, rec in self.recordings.iterrows():
            ps = self._session(rec['eid'])
            if ps is not None:
                yield rec, ps

    def filter(self, mask):
        """A new group over the recordings where ``mask`` is True, sharing the session cache.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> len(group.filter(group.recordings['target_NM'] == 'VTA-DA'))
        1
        >>> len(group.filter(group.recordings['target_NM'] == 'DR-5HT'))
        0
        """
        mask = np.asarray(mask, dtype=bool)
        recordings = self.recordings[mask].reset_index(drop=True)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._filter_mask = self._filter_mask & self._catalog['eid'].isin(recordings['eid'])
        new._pre_verdict_mask = new._filter_mask
        new._recordings, new.errors = recordings, []
        new.clear_results()
        return new

    def _session_row(self, eid):
        return self._catalog.loc[self._catalog['eid'] == eid].iloc[0]

    def _session(self, eid, cache=True, regions=None, parts=None):
        """The session of ``eid`` read from HDF5 (cached), or None after logging the error."""
        if eid in self._sessions:
            return self._sessions[eid]
        ps = _open_session(
            self._session_row(eid),
            one=self.one,
            h5_dir=self.h5_dir,
            regions=regions,
            parts=parts,
            exlog=self.errors,
        )
        if not isinstance(ps, PhotometrySession):
            return None
        if cache:
            self._sessions[eid] = ps
        return ps

    def flush_sessions(self):
        """Forget the cached sessions (free their data).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> recordings = list(group)  # (recording row, PhotometrySession), sessions cached
        >>> group.flush_sessions()  # the cached sessions are released
        """
        self._sessions.clear()

    def iter_recording_traces(
        self, events=config.RESPONSE_EVENTS, mask=True, baseline=True, part='responses'
    ):
        """Yield ``(recording_row, session, traces)`` reading each HDF5 file once.

        Sessions are read one at a time (responses and trials only) and released after
        their recordings, so memory does not grow with the number of sessions.
        ``traces`` is the masked, baseline-subtracted DataArray (event, trial, time);
        ``baseline`` True (the trial baseline of ``config.BASELINE_MODE``), 'trial',
        'event' or False; ``part`` 'responses' (z-scores) or 'responses_dff' (ΔF/F).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> for rec, ps, traces in group.iter_recording_traces():
        ...     print(rec['recording'], dict(traces.sizes))
        VTA {'event': 3, 'trial': 133, 'time': 120}
        """
        for eid, recs in self.recordings.groupby('eid', sort=False):
            ps = self._sessions.get(eid) or self._session(
                eid, cache=False, regions=list(recs['recording']), parts=(part,)
            )
            if ps is None:
                continue
            for _, rec in recs.iterrows():
                traces = _recording_traces(
                    rec,
                    ps,
                    events=events,
                    mask=mask,
                    baseline=baseline,
                    part=part,
                    exlog=self.errors,
                )
                if not isinstance(traces, pd.Series):
                    yield rec, ps, traces

    def get_wheel_kinematics(self):
        """Reaction time, movement time and peak wheel speed per trial of every session.

        Reads each session's ``trials`` and ``wheel`` HDF5 groups (see
        :func:`iblnm.task.wheel_kinematics`); a session without them is logged in
        :attr:`errors` and skipped.

        Returns
        -------
        pandas.DataFrame
            Columns eid, trial, reaction_time (s), movement_time (s), peak_velocity (rad/s).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> group.get_wheel_kinematics().empty  # the example has no wheel group: logged
        True
        >>> group.errors[-1]['error_type']
        'MissingH5'
        """
        from iblnm import h5, task

        frames = []
        for eid in self.recordings['eid'].unique():
            try:
                data = h5.load_h5(self.h5_dir / f'{eid}.h5', groups=['trials', 'wheel'])
                if 'wheel' not in data or 'trials' not in data:
                    raise v.MissingH5(f'{eid}.h5 has no wheel or trials group')
                table = task.wheel_kinematics(data['trials'], data['wheel']['velocity'])
                frames.append(table.reset_index().assign(eid=eid))
            except Exception as error:  # noqa: BLE001 - one bad file never stops the analysis
                self.errors.append(v.make_log_entry(eid, error=error))
        columns = ['eid', 'trial', 'reaction_time', 'movement_time', 'peak_velocity']
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)[columns]

    def get_events(self, events=config.RESPONSE_EVENTS):
        """Task events of the selected sessions: one row per session x trial x event.

        Read from each session's ``trials`` HDF5 group (a session without one is logged in
        :attr:`errors` and skipped). Stored in :attr:`events` (cleared by any selection
        change).

        Returns
        -------
        pandas.DataFrame
            Columns eid, subject, session_type, trial, event, time (s, task clock),
            stim_side, signed_contrast (%), choice, feedbackType, probabilityLeft.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> events = group.get_events()
        >>> events.groupby('event').size()
        event
        feedback_times         133
        firstMovement_times    133
        stimOn_times           133
        dtype: int64
        """
        from iblnm import h5

        covariates = ['stim_side', 'signed_contrast', 'choice', 'feedbackType', 'probabilityLeft']
        columns = ['eid', 'subject', 'session_type', 'trial', 'event', 'time', *covariates]
        frames = []
        for _, session in self.sessions.iterrows():
            eid = session['eid']
            if eid not in set(self.recordings['eid']):
                continue
            try:
                trials = h5.load_h5(self.h5_dir / f'{eid}.h5', groups=['trials']).get('trials')
                if trials is None:
                    raise v.MissingH5(f'{eid}.h5 has no trials group')
            except v.IblnmError as error:
                self.errors.append(v.make_log_entry(eid, error=error))
                continue
            present = [e for e in events if e in trials]
            long = (
                trials.rename_axis('trial')
                .reset_index()
                .melt(
                    id_vars=['trial', *[c for c in covariates if c in trials]],
                    value_vars=present,
                    var_name='event',
                    value_name='time',
                )
            )
            frames.append(
                long.assign(
                    eid=eid, subject=session['subject'], session_type=session['session_type']
                )
            )
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        self.events = table.reindex(columns=columns)
        return self.events

    # ------------------------------------------------------------------ responses
    def get_response_magnitudes(
        self,
        events=config.RESPONSE_EVENTS,
        windows=None,
        baseline=True,
        part='responses',
        source='psth',
    ):
        """Trial-level magnitudes: one row per recording x event x trial.

        Columns :data:`iblnm.analysis.responses.MAGNITUDE_COLUMNS` (eid, subject,
        session_type, NM, target_NM, brain_region, hemisphere, fiber_idx, event, trial,
        stim_side, signed_contrast, contrast, choice, feedbackType, probabilityLeft,
        reaction_time, response_early, response_late, response_outcome: the means over
        ``config.RESPONSE_WINDOWS``); ``windows`` ({name: (t0, t1)}) replaces them.
        Traces are baseline-subtracted (``baseline``: True = the trial baseline, 'event',
        False) and masked after the next event first; ``part='responses_dff'`` reads the
        ΔF/F responses. ``source='kernel'``: the overlap-free per-trial magnitudes of the
        event-kernel regression (``photometry/{region}/kernels``, written by the photometry
        stage; see :meth:`PhotometrySession.fit_event_kernels`), same columns, so that
        :meth:`fit_lmm` and :meth:`decode_target` run on them unchanged. Text columns are
        categoricals; the table is assembled column by column, so the peak memory is the
        table plus one column, whatever the number of sessions.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> mags = group.get_response_magnitudes()  # one row per recording x event x trial
        >>> len(mags), {'response_early', 'response_late', 'response_outcome'} <= set(mags)
        (399, True)
        """
        self.response_magnitudes = self.magnitude_table(events, windows, baseline, part, source)
        return self.response_magnitudes

    def magnitude_table(
        self,
        events=config.RESPONSE_EVENTS,
        windows=None,
        baseline=True,
        part='responses',
        source='psth',
        mask=True,
        movement_time=False,
    ):
        """The table of :meth:`get_response_magnitudes` (the one builder), without storing it.

        ``mask=False`` keeps each event's trace after the next event (movement encoding);
        ``movement_time`` adds that column (s, :func:`iblnm.task.get_trial_timings`). A
        recording whose table cannot be built is logged in :attr:`errors` and skipped.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> table = group.magnitude_table(mask=False, movement_time=True)
        >>> group.response_magnitudes is None, 'movement_time' in table  # not stored
        (True, True)
        """
        pieces, lengths, meta = {}, [], {c: [] for c in ar.RECORDING_COLUMNS}
        if source == 'kernel':
            tables = self._kernel_tables(events)
        elif source == 'psth':
            tables = self._psth_tables(events, windows, baseline, part, mask, movement_time)
        else:
            raise ValueError(f"source must be 'psth' or 'kernel', not {source!r}")
        for rec, table in tables:
            lengths.append(len(table))
            for col in ar.RECORDING_COLUMNS:
                meta[col].append(rec.get(col))
            for col in table.columns:
                pieces.setdefault(col, []).append(table[col].to_numpy())
        return _assemble(meta, pieces, lengths)

    def _psth_tables(self, events, windows, baseline, part, mask, movement_time):
        """Yield ``(recording_row, trial table)`` of the peri-event traces."""
        traces = self.iter_recording_traces(events, mask=mask, baseline=baseline, part=part)
        for rec, ps, recording in traces:
            try:
                table = _psth_table(ps, recording, windows, movement_time)
            except Exception as e:  # noqa: BLE001 - one bad recording never stops the analysis
                self.errors.append(v.make_log_entry(rec['eid'], error=e))
                continue
            yield rec, table

    def _kernel_recordings(self):
        """Yield ``(recording_row, session)``, each session's stored kernels read once."""
        for eid, recs in self.recordings.groupby('eid', sort=False):
            ps = self._sessions.get(eid) or self._session(eid, cache=False, parts=('kernels',))
            if ps is None:
                continue
            for _, rec in recs.iterrows():
                yield rec, ps

    def _kernel_tables(self, events):
        """Yield ``(recording_row, trial table)`` of the stored kernel magnitudes."""
        for rec, ps in self._kernel_recordings():
            table = _kernel_table(rec, ps, events, exlog=self.errors)
            if isinstance(table, pd.DataFrame):
                yield rec, table

    def get_kernels(self, events=config.RESPONSE_EVENTS):
        """Long table of the stored event kernels of every recording.

        Columns: the recording columns, event, condition, lag (s), kernel, se (signal
        units); recordings without kernels are logged (MissingResponses) and skipped.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp(), kernels=True)
        >>> kernels = group.get_kernels()  # long table: recording x event x condition x lag
        >>> sorted(kernels['event'].unique())
        ['feedback_times', 'firstMovement_times', 'stimOn_times']
        """
        frames = []
        for rec, ps in self._kernel_recordings():
            frame = _kernel_frame(rec, ps, events, exlog=self.errors)
            if isinstance(frame, pd.DataFrame):
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def get_mean_traces(
        self, events=config.RESPONSE_EVENTS, split_by=None, baseline=True, part='responses'
    ):
        """Long-form trial-mean trace per recording x event (x ``split_by`` level).

        Columns: eid, subject, target_NM, NM, brain_region, fiber_idx, [split_by], event,
        time (s), response, n_trials. ``split_by`` is a trials column such as
        ``'feedbackType'``; ``baseline`` and ``part`` as in :meth:`get_response_magnitudes`.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> traces = group.get_mean_traces(split_by='feedbackType')
        >>> sorted(traces['feedbackType'].unique().tolist()), traces['time'].nunique()
        ([-1.0, 1.0], 120)
        """
        frames = []
        keys = ['eid', 'subject', 'target_NM', 'NM', 'brain_region', 'fiber_idx']
        for rec, ps, traces in self.iter_recording_traces(events, baseline=baseline, part=part):
            meta = {k: rec.get(k) for k in keys}
            trial_ids = traces['trial'].values
            levels = [(None, np.ones(len(trial_ids), bool))]
            if split_by is not None:
                values = ps.trials[split_by].reindex(trial_ids).to_numpy()
                levels = [(lvl, values == lvl) for lvl in pd.unique(values[pd.notna(values)])]
            for level, sel in levels:
                extra = {} if split_by is None else {split_by: level}
                frames.append(
                    ar.mean_traces(
                        traces.values[:, sel],
                        traces['time'].values,
                        {**meta, **extra},
                        list(traces['event'].values),
                    )
                )
        self.mean_traces = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return self.mean_traces

    def get_response_features(self, nan_handling='drop_sessions', nan_threshold=0.3, min_trials=1):
        """Recording x condition matrix of mean early responses (see
        :func:`iblnm.analysis.responses.response_features`), indexed by (eid, target_NM,
        fiber_idx). ``nan_handling``: 'drop_sessions' or 'drop_features'.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> features = group.get_response_features()
        >>> list(features.index.names), features.shape[0]
        (['eid', 'target_NM', 'fiber_idx'], 1)
        """
        if self.response_magnitudes is None:
            self.get_response_magnitudes()
        features = ar.response_features(self.response_magnitudes, min_trials=min_trials)
        self.response_features = ar.apply_nan_handling(features, nan_handling, nan_threshold)
        return self.response_features

    def response_similarity_matrix(self):
        """Cosine similarity between recordings' feature vectors (rows with NaN dropped).

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> similarity = group.response_similarity_matrix()  # cosine, recording x recording
        >>> similarity.shape, round(float(similarity.iloc[0, 0]), 6)
        ((1, 1), 1.0)
        """
        if self.response_features is None:
            self.get_response_features()
        self.similarity_matrix = ar.cosine_similarity_matrix(self.response_features)
        return self.similarity_matrix

    def feature_subjects(self, features=None):
        """Subject of every row of a (eid, target_NM, fiber_idx)-indexed feature matrix.

        Examples
        --------
        >>> import tempfile
        >>> from iblnm.simulate.example import example_group
        >>> group = example_group(tempfile.mkdtemp())
        >>> features = group.get_response_features()
        >>> group.feature_subjects().tolist()
        ['sim01']
        """
        features = self.response_features if features is None else features
        lookup = self.recordings.set_index(['eid', 'fiber_idx'])['subject']
        keys = zip(
            features.index.get_level_values('eid'), features.index.get_level_values('fiber_idx')
        )
        return np.array([lookup.get(k) for k in keys])

    def decode_target(self, Cs=None, contributions=True, label='target_NM', min_subjects=2, seed=0):
        """Leave-one-subject-out decoding of target-NM (or NM) from the response features.

        Parameters
        ----------
        label : {'target_NM', 'NM'}
            Class of a recording: its target-NM, or the NM alone (regions pooled).
        min_subjects : int
            Classes recorded in fewer subjects are left out: a held-out subject's class
            must also be present in the training subjects for LOSO to be meaningful.

        Returns the fitted :class:`iblnm.analysis.decoding.TargetNMDecoder` (also stored in
        :attr:`decoder`); NaN features are imputed within folds.
        """
        from iblnm.analysis.decoding import DEFAULT_CS, TargetNMDecoder

        if self.response_features is None:
            self.get_response_features(nan_handling='drop_features')
        features = self.response_features
        labels = pd.Series(features.index.get_level_values('target_NM'), index=features.index)
        if label == 'NM':
            labels = labels.str.rsplit('-', n=1).str[-1]
        subjects = pd.Series(self.feature_subjects(features), index=features.index)
        n_subjects = subjects.groupby(labels.to_numpy()).nunique()
        keep = labels.map(n_subjects).to_numpy() >= min_subjects
        dropped = sorted(n_subjects.index[n_subjects < min_subjects])
        if dropped:
            log.warning(f'decode_target: leaving out {dropped} (< {min_subjects} subjects)')
        decoder = TargetNMDecoder(
            features[keep], labels[keep], subjects[keep], Cs=Cs or DEFAULT_CS, seed=seed
        ).fit()
        if contributions:
            decoder.unique_contribution()
        self.decoder = decoder
        return decoder

    def fit_lmm(
        self,
        response_col='response_early',
        by=('target_NM', 'event'),
        min_subjects=2,
        re_formulas=('1',),
        fallback_ols=False,
        **kwargs,
    ):
        """Mixed models ``response ~ log_contrast * side * reward + (1 | subject)`` per group.

        Trials: 50/50 block, choice != 0, reaction time > 0.05 s, finite response. The
        random-effect formulas are tried in order; the first one with which every group
        converges is used. Groups with fewer than ``min_subjects`` subjects are skipped,
        or fitted by OLS with ``fallback_ols`` (``kind='ols'`` in the table).

        Returns
        -------
        pandas.DataFrame
            :attr:`lmm_coefficients` (see :func:`iblnm.analysis.lmm.coefficient_table`);
            the fits are in :attr:`lmm_results` ``{(group key...): LMMResult}``.
        """
        from iblnm.analysis import lmm

        if self.response_magnitudes is None:
            self.get_response_magnitudes()
        trials = lmm.prepare_lmm_trials(ar.add_side(self.response_magnitudes), response_col)
        results = {}
        for re_formula in re_formulas:
            results = lmm.fit_grouped_lmms(
                trials,
                by,
                response_col,
                min_subjects,
                fallback_ols,
                re_formula=re_formula,
                **kwargs,
            )
            expected = _n_fittable(trials, by, min_subjects, fallback_ols)
            if len(results) >= expected:
                break
        self.lmm_results = results
        self.lmm_coefficients = lmm.coefficient_table(results, by)
        return self.lmm_coefficients

    def get_flmm_inputs(self, event, by='target_NM', contrast_coding='log'):
        """Trial traces around ``event`` and their coded covariates, per ``by`` group.

        Traces come from :meth:`iter_recording_traces` (masked after the next event,
        baseline-subtracted); trials are those of the mixed models
        (:func:`iblnm.analysis.lmm.prepare_lmm_trials`: 50/50 block, a choice, reaction time
        > 0.05 s), coded by :func:`iblnm.analysis.lmm.code_predictors` (``reward`` ±0.5,
        ``side`` ±0.5 contra/ipsi, 0 for a midline recording, ``log_contrast``).

        Returns
        -------
        dict
            ``{group value: (responses (n_trials, n_times), trials DataFrame, times (s))}``;
            the DataFrame has the recording columns (eid, subject, ...) and the covariates.
        """
        from iblnm.analysis import lmm

        pieces = {}
        for rec, ps, traces in self.iter_recording_traces(events=[event]):
            table = ar.magnitude_table(
                traces.values,
                traces['time'].values,
                [event],
                ps.trials,
                trial_ids=traces['trial'].values,
            )
            table = table.assign(**{c: rec.get(c) for c in ar.RECORDING_COLUMNS})
            coded = lmm.code_predictors(ar.add_side(table), contrast_coding)
            keep = coded.index.isin(
                lmm.prepare_lmm_trials(coded.assign(side=coded['side_label'])).index
            )
            times = traces['time'].values
            pieces.setdefault(rec[by], []).append((traces.values[0][keep], coded[keep], times))
        return {
            key: (
                np.vstack([p[0] for p in parts]),
                pd.concat([p[1] for p in parts], ignore_index=True),
                parts[0][2],
            )
            for key, parts in pieces.items()
        }

    def fit_flmm(
        self,
        formula='reward + log_contrast + side',
        event='feedback_times',
        by='target_NM',
        groups='subject',
        min_subjects=2,
        **kwargs,
    ):
        """Functional mixed models of the traces around ``event``, per ``by`` group.

        Parameters
        ----------
        formula : str
            Fixed effects over the coded covariates of :meth:`get_flmm_inputs`; its side
            terms are dropped for a group with no recording lateral to a side (a midline
            region such as the DR, :func:`iblnm.analysis.lmm.without_side`).
        groups : str
            Random-effect grouping (a trials column, default the subject).
        min_subjects : int
            Groups with fewer subjects are skipped.
        **kwargs
            Passed to :func:`iblnm.analysis.flmm.fit_flmm` (``nested='eid'``, ``re_formula``,
            ``inference``, ...).

        Returns
        -------
        dict
            ``{(group value, event): FLMMResult}``, also stored in :attr:`flmm_results`.
        """
        from iblnm.analysis import flmm, lmm

        results = {}
        for key, (y, data, times) in sorted(self.get_flmm_inputs(event, by).items()):
            if data['subject'].nunique() < min_subjects:
                continue
            # a group lateral to no side (a midline region: side coded 0) has no side terms
            model = formula if (data['side'] != 0).any() else lmm.without_side(formula)
            try:
                results[(key, event)] = flmm.fit_flmm(y, data, model, groups, times, **kwargs)
            except (ValueError, np.linalg.LinAlgError) as error:  # one group never stops the rest
                self.errors.append(v.make_log_entry(f'{key}/{event}', error=error))
        self.flmm_results = {**(self.flmm_results or {}), **results}
        return results


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _default_paths(root):
    if root is None:
        return {
            'catalog': config.SESSIONS_FPATH,
            'h5_dir': config.SESSIONS_H5_DIR,
            'log_dir': config.METADATA_DIR,
            'performance': config.PERFORMANCE_FPATH,
            'qc': config.QCPHOTOMETRY_FPATH,
        }
    root = Path(root)
    return {
        'catalog': root / config.SESSIONS_FPATH.relative_to(config.PROJECT_ROOT),
        'h5_dir': root / config.SESSIONS_H5_DIR.relative_to(config.PROJECT_ROOT),
        'log_dir': root / config.METADATA_DIR.relative_to(config.PROJECT_ROOT),
        'performance': root / config.PERFORMANCE_FPATH.relative_to(config.PROJECT_ROOT),
        'qc': root / config.QCPHOTOMETRY_FPATH.relative_to(config.PROJECT_ROOT),
    }


def _verdict_lookup(qc):
    """{(eid, recording): verdict} of a QC table (verdicts computed if absent); {} for None.

    The QC table's ``brain_region`` column holds the recording key (the photometry column).
    """
    if qc is None or len(qc) == 0:
        return {}
    from iblnm.signal import verdict as sv

    table = sv.recording_verdicts(qc)
    return {
        (e, r): verdict
        for e, r, verdict in zip(table['eid'], table['brain_region'], table['verdict'])
        if r is not None
    }


def _attach_performance(sessions, performance):
    if not isinstance(performance, pd.DataFrame):
        if not Path(performance).exists():
            return sessions
        performance = pd.read_parquet(performance)
    columns = [c for c in ('eid', 'fraction_correct', 'contrasts') if c in performance]
    sessions = sessions.drop(columns=[c for c in columns if c != 'eid' and c in sessions])
    return sessions.merge(performance[columns], on='eid', how='left')


def _isin(values, wanted):
    return values.isin(list(wanted))


def _no_blockers(cat, blockers):
    if not blockers or 'logged_errors' not in cat:
        return None
    return cat['logged_errors'].map(lambda errs: not v.is_blocked(list(errs), blockers))


def _any_target(cat, targetnms):
    if not targetnms:
        return None
    wanted = set(targetnms)
    return cat['target_NM'].map(lambda targets: bool(wanted.intersection(targets)))


def _performance_ok(cat, min_performance):
    if min_performance is None or 'fraction_correct' not in cat:
        return None
    if isinstance(min_performance, dict):
        threshold = cat['session_type'].map(min_performance).astype(float).fillna(-np.inf)
    else:
        threshold = pd.Series(float(min_performance), index=cat.index)
    return cat['fraction_correct'].astype(float).fillna(-np.inf) >= threshold


def _contrasts_ok(cat, required):
    if required is None or 'contrasts' not in cat:
        return None
    required = {float(c) for c in required}

    def ok(contrasts):
        if not isinstance(contrasts, list | tuple | np.ndarray):
            return False
        return {float(c) for c in contrasts} == required

    return cat['contrasts'].map(ok)


def _first_session_after(cat, start_time_min):
    if start_time_min is None:
        return None
    first = (
        pd.to_datetime(cat['start_time'], format='ISO8601').groupby(cat['subject']).transform('min')
    )
    return first >= pd.Timestamp(start_time_min)


def _n_fittable(trials, by, min_subjects, fallback_ols):
    counts = trials.groupby(list(by), observed=True)['subject'].nunique()
    return len(counts) if fallback_ols else int((counts >= min_subjects).sum())


def _assemble(meta, pieces, lengths, text_columns=('event', 'stim_side')):
    """One DataFrame from per-recording scalars (repeated) and per-recording column pieces.

    Each column's pieces are concatenated and then released before the next column.
    """
    if not lengths:
        return pd.DataFrame(columns=[*meta, *ar.MAGNITUDE_COLUMNS[len(meta) :]])
    out = {}
    for col, values in meta.items():
        repeated = np.repeat(np.asarray(values, dtype=object), lengths)
        out[col] = repeated.astype(np.int64) if col == 'fiber_idx' else pd.Categorical(repeated)
    for col in list(pieces):
        values = np.concatenate(pieces.pop(col))
        out[col] = pd.Categorical(values) if col in text_columns else values
    return pd.DataFrame(out)
