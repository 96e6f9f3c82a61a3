"""Specification of the reverse steps (THEORY §7): the published update formulas and
their relations, each sampler with the exact predictor reproduces the target mixture
within Monte-Carlo error, and the deterministic samplers converge at their orders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from coarsekl.errors import DataError
from coarsekl_gmm.mixture import GaussianMixture
from coarsekl_gmm.noise import LinearBeta, log_snr
from coarsekl_gmm.samplers import ddim_step, ddpm_step, dpmpp_2m_step, x0_from_noise

SAMPLERS = ["ddpm", "ddim", "dpmpp-2m"]


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def four_components() -> GaussianMixture:
    """Four anisotropic, partly overlapping components in 2-D with unequal weights."""
    shapes = [(0.3, (0.3, 0.05)), (1.2, (0.2, 0.08)), (2.0, (0.15, 0.15)), (-0.5, (0.4, 0.03))]
    covariances = [rotation(a) @ np.diag(v) @ rotation(a).T for a, v in shapes]
    means = [[-2.0, -1.0], [1.5, -1.5], [0.5, 2.0], [2.5, 1.0]]
    return GaussianMixture([0.1, 0.2, 0.3, 0.4], means, covariances)


def sample_with(sampler, mixture, alpha_bars, x, rng):
    """Run ``sampler`` with the exact predictor of ``mixture`` along ``alpha_bars``."""
    x0_prev = h_prev = None
    for now, following in itertools.pairwise(alpha_bars):
        if sampler == "dpmpp-2m":
            x0 = mixture.x0_prediction(x, now)
            x, x0_prev, h_prev = dpmpp_2m_step(x, x0, x0_prev, now, following, h_prev)
            continue
        noise = mixture.noise_prediction(x, now)
        if sampler == "ddim":
            x = ddim_step(x, noise, now, following)
        else:
            x = ddpm_step(x, noise, now, following, rng.standard_normal(x.shape))
    return x


# -- the update formulas ---------------------------------------------------------------


def test_x0_from_noise_inverts_the_forward_noising():
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 5, 3))
    alpha_bar = 0.37
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * noise
    np.testing.assert_allclose(x0_from_noise(xt, noise, alpha_bar), x0, atol=1e-14)


def test_ddpm_step_draws_from_the_forward_posterior_given_the_true_x0():
    """Ho et al. eq. 6–7: with ε̂ the true noise, x̂_0 = x_0, and the step is an exact draw
    of q(x_s | x_t, x_0). Check its mean and variance against the Gaussian conditional
    of the joint (x_s, x_t) of the forward process, computed independently."""
    ab_now, ab_next = 0.3, 0.7
    x0, noise = np.array([1.5]), np.array([-0.4])
    xt = math.sqrt(ab_now) * x0 + math.sqrt(1 - ab_now) * noise
    z = np.random.default_rng(1).standard_normal((200_000, 1))
    draws = ddpm_step(np.broadcast_to(xt, z.shape), noise, ab_now, ab_next, z)
    # Forward: x_s = √ᾱ_s x0 + √(1−ᾱ_s) e_s; x_t = √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) e.
    a = math.sqrt(ab_now / ab_next)
    var_s, var_t, cov = 1 - ab_next, 1 - ab_now, a * (1 - ab_next)
    mean = math.sqrt(ab_next) * x0 + cov / var_t * (xt - math.sqrt(ab_now) * x0)
    variance = var_s - cov**2 / var_t
    assert abs(draws.mean() - mean[0]) < 4 * math.sqrt(variance / z.shape[0])
    assert abs(draws.var() / variance - 1) < 4 * math.sqrt(2 / z.shape[0])


def test_ddim_with_eta_one_is_ddpm():
    rng = np.random.default_rng(2)
    x, noise, z = rng.standard_normal((3, 7, 2))
    np.testing.assert_allclose(
        ddim_step(x, noise, 0.2, 0.5, eta=1.0, z=z), ddpm_step(x, noise, 0.2, 0.5, z), atol=1e-14
    )


def test_ddim_with_eta_zero_follows_the_formula_of_theory_section_7():
    """z_s = √(ᾱ_s/ᾱ_t) z + (√(1−ᾱ_s) − √ᾱ_s √(1−ᾱ_t)/√ᾱ_t) ε̂."""
    rng = np.random.default_rng(3)
    x, noise = rng.standard_normal((2, 6, 3))
    t, s = 0.15, 0.6
    expected = (
        math.sqrt(s / t) * x
        + (math.sqrt(1 - s) - math.sqrt(s) * math.sqrt(1 - t) / math.sqrt(t)) * noise
    )
    np.testing.assert_allclose(ddim_step(x, noise, t, s), expected, atol=1e-13)


def test_first_dpm_solver_pp_step_is_ddim():
    rng = np.random.default_rng(4)
    x, noise = rng.standard_normal((2, 6, 3))
    x0 = x0_from_noise(x, noise, 0.1)
    result = dpmpp_2m_step(x, x0, None, 0.1, 0.4, None)
    np.testing.assert_allclose(result.x, ddim_step(x, noise, 0.1, 0.4), atol=1e-13)
    assert result.h == pytest.approx(log_snr(0.4) - log_snr(0.1))
    assert result.x0 is x0


def test_dpm_solver_pp_second_order_step_follows_algorithm_2():
    rng = np.random.default_rng(5)
    x, x0_now, x0_prev = rng.standard_normal((3, 4, 2))
    h_prev, ab_now, ab_next = 0.3, 0.2, 0.5
    h = log_snr(ab_next) - log_snr(ab_now)
    r = h_prev / h
    derivative = (1 + 1 / (2 * r)) * x0_now - 1 / (2 * r) * x0_prev
    expected = (
        math.sqrt((1 - ab_next) / (1 - ab_now)) * x
        - math.sqrt(ab_next) * (math.exp(-h) - 1) * derivative
    )
    result = dpmpp_2m_step(x, x0_now, x0_prev, ab_now, ab_next, h_prev)
    np.testing.assert_allclose(result.x, expected, atol=1e-13)


def test_every_sampler_lands_on_x0_hat_at_the_data():
    rng = np.random.default_rng(6)
    x, noise, x0_prev = rng.standard_normal((3, 5, 2))
    x0 = x0_from_noise(x, noise, 0.9)
    np.testing.assert_allclose(ddpm_step(x, noise, 0.9, 1.0, None), x0, atol=1e-14)
    np.testing.assert_allclose(ddim_step(x, noise, 0.9, 1.0), x0, atol=1e-13)
    np.testing.assert_allclose(dpmpp_2m_step(x, x0, x0_prev, 0.9, 1.0, 0.5).x, x0, atol=0)


@pytest.mark.parametrize(
    ("ab_now", "ab_next"), [(0.5, 0.5), (0.6, 0.5), (0.0, 0.5), (0.5, 1.1), (1.0, 1.0)]
)
def test_steps_reject_levels_that_do_not_move_towards_the_data(ab_now, ab_next):
    x = np.zeros((2, 2))
    with pytest.raises(DataError, match="ab_now"):
        ddim_step(x, x, ab_now, ab_next)


def test_stochastic_steps_ask_for_their_noise():
    x = np.zeros((2, 2))
    with pytest.raises(DataError, match="noise"):
        ddpm_step(x, x, 0.2, 0.5, None)
    with pytest.raises(DataError, match="noise"):
        ddim_step(x, x, 0.2, 0.5, eta=0.5)


# -- against the exact target ------------------------------------------------------------


def moment_tolerances(target: GaussianMixture, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """4 standard errors of the sample mean (√(Σ_ii/n)) and of the sample covariance
    entries (√(Var[(x_i − μ_i)(x_j − μ_j)]/n), the fourth moments from 10^6 exact draws)."""
    exact, _ = target.sample(1_000_000, rng)
    centred = exact - target.mean()
    products = centred[:, :, None] * centred[:, None, :]
    mean_tolerance = 4 * np.sqrt(np.diag(target.covariance()) / n)
    covariance_tolerance = 4 * np.sqrt(products.var(axis=0) / n)
    return mean_tolerance, covariance_tolerance


def class_counts(mixture: GaussianMixture, x: np.ndarray) -> np.ndarray:
    labels = mixture.posteriors(x).argmax(axis=-1)
    return np.bincount(labels, minlength=mixture.n_components)


@pytest.mark.parametrize(
    ("sampler", "steps", "spacing"),
    [("ddpm", 1000, "time"), ("ddim", 200, "logsnr"), ("dpmpp-2m", 200, "logsnr")],
)
def test_each_sampler_with_the_exact_predictor_reproduces_the_target(sampler, steps, spacing):
    """20,000 particles from the exact q at t = 1, enough steps to t_min = 1e-3 that the
    discretisation bias is well below the Monte-Carlo error, then one step to ᾱ = 1.

    DDPM runs Ho et al.'s 1000 uniform steps: its posterior variance β̃ leaves out the
    spread of x_0 given x_t (Var[x̂_0] enters the true one-step kernel, Bao et al. 2022),
    a first-order deficit that at 200 log-SNR steps still shrinks the covariance and the
    smallest class by about 2 standard errors at this n.

    At t_min the particles must follow the exact noised marginal q_{t_min}; after the final
    step, the data q_0. Tolerances: 4 standard errors each, for the means, the covariance
    entries, the soft class proportions (mean posterior, expectation π_c) and the hard ones
    (posterior argmax, against 10^6 exact draws, SE √(p(1−p)(1/n + 1/M)))."""
    mixture, schedule, n = four_components(), LinearBeta(), 20_000
    rng = np.random.default_rng(10)
    alpha_bars = schedule.alpha_bar(schedule.time_grid(steps, spacing=spacing))
    start, _ = mixture.noised(alpha_bars[0]).sample(n, rng)
    at_t_min = sample_with(sampler, mixture, alpha_bars, start, rng)
    data = sample_with(sampler, mixture, [alpha_bars[-1], 1.0], at_t_min, rng)

    for target, x in [(mixture.noised(alpha_bars[-1]), at_t_min), (mixture, data)]:
        mean_tolerance, covariance_tolerance = moment_tolerances(target, n, rng)
        assert np.all(np.abs(x.mean(axis=0) - target.mean()) < mean_tolerance)
        assert np.all(np.abs(np.cov(x.T) - target.covariance()) < covariance_tolerance)

        posteriors = target.posteriors(x)
        soft_error = 4 * posteriors.std(axis=0) / math.sqrt(n)
        assert np.all(np.abs(posteriors.mean(axis=0) - target.weights) < soft_error)

        exact_draws = 1_000_000
        expected = class_counts(target, target.sample(exact_draws, rng)[0]) / exact_draws
        hard_error = 4 * np.sqrt(expected * (1 - expected) * (1 / n + 1 / exact_draws))
        assert np.all(np.abs(class_counts(target, x) / n - expected) < hard_error)


def convergence_errors(sampler: str, steps: list[int]) -> np.ndarray:
    """Mean distance E‖x_S − x_ref‖ at t_min between ``sampler`` with S log-SNR steps and
    2,000 DPM-Solver++(2M) steps from the same 2,000 initial points (no Monte-Carlo noise).

    The mean, not the RMS: a particle that the error pushes across the ridge between two
    components ends O(1) away; the share of such particles shrinks like the error itself,
    so they keep the mean distance's order but halve the RMS distance's."""
    mixture, schedule = four_components(), LinearBeta()
    start, _ = mixture.noised(schedule.alpha_bar(1.0)).sample(2_000, np.random.default_rng(11))

    def run(count, kind):
        alpha_bars = schedule.alpha_bar(schedule.time_grid(count, spacing="logsnr"))
        return sample_with(kind, mixture, alpha_bars, start, None)

    reference = run(2000, "dpmpp-2m")
    return np.array(
        [np.linalg.norm(run(count, sampler) - reference, axis=-1).mean() for count in steps]
    )


def test_deterministic_samplers_converge_at_first_and_second_order():
    """Lu et al. 2022: DDIM (DPM-Solver++(1)) is first order, DPM-Solver++(2M) second; the
    order is the slope of log error against log steps over 10, 20, 50, 100 steps."""
    steps = [10, 20, 50, 100]
    ddim = convergence_errors("ddim", steps)
    dpmpp = convergence_errors("dpmpp-2m", steps)
    ddim_order = -np.polyfit(np.log(steps), np.log(ddim), 1)[0]
    dpmpp_order = -np.polyfit(np.log(steps), np.log(dpmpp), 1)[0]
    assert 0.7 < ddim_order < 1.4
    assert dpmpp_order > 1.6
    assert np.all(dpmpp < ddim)
