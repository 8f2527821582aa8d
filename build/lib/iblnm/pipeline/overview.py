"""Stage 5, dataset_overview: join the catalog, QC, performance and every error log.

Writes ``metadata/errors.pqt`` (all logs, deduplicated, plus entries derived from the
flags: MissingRawTask, MissingRawPhotometry, MissingExtractedTask,
MissingExtractedPhotometry, BandInversion, EarlySamples) and figures in
``figures/dataset_overview/``: session matrices at each stage and bar plots of complete
recordings per target-NM and per mouse.

A *complete recording* is one fiber of a session with an extracted task, trials inside
the photometry recording, and a GCaMP channel that passed QC (mean fraction of unique
samples above ``config.N_UNIQUE_SAMPLES_THRESHOLD``, no band inversion, no early frame),
whose target-NM is a valid one. (The original counted target-NMs against the list of
regions, which dropped everything, and used a hard-coded 0.1 threshold: both fixed.)
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from iblnm import config, util, vis

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


def gcamp_qc_pass(qc, threshold=config.N_UNIQUE_SAMPLES_THRESHOLD):
    """Per (eid, brain_region): True when the GCaMP channel passed the basic QC."""
    if qc.empty:
        return pd.Series(dtype=bool)
    gcamp = qc[qc['band'] == 'GCaMP'].set_index(['eid', 'brain_region'])
    ok = gcamp['n_unique_samples'] > threshold
    for raw in ('n_band_inversions', 'n_early_samples'):
        if raw in gcamp:
            ok &= gcamp[raw].fillna(0) == 0
    return ok


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
            entries.append({'eid': eid, 'error_type': etype, 'error_message': f'{flag} is False',
                            'traceback': None})  # fmt: skip
    for col, etype in (('n_band_inversions', 'BandInversion'), ('n_early_samples', 'EarlySamples')):
        if not qc.empty and col in qc:
            for eid in qc.loc[qc[col].fillna(0) > 0, 'eid'].unique():
                entries.append({'eid': eid, 'error_type': etype, 'error_message': f'{col} > 0',
                                'traceback': None})  # fmt: skip
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

    def summary(self):
        counts = self.errors['error_type'].value_counts()
        lines = [f'dataset_overview: {len(self.recordings)} complete recordings, '
                 f'{self.errors["eid"].nunique()} sessions with errors; figures:']  # fmt: skip
        lines += [f'  {f}' for f in self.figures]
        lines += [f'  {etype}: {n}' for etype, n in counts.items()]
        return '\n'.join(lines)


def _figures(flags, recordings, figure_dir):
    panels = [
        ('1_all_sessions', None, 'All sessions'),
        ('2_raw_data', flags['has_raw_task'] & flags['has_raw_photometry_signals'],
         'Raw task and photometry data (faded: missing)'),
        ('3_extracted_data', flags['has_extracted_task'] & flags['has_extracted_photometry_signal'],
         'Extracted task and photometry (faded: missing)'),
        ('4_qc_criteria', flags['passes_basic_qc'] & flags['trials_in_photometry_time'],
         'Basic QC passed and trials within photometry (faded: failed)'),
    ]  # fmt: skip
    paths = []
    for name, highlight, title in panels:
        ax = vis.session_overview_matrix(flags, highlight=highlight, title=title)
        paths += vis.save_figure_formats(ax.figure, figure_dir / name)
    if len(recordings):
        ax = vis.target_overview_barplot(recordings)
        paths += vis.save_figure_formats(ax.figure, figure_dir / '5_target_overview')
        ax = vis.mouse_overview_barplot(recordings)
        paths += vis.save_figure_formats(ax.figure, figure_dir / '6_mouse_overview')
    return paths


def run_dataset_overview(sessions_fpath=config.SESSIONS_FPATH, logs=None,
                         qc_fpath=config.QCPHOTOMETRY_FPATH, errors_fpath=config.ERRORS_FPATH,
                         figure_dir=FIGURE_DIR):  # fmt: skip
    """Build the overview tables and figures; returns an :class:`OverviewResult`."""
    logs = config.STAGE_LOG_FPATHS if logs is None else logs
    catalog = util.clean_sessions(pd.read_parquet(sessions_fpath), verbose=False)
    qc = read_table(qc_fpath)
    log = util.concat_logs([util.read_log(path) for path in logs.values()])
    flags = session_flags(catalog, qc, log)
    errors = util.deduplicate_log(util.concat_logs([log, derived_errors(flags, qc)]))
    util.write_log(errors, errors_fpath)
    recordings = complete_recordings(catalog, flags, qc)
    return OverviewResult(errors, recordings, _figures(flags, recordings, figure_dir))
