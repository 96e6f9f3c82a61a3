"""Specification of the Gaussian mixture (THEORY §7): the noised marginal is the mixture
of noised components, the score, noise predictor and guidance gradient are derivatives of
its log-density and log-posteriors, the posteriors are Bayes' rule, and sampling and
forward noising agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from coarsekl.errors import ConfigError, DataError
from coarsekl.numerics import compiled_enabled, reference_numerics
from coarsekl_gmm.mixture import (
    BiasError,
    GaussianMixture,
    SmoothFieldError,
    WeightsError,
    perturbed_noise_prediction,
)

ALPHA_BARS = [1.0, 0.7, 0.05, 1e-4]


def random_mixture(rng, components: int, dim: int, spread: float = 2.0) -> GaussianMixture:
    factors = rng.standard_normal((components, dim, dim)) / math.sqrt(dim)
    covariances = factors @ factors.transpose(0, 2, 1) + 0.05 * np.eye(dim)
    return GaussianMixture(
        rng.random(components) + 0.1, spread * rng.standard_normal((components, dim)), covariances
    )


def two_dimensional() -> GaussianMixture:
    return random_mixture(np.random.default_rng(0), 4, 2)


def scipy_log_joint(mixture: GaussianMixture, x: np.ndarray, alpha_bar: float) -> np.ndarray:
    """log π_c + log N(x; √ᾱ μ_c, ᾱ Σ_c + (1 − ᾱ) I) by scipy.stats, (n, C)."""
    eye = np.eye(mixture.dim)
    return np.stack(
        [
            np.log(weight)
            + stats.multivariate_normal(
                math.sqrt(alpha_bar) * mean, alpha_bar * cov + (1 - alpha_bar) * eye
            ).logpdf(x)
            for weight, mean, cov in zip(
                mixture.weights, mixture.means, mixture.covariances, strict=True
            )
        ],
        axis=-1,
    ).reshape(*x.shape[:-1], mixture.n_components)


def central_gradient(function, x: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """∂f/∂x_j by central differences, for f: (n, d) -> (n,)."""
    columns = []
    for j in range(x.shape[-1]):
        shift = np.zeros(x.shape[-1])
        shift[j] = step
        columns.append((function(x + shift) - function(x - shift)) / (2 * step))
    return np.stack(columns, axis=-1)


def points_near(mixture: GaussianMixture, alpha_bar: float, n: int, seed: int) -> np.ndarray:
    return mixture.noised(alpha_bar).sample(n, np.random.default_rng(seed))[0]


# -- construction ----------------------------------------------------------------------


def test_weights_are_normalised_and_arrays_are_read_only_copies():
    means = np.zeros((2, 1))
    mixture = GaussianMixture([1.0, 3.0], means, np.ones((2, 1, 1)))
    np.testing.assert_allclose(mixture.weights, [0.25, 0.75])
    means[0, 0] = 5.0
    assert mixture.means[0, 0] == 0.0
    assert not mixture.weights.flags.writeable and not mixture.eigenvectors.flags.writeable
    assert (mixture.dim, mixture.n_components) == (1, 2)


@pytest.mark.parametrize(
    ("weights", "means", "covariances", "message"),
    [
        ([1.0, -0.5], np.zeros((2, 2)), [np.eye(2)] * 2, "non-negative"),
        ([0.0, 0.0], np.zeros((2, 2)), [np.eye(2)] * 2, "not all zero"),
        ([np.nan, 1.0], np.zeros((2, 2)), [np.eye(2)] * 2, "finite"),
        ([1.0, 1.0], np.zeros((3, 2)), [np.eye(2)] * 2, "means"),
        ([1.0, 1.0], np.zeros((2, 2)), [np.eye(3)] * 2, "covariances"),
        ([1.0, 1.0], np.zeros((2, 2)), [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]], "component 1"),
        ([1.0, 1.0], np.zeros((2, 2)), [[[1.0, 0.5], [0.0, 1.0]], np.eye(2)], "symmetric"),
        ([1.0, 1.0], [[0.0, np.inf], [0.0, 0.0]], [np.eye(2)] * 2, "finite"),
    ],
)
def test_bad_parameters_are_config_errors_that_say_what_is_wrong(
    weights, means, covariances, message
):
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(weights, means, covariances)


def test_bad_positions_and_levels_are_data_errors():
    mixture = two_dimensional()
    with pytest.raises(DataError, match=r"\(\.\.\., 2\)"):
        mixture.score(np.zeros((5, 3)))
    for alpha_bar in [0.0, 1.5, -0.1]:
        with pytest.raises(DataError, match="alpha_bar"):
            mixture.log_density(np.zeros(2), alpha_bar)


def test_mean_and_covariance_are_the_mixture_moments():
    mixture = two_dimensional()
    x, _ = mixture.sample(400_000, np.random.default_rng(1))
    np.testing.assert_allclose(x.mean(axis=0), mixture.mean(), atol=4 * 2.5 / math.sqrt(4e5))
    np.testing.assert_allclose(np.cov(x.T), mixture.covariance(), atol=0.05)


# -- densities and posteriors ----------------------------------------------------------


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_log_density_is_the_log_sum_of_scipy_normal_densities(alpha_bar):
    mixture = two_dimensional()
    x = points_near(mixture, alpha_bar, 50, seed=2).reshape(5, 10, 2)  # batch axes
    expected = logsumexp(scipy_log_joint(mixture, x, alpha_bar), axis=-1)
    np.testing.assert_allclose(mixture.log_density(x, alpha_bar), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        mixture.noised(alpha_bar).log_density(x), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_posteriors_are_bayes_rule_and_sum_to_one(numerics, alpha_bar):
    mixture = two_dimensional()
    x = points_near(mixture, alpha_bar, 200, seed=3)
    joint = scipy_log_joint(mixture, x, alpha_bar)
    expected = np.exp(joint - logsumexp(joint, axis=-1, keepdims=True))
    posteriors = mixture.posteriors(x, alpha_bar)
    np.testing.assert_allclose(posteriors, expected, atol=1e-12)
    np.testing.assert_allclose(posteriors.sum(axis=-1), 1.0, atol=1e-14)


def test_far_away_points_get_finite_scores_and_posteriors_without_warnings(numerics):
    mixture = two_dimensional()
    x = np.array([[1e3, -1e3], [-5e4, 2e4], [0.0, 1e6]])
    score, posteriors = mixture.score_and_posteriors(x)
    assert np.all(np.isfinite(score)) and np.all(np.isfinite(posteriors))
    np.testing.assert_allclose(posteriors.sum(axis=-1), 1.0, atol=1e-14)


def test_a_zero_weight_component_never_gets_posterior_mass(numerics):
    mixture = two_dimensional().with_weights([0.0, 1.0, 1.0, 1.0])
    x = np.vstack([mixture.means[0], points_near(mixture, 1.0, 20, seed=4)])
    assert np.all(mixture.posteriors(x)[:, 0] < 1e-300)
    assert np.all(mixture.log_joint(x)[:, 0] == -np.inf)


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_score_and_noise_predictor_are_finite_difference_derivatives(numerics, alpha_bar):
    mixture = two_dimensional()
    x = points_near(mixture, alpha_bar, 100, seed=5)
    gradient = central_gradient(lambda y: mixture.log_density(y, alpha_bar), x)
    scale = np.abs(gradient).max()
    np.testing.assert_allclose(mixture.score(x, alpha_bar), gradient, atol=1e-6 * scale)
    np.testing.assert_allclose(
        mixture.noise_prediction(x, alpha_bar),
        -math.sqrt(1 - alpha_bar) * gradient,
        atol=1e-6 * scale,
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    components=st.integers(1, 5),
    dim=st.integers(1, 12),
    alpha_bar=st.floats(1e-3, 1.0),
)
def test_score_is_the_gradient_of_the_log_density_for_random_mixtures(
    numerics, seed, components, dim, alpha_bar
):
    rng = np.random.default_rng(seed)
    mixture = random_mixture(rng, components, dim)
    x = points_near(mixture, alpha_bar, 8, seed=seed % 1000)
    gradient = central_gradient(lambda y: mixture.log_density(y, alpha_bar), x, step=1e-6)
    np.testing.assert_allclose(
        mixture.score(x, alpha_bar), gradient, atol=1e-5 * (1 + np.abs(gradient).max())
    )


@pytest.mark.parametrize("alpha_bar", [1.0, 0.3])
@pytest.mark.parametrize("c", [0, 2])
def test_guidance_gradient_is_the_derivative_of_the_log_posterior(numerics, alpha_bar, c):
    mixture = two_dimensional()
    x = points_near(mixture, alpha_bar, 100, seed=6)

    def log_posterior(y):
        return mixture.log_joint(y, alpha_bar)[:, c] - mixture.log_density(y, alpha_bar)

    gradient = central_gradient(log_posterior, x)
    np.testing.assert_allclose(
        mixture.class_log_posterior_gradient(x, alpha_bar, c),
        gradient,
        atol=1e-6 * (1 + np.abs(gradient).max()),
    )
    with pytest.raises(ConfigError, match="class 4"):
        mixture.class_log_posterior_gradient(x, alpha_bar, 4)


@pytest.mark.parametrize("alpha_bar", [0.9, 0.2])
def test_x0_prediction_is_the_posterior_mean_of_the_data(numerics, alpha_bar):
    """E[x_0 | x_t = x] = Σ_c q_t(c | x) (μ_c + √ᾱ Σ_c S_c^{-1}(x − √ᾱ μ_c)), the Gaussian
    conditional mean of each component, here by np.linalg.solve."""
    mixture = two_dimensional()
    x = points_near(mixture, alpha_bar, 30, seed=7)
    root = math.sqrt(alpha_bar)
    noised = alpha_bar * mixture.covariances + (1 - alpha_bar) * np.eye(2)
    conditional = np.stack(
        [
            mixture.means[c]
            + root
            * np.linalg.solve(noised[c], (x - root * mixture.means[c]).T).T
            @ mixture.covariances[c]
            for c in range(mixture.n_components)
        ],
        axis=1,
    )
    expected = np.einsum("nc,ncd->nd", mixture.posteriors(x, alpha_bar), conditional)
    np.testing.assert_allclose(mixture.x0_prediction(x, alpha_bar), expected, atol=1e-10)
    noise = np.ones_like(x)
    np.testing.assert_allclose(
        mixture.x0_prediction(x, alpha_bar, noise),
        (x - math.sqrt(1 - alpha_bar)) / root,
        atol=1e-14,
    )


# -- the compiled path against the reference -------------------------------------------


@pytest.mark.parametrize(("components", "dim"), [(8, 2), (3, 1), (5, 8), (4, 12), (10, 64)])
def test_compiled_and_reference_paths_agree(components, dim):
    if not compiled_enabled():
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(dim)
    mixture = random_mixture(rng, components, dim)
    x = rng.standard_normal((3, 700, dim)) * 2
    for alpha_bar in [1.0, 0.5, 1e-3]:
        score, posteriors = mixture.score_and_posteriors(x, alpha_bar)
        with reference_numerics():
            expected_score, expected_posteriors = mixture.score_and_posteriors(x, alpha_bar)
        assert score.shape == x.shape and posteriors.shape == (3, 700, components)
        scale = np.abs(expected_score).max()
        np.testing.assert_allclose(score, expected_score, rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(posteriors, expected_posteriors, rtol=0, atol=1e-10)


# -- sampling and forward noising ------------------------------------------------------


def test_samples_have_the_component_labels_and_moments():
    mixture = two_dimensional()
    n = 200_000
    x, labels = mixture.sample(n, np.random.default_rng(8))
    assert x.shape == (n, 2) and labels.shape == (n,)
    frequencies = np.bincount(labels, minlength=4) / n
    assert np.all(np.abs(frequencies - mixture.weights) < 4 * np.sqrt(mixture.weights / n))
    for c in range(mixture.n_components):
        members = x[labels == c]
        count = members.shape[0]
        sd = np.sqrt(np.diag(mixture.covariances[c]))
        assert np.all(np.abs(members.mean(axis=0) - mixture.means[c]) < 4 * sd / math.sqrt(count))
        # Var of a sample covariance entry of a Gaussian: (Σ_ij² + Σ_ii Σ_jj)/n.
        cov = mixture.covariances[c]
        tolerance = 4 * np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / count)
        assert np.all(np.abs(np.cov(members.T) - cov) < tolerance)


def projected_cdf(mixture: GaussianMixture, direction: np.ndarray):
    """CDF of v·x for x ~ mixture: Σ_c π_c Φ((s − v·μ_c)/√(vᵀ Σ_c v))."""
    centres = mixture.means @ direction
    scales = np.sqrt(np.einsum("i,cij,j->c", direction, mixture.covariances, direction))

    def cdf(s):
        return stats.norm.cdf((np.asarray(s)[..., None] - centres) / scales) @ mixture.weights

    return cdf


@pytest.mark.parametrize("alpha_bar", [0.8, 0.1])
def test_forward_noised_data_follows_the_noised_mixture(alpha_bar):
    """x_t = √ᾱ x_0 + √(1 − ᾱ) ε with x_0 from the data: Kolmogorov–Smirnov on projections
    onto three directions against the noised mixture's exact projected CDF."""
    mixture = two_dimensional()
    rng = np.random.default_rng(9)
    x0, _ = mixture.sample(20_000, rng)
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)
    noised = mixture.noised(alpha_bar)
    for angle in [0.0, 1.0, 2.2]:
        direction = np.array([math.cos(angle), math.sin(angle)])
        assert stats.kstest(xt @ direction, projected_cdf(noised, direction)).pvalue > 1e-3
    np.testing.assert_allclose(
        noised.covariance(), alpha_bar * mixture.covariance() + (1 - alpha_bar) * np.eye(2)
    )


# -- model error -----------------------------------------------------------------------


def test_bias_error_is_constant():
    error = BiasError([0.5, -1.0])
    np.testing.assert_array_equal(error.perturbation(np.zeros((3, 4, 2)), 0.5)[2, 1], [0.5, -1.0])
    with pytest.raises(ConfigError, match="bias"):
        error.perturbation(np.zeros((3, 3)), 0.5)


def test_smooth_field_is_fixed_by_its_seed_has_the_stated_rms_and_is_smooth():
    field = SmoothFieldError(amplitude=0.3, length_scale=2.0, seed=4, features=2000)
    x = np.random.default_rng(10).uniform(-20, 20, (4000, 2))
    values = field.perturbation(x, 0.5)
    assert values.shape == x.shape
    np.testing.assert_array_equal(values, SmoothFieldError(0.3, 2.0, 4, 2000).perturbation(x, 0.1))
    assert not np.allclose(values, SmoothFieldError(0.3, 2.0, 5, 2000).perturbation(x, 0.5))
    assert np.sqrt(np.mean(values**2)) == pytest.approx(0.3, rel=0.1)
    # Nearby points agree to first order: |Δe| ≲ amplitude · |Δx| / ℓ.
    nearby = field.perturbation(x + 1e-3, 0.5)
    assert np.abs(nearby - values).max() < 0.3 * 1e-3 * 10


def test_smooth_field_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="length_scale"):
        SmoothFieldError(0.1, 0.0)


def test_weights_error_is_the_difference_of_two_exact_predictors(numerics):
    mixture = two_dimensional()
    error = WeightsError(mixture, [1.0, 1.0, 1.0, 5.0])
    x = points_near(mixture, 0.4, 50, seed=11)
    wrong = mixture.with_weights([1.0, 1.0, 1.0, 5.0])
    np.testing.assert_allclose(
        error.perturbation(x, 0.4),
        wrong.noise_prediction(x, 0.4) - mixture.noise_prediction(x, 0.4),
        atol=1e-14,
    )
    np.testing.assert_allclose(
        perturbed_noise_prediction(mixture, x, 0.4, error),
        mixture.noise_prediction(x, 0.4) + error.perturbation(x, 0.4),
        atol=1e-12,
    )


def test_perturbed_noise_prediction_adds_the_error():
    mixture = two_dimensional()
    x = points_near(mixture, 0.4, 10, seed=12)
    exact = mixture.noise_prediction(x, 0.4)
    np.testing.assert_array_equal(perturbed_noise_prediction(mixture, x, 0.4), exact)
    bias = np.array([1.0, 2.0])
    np.testing.assert_allclose(
        perturbed_noise_prediction(mixture, x, 0.4, BiasError(bias)), exact + bias
    )
