"""The standard metrics: V, V_δ, E_block, MSE and within-block variance.

Every ``compute`` takes a batch of states ``(..., *site_shape)`` and returns ``(...)`` (or
``(..., K)`` for per-block metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import attrs
import numpy as np

from coarsekl.errors import ConfigError
from coarsekl.numerics import (
    compiled_enabled,
    compiled_module,
    parallel_or_serial,
    recycled_empty,
    summation_pieces,
)
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_blocks.vdelta import kl_divergence, project_masses

__all__ = ["BlockMassError", "BlockVariance", "MeanSquaredError", "VDelta", "WithinBlockV"]

SHARED_LOG_BYTES = 1 << 20  # V keeps the logs it takes of states up to this size
NO_LOGS = np.empty((0, 0))  # for the compiled V: logs not kept
NO_DATA = np.empty(0)  # for the compiled V: no squared error to sum


def _site_axes(problem: Problem) -> tuple[int, ...]:
    return tuple(range(-len(problem.partition.site_shape), 0))


def _flat_data(problem: Problem) -> np.ndarray:
    """The data image as one row (N,), float64, for the compiled MSE sums; empty where the
    data is not an array over the sites (a distribution)."""
    return problem.memo(
        "flat-data", lambda: NO_DATA if problem.is_distribution else problem.data.reshape(-1)
    )


@attrs.frozen
class WithinBlockV:
    """V(p) = Σ_j w_j D(p(·|j) ‖ u_j) = Σ_x p(x) log(p(x) |Ω_j| / w_j), u_j uniform on Ω_j."""

    long_name: ClassVar[str] = "within-block non-uniformity V"
    units: ClassVar[str] = "nat"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        partition = problem.partition
        masses = problem.block_masses(state)
        if compiled_enabled():
            # V = Σ_x p log p − Σ_j w_j log(w_j / |Ω_j|): one pass over the pixels, no
            # broadcast array. The logs it takes are kept for the next kernel step.
            _compiled = compiled_module("coarsekl_blocks._compiled")
            site_size, pieces, log_sizes, data = problem.memo(
                "within-block-v",
                lambda: (
                    math.prod(partition.site_shape),
                    summation_pieces(math.prod(partition.site_shape)),
                    np.log(partition.block_sizes),
                    _flat_data(problem),
                ),
            )
            rows = state.reshape(-1, site_size)
            # The logs are kept where they stay in the cache: larger ones come back from
            # memory no faster than the kernel takes them again (and float32 states would
            # more than double their memory).
            keep = state.dtype == np.float64 and rows.nbytes <= SHARED_LOG_BYTES
            logs = recycled_empty(rows.shape) if keep else NO_LOGS
            within_block_v = parallel_or_serial(
                _compiled.within_block_v, _compiled.within_block_v_parallel, rows.size
            )
            # The same pass sums the squared error to the data image (``data``) for the
            # metric mse (a few operations per pixel beside the log, against a pass of its
            # own).
            v, errors = within_block_v(
                rows,
                masses.reshape(-1, masses.shape[-1]),
                log_sizes,
                pieces,
                logs,
                problem.data_total,
                data,
            )
            batch = masses.shape[:-1]
            if keep:
                problem.remember(state, "log", logs.reshape(state.shape))
            if data.size:
                errors.flags.writeable = False
                problem.remember(state, "mean_squared_error", errors.reshape(batch))
            return v.reshape(batch)
        # |Ω_j| / w_j: p(x) times it is p(x | j) / u_j(x); empty blocks hold no p to weigh.
        inverse_uniform = np.divide(
            partition.block_sizes, masses, out=np.zeros_like(masses), where=masses > 0
        )
        log_ratio = state * partition.broadcast(inverse_uniform)  # float64 for any state
        np.maximum(log_ratio, np.finfo(np.float64).tiny, out=log_ratio)  # 0 log 0 = 0
        np.log(log_ratio, out=log_ratio)
        batch = state.shape[: state.ndim - len(partition.site_shape)]
        return np.vecdot(state.reshape(*batch, -1), log_ratio.reshape(*batch, -1))


@attrs.frozen
class VDelta:
    """V_δ(p) = min_{q∈A_δ} D(p ‖ q) = D(w ‖ w*) (Proposition 1); needs a projector's δ."""

    long_name: ClassVar[str] = "coarse-grained KL to the admissible set V_δ"
    units: ClassVar[str] = "nat"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = True

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        masses = problem.block_masses(state)
        return _coarse_kl(masses, *problem.bounds(_tolerance(step), state))

    def from_block_masses(
        self, masses: np.ndarray, problem: Problem, steps: Sequence[Step]
    ) -> np.ndarray:
        """V_δ from block masses ``(..., step, K)`` along ``steps`` -> ``(..., step)``."""
        distinct = {step.tolerance for step in steps}
        if None in distinct:
            raise _no_tolerance()
        if len(distinct) == 1:  # one δ for the whole run: (K,) bounds
            return _coarse_kl(masses, *problem.bounds(distinct.pop()))
        tolerances = [step.tolerance for step in steps]
        bounds = {tolerance: problem.bounds(tolerance) for tolerance in distinct}
        lower, upper = (np.stack(side) for side in zip(*map(bounds.get, tolerances), strict=True))
        return _coarse_kl(masses, lower, upper)


def _tolerance(step: Step) -> float:
    if step.tolerance is None:
        raise _no_tolerance()
    return step.tolerance


def _no_tolerance() -> ConfigError:
    return ConfigError(
        "the metric 'V_delta' needs a tolerance δ: add a [projector] table with "
        "kind = \"vdelta\" and delta = …, or drop 'V_delta' from [record] metrics"
    )


def _coarse_kl(masses: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """D(w ‖ w*), w* the projection of w onto the box [lower, upper] with Σ = 1."""
    projected, _ = project_masses(masses, lower, upper)
    return kl_divergence(masses, projected)


@attrs.frozen
class BlockMassError:
    """E_block(p) = ‖w(p) − w^ref‖₁."""

    long_name: ClassVar[str] = "L1 block-mass error E_block"
    units: ClassVar[str] = "1"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = True

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        masses = problem.block_masses(state)
        return np.abs(masses - problem.reference_for(state)).sum(axis=-1)

    def from_block_masses(
        self, masses: np.ndarray, problem: Problem, steps: Sequence[Step]
    ) -> np.ndarray:
        """E_block from block masses ``(..., step, K)`` -> ``(..., step)``."""
        return np.abs(masses - problem.reference_masses).sum(axis=-1)


@attrs.frozen
class MeanSquaredError:
    """mean_x (p̃(x) − x_data(x))² with p̃ = p · Σx_data: pixel error in data units²."""

    long_name: ClassVar[str] = "mean squared error to the data image"
    units: ClassVar[str] = "data intensity^2"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        if compiled_enabled():
            # V, recorded before, summed the squared errors in its pass over this state
            # (the same numbers as this pass of its own)
            shared = problem.recall(state, "mean_squared_error")
            if shared is not None:
                return shared
            _compiled = compiled_module("coarsekl_blocks._compiled")
            batch = state.shape[: state.ndim - problem.data.ndim]
            rows = state.reshape(-1, problem.data.size)
            # (on the cores that V's loop used for the same rows: they are in their caches)
            mean_squared_error = parallel_or_serial(
                _compiled.mean_squared_error, _compiled.mean_squared_error_parallel, rows.size
            )
            pieces = summation_pieces(rows.shape[1])
            errors = mean_squared_error(rows, problem.data_total, _flat_data(problem), pieces)
            return errors.reshape(batch)
        residual = state * problem.data_total - problem.data
        return np.mean(residual**2, axis=_site_axes(problem))


@attrs.frozen
class BlockVariance:
    """Variance of p̃ = p · Σx_data inside each block, (..., K), in data units²."""

    long_name: ClassVar[str] = "within-block variance of the intensity"
    units: ClassVar[str] = "data intensity^2"
    per_block: ClassVar[bool] = True
    record_before_projection: ClassVar[bool] = False

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        partition = problem.partition
        intensity = state * problem.data_total
        means = partition.block_sums(intensity) / partition.block_sizes
        deviation = intensity - partition.broadcast(means)
        return partition.block_sums(deviation**2) / partition.block_sizes
