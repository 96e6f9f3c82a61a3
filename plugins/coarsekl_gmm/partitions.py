"""Partitions of particles: by class and by spatial cells of R^d.

A particle partition assigns each particle to a block from its position (and the signal
level ᾱ of the ensemble), so block j's mass is the weight of the particles in it:
w_j = Σ_{i: j(x_i) = j} w_i. Its reference is the block masses of the exact noised data
q_ᾱ, estimated once per ᾱ from a fixed sample of the data (Monte Carlo error
~√(w_j (1 − w_j) / n) with n = ``reference_samples``): a particle at high noise is judged
against the noised data, not the clean data.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl_gmm.mixture import (
    COMPILED_MAX_DIM,
    SMALLEST_ALPHA_BAR,
    GaussianMixture,
    exact_score_and_posteriors,
)
from coarsekl_gmm.particles import block_weights

__all__ = ["ClassPartition", "GridPartition"]

MAX_CELLS = 1 << 16  # blocks of a grid partition (block masses are dense (..., K) arrays)
REFERENCE_SEED = 20_221_101  # the fixed data sample behind every partition's reference


def _particles(shape) -> tuple[int]:
    if len(shape) != 1 or shape[0] < 1:
        raise ConfigError(f"a particle partition needs shape = (particles,), got {shape}")
    return (int(shape[0]),)


def _mixture(data) -> GaussianMixture:
    if not isinstance(data, GaussianMixture):
        raise ConfigError(
            f"this partition cuts particles of a Gaussian-mixture data distribution, but the "
            f'data is {type(data).__name__}; use [data] kind = "gaussian-mixture", "ring" '
            'or "digits"'
        )
    return data


@attrs.define(eq=False, slots=False)
class _ParticlePartition:
    """What every particle partition shares: labels cached per positions array, block
    sums of weights, and the Monte Carlo reference at each ᾱ."""

    site_dims: ClassVar[tuple[str, ...]] = ("particle",)
    site_kind: ClassVar[str] = "particle"

    @property
    def site_shape(self) -> tuple[int, ...]:
        return self.shape

    def assign(self, positions: np.ndarray, alpha_bar: float) -> np.ndarray:
        """Block labels ``(..., N)`` of positions ``(..., N, d)`` at signal level ᾱ."""
        raise NotImplementedError

    def labels(self, ensemble: Ensemble) -> np.ndarray:
        """Block label of every particle, ``(..., N)`` ints in [0, K) (kept with the
        ensemble: the runner, the projector and the metrics ask for the same labels)."""
        return ensemble.derived(
            ("labels", self), lambda: self.assign(ensemble.positions, ensemble.alpha_bar)
        )

    def block_sums(self, ensemble: Ensemble) -> np.ndarray:
        """w_j = Σ_{i in block j} w_i: ``(..., N) -> (..., K)``."""
        if not isinstance(ensemble, Ensemble):
            raise TypeError(
                f"a particle partition sums the weights of an Ensemble, got {type(ensemble)}"
            )
        return block_weights(ensemble.weights, self.labels(ensemble), self.n_blocks)

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        raise TypeError(
            "particle blocks depend on the positions: use labels(ensemble) and take "
            "block_values[..., labels] instead of broadcast()"
        )

    def reference_masses(self, data: Any, alpha_bar: float = 1.0) -> np.ndarray:
        """Block masses of the exact noised data q_ᾱ, by Monte Carlo on a fixed sample
        (the same data sample and noise at every ᾱ, so the target moves smoothly)."""
        sample, noise = self._reference_sample(_mixture(data))
        if alpha_bar < 1.0:
            sample = math.sqrt(alpha_bar) * sample + math.sqrt(1 - alpha_bar) * noise
        labels = self.assign(sample, alpha_bar)
        return np.bincount(labels, minlength=self.n_blocks) / labels.size

    def _reference_sample(self, mixture: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
        cached = getattr(self, "_sample", None)
        if cached is None or cached[0] is not mixture:
            rng = np.random.default_rng(REFERENCE_SEED)
            sample, _ = mixture.sample(self.reference_samples, rng)
            cached = self._sample = (mixture, sample, rng.standard_normal(sample.shape))
        return cached[1], cached[2]


def _reference_samples(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1000:
        raise ConfigError(f"reference_samples must be an integer ≥ 1000, got {value!r}")


ASSIGNMENTS = ("posterior", "x0")


@attrs.define(eq=False, slots=False, kw_only=True)
class ClassPartition(_ParticlePartition):
    """One block per mixture component: a particle belongs to its most probable class.

    Parameters
    ----------
    assign
        ``"posterior"``: argmax_c q_ᾱ(c | x) at the current noise level; ``"x0"``: the
        class of the x_0-prediction, argmax_c q_0(c | x̂_0(x)).
    reference_samples
        Size of the fixed data sample that estimates the reference class masses of q_ᾱ.
        Units: samples.
    """

    shape: tuple[int, ...] = attrs.field(converter=_particles)
    data: GaussianMixture = attrs.field(converter=_mixture, repr=False)
    assign_by: str = attrs.field(default="posterior", alias="assign")
    reference_samples: int = attrs.field(default=100_000, validator=_reference_samples)

    def __attrs_post_init__(self) -> None:
        if self.assign_by not in ASSIGNMENTS:
            raise ConfigError(f"assign must be one of {list(ASSIGNMENTS)}, got {self.assign_by!r}")

    @property
    def n_blocks(self) -> int:
        return self.data.n_components

    def labels(self, ensemble: Ensemble) -> np.ndarray:
        if self.assign_by != "posterior" or self.data.dim <= COMPILED_MAX_DIM:
            return super().labels(ensemble)  # small d: the compiled argmax is cheaper
        # Large d: the argmax of the exact posteriors, whose BLAS products the next kernel
        # step reuses for its score (one pass over the particles instead of two).
        return ensemble.derived(
            ("labels", self),
            lambda: exact_score_and_posteriors(self.data, ensemble)[1].argmax(axis=-1),
        )

    def assign(self, positions: np.ndarray, alpha_bar: float) -> np.ndarray:
        level = max(float(alpha_bar), SMALLEST_ALPHA_BAR)
        if self.assign_by == "x0" and level < 1.0:
            positions, level = self.data.x0_prediction(positions, level), 1.0
        return self.data.classify(positions, level)

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        return {
            "component": (
                np.arange(self.n_blocks),
                {"long_name": "mixture component (class) of the block", "units": "1"},
            )
        }


def _bins(value) -> tuple[int, ...]:
    bins = tuple(np.atleast_1d(value).tolist())
    if not bins or not all(isinstance(b, int) and b >= 1 for b in bins):
        raise ConfigError(f"bins must be positive integers (one per axis), got {value!r}")
    return bins


@attrs.define(eq=False, slots=False, kw_only=True)
class GridPartition(_ParticlePartition):
    """Cells of a regular grid over some axes of R^d; particles outside the grid's range
    belong to the nearest edge cell, so every particle is in a cell.

    Parameters
    ----------
    bins
        Cells per axis, e.g. ``[4, 4]``.
    low, high
        The grid's range on each axis (one number for all axes, or one per axis).
        Units: data units.
    axes
        The coordinate axes the grid cuts (default: the first ``len(bins)``).
    reference_samples
        Size of the fixed data sample that estimates the reference cell masses of q_ᾱ.
        Units: samples.
    """

    shape: tuple[int, ...] = attrs.field(converter=_particles)
    data: GaussianMixture = attrs.field(converter=_mixture, repr=False)
    bins: tuple[int, ...] = attrs.field(default=(4, 4), converter=_bins)
    low: float | list[float] = -6.0
    high: float | list[float] = 6.0
    axes: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    reference_samples: int = attrs.field(default=100_000, validator=_reference_samples)
    _edges: list[np.ndarray] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.axes is None and self.data.dim != len(self.bins):
            raise ConfigError(
                f"the data is {self.data.dim}-D and bins has {len(self.bins)} entries: say "
                "which coordinate axes the grid cuts with axes = [...]"
            )
        if math.prod(self.bins) > MAX_CELLS:
            raise ConfigError(
                f"a grid of {math.prod(self.bins):,} cells is more than {MAX_CELLS:,}; "
                "use fewer bins"
            )
        axes = self.axes if self.axes is not None else tuple(range(len(self.bins)))
        if len(set(axes)) != len(self.bins) or not all(0 <= a < self.data.dim for a in axes):
            raise ConfigError(
                f"axes {list(axes)} must name {len(self.bins)} distinct coordinate axes of "
                f"R^{self.data.dim}"
            )
        low = np.broadcast_to(np.asarray(self.low, dtype=np.float64), (len(axes),))
        high = np.broadcast_to(np.asarray(self.high, dtype=np.float64), (len(axes),))
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ConfigError(f"the grid needs finite low < high, got {self.low}, {self.high}")
        self.axes = tuple(axes)
        self._edges = [
            np.linspace(a, b, n + 1)[1:-1] for a, b, n in zip(low, high, self.bins, strict=True)
        ]

    @property
    def n_blocks(self) -> int:
        return math.prod(self.bins)

    def assign(self, positions: np.ndarray, alpha_bar: float) -> np.ndarray:
        cell = np.zeros(positions.shape[:-1], dtype=np.intp)
        for axis, inner_edges, bins in zip(self.axes, self._edges, self.bins, strict=True):
            cell = cell * bins + np.searchsorted(inner_edges, positions[..., axis], side="right")
        return cell

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        index = np.unravel_index(np.arange(self.n_blocks), self.bins)
        return {
            f"cell_{axis}": (
                column,
                {"long_name": f"cell index along coordinate axis {axis}", "units": "1"},
            )
            for axis, column in zip(self.axes, index, strict=True)
        }
