"""The two kinds of state the runner advances, and what it does with each.

* distributions over sites: an array ``(scheme, member, *site_shape)``, ≥ 0, Σ = 1 over
  the site axes (images, distributions over the states of a chain);
* weighted particle ensembles: an :class:`~coarsekl.ensemble.Ensemble` with positions
  ``(scheme, member, particle, dim)`` and weights ``(scheme, member, particle)``.

A layout checks what plugins return (naming the plugin and the step that broke the
contract), batches and un-batches states for the runner's tiles, and says which snapshot
variables the trajectory records. The runner knows nothing else of the two kinds.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from coarsekl.ensemble import Ensemble, stack_ensembles
from coarsekl.errors import PluginContractError
from coarsekl.numerics import (
    compiled_enabled,
    compiled_module,
    parallel_or_serial,
    summation_pieces,
)

__all__ = ["DistributionStates", "EnsembleStates", "Tolerances", "check_state"]

STATE_ATTRIBUTES = {"long_name": "state p (probability per pixel)", "units": "1"}


@attrs.frozen
class Tolerances:
    normalisation: float  # |Σp − 1| accepted from a plugin
    block_mass: float  # block-mass drift accepted from a block-preserving kernel

    @staticmethod
    def of(dtype: np.dtype | str) -> Tolerances:
        return _TOLERANCES[np.dtype(dtype)]


_TOLERANCES = {
    np.dtype(np.float64): Tolerances(normalisation=1e-8, block_mass=1e-9),
    np.dtype(np.float32): Tolerances(normalisation=1e-4, block_mass=1e-5),
}


@attrs.frozen
class SnapshotVariable:
    """A variable recorded at snapshot steps: dims and sizes after (scheme, member, snapshot)."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    attributes: dict[str, str]


def check_state(
    state: Any,
    expected_shape: tuple[int, ...],
    site_ndim: int,
    who: str,
    step: int,
    dtype: np.dtype | str = "float64",
) -> np.ndarray:
    """Check what a plugin returned: shape, finite, non-negative, normalised over the last
    ``site_ndim`` axes; return it in the run's ``dtype``."""
    where = f"{who} at step {step}"
    state = _check_array(state, expected_shape, where, dtype)
    _check_normalised(state, site_ndim, where, Tolerances.of(dtype))
    return state


def _check_array(state: Any, expected_shape: tuple[int, ...], where: str, dtype) -> np.ndarray:
    if not isinstance(state, np.ndarray) or state.shape != expected_shape:
        shape = getattr(state, "shape", type(state).__name__)
        raise PluginContractError(f"{where} returned shape {shape}, expected {expected_shape}")
    if state.dtype.kind != "f":
        raise PluginContractError(f"{where} returned dtype {state.dtype}, expected floats")
    return state if state.dtype == dtype else state.astype(dtype)


def _check_normalised(values: np.ndarray, site_ndim: int, where: str, tolerances) -> None:
    _judge(values, *_summary(values, site_ndim), where, tolerances)


def _judge(values, worst: float, negatives, finite: bool, where: str, tolerances) -> None:
    """Raise if the summary (max |Σp − 1|, negative values, all finite) breaks the contract."""
    if not finite:
        raise PluginContractError(f"{where} returned NaN or inf values")
    if negatives:
        raise PluginContractError(f"{where} returned negative values (min {values.min():.3g})")
    if worst > tolerances.normalisation:
        raise PluginContractError(
            f"{where} returned a state that is not normalised (|Σp − 1| up to {worst:.3g})"
        )


def _summary(state: np.ndarray, site_ndim: int) -> tuple[float, bool, bool]:
    """(max |Σp − 1| over the states, any value negative, all finite) in one pass."""
    if compiled_enabled():
        _compiled = compiled_module("coarsekl._compiled")
        rows = state.reshape(-1, math.prod(state.shape[state.ndim - site_ndim :]))
        summary = parallel_or_serial(
            _compiled.state_summary, _compiled.state_summary_parallel, rows.size, cheap=True
        )
        return summary(rows, summation_pieces(rows.shape[1]))
    worst, finite = _deviation(state.sum(axis=tuple(range(-site_ndim, 0)), dtype=np.float64))
    return worst, finite and bool((state < 0).any()), finite


def _mass_deviation(masses: np.ndarray) -> tuple[float, bool]:
    """(max |Σ_j w_j − 1| over the states, all finite) from block masses (..., K)."""
    if compiled_enabled():  # (a microsecond, against a few for the numpy calls)
        _compiled = compiled_module("coarsekl._compiled")
        return _compiled.worst_deviation(masses.reshape(-1), masses.shape[-1])
    return _deviation(masses.sum(axis=-1))


def _deviation(totals: np.ndarray) -> tuple[float, bool]:
    """(max |total − 1|, all totals finite); a NaN or inf anywhere makes its total so."""
    worst = float(np.abs(totals - 1).max())  # NaN if a total is NaN, inf if one is ±inf
    return (worst, True) if math.isfinite(worst) else (np.nan, False)


@attrs.frozen
class DistributionStates:
    """States that are arrays over the partition's sites (images, chain distributions)."""

    site_shape: tuple[int, ...]
    site_dims: tuple[str, ...]
    dtype: np.dtype = attrs.field(converter=np.dtype)
    tolerances: Tolerances = attrs.field(init=False)

    @tolerances.default
    def _tolerances(self) -> Tolerances:
        return Tolerances.of(self.dtype)

    @property
    def state_bytes(self) -> int:
        return math.prod(self.site_shape) * self.dtype.itemsize

    def check(self, state: Any, batch: tuple[int, ...], who: str, step: int) -> np.ndarray:
        return check_state(
            state, (*batch, *self.site_shape), len(self.site_shape), who, step, self.dtype
        )

    def check_and_sum(
        self, state: Any, batch: tuple[int, ...], who: str, step: int, problem, remember=True
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`check` and the block masses, (state, masses): in one pass over the state
        when the partition can ``summarise`` (block sums and negative values at once), in
        none when the plugin that made the state took that summary in its own pass and
        remembered it (``"summary"``, see :meth:`Problem.remember`); Σp is then the sum of
        the block masses. The masses are remembered for the state (read-only) unless
        ``remember`` is False."""
        expected = (*batch, *self.site_shape)
        if isinstance(state, np.ndarray) and state.shape == expected and state.dtype == self.dtype:
            checked, summary = state, problem.recall(state, "summary")
        else:  # wrong (raises), or converted to the run's dtype: other values than summarised
            checked, summary = (
                _check_array(state, expected, f"{who} at step {step}", self.dtype),
                None,
            )
        if summary is None:
            summarise = getattr(problem.partition, "summarise", None)
            summary = None if summarise is None else summarise(checked)
        if summary is None:  # two passes: the contract check, then the block sums
            where = f"{who} at step {step}"
            _check_normalised(checked, len(self.site_shape), where, self.tolerances)
            return checked, problem.block_masses(checked)
        masses, negatives = summary
        worst, finite = _mass_deviation(masses)
        if negatives or not finite or worst > self.tolerances.normalisation:
            _judge(checked, worst, negatives, finite, f"{who} at step {step}", self.tolerances)
        return checked, problem.remember_block_masses(checked, masses) if remember else masses

    def initial(self, states: Any, members: int, who: str) -> np.ndarray:
        """The initial states ``(members, *sites)`` checked and normalised."""
        from coarsekl.problem import check_image

        states = check_image(states, f"the initial states ({who})", self.site_shape)
        if states.shape != (members, *self.site_shape):
            raise PluginContractError(
                f"{who} returned shape {states.shape}, expected {(members, *self.site_shape)}"
            )
        site_axes = tuple(range(1, states.ndim))
        return (states / states.sum(axis=site_axes, keepdims=True)).astype(self.dtype, copy=False)

    def repeat(self, states: np.ndarray, schemes: int) -> np.ndarray:
        """``(member, *sites) -> (schemes, member, *sites)``, a new array."""
        return np.broadcast_to(states, (schemes, *states.shape)).copy()

    def writable_apart(self, batch: np.ndarray, others) -> bool:
        """True when ``batch`` may be written into: writeable, one contiguous block of its
        own (no broadcast or overlapping strides), sharing no memory with ``others``."""
        # (writeable last: numpy warns when it is read on the result of broadcast_arrays)
        return (
            batch.flags.c_contiguous
            and not any(np.may_share_memory(batch, other) for other in others if other is not None)
            and batch.flags.writeable
        )

    def replace_schemes(
        self, batch: np.ndarray, replacements: dict[int, np.ndarray], in_place: bool
    ) -> np.ndarray:
        """``batch`` (scheme, member, *sites) with ``replacements[i]`` as scheme i: written
        into ``batch`` itself when ``in_place`` (see :meth:`writable_apart`), else into a
        copy; a batch of one scheme is a view of its replacement (no copy)."""
        if len(replacements) == len(batch) == 1:
            return replacements[0][None]
        if not in_place:
            batch = batch.copy()
        for scheme, state in replacements.items():
            batch[scheme] = state
        return batch

    def assemble(self, batch: tuple[int, ...], pieces) -> np.ndarray:
        """One batch from ``(index, state)`` pieces that tile it."""
        whole = np.empty((*batch, *self.site_shape), dtype=self.dtype)
        for index, state in pieces:
            whole[index] = state
        return whole

    def snapshot_variables(self) -> dict[str, SnapshotVariable]:
        return {
            "state": SnapshotVariable(self.site_dims, self.site_shape, self.dtype, STATE_ATTRIBUTES)
        }

    def snapshot_values(self, state: np.ndarray) -> dict[str, np.ndarray]:
        return {"state": state}


@attrs.frozen
class EnsembleStates:
    """Weighted particle ensembles: ``particles`` particles in R^``dim`` per member."""

    particles: int
    dim: int
    dtype: np.dtype = attrs.field(converter=np.dtype)
    site_shape: tuple[int, ...] = attrs.field(init=False)
    site_dims: tuple[str, ...] = ("particle",)

    @site_shape.default
    def _site_shape(self) -> tuple[int, ...]:
        return (self.particles,)

    @property
    def state_bytes(self) -> int:
        return self.particles * (self.dim * self.dtype.itemsize + 8)

    def check(self, state: Any, batch: tuple[int, ...], who: str, step: int) -> Ensemble:
        where = f"{who} at step {step}"
        if not isinstance(state, Ensemble):
            raise PluginContractError(
                f"{where} returned a {type(state).__name__}, expected a coarsekl.Ensemble "
                "(this run's states are particle ensembles)"
            )
        expected = (*batch, self.particles, self.dim)
        if state.positions.shape != expected:
            raise PluginContractError(
                f"{where} returned positions of shape {state.positions.shape}, expected {expected}"
            )
        if state.positions.dtype.kind != "f" or state.weights.dtype.kind != "f":
            raise PluginContractError(f"{where} returned non-float positions or weights")
        if not 0 <= state.alpha_bar <= 1:
            raise PluginContractError(f"{where} returned signal level ᾱ = {state.alpha_bar:g}")
        positions = state.positions
        if positions.dtype != self.dtype:
            positions = positions.astype(self.dtype)
        if not np.isfinite(positions).all():
            raise PluginContractError(f"{where} returned NaN or inf particle positions")
        weights = state.weights.astype(np.float64, copy=False)
        _check_normalised(weights, 1, f"{where} (weights)", Tolerances.of(np.float64))
        if positions is state.positions and weights is state.weights:
            return state
        return state.replace(positions=positions, weights=weights)

    def check_and_sum(
        self, state: Any, batch: tuple[int, ...], who: str, step: int, problem, remember=True
    ) -> tuple[Ensemble, np.ndarray]:
        """:meth:`check` and the block masses: (state, masses) (always remembered)."""
        state = self.check(state, batch, who, step)
        return state, problem.block_masses(state)

    def initial(self, states: Any, members: int, who: str) -> Ensemble:
        """The initial ensembles (positions ``(members, N, d)``), weights normalised."""
        if isinstance(states, Ensemble) and states.weights.dtype.kind in "biuf":
            weights = states.weights.astype(np.float64)
            totals = weights.sum(axis=-1, keepdims=True)
            if np.isfinite(totals).all() and (weights >= 0).all() and (totals > 0).all():
                states = states.replace(weights=weights / totals)
            else:
                raise PluginContractError(
                    f"{who} returned weights that are negative, NaN or all zero"
                )
        return self.check(states, (members,), who, 0)

    def repeat(self, states: Ensemble, schemes: int) -> Ensemble:
        return states.broadcast_to((schemes,))

    def writable_apart(self, batch: Ensemble, others) -> bool:
        return False  # ensembles are never written in place

    def replace_schemes(
        self, batch: Ensemble, replacements: dict[int, Ensemble], in_place: bool
    ) -> Ensemble:
        """``batch`` with ``replacements[i]`` as scheme i (always a new batch)."""
        schemes = [replacements.get(i, batch[i]) for i in range(batch.shape[0])]
        return schemes[0][None] if len(schemes) == 1 else stack_ensembles(schemes)

    def assemble(self, batch: tuple[int, ...], pieces) -> Ensemble:
        """One batch from ``(index, ensemble)`` pieces that tile it."""
        pieces = list(pieces)
        first = pieces[0][1]

        def empty(array: np.ndarray) -> np.ndarray:
            return np.empty((*batch, *array.shape[2:]), dtype=array.dtype)

        positions, weights = empty(first.positions), empty(first.weights)
        carried = {name: empty(array) for name, array in first.carried.items()}
        for index, state in pieces:
            positions[index], weights[index] = state.positions, state.weights
            for name, array in state.carried.items():
                carried[name][index] = array
        return Ensemble(positions, weights, first.alpha_bar, carried)

    def snapshot_variables(self) -> dict[str, SnapshotVariable]:
        return {
            "position": SnapshotVariable(
                ("particle", "dim"),
                (self.particles, self.dim),
                self.dtype,
                {"long_name": "particle position x", "units": "data units"},
            ),
            "weight": SnapshotVariable(
                ("particle",),
                (self.particles,),
                np.dtype(np.float64),
                {"long_name": "particle weight w (Σ = 1 per member)", "units": "1"},
            ),
        }

    def snapshot_values(self, state: Ensemble) -> dict[str, np.ndarray]:
        return {"position": state.positions, "weight": state.weights}
