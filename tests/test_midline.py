"""Contra / ipsi labels: one definition (iblnm.recordings.laterality), midline regions get neither.

A fiber in a midline nucleus (config.MIDLINE_REGIONS: DR, MR) is lateral to no side whatever
its physical ML offset, and so is a fiber whose hemisphere is unknown: every analysis that
labels trials contra / ipsi gives those recordings neither label.
"""

import numpy as np
import pandas as pd
import pytest

from iblnm import recordings, task
from iblnm.analysis import encoding as enc
from iblnm.analysis import lmm
from iblnm.analysis import responses as ar
from iblnm.signal import event_kernels as ek


# ---------------------------------------------------------------------------
# The definition
# ---------------------------------------------------------------------------
def test_laterality_is_the_hemisphere_of_a_bilateral_region_only():
    cases = {
        ('VTA', 'l'): 'l',
        ('VTA', 'r'): 'r',
        ('SNc-r', 'r'): 'r',
        ('LC', ''): None,  # unknown side
        ('NBM', None): None,
        ('DR', 'l'): None,  # midline nucleus: its physical side is no laterality
        ('DRN-r', 'r'): None,  # name fixes and suffixes applied
        ('MR', 'r'): None,
    }
    for (region, hemi), expected in cases.items():
        assert recordings.laterality(region, hemi) == expected, (region, hemi)
    regions, hemis = zip(*cases)
    got = recordings.lateralities(list(regions) + [None], list(hemis) + ['l'])
    assert list(got) == [*cases.values(), 'l']  # a missing region: only the side decides


def test_the_recordings_table_keeps_the_physical_side_and_says_midline():
    session = {
        'eid': 'e0',
        'subject': 'm1',
        'NM': '5HT',
        'brain_region': ['DR', 'VTA'],
        'hemisphere': ['l', 'r'],
        'target_NM': ['DR-5HT', 'VTA-DA'],
    }
    table = recordings.recordings_table(pd.DataFrame([session]))
    assert table['hemisphere'].tolist() == ['l', 'r']
    assert table['midline'].tolist() == [True, False] and table['midline'].dtype == bool


# ---------------------------------------------------------------------------
# Trial labels (task.add_relative_contrast, responses.add_side)
# ---------------------------------------------------------------------------
def _stimuli(region, hemisphere):
    return pd.DataFrame(
        {
            'signed_contrast': [25.0, -25.0, 0.0, -0.0, np.nan],
            'stim_side': ['right', 'left', 'right', 'left', None],
            'brain_region': region,
            'hemisphere': hemisphere,
        }
    )


def test_contra_ipsi_labels_of_lateral_and_midline_recordings():
    left_vta = task.add_relative_contrast(_stimuli('VTA', 'l'))
    assert left_vta['side'].tolist() == ['contra', 'ipsi', 'contra', 'ipsi', None]
    right_vta = task.add_relative_contrast(_stimuli('VTA', 'r'))
    assert right_vta['side'].tolist() == ['ipsi', 'contra', 'ipsi', 'contra', None]
    np.testing.assert_array_equal(right_vta['relative_contrast'], [-25, 25, 0, 0, np.nan])
    for region, hemi in [('DR', 'l'), ('DR', 'r'), ('MR', ''), ('VTA', ''), ('VTA', None)]:
        out = task.add_relative_contrast(_stimuli(region, hemi))
        assert out['side'].isna().all(), (region, hemi)
        assert out['hemi_sign'].isna().all() and out['relative_contrast'].isna().all()
    mixed = pd.concat([_stimuli('DR', 'l'), _stimuli('VTA', 'l')], ignore_index=True)
    assert ar.add_side(mixed)['side'].tolist() == [None] * 5 + left_vta['side'].tolist()
    with pytest.raises(KeyError, match='brain_region'):
        task.add_relative_contrast(_stimuli('VTA', 'l').drop(columns='brain_region'))


# ---------------------------------------------------------------------------
# Event kernels: the side weights and the session's recording key -> laterality
# ---------------------------------------------------------------------------
def test_event_kernel_side_weights():
    trials = pd.DataFrame(
        {
            'contrast': [25.0, 25.0, np.nan],
            'stim_side': ['right', 'left', None],
            'feedbackType': [1, -1, 1],
        }
    )
    side = list(ek.CONDITIONS).index('side')
    np.testing.assert_array_equal(ek.condition_weights(trials, 'l')[:, side], [0.5, -0.5, 0])
    np.testing.assert_array_equal(ek.condition_weights(trials, 'r')[:, side], [-0.5, 0.5, 0])
    np.testing.assert_array_equal(ek.condition_weights(trials, None)[:, side], [0, 0, 0])


def test_the_session_reads_the_side_of_a_recording_key_from_its_recordings():
    from iblnm.data import PhotometrySession

    row = {
        'eid': '00000000-0000-4000-8000-000000000000',
        'subject': 'm1',
        'brain_region': ['DR', 'VTA', 'VTA', 'LC'],
        'hemisphere': ['l', 'l', 'r', ''],
    }
    ps = PhotometrySession(row)
    got = {key: ps._region_hemisphere(key) for key in ('DR', 'VTA-l', 'VTA-r', 'LC', 'SNc')}
    assert got == {'DR': None, 'VTA-l': 'l', 'VTA-r': 'r', 'LC': None, 'SNc': None}


def test_a_midline_recording_has_no_side_kernel():
    from iblnm.simulate import example_session

    ps = example_session()
    ps.run_sliding_qc()
    ps.preprocess()
    lateral = ps.fit_event_kernels()['VTA']
    assert np.isfinite(lateral['kernel'].sel(condition='side')).any()
    ps.brain_region = ['DR']  # the same fiber, called a dorsal raphe fiber
    ps.photometry = {
        band: frame.rename(columns={'VTA': 'DR'}) for band, frame in ps.photometry.items()
    }
    midline = ps.fit_event_kernels()['DR']
    assert np.isnan(midline['kernel'].sel(condition='side')).all()
    assert np.isnan(midline['se'].sel(condition='side')).all()
    others = ['mean', 'contrast', 'reward']  # estimated as for the lateral fiber
    finite = np.isfinite(midline['kernel'].sel(condition=others))
    assert finite.any() and finite.equals(np.isfinite(lateral['kernel'].sel(condition=others)))


# ---------------------------------------------------------------------------
# Models: mixed models, FLMM formula, GLM, response features, wheel models
# ---------------------------------------------------------------------------
def _trials(region, hemisphere, n_subjects=4, n=200, side_effect=0.0, seed=0):
    """Stimulus trials with y = 0.3 ln(c+1) + 1.0 correct + side_effect * contra + noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_subjects):
        contrast = rng.choice([0, 6.25, 12.5, 25, 100], n)
        right = rng.random(n) < 0.5
        correct = rng.random(n) < 0.7
        contra = right if hemisphere == 'l' else ~right
        y = 0.3 * np.log1p(contrast) + 1.0 * correct + side_effect * contra
        frames.append(
            pd.DataFrame(
                {
                    'eid': f'e{s}',
                    'subject': f'm{s}',
                    'target_NM': f'{region}-x',
                    'brain_region': region,
                    'hemisphere': hemisphere,
                    'fiber_idx': 0,
                    'event': 'stimOn_times',
                    'trial': np.arange(n),
                    'contrast': contrast,
                    'signed_contrast': np.where(right, contrast, -contrast),
                    'stim_side': np.where(right, 'right', 'left'),
                    'feedbackType': np.where(correct, 1, -1),
                    'choice': np.where(rng.random(n) < 0.5, 1, -1),
                    'probabilityLeft': 0.5,
                    'reaction_time': 0.3,
                    'response_early': y + rng.normal(0, 0.3) + rng.normal(0, 0.5, n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_mixed_models_of_a_midline_group_have_no_side_terms():
    midline = lmm.prepare_lmm_trials(ar.add_side(_trials('DR', 'l')))
    assert len(midline) == 800  # every stimulus trial kept, side None
    fit = lmm.fit_response_lmm(midline)
    assert fit is not None and not lmm.has_side_term(fit)
    assert fit.summary_df.loc['log_contrast', 'Coef.'] == pytest.approx(0.3, abs=0.06)
    grid = lmm.predict_grid(fit, [0, 100])
    assert set(grid['side']) == {'neither'} and len(grid) == 4
    means = lmm.marginal_means_table({('DR-x', 'stimOn_times'): fit})
    assert 'side' not in set(means['factor'])
    lateral = lmm.prepare_lmm_trials(ar.add_side(_trials('VTA', 'l', side_effect=0.8)))
    fit = lmm.fit_response_lmm(lateral)
    assert lmm.has_side_term(fit)
    assert fit.summary_df.loc['side', 'Coef.'] == pytest.approx(0.8, abs=0.15)
    assert set(lmm.predict_grid(fit, [0])['side']) == {'contra', 'ipsi'}
    assert lmm.without_side('y ~ a * side') == 'y ~ a'


def test_the_glm_of_a_midline_recording_has_nan_side_terms():
    table = pd.concat([_trials('DR', 'l', n_subjects=1), _trials('VTA', 'l', n_subjects=1, seed=1)])
    table['eid'] = np.repeat(['dr', 'vta'], 200)
    coefs, ses = enc.fit_response_glm(table, 'stimOn_times')
    dr, vta = coefs.xs('dr', level='eid').iloc[0], coefs.xs('vta', level='eid').iloc[0]
    side_terms = ['side', 'log_contrast:side', 'side:reward']
    assert dr[side_terms].isna().all() and ses.xs('dr', level='eid')[side_terms].isna().all().all()
    assert np.isfinite(dr.drop(side_terms)).all() and np.isfinite(vta).all()
    assert dr['log_contrast'] == pytest.approx(0.3, abs=0.1)


def test_response_features_of_a_midline_recording_pool_both_stimulus_sides():
    table = _trials('DR', 'l', n_subjects=1)
    features = ar.response_features(table)
    stim = table[(table['contrast'] == 25) & (table['feedbackType'] == 1)]
    for side in ar.SIDES:
        column = ar.condition_label('stimOn_times', 25, side, 1)
        assert features[column].iloc[0] == pytest.approx(stim['response_early'].mean())
    lateral = ar.response_features(_trials('VTA', 'l', n_subjects=1))
    contra, ipsi = (ar.condition_label('stimOn_times', 25, s, 1) for s in ar.SIDES)
    assert lateral[contra].iloc[0] != pytest.approx(lateral[ipsi].iloc[0])


def test_wheel_models_of_a_midline_group_use_the_stimulus_side():
    trials = ar.add_side(_trials('DR', 'l'))
    trials['reaction_time'] = (
        0.3 + 0.1 * trials['response_early'] + 0.01 * np.arange(len(trials)) % 7
    )
    summary = lmm.fit_wheel_lmms(trials, dvs=['reaction_time'])
    assert len(summary) > 0  # kept: the base model's covariate is the stimulus side
