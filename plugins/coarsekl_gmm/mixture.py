"""Gaussian mixtures with exact noised marginals, scores and class posteriors (THEORY §7).

Data q_0 = Σ_c π_c N(μ_c, Σ_c) in R^d, noised as x_t = √ᾱ x_0 + √(1 − ᾱ) ε, ε ~ N(0, I).
The marginal q_t is the mixture with means m_c = √ᾱ μ_c, covariances
S_c = ᾱ Σ_c + (1 − ᾱ) I and the same weights, so everything a diffusion sampler needs is
exact: the score ∇ log q_t, the optimal noise predictor ε* = −√(1 − ᾱ) ∇ log q_t, the
x_0-prediction (Tweedie) and the class posteriors q_t(c | x). ᾱ = 1 is the data.

Every Σ_c is diagonalised once, Σ_c = U_c diag(λ_c) U_c^T, so S_c = U_c diag(ᾱλ_c + 1 − ᾱ) U_c^T
and its inverse and log-determinant cost nothing at any ᾱ. Positions have shape (..., d)
with any leading batch axes. The hot path (:meth:`GaussianMixture.score_and_posteriors`)
runs a compiled per-particle kernel for small d and BLAS matrix products for large d.

Model error (the leakage of THEORY §7) is a perturbation added to ε*: :class:`BiasError`,
:class:`SmoothFieldError` and :class:`WeightsError`.
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError, DataError
from coarsekl.numerics import compiled_enabled, compiled_module, split_rows

__all__ = [
    "COMPILED_MAX_DIM",
    "BiasError",
    "GaussianMixture",
    "ModelError",
    "SmoothFieldError",
    "WeightsError",
    "exact_score_and_posteriors",
    "perturbed_noise_prediction",
]

COMPILED_MAX_DIM = 8  # up to this d the compiled per-particle kernel beats BLAS products
_CHUNK_VALUES = 1 << 20  # particles per chunk × C × d: 8 MiB temporaries, fast BLAS shapes
_LOG_2PI = math.log(2.0 * math.pi)


def _float_array(value) -> np.ndarray:
    return np.array(value, dtype=np.float64)


def _check_alpha_bar(alpha_bar: float) -> float:
    alpha_bar = float(alpha_bar)
    if not 0.0 < alpha_bar <= 1.0:
        raise DataError(f"alpha_bar must lie in (0, 1] (1 is the data), got {alpha_bar}")
    return alpha_bar


@attrs.frozen(eq=False)
class GaussianMixture:
    """q = Σ_c π_c N(μ_c, Σ_c) in R^d; ``weights`` (C,), ``means`` (C, d), ``covariances``
    (C, d, d). Weights are normalised to sum 1 (zeros allowed); covariances must be
    symmetric positive definite. The arrays are read-only copies."""

    weights: np.ndarray = attrs.field(converter=_float_array)
    means: np.ndarray = attrs.field(converter=_float_array)
    covariances: np.ndarray = attrs.field(converter=_float_array)
    eigenvalues: np.ndarray = attrs.field(init=False, repr=False)  # (C, d), λ_c ascending
    eigenvectors: np.ndarray = attrs.field(init=False, repr=False)  # (C, d, d), U_c columns

    def __attrs_post_init__(self) -> None:
        weights, means, covariances = self.weights, self.means, self.covariances
        if weights.ndim != 1 or weights.size == 0:
            raise ConfigError(f"mixture weights must be a non-empty vector, got {weights.shape}")
        count = weights.size
        if means.ndim != 2 or means.shape[0] != count or means.shape[1] == 0:
            raise ConfigError(
                f"mixture means must have shape (components, dim) = ({count}, d), got {means.shape}"
            )
        dim = means.shape[1]
        if covariances.shape != (count, dim, dim):
            raise ConfigError(
                f"mixture covariances must have shape (components, dim, dim) = "
                f"({count}, {dim}, {dim}), got {covariances.shape}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError(
                f"mixture weights must be finite, non-negative and not all zero, got {weights}"
            )
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(covariances))):
            raise ConfigError("mixture means and covariances must be finite (no NaN or inf)")
        asymmetry = np.abs(covariances - covariances.transpose(0, 2, 1)).max(axis=(1, 2))
        scale = np.abs(covariances).max(axis=(1, 2))
        for c in np.flatnonzero(asymmetry > 1e-10 * np.maximum(scale, 1e-300)):
            raise ConfigError(f"covariance of mixture component {c} is not symmetric")
        symmetric = 0.5 * (covariances + covariances.transpose(0, 2, 1))
        eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
        for c in np.flatnonzero(eigenvalues[:, 0] <= 0):
            raise ConfigError(
                f"covariance of mixture component {c} is not positive definite "
                f"(smallest eigenvalue {eigenvalues[c, 0]:.3g}); add a multiple of the identity"
            )
        frozen = {
            "weights": weights / weights.sum(),
            "means": means,
            "covariances": symmetric,
            "eigenvalues": eigenvalues,
            "eigenvectors": eigenvectors,
        }
        for name, array in frozen.items():
            array = np.array(array, dtype=np.float64)  # own copy
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def dim(self) -> int:
        """d, the dimension of the space."""
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        """C, the number of components."""
        return self.weights.size

    def mean(self) -> np.ndarray:
        """(d,) mean of the mixture, Σ_c π_c μ_c."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """(d, d) covariance of the mixture, Σ_c π_c (Σ_c + μ_c μ_c^T) − μ μ^T."""
        centred = self.means - self.mean()
        return np.einsum("c,cij->ij", self.weights, self.covariances) + np.einsum(
            "c,ci,cj->ij", self.weights, centred, centred
        )

    def with_weights(self, weights) -> GaussianMixture:
        """The same components with other weights (normalised)."""
        return GaussianMixture(weights, self.means, self.covariances)

    def noised(self, alpha_bar: float) -> GaussianMixture:
        """q_t as a mixture: means √ᾱ μ_c, covariances ᾱ Σ_c + (1 − ᾱ) I, same weights."""
        alpha_bar = _check_alpha_bar(alpha_bar)
        eye = np.eye(self.dim)
        return GaussianMixture(
            self.weights,
            math.sqrt(alpha_bar) * self.means,
            alpha_bar * self.covariances + (1.0 - alpha_bar) * eye,
        )

    # -- per-ᾱ parameters --------------------------------------------------------------

    def _terms(self, alpha_bar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m (C, d), S^{-1} (C, d, d), log π_c − ½ log det(2π S_c) (C,)) at ``alpha_bar``."""
        alpha_bar = _check_alpha_bar(alpha_bar)
        spectrum = alpha_bar * self.eigenvalues + (1.0 - alpha_bar)  # (C, d) eigenvalues of S_c
        vectors = self.eigenvectors
        precisions = np.einsum("cik,ck,cjk->cij", vectors, 1.0 / spectrum, vectors)
        with np.errstate(divide="ignore"):  # a zero weight is a component that never occurs
            log_weights = np.log(self.weights)
        log_norm = log_weights - 0.5 * (self.dim * _LOG_2PI + np.log(spectrum).sum(axis=1))
        return math.sqrt(alpha_bar) * self.means, precisions, log_norm

    def _flat(self, x) -> tuple[np.ndarray, tuple[int, ...]]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise DataError(
                f"positions must have shape (..., {self.dim}) for this {self.dim}-D mixture, "
                f"got {x.shape}"
            )
        return np.ascontiguousarray(x.reshape(-1, self.dim)), x.shape[:-1]

    # -- densities and posteriors ------------------------------------------------------

    def log_joint(self, x, alpha_bar: float = 1.0) -> np.ndarray:
        """(..., d) -> (..., C): log π_c + log N(x; m_c, S_c) under q_t at ``alpha_bar``."""
        flat, batch = self._flat(x)
        means, precisions, log_norm = self._terms(alpha_bar)
        out = np.empty((flat.shape[0], self.n_components))
        for start, stop in _chunks(flat.shape[0], self.n_components * self.dim):
            diff, solved = _centred_and_solved(flat[start:stop], means, precisions)
            out[start:stop] = (log_norm[:, None] - 0.5 * np.sum(diff * solved, axis=-1)).T
        return out.reshape(*batch, self.n_components)

    def classify(self, x, alpha_bar: float = 1.0) -> np.ndarray:
        """(..., d) -> (...) ints: argmax_c q_t(c | x), the most probable component."""
        flat, batch = self._flat(x)
        if compiled_enabled() and self.dim <= COMPILED_MAX_DIM:
            from coarsekl_gmm._compiled import classify_small

            means, precisions, log_norm = self._terms(alpha_bar)
            labels = np.empty(flat.shape[0], dtype=np.intp)

            def work(start: int, stop: int) -> None:
                rows = slice(start, stop)
                classify_small(flat[rows], means, precisions, log_norm, labels[rows])

            split_rows(work, flat.shape[0])
            return labels.reshape(batch)
        if self.dim <= COMPILED_MAX_DIM:
            return np.argmax(self.log_joint(x, alpha_bar), axis=-1)
        return self._classify_whitened(flat, alpha_bar).reshape(batch)

    def _classify_whitened(self, flat: np.ndarray, alpha_bar: float) -> np.ndarray:
        """argmax of the log joint for large d: in each component's eigenbasis
        (x − m_c)·S_c^{-1}(x − m_c) = Σ_k y_k² / s_k with y = U_cᵀ(x − m_c): per chunk one
        BLAS product (chunk, d) @ (d, C·d) for all components, the squares, and one
        product with the stacked 1/s."""
        alpha_bar = _check_alpha_bar(alpha_bar)
        components, dim = self.n_components, self.dim
        spectrum = alpha_bar * self.eigenvalues + (1.0 - alpha_bar)
        with np.errstate(divide="ignore"):
            log_norm = np.log(self.weights) - 0.5 * np.log(spectrum).sum(axis=1)
        bases = np.ascontiguousarray(self.eigenvectors.transpose(1, 0, 2).reshape(dim, -1))
        shifts = math.sqrt(alpha_bar) * (self.means[:, None, :] @ self.eigenvectors)
        shifts = shifts.reshape(-1)  # (C·d,) = √ᾱ U_cᵀ μ_c, stacked
        inverse = 1.0 / spectrum  # (C, d)
        labels = np.empty(flat.shape[0], dtype=np.intp)
        rows = 2048  # a chunk's whitened positions (rows × C·d) stay in the cache
        whitened = np.empty((min(flat.shape[0], rows), components * dim))
        for start in range(0, flat.shape[0], rows):
            stop = min(start + rows, flat.shape[0])
            part = whitened[: stop - start]
            np.matmul(flat[start:stop], bases, out=part)
            part -= shifts
            np.square(part, out=part)
            quad = np.einsum("ncd,cd->nc", part.reshape(-1, components, dim), inverse)
            labels[start:stop] = (log_norm - 0.5 * quad).argmax(axis=1)
        return labels

    def log_density(self, x, alpha_bar: float = 1.0) -> np.ndarray:
        """(..., d) -> (...): log q_t(x), a stable log-sum-exp of :meth:`log_joint`."""
        joint = self.log_joint(x, alpha_bar)
        top = joint.max(axis=-1, keepdims=True)
        return top[..., 0] + np.log(np.exp(joint - top).sum(axis=-1))

    def posteriors(self, x, alpha_bar: float = 1.0) -> np.ndarray:
        """(..., d) -> (..., C): q_t(c | x) = softmax_c of :meth:`log_joint`."""
        return self.score_and_posteriors(x, alpha_bar)[1]

    def score_and_posteriors(self, x, alpha_bar: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(..., d) -> (score (..., d), posteriors (..., C)) in one pass over the particles.

        score(x) = ∇ log q_t(x) = −Σ_c r_c S_c^{-1}(x − m_c), r_c = q_t(c | x).
        """
        flat, batch = self._flat(x)
        means, precisions, log_norm = self._terms(alpha_bar)
        score = np.empty_like(flat)
        posteriors = np.empty((flat.shape[0], self.n_components))
        if compiled_enabled():

            def work(start: int, stop: int) -> None:
                rows = slice(start, stop)
                _score_and_posteriors_compiled(
                    flat[rows], means, precisions, log_norm, score[rows], posteriors[rows]
                )

            split_rows(work, flat.shape[0])
        else:
            _score_and_posteriors_numpy(flat, means, precisions, log_norm, score, posteriors)
        return score.reshape(*batch, self.dim), posteriors.reshape(*batch, self.n_components)

    def score(self, x, alpha_bar: float = 1.0) -> np.ndarray:
        """(..., d) -> (..., d): ∇_x log q_t(x)."""
        return self.score_and_posteriors(x, alpha_bar)[0]

    def noise_prediction(self, x, alpha_bar: float) -> np.ndarray:
        """(..., d) -> (..., d): the optimal noise predictor ε*(x) = −√(1 − ᾱ) ∇ log q_t(x)."""
        return -math.sqrt(1.0 - _check_alpha_bar(alpha_bar)) * self.score(x, alpha_bar)

    def x0_prediction(self, x, alpha_bar: float, noise: np.ndarray | None = None) -> np.ndarray:
        """(..., d) -> (..., d): x̂_0 = (x − √(1 − ᾱ) ε̂)/√ᾱ, with ε̂ = ε* by default (then
        x̂_0 = E[x_0 | x_t = x], Tweedie's formula)."""
        alpha_bar = _check_alpha_bar(alpha_bar)
        if noise is None:
            noise = self.noise_prediction(x, alpha_bar)
        return (np.asarray(x, dtype=np.float64) - math.sqrt(1.0 - alpha_bar) * noise) / math.sqrt(
            alpha_bar
        )

    def class_log_posterior_gradient(
        self, x, alpha_bar: float, c: int, score: np.ndarray | None = None
    ) -> np.ndarray:
        """(..., d) -> (..., d): ∇_x log q_t(c | x) = g_c − Σ_k r_k g_k with
        g_k = −S_k^{-1}(x − m_k), exact (the classifier-guidance term); ``score`` is
        ∇ log q_t(x) = Σ_k r_k g_k if already known."""
        if not 0 <= int(c) < self.n_components:
            raise ConfigError(f"class {c} is not one of the {self.n_components} components")
        c = int(c)
        if score is None:
            score = self.score(x, alpha_bar)
        means, precisions, _ = self._terms(alpha_bar)
        flat, batch = self._flat(x)
        own = -(flat - means[c]) @ precisions[c]  # S_c symmetric
        return own.reshape(*batch, self.dim) - score

    # -- sampling ----------------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x (n, d), labels (n,)): labels ~ π, then x = μ_c + U_c √λ_c z, z ~ N(0, I)."""
        labels = rng.choice(self.n_components, size=int(n), p=self.weights)
        z = rng.standard_normal((int(n), self.dim))
        factors = self.eigenvectors * np.sqrt(self.eigenvalues)[:, None, :]  # U_c diag(√λ_c)
        x = np.empty_like(z)
        for c in range(self.n_components):
            rows = labels == c
            x[rows] = z[rows] @ factors[c].T + self.means[c]
        return x, labels

    def dataset_variables(self) -> dict[str, tuple]:
        """The mixture as labelled variables of a trajectory (dims ``component``, ``dim``,
        ``dim_``): what the runner records as the data."""
        return {
            "mixture_weight": (
                "component",
                self.weights,
                {"long_name": "data mixture weight π_c", "units": "1"},
            ),
            "mixture_mean": (
                ("component", "dim"),
                self.means,
                {"long_name": "data mixture mean μ_c", "units": "data units"},
            ),
            "mixture_covariance": (
                ("component", "dim", "dim_"),
                self.covariances,
                {"long_name": "data mixture covariance Σ_c", "units": "data units²"},
            ),
        }


def _chunks(count: int, per_particle: int):
    size = max(256, _CHUNK_VALUES // max(per_particle, 1))
    for start in range(0, count, size):
        yield start, min(start + size, count)


def _centred_and_solved(x, means, precisions) -> tuple[np.ndarray, np.ndarray]:
    """(b, d) -> (x − m_c, S_c^{-1}(x − m_c)), both (C, b, d): one matmul per component."""
    diff = x[None, :, :] - means[:, None, :]
    return diff, np.matmul(diff, precisions)  # S_c^{-1} symmetric: rows times S_c^{-1}


def _stacked(means, precisions) -> tuple[np.ndarray, np.ndarray]:
    """(d, C·d) columns [S_1^{-1} … S_C^{-1}] and (C, d) shifts S_c^{-1} m_c: then
    x @ stacked = S_c^{-1} x for every c in one BLAS product."""
    components, dim = means.shape
    stacked = np.ascontiguousarray(precisions.transpose(1, 0, 2).reshape(dim, components * dim))
    return stacked, np.einsum("cij,cj->ci", precisions, means)


def _score_and_posteriors_numpy(x, means, precisions, log_norm, score, posteriors) -> None:
    """Plain-numpy reference of the compiled kernels: over chunks of particles, one BLAS
    product for S_c^{-1} x of all components, then the log-sum-exp and the weighted sum."""
    count, components, dim = x.shape[0], *means.shape
    stacked, shifts = _stacked(means, precisions)
    for start, stop in _chunks(count, components * dim):
        block = x[start:stop]
        solved = (block @ stacked).reshape(-1, components, dim) - shifts
        quad = np.einsum("bcd,bcd->bc", block[:, None, :] - means, solved)
        joint = log_norm - 0.5 * quad
        joint -= joint.max(axis=1, keepdims=True)
        weights = np.exp(joint)
        weights /= weights.sum(axis=1, keepdims=True)
        posteriors[start:stop] = weights
        score[start:stop] = -np.einsum("bc,bcd->bd", weights, solved)


def _score_and_posteriors_compiled(x, means, precisions, log_norm, score, posteriors) -> None:
    """Small d: one compiled pass per particle block. Large d: per chunk one BLAS product,
    then a compiled pass for the log-sum-exp and the weighted sum."""
    _compiled = compiled_module("coarsekl_gmm._compiled")
    if means.shape[1] <= COMPILED_MAX_DIM:
        _compiled.score_and_posteriors_small(x, means, precisions, log_norm, score, posteriors)
        return
    components, dim = means.shape
    stacked, shifts = _stacked(means, precisions)
    chunk = min(x.shape[0], max(256, _CHUNK_VALUES // (components * dim)))
    products = np.empty((chunk, components * dim))
    for start, stop in _chunks(x.shape[0], components * dim):
        block = x[start:stop]
        out = products[: stop - start]
        np.matmul(block, stacked, out=out)
        _compiled.finish_from_products(
            block,
            out.reshape(-1, components, dim),
            shifts,
            means,
            log_norm,
            score[start:stop],
            posteriors[start:stop],
        )


# -- model error ---------------------------------------------------------------------------


@attrs.frozen
class BiasError:
    """A constant bias e(x) = b added to ε* (``vector`` (d,))."""

    vector: np.ndarray = attrs.field(converter=_float_array)

    def perturbation(self, x, alpha_bar: float) -> np.ndarray:
        """(..., d) -> (..., d): b at every position."""
        x = np.asarray(x)
        if self.vector.shape != x.shape[-1:]:
            raise ConfigError(
                f"bias vector has shape {self.vector.shape}, positions are {x.shape[-1]}-D"
            )
        return np.broadcast_to(self.vector, x.shape).copy()


@functools.lru_cache(maxsize=32)
def _fourier_features(seed: int, features: int, dim: int, length_scale: float):
    rng = np.random.default_rng(seed)
    frequencies = rng.standard_normal((features, dim)) / length_scale
    phases = rng.uniform(0.0, 2.0 * math.pi, features)
    amplitudes = rng.standard_normal((features, dim))
    for array in (frequencies, phases, amplitudes):
        array.flags.writeable = False
    return frequencies, phases, amplitudes


@attrs.frozen
class SmoothFieldError:
    """A random smooth field e(x) = A √(2/K) Σ_k a_k cos(ω_k · x + φ_k) added to ε*.

    Random Fourier features (Rahimi & Recht 2007): ω_k ~ N(0, I/ℓ²), φ_k ~ U[0, 2π),
    a_k ~ N(0, I_d), all fixed by ``seed``. Each coordinate of e is a stationary Gaussian
    field (as K → ∞) with RMS ``amplitude`` and squared-exponential correlation of length ℓ.
    """

    amplitude: float = attrs.field(converter=float)
    length_scale: float = attrs.field(converter=float)
    seed: int = attrs.field(default=0, converter=int)
    features: int = attrs.field(default=64, converter=int)

    def __attrs_post_init__(self) -> None:
        if not self.length_scale > 0 or self.features < 1:
            raise ConfigError(
                "a smooth-field error needs length_scale > 0 and features ≥ 1, got "
                f"length_scale={self.length_scale}, features={self.features}"
            )

    def perturbation(self, x, alpha_bar: float) -> np.ndarray:
        """(..., d) -> (..., d): e(x), independent of ᾱ."""
        x = np.asarray(x, dtype=np.float64)
        frequencies, phases, amplitudes = _fourier_features(
            self.seed, self.features, x.shape[-1], self.length_scale
        )
        waves = np.cos(x @ frequencies.T + phases)  # (..., K)
        return (self.amplitude * math.sqrt(2.0 / self.features)) * (waves @ amplitudes)


@attrs.frozen(eq=False)
class WeightsError:
    """The predictor of a mixture with the wrong weights: e = ε*_wrong − ε*_true, where
    ``wrong`` = ``true.with_weights(weights)``."""

    true: GaussianMixture
    weights: np.ndarray = attrs.field(converter=_float_array)
    wrong: GaussianMixture = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.weights.shape != self.true.weights.shape:
            raise ConfigError(
                f"the wrong-weights model needs one weight per mixture component "
                f"({self.true.n_components}), got {self.weights.size}"
            )
        object.__setattr__(self, "wrong", self.true.with_weights(self.weights))

    def perturbation(self, x, alpha_bar: float) -> np.ndarray:
        """(..., d) -> (..., d): ε*_wrong(x) − ε*_true(x)."""
        return self.wrong.noise_prediction(x, alpha_bar) - self.true.noise_prediction(x, alpha_bar)


ModelError = BiasError | SmoothFieldError | WeightsError
SMALLEST_ALPHA_BAR = 1e-12  # posteriors at ᾱ = 0 are the prior; this is that limit


def exact_score_and_posteriors(
    mixture: GaussianMixture, ensemble: Ensemble
) -> tuple[np.ndarray, np.ndarray]:
    """The exact score ``(..., N, d)`` and class posteriors ``(..., N, C)`` of an ensemble's
    positions at its signal level, computed once and kept with the ensemble: the class
    partition (labels at this step) and the next kernel step (its ε*) share them."""
    computed: list[tuple[np.ndarray, np.ndarray]] = []

    def both() -> tuple[np.ndarray, np.ndarray]:
        if not computed:
            level = max(ensemble.alpha_bar, SMALLEST_ALPHA_BAR)
            computed.append(mixture.score_and_posteriors(ensemble.positions, level))
        return computed[0]

    score = ensemble.derived(("exact-score", mixture), lambda: both()[0])
    posteriors = ensemble.derived(("exact-posteriors", mixture), lambda: both()[1])
    return score, posteriors


def perturbed_noise_prediction(
    mixture: GaussianMixture,
    x,
    alpha_bar: float,
    error: ModelError | None = None,
    score: np.ndarray | None = None,
) -> np.ndarray:
    """(..., d) -> (..., d): ε̂ = ε* + e(x), ε* = −√(1 − ᾱ) ∇ log q_ᾱ(x) from ``score`` when
    it is already known. A :class:`WeightsError` is evaluated as the wrong mixture's ε*
    directly (one pass instead of two)."""
    if isinstance(error, WeightsError):
        return error.wrong.noise_prediction(x, alpha_bar)
    if score is None:
        score = mixture.score(x, alpha_bar)
    prediction = -math.sqrt(1.0 - _check_alpha_bar(alpha_bar)) * score
    if error is not None:
        prediction = prediction + error.perturbation(x, alpha_bar)
    return prediction
