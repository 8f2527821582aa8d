"""The responses analysis: trial magnitudes, mixed models, response vectors, similarity,
decoding and waveform statistics of the recordings in the catalog.

Tables go to ``results/responses/`` and figures to ``figures/responses/`` (under ``root``
when given, else the ``config`` paths):

| file | content |
|---|---|
| ``responses.pqt`` | one row per recording x event x trial (README schema) |
| ``mean_traces.pqt`` | recording-mean traces per event and outcome (long form) |
| ``kernels.pqt`` | event kernels (event x condition x lag, with SE) of every recording |
| ``lmm_coefficients_kernel_by_NM.csv`` | the mixed models by NM on the kernel magnitudes |
| ``response_matrix.pqt`` | recording x condition feature matrix (``drop_features``) |
| ``response_similarity_matrix.pqt`` | cosine similarity of the complete feature rows |
| ``lmm_coefficients.pqt/.csv`` | fixed effects per (target_NM, event) (OLS when 1 subject) |
| ``lmm_coefficients_by_NM.pqt/.csv`` | fixed effects per (NM, event), regions pooled |
| ``lmm_marginal_means(_by_NM).csv`` | model means per reward, side and contrast level (95 % CI);
  figure ``lmm_marginal_means(_by_NM)`` |
| ``confusion_matrix.pqt``, ``decoding_coefficients.pqt``, ``feature_contributions.pqt``,
  ``decoding_summary.json`` | LOSO decoding of target-NM |
| ``waveform_tests.pqt`` | clusters of the correct-vs-incorrect permutation tests |
| ``flmm_coefficients.pqt`` | FLMM coefficient functions per (target_NM, event, term, time): estimate,
  pointwise and joint 95 % bands, p-values (:func:`iblnm.analysis.flmm.coefficient_table`) |
| ``flmm_intervals.pqt/.csv`` | intervals where the FLMM joint band excludes 0 |
| ``peak_velocity.pqt`` | reaction time, movement time, peak wheel speed per trial |
| ``wheel_lmm_summary.pqt/.csv`` | does the stimulus response predict them (per target_NM x
  contrast x variable; :func:`iblnm.analysis.lmm.fit_wheel_lmms`) |
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from iblnm import config, util
from iblnm import validation as v
from iblnm.analysis import flmm, lmm, waveforms
from iblnm.analysis import responses as ar
from iblnm.group import PhotometrySessionGroup
from iblnm.vis import responses as vr
from iblnm.vis import save_figure_formats

log = logging.getLogger(__name__)

LOG_NAME = 'responses_log.pqt'


def analysis_log_entry(step, error):
    """A log entry for an analysis step that failed as a whole (eid ``None``)."""
    entry = v.make_log_entry(None, error=error)
    return {**entry, 'error_message': f'{step}: {entry["error_message"]}'}


def output_paths(root=None):
    """``{'tables': dir, 'figures': dir}`` under ``root`` (default the config paths)."""
    if root is None:
        return {'tables': config.RESPONSES_DIR, 'figures': config.FIGURES_DIR / 'responses'}
    root = Path(root)
    return {
        'tables': root / config.RESPONSES_DIR.relative_to(config.PROJECT_ROOT),
        'figures': root / 'figures' / 'responses',
    }


@dataclass
class ResponsesResult:
    """What :func:`run_responses` produced (for the printed summary and for tests)."""

    n_sessions: int = 0
    n_recordings: int = 0
    n_trials_rows: int = 0
    decoding: dict = field(default_factory=dict)
    lmm_signs: pd.DataFrame = None
    flmm_intervals: pd.DataFrame = None
    files: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    log_fpath: Path | None = None  # the errors, written next to the tables

    def summary(self):
        lines = [
            f'responses: {self.n_sessions} sessions, {self.n_recordings} recordings, '
            f'{self.n_trials_rows} trial rows'
        ]
        if self.decoding:
            d = self.decoding
            lines.append(
                f'decoding {d["label"]} (LOSO, {d["n_classes"]} classes, '
                f'{d["n_recordings"]} recordings): accuracy {d["accuracy"]:.2f}, '
                f'balanced accuracy {d["balanced_accuracy"]:.2f} '
                f'(chance {d["chance"]:.2f})'
            )
        if self.lmm_signs is not None and len(self.lmm_signs):
            lines.append('mixed models by NM (contrast and reward terms, p < 0.05 marked *):')
            for row in self.lmm_signs.itertuples():
                star = '*' if row.p < 0.05 else ' '
                lines.append(
                    f'  {row.NM:<4} {row.event:<20} {row.term:<13} '
                    f'{row.coef:+.3f}{star} ({row.kind}, {row.n_subjects} subjects)'
                )
        if self.flmm_intervals is not None:
            lines.append(
                'FLMM (joint 95 % band excludes 0): outcome at feedback, contrast at stimOn:'
            )
            for (target, event, term), rows in self.flmm_intervals.groupby(
                ['target_NM', 'event', 'term'], sort=True
            ):
                spans = ', '.join(
                    f'{r.t_start:+.2f}..{r.t_stop:+.2f} s ({r.sign:+d})' for r in rows.itertuples()
                )
                lines.append(f'  {target:<8} {event:<15} {term:<13} {spans}')
        if self.errors:
            lines.append(
                f'{len(self.errors)} recordings/sessions skipped or steps failed '
                f'(see {self.log_fpath or LOG_NAME})'
            )
        lines.append(f'{len(self.files)} files written')
        return '\n'.join(lines)


def run_responses(
    root=None,
    targetnms=config.VALID_TARGETNMS,
    n_boot=1000,
    n_permutations=1000,
    seed=0,
    **filter_kwargs,
):
    """Run the whole analysis and write its tables and figures.

    Parameters
    ----------
    root : path, optional
        Output root holding ``metadata/``, ``data/sessions/``; results are written under
        it too. Default: the ``config`` paths.
    targetnms : list of str
        Target-NMs analysed (default every valid one, so that no NM of the data is lost).
    n_boot, n_permutations : int
        Bootstrap resamples of the trace bands; permutations of the cluster tests.
    **filter_kwargs
        Passed to :meth:`PhotometrySessionGroup.filter_sessions`.
    """
    paths = output_paths(root)
    group = PhotometrySessionGroup.from_catalog(root=root, targetnms=targetnms, **filter_kwargs)
    result = ResponsesResult(n_sessions=len(group.sessions), n_recordings=len(group))
    write = _writer(paths, result)
    magnitudes = group.get_response_magnitudes()
    result.n_trials_rows = len(magnitudes)
    write(magnitudes, 'responses.pqt')
    tests = _traces_and_tests(group, write, n_boot, n_permutations, seed)
    _kernels(group, write, n_boot)
    _lmms(group, write, result)
    _flmms(group, write, result, tests)
    _wheel_lmms(group, magnitudes, write)
    _features_and_decoding(group, write, result, seed)
    result.errors = group.errors + result.errors
    result.log_fpath = util.write_log(result.errors, paths['tables'] / LOG_NAME)
    result.files.append(result.log_fpath)
    return result


def _writer(paths, result):
    def write(obj, name):
        if hasattr(obj, 'savefig'):
            result.files += save_figure_formats(obj, paths['figures'] / name)
            return
        fpath = paths['tables'] / name
        if name.endswith('.json'):
            util.atomic_write(fpath, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))
        elif name.endswith('.csv'):
            util.write_csv(obj, fpath)
        else:
            util.df2pqt(obj, fpath)
        result.files.append(fpath)

    paths['figures'].mkdir(parents=True, exist_ok=True)
    return write


def _traces_and_tests(group, write, n_boot, n_permutations, seed):
    """Recording-mean traces per outcome, cluster tests correct vs incorrect, trace figure."""
    traces = group.get_mean_traces(split_by='feedbackType')
    if traces.empty:
        return {}
    write(traces, 'mean_traces.pqt')
    tests, rows = {}, []
    for (target, event), sub in traces.groupby(['target_NM', 'event']):
        wide = sub.pivot(
            index=['eid', 'fiber_idx'], columns=['feedbackType', 'time'], values='response'
        )
        if {1.0, -1.0} - set(wide.columns.get_level_values(0)) or len(wide) < 2:
            continue
        correct, incorrect = wide[1.0].to_numpy(), wide[-1.0].to_numpy()
        test = waveforms.cluster_permutation_test(
            correct,
            incorrect,
            n_permutations=n_permutations,
            seed=seed,
            tpts=wide[1.0].columns.to_numpy(dtype=float),
            paired=True,
        )
        tests[(target, event)] = test
        if len(test['clusters']):
            rows.append(
                test['clusters'].assign(target_NM=target, event=event, n_recordings=len(wide))
            )
    if rows:
        write(pd.concat(rows, ignore_index=True), 'waveform_tests.pqt')
    write(vr.plot_mean_traces(traces, tests, n_boot=n_boot), 'mean_traces')
    return tests


FLMM_FORMULA = 'reward + log_contrast + side'
FLMM_EFFECTS = {'feedback_times': 'reward', 'stimOn_times': 'log_contrast'}  # event -> term


def _flmms(group, write, result, tests):
    """FLMM per target-NM of the feedback and stimulus-onset traces; tables and figure."""
    results = {}
    for event in FLMM_EFFECTS:
        results.update(group.fit_flmm(FLMM_FORMULA, event=event))
    table = flmm.coefficient_table(results)
    intervals = flmm.intervals_table(results)
    write(table, 'flmm_coefficients.pqt')
    write(intervals, 'flmm_intervals.pqt')
    write(intervals, 'flmm_intervals.csv')
    if len(table):  # tests with clusters only, as the --plot redraw reads them back
        masks = {key: test['significant'] for key, test in tests.items() if len(test['clusters'])}
        write(vr.plot_flmm(table, masks), 'flmm_coefficients')
    of_interest = intervals['event'].map(FLMM_EFFECTS) == intervals['term']
    result.flmm_intervals = intervals[of_interest].reset_index(drop=True)


def _kernels(group, write, n_boot):
    """Event kernels of every recording (table), one figure per target-NM, and the mixed
    models by NM on the overlap-free kernel magnitudes."""
    table = group.get_kernels()
    if table.empty:
        return
    write(table, 'kernels.pqt')
    _kernel_figures(table, write, n_boot)
    kernel_group = group.filter(np.ones(len(group), bool))  # shares the session cache
    kernel_group.get_response_magnitudes(source='kernel')
    coefficients = kernel_group.fit_lmm(by=('NM', 'event'))
    write(coefficients, 'lmm_coefficients_kernel_by_NM.csv')
    group.errors += kernel_group.errors


def _kernel_figures(table, write, n_boot):
    for target, sub in table.groupby('target_NM', observed=True):
        write(vr.plot_kernels(sub, target, n_boot=n_boot), f'kernels_{target}')


def _tests_from_clusters(traces, clusters, alpha=0.05):
    """``{(target_NM, event): {'significant': bool per time sample}}`` from saved clusters."""
    tests = {}
    for (target, event), sub in clusters.groupby(['target_NM', 'event']):
        n_times = traces.loc[
            (traces['target_NM'] == target) & (traces['event'] == event), 'time'
        ].nunique()
        tests[(target, event)] = {'significant': waveforms.significant_samples(sub, n_times, alpha)}
    return tests


def plot_saved_responses(root=None, n_boot=1000):
    """Redraw every figure of :func:`run_responses` from its saved tables (no recomputation).

    Only the bootstrap bands of the mean traces are resampled (``n_boot``); sessions and
    HDF5 files are not read. Figures whose tables are missing are skipped.

    Returns
    -------
    list of pathlib.Path
        The figure files written.
    """
    paths = output_paths(root)
    result = ResponsesResult()
    write = _writer(paths, result)

    def read(name):
        fpath = paths['tables'] / name
        return pd.read_parquet(fpath) if fpath.exists() else None

    traces, clusters = read('mean_traces.pqt'), read('waveform_tests.pqt')
    tests = {}
    if traces is not None:
        tests = _tests_from_clusters(traces, clusters) if clusters is not None else {}
        write(vr.plot_mean_traces(traces, tests, n_boot=n_boot), 'mean_traces')
    coefficients = read('flmm_coefficients.pqt')
    if coefficients is not None and len(coefficients):
        masks = {key: test['significant'] for key, test in tests.items()}
        write(vr.plot_flmm(coefficients, masks), 'flmm_coefficients')
    kernels = read('kernels.pqt')
    if kernels is not None and len(kernels):
        _kernel_figures(kernels, write, n_boot)
    for name, group_col in (('lmm_coefficients', 'target_NM'), ('lmm_coefficients_by_NM', 'NM')):
        table = read(f'{name}.pqt')
        if table is not None and len(table):
            write(vr.plot_lmm_coefficients(table, group_col=group_col), name)
        means_name = name.replace('coefficients', 'marginal_means')
        if (paths['tables'] / f'{means_name}.csv').exists():
            means = pd.read_csv(paths['tables'] / f'{means_name}.csv')
            if len(means):
                write(vr.plot_marginal_means(means, table, group_col=group_col), means_name)
    wheel = read('wheel_lmm_summary.pqt')
    if wheel is not None and len(wheel):
        write(vr.plot_wheel_lmm(wheel), 'wheel_lmm_delta_r2')
    similarity = read('response_similarity_matrix.pqt')
    if similarity is not None and len(similarity) > 1:
        index_columns = list(similarity.columns[: similarity.shape[1] - len(similarity)])
        write(vr.plot_similarity_matrix(similarity.set_index(index_columns)), 'similarity_matrix')
    confusion, summary = read('confusion_matrix.pqt'), paths['tables'] / 'decoding_summary.json'
    if confusion is not None and summary.exists():
        confusion = confusion.set_index(confusion.columns[0])
        decoding = json.loads(summary.read_text())
        decoder = SimpleNamespace(
            confusion=confusion,
            recall=pd.Series(decoding['recall']),
            chance=decoding['chance'],
            balanced_accuracy=decoding['balanced_accuracy'],
            contributions=read('feature_contributions.pqt'),
        )
        write(vr.plot_confusion_matrix(confusion), 'confusion_matrix')
        write(vr.plot_decoding_summary(decoder), 'decoding_summary')
    return result.files


def _lmms(group, write, result):
    """Mixed models per target-NM (OLS fallback) and per NM; coefficient figures."""
    for by, name in (
        (('target_NM', 'event'), 'lmm_coefficients'),
        (('NM', 'event'), 'lmm_coefficients_by_NM'),
    ):
        table = group.fit_lmm(by=by, fallback_ols=by[0] == 'target_NM')
        write(table, f'{name}.pqt')
        write(table, f'{name}.csv')
        means = lmm.marginal_means_table(group.lmm_results, by)
        means_name = name.replace('coefficients', 'marginal_means')
        write(means, f'{means_name}.csv')
        if len(table):
            write(vr.plot_lmm_coefficients(table, group_col=by[0]), name)
        if len(means):
            write(vr.plot_marginal_means(means, table, group_col=by[0]), means_name)
    table = group.lmm_coefficients
    if len(table):
        result.lmm_signs = table[table['term'].isin(['log_contrast', 'reward'])].reset_index(
            drop=True
        )


def _wheel_lmms(group, magnitudes, write):
    """Per-trial wheel kinematics, and whether the stimulus response predicts them."""
    kinematics = group.get_wheel_kinematics()
    write(kinematics, 'peak_velocity.pqt')
    stim = magnitudes[magnitudes['event'] == 'stimOn_times'].drop(columns='reaction_time')
    trials = ar.add_side(stim.merge(kinematics, on=['eid', 'trial'], how='inner'))
    summary = lmm.fit_wheel_lmms(trials)
    write(summary, 'wheel_lmm_summary.pqt')
    write(summary, 'wheel_lmm_summary.csv')
    if len(summary):
        write(vr.plot_wheel_lmm(summary), 'wheel_lmm_delta_r2')


def _features_and_decoding(group, write, result, seed):
    features = group.get_response_features(nan_handling='drop_features')
    write(_flat(features), 'response_matrix.pqt')
    similarity = group.response_similarity_matrix()
    if len(similarity) > 1:
        flat = similarity.copy()
        flat.columns = [f'{e}_{f}' for e, _, f in similarity.columns]
        write(_flat(flat), 'response_similarity_matrix.pqt')
        write(vr.plot_similarity_matrix(similarity), 'similarity_matrix')
    try:
        decoder = group.decode_target(seed=seed)
    except ValueError as error:
        log.warning(f'decode_target skipped: {error}')
        result.errors.append(analysis_log_entry('decode_target', error))
        return
    write(decoder.confusion.reset_index(), 'confusion_matrix.pqt')
    write(decoder.coefficients.rename_axis('class').reset_index(), 'decoding_coefficients.pqt')
    write(decoder.contributions, 'feature_contributions.pqt')
    result.decoding = {
        'label': 'target_NM',
        'accuracy': decoder.accuracy,
        'balanced_accuracy': decoder.balanced_accuracy,
        'chance': decoder.chance,
        'n_classes': len(decoder.confusion),
        'n_recordings': int(decoder.confusion.to_numpy().sum()),
        'n_subjects': int(len(np.unique(decoder.subjects))),
        'C': decoder.C,
        'recall': decoder.recall.round(3).to_dict(),
    }
    write(result.decoding, 'decoding_summary.json')
    write(vr.plot_confusion_matrix(decoder.confusion), 'confusion_matrix')
    write(vr.plot_decoding_summary(decoder), 'decoding_summary')


def _flat(frame):
    return frame.reset_index()
