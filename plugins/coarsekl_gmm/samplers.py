"""One reverse step of DDPM, DDIM and DPM-Solver++(2M), as pure functions on arrays.

Every function maps positions x of shape (..., d) at signal level ``ab_now`` = ᾱ_t to
positions at ``ab_next`` = ᾱ_s > ᾱ_t, given the noise prediction ε̂(x) (or the
x_0-prediction x̂_0 for DPM-Solver++), with the notation of THEORY §7: x_t = √ᾱ x_0 +
√(1 − ᾱ) ε, α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ).

Convention for the end of sampling: a time grid ends at t_min > 0 (ᾱ < 1), and the
samplers' output there follows the noised marginal q_{t_min}. A final step to ᾱ = 1 (the
"denoise to zero" of Lu et al.'s code) is allowed in every function here and gives
x̂_0(x) for all three: DDPM's posterior at ᾱ_s = 1 has mean x̂_0 and variance 0, DDIM's
update at ᾱ_s = 1 is x̂_0, and DPM-Solver++ takes its first-order (DDIM) form there
(h = ∞; Lu et al. 2022 also end with a lower-order step).

Measured convergence (tests/coarsekl_gmm/test_samplers.py): exact predictor of a 2-D
4-component mixture, linear-β schedule, log-SNR grid from t = 1 to 1e-3, 2,000 particles
from the exact q_1, error = mean distance at t_min to 2,000 DPM-Solver++(2M) steps from the
same points. Steps 10/20/50/100: DDIM 3.2e-1/1.7e-1/6.9e-2/3.8e-2 (order 0.94),
DPM-Solver++(2M) 1.1e-1/2.9e-2/4.8e-3/1.4e-3 (order 1.91; 1.80–1.97 over other seeds), as
the literature says (first and second order). On a uniform time grid instead, DPM-Solver++
(2M) is pre-asymptotic at 10 steps (4.1e-1 against DDIM's 2.1e-1, fitted order 1.56): the
last steps span log-SNR jumps of h ≈ 3.5 with step ratios far from 1, too coarse for the
linear extrapolation of x̂_0 in λ; from 20 steps on it is ahead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from coarsekl.errors import DataError
from coarsekl_gmm.noise import log_snr

__all__ = [
    "MultistepResult",
    "ddim_step",
    "ddpm_step",
    "dpmpp_2m_step",
    "x0_from_noise",
]


def _check_levels(ab_now: float, ab_next: float) -> tuple[float, float]:
    ab_now, ab_next = float(ab_now), float(ab_next)
    if not 0.0 < ab_now < ab_next <= 1.0:
        raise DataError(
            "a reverse step needs 0 < ab_now < ab_next ≤ 1 (signal grows towards the data), "
            f"got ab_now={ab_now}, ab_next={ab_next}"
        )
    return ab_now, ab_next


def x0_from_noise(x: np.ndarray, noise_pred: np.ndarray, alpha_bar: float) -> np.ndarray:
    """x̂_0 = (x − √(1 − ᾱ) ε̂)/√ᾱ (Ho et al. 2020, eq. 4 solved for x_0); (..., d)."""
    return (x - math.sqrt(1.0 - alpha_bar) * noise_pred) / math.sqrt(alpha_bar)


def ddpm_step(
    x: np.ndarray,
    noise_pred: np.ndarray,
    ab_now: float,
    ab_next: float,
    z: np.ndarray | None,
) -> np.ndarray:
    """Ancestral sampling, one draw from the forward posterior q(x_s | x_t, x̂_0) (Ho et al.
    2020, "Denoising diffusion probabilistic models", eqs. 6–7), with x̂_0 from ε̂:

        α = ᾱ_t/ᾱ_s, β = 1 − α,
        x_s = √ᾱ_s β/(1 − ᾱ_t) x̂_0 + √α (1 − ᾱ_s)/(1 − ᾱ_t) x_t + √β̃ z,
        β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) β  (the posterior variance, Ho et al.'s σ_t² = β̃_t),

    for any pair of levels (a skip of several of Ho et al.'s steps is one step of this
    kind; it equals :func:`ddim_step` with η = 1). ``z`` ~ N(0, I) of x's shape; at
    ᾱ_s = 1 the variance is 0, the result is x̂_0 and ``z`` may be None.
    """
    ab_now, ab_next = _check_levels(ab_now, ab_next)
    alpha = ab_now / ab_next
    beta = 1.0 - alpha
    x0 = x0_from_noise(x, noise_pred, ab_now)
    if ab_next == 1.0:
        return x0
    if z is None:
        raise DataError("a DDPM step to ab_next < 1 needs standard normal noise z")
    mean = (math.sqrt(ab_next) * beta / (1.0 - ab_now)) * x0 + (
        math.sqrt(alpha) * (1.0 - ab_next) / (1.0 - ab_now)
    ) * x
    return mean + math.sqrt((1.0 - ab_next) / (1.0 - ab_now) * beta) * z


def ddim_step(
    x: np.ndarray,
    noise_pred: np.ndarray,
    ab_now: float,
    ab_next: float,
    eta: float = 0.0,
    z: np.ndarray | None = None,
) -> np.ndarray:
    """DDIM (Song, Meng & Ermon 2021, "Denoising diffusion implicit models", eq. 12):

        x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,
        σ = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)  (eq. 16).

    η = 0 is deterministic (the probability-flow ODE's first-order exponential integrator,
    equal to DPM-Solver++(1)); η = 1 is DDPM. ``z`` ~ N(0, I) is needed when σ > 0.
    """
    ab_now, ab_next = _check_levels(ab_now, ab_next)
    if eta < 0:
        raise DataError(f"DDIM needs eta ≥ 0, got {eta}")
    sigma = eta * math.sqrt((1.0 - ab_next) / (1.0 - ab_now) * (1.0 - ab_now / ab_next))
    x0 = x0_from_noise(x, noise_pred, ab_now)
    x_next = math.sqrt(ab_next) * x0 + math.sqrt(max(1.0 - ab_next - sigma**2, 0.0)) * noise_pred
    if sigma > 0:
        if z is None:
            raise DataError("a DDIM step with eta > 0 needs standard normal noise z")
        x_next = x_next + sigma * z
    return x_next


class MultistepResult(NamedTuple):
    """A DPM-Solver++(2M) step's result: the new positions and what the next step needs
    (``x0`` becomes its ``x0_prev``, ``h`` its ``h_prev``)."""

    x: np.ndarray
    x0: np.ndarray
    h: float


def dpmpp_2m_step(
    x: np.ndarray,
    x0_now: np.ndarray,
    x0_prev: np.ndarray | None,
    ab_now: float,
    ab_next: float,
    h_prev: float | None,
) -> MultistepResult:
    """DPM-Solver++(2M) in data-prediction form (Lu et al. 2022, "DPM-Solver++: fast
    solver for guided sampling of diffusion probabilistic models", arXiv:2211.01095,
    Algorithm 2):

        h = λ_s − λ_t,  r = h_prev/h,  D = (1 + 1/(2r)) x̂_0(t) − 1/(2r) x̂_0(t_prev),
        x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D.

    The first step (``x0_prev`` None) and a step to ᾱ_s = 1 use D = x̂_0(t), the
    first-order DPM-Solver++(1), which is DDIM with η = 0. ``x0_now`` is x̂_0 at x_t
    (same shape as x); ``h_prev`` the previous step's h.
    """
    ab_now, ab_next = _check_levels(ab_now, ab_next)
    if ab_next == 1.0:
        return MultistepResult(np.array(x0_now, copy=True), x0_now, math.inf)
    lam_now, lam_next = log_snr(ab_now), log_snr(ab_next)
    h = float(lam_next - lam_now)
    if x0_prev is None:
        derivative = x0_now
    else:
        if h_prev is None or not h_prev > 0:
            raise DataError(f"a second-order DPM-Solver++ step needs h_prev > 0, got {h_prev}")
        half_inverse_ratio = 0.5 * h / h_prev  # 1/(2r)
        derivative = (1.0 + half_inverse_ratio) * x0_now - half_inverse_ratio * x0_prev
    ratio = math.sqrt((1.0 - ab_next) / (1.0 - ab_now))
    x_next = ratio * x - (math.sqrt(ab_next) * math.expm1(-h)) * derivative
    return MultistepResult(x_next, x0_now, h)
