"""Specification of the Gaussian filters (THEORY §3): scipy.ndimage semantics, reflecting
boundaries, batches, and the blockwise filter as the same filter on each block cut out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from coarsekl_images.filters import blockwise_gaussian, gaussian_smooth

SIGMAS = [0.3, 0.5, 1.0, 2.7, 6.0]  # 6.0: the filter reaches well past the image


def reference_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(image, sigma, mode="reflect", truncate=4.0)


def reference_blockwise(batch: np.ndarray, sigma: float, blocks) -> np.ndarray:
    """Cut every block out, filter it alone (reflecting at its own borders), paste back."""
    rows, cols = blocks
    height, width = batch.shape[-2:]
    h, w = height // rows, width // cols
    result = np.empty_like(batch)
    for index in np.ndindex(*batch.shape[:-2]):
        for r in range(rows):
            for c in range(cols):
                window = (*index, slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w))
                result[window] = reference_smooth(batch[window], sigma)
    return result


@pytest.mark.parametrize("sigma", SIGMAS)
def test_gaussian_smooth_equals_scipy_gaussian_filter_on_an_image(numerics, sigma):
    image = np.random.default_rng(0).random((9, 13))
    np.testing.assert_allclose(
        gaussian_smooth(image, sigma), reference_smooth(image, sigma), rtol=0, atol=1e-14
    )


@pytest.mark.parametrize("sigma", SIGMAS)
def test_gaussian_smooth_filters_each_image_of_a_batch_on_its_own(numerics, sigma):
    batch = np.random.default_rng(1).random((2, 3, 8, 10))
    expected = np.stack([[reference_smooth(image, sigma) for image in row] for row in batch])
    np.testing.assert_allclose(gaussian_smooth(batch, sigma), expected, rtol=0, atol=1e-14)


def test_gaussian_smooth_with_zero_sigma_is_the_identity():
    batch = np.random.default_rng(2).random((2, 5, 5))
    np.testing.assert_array_equal(gaussian_smooth(batch, 0.0), batch)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_gaussian_smooth_is_doubly_stochastic(numerics, sigma):
    """Reflecting boundaries: total mass kept, constants kept, and ⟨Gx, y⟩ = ⟨x, Gy⟩."""
    rng = np.random.default_rng(3)
    x, y = rng.random((2, 7, 11))
    smoothed = gaussian_smooth(x, sigma)
    assert smoothed.min() >= 0
    np.testing.assert_allclose(smoothed.sum(), x.sum(), rtol=1e-14)
    np.testing.assert_allclose(gaussian_smooth(np.full((7, 11), 0.25), sigma), 0.25, rtol=1e-14)
    np.testing.assert_allclose(
        (smoothed * y).sum(), (x * gaussian_smooth(y, sigma)).sum(), rtol=1e-13
    )


def test_gaussian_smooth_spreads_a_point_mass_symmetrically():
    image = np.zeros((15, 15))
    image[7, 7] = 1.0
    smoothed = gaussian_smooth(image, 1.5)
    np.testing.assert_allclose(smoothed, smoothed.T, atol=1e-17)
    np.testing.assert_allclose(smoothed, smoothed[::-1, ::-1], atol=1e-17)
    assert smoothed.argmax() == 7 * 15 + 7 and smoothed.max() < 0.2


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize(
    ("shape", "blocks"), [((8, 12), (2, 3)), ((6, 6), (3, 1)), ((4, 4), (4, 4))]
)
def test_blockwise_gaussian_equals_the_filter_on_each_block_cut_out(numerics, sigma, shape, blocks):
    batch = np.random.default_rng(4).random((2, 3, *shape))
    np.testing.assert_allclose(
        blockwise_gaussian(batch, sigma, blocks),
        reference_blockwise(batch, sigma, blocks),
        rtol=0,
        atol=1e-14,
    )
    np.testing.assert_allclose(
        blockwise_gaussian(batch[0, 0], sigma, blocks),
        reference_blockwise(batch[0, 0], sigma, blocks),
        rtol=0,
        atol=1e-14,
    )


@pytest.mark.parametrize("sigma", SIGMAS)
def test_blockwise_gaussian_keeps_every_block_mass(numerics, sigma):
    batch = np.random.default_rng(5).random((3, 8, 12))
    smoothed = blockwise_gaussian(batch, sigma, (2, 3))
    block_sums = batch.reshape(3, 2, 4, 3, 4).sum(axis=(2, 4))
    np.testing.assert_allclose(
        smoothed.reshape(3, 2, 4, 3, 4).sum(axis=(2, 4)), block_sums, rtol=0, atol=1e-14
    )
    assert smoothed.min() >= 0


def test_blockwise_gaussian_with_one_block_is_the_global_filter():
    batch = np.random.default_rng(6).random((2, 6, 9))
    np.testing.assert_allclose(
        blockwise_gaussian(batch, 1.2, (1, 1)), gaussian_smooth(batch, 1.2), rtol=0, atol=1e-15
    )


def test_blockwise_gaussian_does_not_mix_blocks(numerics):
    """A point mass stays inside its block, while the global filter lets it cross."""
    image = np.zeros((8, 8))
    image[3, 3] = 1.0  # next to the corner of block (0, 0) of a 2 × 2 grid of 4 × 4 blocks
    smoothed = blockwise_gaussian(image, 2.0, (2, 2))
    assert smoothed[:4, :4].sum() == pytest.approx(1.0, abs=1e-15)
    assert np.all(smoothed[4:, :] == 0) and np.all(smoothed[:, 4:] == 0)
    assert gaussian_smooth(image, 2.0)[4:, :].sum() > 0.1


def test_blockwise_gaussian_with_zero_sigma_is_the_identity():
    batch = np.random.default_rng(7).random((2, 4, 6))
    np.testing.assert_array_equal(blockwise_gaussian(batch, 0.0, (2, 3)), batch)
