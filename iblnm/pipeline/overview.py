"""Stage 5, dataset_overview: join the catalog, QC, performance and every error log.

Writes ``metadata/errors.pqt`` (all logs, deduplicated, plus entries derived from the
flags: MissingRawTask, MissingRawPhotometry, MissingExtractedTask,
MissingExtractedPhotometry, BandInversion, EarlySamples) and figures in
``figures/dataset_overview/``: session matrices at each stage and bar plots of complete
recordings per target-NM and per mouse.

A *complete recording* is one fiber of a session with an extracted task, trials inside
the photometry recording, and a QC verdict that is not FAIL (``config.QC_VERDICT_EXCLUDE``;
:mod:`iblnm.signal.verdict`; tables written before the verdict: mean fraction of unique
samples above ``config.N_UNIQUE_SAMPLES_THRESHOLD``, no band inversion, no early frame),
whose target-NM is a valid one. The verdicts by target-NM and reason are written to
``metadata/qc_verdicts.pqt`` and drawn in ``7_qc_verdicts``. (The original counted target-NMs against the list of
regions, which dropped everything, and used a hard-coded 0.1 threshold: both fixed.)
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from iblnm import config, util, vis
from iblnm.signal import verdict as sv

FIGURE_DIR = config.FIGURES_DIR / 'dataset_overview'
FLAG_ERRORS = {
    'has_raw_task': 'MissingRawTask',
    'has_raw_photometry_signals': 'MissingRawPhotometry',
    'has_extracted_task': 'MissingExtractedTask',
    'has_extracted_photometry_signal': 'MissingExtractedPhotometry',
}


def read_table(path):
    """A parquet table, or an empty frame when the file does not exist."""
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def gcamp_qc_pass(
    qc, threshold=config.N_UNIQUE_SAMPLES_THRESHOLD, exclude=config.QC_VERDICT_EXCLUDE
):
    """Per (eid, brain_region): True when the recording passed QC.

    With a ``verdict`` column (tables of this version): the verdict is not in ``exclude``
    (default FAIL). Older tables: GCaMP ``n_unique_samples`` above ``threshold`` and no band
    inversion or early frame.
    """
    if qc.empty:
        return pd.Series(dtype=bool)
    gcamp = qc[qc['band'] == 'GCaMP'].set_index(['eid', 'brain_region'])
    if 'verdict' in gcamp:
        return ~gcamp['verdict'].isin(list(exclude))
    ok = gcamp['n_unique_samples'] > threshold
    for raw in ('n_band_inversions', 'n_early_samples'):
        if raw in gcamp:
            ok &= gcamp[raw].fillna(0) == 0
    return ok


def verdict_tables(catalog, qc):
    """QC verdicts of the catalog's recordings, and their counts by target-NM and reason.

    Returns
    -------
    recordings : pandas.DataFrame
        One row per recording with a QC row: eid, subject, brain_region, target_NM,
        verdict, verdict_reasons.
    by_verdict : pandas.DataFrame
        target-NM × PASS / WARNING / FAIL counts.
    by_reason : pandas.DataFrame
        target_NM, reason, severity, n_recordings.
    """
    verdicts = sv.recording_verdicts(qc)
    exploded = catalog.explode(list(config.PARALLEL_LIST_COLUMNS)).dropna(subset=['brain_region'])
    recordings = exploded[['eid', 'subject', 'brain_region', 'target_NM']].merge(
        verdicts, on=['eid', 'brain_region'], how='inner'
    )
    by_verdict, by_reason = sv.verdict_counts(recordings, by='target_NM')
    return recordings, by_verdict, by_reason


def session_flags(catalog, qc, log):
    """One row per session with the dataset and QC flags of the overview."""
    flags = util.add_dataset_flags(catalog)
    qc_eids = set(qc['eid']) if not qc.empty else set()
    outside = set(log.loc[log['error_type'] == 'TrialsNotInPhotometryTime', 'eid'])
    flags['has_qc'] = flags['eid'].isin(qc_eids)
    flags['trials_in_photometry_time'] = flags['has_qc'] & ~flags['eid'].isin(outside)
    passed = gcamp_qc_pass(qc)
    per_session = passed.groupby(level='eid').all() if len(passed) else pd.Series(dtype=bool)
    flags['passes_basic_qc'] = flags['eid'].map(per_session.astype(bool)).eq(True)
    return flags


def derived_errors(flags, qc):
    """Log entries for false dataset flags and for raw QC failures."""
    entries = []
    for flag, etype in FLAG_ERRORS.items():
        for eid in flags.loc[~flags[flag], 'eid']:
            entries.append(
                {
                    'eid': eid,
                    'error_type': etype,
                    'error_message': f'{flag} is False',
                    'traceback': None,
                }
            )
    for col, etype in (('n_band_inversions', 'BandInversion'), ('n_early_samples', 'EarlySamples')):
        if not qc.empty and col in qc:
            for eid in qc.loc[qc[col].fillna(0) > 0, 'eid'].unique():
                entries.append(
                    {
                        'eid': eid,
                        'error_type': etype,
                        'error_message': f'{col} > 0',
                        'traceback': None,
                    }
                )
    return entries


def complete_recordings(catalog, flags, qc):
    """One row per complete recording (eid, subject, brain_region, hemisphere, target_NM)."""
    recordings = catalog.explode(list(config.PARALLEL_LIST_COLUMNS))
    recordings = recordings.dropna(subset=['brain_region'])
    ok_sessions = flags.loc[flags['has_extracted_task'] & flags['trials_in_photometry_time'], 'eid']
    passed = gcamp_qc_pass(qc)
    keys = list(zip(recordings['eid'], recordings['brain_region']))
    qc_ok = np.array([bool(passed.get(k, False)) for k in keys], dtype=bool)
    keep = recordings['eid'].isin(ok_sessions).to_numpy() & qc_ok
    keep &= recordings['target_NM'].isin(config.VALID_TARGETNMS).to_numpy()
    return recordings.loc[keep, ['eid', 'subject', 'brain_region', 'hemisphere', 'target_NM']]


@dataclass
class OverviewResult:
    errors: pd.DataFrame
    recordings: pd.DataFrame
    figures: list
    verdicts: pd.DataFrame = None

    def summary(self):
        counts = self.errors['error_type'].value_counts()
        lines = [
            f'dataset_overview: {len(self.recordings)} complete recordings, '
            f'{self.errors["eid"].nunique()} sessions with errors; figures:'
        ]
        lines += [f'  {f}' for f in self.figures]
        lines += [f'  {etype}: {n}' for etype, n in counts.items()]
        if self.verdicts is not None and len(self.verdicts):
            n = self.verdicts['verdict'].value_counts()
            lines.append(
                '  QC verdicts (recordings): '
                + ', '.join(f'{v} {int(n.get(v, 0))}' for v in config.QC_VERDICTS)
            )
        return '\n'.join(lines)


def _figures(flags, recordings, figure_dir, verdicts=None):
    panels = [
        ('1_all_sessions', None, 'All sessions'),
        (
            '2_raw_data',
            flags['has_raw_task'] & flags['has_raw_photometry_signals'],
            'Raw task and photometry data (faded: missing)',
        ),
        (
            '3_extracted_data',
            flags['has_extracted_task'] & flags['has_extracted_photometry_signal'],
            'Extracted task and photometry (faded: missing)',
        ),
        (
            '4_qc_criteria',
            flags['passes_basic_qc'] & flags['trials_in_photometry_time'],
            'Basic QC passed and trials within photometry (faded: failed)',
        ),
    ]
    paths = []
    if flags.empty:  # no session in the catalog: nothing to draw
        return paths
    for name, highlight, title in panels:
        ax = vis.session_overview_matrix(flags, highlight=highlight, title=title)
        paths += vis.save_figure_formats(ax.figure, figure_dir / name)
    if len(recordings):
        ax = vis.target_overview_barplot(recordings)
        paths += vis.save_figure_formats(ax.figure, figure_dir / '5_target_overview')
        ax = vis.mouse_overview_barplot(recordings)
        paths += vis.save_figure_formats(ax.figure, figure_dir / '6_mouse_overview')
    if verdicts is not None and len(verdicts[0]):
        fig = vis.qc_verdict_overview(verdicts[1], verdicts[2])
        paths += vis.save_figure_formats(fig, figure_dir / '7_qc_verdicts')
    return paths


def run_dataset_overview(
    sessions_fpath=config.SESSIONS_FPATH,
    logs=None,
    qc_fpath=config.QCPHOTOMETRY_FPATH,
    errors_fpath=config.ERRORS_FPATH,
    figure_dir=FIGURE_DIR,
    verdicts_fpath=config.QC_VERDICTS_FPATH,
):
    """Build the overview tables and figures; returns an :class:`OverviewResult`.

    Also writes ``verdicts_fpath`` (``metadata/qc_verdicts.pqt``): recordings per target-NM,
    verdict and reason (a recording counts once per reason; PASS recordings with reason '')
    and the figure ``7_qc_verdicts``.
    """
    from iblnm import validation as v
    from iblnm.pipeline.stage import read_catalog

    logs = config.STAGE_LOG_FPATHS if logs is None else logs
    catalog, catalog_log = v.validate_catalog(read_catalog(sessions_fpath))  # any catalog
    catalog = util.clean_sessions(catalog, verbose=False)
    qc = read_table(qc_fpath)
    log = util.concat_logs([catalog_log, *[util.read_log(path) for path in logs.values()]])
    flags = session_flags(catalog, qc, log)
    errors = util.deduplicate_log(util.concat_logs([log, derived_errors(flags, qc)]))
    util.write_log(errors, errors_fpath)
    recordings = complete_recordings(catalog, flags, qc)
    verdicts = verdict_tables(catalog, qc) if len(qc) else None
    if verdicts is not None:
        util.df2pqt(verdict_count_table(verdicts[0]), verdicts_fpath)
    figures = _figures(flags, recordings, figure_dir, verdicts)
    return OverviewResult(errors, recordings, figures, None if verdicts is None else verdicts[0])


def verdict_count_table(recordings):
    """Long table target_NM, verdict, reason, n_recordings ('' reason: none fired)."""
    long = recordings.assign(
        reason=recordings['verdict_reasons'].map(lambda text: sv.split_reasons(text) or [''])
    )
    long = long.explode('reason')
    columns = ['target_NM', 'verdict', 'reason']
    if long.empty:
        return pd.DataFrame(columns=[*columns, 'n_recordings'])
    return long.groupby(columns).size().rename('n_recordings').reset_index()
