"""QC verdict of a recording: PASS / WARNING / FAIL from named threshold rules.

A rule is a mapping ``{'name', 'metric', 'op', 'threshold', 'severity'}`` (see
``config.QC_VERDICT_RULES``), optionally with ``'and': [{'metric', 'op', 'threshold'}, ...]``:
it *fires* when ``metrics[metric]`` is present, finite and ``value <op> threshold`` holds (and
so do its extra conditions). A missing or NaN metric never fires (a rule on a metric a
recording does not have, e.g. the isosbestic slope of a single-band recording, does not
apply), except in a rule whose op is ``'missing'``: it fires when its metric is absent or
NaN and no FAIL rule has fired (``not_assessed``: a recording without the metrics every
assessed recording has is not a PASS; one that already failed needs no second reason). The
verdict is the most severe severity among the rules that fired, PASS when none did; the
reasons are the names of the rules that fired, in rule order.

The functions are pure (mappings and tables in, verdicts out), given their ``rules``;
without them they use :func:`active_rules`, the rules in force for the run (the defaults with
the settings file's ``[qc_rules]``).
"""

import logging
import operator
from collections.abc import Mapping

import numpy as np
import pandas as pd

from iblnm import config

log = logging.getLogger(__name__)

OPERATORS = {'<': operator.lt, '<=': operator.le, '>': operator.gt, '>=': operator.ge}
MISSING = 'missing'  # the op of a rule that fires on an absent or NaN metric
SEVERITY = {name: i for i, name in enumerate(config.QC_VERDICTS)}  # PASS 0, WARNING 1, FAIL 2
REASON_SEPARATOR = ';'
KEY_COLUMNS = ('eid', 'brain_region', 'band')
VERDICT_COLUMNS = ('verdict', 'verdict_reasons')
SIGNAL_BAND = 'GCaMP'


def validate_rules(rules):
    """Raise ValueError unless every rule has a name, a metric, a known op and severity."""
    names = set()
    for rule in rules:
        missing = {'name', 'metric', 'op', 'threshold', 'severity'} - set(rule)
        if missing:
            raise ValueError(f'QC rule {rule!r} lacks {sorted(missing)}')
        for condition in rule.get('and', ()):
            if condition['op'] not in OPERATORS:
                raise ValueError(f'QC rule {rule["name"]}: unknown op {condition["op"]!r}')
        if rule['op'] not in OPERATORS and rule['op'] != MISSING:
            raise ValueError(f'QC rule {rule["name"]}: unknown op {rule["op"]!r}')
        if rule['op'] == MISSING and rule.get('and'):
            raise ValueError(f'QC rule {rule["name"]}: a {MISSING!r} rule has no conditions')
        if rule['severity'] not in SEVERITY or rule['severity'] == 'PASS':
            raise ValueError(f'QC rule {rule["name"]}: severity must be WARNING or FAIL')
        if rule['name'] in names:
            raise ValueError(f'QC rule name {rule["name"]!r} is used twice')
        names.add(rule['name'])


def active_rules():
    """The verdict rules in force: ``config.QC_VERDICT_RULES`` with the run settings'
    overrides (the ``[qc_rules.<name>]`` tables of the settings file, :mod:`iblnm.settings`).

    Raises
    ------
    ValueError
        When an override names no rule.
    """
    from iblnm import settings

    overrides = {name: dict(fields) for name, fields in settings.current().qc_rules}
    if not overrides:
        return config.QC_VERDICT_RULES
    known = [rule['name'] for rule in config.QC_VERDICT_RULES]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f'qc_rules: no QC verdict rule named {unknown}; the rules: {known}')
    rules = [{**rule, **overrides.get(rule['name'], {})} for rule in config.QC_VERDICT_RULES]
    validate_rules(rules)
    return rules


def rules_table(rules=None):
    """The rules as a table (name, metric, op, threshold, severity, conditions, set_by):
    ``set_by`` is 'settings' where the rule differs from ``config.QC_VERDICT_RULES``."""
    rules = active_rules() if rules is None else rules
    defaults = {rule['name']: rule for rule in config.QC_VERDICT_RULES}
    rows = [
        {
            **{k: rule[k] for k in ('name', 'metric', 'op', 'threshold', 'severity')},
            'conditions': ' and '.join(
                f'{c["metric"]} {c["op"]} {c["threshold"]}' for c in rule.get('and', ())
            ),
            'set_by': 'default' if defaults.get(rule['name']) == rule else 'settings',
        }
        for rule in rules
    ]
    return pd.DataFrame(rows)


def _as_float(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return np.nan
    return value


def _condition_holds(condition, metrics):
    value = _as_float(metrics.get(condition['metric'], np.nan))
    return bool(np.isfinite(value) and OPERATORS[condition['op']](value, condition['threshold']))


def rule_fires(rule, metrics):
    """True when ``rule``'s metric is present, finite and compares true with its threshold,
    and so does every extra condition of its ``'and'`` list (same keys: metric, op,
    threshold); for op ``'missing'``, when the metric is absent or not finite."""
    if rule['op'] == MISSING:
        return not np.isfinite(_as_float(metrics.get(rule['metric'], np.nan)))
    return all(_condition_holds(c, metrics) for c in (rule, *rule.get('and', ())))


def qc_verdict(metrics: Mapping, rules=None):
    """Verdict of one recording from its QC metrics.

    Parameters
    ----------
    metrics : Mapping of str → float
        Metric values (see :func:`recording_metrics` for a recording's qc rows).
    rules : sequence of dict, optional
        Default :func:`active_rules` (``config.QC_VERDICT_RULES`` with the settings' overrides).

    Returns
    -------
    verdict : {'PASS', 'WARNING', 'FAIL'}
    reasons : list of str
        Names of the rules that fired, in rule order.
    """
    rules = active_rules() if rules is None else rules
    fires = [rule_fires(rule, metrics) for rule in rules]
    failed = any(f and r['severity'] == 'FAIL' and r['op'] != MISSING for r, f in zip(rules, fires))
    fired = [r for r, f in zip(rules, fires) if f and not (failed and r['op'] == MISSING)]
    if not fired:
        return 'PASS', []
    verdict = max((rule['severity'] for rule in fired), key=SEVERITY.__getitem__)
    return verdict, [rule['name'] for rule in fired]


def recording_metrics(rows, signal_band=SIGNAL_BAND):
    """One metrics mapping from a recording's qc rows (one per band).

    The signal band's metrics keep their names; another band's metric ``m`` becomes
    ``'{band}:m'`` (e.g. ``'Isosbestic:light_above_floor'``). Rows without a band (raw QC
    only) contribute their metrics under their own names.

    Parameters
    ----------
    rows : pandas.DataFrame or list of dict
        QC rows of one recording (columns ``band`` and metric columns).
    """
    records = rows if isinstance(rows, list) else _records(pd.DataFrame(rows))
    columns = dict.fromkeys(c for r in records for c in r)
    metric_columns = [c for c in columns if c not in (*KEY_COLUMNS, *VERDICT_COLUMNS)]

    def is_plain(record):
        band = record.get('band')
        return band is None or pd.isna(band) or band == signal_band

    out = {}
    for record in (r for r in records if not is_plain(r)):
        for column in metric_columns:
            out[f'{record["band"]}:{column}'] = record[column]
            if column in config.QC_RAW_METRICS:  # whole-recording counts, on every row
                out.setdefault(column, record[column])
    for record in (r for r in records if is_plain(r)):
        for column in metric_columns:
            if not pd.isna(record[column]) or column not in out:
                out[column] = record[column]
    return out


def _records(frame):
    """Rows of a frame as dicts (``to_dict('records')`` boxes every value: 10× slower)."""
    columns = list(frame.columns)
    return [dict(zip(columns, row)) for row in frame.to_numpy(dtype=object)]


def join_reasons(reasons):
    """``['a', 'b']`` → ``'a;b'`` (the form stored in tables and HDF5 files; '' for none)."""
    return REASON_SEPARATOR.join(reasons)


def split_reasons(text):
    """``'a;b'`` → ``['a', 'b']``; '' or None → []."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text == '':
        return []
    return str(text).split(REASON_SEPARATOR)


def add_verdicts(qc, rules=None, signal_band=SIGNAL_BAND):
    """The qc table with ``verdict`` and ``verdict_reasons`` on every row.

    Rows are grouped into recordings by (eid, brain_region); every row of a recording gets
    the recording's verdict and its reasons joined by ';' ('' for PASS).

    Parameters
    ----------
    qc : pandas.DataFrame
        One row per (eid, brain_region, band), metric columns.

    Returns
    -------
    pandas.DataFrame
        A copy with the two columns (replaced if present).
    """
    rules = active_rules() if rules is None else rules  # once per table, not per recording
    qc = qc.drop(columns=[c for c in VERDICT_COLUMNS if c in qc]).copy()
    keys = [c for c in ('eid', 'brain_region') if c in qc]
    groups = {}  # recording → row positions, in order of first appearance
    records = _records(qc)
    for position, record in enumerate(records):
        key = tuple(_group_key(record[k]) for k in keys)
        groups.setdefault(key, []).append(position)
    verdicts, reasons = np.full(len(qc), 'PASS', dtype=object), np.full(len(qc), '', dtype=object)
    for positions in groups.values():
        metrics = recording_metrics([records[i] for i in positions], signal_band)
        verdict, fired = qc_verdict(metrics, rules)
        verdicts[positions], reasons[positions] = verdict, join_reasons(fired)
    qc['verdict'] = verdicts
    qc['verdict_reasons'] = reasons
    return qc


def _group_key(value):
    """Missing values (None, NaN) form one group, as ``groupby(dropna=False)``."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def recording_verdicts(qc, signal_band=SIGNAL_BAND, rules=None):
    """One row per recording: eid, brain_region, verdict, verdict_reasons (from a qc table).

    The verdicts are scored from the table's metrics with ``rules`` (default
    :func:`active_rules`), as :attr:`iblnm.data.PhotometrySession.qc` scores them, so
    a session, a group and the overview give a recording the same verdict. A table with
    verdict columns whose verdicts differ from those of the rules in force (one written with
    earlier rules) is re-scored with a warning naming how many changed (no warning for
    explicit ``rules``); one without a metric column (keys and verdicts only)
    keeps its verdicts.
    """
    if qc is None or len(qc) == 0:
        return pd.DataFrame(columns=['eid', 'brain_region', *VERDICT_COLUMNS])
    in_force = rules is None
    rules = active_rules() if rules is None else rules
    has_verdicts = set(VERDICT_COLUMNS) <= set(qc.columns)
    rescore = not has_verdicts or _has_metrics(qc)  # verdicts only: nothing to score from
    scored = add_verdicts(qc, rules=rules, signal_band=signal_band) if rescore else qc
    table = scored[['eid', 'brain_region', *VERDICT_COLUMNS]]
    table = table.drop_duplicates(['eid', 'brain_region']).reset_index(drop=True)
    if in_force and has_verdicts and rescore:
        _warn_changed_verdicts(qc, table)
    return table


def _has_metrics(qc):
    """True when ``qc`` has a column besides the keys and the verdicts (a metric)."""
    return bool(set(qc.columns) - {*KEY_COLUMNS, *VERDICT_COLUMNS})


def _warn_changed_verdicts(stored, scored):
    """Log how many recordings' stored verdicts differ from the ones scored now."""
    before = stored[['eid', 'brain_region', 'verdict']].drop_duplicates(['eid', 'brain_region'])
    both = before.merge(scored, on=['eid', 'brain_region'], suffixes=('_stored', ''))
    changed = both['verdict_stored'].astype(str) != both['verdict'].astype(str)
    if changed.any():
        log.warning(
            '%d of %d recordings: the stored QC verdict differs from the one the rules in force '
            'give (a table of an earlier run, or other [qc_rules] settings); using the rules in '
            'force. Running the photometry stage again stores them (no reprocessing).',
            int(changed.sum()),
            len(both),
        )


def verdict_counts(verdicts, by='target_NM'):
    """Counts of recordings per ``by`` value × verdict, and per ``by`` value × reason.

    Parameters
    ----------
    verdicts : pandas.DataFrame
        One row per recording with ``by``, ``verdict`` and ``verdict_reasons``.

    Returns
    -------
    by_verdict : pandas.DataFrame
        Index ``by`` values, columns PASS / WARNING / FAIL (0 where none).
    by_reason : pandas.DataFrame
        Long table: ``by``, ``reason``, ``severity`` (of the recording), ``n_recordings``.
    """
    by_verdict = (
        pd.crosstab(verdicts[by], verdicts['verdict'])
        .reindex(columns=list(config.QC_VERDICTS), fill_value=0)
        .astype(int)
    )
    long = verdicts.assign(reason=verdicts['verdict_reasons'].map(split_reasons)).explode('reason')
    long = long.dropna(subset=['reason'])
    by_reason = (
        long.groupby([by, 'reason', 'verdict'], observed=True)
        .size()
        .rename('n_recordings')
        .reset_index()
        .rename(columns={'verdict': 'severity'})
    )
    return by_verdict, by_reason
