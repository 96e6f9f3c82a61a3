"""Weighted particle ensembles: the state of sample-based experiments.

An image state is a distribution over pixels; a particle state is a weighted sample
{(x_i, w_i)} in R^d. Both are distributions over their *sites* (pixels or particles): the
weights of an :class:`Ensemble` play the role of the image's pixel values (≥ 0, Σ = 1 over
the sites), so block masses, the coarse quantity and the V_δ projection mean the same for
both. What an ensemble adds is where its particles are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

__all__ = ["Ensemble", "stack_ensembles"]


def _frozen_mapping(value: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {str(name): np.asarray(array) for name, array in dict(value).items()}


@attrs.frozen(eq=False)
class Ensemble:
    """A batch of weighted particle ensembles.

    ``positions`` (..., N, d): the particles x_i in R^d (the run's dtype);
    ``weights`` (..., N): w_i ≥ 0 with Σ_i w_i = 1 (float64);
    ``alpha_bar``: the signal level ᾱ of the positions, shared by the batch (1: data,
    towards 0: pure noise; a diffusion kernel sets it for the state it returns);
    ``carried``: per-particle arrays ``(..., N, *rest)`` that travel with the particles,
    such as a multistep sampler's previous x̂_0 (a resampling projector gathers them too).

    The leading axes ``...`` are batch axes (scheme, member): ``shape`` is the weights'
    shape and indexing (``ensemble[i]``, ``ensemble[None]``) acts on the batch axes only.

    Per-particle values derived from the positions (a partition's block labels) are kept
    with :meth:`derived`; they follow indexing and reweighting, and are dropped when the
    positions or ᾱ change.
    """

    positions: np.ndarray = attrs.field(converter=np.asarray)
    weights: np.ndarray = attrs.field(converter=np.asarray)
    alpha_bar: float = attrs.field(default=1.0, converter=float)
    carried: dict[str, np.ndarray] = attrs.field(factory=dict, converter=_frozen_mapping)
    _derived: dict[Hashable, np.ndarray] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if self.positions.ndim < 2 or self.positions.shape[:-1] != self.weights.shape:
            raise ValueError(
                f"an Ensemble needs positions (..., N, d) and weights (..., N); got positions "
                f"{self.positions.shape} and weights {self.weights.shape}"
            )
        for name, array in self.carried.items():
            if array.shape[: self.weights.ndim] != self.weights.shape:
                raise ValueError(
                    f"carried array {name!r} has shape {array.shape}; it must start with the "
                    f"weights' shape {self.weights.shape}"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        """Batch shape plus (N,): the shape of ``weights``."""
        return self.weights.shape

    @property
    def ndim(self) -> int:
        return self.weights.ndim

    @property
    def particles(self) -> int:
        """N, the number of particles of each ensemble."""
        return self.weights.shape[-1]

    @property
    def dim(self) -> int:
        """d, the dimension of the space the particles live in."""
        return self.positions.shape[-1]

    def __getitem__(self, index: Any) -> Ensemble:
        """Index the batch axes (an int, slice, None or a tuple of them)."""
        indexed = Ensemble(
            self.positions[index],
            self.weights[index],
            self.alpha_bar,
            {name: array[index] for name, array in self.carried.items()},
        )
        indexed._derived.update({key: array[index] for key, array in self._derived.items()})
        return indexed

    def replace(self, **changes: Any) -> Ensemble:
        """A new ensemble with some fields changed (the others shared, not copied)."""
        replaced = attrs.evolve(self, **changes)
        if "positions" not in changes and "alpha_bar" not in changes:
            replaced._derived.update(self._derived)
        return replaced

    def derived(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A per-particle array ``(..., N, ...)`` derived from the positions and ᾱ only,
        computed on first use and kept (read-only) under ``key``."""
        value = self._derived.get(key)
        if value is None:
            value = np.asarray(compute())
            if value.shape[: self.ndim] != self.shape:
                raise ValueError(
                    f"a derived array must start with the ensemble's shape {self.shape}, "
                    f"got {value.shape}"
                )
            value.flags.writeable = False
            value = self._derived.setdefault(key, value)
        return value

    def broadcast_to(self, batch: tuple[int, ...]) -> Ensemble:
        """Repeat the ensemble over new leading batch axes ``batch`` (new arrays)."""

        def expand(array: np.ndarray) -> np.ndarray:
            return np.broadcast_to(array, (*batch, *array.shape)).copy()

        return Ensemble(
            expand(self.positions),
            expand(self.weights),
            self.alpha_bar,
            {name: expand(array) for name, array in self.carried.items()},
        )

    def gather(self, indices: np.ndarray) -> Ensemble:
        """The particles ``indices`` (..., N') of each ensemble, with uniform weights:
        positions and carried arrays are taken along the particle axis (resampling)."""
        axis = self.weights.ndim - 1
        taken = indices.shape[-1]

        def take(array: np.ndarray) -> np.ndarray:
            index = indices.reshape(indices.shape + (1,) * (array.ndim - indices.ndim))
            return np.take_along_axis(array, index, axis=axis)

        gathered = Ensemble(
            take(self.positions),
            np.full(indices.shape, 1.0 / taken),
            self.alpha_bar,
            {name: take(array) for name, array in self.carried.items()},
        )
        gathered._derived.update({key: take(array) for key, array in self._derived.items()})
        return gathered


def stack_ensembles(ensembles: Sequence[Ensemble]) -> Ensemble:
    """Stack ensembles of equal shape along a new leading batch axis."""
    first = ensembles[0]
    levels = {e.alpha_bar for e in ensembles}
    if len(levels) > 1:
        raise ValueError(f"cannot stack ensembles at different signal levels ᾱ: {levels}")
    stacked = Ensemble(
        np.stack([e.positions for e in ensembles]),
        np.stack([e.weights for e in ensembles]),
        first.alpha_bar,
        {name: np.stack([e.carried[name] for e in ensembles]) for name in first.carried},
    )
    shared = set(first._derived).intersection(*(e._derived for e in ensembles[1:]))
    for key in shared:
        stacked._derived[key] = np.stack([e._derived[key] for e in ensembles])
    return stacked
