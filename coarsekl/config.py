"""Experiment configuration: TOML files and the equivalent attrs objects.

An experiment is a TOML file with the top-level keys ``name``, ``steps``, ``members``,
``seed``, ``schemes`` and the tables ``[data]``, ``[initial]``, ``[partition]``,
``[quantity]``, ``[kernel]``, ``[projector]`` (each with ``kind`` and that plugin's
parameters) and ``[record]`` (``metrics``, ``snapshots``). String parameters named
``path`` are resolved relative to the config file's folder. An optional ``[sweep]`` table
(see :mod:`coarsekl.sweeps.spec`) describes a parameter sweep over the experiment; it is
used by ``coarsekl sweep`` and ignored by a single run.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from coarsekl.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from coarsekl.sweeps.spec import SweepConfig

__all__ = ["SCHEMES", "ComponentConfig", "ExperimentConfig", "RecordConfig", "load_config"]

SCHEMES = ("base", "proj")
DTYPES = ("float64", "float32")
COMPONENT_TABLES = ("data", "initial", "partition", "quantity", "kernel", "projector")
DEFAULT_METRICS = ("V", "V_delta", "E_block", "mse", "block_variance")
DEFAULT_PARTICLE_METRICS = ("V_delta", "E_block")
SCALAR_KEYS = ("name", "description", "steps", "members", "seed", "schemes", "dtype", "particles")
TOP_LEVEL_KEYS = (*SCALAR_KEYS, *COMPONENT_TABLES, "record", "sweep")


def _int_at_least(minimum: int):
    def check(instance, attribute, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"'{attribute.name}' must be an integer ≥ {minimum}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class ComponentConfig:
    """One ``[table]``: the component ``kind`` and its parameters."""

    kind: str
    params: dict[str, Any] = attrs.field(factory=dict, converter=dict)

    @classmethod
    def from_mapping(cls, table: Any, where: str, base_dir: Path | None = None):
        if isinstance(table, str):  # shorthand: quantity = "block-mean"
            table = {"kind": table}
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{where}] must be a table with a 'kind', got {table!r}")
        params = dict(table)
        kind = params.pop("kind", None)
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f'[{where}] needs kind = "<component name>"')
        path = params.get("path")
        if isinstance(path, str) and base_dir is not None and not Path(path).is_absolute():
            params["path"] = str((base_dir / path).resolve())
        return cls(kind=kind, params=params)

    def to_mapping(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}


def _metric_names(value) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[record] metrics must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"[record] metrics lists a name twice: {list(value)}")
    return tuple(value)


def _snapshot_steps(value) -> tuple[int, ...]:
    if isinstance(value, int | str) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"[record] snapshots must be a list of step numbers, got {value!r}")
    return tuple(sorted(set(value)))


@attrs.frozen(kw_only=True)
class RecordConfig:
    """What to record: metric names (every step) and the steps whose full state is kept."""

    metrics: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_metric_names)
    )
    snapshots: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_snapshot_steps)
    )

    @classmethod
    def from_mapping(cls, table: Any) -> RecordConfig:
        if not isinstance(table, Mapping):
            raise ConfigError(f"[record] must be a table, got {table!r}")
        unknown = sorted(set(table) - {"metrics", "snapshots"})
        if unknown:
            hint = did_you_mean(unknown[0], ["metrics", "snapshots"])
            raise ConfigError(
                f"[record] has no key {unknown[0]!r}{hint}; it takes 'metrics' and 'snapshots'"
            )
        return cls(**table)


def _schemes(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    schemes = tuple(value)
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or not schemes or len(set(schemes)) != len(schemes):
        raise ConfigError(
            f"schemes must be a non-empty list of distinct names from {list(SCHEMES)}, "
            f"got {list(schemes)}"
        )
    return schemes


def _dtype(value) -> str:
    if value not in DTYPES:
        raise ConfigError(
            f"dtype must be one of {list(DTYPES)} (the state's floating-point type), got {value!r}"
        )
    return value


def _optional_sweep(instance, attribute, value) -> None:
    from coarsekl.sweeps.spec import SweepConfig

    if value is not None and not isinstance(value, SweepConfig):
        raise ConfigError(f"'sweep' must be a coarsekl.SweepConfig or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ExperimentConfig:
    """A whole experiment; the same object drives the command line and ``coarsekl.run``."""

    name: str = "experiment"
    description: str = ""
    steps: int = attrs.field(validator=_int_at_least(1))
    members: int = attrs.field(default=1, validator=_int_at_least(1))
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    schemes: tuple[str, ...] = attrs.field(default=SCHEMES, converter=_schemes)
    dtype: str = attrs.field(default="float64", converter=_dtype)
    particles: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_int_at_least(1))
    )
    data: ComponentConfig
    initial: ComponentConfig
    partition: ComponentConfig
    quantity: ComponentConfig = ComponentConfig(kind="block-mass")
    kernel: ComponentConfig
    projector: ComponentConfig | None = None
    record: RecordConfig = RecordConfig()
    sweep: SweepConfig | None = attrs.field(default=None, validator=_optional_sweep)

    def __attrs_post_init__(self) -> None:
        if "proj" in self.schemes and self.projector is None:
            raise ConfigError("the scheme 'proj' needs a [projector] table (kind = \"vdelta\")")
        bad = [s for s in self.snapshot_steps if not 0 <= s <= self.steps]
        if bad:
            raise ConfigError(
                f"[record] snapshots {bad} lie outside the run's steps 0 … {self.steps}; "
                "list snapshot steps within the run (--set record.snapshots=[0, …])"
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Recorded metrics; by default all built-in ones (V_delta only with a projector)."""
        if self.record.metrics is not None:
            return self.record.metrics
        defaults = DEFAULT_METRICS if self.particles is None else DEFAULT_PARTICLE_METRICS
        if self.projector is None:
            return tuple(m for m in defaults if m != "V_delta")
        return defaults

    @property
    def snapshot_steps(self) -> tuple[int, ...]:
        """Recorded snapshot steps; by default the initial and the final step."""
        if self.record.snapshots is None:
            return (0, self.steps)
        return self.record.snapshots

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], base_dir: str | Path | None = None
    ) -> ExperimentConfig:
        """Build from a parsed TOML mapping; relative ``path`` values resolve to ``base_dir``."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"a config must be a mapping of keys and tables, got {mapping!r}")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        for key in mapping:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(
                    f"unknown config key {key!r}{did_you_mean(key, TOP_LEVEL_KEYS)}; known keys: "
                    f"{', '.join(TOP_LEVEL_KEYS)}"
                )
        for required in ("steps", "data", "initial", "partition", "kernel"):
            if required not in mapping:
                raise ConfigError(f"the config needs {required!r}; see examples/paper-restore.toml")
        arguments: dict[str, Any] = {key: mapping[key] for key in SCALAR_KEYS if key in mapping}
        for table in COMPONENT_TABLES:
            if table in mapping:
                arguments[table] = ComponentConfig.from_mapping(mapping[table], table, base)
        if "record" in mapping:
            arguments["record"] = RecordConfig.from_mapping(mapping["record"])
        if "sweep" in mapping:
            from coarsekl.sweeps.spec import SweepConfig

            arguments["sweep"] = SweepConfig.from_mapping(mapping["sweep"])
        for key in ("name", "description"):
            if key in arguments and not isinstance(arguments[key], str):
                raise ConfigError(f"{key!r} must be a string, got {arguments[key]!r}")
        return cls(**arguments)

    def to_mapping(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "name": self.name,
            "steps": self.steps,
            "members": self.members,
            "seed": self.seed,
            "schemes": list(self.schemes),
            "dtype": self.dtype,
        }
        if self.particles is not None:
            mapping["particles"] = self.particles
        if self.description:
            mapping["description"] = self.description
        for table in COMPONENT_TABLES:
            component = getattr(self, table)
            if component is not None:
                mapping[table] = component.to_mapping()
        # Defaults are left out, so that they follow `steps` and `projector` when overridden.
        mapping["record"] = {
            key: list(value)
            for key, value in attrs.asdict(self.record).items()
            if value is not None
        }
        if self.sweep is not None:
            mapping["sweep"] = self.sweep.to_mapping()
        return mapping

    def to_toml(self) -> str:
        """The config as TOML text; ``load_config`` of it gives back an equal config."""
        return self._toml

    @functools.cached_property
    def _toml(self) -> str:  # (a config never changes; every trajectory records it)
        import tomli_w

        return tomli_w.dumps(_plain(self.to_mapping()))

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys replaced, e.g. ``{"projector.delta": 0.02, "steps": 10}``.

        Examples
        --------
        >>> config = load_config("paper-restore")
        >>> short = config.with_overrides(
        ...     {"steps": 10, "record.snapshots": [0, 10], "projector.delta": 0.02}
        ... )
        >>> short.steps, short.projector.params["delta"], short.snapshot_steps
        (10, 0.02, (0, 10))
        >>> config.steps  # the original is unchanged
        40
        """
        mapping = self.to_mapping()
        for dotted, value in overrides.items():
            *tables, key = dotted.split(".")
            target = mapping
            for table in tables:
                if not isinstance(target.get(table), dict):
                    raise ConfigError(f"cannot set {dotted!r}: there is no table [{table}]")
                target = target[table]
            target[key] = value
        return ExperimentConfig.from_mapping(mapping)


def _plain(value: Any) -> Any:
    """Lists, dicts and builtin scalars only, so that tomli_w can write them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


def load_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig, *, registry=None
) -> ExperimentConfig:
    """Load an experiment from a TOML path, a named experiment, a mapping or a config."""
    if isinstance(source, ExperimentConfig):
        return source
    if isinstance(source, Mapping):
        return ExperimentConfig.from_mapping(source)
    path = Path(source)
    if not path.is_file():
        if path.suffix or len(path.parts) > 1:
            raise ConfigError(f"config file {str(path)!r} does not exist")
        from coarsekl.manager import get_registry

        registry = registry or get_registry()
        if str(source) not in registry.names("experiment"):
            available = ", ".join(registry.names("experiment"))
            raise ConfigError(
                f"{str(source)!r} is neither a config file nor a named experiment"
                f"{did_you_mean(str(source), registry.names('experiment'))}; named experiments: "
                f"{available}"
            )
        path = registry.lookup("experiment", str(source)).component.path
        if path is None:
            raise ConfigError(
                f"{str(source)!r} is a scripted experiment (an analysis over many runs), not "
                f"a config: run it with 'coarsekl run {source} --out DIR'"
            )
    try:
        mapping = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {str(path)!r}: {error}") from None
    mapping.setdefault("name", path.stem)
    return ExperimentConfig.from_mapping(mapping, base_dir=path.parent)
