"""A test plugin whose components break their contracts in chosen ways."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

import coarsekl


@attrs.frozen(kw_only=True)
class BrokenKernel:
    """Returns a state that breaks the kernel contract from step ``at`` on."""

    block_preserving: ClassVar[bool] = False
    fault: str = "nan"
    at: int = 2

    def step(self, state, problem, step, rng):
        if step.index < self.at:
            return state.copy()
        if self.fault == "nan":
            broken = state.copy()
            broken[..., 0, 0] = np.nan
            return broken
        if self.fault == "negative":
            return state - 2 * state.max()
        if self.fault == "unnormalised":
            return state * 2
        if self.fault == "shape":
            return state[..., :-1, :]
        raise ValueError(self.fault)


@attrs.frozen(kw_only=True)
class LeakToFirstBlock:
    """Moves a fraction ``epsilon`` of all mass onto pixel (0, 0) every step."""

    block_preserving: ClassVar[bool] = False
    epsilon: float = 0.01

    def step(self, state, problem, step, rng):
        moved = (1 - self.epsilon) * state
        moved[..., 0, 0] += self.epsilon
        return moved


@attrs.frozen(kw_only=True)
class TowardEnsembleMean:
    """p' = (1 − a) p + a · mean over members: couples the members of the ensemble."""

    block_preserving: ClassVar[bool] = False
    couples_members: ClassVar[bool] = True
    weight: float = 0.5

    def step(self, state, problem, step, rng):
        return (1 - self.weight) * state + self.weight * state.mean(axis=1, keepdims=True)


@attrs.frozen(kw_only=True)
class BrokenParticleKernel:
    """Returns an ensemble that breaks the kernel contract from step ``at`` on."""

    block_preserving: ClassVar[bool] = False
    fault: str = "nan"
    at: int = 2

    def step(self, state, problem, step, rng):
        if step.index < self.at:
            return state.replace(positions=state.positions.copy())
        if self.fault == "nan":
            positions = state.positions.copy()
            positions[..., 0, 0] = np.nan
            return state.replace(positions=positions)
        if self.fault == "unnormalised":
            return state.replace(weights=2 * state.weights)
        if self.fault == "array":
            return state.positions
        if self.fault == "shape":
            return coarsekl.Ensemble(
                state.positions[..., :-1, :], state.weights[..., :-1], state.alpha_bar
            )
        raise ValueError(self.fault)


@attrs.frozen(kw_only=True)
class SameArray:
    """Returns its input array itself (``view = False``) or a view of it: a kernel that
    changes nothing, which the runner must not mistake for a new array of its own."""

    block_preserving: ClassVar[bool] = False
    view: bool = False

    def step(self, state, problem, step, rng):
        return state[...] if self.view else state


@attrs.frozen(kw_only=True)
class ToData:
    """Returns the data state for every scheme and member as a broadcast of one array."""

    block_preserving: ClassVar[bool] = False

    def step(self, state, problem, step, rng):
        return np.broadcast_arrays(problem.data_state, state)[0]


@coarsekl.hookimpl
def coarsekl_kernels():
    return [
        coarsekl.Component(name="same-array", factory=SameArray, summary="returns its input"),
        coarsekl.Component(name="to-data", factory=ToData, summary="a broadcast of the data"),
        coarsekl.Component(name="broken", factory=BrokenKernel, summary="breaks its contract"),
        coarsekl.Component(
            name="broken-particles", factory=BrokenParticleKernel, summary="breaks its contract"
        ),
        coarsekl.Component(name="leak-to-corner", factory=LeakToFirstBlock, summary="leaks"),
        coarsekl.Component(
            name="false-preserver", factory=FalselyPreserving, summary="lies about leaking"
        ),
        coarsekl.Component(
            name="toward-ensemble-mean", factory=TowardEnsembleMean, summary="couples members"
        ),
    ]


@attrs.frozen(kw_only=True)
class FalselyPreserving(LeakToFirstBlock):
    """Claims to keep block masses but leaks."""

    block_preserving: ClassVar[bool] = True


@coarsekl.hookimpl
def coarsekl_metrics():
    return [
        coarsekl.Component(name="nan_metric", factory=NanMetric, summary="always NaN"),
        coarsekl.Component(
            name="coarse_probe", factory=CoarseProbe, summary="tells which entry point ran"
        ),
        coarsekl.Component(
            name="coarse_misshapen", factory=CoarseMisshapen, summary="wrong shape from masses"
        ),
    ]


@attrs.frozen
class NanMetric:
    long_name: ClassVar[str] = "not a number"
    units: ClassVar[str] = "1"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False

    def compute(self, state, problem, step):
        return np.full(state.shape[:-2], np.nan)


@attrs.frozen
class CoarseProbe:
    """0 from ``compute``, the step index from ``from_block_masses``: shows which one the
    runner called (a real metric gives the same value from both)."""

    long_name: ClassVar[str] = "which entry point ran"
    units: ClassVar[str] = "1"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = True

    def compute(self, state, problem, step):
        return np.zeros(state.shape[:-2])

    def from_block_masses(self, masses, problem, steps):
        assert not masses.flags.writeable  # the runner's record, not the metric's to change
        return np.broadcast_to([float(step.index) for step in steps], masses.shape[:-1])


@attrs.frozen
class CoarseMisshapen(CoarseProbe):
    def from_block_masses(self, masses, problem, steps):
        return np.zeros(masses.shape)  # keeps the block axis of a scalar metric


@attrs.frozen(kw_only=True)
class FirstMemberInPlace:
    """Asked to project in place, returns a view that overlaps the state without being
    that object: the first member's state for every member (a stride of 0)."""

    projects_in_place: ClassVar[bool] = True

    def tolerance(self, step):
        return 0.1

    def project(self, state, problem, step, in_place=False):
        clipped = np.zeros((*state.shape[:-2], problem.partition.n_blocks), dtype=bool)
        if not in_place:
            return coarsekl.Projection(state.copy(), clipped)
        return coarsekl.Projection(np.broadcast_to(state[:1], state.shape), clipped)


@coarsekl.hookimpl
def coarsekl_projectors():
    return [
        coarsekl.Component(
            name="first-member-in-place", factory=FirstMemberInPlace, summary="overlaps its input"
        )
    ]
