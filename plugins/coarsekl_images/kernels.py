"""The paper's kernels on image states: geometric mean, unsharp mask, block blur."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from coarsekl.errors import ConfigError
from coarsekl.numerics import (
    compiled_enabled,
    compiled_module,
    parallel_or_serial,
    recycled_empty,
)
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Schedule, Step, non_negative_schedule, schedule_field
from coarsekl_blocks.partitions import BlockGrid
from coarsekl_images.filters import blockwise_gaussian, gaussian_smooth, gaussian_weights

__all__ = ["BlockBlur", "GeometricMean", "UnsharpMask", "normalise"]

BAND_ROWS = 256  # the compiled geometric mean works on bands of at least this many rows
NO_LOGS = np.empty((1, 0, 0))  # for the compiled geometric mean: log p not known
NO_SMOOTHING = np.ones(1)  # its weights for σ = 0


def normalise(values: np.ndarray) -> np.ndarray:
    """Divide each state of the batch by its sum over the last two axes."""
    return values / values.sum(axis=(-2, -1), keepdims=True)


def _positive_floor(instance, attribute, value) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1e-3):
        raise ConfigError(f"{attribute.name} must be a small positive number, got {value!r}")


def _fraction_schedule(instance, attribute, value: Schedule) -> None:
    non_negative_schedule(instance, attribute, value)
    if value.extremes()[1] > 1:
        raise ConfigError(f"{attribute.name} must lie in [0, 1], got {value.to_config()}")


@attrs.frozen(kw_only=True)
class GeometricMean:
    """p' ∝ p^{1−β} q_data^β (in log space, states floored at ``floor``), then G_σ, renormalised.

    The smoothing crosses block borders, so block masses leak. Paper: β = 0.05, σ = 0.5.

    Parameters
    ----------
    beta
        Weight β of the data in the geometric mean, in [0, 1]. Units: dimensionless.
    sigma
        Standard deviation σ of the Gaussian smoothing G_σ; 0 turns it off. Units: pixel.
    floor
        Floor applied to states and data before the log, 0 < floor < 1e-3. Units: mass per
        pixel.
    """

    block_preserving: ClassVar[bool] = False
    beta: Schedule = schedule_field(validator=_fraction_schedule)
    sigma: Schedule = schedule_field(default=0.0, validator=non_negative_schedule)
    floor: float = attrs.field(default=1e-12, validator=_positive_floor)

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        beta, sigma = self.beta.at(step), self.sigma.at(step)
        if compiled_enabled():
            return self._step_compiled(state, problem, beta, sigma)
        log_data = _log_floored(problem, self.floor)
        log_mix = np.log(np.maximum(state, self.floor))
        log_mix *= 1 - beta
        log_mix += beta * log_data
        log_mix -= log_mix.max(axis=(-2, -1), keepdims=True)
        mixed = normalise(np.exp(log_mix))
        return normalise(gaussian_smooth(mixed, sigma))

    def _step_compiled(self, state: np.ndarray, problem: Problem, beta: float, sigma: float):
        _compiled = compiled_module("coarsekl_images._compiled")
        log_data, weights, (rows, cols) = problem.memo(
            ("geometric-mean", self.floor, sigma),
            lambda: (
                _log_floored(problem, self.floor),
                gaussian_weights(sigma) if sigma > 0 else NO_SMOOTHING,
                # on a grid, the kernel takes the block sums of its result (in its cache)
                # for the runner's check of it
                _grid_blocks(problem),
            ),
        )
        batch = np.ascontiguousarray(state).reshape(-1, *state.shape[-2:])
        # log p, if a metric (V) took it when the state was recorded: not taken again.
        logs = problem.recall(state, "log")
        logs = NO_LOGS if logs is None else logs.reshape(batch.shape)
        out = recycled_empty(batch.shape, batch.dtype)
        sums = np.empty((batch.shape[0], rows * cols))
        # Large images in bands of rows that threads share; the bands depend on the image
        # size alone, so results do not depend on the number of threads.
        bands = max(1, batch.shape[1] // BAND_ROWS)
        geometric_mean = parallel_or_serial(
            _compiled.geometric_mean, _compiled.geometric_mean_parallel, batch.size
        )
        negatives = geometric_mean(
            batch, logs, log_data, beta, self.floor, weights, out, bands, rows, cols, sums
        )
        result = out.reshape(state.shape)
        if rows:
            summary = (sums.reshape(*state.shape[:-2], rows * cols), int(negatives))
            problem.remember(result, "summary", summary)
        return result


def _grid_blocks(problem: Problem) -> tuple[int, int]:
    """(rows, cols) of a grid partition (the compiled kernel takes its block sums), else
    (0, 0)."""
    partition = problem.partition
    return partition.blocks if isinstance(partition, BlockGrid) else (0, 0)


def _log_floored(problem: Problem, floor: float) -> np.ndarray:
    """log max(q_data, floor), computed once per problem (the data does not change)."""
    compiled = compiled_enabled()

    def compute() -> np.ndarray:
        data = problem.data_state
        if not compiled:
            return np.log(np.maximum(data, floor))
        from coarsekl import fastmath

        logs = np.empty(data.shape)
        fastmath.log_floored(data.reshape(-1), floor, logs.reshape(-1))
        return logs

    return problem.memo(("log-data", floor, compiled), compute)


@attrs.frozen(kw_only=True)
class UnsharpMask:
    """p' = p + α (p − G_σ p) + noise · ξ / N, clipped at ``floor``, renormalised.

    ξ is standard normal per pixel (the reverse model's learning error); ``noise`` is its
    standard deviation in units of the uniform pixel mass 1/N (N pixels). The global filter
    and the noise both leak mass across blocks.

    Parameters
    ----------
    alpha
        Strength α of the sharpening. Units: dimensionless.
    sigma
        Standard deviation σ of the Gaussian blur G_σ that is subtracted. Units: pixel.
    noise
        Standard deviation of the per-pixel Gaussian noise. Units: 1/N, the uniform pixel
        mass.
    floor
        Clipping floor before renormalising, 0 < floor < 1e-3. Units: mass per pixel.
    """

    block_preserving: ClassVar[bool] = False
    alpha: Schedule = schedule_field(validator=non_negative_schedule)
    sigma: Schedule = schedule_field(validator=non_negative_schedule)
    noise: Schedule = schedule_field(default=0.0, validator=non_negative_schedule)
    floor: float = attrs.field(default=1e-12, validator=_positive_floor)

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        sharpened = state + self.alpha.at(step) * (
            state - gaussian_smooth(state, self.sigma.at(step))
        )
        noise = self.noise.at(step)
        if noise > 0:
            n_pixels = state.shape[-2] * state.shape[-1]
            sharpened += (noise / n_pixels) * rng.normal(state.shape[-2:])
        return normalise(np.maximum(sharpened, self.floor))


@attrs.frozen(kw_only=True)
class BlockBlur:
    """G_σ inside each block, reflecting at the block's borders: keeps block masses exactly.

    The forward "replication" dynamics: iterated, every block tends to a constant and V
    decreases to 0 (Theorem 1). Needs a rectangular ``blocks`` partition.

    Parameters
    ----------
    sigma
        Standard deviation σ of the within-block Gaussian blur. Units: pixel.
    """

    block_preserving: ClassVar[bool] = True
    sigma: Schedule = schedule_field(validator=non_negative_schedule)

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        blocks = getattr(problem.partition, "blocks", None)
        if not (isinstance(blocks, tuple) and len(blocks) == 2):
            raise ConfigError(
                "the kernel 'block-blur' needs a rectangular grid partition "
                '([partition] kind = "blocks"), not an irregular label map'
            )
        return blockwise_gaussian(state, self.sigma.at(step), blocks)
