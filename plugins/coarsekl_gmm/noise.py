"""Noise schedules ᾱ(t) of variance-preserving diffusion and reverse time grids.

Time is continuous, t ∈ [0, 1]: t = 0 is the data (ᾱ = 1), ᾱ decreases towards 0 (noise).
The log signal-to-noise ratio λ = ½ log(ᾱ/(1 − ᾱ)) is the variable of DPM-Solver(++)
(Lu et al. 2022). A sampler walks a grid of ``steps + 1`` decreasing times from t_max to
t_min > 0 (:meth:`time_grid`); the network-free final step to the data (ᾱ = 1, the
"denoise to zero" of Lu et al.'s code) is the caller's choice, see
:mod:`coarsekl_gmm.samplers`.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
from scipy.special import expit

from coarsekl.errors import ConfigError, did_you_mean

__all__ = [
    "SPACINGS",
    "Cosine",
    "LinearBeta",
    "Schedule",
    "alpha_bar_of_log_snr",
    "log_snr",
    "schedule_by_name",
]

SPACINGS = ("time", "logsnr", "quadratic")


def log_snr(alpha_bar) -> np.ndarray:
    """λ = ½ log(ᾱ/(1 − ᾱ)), vectorised; +inf at ᾱ = 1."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 0.5 * (np.log(alpha_bar) - np.log1p(-alpha_bar))


def alpha_bar_of_log_snr(lam) -> np.ndarray:
    """The inverse of :func:`log_snr`: ᾱ = 1/(1 + e^{−2λ}), vectorised."""
    return expit(2.0 * np.asarray(lam, dtype=np.float64))


def _positive_float(instance, attribute, value) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"schedule parameter {attribute.name} must be > 0, got {value}")


class _Grid:
    """The reverse time grid shared by every schedule (needs ``alpha_bar``, ``time_of``,
    ``t_max``)."""

    __slots__ = ()

    def alpha_bar(self, t) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def time_of(self, alpha_bar) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def time_grid(
        self, steps: int, t_max: float | None = None, t_min: float = 1e-3, spacing: str = "time"
    ) -> np.ndarray:
        """(steps + 1,) decreasing times from ``t_max`` (default: the schedule's) to ``t_min``.

        ``spacing``: "time" uniform in t; "logsnr" uniform in λ (Lu et al. 2022's choice
        for DPM-Solver on low-dimensional data); "quadratic" t = t_min + (t_max − t_min) u²
        with u uniform (Song et al. 2021's quadratic DDIM skip, dense near the data).
        """
        t_max = self.t_max if t_max is None else float(t_max)
        t_min = float(t_min)
        if int(steps) != steps or steps < 1:
            raise ConfigError(f"a time grid needs a whole number of steps ≥ 1, got {steps}")
        if not 0 < t_min < t_max <= self.t_max:
            raise ConfigError(
                f"a time grid needs 0 < t_min < t_max ≤ {self.t_max:g} for this schedule, "
                f"got t_min={t_min:g}, t_max={t_max:g}"
            )
        if spacing == "time":
            grid = np.linspace(t_max, t_min, int(steps) + 1)
        elif spacing == "logsnr":
            lam = np.linspace(*log_snr(self.alpha_bar(np.array([t_max, t_min]))), int(steps) + 1)
            grid = self.time_of(alpha_bar_of_log_snr(lam))
        elif spacing == "quadratic":
            grid = t_min + (t_max - t_min) * np.linspace(1.0, 0.0, int(steps) + 1) ** 2
        else:
            raise ConfigError(
                f"unknown time spacing {spacing!r}{did_you_mean(spacing, SPACINGS)}; "
                f"known: {', '.join(SPACINGS)}"
            )
        grid[0], grid[-1] = t_max, t_min  # exact end points whatever the round-off
        return grid


@attrs.frozen
class LinearBeta(_Grid):
    """The VP-SDE with linear β(t) = β_min + (β_max − β_min) t (Song et al. 2021,
    "Score-based generative modeling through SDEs", eq. 33):
    ᾱ(t) = exp(−β_min t − ½ (β_max − β_min) t²). The defaults are the continuous limit of
    Ho et al. 2020's β from 1e-4 to 0.02 over T = 1000 steps; ᾱ(1) ≈ 4.3e-5."""

    beta_min: float = attrs.field(default=0.1, converter=float, validator=_positive_float)
    beta_max: float = attrs.field(default=20.0, converter=float, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if self.beta_max < self.beta_min:
            raise ConfigError(
                f"linear schedule needs beta_max ≥ beta_min, got {self.beta_max} < {self.beta_min}"
            )

    @property
    def t_max(self) -> float:
        """The largest usable time, 1."""
        return 1.0

    def alpha_bar(self, t) -> np.ndarray:
        """ᾱ(t), vectorised over t ∈ [0, 1]."""
        t = np.asarray(t, dtype=np.float64)
        return np.exp(-self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2)

    def time_of(self, alpha_bar) -> np.ndarray:
        """t(ᾱ), the inverse of :meth:`alpha_bar`: the positive root of
        ½ Δβ t² + β_min t + log ᾱ = 0 in a form without cancellation."""
        minus_log = -np.log(np.asarray(alpha_bar, dtype=np.float64))
        spread = self.beta_max - self.beta_min
        root = np.sqrt(self.beta_min**2 + 2 * spread * minus_log)
        return 2.0 * minus_log / (self.beta_min + root)


@attrs.frozen
class Cosine(_Grid):
    """The cosine schedule of Nichol & Dhariwal 2021 (eq. 17), in continuous time:
    ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t + s)/(1 + s)).

    ᾱ(1) = 0, so the usable range ends at t_max, where ᾱ = ``alpha_bar_min`` (1e-5 gives
    t_max ≈ 0.998; Lu et al.'s code stops the same schedule at ᾱ ≈ 7e-5, t = 0.9946)."""

    s: float = attrs.field(default=0.008, converter=float, validator=_positive_float)
    alpha_bar_min: float = attrs.field(default=1e-5, converter=float, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if not self.alpha_bar_min < 1:
            raise ConfigError(f"cosine alpha_bar_min must be < 1, got {self.alpha_bar_min}")

    def _f(self, t) -> np.ndarray:
        return np.cos(0.5 * np.pi * (t + self.s) / (1.0 + self.s)) ** 2

    @property
    def t_max(self) -> float:
        """The largest usable time, where ᾱ = ``alpha_bar_min``."""
        return float(self.time_of(self.alpha_bar_min))

    def alpha_bar(self, t) -> np.ndarray:
        """ᾱ(t), vectorised over t ∈ [0, t_max]."""
        return self._f(np.asarray(t, dtype=np.float64)) / self._f(0.0)

    def time_of(self, alpha_bar) -> np.ndarray:
        """t(ᾱ) = (1 + s) · (2/π) · arccos(√(ᾱ f(0))) − s, the inverse of :meth:`alpha_bar`."""
        root = np.sqrt(np.asarray(alpha_bar, dtype=np.float64) * self._f(0.0))
        return (1.0 + self.s) * (2.0 / np.pi) * np.arccos(root) - self.s


Schedule = LinearBeta | Cosine
_SCHEDULES = {"linear": LinearBeta, "cosine": Cosine}


def schedule_by_name(name: str, **params) -> Schedule:
    """The schedule called ``name`` ("linear" or "cosine") with ``params``."""
    try:
        cls = _SCHEDULES[name]
    except KeyError:
        raise ConfigError(
            f"unknown noise schedule {name!r}{did_you_mean(name, _SCHEDULES)}; "
            f"known: {', '.join(_SCHEDULES)}"
        ) from None
    known = [field.name for field in attrs.fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for the {name!r} noise schedule; "
            f"known: {', '.join(known)}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"bad parameters for the {name!r} noise schedule: {error}") from None
