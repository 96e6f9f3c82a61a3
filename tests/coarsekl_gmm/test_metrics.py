"""Specification of the particle-ensemble metrics (THEORY §7: effective sample size,
class-posterior entropy, class diversity, and distances to the exact target q_ᾱ at the
ensemble's own signal level).

Each metric is checked against its formula evaluated directly (np.bincount, entropies of
the exact posteriors), against exact samples of q_ᾱ (small) versus shifted or mislabelled
ones (large), and for batch shapes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_blocks.quantities import BlockMass
from coarsekl_gmm.data import RingData
from coarsekl_gmm.metrics import (
    BinnedKL,
    ClassEntropy,
    EffectiveSampleSize,
    EnergyDistance,
    ImageBlockError,
    MeanError,
    PosteriorEntropy,
    SlicedWasserstein,
    binned_kl_to,
    energy_distance_to,
    image_block_masses,
    mean_error,
    sliced_wasserstein_to,
)
from coarsekl_gmm.mixture import GaussianMixture
from coarsekl_gmm.partitions import ClassPartition

RING = RingData(components=4, radius=4.0, std=0.5, weights=[4, 3, 2, 1]).distribution(None)
STEP = Step(1, 1)


def problem_for(mixture: GaussianMixture, particles: int) -> Problem:
    partition = ClassPartition(shape=(particles,), data=mixture, reference_samples=1000)
    return Problem(partition, BlockMass(), mixture)


def exact_ensemble(n: int, alpha_bar: float = 1.0, seed: int = 0, mixture=RING) -> Ensemble:
    target = mixture if alpha_bar == 1.0 else mixture.noised(alpha_bar)
    positions, _ = target.sample(n, np.random.default_rng(seed))
    return Ensemble(positions[None], np.full((1, n), 1.0 / n), alpha_bar=alpha_bar)


# ---------------------------------------------------------------------------------------
# Effective sample size, entropies, mean error
# ---------------------------------------------------------------------------------------


def test_ess_is_one_over_the_sum_of_squared_weights():
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(50), (2, 3))
    weights[0, 0] = np.eye(50)[7]  # one particle holds all
    weights[0, 1] = 1 / 50
    state = Ensemble(np.zeros((2, 3, 50, 2)), weights)
    ess = EffectiveSampleSize().compute(state, problem_for(RING, 50), STEP)
    assert ess.shape == (2, 3)
    np.testing.assert_allclose(ess, 1.0 / (weights**2).sum(-1), rtol=1e-13)
    assert ess[0, 0] == pytest.approx(1.0) and ess[0, 1] == pytest.approx(50.0)


def test_class_entropy_is_the_entropy_of_the_block_masses():
    rng = np.random.default_rng(1)
    positions = rng.normal(0.0, 4.0, (2, 400, 2))
    weights = rng.dirichlet(np.ones(400), 2)
    problem = problem_for(RING, 400)
    state = Ensemble(positions, weights)
    labels = RING.classify(positions)
    for row in range(2):
        masses = np.bincount(labels[row], weights[row], minlength=4)
        expected = -sum(m * math.log(m) for m in masses if m > 0)
        assert ClassEntropy().compute(state, problem, STEP)[row] == pytest.approx(expected)


def test_class_entropy_of_one_class_is_zero_and_of_equal_classes_log_c():
    problem = problem_for(RING, 200)
    at_one_mean = Ensemble(np.broadcast_to(RING.means[2], (1, 200, 2)), np.full((1, 200), 1 / 200))
    assert ClassEntropy().compute(at_one_mean, problem, STEP)[0] == pytest.approx(0, abs=1e-12)
    four = Ensemble(np.repeat(RING.means, 50, axis=0)[None], np.full((1, 200), 1 / 200))
    assert ClassEntropy().compute(four, problem, STEP)[0] == pytest.approx(math.log(4))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.05])
def test_posterior_entropy_is_the_weighted_entropy_of_the_exact_posteriors(alpha_bar):
    rng = np.random.default_rng(2)
    positions = rng.normal(0.0, 3.0, (2, 300, 2))
    weights = rng.dirichlet(np.ones(300), 2)
    state = Ensemble(positions, weights, alpha_bar=alpha_bar)
    value = PosteriorEntropy().compute(state, problem_for(RING, 300), STEP)
    posteriors = RING.posteriors(positions, alpha_bar)
    logs = np.log(np.where(posteriors > 0, posteriors, 1.0))
    expected = -(weights * (posteriors * logs).sum(-1)).sum(-1)
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-14)
    assert np.all((value >= 0) & (value <= math.log(4)))


def test_posterior_entropy_is_zero_on_the_data_and_the_prior_entropy_at_pure_noise():
    problem = problem_for(RING, 400)
    at_means = Ensemble(np.repeat(RING.means, 100, axis=0)[None], np.full((1, 400), 1 / 400))
    assert PosteriorEntropy().compute(at_means, problem, STEP)[0] < 1e-6
    noise = at_means.replace(
        positions=np.random.default_rng(3).normal(size=(1, 400, 2)), alpha_bar=0.0
    )
    prior = -(RING.weights * np.log(RING.weights)).sum()
    assert PosteriorEntropy().compute(noise, problem, STEP)[0] == pytest.approx(prior, rel=1e-6)


@pytest.mark.parametrize("alpha_bar", [1.0, 0.3])
def test_mean_error_vanishes_for_an_ensemble_symmetric_about_the_exact_mean(alpha_bar):
    centre = math.sqrt(alpha_bar) * RING.mean()  # E_{q_ᾱ}[x] = √ᾱ E_q[x]
    offsets = np.random.default_rng(4).normal(0.0, 3.0, (2, 100, 2))
    positions = np.concatenate([centre + offsets, centre - offsets], axis=1)
    weights = np.random.default_rng(5).dirichlet(np.ones(100), 2)
    weights = np.concatenate([weights, weights], axis=1) / 2  # mirrored pairs, equal weights
    state = Ensemble(positions, weights, alpha_bar=alpha_bar)
    problem = problem_for(RING, 200)
    np.testing.assert_allclose(MeanError().compute(state, problem, STEP), 0.0, atol=1e-12)
    shifted = state.replace(positions=positions + np.array([0.3, -0.4]))
    np.testing.assert_allclose(MeanError().compute(shifted, problem, STEP), 0.5, rtol=1e-10)
    np.testing.assert_allclose(
        mean_error(RING.noised(alpha_bar), positions, weights), 0.0, atol=1e-12
    )


# ---------------------------------------------------------------------------------------
# Distances to q_ᾱ
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_bar", [1.0, 0.3])
def test_distances_are_small_for_exact_samples_and_grow_with_a_shift(alpha_bar):
    n = 10_000
    state = exact_ensemble(n, alpha_bar, seed=6)
    shifted = state.replace(positions=state.positions + np.array([0.3, 0.0]))
    problem = problem_for(RING, n)
    # SW₂ of a shift s is √(mean_θ (θ·s)²) ≈ |s|/√2 in 2-D (sample noise ≈ 0.02–0.1 at
    # n = 10⁴, mostly from the multinomial class counts of the well-separated ring)
    sw = SlicedWasserstein().compute(state, problem, STEP)[0]
    sw_shifted = SlicedWasserstein().compute(shifted, problem, STEP)[0]
    assert sw < 0.12 and 0.17 < sw_shifted < 0.27
    energy = EnergyDistance().compute(state, problem, STEP)[0]
    assert energy < 0.12 and EnergyDistance().compute(shifted, problem, STEP)[0] > energy + 0.06
    # binned KL of a sample of Q is ≈ (occupied cells − 1)/(2n) ≤ 256/(2n)
    kl = BinnedKL().compute(state, problem, STEP)[0]
    assert 0 <= kl < 256 / (2 * n) and BinnedKL().compute(shifted, problem, STEP)[0] > 3 * kl


def test_metrics_judge_the_particles_against_the_noised_data_at_their_own_level():
    state = exact_ensemble(5000, alpha_bar=0.3, seed=7)
    mislabelled = state.replace(alpha_bar=1.0)  # the same positions taken for data samples
    problem = problem_for(RING, 5000)
    for metric in (SlicedWasserstein(), EnergyDistance(), MeanError()):
        right = metric.compute(state, problem, STEP)[0]
        wrong = metric.compute(mislabelled, problem, STEP)[0]
        assert wrong > 5 * right, type(metric).__name__
    assert SlicedWasserstein().compute(state, problem, STEP)[0] < 0.1


def test_a_resampled_ensemble_listed_block_by_block_is_measured_on_all_its_blocks():
    """Beyond 10,000 (4,000) particles the distances use a strided subsample, not the first
    particles: an ensemble sorted by class is as close to q as an unsorted one."""
    n = 40_000
    positions, labels = RING.sample(n, np.random.default_rng(8))
    order = np.argsort(labels, kind="stable")
    weights = np.full(n, 1.0 / n)
    for distance in (sliced_wasserstein_to, energy_distance_to):
        unsorted = distance(RING, positions, weights)
        blocked = distance(RING, positions[order], weights)
        assert blocked < 0.1 and abs(blocked - unsorted) < 0.05
    assert sliced_wasserstein_to(RING, positions[order][:10_000], weights[:10_000] * 4) > 1.0


def test_distances_keep_the_batch_axes():
    state = exact_ensemble(2 * 3 * 300, seed=9)
    batch = state.replace(
        positions=state.positions.reshape(2, 3, 300, 2), weights=np.full((2, 3, 300), 1 / 300)
    )
    problem = problem_for(RING, 300)
    for metric in (
        SlicedWasserstein(),
        EnergyDistance(),
        BinnedKL(),
        MeanError(),
        PosteriorEntropy(),
    ):
        assert metric.compute(batch, problem, STEP).shape == (2, 3), type(metric).__name__
    single = sliced_wasserstein_to(RING, batch.positions[1, 2], batch.weights[1, 2])
    assert SlicedWasserstein().compute(batch, problem, STEP)[1, 2] == pytest.approx(single)


def test_binned_kl_refuses_data_that_is_not_two_dimensional():
    mixture = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], [np.eye(3)])
    state = exact_ensemble(100, mixture=mixture)
    with pytest.raises(ConfigError, match="for 2-D data, this data is 3-D"):
        BinnedKL().compute(state, problem_for(mixture, 100), STEP)
    with pytest.raises(ConfigError, match="2-D"):
        binned_kl_to(mixture, state.positions, state.weights)


@pytest.mark.parametrize(
    "metric", [PosteriorEntropy(), MeanError(), SlicedWasserstein(), ImageBlockError()]
)
def test_metrics_of_the_data_need_a_mixture(metric):
    state = exact_ensemble(10)
    with pytest.raises(ConfigError, match="Gaussian-mixture"):
        metric.compute(state, SimpleNamespace(data=np.ones((4, 4)), memo=lambda k, f: f()), STEP)


# ---------------------------------------------------------------------------------------
# Block masses of particles read as images
# ---------------------------------------------------------------------------------------


def test_image_block_masses_are_the_quadrant_sums_of_the_clipped_normalised_image():
    image = np.arange(16.0).reshape(4, 4) - 2.0  # two negative pixels, clipped to 0
    clipped = np.maximum(image, 0)
    quadrants = [clipped[:2, :2], clipped[:2, 2:], clipped[2:, :2], clipped[2:, 2:]]
    expected = np.array([q.sum() for q in quadrants]) / clipped.sum()
    np.testing.assert_allclose(image_block_masses(image.reshape(1, 16))[0], expected)
    np.testing.assert_array_equal(image_block_masses(np.zeros((1, 16)))[0], 0.0)  # no warning


def test_image_block_error_is_small_for_the_data_and_large_for_brightened_images():
    means = np.random.default_rng(10).uniform(0.5, 1.0, (3, 16))
    mixture = GaussianMixture([1, 1, 1], means, np.broadcast_to(0.01 * np.eye(16), (3, 16, 16)))
    state = exact_ensemble(4000, mixture=mixture, seed=11)
    problem = problem_for(mixture, 4000)
    error = ImageBlockError().compute(state, problem, STEP)[0]
    brighter = state.positions.reshape(1, 4000, 4, 4).copy()
    brighter[..., :2, :2] += 0.5  # the top-left quadrant
    moved = ImageBlockError().compute(
        state.replace(positions=brighter.reshape(1, 4000, 16)), problem, STEP
    )[0]
    assert error < 0.01 and moved > 0.1


def test_image_block_error_needs_square_images_that_divide_into_blocks():
    state = exact_ensemble(10)
    with pytest.raises(ConfigError, match="square image"):
        ImageBlockError().compute(state, problem_for(RING, 10), STEP)
    with pytest.raises(ConfigError, match="square image"):
        image_block_masses(np.zeros((2, 9)))  # 3 × 3 does not split into 2 × 2


def test_every_metric_describes_itself():
    for metric in (
        EffectiveSampleSize, PosteriorEntropy, ClassEntropy, MeanError, SlicedWasserstein,
        EnergyDistance, BinnedKL, ImageBlockError,
    ):  # fmt: skip
        assert metric.long_name and metric.units and metric.per_block is False
