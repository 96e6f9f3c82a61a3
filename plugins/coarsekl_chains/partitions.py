"""The label-vector partition of n states, with a reference within-block distribution π_j."""

from __future__ import annotations

import attrs
import numpy as np

from coarsekl.errors import ConfigError, DataError

__all__ = ["LabelVector", "normalise_within_blocks"]

SITE_DIM = "site"  # not "state": that is the name of the snapshot variable


def _chain_shape(value) -> tuple[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    shape = tuple(value)
    if len(shape) != 1 or not isinstance(shape[0], int | np.integer) or shape[0] < 1:
        raise DataError(
            f"a label-vector partition needs 1-D data (a distribution over n states), "
            f"got data of shape {shape}; use a 'blocks' or 'labels' partition for images"
        )
    return (int(shape[0]),)


def _integer_vector(value, name: str) -> np.ndarray:
    array = np.array(value)  # a copy: later changes to the caller's array must not leak in
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ConfigError(f"{name} must be a non-empty list of integers, got {value!r}")
    return array


def normalise_within_blocks(values: np.ndarray, inverse: np.ndarray, n_blocks: int) -> np.ndarray:
    """values(x) / Σ_{y∈Ω_j(x)} values(y): ``(n,) -> (n,)``, each block summing to 1."""
    totals = np.bincount(inverse, weights=values, minlength=n_blocks)
    return values / totals[inverse]


@attrs.frozen(kw_only=True, eq=False)
class LabelVector:
    """n states cut into blocks by a label per state (``labels``), or into consecutive runs
    of ``sizes`` states; blocks are ordered by label value.

    ``reference`` (optional, n positive numbers) is the reference within-block distribution
    π_j, normalised inside each block on construction; uniform (π_j = 1/|Ω_j|) by default.
    The potential V of this package (metric ``V_pi``) measures the distance to it.

    Parameters
    ----------
    shape
        The number of states (n,), given by the runner from the data. Units: states.
    labels
        One integer label per state; each distinct label is a block. Units: dimensionless.
    sizes
        Block sizes of consecutive runs of states, summing to n. Units: states.
    reference
        The within-block reference π, n positive numbers (normalised per block). Units:
        probability.
    """

    shape: tuple[int] = attrs.field(converter=_chain_shape)
    labels: np.ndarray | None = None
    sizes: tuple[int, ...] | None = None
    reference: np.ndarray | None = None
    site_dims = (SITE_DIM,)
    site_kind = "state"
    label_of_state: np.ndarray = attrs.field(init=False, repr=False)
    inverse: np.ndarray = attrs.field(init=False, repr=False)
    indicator: np.ndarray = attrs.field(init=False, repr=False)
    """1[x ∈ Ω_j], shape (n, K), float64: ``block_sums`` is one matmul with it."""
    _values: np.ndarray = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        (n,) = self.shape
        if (self.labels is None) == (self.sizes is None):
            raise ConfigError(
                "give exactly one of 'labels' (one integer per state) or 'sizes' (block "
                "sizes of consecutive states)"
            )
        if self.sizes is not None:
            sizes = _integer_vector(self.sizes, "sizes")
            if (sizes < 1).any() or sizes.sum() != n:
                raise ConfigError(
                    f"sizes must be positive integers summing to the number of states {n}, "
                    f"got {sizes.tolist()} (sum {sizes.sum()})"
                )
            labels = np.repeat(np.arange(sizes.size), sizes)
        else:
            labels = _integer_vector(self.labels, "labels")
            if labels.size != n:
                raise DataError(f"labels has {labels.size} entries but the chain has {n} states")
        values, inverse = np.unique(labels, return_inverse=True)
        object.__setattr__(self, "label_of_state", labels)
        object.__setattr__(self, "inverse", inverse)
        object.__setattr__(self, "_values", values)
        indicator = (inverse[:, None] == np.arange(values.size)).astype(np.float64)
        indicator.flags.writeable = False
        object.__setattr__(self, "indicator", indicator)
        if self.reference is None:
            reference = 1.0 / self.block_sizes[inverse]
        else:
            reference = np.asarray(self.reference, dtype=np.float64)
            if reference.shape != (n,):
                raise DataError(
                    f"reference must hold one value per state ({n}), got shape {reference.shape}"
                )
            if not np.isfinite(reference).all() or (reference <= 0).any():
                raise DataError(
                    "reference (the within-block distribution π_j) must be finite and > 0 "
                    "at every state"
                )
            reference = normalise_within_blocks(reference, inverse, values.size)
        reference.flags.writeable = False
        object.__setattr__(self, "reference", reference)

    @property
    def site_shape(self) -> tuple[int]:
        return self.shape

    @property
    def within_block_reference(self) -> np.ndarray:
        """π_j(x) per state, (n,), summing to 1 inside every block: the V_δ projector fills
        an empty block that must receive mass with it."""
        return self.reference

    @property
    def n_blocks(self) -> int:
        return int(self._values.size)

    @property
    def block_sizes(self) -> np.ndarray:
        return np.bincount(self.inverse, minlength=self.n_blocks)

    @property
    def same_block(self) -> np.ndarray:
        """1[j(x) = j(y)], shape (n, n), bool: the block-diagonal pattern."""
        return self.inverse[:, None] == self.inverse[None, :]

    def block_sums(self, values: np.ndarray) -> np.ndarray:
        """Σ_{x∈Ω_j} values(x): ``(..., n) -> (..., K)`` in float64 (one matmul)."""
        return np.asarray(values, dtype=np.float64) @ self.indicator

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        """v(x) = block_values[j(x)]: ``(..., K) -> (..., n)``."""
        return block_values[..., self.inverse]

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        return {"label": (self._values, {"long_name": "label value of the block", "units": "1"})}
