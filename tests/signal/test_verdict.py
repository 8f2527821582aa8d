"""QC verdict: every rule flips at its threshold; tables; real recordings of known quality."""

import numpy as np
import pandas as pd
import pytest

from iblnm import config
from iblnm.signal import artefacts as af
from iblnm.signal import qc
from iblnm.signal import verdict as sv

RULES = config.QC_VERDICT_RULES


def _just(rule, inside):
    """A value just inside (rule does not fire) or just outside (fires) the rule's threshold
    (for a 'missing' rule: a value, or NaN)."""
    if rule['op'] == sv.MISSING:
        return 1.0 if inside else np.nan
    threshold = float(rule['threshold'])
    step = max(abs(threshold) * 1e-3, 1e-6)
    fires_above = rule['op'] in ('>', '>=')
    if rule['op'] in ('>', '<'):  # strict: the threshold itself does not fire
        return threshold if inside else threshold + (step if fires_above else -step)
    return threshold - step if fires_above == inside else threshold + step


def _conditions_met(rule):
    """Values that satisfy the extra ('and') conditions of a compound rule."""
    return {c['metric']: _just(c, inside=False) for c in rule.get('and', ())}


@pytest.mark.parametrize('rule', RULES, ids=[r['name'] for r in RULES])
def test_each_rule_flips_at_its_threshold(rule):
    base = _conditions_met(rule)
    outside = sv.qc_verdict({**base, rule['metric']: _just(rule, inside=False)}, rules=[rule])
    inside = sv.qc_verdict({**base, rule['metric']: _just(rule, inside=True)}, rules=[rule])
    assert outside == (rule['severity'], [rule['name']])
    assert inside == ('PASS', [])


@pytest.mark.parametrize(
    'rule', [r for r in RULES if r.get('and')], ids=[r['name'] for r in RULES if r.get('and')]
)
def test_each_condition_of_a_compound_rule_flips_it(rule):
    assert rule['and'], 'config has a compound rule (no_signal)'
    firing = {**_conditions_met(rule), rule['metric']: _just(rule, inside=False)}
    assert sv.qc_verdict(firing, rules=[rule])[0] == rule['severity']
    for condition in rule['and']:
        inside = {**firing, condition['metric']: _just(condition, inside=True)}
        assert sv.qc_verdict(inside, rules=[rule]) == ('PASS', [])
        missing = {k: x for k, x in firing.items() if k != condition['metric']}
        assert sv.qc_verdict(missing, rules=[rule]) == ('PASS', [])  # missing: not applied


@pytest.mark.parametrize('rule', RULES, ids=[r['name'] for r in RULES])
def test_each_rule_flips_the_verdict_with_all_rules(rule):
    """With the whole rule set, a value just outside names the rule; just inside does not."""
    base = _conditions_met(rule)
    outside = sv.qc_verdict({**base, rule['metric']: _just(rule, inside=False)})
    inside = sv.qc_verdict({**base, rule['metric']: _just(rule, inside=True)})
    assert rule['name'] in outside[1] and rule['name'] not in inside[1]
    assert sv.SEVERITY[outside[0]] >= sv.SEVERITY[rule['severity']]


def test_missing_or_nan_metrics_do_not_apply():
    threshold_rules = [r for r in RULES if r['op'] != sv.MISSING]
    assert sv.qc_verdict({}, threshold_rules) == ('PASS', [])
    nan = dict.fromkeys({r['metric'] for r in RULES}, np.nan)
    assert sv.qc_verdict(nan, threshold_rules) == ('PASS', [])
    assert sv.qc_verdict({'residual_power_ratio': None, 'iso_slope': 'n/a'}, threshold_rules) == (
        'PASS',
        [],
    )


def test_a_recording_without_the_sliding_qc_is_not_assessed_unless_it_already_failed():
    raw_only = {'n_early_samples': 0, 'n_band_inversions': 0}
    assert sv.qc_verdict({}) == ('FAIL', ['not_assessed'])
    assert sv.qc_verdict(raw_only) == ('FAIL', ['not_assessed'])
    assert sv.qc_verdict({**raw_only, 'light_above_floor': np.nan}) == ('FAIL', ['not_assessed'])
    assert sv.qc_verdict({**raw_only, 'light_above_floor': 0.5}) == ('PASS', [])
    # a FAIL already says the recording is not usable: no second reason
    assert sv.qc_verdict({'dropped_fiber': 1.0}) == ('FAIL', ['dropped_fiber'])
    assert sv.qc_verdict({**raw_only, 'n_band_inversions': 2}) == ('FAIL', ['band_inversions'])
    # a WARNING does not clear it: both reasons, in rule order
    assert sv.qc_verdict({'n_shared_steps': 5}) == ('FAIL', ['shared_steps', 'not_assessed'])
    rule = next(r for r in RULES if r['name'] == 'not_assessed')
    with pytest.raises(ValueError, match='no conditions'):
        sv.validate_rules([{**rule, 'and': [{'metric': 'x', 'op': '>', 'threshold': 0}]}])
    with pytest.raises(ValueError, match='unknown op'):
        sv.validate_rules([{**rule, 'op': 'absent'}])


def test_worst_severity_wins_and_reasons_keep_rule_order():
    rules = [
        {'name': 'b', 'metric': 'x', 'op': '>', 'threshold': 1, 'severity': 'WARNING'},
        {'name': 'a', 'metric': 'y', 'op': '<', 'threshold': 0, 'severity': 'FAIL'},
    ]
    assert sv.qc_verdict({'x': 2, 'y': -1}, rules) == ('FAIL', ['b', 'a'])
    assert sv.qc_verdict({'x': 2, 'y': 1}, rules) == ('WARNING', ['b'])


def test_config_rules_are_valid_and_name_the_required_reasons():
    sv.validate_rules(RULES)
    names = {r['name'] for r in RULES}
    assert {'negative_iso_slope', 'no_signal', 'shared_artefacts', 'band_inversions'} <= names
    with pytest.raises(ValueError, match='unknown op'):
        sv.validate_rules([{**RULES[0], 'op': '=='}])
    with pytest.raises(ValueError, match='used twice'):
        sv.validate_rules([RULES[0], RULES[0]])


def test_add_verdicts_per_recording_with_band_prefixed_metrics():
    qc_table = pd.DataFrame(
        {
            'eid': ['e'] * 4,
            'brain_region': ['A', 'A', 'B', 'B'],
            'band': ['GCaMP', 'Isosbestic'] * 2,
            'light_above_floor': [0.5, 0.001, 0.5, 0.5],  # A: isosbestic band without light
            'n_band_inversions': [0, 0, 0, 0],
        }
    )
    out = sv.add_verdicts(qc_table)
    assert list(out['verdict']) == ['FAIL', 'FAIL', 'PASS', 'PASS']
    assert list(out['verdict_reasons']) == ['no_light_isosbestic'] * 2 + [''] * 2
    metrics = sv.recording_metrics(qc_table.iloc[:2])
    assert metrics['light_above_floor'] == 0.5  # the GCaMP row keeps the bare names
    assert metrics['Isosbestic:light_above_floor'] == 0.001
    table = sv.recording_verdicts(out).assign(target_NM=['X-DA', 'Y-5HT'])
    by_verdict, by_reason = sv.verdict_counts(table)
    assert by_verdict.loc['X-DA', 'FAIL'] == 1 and by_verdict.loc['Y-5HT', 'PASS'] == 1
    assert by_reason.to_dict('records') == [
        {
            'target_NM': 'X-DA',
            'reason': 'no_light_isosbestic',
            'severity': 'FAIL',
            'n_recordings': 1,
        }
    ]
    assert sv.split_reasons(sv.join_reasons(['a', 'b'])) == ['a', 'b']
    assert sv.split_reasons('') == [] and sv.split_reasons(None) == []


def test_a_table_of_earlier_rules_is_rescored_alike_by_session_group_and_overview(caplog):
    """Stored verdicts written with earlier rules (here: PASS for a recording without the
    sliding QC, before ``not_assessed``) are re-scored from the metrics, with a warning,
    wherever a verdict is read; a table of verdicts without metrics keeps them."""
    from iblnm.data import PhotometrySession
    from iblnm.group import _verdict_lookup
    from iblnm.pipeline.overview import verdict_tables

    e1, e2 = '11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222'
    qc_table = pd.DataFrame(
        {
            'eid': [e1, e1, e2, e2],
            'brain_region': ['VTA', 'VTA', 'DR', 'DR'],
            'band': ['GCaMP', 'Isosbestic'] * 2,
            'light_above_floor': [0.5, 0.5, np.nan, np.nan],  # DR: stopped before the sliding QC
            'n_band_inversions': [0.0] * 4,
            'verdict': ['PASS'] * 4,  # as an earlier run stored them
            'verdict_reasons': [''] * 4,
        }
    )
    expected = {(e1, 'VTA'): 'PASS', (e2, 'DR'): 'FAIL'}
    with caplog.at_level('WARNING', logger='iblnm.signal.verdict'):
        assert _verdict_lookup(qc_table) == expected
    assert '1 of 2 recordings: the stored QC verdict differs' in caplog.text
    session = PhotometrySession({'eid': e2}, one=object())
    session.qc = qc_table[qc_table['eid'] == e2]
    assert set(session.verdicts['verdict']) == {'FAIL'}
    catalog = pd.DataFrame(
        {
            'eid': [e1, e2],
            'subject': ['m1', 'm2'],
            'brain_region': [['VTA'], ['DR']],
            'hemisphere': [['l'], ['r']],
            'target_NM': [['VTA-DA'], ['DR-5HT']],
        }
    )
    recordings = verdict_tables(catalog, qc_table)[0]
    assert dict(zip(zip(recordings['eid'], recordings['brain_region']), recordings['verdict'])) == (
        expected
    )
    only_verdicts = qc_table[['eid', 'brain_region', 'band', 'verdict', 'verdict_reasons']]
    assert set(sv.recording_verdicts(only_verdicts)['verdict']) == {'PASS'}
    caplog.clear()
    with caplog.at_level('WARNING', logger='iblnm.signal.verdict'):
        sv.recording_verdicts(sv.add_verdicts(qc_table))  # a table of these rules: no warning
        # explicit rules score the metrics even when they read none of the table's columns
        mine = [
            {
                'name': 'x',
                'metric': 'absent',
                'op': 'missing',
                'threshold': 0,
                'severity': 'WARNING',
            }
        ]
        assert set(sv.recording_verdicts(qc_table, rules=mine)['verdict']) == {'WARNING'}
    assert caplog.text == ''


# ---------------------------------------------------------------------------
# Synthetic fibers of known quality
# ---------------------------------------------------------------------------
def _fiber(kind, seed=0, fs=30.0, minutes=20):
    """(times, gcamp, iso) of a synthetic fiber: 'clean', 'no_signal', 'artefact', 'dark',
    'haemo' (no signal, a shared fluctuation the isosbestic band explains)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(minutes * 60 * fs)) / fs
    floor = config.QC_CAMERA_FLOOR
    bleach = 1 + 0.2 * np.exp(-t / 600)
    motion = np.zeros(t.size)
    for start in rng.uniform(0, t[-1], 8):  # brief shared dips
        motion -= 0.03 * np.exp(-(((t - start) / 0.1) ** 2))
    kernel = np.exp(-np.arange(0, 3, 1 / fs) / 0.5)
    spikes = (rng.random(t.size) < 0.5 / fs) * rng.exponential(0.05, t.size)
    dff = np.convolve(spikes, kernel)[: t.size] if kind in ('clean', 'artefact') else 0
    if kind == 'haemo':  # no signal, a large shared (haemodynamic) fluctuation, both bands
        slow = np.convolve(rng.normal(size=t.size), np.ones(int(fs)) / np.sqrt(fs), 'same')
        motion = motion + 0.01 * slow
    light_g, light_i = (2e-5, 2e-5) if kind == 'dark' else (4e-3, 6e-3)
    noise = 1e-3
    gcamp = floor + light_g * bleach * (1 + dff) * (1 + motion) * (
        1 + noise * rng.normal(size=t.size)
    )
    iso = floor + light_i * bleach * (1 + motion) * (1 + noise * rng.normal(size=t.size))
    if kind == 'artefact':  # square-wave excursions in both bands, 20 % of the time
        square = ((t // 30) % 5 == 0) * -0.3
        gcamp = floor + (gcamp - floor) * (1 + square)
        iso = floor + (iso - floor) * (1 + square)
    return t, gcamp, iso


def _verdict(t, gcamp, iso):
    rows = qc.fiber_qc(t, gcamp, iso)
    table = pd.DataFrame(
        [{'eid': 'e', 'brain_region': 'A', 'band': b, **m} for b, m in rows.items()]
    )
    return sv.add_verdicts(table).iloc[0][['verdict', 'verdict_reasons']].tolist()


@pytest.mark.parametrize(
    ('kind', 'verdict', 'reason'),
    [
        ('clean', 'PASS', None),
        ('no_signal', 'FAIL', 'white_noise_only'),
        ('artefact', 'FAIL', 'shared_artefacts'),
        ('dark', 'FAIL', 'no_light_gcamp'),
        ('haemo', 'FAIL', 'no_signal'),
    ],
)
def test_synthetic_fibers_of_known_quality(kind, verdict, reason):
    got, reasons = _verdict(*_fiber(kind))
    assert got == verdict, reasons
    if reason:
        assert reason in sv.split_reasons(reasons)


def _saturate(values, t, start_s=300.0, duration_s=120.0):
    """A copy of ``values`` at the saturation value for ``duration_s`` from ``start_s``."""
    out = np.array(values, dtype=float)
    out[(t >= start_s) & (t < start_s + duration_s)] = config.SATURATION_LEVEL
    return out


@pytest.mark.parametrize('band', ['gcamp', 'iso'])
def test_a_saturated_stretch_is_left_out_of_the_no_signal_metrics(band):
    """2 min of a clean fiber's band at the saturation value: the artefact masks count it
    (``frac_saturated``); the "no signal" metrics leave it out, so the fiber does not also
    read as white noise or as no signal (they used to: iso_explained 0.17 → 0.00)."""
    t, gcamp, iso = _fiber('clean')
    clean = qc.signal_qc(t, gcamp, iso)
    if band == 'gcamp':
        gcamp = _saturate(gcamp, t)
    else:
        iso = _saturate(iso, t)
    saturated = qc.signal_qc(t, gcamp, iso)
    # iso_explained is a ratio of robust SDs (MAD): near 0 it moves by ~0.02 when 2 min go
    for metric, tol in (('iso_explained', 0.03), ('residual_power_ratio', 0.01)):
        assert saturated[metric] == pytest.approx(clean[metric], rel=0.1, abs=tol), metric
    assert saturated['upper_tail_excess'] == pytest.approx(clean['upper_tail_excess'], abs=0.01)
    assert _verdict(t, gcamp, iso) == ['PASS', '']


def test_values_above_the_saturation_value_are_other_units_not_saturated():
    t, gcamp, iso = _fiber('clean')
    scaled = gcamp * 1000  # data in other units: above 1.0 everywhere
    assert not af.saturated_samples(scaled).any()
    assert af.saturated_samples(_saturate(gcamp, t)).sum() == 120 * 30
    assert not af.saturated_samples(np.array([np.nan, np.inf, 0.5])).any()


# ---------------------------------------------------------------------------
# Real recordings (raw Neurophotometrics files, whole recordings)
# ---------------------------------------------------------------------------
REAL = {
    'version_5': ('neurophotometrics_versions/version_5', ['G0', 'G1']),
    'version_2': ('neurophotometrics_versions/version_2', ['Region1G', 'Region4G']),
    'fip_40': (
        'wittenlab/Subjects/fip_40/2023-05-18/001/raw_photometry_data',
        ['Region0G', 'Region1G', 'Region2G'],
    ),
}


def _raw_verdicts(real_data_dir, name):
    from iblnm.loaders import read_raw_photometry

    folder, rois = REAL[name]
    raw = read_raw_photometry(real_data_dir / folder / '_neurophotometrics_fpData.raw.pqt')
    gcamp, iso = raw[raw['led'] == 2], raw[raw['led'] == 1]
    out = {}
    for roi in rois:
        reference = iso[roi].to_numpy() if len(iso) else None
        out[roi] = _verdict(gcamp['times'].to_numpy(), gcamp[roi].to_numpy(), reference)
    return out


def test_real_almost_no_light_fails(real_data_dir):
    """version_5: the fibers sit at the camera floor (the isosbestic band entirely)."""
    for roi, (verdict, reasons) in _raw_verdicts(real_data_dir, 'version_5').items():
        assert verdict == 'FAIL', (roi, reasons)
        assert 'no_light_isosbestic' in sv.split_reasons(reasons)


def test_real_flat_at_floor_rois_fail(real_data_dir):
    for roi, (verdict, reasons) in _raw_verdicts(real_data_dir, 'version_2').items():
        assert verdict == 'FAIL', (roi, reasons)
        assert {'no_light_gcamp', 'quantised_gcamp'} <= set(sv.split_reasons(reasons))


def test_real_fibers_with_clear_responses_do_not_fail(real_data_dir):
    """fip_40 (no isosbestic band, 50 Hz): three fibers with reward responses."""
    for roi, (verdict, reasons) in _raw_verdicts(real_data_dir, 'fip_40').items():
        assert verdict != 'FAIL', (roi, reasons)


def test_real_cq002_fibers_with_signal_do_not_fail(cq002_bands):
    """CQ002 (task period, dropouts to the floor): G0 (SI) and G4 (PPT) are not FAIL."""
    (times, gcamp), (_, iso) = cq002_bands['GCaMP'], cq002_bands['Isosbestic']
    n = min(len(gcamp), len(iso))
    for fiber in range(2):
        verdict, reasons = _verdict(times[:n], gcamp[:n, fiber], iso[:n, fiber])
        assert verdict != 'FAIL', (fiber, reasons)


def test_real_cq002_saturated_stretch_keeps_the_no_signal_verdict(cq002_bands):
    """CQ002 with 2 min of SI's GCaMP band saturated: the same "no signal" reasons as without."""
    (times, gcamp), (_, iso) = cq002_bands['GCaMP'], cq002_bands['Isosbestic']
    n = min(len(gcamp), len(iso))
    t, g, i = times[:n], gcamp[:n, 0], iso[:n, 0]
    assert _verdict(t, _saturate(g, t, start_s=t[0] + 1000), i) == _verdict(t, g, i)


def test_overview_verdict_tables():
    from iblnm.pipeline.overview import verdict_count_table, verdict_tables

    catalog = pd.DataFrame(
        {
            'eid': ['e1', 'e2'],
            'subject': ['m1', 'm2'],
            'brain_region': [['VTA', 'DR'], ['VTA']],
            'hemisphere': [['l', 'r'], ['l']],
            'target_NM': [['VTA-DA', 'DR-5HT'], ['VTA-DA']],
        }
    )
    qc_table = pd.DataFrame(
        {
            'eid': ['e1', 'e1', 'e2'],
            'brain_region': ['VTA', 'DR', 'VTA'],
            'band': ['GCaMP'] * 3,
            'light_above_floor': [1.0, 0.0, 1.0],
            'n_noise_levels': [100.0, 1.0, 100.0],
        }
    )
    recordings, by_verdict, by_reason = verdict_tables(catalog, sv.add_verdicts(qc_table))
    assert by_verdict.loc['VTA-DA', 'PASS'] == 2 and by_verdict.loc['DR-5HT', 'FAIL'] == 1
    counts = verdict_count_table(recordings)
    dr = counts[counts['target_NM'] == 'DR-5HT']
    assert set(dr['reason']) == {'no_light_gcamp', 'quantised_gcamp'}
    assert (dr['verdict'] == 'FAIL').all() and (dr['n_recordings'] == 1).all()
    vta = counts[counts['target_NM'] == 'VTA-DA']
    assert vta.to_dict('records') == [
        {'target_NM': 'VTA-DA', 'verdict': 'PASS', 'reason': '', 'n_recordings': 2}
    ]


@pytest.fixture
def rules_file(tmp_path):
    """Install the settings of a TOML file for one test: ``use(text)``; reset afterwards."""
    from iblnm import settings

    def use(text):
        fpath = tmp_path / 'iblnm.toml'
        fpath.write_text(text)
        return settings.use(settings.resolve(config_file=fpath))

    yield use
    settings.reset()


def test_a_lab_sets_verdict_thresholds_in_the_settings_file(rules_file):
    """``[qc_rules.<name>]`` changes a rule's threshold / severity for every reader; the
    scoring hash follows, the processing hash does not."""
    import copy

    from iblnm import provenance

    defaults = copy.deepcopy(config.QC_VERDICT_RULES)
    metrics = {'light_above_floor': 0.5, 'residual_power_ratio': 1.5}
    assert sv.qc_verdict(metrics) == ('WARNING', ['weak_signal'])  # default: < 2.0 warns
    before = provenance.params_hash(), provenance.scoring_hash()
    rules_file('[qc_rules.weak_signal]\nthreshold = 1.4\n')
    assert sv.qc_verdict(metrics) == ('PASS', [])
    assert next(r for r in sv.active_rules() if r['name'] == 'weak_signal')['threshold'] == 1.4
    rules_file('[qc_rules.weak_signal]\nseverity = "FAIL"\n')
    assert sv.qc_verdict(metrics) == ('FAIL', ['weak_signal'])
    table = pd.DataFrame([{'eid': 'e', 'brain_region': 'A', 'band': 'GCaMP', **metrics}])
    assert list(sv.recording_verdicts(table)['verdict']) == ['FAIL']
    assert provenance.params_hash() == before[0] and provenance.scoring_hash() != before[1]
    assert config.QC_VERDICT_RULES == defaults  # the defaults are not modified


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('[qc_rules.no_such_rule]\nthreshold = 1\n', 'no QC verdict rule named'),
        ('[qc_rules.weak_signal]\nthreshold = "high"\n', 'must be a number'),
        ('[qc_rules.weak_signal]\nseverity = "PASS"\n', 'WARNING" or "FAIL'),
        ('[qc_rules.weak_signal]\nmetric = "x"\n', 'must set'),
        ('qc_rules = 3\n', 'table of rule tables'),
    ],
)
def test_bad_verdict_rule_settings_say_what_is_wrong(rules_file, text, match):
    with pytest.raises(ValueError, match=match):
        rules_file(text)
        sv.active_rules()


def test_the_settings_command_shows_the_rules_in_force(tmp_path, capsys):
    import logging

    from iblnm import settings
    from iblnm.cli import main

    logger = logging.getLogger('iblnm')  # main() shows the package's log: undone below
    handlers, level = list(logger.handlers), logger.level
    fpath = tmp_path / 'iblnm.toml'
    fpath.write_text('[qc_rules.weak_signal]\nthreshold = 1.4\n')
    try:
        assert main(['--config', str(fpath), 'settings']) == 0
        out = capsys.readouterr().out
        assert 'qc_rules    weak_signal  [file]' in out
        lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
        assert lines['weak_signal'].split()[-1] == 'settings' and ' 1.4 ' in lines['weak_signal']
        assert lines['no_signal'].split()[-1] == 'default'
        fpath.write_text('[qc_rules.weak]\nthreshold = 1.4\n')
        assert main(['--config', str(fpath), 'settings']) == 1
        assert "no QC verdict rule named ['weak']" in capsys.readouterr().out
    finally:
        settings.reset()
        logger.handlers[:], logger.level = handlers, level
