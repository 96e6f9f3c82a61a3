"""Specification of the digits mixture: one 64-D full-covariance component per digit,
fitted to scikit-learn's bundled 8 × 8 digits."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from coarsekl.errors import ConfigError

pytest.importorskip("sklearn")

from coarsekl_gmm import digits
from coarsekl_gmm.digits import DIGIT_SHAPE, digits_data, digits_mixture


def test_one_positive_definite_component_per_digit_weighted_by_frequency():
    mixture = digits_mixture()
    images, labels = digits_data()
    assert images.shape == (1797, 64) and images.min() == 0.0 and images.max() == 1.0
    assert (mixture.n_components, mixture.dim) == (10, 64)
    np.testing.assert_allclose(mixture.weights, np.bincount(labels) / labels.size)
    assert np.all(mixture.eigenvalues >= 1e-3 * (1 - 1e-9))
    np.testing.assert_allclose(mixture.means[3], images[labels == 3].mean(axis=0))


def test_the_mean_zero_has_a_hole_and_the_mean_one_a_stroke_in_the_middle():
    means = digits_mixture().means.reshape(10, *DIGIT_SHAPE)
    zero, one = means[0], means[1]
    centre = zero[2:6, 3:5].mean()
    ring = np.concatenate([zero[1, 2:6], zero[6, 2:6], zero[2:6, 1], zero[2:6, 6]]).mean()
    assert centre < 0.5 * ring
    assert one[2:6, 3:5].mean() > 2 * zero[2:6, 3:5].mean()


def test_the_mixture_is_cached_and_regularisation_is_checked():
    assert digits_mixture() is digits_mixture()
    assert digits_mixture(1e-2) is not digits_mixture()
    with pytest.raises(ConfigError, match="regularisation"):
        digits_mixture(0.0)


def test_samples_are_64_d_and_classified_as_their_component():
    mixture = digits_mixture()
    x, labels = mixture.sample(2000, np.random.default_rng(0))
    assert x.shape == (2000, 64) and labels.shape == (2000,)
    assert np.mean(mixture.posteriors(x).argmax(axis=-1) == labels) > 0.95


def test_missing_scikit_learn_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    digits.digits_data.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'coarsekl\[digits\]'"):
            digits.digits_data()
    finally:
        monkeypatch.undo()
        digits.digits_data.cache_clear()
