"""Specification of the data sources and the initial ensembles of particle runs
(THEORY §7: data q_0 = Σ_c π_c N(μ_c, Σ_c); a reverse run starts from q_ᾱ, by default
the standard normal).

Mixtures built from config tables are checked against the tables themselves (means on
the circle, σ² I covariances, normalised weights); the initial particles against the
moments of N(0, I) and of the exact noised mixture, within stated Monte Carlo errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl_blocks.quantities import BlockMass
from coarsekl_gmm.data import DigitsData, MixtureData, NoiseInitial, RingData
from coarsekl_gmm.mixture import GaussianMixture
from coarsekl_gmm.noise import Cosine, LinearBeta
from coarsekl_gmm.partitions import ClassPartition

# ---------------------------------------------------------------------------------------
# MixtureData: a mixture given in the config
# ---------------------------------------------------------------------------------------

MEANS = [[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]]


def test_a_scalar_std_gives_every_component_the_same_isotropic_covariance():
    mixture = MixtureData(weights=[1, 3], means=MEANS, std=0.5).distribution(None)
    assert isinstance(mixture, GaussianMixture)
    assert (mixture.n_components, mixture.dim) == (2, 3)
    np.testing.assert_array_equal(mixture.means, MEANS)
    np.testing.assert_allclose(mixture.covariances, np.stack([0.25 * np.eye(3)] * 2))
    np.testing.assert_allclose(mixture.weights, [0.25, 0.75])  # normalised


def test_one_std_per_component():
    mixture = MixtureData(weights=[1, 1], means=MEANS, std=[0.5, 2.0]).distribution(None)
    np.testing.assert_allclose(mixture.covariances[0], 0.25 * np.eye(3))
    np.testing.assert_allclose(mixture.covariances[1], 4.0 * np.eye(3))


def test_full_covariances_are_taken_as_given():
    covariances = [[[1.0, 0.3], [0.3, 0.5]], [[0.2, -0.1], [-0.1, 0.4]]]
    mixture = MixtureData(
        weights=[0.2, 0.8], means=[[0, 0], [1, 1]], covariances=covariances
    ).distribution(None)
    np.testing.assert_allclose(mixture.covariances, covariances)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "exactly one of 'covariances' and 'std'"),  # neither
        ({"std": 1.0, "covariances": [np.eye(3).tolist()] * 2}, "exactly one"),  # both
        ({"std": 0.0}, "std must be positive"),
        ({"std": [1.0, -1.0]}, "std must be positive"),
        ({"std": float("nan")}, "std must be positive"),
        ({"std": 1.0, "means": [0.0, 1.0]}, "list of points"),
        ({"std": 1.0, "weights": [1.0, 1.0, 1.0]}, r"shape \(components, dim\)"),  # 3 weights
        ({"std": 1.0, "weights": [1.0, -1.0]}, "non-negative"),
        ({"covariances": [np.diag([1.0, 0.0, 1.0]).tolist()] * 2}, "positive definite"),
    ],
)
def test_bad_mixture_tables_are_config_errors(changes, message):
    table = {"weights": [1.0, 1.0], "means": MEANS, **changes}
    with pytest.raises(ConfigError, match=message):
        MixtureData(**table).distribution(None)


# ---------------------------------------------------------------------------------------
# RingData: C components evenly spaced on a circle
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("components", [1, 4, 8])
def test_ring_means_lie_evenly_on_the_circle(components):
    mixture = RingData(components=components, radius=3.0, std=0.25).distribution(None)
    means = mixture.means
    np.testing.assert_allclose(np.hypot(means[:, 0], means[:, 1]), 3.0)
    angles = np.arctan2(means[:, 1], means[:, 0]) % (2 * math.pi)
    np.testing.assert_allclose(angles, 2 * math.pi * np.arange(components) / components, atol=1e-12)
    np.testing.assert_allclose(
        mixture.covariances, np.broadcast_to(0.0625 * np.eye(2), (components, 2, 2))
    )
    np.testing.assert_allclose(mixture.weights, 1 / components)


def test_ring_weights_are_normalised():
    mixture = RingData(components=4, weights=[4, 2, 1, 1]).distribution(None)
    np.testing.assert_allclose(mixture.weights, [0.5, 0.25, 0.125, 0.125])


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 1, 1, 1, 1], [[1, 1], [1, 1]]])
def test_ring_needs_one_weight_per_component(weights):
    with pytest.raises(ConfigError, match="give 4 weights"):
        RingData(components=4, weights=weights).distribution(None)


@pytest.mark.parametrize(
    "changes",
    [{"components": 0}, {"components": True}, {"radius": -1.0}, {"std": 0}, {"std": "0.5"}],
)
def test_ring_parameters_must_be_positive_numbers(changes):
    with pytest.raises(ConfigError, match="must be a positive number"):
        RingData(**changes)


# ---------------------------------------------------------------------------------------
# NoiseInitial: particles from q_ᾱ with equal weights
# ---------------------------------------------------------------------------------------

RING = RingData(components=4, radius=4.0, std=0.5).distribution(None)


def problem_with(particles: int, mixture: GaussianMixture = RING) -> Problem:
    partition = ClassPartition(shape=(particles,), data=mixture, reference_samples=1000)
    return Problem(partition, BlockMass(), mixture)


def draw(initial: NoiseInitial, particles: int, members: int, seed: int = 0) -> Ensemble:
    rng = MemberRandom.from_seed(seed, Purpose.INITIAL, members)
    return initial.states(problem_with(particles), rng)


def assert_moments(positions: np.ndarray, mean: np.ndarray, covariance: np.ndarray):
    """Sample mean and covariance of ``positions`` (n, d) within 4.5 standard errors:
    SE(mean_i) = √(Σ_ii/n), SE(cov_ij) = √((Σ_ii Σ_jj + Σ_ij²)/n) (Gaussian fourth
    moments; for a mixture this is an approximation, checked with a looser factor)."""
    n = positions.shape[0]
    diag = np.diag(covariance)
    assert np.all(np.abs(positions.mean(axis=0) - mean) <= 4.5 * np.sqrt(diag / n))
    se_cov = np.sqrt((np.outer(diag, diag) + covariance**2) / n)
    assert np.all(np.abs(np.cov(positions.T) - covariance) <= 6 * se_cov)


def test_default_initial_particles_are_standard_normal_with_equal_weights():
    ensemble = draw(NoiseInitial(), particles=20_000, members=2)
    assert ensemble.positions.shape == (2, 20_000, 2) and ensemble.alpha_bar == 0.0
    np.testing.assert_array_equal(ensemble.weights, 1 / 20_000)
    for member in ensemble.positions:
        assert_moments(member, np.zeros(2), np.eye(2))
    # members draw independently
    assert not np.array_equal(ensemble.positions[0], ensemble.positions[1])


def test_initial_particles_at_a_signal_level_follow_the_noised_data():
    level = 0.3
    ensemble = draw(NoiseInitial(alpha_bar=level), particles=20_000, members=2)
    assert ensemble.alpha_bar == level
    target = RING.noised(level)
    for member in ensemble.positions:
        assert_moments(member, target.mean(), target.covariance())
        # the class proportions of the exact noised data, within 4 standard errors
        labels = target.classify(member)
        shares = np.bincount(labels, minlength=4) / labels.size
        np.testing.assert_allclose(shares, 0.25, atol=4 * math.sqrt(0.25 * 0.75 / 20_000))


def test_initial_particles_depend_only_on_the_seed_and_member():
    one = draw(NoiseInitial(alpha_bar=0.5), particles=500, members=1, seed=4)
    two = draw(NoiseInitial(alpha_bar=0.5), particles=500, members=3, seed=4)
    np.testing.assert_array_equal(one.positions[0], two.positions[0])
    other = draw(NoiseInitial(alpha_bar=0.5), particles=500, members=1, seed=5)
    assert not np.array_equal(one.positions, other.positions)


@pytest.mark.parametrize(("name", "schedule"), [("cosine", Cosine()), ("linear", LinearBeta())])
def test_a_schedule_starts_the_particles_at_its_first_signal_level(name, schedule):
    initial = NoiseInitial(schedule=name)
    expected = float(schedule.alpha_bar(schedule.t_max))
    assert 0 < expected < 1e-3
    assert initial.level == expected
    assert draw(initial, particles=100, members=1).alpha_bar == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"alpha_bar": 0.5, "schedule": "cosine"}, "at most one"),
        ({"schedule": "cosin"}, "unknown noise schedule 'cosin'"),
        ({"alpha_bar": 1.0}, r"\[0, 1\)"),
        ({"alpha_bar": -0.1}, r"\[0, 1\)"),
    ],
)
def test_bad_initial_tables_are_config_errors_at_construction(changes, message):
    with pytest.raises(ConfigError, match=message):
        NoiseInitial(**changes)


# ---------------------------------------------------------------------------------------
# DigitsData (needs scikit-learn)
# ---------------------------------------------------------------------------------------


def test_digits_data_is_the_64_dimensional_ten_component_mixture():
    pytest.importorskip("sklearn")
    from coarsekl_gmm.digits import digits_data

    mixture = DigitsData(regularisation=0.01).distribution(None)
    assert (mixture.n_components, mixture.dim) == (10, 64)
    assert mixture.eigenvalues.min() >= 0.01 * (1 - 1e-9)
    images, labels = digits_data()
    np.testing.assert_allclose(mixture.means[7], images[labels == 7].mean(axis=0))
    np.testing.assert_allclose(mixture.weights, np.bincount(labels) / labels.size)


@pytest.mark.parametrize("regularisation", [0.0, -1e-3, True])
def test_digits_regularisation_must_be_positive(regularisation):
    with pytest.raises(ConfigError, match="regularisation"):
        DigitsData(regularisation=regularisation)
