"""The sample-based V_δ projection of a particle ensemble (paper Sec. 2.2, THEORY §7).

The block masses w_j of the ensemble (the weight of the particles in block j) are
projected with the same closed form as for images, w* = argmin_{w' ∈ A_δ} D(w ‖ w'); the
ensemble then either keeps its particles and rescales the weights in block j by w*_j / w_j
(``reweight``), or resamples so that block j holds ≈ N w*_j equally weighted particles,
drawn systematically from its own particles (``resample``).

A block without particles can hold no mass: its bounds become [0, 0]. If the occupied
blocks then cannot take the whole mass within their upper bounds, those are widened by
the smallest common amount that makes room (a CoarseklWarning says so, and V_δ after the
projection shows the remaining distance to A_δ).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble
from coarsekl.errors import CoarseklWarning
from coarsekl.interfaces import Projection
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Schedule, Step, non_negative_schedule, schedule_field
from coarsekl_blocks.vdelta import project_masses
from coarsekl_gmm.particles import resample_within_blocks, reweight

__all__ = ["ResampleProjector", "ReweightProjector", "projected_block_masses"]


def projected_block_masses(
    ensemble: Ensemble, problem: Problem, delta: float, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masses w, projected masses w*, clipped), each ``(..., K)``, for an ensemble batch.

    ``margin`` (a mass) narrows every interval [a_j, b_j] by that much on each side, but
    never past the reference w^ref_j (so the set stays non-empty)."""
    masses = problem.block_masses(ensemble)
    lower, upper = problem.bounds(delta, ensemble)
    if margin > 0:
        reference = problem.reference_for(ensemble)
        lower = np.minimum(lower + margin, np.maximum(lower, reference))
        upper = np.maximum(upper - margin, np.minimum(upper, reference))
    empty = masses <= 0
    if empty.any():  # no particle can carry mass into an empty block
        lower, upper = _reachable_bounds(empty, lower, upper, delta)
    projected, clipped = project_masses(masses, lower, upper)
    return masses, projected, clipped


def _reachable_bounds(empty, lower, upper, delta):
    """Bounds (..., K) with empty blocks at [0, 0] and, where the occupied blocks lack room,
    their upper bounds raised by the smallest common amount (capped at 1)."""
    lower = np.where(empty, 0.0, lower)
    upper = np.where(empty, 0.0, upper)
    deficit = 1.0 - upper.sum(axis=-1, keepdims=True)
    if (deficit <= 1e-12).all():
        return lower, upper
    warnings.warn(
        f"some blocks hold no particles, and the others cannot take the whole mass within "
        f"δ = {delta:g} (short by up to {float(deficit.max()):.3g}); their upper bounds are "
        "widened. Use more particles, a coarser partition or a larger δ",
        CoarseklWarning,
        stacklevel=3,
    )
    for _ in range(upper.shape[-1]):  # each pass fills the deficit or caps a block at 1
        growing = ~empty & (upper < 1.0) & (deficit > 1e-12)
        share = deficit / np.maximum(growing.sum(axis=-1, keepdims=True), 1)
        upper = np.where(growing, np.minimum(1.0, upper + share), upper)
        deficit = 1.0 - upper.sum(axis=-1, keepdims=True)
        if (deficit <= 1e-12).all():
            break
    return lower, upper


@attrs.frozen(kw_only=True)
class ReweightProjector:
    """Sample-based V_δ projection by reweighting: w_i ← w_i · w*_j / w_j for i in block j.

    Positions stay; the effective sample size drops by the spread of w*_j / w_j.

    Parameters
    ----------
    delta
        The tolerance δ ≥ 0 on every block's mass, a number or a schedule over the steps.
        Units: the coarse quantity's (a mass for ``block-mass``).
    """

    delta: Schedule = schedule_field(validator=non_negative_schedule)

    def tolerance(self, step: Step) -> float:
        return self.delta.at(step)

    def project(self, state: Ensemble, problem: Problem, step: Step) -> Projection:
        masses, projected, clipped = projected_block_masses(state, problem, self.tolerance(step))
        if np.array_equal(masses, projected):  # inside A_δ already: Π_δ(p) = p exactly
            return Projection(state, clipped)
        labels = problem.partition.labels(state)
        weights = reweight(state.weights, labels, projected)
        new_state = state.replace(weights=weights)
        problem.remember_block_masses(new_state, projected)
        return Projection(new_state, clipped)


@attrs.frozen(kw_only=True)
class ResampleProjector:
    """Sample-based V_δ projection by systematic resampling within blocks: block j gets
    ⌊N w*_j⌋ or ⌈N w*_j⌉ particles, drawn from its own particles in proportion to their
    weights; all weights become 1/N, positions are kept (duplicated or dropped).

    Particle counts are whole numbers, so w* is the projection onto A_δ with every
    interval narrowed by 1/N (not past the reference): the resampled masses then lie
    within δ whenever δ ≥ 1/N in mass units.

    Parameters
    ----------
    delta
        The tolerance δ ≥ 0 on every block's mass, a number or a schedule over the steps.
        Units: the coarse quantity's (a mass for ``block-mass``).
    """

    uses_random: ClassVar[bool] = True
    delta: Schedule = schedule_field(validator=non_negative_schedule)

    def tolerance(self, step: Step) -> float:
        return self.delta.at(step)

    def project(
        self, state: Ensemble, problem: Problem, step: Step, rng: MemberRandom
    ) -> Projection:
        _, projected, clipped = projected_block_masses(
            state, problem, self.tolerance(step), margin=1.0 / state.particles
        )
        labels = problem.partition.labels(state)
        uniforms = np.broadcast_to(rng.uniform(()), state.shape[:-1])
        indices = resample_within_blocks(state.weights, labels, projected, uniforms)
        return Projection(state.gather(indices), clipped)
