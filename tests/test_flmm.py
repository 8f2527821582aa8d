"""Functional linear mixed models (iblnm.analysis.flmm) against statsmodels and known answers."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from iblnm.analysis import flmm

TIMES = np.linspace(-0.5, 1.0, 16)


def _smooth_noise(rng, shape, width=2.0):
    """Gaussian noise smoothed along the last axis (autocorrelated like photometry traces)."""
    from scipy.ndimage import gaussian_filter1d

    x = gaussian_filter1d(rng.standard_normal(shape), width, axis=-1, mode='reflect')
    return x * np.sqrt(2 * np.sqrt(np.pi) * width)  # unit variance


def _simulate(
    seed=0, n_subjects=8, n_trials=60, times=TIMES, effect=1.0, slope_sd=0.0, missing=0.0
):
    """Trials with a reward effect bump(t) * effect, subject random intercept functions,
    optional subject random reward slopes, autocorrelated trial noise."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subjects), n_trials)
    reward = rng.choice([-0.5, 0.5], len(subject))
    contrast = rng.random(len(subject))
    bump = np.exp(-0.5 * ((times - 0.3) / 0.15) ** 2)
    slopes = effect + slope_sd * rng.standard_normal(n_subjects)
    y = slopes[subject][:, None] * reward[:, None] * bump[None]
    y = y + 0.8 * _smooth_noise(rng, (n_subjects, len(times)))[subject]
    y = y + _smooth_noise(rng, (len(subject), len(times)))
    if missing:
        y[rng.random(y.shape) < missing] = np.nan
    data = pd.DataFrame(
        {
            'subject': [f'm{s}' for s in subject],
            'reward': reward,
            'contrast': contrast,
            'session': [f'm{s}-{i % 3}' for i, s in enumerate(subject)],
        }
    )
    return y, data, bump * effect


def _statsmodels(y, data, s, formula='reward + contrast', polish=('nm', 'powell'), **kwargs):
    rows = np.isfinite(y[:, s])
    df = data[rows].assign(y=y[rows, s])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = smf.mixedlm(f'y ~ {formula}', df, groups=df['subject'], **kwargs)
        # polished: statsmodels' default optimiser stops ~1e-7 short of the REML optimum, and
        # Nelder-Mead alone can stall on flat likelihoods; the best of two polishes is kept
        start = model.fit(reml=True).params
        options = {
            'nm': {'maxiter': 5000, 'xtol': 1e-10, 'ftol': 1e-13},
            'powell': {'xtol': 1e-12, 'ftol': 1e-14},
        }
        fits = [model.fit(reml=True, start_params=start, method=m, **options[m]) for m in polish]
        return max(fits, key=lambda fit: fit.llf)


# ---------------------------------------------------------------------------
# Step 1: the raw fits are statsmodels' MixedLM fits
# ---------------------------------------------------------------------------
def test_random_intercept_raw_fits_equal_statsmodels():
    y, data, _ = _simulate(seed=1, missing=0.05)
    ds = flmm.fit_flmm(y, data, 'reward + contrast', times=TIMES).dataset
    for s in (0, 7, 15):
        ref = _statsmodels(y, data, s)
        np.testing.assert_allclose(ds['raw'].isel(time=s), ref.fe_params, atol=1e-6, rtol=0)
        # model-based GLS SE; statsmodels inverts the joint Hessian (differs by ~1e-4)
        np.testing.assert_allclose(ds['raw_se'].isel(time=s), ref.bse_fe, rtol=2e-3)
        assert ds['n_obs'].isel(time=s) == np.isfinite(y[:, s]).sum()


def test_random_slope_raw_fits_equal_statsmodels():
    times = TIMES[:2]
    y, data, _ = _simulate(seed=2, times=times, slope_sd=0.5)
    ds = flmm.fit_flmm(y, data, 'reward + contrast', times=times, re_formula='1 + reward').dataset
    for s in range(len(times)):
        ref = _statsmodels(y, data, s, re_formula='1 + reward', polish=('powell',))
        # 3 variance parameters: the REML surface is flat enough that two optimisers stop a
        # few 1e-6 apart in the fixed effects (statsmodels' default alone: 2e-4 away)
        np.testing.assert_allclose(ds['raw'].isel(time=s), ref.fe_params, atol=2e-5, rtol=0)


@pytest.mark.parametrize('session_sd', [0.6, 0.0])
def test_nested_session_raw_fits_equal_statsmodels(session_sd):
    """Exact REML from session sums = polished statsmodels MixedLM with a session variance
    component, with missing samples, with and without a session effect (the second puts the
    session variance on its boundary)."""
    y, data, _ = _simulate(seed=3, missing=0.05)
    codes = pd.factorize(data['session'])[0]
    rng = np.random.default_rng(0)
    y = y + session_sd * rng.standard_normal((codes.max() + 1, y.shape[1]))[codes]
    ds = flmm.fit_flmm(y, data, 'reward + contrast', times=TIMES, nested='session').dataset
    assert ds.attrs['method'] == 'exact REML from session sums'
    vc = {'session': '0 + C(session)'}
    for s in (0, 7, 15):
        ref = _statsmodels(y, data, s, re_formula='1', vc_formula=vc)
        np.testing.assert_allclose(ds['raw'].isel(time=s), ref.fe_params, atol=1e-6, rtol=0)
        # GLS SEs vs statsmodels' joint-Hessian SEs: 2e-3 apart inside, ~1 % at the boundary
        rtol = 3e-3 if session_sd else 1.5e-2
        np.testing.assert_allclose(ds['raw_se'].isel(time=s), ref.bse_fe, rtol=rtol)


def test_nested_session_fits_are_statsmodels_mixedlm():
    times = TIMES[:2]
    y, data, _ = _simulate(seed=3, times=times)
    ds = flmm.fit_flmm(
        y, data, 'reward', times=times, nested='session', n_jobs=1, method='statsmodels'
    ).dataset
    assert ds.attrs['method'].startswith('statsmodels')
    rows = np.isfinite(y[:, 1])
    df = data[rows].assign(y=y[rows, 1])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = smf.mixedlm(
            'y ~ reward',
            df,
            groups=df['subject'],
            re_formula='1',
            vc_formula={'session': '0 + C(session)'},
        ).fit(reml=True)
    np.testing.assert_allclose(ds['raw'].isel(time=1), ref.fe_params, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------
# Steps 2-3: smoothing and bands
# ---------------------------------------------------------------------------
def test_planted_effect_is_found_where_it_is_and_nowhere_else():
    times = np.linspace(-0.5, 1.0, 46)
    y, data, truth = _simulate(seed=4, n_subjects=10, times=times, effect=0.6)
    result = flmm.fit_flmm(y, data, 'reward + contrast', times=times)
    ds, intervals = result
    reward = ds.sel(term='reward')
    assert (reward['joint_lower'] <= truth).all() and (reward['joint_upper'] >= truth).all()
    found = intervals[intervals['term'] == 'reward']
    assert len(found) == 1 and found['sign'].iloc[0] == 1
    assert 0.1 < found['t_start'].iloc[0] < 0.3 < found['t_stop'].iloc[0] < 0.55
    assert not (intervals['term'] == 'contrast').any()
    # the joint band is wider than the pointwise one, by a critical value above 1.96
    assert (ds['q_joint'] > 1.96).all()
    assert (
        reward['joint_upper'] - reward['joint_lower'] > reward['ci_upper'] - reward['ci_lower']
    ).all()
    assert (reward['p_joint'] >= reward['p'] - 1e-12).all()


def test_unsmoothed_bands_are_the_raw_fits():
    y, data, _ = _simulate(seed=5)
    ds = flmm.fit_flmm(y, data, 'reward', times=TIMES, smooth=False).dataset
    np.testing.assert_allclose(ds['estimate'], ds['raw'])
    np.testing.assert_allclose(ds['se'], ds['raw_se'], rtol=1e-9)
    np.testing.assert_allclose(ds['ci_upper'] - ds['estimate'], 1.959964 * ds['se'], rtol=1e-5)


def test_joint_quantile_limits():
    n = 30
    q_independent, _ = flmm.joint_quantile(np.eye(n), n_sim=20000)
    sidak = stats.norm.ppf(1 - (1 - 0.95 ** (1 / n)) / 2)
    assert q_independent == pytest.approx(sidak, abs=0.05)
    q_identical, _ = flmm.joint_quantile(np.ones((n, n)), n_sim=20000)
    assert q_identical == pytest.approx(1.96, abs=0.05)


def test_cross_time_covariance_matches_monte_carlo():
    """The MoM sandwich correlation of raw estimates between time points agrees with their
    correlation over independent replicates (autocorrelated residuals + subject curves)."""
    times = TIMES[::3]
    raws, analytic = [], []
    for rep in range(80):
        y, data, _ = _simulate(seed=100 + rep, n_subjects=5, n_trials=16, times=times, effect=0)
        design = flmm._build_design(data, 'reward', 'subject', '1', None)
        raw = flmm._fit_random_intercept(y, design)
        raws.append(raw['beta'][:, 1])
        analytic.append(flmm._raw_covariance(y, design, raw)[1])
    empirical = np.corrcoef(np.array(raws).T)
    cov = np.mean(analytic, axis=0)
    model = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    off = ~np.eye(len(times), dtype=bool)
    assert np.abs(model - empirical)[off].mean() < 0.12  # Monte-Carlo SE of a correlation ≈ 0.1
    neighbours = np.diag(empirical, 1).mean()
    assert neighbours > 0.3 and np.diag(model, 1).mean() == pytest.approx(neighbours, abs=0.1)
    # sanity: the replicate SD matches the model-based SE
    assert np.std(np.array(raws), axis=0).mean() == pytest.approx(
        np.sqrt(np.diag(cov)).mean(), rel=0.2
    )


def test_bootstrap_bands_agree_with_analytic():
    y, data, _ = _simulate(seed=6, n_subjects=10, n_trials=20)
    analytic = flmm.fit_flmm(y, data, 'reward', times=TIMES).dataset
    boot = flmm.fit_flmm(y, data, 'reward', times=TIMES, inference='bootstrap', n_boot=40).dataset
    assert boot.attrs['inference'] == 'bootstrap'
    np.testing.assert_allclose(boot['estimate'], analytic['estimate'])
    ratio = (boot['se'] / analytic['se']).sel(term='reward')
    assert 0.6 < float(ratio.median()) < 1.6  # 40 resamples of 10 subjects: SE of an SD ≈ 11 %


def test_bad_inputs_raise():
    y, data, _ = _simulate(seed=7, n_subjects=3)
    with pytest.raises(ValueError, match='rows'):
        flmm.fit_flmm(y[:-1], data, 'reward')
    with pytest.raises(ValueError, match='2 subjects'):
        flmm.fit_flmm(y[:60], data.iloc[:60], 'reward')
    with pytest.raises(ValueError, match='inference'):
        flmm.fit_flmm(y, data, 'reward', inference='magic')
