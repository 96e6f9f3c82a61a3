"""Data and initial states of a chain: distributions over n states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from coarsekl.errors import ConfigError, DataError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl_chains.kernels import reference_of

__all__ = ["DirichletInitial", "EquilibriumInitial", "VectorData", "VectorInitial"]


def _vector_source(values: Any, path: str | None, what: str) -> np.ndarray:
    if (values is None) == (path is None):
        raise ConfigError(f"{what}: give exactly one of 'values' (numbers) or 'path' (.npy)")
    if path is not None:
        file = Path(path)
        if not file.is_file() or file.suffix != ".npy":
            raise DataError(f"{what}: {str(file)!r} must be an existing .npy file")
        try:
            values = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{what}: cannot read {str(file)!r}: {error}") from None
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be numbers, got {values!r}") from None


@attrs.frozen(kw_only=True, eq=False)
class VectorData:
    """The data: intensities x ≥ 0 over n states (``values`` or a 1-D .npy ``path``);
    q_data = x / Σx and the reference block masses are w(q_data).

    Parameters
    ----------
    values
        Intensities over the n states, ≥ 0. Units: data intensity.
    path
        A 1-D .npy file holding them instead of ``values``. Units: data intensity.
    """

    values: Any = None
    path: str | None = None

    def image(self, rng: np.random.Generator) -> np.ndarray:
        vector = _vector_source(self.values, self.path, "the data vector")
        if vector.ndim != 1:
            raise DataError(f"the data vector must be 1-D (n states), got shape {vector.shape}")
        return vector


@attrs.frozen(kw_only=True, eq=False)
class VectorInitial:
    """Given initial states: one vector (n,) for every member or one per member
    (members, n), from ``values`` or a .npy ``path``; normalised by the runner.

    Parameters
    ----------
    values
        One distribution (n,) or one per member (members, n), ≥ 0. Units: probability
        (normalised).
    path
        A .npy file holding them instead of ``values``. Units: probability (normalised).
    """

    values: Any = None
    path: str | None = None

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        vectors = _vector_source(self.values, self.path, "the initial vector")
        return problem.member_states(vectors, rng.members, "the initial vector")


def _positive(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{attribute.name} must be a number > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class DirichletInitial:
    """Random distributions: p ~ Dirichlet(concentration) over all n states
    (``block_masses = "random"``), or Dirichlet conditionals inside every block scaled to
    the reference masses w^ref (``block_masses = "reference"``: the state starts in A_δ).

    Parameters
    ----------
    concentration
        Dirichlet concentration; 1 is uniform on the simplex. Units: dimensionless.
    block_masses
        ``random`` (Dirichlet over all states) or ``reference`` (Dirichlet inside each block,
        masses w^ref). Units: none (a choice).
    """

    concentration: float = attrs.field(default=1.0, validator=_positive)
    block_masses: str = attrs.field(
        default="random", validator=attrs.validators.in_(("random", "reference"))
    )

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        shape = tuple(problem.partition.site_shape)
        draws = np.stack([g.gamma(self.concentration, size=shape) for g in rng.generators])
        if self.block_masses == "random":
            return draws / draws.sum(axis=tuple(range(1, draws.ndim)), keepdims=True)
        partition = problem.partition
        scale = problem.reference_masses / partition.block_sums(draws)
        return draws * partition.broadcast(scale)


@attrs.frozen(kw_only=True)
class EquilibriumInitial:
    """Every member starts at Σ_j w^ref_j π_j: the reference masses, each block at its
    reference distribution (V_π = 0, V_δ = 0)."""

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        partition = problem.partition
        reference = reference_of(partition).reshape(partition.site_shape)
        state = partition.broadcast(problem.reference_masses) * reference
        return np.broadcast_to(state, (rng.members, *state.shape)).copy()
