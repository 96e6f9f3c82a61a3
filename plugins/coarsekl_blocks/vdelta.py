"""The V_δ projection in closed form (Proposition 1) and the projectors built on it.

For block masses w and bounds a ≤ b (the admissible box), the closest point of
A_δ = {a ≤ w* ≤ b, Σ w* = 1} in KL is w*_j = clip(s·w_j, a_j, b_j) with s solving
g(s) = Σ_j clip(s·w_j, a_j, b_j) = 1. g is non-decreasing and piecewise linear with
breakpoints a_j/w_j and b_j/w_j; sorting them and accumulating slopes and offsets finds
the segment where g crosses 1, and s follows from one linear equation: O(K log K), exact
to rounding, no iteration tolerance.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from coarsekl.interfaces import Projection
from coarsekl.numerics import (
    compiled_enabled,
    compiled_module,
    parallel_or_serial,
    recycled_empty,
)
from coarsekl.problem import Problem
from coarsekl.schedules import Schedule, Step, non_negative_schedule, schedule_field
from coarsekl_blocks.partitions import BlockGrid

# g(s) counts as reaching 1 within this slack: sums of the same bounds in another order
# may land on either side of 1 (δ = 0 with empty blocks), and the branch taken must not
# depend on the summation order.
ROOT_SLACK = 1e-13

__all__ = [
    "IdentityProjector",
    "VDeltaProjector",
    "kl_divergence",
    "project_masses",
    "project_masses_reference",
]


def project_masses(
    masses: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form KL projection of block masses onto {lower ≤ w* ≤ upper, Σ w* = 1}.

    The compiled kernel (one row at a time, O(K log K)) when numba runs, else
    :func:`project_masses_reference`; both give the same result to rounding.

    Examples
    --------
    Reference masses (0.4, 0.4, 0.2) with δ = 0.05: the first block is cut down to its
    upper bound, the last one raised to its lower bound, and the middle one scaled so that
    the masses sum to 1.

    >>> import numpy as np
    >>> reference = np.array([0.4, 0.4, 0.2])
    >>> masses = np.array([0.6, 0.3, 0.1])
    >>> projected, clipped = project_masses(masses, reference - 0.05, reference + 0.05)
    >>> np.round(projected, 12).tolist(), clipped.tolist()
    ([0.45, 0.4, 0.15], [True, False, True])
    """
    if not compiled_enabled():
        return project_masses_reference(masses, lower, upper)
    from coarsekl_blocks._compiled import project_rows

    w = np.asarray(masses, dtype=np.float64)
    n_blocks = w.shape[-1]
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lower.shape != (n_blocks,) or upper.shape != (n_blocks,):  # per-row bounds
        lower = np.broadcast_to(lower, w.shape).reshape(-1, n_blocks)
        upper = np.broadcast_to(upper, w.shape).reshape(-1, n_blocks)
    projected, clipped = project_rows(w.reshape(-1, n_blocks), lower, upper)
    return projected.reshape(w.shape), clipped.reshape(w.shape)


def project_masses_reference(
    masses: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form KL projection of block masses onto {lower ≤ w* ≤ upper, Σ w* = 1}
    (plain numpy, batched: the reference for the compiled kernel).

    Parameters
    ----------
    masses : (..., K) non-negative, each row summing to 1.
    lower, upper : (K,) or broadcastable to masses; Σ lower ≤ 1 ≤ Σ upper.

    Returns
    -------
    projected : (..., K) masses w* minimising D(w ‖ w*) (and D(w* ‖ w)).
    clipped : (..., K) bool, True where w*_j was set to a bound.

    Rows already inside the box are returned unchanged (exactly). Empty blocks (w_j = 0)
    get their lower bound; if the occupied blocks cannot take the rest even at their upper
    bounds, the remainder goes to the empty blocks in proportion to their room b_j − a_j.
    """
    w = np.asarray(masses, dtype=np.float64)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), w.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), w.shape)
    occupied = w > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Breakpoints: clip(s·w_j) leaves a_j at s = a_j/w_j and reaches b_j at s = b_j/w_j.
        s_enter = np.where(occupied, lower / w, np.inf)
        s_leave = np.where(occupied, upper / w, np.inf)
    breakpoints = np.concatenate([s_enter, s_leave], axis=-1)
    w_occupied = np.where(occupied, w, 0.0)
    no_event = np.zeros_like(w)
    order = np.argsort(breakpoints, axis=-1, kind="stable")
    s_sorted = np.take_along_axis(breakpoints, order, axis=-1)

    def sorted_events(enter_values, leave_values):
        both = np.concatenate([enter_values, leave_values], axis=-1)
        return np.take_along_axis(both, order, axis=-1)

    def sum_after(values):
        """Σ of ``values`` over the sorted positions strictly after each position."""
        suffix = np.flip(np.cumsum(np.flip(values, axis=-1), axis=-1), axis=-1)
        return np.concatenate([suffix[..., 1:], np.zeros_like(suffix[..., :1])], axis=-1)

    # After the i-th breakpoint, g(s) = offset_i + slope_i · s; below the first, g = Σ a.
    # The slope is the mass of the free blocks, entered but not yet left. It is summed over
    # the blocks whose breakpoints lie *ahead* (small w at large s) rather than as a running
    # sum of +w and −w: that running sum cancels large masses and leaves an error ε·Σw that
    # s (up to 1/w_min) would blow up, leaving Σ w* off 1 by far more than rounding.
    slope = sum_after(sorted_events(no_event, w_occupied)) - sum_after(
        sorted_events(w_occupied, no_event)
    )
    # Offset: lower bounds of the blocks not yet entered (and of the empty blocks), plus
    # upper bounds of the blocks already left; both are sums of positive terms.
    offset = (
        sum_after(sorted_events(np.where(occupied, lower, 0.0), no_event))
        + np.where(occupied, 0.0, lower).sum(axis=-1, keepdims=True)
        + np.cumsum(sorted_events(no_event, np.where(occupied, upper, 0.0)), axis=-1)
    )
    finite = np.isfinite(s_sorted)
    with np.errstate(invalid="ignore"):
        g_at = np.where(finite, offset + slope * np.where(finite, s_sorted, 0.0), offset)
    reaches = (g_at >= 1.0 - ROOT_SLACK) & finite
    has_root = reaches.any(axis=-1)
    first = np.argmax(reaches, axis=-1)[..., None]
    previous = np.maximum(first - 1, 0)
    seg_slope = np.where(first > 0, np.take_along_axis(slope, previous, axis=-1), 0.0)
    seg_offset = np.where(
        first > 0,
        np.take_along_axis(offset, previous, axis=-1),
        lower.sum(axis=-1, keepdims=True),
    )
    seg_start = np.where(first > 0, np.take_along_axis(s_sorted, previous, axis=-1), 0.0)
    seg_end = np.take_along_axis(s_sorted, first, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_root = np.where(seg_slope > 0, (1.0 - seg_offset) / seg_slope, seg_end)
    s_root = np.clip(s_root, seg_start, seg_end)
    scaled = np.where(has_root[..., None], s_root * w, np.inf)
    scaled = np.where(occupied, scaled, 0.0)
    projected = np.clip(scaled, lower, upper)
    # Without a root, occupied blocks sit at their upper bounds and empty blocks share the rest.
    remainder = 1.0 - projected.sum(axis=-1, keepdims=True)
    room = np.where(occupied, 0.0, upper - lower)
    room_total = room.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(room_total > 0, room / room_total, 0.0)
    projected = np.where(
        has_root[..., None],
        projected,
        np.minimum(projected + np.maximum(remainder, 0.0) * share, upper),
    )
    clipped = np.where(
        has_root[..., None],
        (scaled < lower) | (scaled > upper),
        (projected <= lower) | (projected >= upper),  # empty blocks may sit strictly inside
    )
    inside = ((w >= lower) & (w <= upper)).all(axis=-1, keepdims=True)
    projected = np.where(inside, w, projected)
    clipped &= ~inside
    return projected, clipped


def kl_divergence(p: np.ndarray, q: np.ndarray, axis=-1) -> np.ndarray:
    """D(p ‖ q) = Σ p log(p / q) over ``axis`` with 0 log 0 = 0 (inf where q = 0 < p)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if compiled_enabled() and axis == -1 and p.shape == q.shape and p.ndim > 0:
        from coarsekl_blocks._compiled import relative_entropy_rows

        rows = relative_entropy_rows(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]))
        return rows.reshape(p.shape[:-1])
    from scipy.special import rel_entr  # one ufunc: p log(p / q), 0 at p = 0, inf at q = 0 < p

    return rel_entr(p, q).sum(axis=axis)


def apply_block_masses(
    state: np.ndarray, problem: Problem, masses: np.ndarray, new_masses: np.ndarray
) -> np.ndarray:
    """Rescale every block of ``state`` from ``masses`` to ``new_masses``, keeping its shape.

    q(x) = w*_j · p(x | j); an empty block that must receive mass gets the partition's
    reference within-block distribution, q(x) = w*_j · π_j(x) (``within_block_reference``,
    if the partition has one), else the uniform one, q(x) = w*_j / |Ω_j|.
    """
    partition = problem.partition
    all_occupied = masses.min() > 0  # (one reduction; the mask is needed only otherwise)
    if all_occupied:
        ratio = new_masses / masses
    else:
        occupied = masses > 0
        ratio = np.divide(new_masses, masses, out=np.zeros_like(new_masses), where=occupied)
    scale_blocks = getattr(partition, "scale_blocks", None)  # an optional fast path
    if scale_blocks is not None:
        result = scale_blocks(state, ratio)
    else:
        result = state * partition.broadcast(ratio.astype(state.dtype, copy=False))
    if all_occupied:
        return result
    filled = ~occupied & (new_masses > 0)
    if filled.any():
        fill = np.where(filled, new_masses, 0.0)
        # The partition's reference within-block distribution π_j if it has one, else uniform.
        shape = getattr(partition, "within_block_reference", None)
        if shape is None:
            result += partition.broadcast((fill / partition.block_sizes).astype(state.dtype))
        else:
            result += (partition.broadcast(fill) * shape).astype(state.dtype)
    return result


@attrs.frozen(kw_only=True)
class VDeltaProjector:
    """Π_δ: the KL projection onto A_δ = {|w_j − w^ref_j| ≤ δ} (Proposition 1).

    Parameters
    ----------
    delta
        The tolerance δ ≥ 0, a number or a schedule over the steps. Units: the coarse
        quantity's (a mass for ``block-mass``, a data intensity for ``block-mean``).
    """

    projects_in_place: ClassVar[bool] = True
    delta: Schedule = schedule_field(validator=non_negative_schedule)

    def tolerance(self, step: Step) -> float:
        return self.delta.at(step)

    def project(
        self, state: np.ndarray, problem: Problem, step: Step, in_place: bool = False
    ) -> Projection:
        """Π_δ of a batch of states; with ``in_place``, on a grid of blocks, ``state``
        itself is rescaled and returned."""
        lower, upper = problem.bounds(self.tolerance(step))
        masses = problem.block_masses(state)
        if compiled_enabled() and isinstance(problem.partition, BlockGrid):
            projection = _project_on_grid(state, problem, masses, lower, upper, in_place)
            if projection is not None:
                return projection
        new_masses, clipped = project_masses(masses, lower, upper)
        return Projection(apply_block_masses(state, problem, masses, new_masses), clipped)


def _project_on_grid(
    state, problem: Problem, masses, lower, upper, in_place: bool
) -> Projection | None:
    """:meth:`VDeltaProjector.project` on a grid of blocks in one compiled call; the block
    sums of the result, taken in the same pass, are remembered for the runner's check of
    it (``"summary"``, see :meth:`Problem.remember`). None where a block is empty (the
    general path fills it). ``in_place`` (when ``state`` is one writeable block of
    memory): the result is written into ``state``, which is returned."""
    compiled = compiled_module("coarsekl_blocks._compiled")

    rows, cols = problem.partition.blocks
    in_place = in_place and state.flags.c_contiguous and state.flags.writeable
    batch = np.ascontiguousarray(state).reshape(-1, *state.shape[-2:])
    out = batch if in_place else recycled_empty(batch.shape, batch.dtype)
    project = parallel_or_serial(
        compiled.project_grid, compiled.project_grid_parallel, batch.size, cheap=True
    )
    done, clipped, sums, negatives = project(
        batch, masses.reshape(-1, rows * cols), lower, upper, rows, cols, out, in_place
    )
    if not done:
        return None
    if in_place:
        problem.forget(state)  # (its block masses were those before the projection)
        result = state
    else:
        result = out.reshape(state.shape)
    problem.remember(result, "summary", (sums.reshape(masses.shape), int(negatives)))
    return Projection(result, clipped.reshape(masses.shape))


@attrs.frozen(kw_only=True)
class IdentityProjector:
    """No projection: the baseline scheme."""

    def tolerance(self, step: Step) -> None:
        return None

    def project(self, state: np.ndarray, problem: Problem, step: Step) -> Projection:
        clipped = np.zeros(
            (*state.shape[: -len(problem.partition.site_shape)], problem.partition.n_blocks),
            dtype=bool,
        )
        return Projection(state, clipped)
