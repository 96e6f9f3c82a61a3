"""Diffusion samplers as kernels: DDPM, DDIM and DPM-Solver++(2M) on particle ensembles.

Every sampler walks the same grid of signal levels: ``steps − 1`` steps from
ᾱ(t_max) to ᾱ(t_min) along the noise schedule, then a last step to the data (ᾱ = 1,
where the update is the x_0-prediction). The noise predictor is the exact one of the data
mixture, ε*(x, ᾱ) = −√(1 − ᾱ) ∇ log q_ᾱ(x), plus an optional model error e(x) (the
leakage of THEORY §7) and optional classifier guidance toward class c with strength γ:
ε̂ = ε* + e − γ √(1 − ᾱ) ∇_x log q_ᾱ(c | x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Step
from coarsekl_gmm.mixture import (
    BiasError,
    GaussianMixture,
    SmoothFieldError,
    WeightsError,
    exact_score_and_posteriors,
    perturbed_noise_prediction,
)
from coarsekl_gmm.noise import SPACINGS, log_snr, schedule_by_name
from coarsekl_gmm.samplers import ddim_step, ddpm_step, dpmpp_2m_step, x0_from_noise

__all__ = ["DDIM", "DDPM", "DPMSolverPP2M", "ModelErrorSpec", "signal_levels"]

PREVIOUS_X0 = "x0_previous"  # DPM-Solver++(2M)'s memory, carried with the particles
SCHEDULES = ("cosine", "linear")


def signal_levels(
    steps: int, schedule: str, t_max: float | None, t_min: float, spacing: str
) -> np.ndarray:
    """ᾱ before and after every step, ``(steps + 1,)``: ``steps − 1`` steps from t_max to
    t_min on the schedule, then one to the data (ᾱ = 1)."""
    noise = schedule_by_name(schedule)
    if steps == 1:
        times = np.array([noise.t_max if t_max is None else t_max])
    else:
        times = noise.time_grid(steps - 1, t_max=t_max, t_min=t_min, spacing=spacing)
    return np.append(np.asarray(noise.alpha_bar(times), dtype=np.float64), 1.0)


@attrs.frozen
class ModelErrorSpec:
    """A ``model_error`` table: ``kind`` = "bias" (``vector``), "field" (``amplitude``,
    ``length_scale``, ``seed``, ``features``) or "weights" (``weights``: the mixture
    weights the wrong model believes)."""

    kind: str
    params: tuple[tuple[str, Any], ...]

    KINDS: ClassVar[dict[str, type]] = {
        "bias": BiasError,
        "field": SmoothFieldError,
        "weights": WeightsError,
    }

    def build(self, mixture: GaussianMixture):
        params = {key: value for key, value in self.params}
        try:
            if self.kind == "weights":
                return WeightsError(mixture, **params)
            return self.KINDS[self.kind](**params)
        except TypeError as error:
            raise ConfigError(f"model_error kind = {self.kind!r}: {error}") from None


def _model_error(value: Mapping[str, Any] | ModelErrorSpec | None) -> ModelErrorSpec | None:
    if value is None or isinstance(value, ModelErrorSpec):
        return value
    if not isinstance(value, Mapping) or value.get("kind") not in ModelErrorSpec.KINDS:
        raise ConfigError(
            f"model_error must be a table with kind = one of {list(ModelErrorSpec.KINDS)}, "
            f"got {value!r}"
        )
    params = tuple(
        (key, tuple(item) if isinstance(item, list) else item)
        for key, item in sorted(value.items())
        if key != "kind"
    )
    error_class = ModelErrorSpec.KINDS[value["kind"]]
    fields = {field.alias for field in attrs.fields(error_class) if field.init} - {"true"}
    required = {
        field.alias
        for field in attrs.fields(error_class)
        if field.init and field.default is attrs.NOTHING
    } - {"true"}
    given = {key for key, _ in params}
    if given - fields or required - given:
        raise ConfigError(
            f"model_error kind = {value['kind']!r} takes {', '.join(sorted(fields))} "
            f"(required: {', '.join(sorted(required))}); got {', '.join(sorted(given)) or 'none'}"
        )
    return ModelErrorSpec(value["kind"], params)


def _choice(options):
    def check(instance, attribute, value) -> None:
        if value not in options:
            raise ConfigError(f"{attribute.name} must be one of {list(options)}, got {value!r}")

    return check


def _time(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{attribute.name} must lie in (0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class _DiffusionSampler:
    """Shared parameters and the noise predictor of the three samplers."""

    block_preserving: ClassVar[bool] = False
    schedule: str = attrs.field(default="cosine", validator=_choice(SCHEDULES))
    t_max: float | None = attrs.field(default=None, validator=attrs.validators.optional(_time))
    t_min: float = attrs.field(default=1e-3, validator=_time)
    spacing: str = attrs.field(default="time", validator=_choice(SPACINGS))
    model_error: ModelErrorSpec | None = attrs.field(default=None, converter=_model_error)
    guidance: float = attrs.field(default=0.0, converter=float)
    guidance_class: int = 0

    def __attrs_post_init__(self) -> None:
        largest = schedule_by_name(self.schedule).t_max
        if self.t_max is not None and self.t_max > largest:
            raise ConfigError(
                f"t_max = {self.t_max} lies beyond the {self.schedule!r} schedule's largest "
                f"usable time {largest:.6g}; leave t_max out to start there"
            )
        if not self.t_min < (largest if self.t_max is None else self.t_max):
            raise ConfigError(f"t_min must be below t_max, got t_min = {self.t_min}")
        if not (np.isfinite(self.guidance) and self.guidance >= 0):
            raise ConfigError(f"guidance must be a finite number ≥ 0, got {self.guidance}")
        if isinstance(self.guidance_class, bool) or not isinstance(self.guidance_class, int):
            raise ConfigError(
                f"guidance_class must be a component index, got {self.guidance_class!r}"
            )

    def start(self, state: Any, step: Step) -> tuple[Ensemble, float, float]:
        """The checked ensemble and (ᾱ before, ᾱ after) this step. The ensemble must sit
        at the level the step starts from (pure noise, ᾱ = 0, is accepted for a start
        at ᾱ ≤ 1e-3)."""
        state = self._checked(state)
        now, after = self.levels(step)
        if abs(state.alpha_bar - now) > (1e-3 if state.alpha_bar == 0 else 1e-9 * max(now, 1e-3)):
            raise ConfigError(
                f"the particles are at signal level ᾱ = {state.alpha_bar:.6g}, but step "
                f"{step.index} of the {type(self).__name__} kernel starts from ᾱ = {now:.6g}; "
                f'start them there ([initial] kind = "noise", schedule = '
                f'"{self.schedule}" when t_max is the schedule\'s, else alpha_bar = {now:.6g})'
            )
        return state, now, after

    def levels(self, step: Step) -> tuple[float, float]:
        """(ᾱ before, ᾱ after) reverse step ``step``."""
        key = ("signal-levels", step.total, self.schedule, self.t_max, self.t_min, self.spacing)
        levels = _LEVELS.get(key)
        if levels is None:
            levels = _LEVELS.setdefault(
                key, signal_levels(step.total, self.schedule, self.t_max, self.t_min, self.spacing)
            )
        return float(levels[step.index - 1]), float(levels[step.index])

    def noise_prediction(self, state: Ensemble, alpha_bar: float, problem: Problem) -> np.ndarray:
        """ε̂(x, ᾱ) = ε* + e(x) − γ √(1 − ᾱ) ∇_x log q_ᾱ(c | x), ``(..., N, d)``.

        When the ensemble already sits at ᾱ, the exact score comes from
        :func:`exact_score_and_posteriors` (shared with the class partition)."""
        mixture, x = problem.data, state.positions
        if self.guidance_class not in range(mixture.n_components):
            raise ConfigError(
                f"guidance_class must name a component 0 … {mixture.n_components - 1}, "
                f"got {self.guidance_class}"
            )
        error = None
        if self.model_error is not None:
            spec = self.model_error
            error = problem.memo(("model-error", spec), lambda: spec.build(mixture))
        score = None  # the exact score, unless only the wrong-weights mixture's is needed
        needs_exact = not isinstance(error, WeightsError) or self.guidance > 0
        if needs_exact and state.alpha_bar == alpha_bar:
            score, _ = exact_score_and_posteriors(mixture, state)
        prediction = perturbed_noise_prediction(mixture, x, alpha_bar, error, score=score)
        if self.guidance > 0:
            gradient = mixture.class_log_posterior_gradient(
                x, alpha_bar, self.guidance_class, score=score
            )
            prediction -= self.guidance * np.sqrt(1 - alpha_bar) * gradient
        return prediction

    def _checked(self, state: Any) -> Ensemble:
        if not isinstance(state, Ensemble):
            raise ConfigError(
                f"the {type(self).__name__} kernel moves particle ensembles; the data must be a "
                'distribution ([data] kind = "ring", "gaussian-mixture" or "digits")'
            )
        return state


_LEVELS: dict[tuple, np.ndarray] = {}  # signal levels of a grid (pure function of the key)


@attrs.frozen(kw_only=True)
class DDPM(_DiffusionSampler):
    """Ancestral sampling (Ho, Jain & Abbeel 2020, eqs. 6–7 and Algorithm 2): x_{t−1} drawn
    from q(x_{t−1} | x_t, x̂_0) with α_t = ᾱ_t / ᾱ_{t−1} and variance
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t; the last step (to ᾱ = 1) returns its mean.

    Parameters
    ----------
    schedule
        Noise schedule ᾱ(t): ``"cosine"`` (Nichol & Dhariwal 2021) or ``"linear"``
        (linear β, the VP SDE of Song et al. 2021).
    t_max, t_min
        The reverse process runs t_max → t_min in ``steps − 1`` steps, then to t = 0
        (t_max defaults to the schedule's largest usable time). Units: diffusion time in
        (0, 1].
    spacing
        How the times are spaced: ``"time"`` (uniform in t), ``"logsnr"`` (uniform in
        λ = ½ log(ᾱ/(1 − ᾱ))) or ``"quadratic"``.
    model_error
        Optional table that perturbs the exact noise predictor: ``{kind = "bias",
        vector = [...]}``, ``{kind = "field", amplitude = …, length_scale = …, seed = …}``
        or ``{kind = "weights", weights = [...]}``. Units: noise units (ε).
    guidance
        Classifier-guidance strength γ ≥ 0 toward ``guidance_class``. Units: 1.
    guidance_class
        Index of the mixture component that guidance favours.
    """

    def step(self, state: Ensemble, problem: Problem, step: Step, rng: MemberRandom) -> Ensemble:
        state, now, after = self.start(state, step)
        x = state.positions
        noise = None if after == 1.0 else rng.normal((state.particles, state.dim), x.dtype)
        prediction = self.noise_prediction(state, now, problem)
        positions = ddpm_step(x, prediction, now, after, noise)
        return state.replace(positions=positions.astype(x.dtype, copy=False), alpha_bar=after)


@attrs.frozen(kw_only=True)
class DDIM(_DiffusionSampler):
    """DDIM (Song, Meng & Ermon 2021, eq. 12 with σ_t(η) of eq. 16): η = 0 is the
    deterministic probability-flow sampler, η = 1 has DDPM's variance.

    Parameters
    ----------
    eta
        η in [0, 1], the fraction of DDPM's noise injected per step. Units: 1.
    schedule, t_max, t_min, spacing, model_error, guidance, guidance_class
        As for ``ddpm``.
    """

    eta: float = attrs.field(default=0.0, converter=float)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not 0 <= self.eta <= 1:  # Song et al.'s range: η = 1 is DDPM's variance
            raise ConfigError(f"eta must lie in [0, 1], got {self.eta}")

    def step(self, state: Ensemble, problem: Problem, step: Step, rng: MemberRandom) -> Ensemble:
        state, now, after = self.start(state, step)
        x = state.positions
        noisy = self.eta > 0 and after < 1.0
        noise = rng.normal((state.particles, state.dim), x.dtype) if noisy else None
        prediction = self.noise_prediction(state, now, problem)
        positions = ddim_step(x, prediction, now, after, eta=self.eta, z=noise)
        return state.replace(positions=positions.astype(x.dtype, copy=False), alpha_bar=after)


@attrs.frozen(kw_only=True)
class DPMSolverPP2M(_DiffusionSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2), data-prediction
    multistep solver of second order in log-SNR; the first and the last step (to ᾱ = 1)
    are first order. The previous x̂_0 is carried with the particles.

    Parameters
    ----------
    schedule, t_max, t_min, spacing, model_error, guidance, guidance_class
        As for ``ddpm``.
    """

    def step(self, state: Ensemble, problem: Problem, step: Step, rng: MemberRandom) -> Ensemble:
        state, now, after = self.start(state, step)
        x = state.positions
        prediction = self.noise_prediction(state, now, problem)
        x0 = x0_from_noise(x, prediction, now)
        previous = state.carried.get(PREVIOUS_X0) if step.index > 1 else None
        h_previous = None
        if previous is not None:
            before, _ = self.levels(Step(step.index - 1, step.total))
            h_previous = float(log_snr(now) - log_snr(before))
        result = dpmpp_2m_step(x, x0, previous, now, after, h_previous)
        return state.replace(
            positions=result.x.astype(x.dtype, copy=False),
            alpha_bar=after,
            carried={**state.carried, PREVIOUS_X0: x0.astype(x.dtype, copy=False)},
        )
