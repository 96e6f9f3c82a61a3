"""The runner: advance every scheme and member as one batch and record the trajectory.

State layout: ``(scheme, member, *site_shape)``. The kernel draws its noise per member
(shape ``(member, *site_shape)``), so every scheme sees the same numbers (common random
numbers) and the differences between schemes are due to the projection alone.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from coarsekl._version import __version__
from coarsekl.config import ComponentConfig, ExperimentConfig, load_config
from coarsekl.errors import ConfigError, PluginContractError
from coarsekl.interfaces import Kernel, Metric, Projector
from coarsekl.io import atomic_path, open_trajectory, save_trajectory
from coarsekl.manager import get_registry
from coarsekl.numerics import compiled_enabled
from coarsekl.problem import Problem, check_image
from coarsekl.random import MemberRandom, Purpose, generator_for
from coarsekl.registry import Registry
from coarsekl.schedules import Step

__all__ = ["BuiltExperiment", "Engine", "build_experiment", "default_threads", "run"]

THREADS_ENV = "COARSEKL_THREADS"
GROUP_BYTES = 1 << 20  # members per group: about this many bytes of state (cache-sized)
MIN_TILE_BYTES = 1 << 19  # smaller tiles are not worth a thread of their own
COMPRESSION_LEVEL = 4  # zlib level of the netCDF output
STATE_ATTRIBUTES = {"long_name": "state p (probability per pixel)", "units": "1"}
RESERVED_NAMES = {
    "state", "block_mass", "leak", "clipped", "data", "delta", "reference_mass",
    "reference_value", "scheme", "member", "step", "block", "snapshot", "y", "x",
}  # fmt: skip


@attrs.frozen(eq=False)
class BuiltExperiment:
    """A config with every component built and the problem set up."""

    config: ExperimentConfig
    problem: Problem
    kernel: Kernel
    projector: Projector | None
    metrics: dict[str, Metric]
    initial_states: np.ndarray  # (member, *site_shape), normalised
    providers: dict[str, str]  # "kernel geometric-mean" -> provider text

    def tolerance(self, index: int) -> float | None:
        if self.projector is None:
            return None
        return self.projector.tolerance(Step(max(index, 1), self.config.steps))

    def step_info(self, index: int) -> Step:
        return Step(index, self.config.steps, self.tolerance(index))


def build_experiment(config: ExperimentConfig, registry: Registry) -> BuiltExperiment:
    """Build every component of ``config`` and check it can run (fails fast, clear errors)."""
    providers: dict[str, str] = {}

    def build(kind: str, component, **context):
        registered = registry.lookup(kind, component.kind)
        providers[f"{kind} {component.kind}"] = str(registered.provider)
        return registry.build(kind, component.kind, component.params, **context)

    data_source = build("data", config.data)
    image = check_image(
        data_source.image(generator_for(config.seed, Purpose.DATA)), "the data image"
    )
    partition = build("partition", config.partition, shape=image.shape)
    quantity = build("quantity", config.quantity)
    problem = Problem(partition=partition, quantity=quantity, data=image)
    kernel = build("kernel", config.kernel)
    projector = build("projector", config.projector) if config.projector else None
    metrics = {}
    for name in config.metric_names:
        if name in RESERVED_NAMES:
            raise ConfigError(f"a metric may not be called {name!r}: the name is reserved")
        metrics[name] = build("metric", ComponentConfig(kind=name))
    initial = build("initial", config.initial)
    states = check_image(
        initial.states(
            problem, MemberRandom.from_seed(config.seed, Purpose.INITIAL, config.members)
        ),
        f"the initial states ([initial] {config.initial.kind!r})",
        partition.site_shape,
    )
    if states.shape != (config.members, *partition.site_shape):
        raise PluginContractError(
            f"[initial] {config.initial.kind!r} returned shape {states.shape}, expected "
            f"{(config.members, *partition.site_shape)}"
        )
    site_axes = tuple(range(1, states.ndim))
    states = states / states.sum(axis=site_axes, keepdims=True)
    experiment = BuiltExperiment(config, problem, kernel, projector, metrics, states, providers)
    for index in range(1, config.steps + 1):  # an infeasible δ(t) fails before the run
        tolerance = experiment.tolerance(index)
        if tolerance is not None:
            problem.bounds(tolerance)
    return experiment


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
    if not isinstance(state, np.ndarray) or state.shape != expected_shape:
        shape = getattr(state, "shape", type(state).__name__)
        raise PluginContractError(f"{where} returned shape {shape}, expected {expected_shape}")
    if state.dtype.kind != "f":
        raise PluginContractError(f"{where} returned dtype {state.dtype}, expected floats")
    if state.dtype != dtype:
        state = state.astype(dtype)
    totals, smallest, finite = _summary(state, site_ndim)
    if not finite:
        raise PluginContractError(f"{where} returned NaN or inf values")
    if smallest < 0:
        raise PluginContractError(f"{where} returned negative values (min {smallest:.3g})")
    worst = float(np.abs(totals - 1).max())
    if worst > _TOLERANCES[np.dtype(dtype)].normalisation:
        raise PluginContractError(
            f"{where} returned a state that is not normalised (|Σp − 1| up to {worst:.3g})"
        )
    return state


def _summary(state: np.ndarray, site_ndim: int) -> tuple[np.ndarray, float, bool]:
    """(each state's total, the smallest value, whether all are finite) in one pass."""
    if compiled_enabled():
        from coarsekl._compiled import state_summary

        sites = math.prod(state.shape[state.ndim - site_ndim :])
        totals, negatives = state_summary(state.reshape(-1, sites))
        finite = bool(np.isfinite(totals).all())  # a NaN or inf anywhere makes its total so
        return totals, (state.min() if negatives and finite else 0.0), finite
    totals = state.sum(axis=tuple(range(-site_ndim, 0)), dtype=np.float64)
    finite = bool(np.isfinite(totals).all())
    return totals, (state.min() if finite else np.nan), finite


def run(
    config: ExperimentConfig | str | Any,
    *,
    plugin_manager=None,
    registry: Registry | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    output: str | Path | None = None,
    threads: int | None = None,
):
    """Run an experiment and return its trajectory as an ``xarray.Dataset``.

    ``config`` is an ExperimentConfig, a mapping, a TOML path or a named experiment.
    ``output`` (optional) is a netCDF path: snapshots stream into it as the run goes (memory
    does not grow with their number), the file appears atomically when the run is complete,
    and the returned dataset reads the snapshots lazily from it. ``threads`` (default: the
    CPUs available, or ``COARSEKL_THREADS``) work on groups of members in parallel.
    ``callback`` (optional) is called after every step with ``{"step", "state",
    "proposal"}``: the whole batch after the step and the kernel's output before projection.
    """
    registry = registry or get_registry(plugin_manager)
    config = load_config(config, registry=registry)
    experiment = build_experiment(config, registry)
    engine = Engine(experiment, threads=threads, keep_proposals=callback is not None)
    steps = range(1, config.steps + 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=config.name, unit="step", delay=0.5, leave=False)
    with contextlib.ExitStack() as stack:
        stack.callback(engine.close)
        if output is None:
            snapshots = _MemorySnapshots(experiment)
        else:
            temporary = stack.enter_context(atomic_path(output))
            snapshots = stack.enter_context(_StreamedSnapshots(experiment, temporary))
        recorder = _Recorder(experiment, snapshots)
        engine.start(recorder)
        for index in steps:
            engine.advance(index)
            if callback is not None:
                callback({"step": index, "state": engine.state(), "proposal": engine.proposal()})
        dataset = recorder.dataset()
        if output is None:
            return dataset
        snapshots.close()
        save_trajectory(dataset, temporary, mode="a")
    return open_trajectory(output, lazy=True)


def default_threads() -> int:
    """``COARSEKL_THREADS`` if set, else the number of CPUs this process may use."""
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Engine:
    """Advances the whole batch ``(scheme, member, *site_shape)`` one step at a time.

    Members are independent (unless the kernel sets ``couples_members``), and so are the
    schemes, so the batch is cut into tiles (a range of schemes × a group of members)
    small enough to stay in the CPU cache through kernel, projection, block masses and
    metrics; a pool of threads advances the tiles (the compiled kernels and numpy release
    the GIL). Members are grouped first; schemes are split only when there are fewer
    member groups than threads. A tile of later schemes draws from copies of its members'
    generators, so all schemes still see the same numbers. Results do not depend on the
    tiling or the number of threads.
    """

    def __init__(
        self, experiment: BuiltExperiment, *, threads: int | None = None, keep_proposals=False
    ) -> None:
        config, problem = experiment.config, experiment.problem
        self.experiment = experiment
        self.dtype = np.dtype(config.dtype)
        self.site_ndim = len(problem.partition.site_shape)
        threads = default_threads() if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        n_schemes, members = len(config.schemes), config.members
        scheme_bytes = math.prod(problem.partition.site_shape) * self.dtype.itemsize
        member_bytes = n_schemes * scheme_bytes
        coupled = getattr(experiment.kernel, "couples_members", False)
        if coupled:
            size = members
        else:
            in_cache = GROUP_BYTES // member_bytes
            # Spread the members over the threads, but give each tile enough work to pay
            # for its Python overhead and the hand-over of the GIL between threads.
            spread = max(-(-members // threads), -(-MIN_TILE_BYTES // member_bytes))
            size = max(1, min(in_cache, spread))
        groups = [slice(a, min(a + size, members)) for a in range(0, members, size)]
        worth_splitting = size * scheme_bytes >= MIN_TILE_BYTES
        if not coupled and len(groups) < threads and n_schemes > 1 and worth_splitting:
            parts = [slice(i, i + 1) for i in range(n_schemes)]
        else:
            parts = [slice(0, n_schemes)]
        self.tiles = [(part, group) for group in groups for part in parts]
        rng = MemberRandom.from_seed(config.seed, Purpose.KERNEL, members)
        self.rngs = {(group.start, group.stop): rng.subset(group) for group in groups}
        workers = min(threads, len(self.tiles))
        self.pool = ThreadPoolExecutor(workers, "coarsekl") if workers > 1 else None
        initial = experiment.initial_states.astype(self.dtype)
        self.states = [
            np.broadcast_to(initial[group], (part.stop - part.start, *initial[group].shape)).copy()
            for part, group in self.tiles
        ]
        self.masses = [problem.partition.block_sums(state) for state in self.states]
        self.proposals: list[np.ndarray | None] | None = (
            [None] * len(self.tiles) if keep_proposals else None
        )
        projected = [i for i, s in enumerate(config.schemes) if s == "proj"]
        self.projected = [
            [i - part.start for i in projected if part.start <= i < part.stop]
            for part, _ in self.tiles
        ]
        provider = experiment.providers[f"kernel {config.kernel.kind}"]
        self.kernel_name = f"kernel {config.kernel.kind!r} ({provider})"
        self.tolerances = _TOLERANCES[self.dtype]
        self.recorder: _Recorder | None = None

    def start(self, recorder: _Recorder) -> None:
        """Record step 0 (the initial states)."""
        self.recorder = recorder
        step = self.experiment.step_info(0)
        for tile, state, masses in zip(self.tiles, self.states, self.masses, strict=True):
            recorder.record(0, tile, step, state, masses, state, masses, None)
        recorder.snapshot(0, self.tiles, self.states)

    def advance(self, index: int) -> None:
        """Step ``index``: kernel, checks, projection, block masses, metrics, snapshots."""
        step = self.experiment.step_info(index)
        rngs = [self._random_for(tile) for tile in self.tiles]  # copies made before any draw
        tasks = range(len(self.tiles))
        if self.pool is None:
            for task in tasks:
                self._advance_tile(task, index, step, rngs[task])
        else:
            work = self.pool.map(
                lambda task: self._advance_tile(task, index, step, rngs[task]), tasks
            )
            for _ in work:
                pass
        self.recorder.snapshot(index, self.tiles, self.states)

    def _random_for(self, tile: tuple[slice, slice]) -> MemberRandom:
        part, group = tile
        rng = self.rngs[group.start, group.stop]
        return rng if part.start == 0 else rng.copy()

    def _advance_tile(self, task: int, index: int, step: Step, rng: MemberRandom) -> None:
        experiment, tile = self.experiment, self.tiles[task]
        problem, config = experiment.problem, experiment.config
        state, masses = self.states[task], self.masses[task]
        proposal = experiment.kernel.step(state, problem, step, rng)
        proposal = check_state(
            proposal, state.shape, self.site_ndim, self.kernel_name, index, self.dtype
        )
        proposal_masses = problem.block_masses(proposal)
        if experiment.kernel.block_preserving:
            drift = float(np.max(np.abs(proposal_masses - masses)))
            if drift > self.tolerances.block_mass:
                raise PluginContractError(
                    f"{self.kernel_name} declares block_preserving but changed a block mass by "
                    f"{drift:.3g} at step {index}; fix the kernel or set block_preserving = False"
                )
        clipped = np.zeros(masses.shape, dtype=bool)
        projected = self.projected[task]
        if projected:
            schemes = []
            who = f"projector {config.projector.kind!r}"
            for i in range(state.shape[0]):
                scheme = proposal[i]
                if i not in projected:
                    schemes.append(scheme)
                    continue
                problem.remember_block_masses(scheme, proposal_masses[i])  # the projector's
                projection = experiment.projector.project(scheme, problem, step)
                schemes.append(
                    check_state(
                        projection.state, proposal.shape[1:], self.site_ndim, who, index, self.dtype
                    )
                )
                clipped[i] = projection.clipped
            # One scheme: a view of the projection (no copy); several: one new batch.
            new_state = schemes[0][None] if len(schemes) == 1 else np.stack(schemes)
            new_masses = problem.block_masses(new_state)
        else:
            new_state, new_masses = proposal, proposal_masses
        self.states[task], self.masses[task] = new_state, new_masses
        if self.proposals is not None:
            self.proposals[task] = proposal
        self.recorder.record(
            index, tile, step, new_state, new_masses, proposal, proposal_masses, clipped
        )

    def state(self) -> np.ndarray:
        """The whole batch ``(scheme, member, *site_shape)`` (a new array)."""
        return self._assemble(self.states)

    def proposal(self) -> np.ndarray:
        """The kernel's output of the last step, before projection (a new array)."""
        return self._assemble(self.proposals)

    def _assemble(self, tiles: list[np.ndarray]) -> np.ndarray:
        config = self.experiment.config
        whole = np.empty(
            (len(config.schemes), config.members, *self.experiment.problem.partition.site_shape),
            dtype=self.dtype,
        )
        for (part, group), values in zip(self.tiles, tiles, strict=True):
            whole[part, group] = values
        return whole

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@attrs.frozen
class _Tolerances:
    normalisation: float  # |Σp − 1| accepted from a plugin
    block_mass: float  # block-mass drift accepted from a block-preserving kernel


_TOLERANCES = {
    np.dtype(np.float64): _Tolerances(normalisation=1e-8, block_mass=1e-9),
    np.dtype(np.float32): _Tolerances(normalisation=1e-4, block_mass=1e-5),
}


class _MemorySnapshots:
    """Snapshots kept in one preallocated array (the default without an output file)."""

    def __init__(self, experiment: BuiltExperiment) -> None:
        config = experiment.config
        self.index = {step: i for i, step in enumerate(config.snapshot_steps)}
        self.array = np.zeros(
            (
                len(config.schemes),
                config.members,
                len(self.index),
                *experiment.problem.partition.site_shape,
            ),
            dtype=config.dtype,
        )

    def write(self, step: int, tile: tuple[slice, slice], state: np.ndarray) -> None:
        schemes, members = tile
        self.array[schemes, members, self.index[step]] = state


class _StreamedSnapshots:
    """Snapshots written into a netCDF4 file as they come (one chunk per scheme, member
    and snapshot); the rest of the trajectory is appended at the end of the run."""

    def __init__(self, experiment: BuiltExperiment, path: Path) -> None:
        import netCDF4

        config, partition = experiment.config, experiment.problem.partition
        self.index = {step: i for i, step in enumerate(config.snapshot_steps)}
        self.file = netCDF4.Dataset(path, "w", format="NETCDF4")
        sizes = {
            "scheme": len(config.schemes),
            "member": config.members,
            "snapshot": len(self.index),
            **dict(zip(partition.site_dims, partition.site_shape, strict=True)),
        }
        for name, size in sizes.items():
            self.file.createDimension(name, size)
        self.variable = self.file.createVariable(
            "state",
            np.dtype(config.dtype),
            tuple(sizes),
            zlib=True,
            complevel=COMPRESSION_LEVEL,
            chunksizes=(1, 1, 1, *partition.site_shape),
        )
        self.variable.setncatts(STATE_ATTRIBUTES)
        self.array = None

    def write(self, step: int, tile: tuple[slice, slice], state: np.ndarray) -> None:
        schemes, members = tile
        self.variable[schemes, members, self.index[step]] = state

    def __enter__(self) -> _StreamedSnapshots:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.file.isopen():
            self.file.close()


class _Recorder:
    """Preallocated arrays for every recorded variable; ``dataset()`` labels them."""

    def __init__(self, experiment: BuiltExperiment, snapshots) -> None:
        config, partition = experiment.config, experiment.problem.partition
        self.experiment = experiment
        self.snapshots = snapshots
        shape = (len(config.schemes), config.members, config.steps + 1)
        n_blocks = partition.n_blocks
        self.arrays: dict[str, np.ndarray] = {
            "block_mass": np.zeros((*shape, n_blocks)),
            "leak": np.zeros(shape),
            "clipped": np.zeros((*shape, n_blocks), dtype=bool),
        }
        self.before = [n for n, m in experiment.metrics.items() if m.record_before_projection]
        for name, metric in experiment.metrics.items():
            full = (*shape, n_blocks) if metric.per_block else shape
            self.arrays[name] = np.zeros(full)
            if name in self.before:
                self.arrays[f"{name}_pre"] = np.zeros(full)
        self.tolerances = np.full(config.steps + 1, np.nan)

    def record(self, index, tile, step, state, masses, proposal, proposal_masses, clipped) -> None:
        """Record step ``index`` for ``tile`` = (schemes, members), two slices."""
        arrays, problem = self.arrays, self.experiment.problem
        schemes, members = tile
        arrays["block_mass"][schemes, members, index] = masses
        previous = arrays["block_mass"][schemes, members, max(index - 1, 0)]
        arrays["leak"][schemes, members, index] = np.abs(proposal_masses - previous).sum(axis=-1)
        if clipped is not None:
            arrays["clipped"][schemes, members, index] = clipped
        for name, metric in self.experiment.metrics.items():
            value = self._evaluate(name, metric, state, problem, step)
            arrays[name][schemes, members, index] = value
            if name in self.before:
                value = self._evaluate(name, metric, proposal, problem, step)
                arrays[f"{name}_pre"][schemes, members, index] = value
        if step.tolerance is not None:
            self.tolerances[index] = step.tolerance

    def snapshot(self, index: int, tiles: list, states: list[np.ndarray]) -> None:
        """Keep the state of step ``index`` if it is a snapshot step, tile by tile."""
        if index in self.snapshots.index:
            for tile, state in zip(tiles, states, strict=True):
                self.snapshots.write(index, tile, state)

    def _evaluate(self, name, metric, state, problem, step) -> np.ndarray:
        value = np.asarray(metric.compute(state, problem, step))
        expected = state.shape[:2] + ((problem.partition.n_blocks,) if metric.per_block else ())
        if value.shape != expected:
            raise PluginContractError(
                f"metric {name!r} returned shape {value.shape} at step {step.index}, "
                f"expected {expected}"
            )
        if np.isnan(value).any():
            raise PluginContractError(f"metric {name!r} returned NaN at step {step.index}")
        return value

    def dataset(self):
        import xarray as xr

        import coarsekl.accessor  # noqa: F401  (registers ds.coarsekl)

        experiment = self.experiment
        config, problem = experiment.config, experiment.problem
        partition, quantity = problem.partition, problem.quantity
        site_dims = tuple(partition.site_dims)
        base = ("scheme", "member", "step")
        coords = {
            "scheme": ("scheme", list(config.schemes), {"long_name": "sampling scheme"}),
            "member": (
                "member",
                np.arange(config.members),
                {"long_name": "ensemble member", "units": "1"},
            ),
            "step": (
                "step",
                np.arange(config.steps + 1),
                {"long_name": "reverse step (0: initial state)", "units": "1"},
            ),
            "block": (
                "block",
                np.arange(partition.n_blocks),
                {"long_name": "block index", "units": "1"},
            ),
            "snapshot": (
                "snapshot",
                np.array(config.snapshot_steps),
                {"long_name": "step of the snapshot", "units": "1"},
            ),
        }
        site_kind = getattr(partition, "site_kind", "pixel")  # what a site is, for labels
        for dim, size in zip(site_dims, partition.site_shape, strict=True):
            coords[dim] = (
                dim,
                np.arange(size),
                {"long_name": f"{site_kind} {dim}", "units": site_kind},
            )
        for name, (values, attributes) in partition.block_coords().items():
            coords[name] = ("block", values, attributes)
        arrays = self.arrays
        data_vars = {
            "data": (
                site_dims,
                problem.data,
                {"long_name": "data image x", "units": "data intensity"},
            ),
            "reference_mass": (
                "block",
                problem.reference_masses,
                {"long_name": "reference block mass w_ref", "units": "1"},
            ),
            "reference_value": (
                "block",
                problem.reference_values,
                {"long_name": f"reference {quantity.long_name}", "units": quantity.units},
            ),
            "delta": (
                "step",
                self.tolerances,
                {
                    "long_name": "tolerance δ of the admissible set (NaN: none)",
                    "units": quantity.units,
                },
            ),
            "block_mass": (
                (*base, "block"),
                arrays["block_mass"],
                {"long_name": "block mass w", "units": "1"},
            ),
            "leak": (
                base,
                arrays["leak"],
                {"long_name": "block-mass leak of the kernel ‖w(K_t p) − w(p)‖₁", "units": "1"},
            ),
            "clipped": (
                (*base, "block"),
                arrays["clipped"],
                {"long_name": "block mass clipped to a bound by the projection"},
            ),
        }
        if self.snapshots.array is not None:  # else the state streams into the output file
            data_vars["state"] = (
                ("scheme", "member", "snapshot", *site_dims),
                self.snapshots.array,
                STATE_ATTRIBUTES,
            )
        for name, metric in experiment.metrics.items():
            dims = (*base, "block") if metric.per_block else base
            attributes = {"long_name": metric.long_name, "units": metric.units}
            data_vars[name] = (dims, arrays[name], attributes)
            if name in self.before:
                data_vars[f"{name}_pre"] = (
                    dims,
                    arrays[f"{name}_pre"],
                    {**attributes, "long_name": f"{metric.long_name}, before the projection"},
                )
        plugins = "; ".join(f"{k}: {v}" for k, v in sorted(experiment.providers.items()))
        attributes = {
            "title": f"coarsekl trajectory: {config.name}",
            "experiment": config.name,
            "coarsekl_version": __version__,
            "plugins": plugins,
            "seed": config.seed,
            "config": config.to_toml(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        return xr.Dataset(data_vars, coords=coords, attrs=attributes)
