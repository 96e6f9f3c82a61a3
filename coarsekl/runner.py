"""The runner: advance every scheme and member as one batch and record the trajectory.

State layout: ``(scheme, member, *site_shape)`` arrays, or particle ensembles with
positions ``(scheme, member, particle, dim)`` (see :mod:`coarsekl.states`). The kernel
draws its noise per member, so every scheme sees the same numbers (common random numbers)
and the differences between schemes are due to the projection alone.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import sys
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
from coarsekl.io import atomic_path, compression, open_trajectory, save_trajectory
from coarsekl.manager import get_registry
from coarsekl.numerics import (
    RETAINED_BYTES,
    compilation_notice,
    default_threads,
    engine_worker,
    release_recycled,
    thread_budget,
)
from coarsekl.problem import Problem, check_image, is_distribution
from coarsekl.random import MemberRandom, Purpose, generator_for
from coarsekl.registry import STATE_KINDS, STATE_NAMES, Registry
from coarsekl.schedules import Step
from coarsekl.states import (
    DistributionStates,
    EnsembleStates,
    Tolerances,
    check_state,
)

__all__ = [
    "BuiltExperiment",
    "Engine",
    "build_experiment",
    "check_state",
    "default_threads",
    "run",
]

GROUP_BYTES = 1 << 20  # members per group: about this many bytes of state (cache-sized)
MIN_TILE_BYTES = 1 << 19  # smaller tiles are not worth a thread of their own
MAX_CACHED_INDEX = 1024  # dimension coordinates up to this length share their index
RESERVED_NAMES = {
    "state", "block_mass", "leak", "clipped", "data", "delta", "reference_mass",
    "reference_value", "scheme", "member", "step", "block", "snapshot", "y", "x",
    "position", "weight", "alpha_bar", "target_mass", "particle", "dim",
}  # fmt: skip


@attrs.frozen(eq=False)
class BuiltExperiment:
    """A config with every component built and the problem set up."""

    config: ExperimentConfig
    problem: Problem
    kernel: Kernel
    projector: Projector | None
    metrics: dict[str, Metric]
    initial_states: Any  # (member, *site_shape) array or Ensemble, normalised, run's dtype
    providers: dict[str, str]  # "kernel geometric-mean" -> provider text
    states: DistributionStates | EnsembleStates  # how states are checked and recorded
    steps: tuple[Step, ...] = attrs.field(init=False)  # 0 (the initial state) … config.steps

    @steps.default
    def _steps(self) -> tuple[Step, ...]:
        plain = _plain_steps(self.config.steps)
        if self.projector is None:
            return plain
        return _steps_with(self.config.steps, tuple(map(self.projector.tolerance, plain[1:])))

    def tolerance(self, index: int) -> float | None:
        return self.steps[index].tolerance

    def step_info(self, index: int) -> Step:
        return self.steps[index]


@functools.lru_cache(maxsize=16)
def _plain_steps(total: int) -> tuple[Step, ...]:
    """Steps 0 … total without a tolerance (immutable: shared between runs)."""
    return tuple(Step(index, total) for index in range(total + 1))


@functools.lru_cache(maxsize=16)
def _steps_with(total: int, tolerances: tuple[float, ...]) -> tuple[Step, ...]:
    """Steps 0 … total, step i ≥ 1 with ``tolerances[i − 1]`` and step 0 with step 1's."""
    return tuple(Step(index, total, tolerances[max(index, 1) - 1]) for index in range(total + 1))


def build_experiment(config: ExperimentConfig, registry: Registry) -> BuiltExperiment:
    """Build every component of ``config`` and check it can run (fails fast, clear errors)."""
    providers: dict[str, str] = {}

    def build(kind: str, component, **context):
        registered = registry.lookup(kind, component.kind)
        providers[f"{kind} {component.kind}"] = str(registered.provider)
        supported = getattr(registered.component, "states", STATE_KINDS)
        if state_kind is not None and state_kind not in supported:
            raise ConfigError(
                f"{kind} {component.kind!r} works on {STATE_NAMES[supported[0]]}, but this "
                f"run's states are {STATE_NAMES[state_kind]} (set by [data] "
                f"{config.data.kind!r}); choose a {kind} for them (coarsekl plugins lists all)"
            )
        return registry.build(kind, component.kind, component.params, **context)

    state_kind = None  # the data decides it

    data_source = build("data", config.data)
    data, site_shape = _data(data_source, config)
    state_kind = "ensemble" if is_distribution(data) else "array"
    partition = build("partition", config.partition, shape=site_shape, data=data)
    quantity = build("quantity", config.quantity)
    problem = Problem(partition=partition, quantity=quantity, data=data)
    if problem.is_distribution:
        states = EnsembleStates(config.particles, data.dim, config.dtype)
    else:
        states = DistributionStates(partition.site_shape, partition.site_dims, config.dtype)
    kernel = build("kernel", config.kernel)
    projector = build("projector", config.projector) if config.projector else None
    metrics = {}
    for name in config.metric_names:
        if name in RESERVED_NAMES:
            raise ConfigError(f"a metric may not be called {name!r}: the name is reserved")
        metrics[name] = build("metric", ComponentConfig(kind=name))
    initial = build("initial", config.initial)
    raw = initial.states(
        problem, MemberRandom.from_seed(config.seed, Purpose.INITIAL, config.members)
    )
    initial_states = states.initial(raw, config.members, f"[initial] {config.initial.kind!r}")
    experiment = BuiltExperiment(
        config, problem, kernel, projector, metrics, initial_states, providers, states
    )
    for tolerance in {step.tolerance for step in experiment.steps} - {None}:
        problem.bounds(tolerance)  # an infeasible δ(t) fails before the run
    return experiment


def _data(data_source, config: ExperimentConfig) -> tuple[Any, tuple[int, ...]]:
    """The data (an image, or a distribution for particle ensembles) and the site shape."""
    rng = generator_for(config.seed, Purpose.DATA)
    who = f"[data] {config.data.kind!r}"
    if hasattr(data_source, "distribution"):
        if config.particles is None:
            raise ConfigError(
                f"{who} is a distribution to sample particles from: set the number of "
                "particles per member with the top-level key particles = N"
            )
        data = data_source.distribution(rng)
        dim = getattr(data, "dim", None)
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise PluginContractError(
                f"{who} returned a distribution without a positive integer 'dim'"
            )
        return data, (config.particles,)
    if not hasattr(data_source, "image"):
        raise PluginContractError(
            f"{who} provides neither image(rng) (a data image) nor distribution(rng)"
        )
    if config.particles is not None:
        raise ConfigError(
            f"particles = {config.particles} is set, but {who} gives a data image, not a "
            "distribution to sample particles from; remove 'particles'"
        )
    # (its values are checked once, where the problem is set up)
    image = check_image(data_source.image(rng), "the data image", values=False)
    return image, image.shape


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
    ``progress`` shows a progress bar, and a line on stderr when numba compiles the kernels
    (the first run on a machine).
    """
    registry = registry or get_registry(plugin_manager)
    config = load_config(config, registry=registry)
    with contextlib.ExitStack() as stack:
        if progress:  # (the kernels compile while the run is built and in its first step)
            stack.enter_context(compilation_notice(_write_beside_progress))
        experiment = build_experiment(config, registry)
        engine = Engine(experiment, threads=threads, keep_proposals=callback is not None)
        stack.callback(engine.close)
        steps = range(1, config.steps + 1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=config.name, unit="step", delay=0.5, leave=False)
        if engine.pool is not None:  # the engine's threads share the cores: BLAS gets one each
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
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


def _write_beside_progress(message: str) -> None:
    """Write a line to stderr without breaking a progress bar that is showing."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


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
        self.layout = experiment.states
        threads = default_threads() if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        n_schemes, members = len(config.schemes), config.members
        scheme_bytes = self.layout.state_bytes
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
        rngs = {(group.start, group.stop): rng.subset(group) for group in groups}
        self.tile_rngs = [rngs[group.start, group.stop] for _, group in self.tiles]
        self.draws_from_copies = any(part.start != 0 for part, _ in self.tiles)
        # The projector's options for each tile, in place or not; a projector that draws
        # gets its members' generators (only the one 'proj' scheme draws: no copies needed).
        self.project_copy_options = [{} for _ in self.tiles]
        if getattr(experiment.projector, "uses_random", False):
            rng = MemberRandom.from_seed(config.seed, Purpose.PROJECTOR, members)
            rngs = {(group.start, group.stop): rng.subset(group) for group in groups}
            self.project_copy_options = [{"rng": rngs[g.start, g.stop]} for _, g in self.tiles]
        in_place = getattr(experiment.projector, "projects_in_place", False)
        self.project_options = [
            {**options, "in_place": True} if in_place else options
            for options in self.project_copy_options
        ]
        workers = min(threads, len(self.tiles))
        self.pool = ThreadPoolExecutor(workers, "coarsekl") if workers > 1 else None
        initial = experiment.initial_states
        self.states = [
            self.layout.repeat(initial[group], part.stop - part.start) for part, group in self.tiles
        ]
        # Parallel loops only where no pool shares the cores: numba's OpenMP threads keep
        # spinning for some milliseconds after a loop and would slow the pool's workers.
        self.loop_threads = threads if self.pool is None else 1
        self.loop_budget = thread_budget(self.loop_threads)  # entered every step
        with self.loop_budget:
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
        self.projector_name = f"projector {config.projector.kind!r}" if config.projector else ""
        self.block_preserving = experiment.kernel.block_preserving
        self.tolerances = Tolerances.of(config.dtype)
        self.recorder: _Recorder | None = None

    def start(self, recorder: _Recorder) -> None:
        """Record step 0 (the initial states)."""
        self.recorder = recorder
        step = self.experiment.steps[0]
        with self.loop_budget:
            for tile, state, masses in zip(self.tiles, self.states, self.masses, strict=True):
                schemes, members = tile
                recorder.masses_before[schemes, members, 0] = masses
                recorder.arrays["block_mass"][schemes, members, 0] = masses
                recorder.record_before(0, tile, step, state)
                recorder.record(0, tile, step, state)
        recorder.snapshot(0, self.tiles, self.states)

    def advance(self, index: int) -> None:
        """Step ``index``: kernel, checks, projection, block masses, metrics, snapshots."""
        step = self.experiment.steps[index]
        # (copies of generators are made before any tile draws)
        rngs = self._rngs_for_tiles() if self.draws_from_copies else self.tile_rngs
        if self.pool is None:
            with self.loop_budget:  # parallel loops in the compiled kernels
                for task, rng in enumerate(rngs):
                    self._advance_tile(task, index, step, rng)
        else:

            def advance_tile(task: int) -> None:
                with engine_worker():
                    self._advance_tile(task, index, step, rngs[task])

            for _ in self.pool.map(advance_tile, range(len(self.tiles))):
                pass
        if index in self.recorder.snapshots.index:
            self.recorder.snapshot(index, self.tiles, self.states)

    def _rngs_for_tiles(self) -> list[MemberRandom]:
        """Each tile's kernel generators: a tile of later schemes draws from copies of its
        members' generators (made before the first tile draws), so all schemes see the same
        numbers."""
        return [
            rng if part.start == 0 else rng.copy()
            for (part, _), rng in zip(self.tiles, self.tile_rngs, strict=True)
        ]

    def _advance_tile(self, task: int, index: int, step: Step, rng: MemberRandom) -> None:
        experiment, tile, recorder = self.experiment, self.tiles[task], self.recorder
        problem, layout = experiment.problem, self.layout
        state = self.states[task]
        batch = state.shape[:2]
        proposal = experiment.kernel.step(state, problem, step, rng)
        # (the proposal's masses are remembered where something reads them: metrics before
        # the projection, or the proposal is the new state)
        proposal, proposal_masses = layout.check_and_sum(
            proposal, batch, self.kernel_name, index, problem, remember=False
        )
        if self.block_preserving:
            drift = float(np.max(np.abs(proposal_masses - self.masses[task])))
            if drift > self.tolerances.block_mass:
                raise PluginContractError(
                    f"{self.kernel_name} declares block_preserving but changed a block mass by "
                    f"{drift:.3g} at step {index}; fix the kernel or set block_preserving = False"
                )
        schemes, members = tile
        recorder.masses_before[schemes, members, index] = proposal_masses
        if recorder.per_step_before:
            problem.remember_block_masses(proposal, proposal_masses)
            recorder.record_before(index, tile, step, proposal)
        if self.proposals is not None:
            self.proposals[task] = proposal
        if self.projected[task]:
            new_masses = proposal_masses.copy()  # (one contiguous array, for the compiled code)
            clipped = recorder.arrays["clipped"][schemes, members, index]  # (written into)
            new_state = self._project(task, index, step, proposal, new_masses, clipped)
        else:
            new_state, new_masses = proposal, proposal_masses
        recorder.arrays["block_mass"][schemes, members, index] = new_masses
        new_masses = problem.remember_block_masses(new_state, new_masses)
        self.states[task], self.masses[task] = new_state, new_masses
        if new_state is not state:  # (a kernel may return its input unchanged)
            problem.forget(state)  # its logs, as large as the state, go before new ones come
        recorder.record(index, tile, step, new_state)

    def _project(self, task: int, index: int, step: Step, proposal, masses, clipped):
        """Project the 'proj' schemes of a tile's proposal; returns the new batch and
        writes the projected schemes' block masses into ``masses`` and the projector's
        clipped flags into ``clipped`` (both (scheme, member, K))."""
        experiment, problem = self.experiment, self.experiment.problem
        # The proposal itself becomes the new batch where nothing else needs it: no callback
        # keeps it, and it holds none of the previous states or the data. A projector that
        # can then writes its result into it.
        reuse = self.proposals is None and self.layout.writable_apart(
            proposal, (self.states[task], problem.data_state)
        )
        if reuse:
            problem.forget(proposal)  # what plugins derived from it will no longer hold
        options = self.project_options[task] if reuse else self.project_copy_options[task]
        projected = {}
        for i in self.projected[task]:
            scheme = proposal[i]
            problem.remember_block_masses(scheme, masses[i])  # for the projector
            projection = experiment.projector.project(scheme, problem, step, **options)
            state, masses[i] = self.layout.check_and_sum(
                projection.state,
                proposal.shape[1:2],
                self.projector_name,
                index,
                problem,
                remember=False,
            )
            if state is not scheme:  # (else projected in place: already in the batch)
                projected[i] = state
            clipped[i] = projection.clipped
        return self.layout.replace_schemes(proposal, projected, in_place=reuse)

    def state(self):
        """The whole batch ``(scheme, member, *site_shape)`` (a new array or Ensemble)."""
        return self._assemble(self.states)

    def proposal(self):
        """The kernel's output of the last step, before projection (a new array or Ensemble)."""
        return self._assemble(self.proposals)

    def _assemble(self, tiles: list):
        config = self.experiment.config
        return self.layout.assemble(
            (len(config.schemes), config.members), zip(self.tiles, tiles, strict=True)
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        release_recycled(retain=RETAINED_BYTES)


class _MemorySnapshots:
    """Snapshots kept in preallocated arrays (the default without an output file)."""

    def __init__(self, experiment: BuiltExperiment) -> None:
        config, layout = experiment.config, experiment.states
        self.index = {step: i for i, step in enumerate(config.snapshot_steps)}
        self.layout = layout
        leading = (len(config.schemes), config.members, len(self.index))
        # (not zeroed: the run writes every snapshot of every scheme and member)
        self.arrays = {
            name: np.empty((*leading, *variable.shape), dtype=variable.dtype)
            for name, variable in layout.snapshot_variables().items()
        }

    def write(self, step: int, tile: tuple[slice, slice], state) -> None:
        schemes, members = tile
        for name, values in self.layout.snapshot_values(state).items():
            self.arrays[name][schemes, members, self.index[step]] = values


class _StreamedSnapshots:
    """Snapshots written into a netCDF4 file as they come (one chunk per scheme, member
    and snapshot); the rest of the trajectory is appended at the end of the run."""

    def __init__(self, experiment: BuiltExperiment, path: Path) -> None:
        import netCDF4

        config, layout = experiment.config, experiment.states
        self.index = {step: i for i, step in enumerate(config.snapshot_steps)}
        self.layout = layout
        self.file = netCDF4.Dataset(path, "w", format="NETCDF4")
        leading = {
            "scheme": len(config.schemes),
            "member": config.members,
            "snapshot": len(self.index),
        }
        for name, size in leading.items():
            self.file.createDimension(name, size)
        self.variables = {}
        for name, variable in layout.snapshot_variables().items():
            for dim, size in zip(variable.dims, variable.shape, strict=True):
                if dim not in self.file.dimensions:
                    self.file.createDimension(dim, size)
            self.variables[name] = self.file.createVariable(
                name,
                variable.dtype,
                (*leading, *variable.dims),
                **compression(),
                chunksizes=(1, 1, 1, *variable.shape),
            )
            self.variables[name].setncatts(variable.attributes)
        self.arrays = None

    def write(self, step: int, tile: tuple[slice, slice], state) -> None:
        schemes, members = tile
        for name, values in self.layout.snapshot_values(state).items():
            self.variables[name][schemes, members, self.index[step]] = values

    def __enter__(self) -> _StreamedSnapshots:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.file.isopen():
            self.file.close()


class _Recorder:
    """Preallocated arrays for every recorded variable; ``dataset()`` labels them.

    Metrics that can be computed from block masses alone (``from_block_masses``) are, when
    the reference masses stay fixed during the run, evaluated once at the end over every
    step at once from the recorded block masses, instead of once per step.
    """

    def __init__(self, experiment: BuiltExperiment, snapshots) -> None:
        config, problem = experiment.config, experiment.problem
        self.experiment = experiment
        self.snapshots = snapshots
        shape = (len(config.schemes), config.members, config.steps + 1)
        n_blocks = problem.partition.n_blocks
        self.arrays: dict[str, np.ndarray] = {
            "block_mass": np.zeros((*shape, n_blocks)),
            "leak": np.zeros(shape),
            "clipped": np.zeros((*shape, n_blocks), dtype=bool),
        }
        metrics = experiment.metrics
        self.before = [n for n, m in metrics.items() if m.record_before_projection]
        self.block_axis = {n: (n_blocks,) if m.per_block else () for n, m in metrics.items()}
        for name, metric in metrics.items():
            full = (*shape, n_blocks) if metric.per_block else shape
            self.arrays[name] = np.zeros(full)
            if name in self.before:
                self.arrays[f"{name}_pre"] = np.zeros(full)
        fixed_reference = problem.reference_is_fixed
        self.from_masses = [
            n for n, m in metrics.items() if fixed_reference and hasattr(m, "from_block_masses")
        ]
        self.per_step = [n for n in metrics if n not in self.from_masses]
        self.per_step_before = [n for n in self.before if n in self.per_step]
        # Block masses of the kernel's output, before the projection: for the leak and
        # for metrics of block masses recorded before the projection, at the end.
        self.masses_before = np.zeros((*shape, n_blocks))
        # Metrics evaluated at the end fail now, not after the run: one call each on the
        # reference masses at the last step.
        reference = problem.reference_masses.reshape(1, 1, 1, n_blocks)
        for name in self.from_masses:
            self._from_masses(name, reference, experiment.steps[-1:])
        self.tolerances = np.array(
            [np.nan if step.tolerance is None else step.tolerance for step in experiment.steps]
        )
        self.alpha_bar = self.target_mass = None
        if problem.is_distribution:  # the target moves with the noise level
            self.alpha_bar = np.full(config.steps + 1, np.nan)
            self.target_mass = np.full((config.steps + 1, n_blocks), np.nan)

    def record_before(self, index, tile, step, proposal) -> None:
        """Record the metrics taken before the projection of what the kernel returned at
        step ``index`` for ``tile`` = (schemes, members). (The engine writes the block
        masses before and after the projection, and the clipped flags, into
        ``masses_before`` and ``arrays``.)"""
        arrays, problem = self.arrays, self.experiment.problem
        schemes, members = tile
        for name in self.per_step_before:
            value = self._evaluate(name, proposal, problem, step)
            arrays[f"{name}_pre"][schemes, members, index] = value

    def record(self, index, tile, step, state) -> None:
        """Record the metrics of the state after step ``index`` for ``tile``."""
        arrays, problem = self.arrays, self.experiment.problem
        schemes, members = tile
        for name in self.per_step:
            arrays[name][schemes, members, index] = self._evaluate(name, state, problem, step)
        if self.alpha_bar is not None:
            self.alpha_bar[index] = state.alpha_bar
            self.target_mass[index] = problem.reference_for(state)

    def _finish(self) -> None:
        """The leak ‖w(K_t p) − w(p)‖₁ and the metrics computed from block masses, over all
        steps at once (no kernel before step 0: its leak stays 0)."""
        after = self.arrays["block_mass"]
        leak = np.abs(self.masses_before[:, :, 1:] - after[:, :, :-1]).sum(axis=-1)
        self.arrays["leak"][:, :, 1:] = leak
        for name in self.from_masses:
            if name in self.before:  # one call for the masses after and before projection
                both = self._from_masses(name, np.stack([after, self.masses_before]))
                self.arrays[name][...], self.arrays[f"{name}_pre"][...] = both
            else:
                self.arrays[name][...] = self._from_masses(name, after)

    def _from_masses(self, name: str, masses: np.ndarray, steps=None) -> np.ndarray:
        """Metric ``name`` from block masses (..., scheme, member, step, K) along ``steps``
        (by default all), shape-checked."""
        experiment = self.experiment
        metric = experiment.metrics[name]
        masses = masses.view()
        masses.flags.writeable = False  # the recorded masses are not the metric's to change
        steps = experiment.steps if steps is None else steps
        value = np.asarray(metric.from_block_masses(masses, experiment.problem, steps))
        expected = masses.shape[:-1] + ((masses.shape[-1],) if metric.per_block else ())
        if value.shape != expected:
            raise PluginContractError(
                f"metric {name!r} returned shape {value.shape} from block masses of shape "
                f"{masses.shape}, expected {expected}"
            )
        return value

    def snapshot(self, index: int, tiles: list, states: list[np.ndarray]) -> None:
        """Keep the state of step ``index`` if it is a snapshot step, tile by tile."""
        if index in self.snapshots.index:
            for tile, state in zip(tiles, states, strict=True):
                self.snapshots.write(index, tile, state)

    def _evaluate(self, name, state, problem, step) -> np.ndarray:
        metric = self.experiment.metrics[name]
        value = np.asarray(metric.compute(state, problem, step))
        expected = state.shape[:2] + self.block_axis[name]
        if value.shape != expected:
            raise PluginContractError(
                f"metric {name!r} returned shape {value.shape} at step {step.index}, "
                f"expected {expected}"
            )
        return value

    def _check_metrics(self) -> None:
        """Metrics must not be NaN (checked once, at the end of the run: cheaper than at
        every step, and the error names the same first step)."""
        for name in self.experiment.metrics:
            for variable in (name, f"{name}_pre") if name in self.before else (name,):
                values = self.arrays[variable]
                # (a NaN makes the sum NaN: one reduction, then the search only if so)
                if values.dtype.kind == "f" and np.isnan(values.sum()) and np.isnan(values).any():
                    steps = np.isnan(values).reshape(-1, values.shape[2], values[0, 0, 0].size)
                    first = int(np.flatnonzero(steps.any(axis=(0, 2)))[0])
                    raise PluginContractError(f"metric {name!r} returned NaN at step {first}")

    def dataset(self):
        self._finish()
        self._check_metrics()
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
        default_kind = "particle" if problem.is_distribution else "pixel"
        site_kind = getattr(partition, "site_kind", default_kind)  # what a site is, for labels
        for dim, size in zip(site_dims, partition.site_shape, strict=True):
            coords[dim] = (
                dim,
                np.arange(size),
                {"long_name": f"{site_kind} {dim}", "units": site_kind},
            )
        if problem.is_distribution:
            coords["dim"] = (
                "dim",
                np.arange(problem.data.dim),
                {"long_name": "coordinate axis of R^d", "units": "1"},
            )
        for name, (values, attributes) in partition.block_coords().items():
            coords[name] = ("block", values, attributes)
        arrays = self.arrays
        if problem.is_distribution:  # the distribution describes itself, if it can
            describe = getattr(problem.data, "dataset_variables", None)
            data_vars = dict(describe()) if describe is not None else {}
        else:
            data_vars = {
                "data": (
                    site_dims,
                    problem.data,
                    {"long_name": "data image x", "units": "data intensity"},
                )
            }
        data_vars |= {
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
        if self.snapshots.arrays is not None:  # else the state streams into the output file
            for name, variable in experiment.states.snapshot_variables().items():
                data_vars[name] = (
                    ("scheme", "member", "snapshot", *variable.dims),
                    self.snapshots.arrays[name],
                    variable.attributes,
                )
        if self.alpha_bar is not None:
            data_vars["alpha_bar"] = (
                "step",
                self.alpha_bar,
                {"long_name": "signal level ᾱ of the particle positions (1: data)", "units": "1"},
            )
            data_vars["target_mass"] = (
                ("step", "block"),
                self.target_mass,
                {"long_name": "block masses w^ref of the exact noised data q_ᾱ", "units": "1"},
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
        # (fastpath: numpy arrays go in as they are; anything else is converted as usual)
        variables = {
            name: xr.Variable(dims, values, labels, fastpath=isinstance(values, np.ndarray))
            for name, (dims, values, labels) in data_vars.items()
        }
        return _dataset(variables, coords, attributes)


def _dataset(data_vars: dict, coords: dict[str, tuple], attributes: dict):
    """``xr.Dataset(data_vars, coords=coords, attrs=attributes)`` for ``xr.Variable`` data
    variables and coordinates given as ``name: (dims, values, attributes)``, with the
    default indexes of the dimension coordinates.

    Put together directly where the sizes of the dimensions agree: xarray's constructor
    checks and copies every variable again, and makes every index anew (together about
    half a millisecond, a twentieth of a paper-restore run). Otherwise, or where xarray
    lacks that internal constructor, xarray's own (which says what disagrees).
    """
    import xarray as xr

    coord_variables, indexes = {}, {}
    for name, (dims, values, labels) in coords.items():
        if dims == name:  # a dimension coordinate, with its index
            indexes[name], variable = _default_index(name, np.asarray(values))
            coord_variables[name] = variable.copy(deep=False)  # (its own attributes)
            coord_variables[name].attrs.update(labels)
        else:
            coord_variables[name] = xr.Variable(dims, values, labels)
    variables = {**data_vars, **coord_variables}
    sizes = _dimension_sizes(variables.values())
    construct = getattr(xr.Dataset, "_construct_direct", None)
    if sizes is None or construct is None or not data_vars.keys().isdisjoint(coords):
        coordinates = xr.Coordinates(coord_variables, indexes=indexes)
        return xr.Dataset(data_vars, coords=coordinates, attrs=attributes)
    return construct(variables, set(coord_variables), sizes, attributes, indexes)


def _dimension_sizes(variables) -> dict[str, int] | None:
    """``dim: size`` over the variables in order of appearance, or None where they disagree."""
    sizes: dict[str, int] = {}
    for variable in variables:
        for dim, size in zip(variable.dims, variable.shape, strict=True):
            if sizes.setdefault(dim, size) != size:
                return None
    return sizes


def _default_index(name: str, values: np.ndarray):
    """(index, index variable) that xarray makes by default for a dimension coordinate; the
    same objects for the same short coordinate of integers or names (they are immutable:
    trajectories may share them, as xarray's shallow copies do)."""
    if values.size <= MAX_CACHED_INDEX and values.dtype.kind in "iuU":
        return _cached_index(name, tuple(values.tolist()), values.dtype)
    return _make_index(name, values)


@functools.lru_cache(maxsize=64)  # (at most a few MB of indexes and keys)
def _cached_index(name: str, values: tuple, dtype: np.dtype):
    return _make_index(name, np.array(values, dtype=dtype))


def _make_index(name: str, values: np.ndarray):
    import pandas as pd
    from xarray.indexes import PandasIndex

    index = PandasIndex(pd.Index(values, name=name), name, coord_dtype=values.dtype)
    return index, index.create_variables()[name]
