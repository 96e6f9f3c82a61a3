"""The runner: advance every scheme and member as one batch and record the trajectory.

State layout: ``(scheme, member, *site_shape)``. The kernel draws its noise per member
(shape ``(member, *site_shape)``), so every scheme sees the same numbers (common random
numbers) and the differences between schemes are due to the projection alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from coarsekl._version import __version__
from coarsekl.config import ComponentConfig, ExperimentConfig, load_config
from coarsekl.errors import ConfigError, PluginContractError
from coarsekl.interfaces import Kernel, Metric, Projector
from coarsekl.manager import get_registry
from coarsekl.problem import Problem, check_image
from coarsekl.random import MemberRandom, Purpose, generator_for
from coarsekl.registry import Registry
from coarsekl.schedules import Step

__all__ = ["BuiltExperiment", "build_experiment", "run"]

NORMALISATION_TOLERANCE = 1e-8
BLOCK_MASS_TOLERANCE = 1e-9
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
    state: Any, expected_shape: tuple[int, ...], site_ndim: int, who: str, step: int
) -> np.ndarray:
    """Check what a plugin returned: shape, finite, non-negative, normalised over the last
    ``site_ndim`` axes."""
    where = f"{who} at step {step}"
    if not isinstance(state, np.ndarray) or state.shape != expected_shape:
        shape = getattr(state, "shape", type(state).__name__)
        raise PluginContractError(f"{where} returned shape {shape}, expected {expected_shape}")
    if state.dtype.kind != "f":
        raise PluginContractError(f"{where} returned dtype {state.dtype}, expected floats")
    site_axes = tuple(range(-site_ndim, 0))
    if not np.isfinite(state).all():
        raise PluginContractError(f"{where} returned NaN or inf values")
    if state.min() < 0:
        raise PluginContractError(f"{where} returned negative values (min {state.min():.3g})")
    totals = state.sum(axis=site_axes)
    worst = float(np.max(np.abs(totals - 1)))
    if worst > NORMALISATION_TOLERANCE:
        raise PluginContractError(
            f"{where} returned a state that is not normalised (|Σp − 1| up to {worst:.3g})"
        )
    return state


def run(
    config: ExperimentConfig | str | Any,
    *,
    plugin_manager=None,
    registry: Registry | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
):
    """Run an experiment and return its trajectory as an ``xarray.Dataset``.

    ``config`` is an ExperimentConfig, a mapping, a TOML path or a named experiment.
    ``callback`` (optional) is called after every step with ``{"step", "state",
    "proposal"}``: the projected batch and the kernel's output before projection.
    """
    registry = registry or get_registry(plugin_manager)
    config = load_config(config, registry=registry)
    experiment = build_experiment(config, registry)
    recorder = _Recorder(experiment)
    problem, kernel = experiment.problem, experiment.kernel
    n_schemes = len(config.schemes)
    state = np.broadcast_to(
        experiment.initial_states, (n_schemes, *experiment.initial_states.shape)
    ).copy()
    masses = problem.partition.block_sums(state)
    recorder.record(0, experiment.step_info(0), state, masses, state, masses, None)
    rng = MemberRandom.from_seed(config.seed, Purpose.KERNEL, config.members)
    kernel_key = f"kernel {config.kernel.kind}"
    projected_schemes = [i for i, s in enumerate(config.schemes) if s == "proj"]
    steps = range(1, config.steps + 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=config.name, unit="step", delay=0.5, leave=False)
    kernel_name = f"kernel {config.kernel.kind!r} ({experiment.providers[kernel_key]})"
    site_ndim = len(problem.partition.site_shape)
    for index in steps:
        step = experiment.step_info(index)
        proposal = check_state(
            kernel.step(state, problem, step, rng), state.shape, site_ndim, kernel_name, index
        )
        proposal_masses = problem.partition.block_sums(proposal)
        if kernel.block_preserving:
            drift = float(np.max(np.abs(proposal_masses - masses)))
            if drift > BLOCK_MASS_TOLERANCE:
                raise PluginContractError(
                    f"{kernel_name} declares block_preserving but changed a block mass by "
                    f"{drift:.3g} at step {index}; fix the kernel or set block_preserving = False"
                )
        new_state = proposal.copy()
        clipped = np.zeros(masses.shape, dtype=bool)
        for i in projected_schemes:
            projection = experiment.projector.project(proposal[i], problem, step)
            who = f"projector {config.projector.kind!r}"
            new_state[i] = check_state(projection.state, proposal.shape[1:], site_ndim, who, index)
            clipped[i] = projection.clipped
        state = new_state
        masses = problem.partition.block_sums(state)
        recorder.record(index, step, state, masses, proposal, proposal_masses, clipped)
        if callback is not None:
            callback({"step": index, "state": state, "proposal": proposal})
    return recorder.dataset()


class _Recorder:
    """Preallocated arrays for every recorded variable; ``dataset()`` labels them."""

    def __init__(self, experiment: BuiltExperiment) -> None:
        config, partition = experiment.config, experiment.problem.partition
        self.experiment = experiment
        shape = (len(config.schemes), config.members, config.steps + 1)
        n_blocks = partition.n_blocks
        self.snapshots = {step: i for i, step in enumerate(config.snapshot_steps)}
        self.arrays: dict[str, np.ndarray] = {
            "block_mass": np.zeros((*shape, n_blocks)),
            "leak": np.zeros(shape),
            "clipped": np.zeros((*shape, n_blocks), dtype=bool),
            "state": np.zeros((shape[0], shape[1], len(self.snapshots), *partition.site_shape)),
        }
        self.before = [n for n, m in experiment.metrics.items() if m.record_before_projection]
        for name, metric in experiment.metrics.items():
            full = (*shape, n_blocks) if metric.per_block else shape
            self.arrays[name] = np.zeros(full)
            if name in self.before:
                self.arrays[f"{name}_pre"] = np.zeros(full)
        self.tolerances = np.full(config.steps + 1, np.nan)

    def record(self, index, step, state, masses, proposal, proposal_masses, clipped) -> None:
        arrays, problem = self.arrays, self.experiment.problem
        arrays["block_mass"][:, :, index] = masses
        previous = arrays["block_mass"][:, :, max(index - 1, 0)]
        arrays["leak"][:, :, index] = np.abs(proposal_masses - previous).sum(axis=-1)
        if clipped is not None:
            arrays["clipped"][:, :, index] = clipped
        if index in self.snapshots:
            arrays["state"][:, :, self.snapshots[index]] = state
        for name, metric in self.experiment.metrics.items():
            arrays[name][:, :, index] = self._evaluate(name, metric, state, problem, step)
            if name in self.before:
                arrays[f"{name}_pre"][:, :, index] = self._evaluate(
                    name, metric, proposal, problem, step
                )
        if step.tolerance is not None:
            self.tolerances[index] = step.tolerance

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
        for dim, size in zip(site_dims, partition.site_shape, strict=True):
            coords[dim] = (dim, np.arange(size), {"long_name": f"pixel {dim}", "units": "pixel"})
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
            "state": (
                ("scheme", "member", "snapshot", *site_dims),
                arrays["state"],
                {"long_name": "state p (probability per pixel)", "units": "1"},
            ),
        }
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
