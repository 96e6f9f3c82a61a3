"""Data distributions and initial ensembles (the ``[data]`` and ``[initial]`` tables)."""

from __future__ import annotations

import math

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl_gmm.mixture import GaussianMixture

__all__ = ["DigitsData", "MixtureData", "NoiseInitial", "RingData"]


@attrs.frozen(kw_only=True)
class MixtureData:
    """A Gaussian mixture Σ_c π_c N(μ_c, Σ_c) in R^d given in the config.

    Parameters
    ----------
    weights
        π_c, one per component (normalised). Units: 1.
    means
        μ_c, a list of C points in R^d. Units: data units.
    covariances
        Σ_c, C symmetric positive-definite d × d matrices; or leave out and give ``std``.
        Units: data units².
    std
        Isotropic standard deviation(s) instead of ``covariances``: one number for every
        component or one per component. Units: data units.
    """

    weights: list[float]
    means: list[list[float]]
    covariances: list[list[list[float]]] | None = None
    std: float | list[float] | None = None

    def distribution(self, rng: np.random.Generator) -> GaussianMixture:
        means = np.asarray(self.means, dtype=np.float64)
        if (self.covariances is None) == (self.std is None):
            raise ConfigError("give exactly one of 'covariances' and 'std'")
        if self.covariances is not None:
            covariances = self.covariances
        else:
            if means.ndim != 2:
                raise ConfigError(f"means must be a list of points, got shape {means.shape}")
            std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), means.shape[:1])
            if not (np.isfinite(std).all() and (std > 0).all()):
                raise ConfigError(f"std must be positive, got {self.std}")
            covariances = std[:, None, None] ** 2 * np.eye(means.shape[1])
        return GaussianMixture(self.weights, means, covariances)


def _positive(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class RingData:
    """C isotropic Gaussians on a circle in R²: the picture-friendly test mixture.

    Parameters
    ----------
    components
        C, the number of components (evenly spaced on the circle).
    radius
        Radius of the circle. Units: data units.
    std
        Standard deviation of every component. Units: data units.
    weights
        π_c (normalised); equal weights by default. Units: 1.
    """

    components: int = attrs.field(default=8, validator=_positive)
    radius: float = attrs.field(default=4.0, validator=_positive)
    std: float = attrs.field(default=0.5, validator=_positive)
    weights: list[float] | None = None

    def distribution(self, rng: np.random.Generator) -> GaussianMixture:
        angles = 2 * math.pi * np.arange(self.components) / self.components
        means = self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        weights = np.ones(self.components) if self.weights is None else self.weights
        if np.shape(weights) != (self.components,):
            raise ConfigError(f"give {self.components} weights, got {weights}")
        covariances = np.broadcast_to(self.std**2 * np.eye(2), (self.components, 2, 2))
        return GaussianMixture(weights, means, covariances)


@attrs.frozen(kw_only=True)
class DigitsData:
    """The 8 × 8 digits (scikit-learn's bundled copy of the UCI set) as a 64-D mixture:
    one full-covariance Gaussian per digit, fitted once (intensities scaled to [0, 1]).

    Parameters
    ----------
    regularisation
        Added to every covariance's diagonal so that it is positive definite.
        Units: intensity².
    """

    regularisation: float = attrs.field(default=1e-3, validator=_positive)

    def distribution(self, rng: np.random.Generator) -> GaussianMixture:
        from coarsekl_gmm.digits import digits_mixture

        return digits_mixture(regularisation=self.regularisation)


@attrs.frozen(kw_only=True)
class NoiseInitial:
    """Particles drawn from the noised data q_ᾱ with equal weights: the start of a reverse
    run. By default ᾱ = 0, the standard normal N(0, I); give ``schedule`` (the kernel's)
    to start exactly at that schedule's first level ᾱ(t_max), or ``alpha_bar`` directly.

    Parameters
    ----------
    alpha_bar
        Signal level ᾱ of the initial particles, in [0, 1). Units: 1.
    schedule
        Name of the kernel's noise schedule (``"cosine"`` or ``"linear"``): start at its
        ᾱ(t_max) instead of ``alpha_bar``.
    """

    alpha_bar: float | None = None
    schedule: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.alpha_bar is not None and self.schedule is not None:
            raise ConfigError("give at most one of 'alpha_bar' and 'schedule'")
        if self.alpha_bar is not None and not 0.0 <= self.alpha_bar < 1.0:
            raise ConfigError(f"alpha_bar must lie in [0, 1), got {self.alpha_bar}")
        if self.schedule is not None:
            from coarsekl_gmm.noise import schedule_by_name

            schedule_by_name(self.schedule)  # an unknown name fails here, not mid-run

    @property
    def level(self) -> float:
        """ᾱ of the initial particles."""
        if self.schedule is not None:
            from coarsekl_gmm.noise import schedule_by_name

            noise = schedule_by_name(self.schedule)
            return float(noise.alpha_bar(noise.t_max))
        return 0.0 if self.alpha_bar is None else float(self.alpha_bar)

    def states(self, problem: Problem, rng: MemberRandom) -> Ensemble:
        data, level = problem.data, self.level
        particles = problem.partition.site_shape[0]
        noise = rng.normal((particles, data.dim))
        if level == 0.0:
            positions = noise
        else:
            signal = np.stack([data.sample(particles, g)[0] for g in rng.generators])
            positions = math.sqrt(level) * signal + math.sqrt(1 - level) * noise
        weights = np.full((rng.members, particles), 1.0 / particles)
        return Ensemble(positions, weights, alpha_bar=level)
