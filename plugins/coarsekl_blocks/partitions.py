"""Partitions of an image grid: rectangular blocks and arbitrary label maps."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from coarsekl.errors import ConfigError, DataError
from coarsekl.numerics import (
    compiled_enabled,
    compiled_module,
    parallel_or_serial,
    recycled_empty,
)

__all__ = ["BlockGrid", "LabelMap"]


def _pair_of_positive_ints(value) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ConfigError(f"expected two positive integers, got {value!r}") from None
    if len(pair) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ConfigError(f"expected two positive integers, got {value!r}")
    return int(pair[0]), int(pair[1])


@attrs.frozen(kw_only=True, eq=False)
class BlockGrid:
    """The H × W grid cut into ``blocks = [rows, cols]`` equal rectangles.

    Block j = row · cols + col covers rows ``row·h … row·h + h − 1`` and columns
    ``col·w … col·w + w − 1`` with h = H / rows, w = W / cols.

    Parameters
    ----------
    shape
        The image size (H, W), given by the runner from the data. Units: pixel.
    blocks
        Block counts [rows, cols], or one integer for both; must divide the shape. Units:
        dimensionless.
    """

    shape: tuple[int, int] = attrs.field(converter=_pair_of_positive_ints)
    blocks: tuple[int, int] = attrs.field(converter=_pair_of_positive_ints)
    site_dims = ("y", "x")

    def __attrs_post_init__(self) -> None:
        (height, width), (rows, cols) = self.shape, self.blocks
        if height % rows or width % cols:
            raise ConfigError(
                f"an image of {height} × {width} pixels cannot be cut into {rows} × {cols} "
                f"equal blocks: {height} is not divisible by {rows} or {width} by {cols}. "
                "Choose block counts that divide the image size, or use a 'labels' partition"
            )

    @property
    def site_shape(self) -> tuple[int, int]:
        return self.shape

    @property
    def block_shape(self) -> tuple[int, int]:
        """(h, w): pixels per block along y and x."""
        return self.shape[0] // self.blocks[0], self.shape[1] // self.blocks[1]

    @property
    def n_blocks(self) -> int:
        return self.blocks[0] * self.blocks[1]

    @property
    def block_sizes(self) -> np.ndarray:
        return np.full(self.n_blocks, self.block_shape[0] * self.block_shape[1])

    def _split(self, values: np.ndarray) -> np.ndarray:
        """(..., H, W) -> (..., rows, h, cols, w), a view."""
        (rows, cols), (h, w) = self.blocks, self.block_shape
        return values.reshape(*values.shape[:-2], rows, h, cols, w)

    def block_sums(self, values: np.ndarray) -> np.ndarray:
        """(..., H, W) -> (..., K) in float64 (also for float32 values)."""
        if compiled_enabled():
            return self.summarise(values)[0]
        sums = self._split(values).sum(axis=(-3, -1), dtype=np.float64)
        return sums.reshape(*sums.shape[:-2], self.n_blocks)

    def summarise(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """(block sums (..., K) in float64, the number of negative values): one pass, which
        the runner uses to check a new state and find its block masses at once."""
        if compiled_enabled():
            _compiled = compiled_module("coarsekl_blocks._compiled")
            rows, cols = self.blocks
            block_sums = parallel_or_serial(
                _compiled.grid_block_sums, _compiled.grid_block_sums_parallel, values.size, True
            )
            sums, negatives = block_sums(values.reshape(-1, *self.shape), rows, cols)
            return sums.reshape(*values.shape[:-2], rows * cols), int(negatives)
        return self.block_sums(values), int(np.count_nonzero(values < 0))

    def scale_blocks(self, values: np.ndarray, factors: np.ndarray) -> np.ndarray:
        """values · factors[block(x)]: (..., H, W) and (..., K) -> (..., H, W), values' dtype.

        The same as ``values * broadcast(factors)`` without building the broadcast array."""
        if not compiled_enabled():
            return values * self.broadcast(factors.astype(values.dtype, copy=False))
        _compiled = compiled_module("coarsekl_blocks._compiled")
        rows, cols = self.blocks
        batch = np.ascontiguousarray(values).reshape(-1, *self.shape)
        if factors.shape != (*values.shape[:-2], rows * cols):
            factors = np.broadcast_to(factors, (*values.shape[:-2], rows * cols))
        out = recycled_empty(batch.shape, batch.dtype)
        scale = parallel_or_serial(
            _compiled.grid_scale_blocks, _compiled.grid_scale_blocks_parallel, batch.size, True
        )
        scale(batch, factors.reshape(-1, rows * cols), rows, cols, out)
        return out.reshape(values.shape)

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        (rows, cols), (h, w) = self.blocks, self.block_shape
        grid = block_values.reshape(*block_values.shape[:-1], rows, 1, cols, 1)
        full = np.broadcast_to(grid, (*block_values.shape[:-1], rows, h, cols, w))
        return full.reshape(*block_values.shape[:-1], *self.shape)

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        rows, cols = np.divmod(np.arange(self.n_blocks), self.blocks[1])
        return {
            "block_row": (rows, {"long_name": "block row index (along y)", "units": "1"}),
            "block_col": (cols, {"long_name": "block column index (along x)", "units": "1"}),
        }


def _label_array(labels, path) -> np.ndarray:
    if (labels is None) == (path is None):
        raise ConfigError("give exactly one of 'labels' (an integer array) or 'path' (.npy)")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"label map file {str(path)!r} does not exist")
        if path.suffix != ".npy":
            raise DataError(f"label map {str(path)!r} must be a .npy file of integers")
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(
                f"cannot read the label map {str(path)!r} as a .npy array of integers: {error}"
            ) from None
    labels = np.array(labels)  # a copy: later changes to the caller's array must not leak in
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise DataError(
            f"a label map must be a 2-D integer array, got dtype {labels.dtype} and shape "
            f"{labels.shape}"
        )
    return labels


@attrs.frozen(kw_only=True, eq=False)
class LabelMap:
    """Arbitrary regions: an integer label per pixel; each distinct label is a block.

    Blocks are ordered by label value; the ``label`` coordinate keeps the original values.

    Parameters
    ----------
    shape
        The image size (H, W), given by the runner from the data. Units: pixel.
    labels
        An integer label per pixel, (H, W); each distinct label is a block. Units:
        dimensionless.
    path
        A .npy file holding the labels instead of ``labels``. Units: dimensionless.
    """

    shape: tuple[int, int] = attrs.field(converter=_pair_of_positive_ints)
    labels: np.ndarray | None = None
    path: str | None = None
    site_dims = ("y", "x")
    label_map: np.ndarray = attrs.field(init=False, repr=False)
    _order: np.ndarray = attrs.field(init=False, repr=False)
    _starts: np.ndarray = attrs.field(init=False, repr=False)
    _inverse: np.ndarray = attrs.field(init=False, repr=False)
    _values: np.ndarray = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        label_map = _label_array(self.labels, self.path)
        if label_map.shape != self.shape:
            raise DataError(
                f"the label map has shape {label_map.shape} but the image is {self.shape}"
            )
        values, inverse = np.unique(label_map.ravel(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(values.size))
        object.__setattr__(self, "label_map", label_map)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_inverse", inverse)
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_starts", starts)

    @property
    def site_shape(self) -> tuple[int, int]:
        return self.shape

    @property
    def n_blocks(self) -> int:
        return int(self._values.size)

    @property
    def block_sizes(self) -> np.ndarray:
        return np.bincount(self._inverse, minlength=self.n_blocks)

    def block_sums(self, values: np.ndarray) -> np.ndarray:
        flat = values.reshape(*values.shape[:-2], -1)
        return np.add.reduceat(flat[..., self._order], self._starts, axis=-1)

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        return block_values[..., self._inverse].reshape(*block_values.shape[:-1], *self.shape)

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        return {"label": (self._values, {"long_name": "label value of the block", "units": "1"})}
