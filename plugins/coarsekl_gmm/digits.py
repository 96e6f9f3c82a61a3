"""The 8 × 8 digits as a Gaussian mixture: one full-covariance component per digit.

The data are scikit-learn's bundled copy of the UCI optical-recognition digits (1,797
images of 8 × 8 pixels with intensities 0…16; ``sklearn.datasets.load_digits``, no
network). Pixels are scaled to [0, 1] by /16 and flattened row by row to 64 coordinates,
so ``x.reshape(..., 8, 8)`` is an image. Component c is digit c: weight its share of the
images, mean and covariance (unbiased, ddof = 1) of its images, plus ``regularisation``·I,
which makes the always-blank border pixels (variance 0) positive definite.
"""

from __future__ import annotations

import functools

import numpy as np

from coarsekl.errors import ConfigError
from coarsekl_gmm.mixture import GaussianMixture

__all__ = ["DIGIT_SHAPE", "digits_data", "digits_mixture"]

DIGIT_SHAPE = (8, 8)
_MISSING = "the digits mixture needs scikit-learn: pip install 'coarsekl[digits]'"


@functools.lru_cache(maxsize=1)
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 64) in [0, 1], labels (1797,) in 0…9), read-only."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError(_MISSING) from None
    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=8)
def digits_mixture(regularisation: float = 1e-3) -> GaussianMixture:
    """The 10-component mixture of the digits in R^64 (see the module docstring);
    ``regularisation`` > 0 is added to every covariance's diagonal (intensity² units)."""
    regularisation = float(regularisation)
    if not regularisation > 0:
        raise ConfigError(f"digits regularisation must be > 0, got {regularisation}")
    images, labels = digits_data()
    classes = np.arange(10)
    weights = np.array([np.mean(labels == c) for c in classes])
    means = np.stack([images[labels == c].mean(axis=0) for c in classes])
    eye = np.eye(images.shape[1])
    covariances = np.stack([np.cov(images[labels == c].T) + regularisation * eye for c in classes])
    return GaussianMixture(weights, means, covariances)
