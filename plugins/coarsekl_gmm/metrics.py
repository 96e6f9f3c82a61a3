"""Metrics of particle ensembles, each against the exact noised data q_ᾱ at the
ensemble's signal level (at the end of a run ᾱ = 1: the data itself).

Every ``compute`` takes an :class:`~coarsekl.ensemble.Ensemble` batch ``(..., N)`` and
returns ``(...)``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_gmm.mixture import GaussianMixture
from coarsekl_gmm.particles import (
    binned_kl_2d,
    effective_sample_size,
    energy_distance,
    random_directions,
    sliced_wasserstein,
    weighted_entropy_of_posteriors,
)

__all__ = [
    "BinnedKL",
    "ClassEntropy",
    "EffectiveSampleSize",
    "EnergyDistance",
    "ImageBlockError",
    "MeanError",
    "PosteriorEntropy",
    "SlicedWasserstein",
    "binned_kl_to",
    "energy_distance_to",
    "image_block_masses",
    "mean_error",
    "sliced_wasserstein_to",
]

METRIC_SEED = 7_001  # fixed directions and reference samples: the same at every step
SLICING_DIRECTIONS = 32
SLICING_QUANTILES = 500  # midpoint levels of each W₂² integral (≈1e-3 relative accuracy)
ENERGY_REFERENCE = 2_000  # exact-target sample size of the energy distance
ENERGY_PARTICLES = 4_000  # particles used per ensemble (a strided subsample, see _subsample)
SLICING_PARTICLES = 10_000  # the same for the sliced Wasserstein distance
BINS_2D = 16


def _mixture(problem: Problem) -> GaussianMixture:
    if not isinstance(problem.data, GaussianMixture):
        raise ConfigError("this metric needs a Gaussian-mixture data distribution")
    return problem.data


def _target(problem: Problem, state: Ensemble) -> GaussianMixture:
    """q_ᾱ at the ensemble's signal level (ᾱ = 0 is the standard normal limit)."""
    level = max(state.alpha_bar, 1e-12)
    return problem.memo(("noised", level), lambda: _mixture(problem).noised(level))


class _Metric:
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False


@attrs.frozen
class EffectiveSampleSize(_Metric):
    """ESS = 1 / Σ_i w_i² (N for equal weights, 1 when one particle holds all)."""

    long_name: ClassVar[str] = "effective sample size 1/Σw²"
    units: ClassVar[str] = "particle"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        return effective_sample_size(state.weights)


@attrs.frozen
class PosteriorEntropy(_Metric):
    """Σ_i w_i H(q_ᾱ(· | x_i)): how unsure the exact classifier is, on average."""

    long_name: ClassVar[str] = "mean entropy of the class posterior q_ᾱ(c | x)"
    units: ClassVar[str] = "nat"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        level = max(state.alpha_bar, 1e-12)
        posteriors = _mixture(problem).posteriors(state.positions, level)
        return weighted_entropy_of_posteriors(posteriors, state.weights)


@attrs.frozen
class ClassEntropy(_Metric):
    """H(w) = −Σ_j w_j log w_j of the block masses: the diversity of the classes present."""

    long_name: ClassVar[str] = "entropy of the block (class) masses H(w)"
    units: ClassVar[str] = "nat"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        masses = problem.block_masses(state)
        logs = np.log(np.where(masses > 0, masses, 1.0))
        return np.maximum(-(masses * logs).sum(axis=-1), 0.0)  # rounding: one class ≈ −1e-16


def _subsample(positions: np.ndarray, weights: np.ndarray, count: int):
    """Every k-th particle (k = ⌈N / count⌉), weights renormalised. Strided, not the first
    ``count``: a resampled ensemble lists its particles block by block."""
    stride = -(-weights.shape[-1] // count)
    if stride == 1:
        return positions, weights
    weights = weights[..., ::stride]
    totals = weights.sum(axis=-1, keepdims=True)
    return positions[..., ::stride, :], weights / np.where(totals > 0, totals, 1.0)


def mean_error(mixture: GaussianMixture, positions: np.ndarray, weights: np.ndarray):
    """‖Σ_i w_i x_i − E_q[x]‖₂, ``(..., N, d), (..., N) -> (...)``."""
    mean = np.einsum("...n,...nd->...d", weights, positions)
    return np.linalg.norm(mean - mixture.mean(), axis=-1)


def sliced_wasserstein_to(mixture: GaussianMixture, positions, weights) -> np.ndarray:
    """SW₂ over 32 fixed random directions against the exact quantiles of ``mixture``
    (on at most 10,000 particles of each ensemble)."""
    positions, weights = _subsample(positions, weights, SLICING_PARTICLES)
    directions = random_directions(
        SLICING_DIRECTIONS, mixture.dim, np.random.default_rng(METRIC_SEED)
    )
    return sliced_wasserstein(
        positions,
        weights,
        mixture.weights,
        mixture.means,
        mixture.covariances,
        directions,
        quantiles=SLICING_QUANTILES,
    )


def energy_distance_to(mixture: GaussianMixture, positions, weights) -> np.ndarray:
    """Energy distance (2E|X−Y| − E|X−X'| − E|Y−Y'|)^½ to 2,000 fixed samples of
    ``mixture``, on at most 4,000 particles of each ensemble."""
    reference, _ = mixture.sample(ENERGY_REFERENCE, np.random.default_rng(METRIC_SEED))
    positions, weights = _subsample(positions, weights, ENERGY_PARTICLES)
    squared = energy_distance(positions, weights, reference)
    return np.sqrt(squared)


def binned_kl_to(mixture: GaussianMixture, positions, weights) -> np.ndarray:
    """KL of 16 × 16 histograms over the mixture's ±4σ window against its exact cells."""
    if mixture.dim != 2:
        raise ConfigError(f"the metric 'binned_kl' is for 2-D data, this data is {mixture.dim}-D")
    spread = 4 * np.sqrt(np.diag(mixture.covariance()))
    edges = [
        np.linspace(centre - half, centre + half, BINS_2D + 1)
        for centre, half in zip(mixture.mean(), spread, strict=True)
    ]
    return binned_kl_2d(
        positions, weights, mixture.weights, mixture.means, mixture.covariances, *edges
    )


@attrs.frozen
class MeanError(_Metric):
    """‖Σ_i w_i x_i − E_{q_ᾱ}[x]‖₂, the error of the ensemble's mean."""

    long_name: ClassVar[str] = "error of the weighted mean ‖x̄ − E_q[x]‖"
    units: ClassVar[str] = "data units"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        return mean_error(_target(problem, state), state.positions, state.weights)


@attrs.frozen
class SlicedWasserstein(_Metric):
    """SW₂ = (mean over 32 fixed directions θ of W₂²(θ·x, θ·q_ᾱ))^½, exact target quantiles."""

    long_name: ClassVar[str] = "sliced Wasserstein-2 distance to q_ᾱ"
    units: ClassVar[str] = "data units"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        return sliced_wasserstein_to(_target(problem, state), state.positions, state.weights)


@attrs.frozen
class EnergyDistance(_Metric):
    """Energy distance (2E|X−Y| − E|X−X'| − E|Y−Y'|)^½ to 2,000 exact samples of q_ᾱ,
    on at most 4,000 particles of each ensemble (O(N·M) distances)."""

    long_name: ClassVar[str] = "energy distance to q_ᾱ"
    units: ClassVar[str] = "data units"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        return energy_distance_to(_target(problem, state), state.positions, state.weights)


@attrs.frozen
class BinnedKL(_Metric):
    """KL(P ‖ Q) of 16 × 16 histograms over the data's ±4σ window (2-D data only): P the
    weighted particles, Q the exact cell probabilities of q_ᾱ."""

    long_name: ClassVar[str] = "KL divergence of 2-D histograms, particles ‖ q_ᾱ"
    units: ClassVar[str] = "nat"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        return binned_kl_to(_target(problem, state), state.positions, state.weights)


IMAGE_BLOCKS = (2, 2)  # the quadrants of a particle read as a square image
IMAGE_REFERENCE = 20_000  # data samples behind the reference image block masses


def image_block_masses(positions: np.ndarray, blocks=IMAGE_BLOCKS) -> np.ndarray:
    """Block masses of particles read as square images (d = side², row-major): each image
    clipped at 0 and normalised, then summed over the ``blocks`` grid of the spatial
    ``blocks`` partition. ``(..., N, d) -> (..., N, K)``."""
    from coarsekl_blocks.partitions import BlockGrid

    side = math.isqrt(positions.shape[-1])
    if side * side != positions.shape[-1] or side % blocks[0] or side % blocks[1]:
        raise ConfigError(
            f"the metric 'image_block_error' reads each particle as a square image whose "
            f"side divides into {blocks[0]} × {blocks[1]} blocks; {positions.shape[-1]}-D "
            "particles are not such images"
        )
    images = np.maximum(positions, 0.0).reshape(*positions.shape[:-1], side, side)
    totals = images.sum(axis=(-2, -1), keepdims=True)
    images = images / np.where(totals > 0, totals, 1.0)
    return BlockGrid(shape=(side, side), blocks=blocks).block_sums(images)


@attrs.frozen
class ImageBlockError(_Metric):
    """‖Σ_i w_i w(x_i) − E_data[w(x)]‖₁: the spatial block masses of the generated images
    (each particle a square image, cut into 2 × 2 blocks), weighted over the ensemble,
    against those of the data (20,000 exact samples)."""

    long_name: ClassVar[str] = "L1 error of the images' mean 2 × 2 block masses"
    units: ClassVar[str] = "1"

    def compute(self, state: Ensemble, problem: Problem, step: Step) -> np.ndarray:
        mixture = _mixture(problem)
        reference = problem.memo(
            "image-block-reference",
            lambda: image_block_masses(
                mixture.sample(IMAGE_REFERENCE, np.random.default_rng(METRIC_SEED))[0]
            ).mean(axis=0),
        )
        masses = np.einsum("...n,...nk->...k", state.weights, image_block_masses(state.positions))
        return np.abs(masses - reference).sum(axis=-1)
