"""Event-kernel regression (iblnm.signal.event_kernels) on direct simulations with known kernels."""

import numpy as np
import pytest

from iblnm import config
from iblnm.signal import event_kernels as ek
from iblnm.simulate import kernels as sk
from iblnm.simulate.overlap import (
    EVENTS,
    simulate_overlapping_session,
    true_condition_kernels,
)


def _fit(sim, **options):
    weights = ek.condition_weights(sim['trials'], hemisphere='l')
    event_times = [sim['trials'][e].to_numpy() for e in EVENTS]
    fit = ek.fit_event_kernels(sim['times'], sim['values'], event_times, weights,
                               events=list(EVENTS), **options)  # fmt: skip
    return fit, true_condition_kernels(sim, fit.lags, weights)


def _half_peak_amplitude(kernel, truth):
    """Mean of ``kernel`` over the lags where |truth| >= half its peak, relative to truth's."""
    half = np.abs(truth) >= 0.5 * np.abs(truth).max()
    return kernel[half].mean() / truth[half].mean()


def test_tent_basis_is_a_partition_of_unity():
    centres = ek.basis_centres((-0.5, 3.0), 0.1)
    assert len(centres) == 36 and centres[0] == -0.5 and centres[-1] == pytest.approx(3.0)
    tau = np.linspace(-0.5, 3.0, 1001)
    phi = ek.tent_basis(tau, centres, 0.1)
    np.testing.assert_allclose(phi.sum(axis=1), 1.0)
    assert (np.count_nonzero(phi, axis=1) <= 2).all()


def test_condition_weights_effect_coding():
    import pandas as pd

    trials = pd.DataFrame({'contrast': [0.0, 100.0, np.nan], 'stim_side': ['left', 'right', None],
                           'feedbackType': [1.0, -1.0, 1.0]})  # fmt: skip
    left = ek.condition_weights(trials, hemisphere='l')
    np.testing.assert_allclose(left[:, 0], 1.0)
    np.testing.assert_allclose(left[:, 1], [-np.log(101) / 2, np.log(101) / 2, 0.0])
    np.testing.assert_allclose(left[:, 2], [-0.5, 0.5, 0.0])  # right stimuli: contra to 'l'
    np.testing.assert_allclose(left[:, 3], [0.5, -0.5, 0.5])
    right = ek.condition_weights(trials, hemisphere='r')
    np.testing.assert_allclose(right[:, 2], [0.5, -0.5, 0.0])


@pytest.mark.parametrize('nm', ['DA', 'NE'])
def test_overlapping_kernels_are_recovered_exactly_without_noise(monkeypatch, nm):
    """Events 0.15-0.2 s apart, three kernels summed: the regression separates them."""
    monkeypatch.setattr(sk, 'TRIAL_GAIN_SD', 0.0)
    sim = simulate_overlapping_session(nm, n_trials=300, seed=3, noise_sd=0, spontaneous_sd=0)
    fit, truth = _fit(sim)
    checked, largest = 0, np.abs(truth).max()
    for e in range(len(EVENTS)):
        for c in range(len(ek.CONDITIONS)):
            if ek.CONDITIONS[c] not in config.KERNEL_CONDITIONS[EVENTS[e]]:
                assert np.isnan(fit.kernels[e, c]).all()  # not modelled (reward before feedback)
                continue
            if np.abs(truth[e, c]).max() < 1e-4:  # no such kernel: ~0 (basis error only)
                assert np.abs(fit.kernels[e, c]).max() < 0.03 * largest, (e, c)
                continue
            assert np.corrcoef(fit.kernels[e, c], truth[e, c])[0, 1] > 0.995
            assert _half_peak_amplitude(fit.kernels[e, c], truth[e, c]) == pytest.approx(
                1, abs=0.03
            )
            checked += 1
    assert checked >= 3
    assert fit.fit.r2 > 0.999


def test_masked_samples_are_left_out_of_the_fit(monkeypatch):
    monkeypatch.setattr(sk, 'TRIAL_GAIN_SD', 0.0)
    sim = simulate_overlapping_session('DA', n_trials=300, seed=4, noise_sd=0, spontaneous_sd=0)
    clean, truth = _fit(sim)
    n = len(sim['values'])
    sim['values'][n // 3 : n // 3 + 3000] = 1e3  # an artefact ...
    sim['values'][n // 3 : n // 3 + 3000] = np.nan  # ... masked (NaN), as the preprocessing does
    masked, _ = _fit(sim)
    assert masked.fit.n_samples == n - 3000
    np.testing.assert_allclose(masked.kernels, clean.kernels, atol=2e-4)
    assert np.isnan(masked.contributions[:, n // 3]).all()


def test_noisier_signals_get_a_larger_penalty_and_wider_errors():
    fits = {}
    for noise in (0.001, 0.05):
        sim = simulate_overlapping_session('DA', n_trials=300, seed=5, noise_sd=noise)
        fits[noise] = _fit(sim)[0]
    assert fits[0.05].fit.lam > fits[0.001].fit.lam
    assert np.nanmedian(fits[0.05].se) > 1.5 * np.nanmedian(fits[0.001].se)
    assert np.all(np.diff(fits[0.001].fit.lambdas) > 0) and len(fits[0.001].fit.gcv) == 25


def test_a_condition_without_trials_gives_nan_kernels():
    sim = simulate_overlapping_session('DA', n_trials=200, seed=6)
    sim['trials']['feedbackType'] = 1.0  # no error trial: 'reward' is not estimable
    fit, _ = _fit(sim)
    reward = ek.CONDITIONS.index('reward')
    assert np.isnan(fit.kernels[:, reward]).all()
    assert np.isfinite(fit.kernels[:, 0]).all()
    fit, _ = _fit(sim, event_conditions={})  # every condition for every event
    assert np.isnan(fit.kernels[:, reward]).all() and np.isfinite(fit.kernels[:, :3]).all()
