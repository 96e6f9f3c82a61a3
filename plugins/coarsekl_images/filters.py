"""Gaussian smoothing over the last two axes of a batch.

Semantics of ``scipy.ndimage.gaussian_filter(..., mode="reflect", truncate=4.0)``: a
sampled Gaussian of radius ``int(4σ + 0.5)``, normalised to sum 1, with half-sample
symmetric reflection at the borders (d c b a | a b c d | d c b a). Such a filter is doubly
stochastic, so it keeps total mass; applied inside each block it keeps block masses.
"""

from __future__ import annotations

import functools

import numpy as np

from coarsekl.numerics import compiled_enabled

__all__ = ["blockwise_gaussian", "gaussian_smooth", "gaussian_weights"]


@functools.lru_cache(maxsize=64)
def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The sampled, normalised Gaussian of ``scipy.ndimage.gaussian_filter1d``: (2r + 1,)
    weights with radius r = int(truncate · σ + 0.5) (read-only: the result is cached)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / sigma**2 * offsets**2)
    weights /= weights.sum()
    weights.flags.writeable = False
    return weights


def _smooth_compiled(values: np.ndarray, sigma: float, segment: tuple[int, int]):
    """(..., H, W) -> G_σ of every image, by the compiled kernel."""
    from coarsekl_images._compiled import smooth

    batch = np.ascontiguousarray(values).reshape(-1, *values.shape[-2:])
    out = np.empty_like(batch)
    smooth(batch, gaussian_weights(sigma), *segment, out)
    return out.reshape(values.shape)


def _smooth_axes(values: np.ndarray, sigma: float, axes: tuple[int, ...]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    for axis in axes:
        values = gaussian_filter1d(values, sigma, axis=axis, mode="reflect", truncate=4.0)
    return values


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """G_σ over the whole grid: ``(..., H, W) -> (..., H, W)``; σ in pixels, 0 = identity."""
    if sigma == 0:
        return values
    if compiled_enabled():
        return _smooth_compiled(values, sigma, values.shape[-2:])
    return _smooth_axes(values, sigma, (-2, -1))


def blockwise_gaussian(values: np.ndarray, sigma: float, blocks: tuple[int, int]) -> np.ndarray:
    """G_σ inside each of ``blocks = (rows, cols)`` equal rectangles, reflecting at the
    block's own borders: ``(..., H, W) -> (..., H, W)``; keeps every block's sum."""
    if sigma == 0:
        return values
    *batch, height, width = values.shape
    rows, cols = blocks
    if compiled_enabled():
        return _smooth_compiled(values, sigma, (height // rows, width // cols))
    split = values.reshape(*batch, rows, height // rows, cols, width // cols)
    return _smooth_axes(split, sigma, (-3, -1)).reshape(values.shape)
