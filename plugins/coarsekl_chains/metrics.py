"""V relative to a general reference within-block distribution π_j (THEORY.md §2).

V_π(p) = Σ_j w_j D(p(·|j) ‖ π_j) = Σ_x p(x) log(p(x) / (w_j(x) π(x))), with w_j the block
masses of p. It is also the smallest KL divergence from p to a stationary distribution of
a π-preserving block-diagonal chain: for v on the simplex,
D(p ‖ Σ_j v_j π_j) = V_π(p) + D(w ‖ v), minimal at v = w (the distribution reachable from
p, since block-preserving kernels keep w). With uniform π_j it is the V of coarsekl_blocks.
V_δ and E_block depend on block masses only: the metrics of coarsekl_blocks apply as is.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from coarsekl.interfaces import Partition
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_blocks.vdelta import kl_divergence
from coarsekl_chains.kernels import reference_of

__all__ = ["WithinBlockReferenceV", "kl_to_stationary", "within_block_kl"]


def _flat(values: np.ndarray, partition: Partition) -> np.ndarray:
    """(..., *site_shape) -> (..., n)."""
    batch = values.shape[: values.ndim - len(partition.site_shape)]
    return values.reshape(*batch, -1)


def kl_to_stationary(
    state: np.ndarray, partition: Partition, reference: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """D(p ‖ Σ_j v_j π_j) for block weights v ``(..., K)``: ``(..., *sites) -> (...)``, nat.

    ``reference`` is π as a flat (n,) vector normalised inside every block."""
    target = partition.broadcast(np.asarray(weights, dtype=np.float64))
    return kl_divergence(_flat(state, partition), _flat(target, partition) * reference)


def within_block_kl(
    state: np.ndarray, partition: Partition, reference: np.ndarray | None = None
) -> np.ndarray:
    """V_π(p) = Σ_x p(x) log(p(x) / (w_j(x) π(x))): ``(..., *sites) -> (...)``, in nat.

    ``reference`` is π (n,), normalised inside every block; by default the partition's
    reference (uniform unless a label-vector partition names one). 0 log 0 = 0.
    """
    if reference is None:
        reference = reference_of(partition)
    return kl_to_stationary(state, partition, reference, partition.block_sums(state))


@attrs.frozen
class WithinBlockReferenceV:
    """V_π(p) = Σ_j w_j D(p(·|j) ‖ π_j), π_j the partition's reference (uniform by default).

    Theorem 1: non-increasing under block-diagonal kernels that keep every π_j invariant.
    """

    long_name: ClassVar[str] = "within-block KL to the reference π_j, V_π"
    units: ClassVar[str] = "nat"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        return within_block_kl(state, problem.partition)
