"""The ``[sweep]`` table: which parameters vary, over which values, and each point's seed.

A sweep table maps dotted config paths to lists of values or to ranges::

    [sweep]
    "projector.delta" = [0.002, 0.005, 0.01, 0.02]
    "kernel.beta" = { start = 0.02, stop = 0.1, num = 3 }     # linspace, both ends
    "kernel.sigma" = { start = 0.25, stop = 2, num = 4, spacing = "log" }
    seed = { start = 0, stop = 4 }                            # integers 0, 1, 2, 3
    zip = [["kernel.beta", "kernel.sigma"]]                   # these two vary together
    streams = "independent"                                   # or "common"

The points are the full grid over the axes (a single parameter, or one ``zip`` group);
the last axis varies fastest. Nested tables (``[sweep.projector] delta = [...]``) are the
same as quoted dotted keys.

Random streams. With ``streams = "independent"`` (the default) every point runs with its
own seed, ``SeedSequence(seed, spawn_key=(SWEEP_SPAWN_KEY, *hash of the point's other
parameter values))``: the same point gets the same numbers whatever the order or the
worker, adding values to a list leaves the other points' numbers unchanged, and sweeping
``seed`` gives independent replicas. With ``streams = "common"`` every point runs with the
config's ``seed`` (or its swept value) as it is: points that differ only in other
parameters share their random numbers, as the schemes of one run do.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from coarsekl.errors import CoarseklError, ConfigError, did_you_mean

__all__ = [
    "STREAMS",
    "SWEEP_SPAWN_KEY",
    "SweepAxis",
    "SweepConfig",
    "SweepError",
    "SweepParameter",
    "SweepPoint",
    "coordinate_value",
    "point_seed",
]

STREAMS = ("independent", "common")
SWEEP_SPAWN_KEY = 5  # first spawn-key word of sweep seeds; the runner's purposes are 0-2
RANGE_KEYS = ("start", "stop", "num", "step", "spacing")
SPECIAL_KEYS = ("zip", "streams")


class SweepError(CoarseklError):
    """A sweep cannot start or go on: a foreign output folder, an unreachable scheduler."""


def _range_values(path: str, table: Mapping[str, Any]) -> tuple[Any, ...]:
    """``{start, stop, num[, spacing]}`` (both ends) or integer ``{start, stop[, step]}``."""
    unknown = sorted(set(table) - set(RANGE_KEYS))
    if unknown:
        raise ConfigError(
            f"[sweep] {path!r}: a range has no key {unknown[0]!r}"
            f"{did_you_mean(unknown[0], RANGE_KEYS)}; it takes start, stop and either num "
            '(evenly spaced, both ends, spacing = "linear" or "log") or step (integers)'
        )
    start, stop = table.get("start"), table.get("stop")
    if not all(_is_number(v) for v in (start, stop)):
        raise ConfigError(f"[sweep] {path!r}: a range needs numbers start and stop, got {table}")
    if "num" in table:
        num, spacing = table["num"], table.get("spacing", "linear")
        if "step" in table:
            raise ConfigError(f"[sweep] {path!r}: give a range either num or step, not both")
        if not _is_int(num) or num < 1:
            raise ConfigError(f"[sweep] {path!r}: num must be an integer ≥ 1, got {num!r}")
        if spacing == "linear":
            values = np.linspace(start, stop, num)
        elif spacing == "log":
            if start <= 0 or stop <= 0:
                raise ConfigError(f"[sweep] {path!r}: a log range needs start, stop > 0")
            values = np.geomspace(start, stop, num)
        else:
            raise ConfigError(
                f'[sweep] {path!r}: spacing must be "linear" or "log", got {spacing!r}'
            )
        return tuple(float(f"{v:.12g}") for v in values)  # 0.04, not 0.04000000000000001
    if "spacing" in table:
        raise ConfigError(f"[sweep] {path!r}: spacing goes with num, not with step")
    step = table.get("step", 1)
    if not all(_is_int(v) for v in (start, stop, step)) or step == 0:
        raise ConfigError(
            f"[sweep] {path!r}: a range without num is integers start … stop − 1 by step "
            f"(step ≠ 0); got {dict(table)}; give num = N for evenly spaced numbers"
        )
    return tuple(range(start, stop, step))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_range(value: Any) -> bool:
    return isinstance(value, Mapping) and "start" in value and set(value) <= set(RANGE_KEYS)


def _values(path: str, value: Any) -> tuple[Any, ...]:
    if _is_range(value):
        values = _range_values(path, value)
    elif isinstance(value, list | tuple):
        values = tuple(value)
    else:
        raise ConfigError(
            f"[sweep] {path!r} must be a list of values or a range "
            f"{{ start = …, stop = …, num = … }}, got {value!r}"
        )
    if not values:
        raise ConfigError(f"[sweep] {path!r} has no values; give it at least one")
    keys = [_canonical(v) for v in values]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"[sweep] {path!r} lists a value twice: {list(values)}")
    return values


@attrs.frozen(kw_only=True)
class SweepParameter:
    """One swept config path (``"projector.delta"``) and its values."""

    path: str = attrs.field()
    values: tuple[Any, ...] = attrs.field(converter=tuple)

    @path.validator
    def _check_path(self, attribute, value) -> None:
        if not isinstance(value, str) or not value or any(not p for p in value.split(".")):
            raise ConfigError(f"[sweep] parameter paths are dotted config keys, got {value!r}")
        if value.split(".")[0] == "sweep":
            raise ConfigError("[sweep] cannot sweep the [sweep] table itself")

    @values.validator
    def _check_values(self, attribute, value) -> None:
        _values(self.path, value)  # non-empty, distinct


@attrs.frozen
class SweepAxis:
    """One grid dimension: a single parameter, or a ``zip`` group varying together."""

    parameters: tuple[SweepParameter, ...]

    @property
    def name(self) -> str:
        """The dimension name: the (first) parameter's path."""
        return self.parameters[0].path

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p.path for p in self.parameters)

    def __len__(self) -> int:
        return len(self.parameters[0].values)


def _zip_groups(value: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(group, list | tuple) and all(isinstance(p, str) for p in group)
        for group in value
    ):
        raise ConfigError(
            f'[sweep] zip must be a list of lists of parameter paths, e.g. zip = [["kernel.beta",'
            f' "kernel.sigma"]], got {value!r}'
        )
    return tuple(tuple(group) for group in value)


def _streams(value: Any) -> str:
    if value not in STREAMS:
        raise ConfigError(f"[sweep] streams must be one of {list(STREAMS)}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class SweepConfig:
    """The ``[sweep]`` table in Python: parameters, ``zip`` groups and the stream policy.

    >>> SweepConfig.from_mapping({"projector.delta": [0.01, 0.02], "seed": [0, 1]})
    """

    parameters: tuple[SweepParameter, ...] = attrs.field(converter=tuple)
    zip: tuple[tuple[str, ...], ...] = attrs.field(default=(), converter=_zip_groups)
    streams: str = attrs.field(default="independent", converter=_streams)

    def __attrs_post_init__(self) -> None:
        if not self.parameters:
            raise ConfigError(
                '[sweep] needs at least one parameter, e.g. "projector.delta" = [...]'
            )
        paths = [p.path for p in self.parameters]
        if len(set(paths)) != len(paths):
            raise ConfigError(f"[sweep] names a parameter twice: {paths}")
        for a, b in itertools.combinations(paths, 2):
            if b.startswith(f"{a}.") or a.startswith(f"{b}."):
                raise ConfigError(f"[sweep] sweeps both {a!r} and {b!r}, one inside the other")
        lengths = {p.path: len(p.values) for p in self.parameters}
        seen: set[str] = set()
        for group in self.zip:
            if len(group) < 2:
                raise ConfigError(f"[sweep] a zip group needs two or more parameters, got {group}")
            for path in group:
                if path not in lengths:
                    raise ConfigError(
                        f"[sweep] zip names {path!r}, which is not swept"
                        f"{did_you_mean(path, lengths)}; swept: {', '.join(lengths)}"
                    )
                if path in seen:
                    raise ConfigError(f"[sweep] {path!r} is in two zip groups")
                seen.add(path)
            if len({lengths[p] for p in group}) != 1:
                sizes = ", ".join(f"{p}: {lengths[p]}" for p in group)
                raise ConfigError(
                    f"[sweep] the zip group {list(group)} needs lists of equal length, got {sizes}"
                )

    @classmethod
    def from_mapping(cls, table: Any) -> SweepConfig:
        """Build from the parsed ``[sweep]`` table (dotted keys or nested tables)."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"[sweep] must be a table of parameter paths, got {table!r}")
        special = {key: table[key] for key in SPECIAL_KEYS if key in table}
        parameters: list[SweepParameter] = []

        def collect(prefix: str, mapping: Mapping[str, Any]) -> None:
            for key, value in mapping.items():
                path = f"{prefix}{key}"
                if isinstance(value, Mapping) and not _is_range(value):
                    collect(f"{path}.", value)  # [sweep.projector] delta = [...]
                else:
                    parameters.append(SweepParameter(path=path, values=_values(path, value)))

        collect("", {k: v for k, v in table.items() if k not in SPECIAL_KEYS})
        return cls(parameters=parameters, **special)

    def to_mapping(self) -> dict[str, Any]:
        """The table with plain lists of values (ranges expanded)."""
        mapping: dict[str, Any] = {p.path: list(p.values) for p in self.parameters}
        if self.zip:
            mapping["zip"] = [list(group) for group in self.zip]
        mapping["streams"] = self.streams
        return mapping

    @property
    def axes(self) -> tuple[SweepAxis, ...]:
        """The grid dimensions, in table order (a zip group where its first member is)."""
        by_path = {p.path: p for p in self.parameters}
        group_of = {path: group for group in self.zip for path in group}
        axes, done = [], set()
        for parameter in self.parameters:
            if parameter.path in done:
                continue
            group = group_of.get(parameter.path, (parameter.path,))
            axes.append(SweepAxis(tuple(by_path[p] for p in group)))
            done.update(group)
        return tuple(axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(axis) for axis in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def points(self, base) -> list[SweepPoint]:
        """Every point of the grid over ``base`` (an ExperimentConfig), each config checked.

        Raises ConfigError naming the parameter path or the point when a path does not
        exist or a value is not valid for it.
        """
        _check_paths(self, base)
        axes, points = self.axes, []
        for index, grid in enumerate(itertools.product(*(range(len(a)) for a in axes))):
            values = {
                p.path: p.values[i]
                for axis, i in zip(axes, grid, strict=True)
                for p in axis.parameters
            }
            try:
                config = base.with_overrides(values)
            except ConfigError as error:
                raise ConfigError(f"[sweep] the point {_describe(values)}: {error}") from None
            root = config.seed
            seed = root if self.streams == "common" else point_seed(root, values)
            config = attrs.evolve(config, seed=seed, sweep=None)
            points.append(SweepPoint(index=index, grid=grid, values=values, config=config))
        return points


@attrs.frozen
class SweepPoint:
    """One experiment of a sweep: its position, parameter values and full config."""

    index: int
    grid: tuple[int, ...]
    values: dict[str, Any]
    config: Any  # ExperimentConfig with the values set, its point seed, and no sweep

    def describe(self) -> str:
        return _describe(self.values)


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{path}={_canonical(value)}" for path, value in values.items())


def _canonical(value: Any) -> str:
    """Stable text of a value (JSON, sorted keys): equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def coordinate_value(value: Any) -> Any:
    """A netCDF/xarray-friendly coordinate: numbers and strings as they are, else JSON text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return value
    return _canonical(value)


def point_seed(root: int, values: Mapping[str, Any]) -> int:
    """The seed of a point: SeedSequence(root, spawn_key=(SWEEP_SPAWN_KEY, *hash(values))).

    ``values`` other than ``seed`` are hashed (SHA-256 of their canonical text, four 32-bit
    words), so the result depends on the point only, never on its position or worker. The
    63-bit result fits netCDF attributes and TOML integers.
    """
    text = _canonical({k: v for k, v in values.items() if k != "seed"})
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    key = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    sequence = np.random.SeedSequence(int(root), spawn_key=(SWEEP_SPAWN_KEY, *key))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _check_paths(sweep: SweepConfig, base) -> None:
    """Every swept path names a top-level key, a table, or a key of a table in ``base``."""
    from coarsekl.config import TOP_LEVEL_KEYS

    known = [key for key in TOP_LEVEL_KEYS if key != "sweep"]
    mapping = base.to_mapping()
    for parameter in sweep.parameters:
        head, *rest = parameter.path.split(".")
        if head not in known:
            raise ConfigError(
                f"[sweep] unknown parameter path {parameter.path!r}: there is no key or table "
                f"{head!r}{did_you_mean(head, known)}; known: {', '.join(known)}"
            )
        if not rest:
            continue
        if not isinstance(mapping.get(head), Mapping):
            raise ConfigError(
                f"[sweep] unknown parameter path {parameter.path!r}: the config has no "
                f"[{head}] table; add one to the config first"
            )
        table, key = mapping[head], rest[0]
        if key in table:
            continue
        accepted = _accepted_parameters(head, table)
        if accepted is not None and key not in accepted:
            raise ConfigError(
                f"[sweep] unknown parameter path {parameter.path!r}: [{head}] "
                f"{table.get('kind', '')!r} has no parameter {key!r}"
                f"{did_you_mean(key, accepted)}; it accepts: {', '.join(sorted(accepted))}"
            )


def _accepted_parameters(table_name: str, table: Mapping[str, Any]) -> set[str] | None:
    """Keys a config table takes: [record]'s own, or its component's parameters."""
    if table_name == "record":
        return {"metrics", "snapshots"}
    from coarsekl.manager import get_registry

    kind = table.get("kind")
    registry = get_registry()
    if table_name not in registry.entries or kind not in registry.names(table_name):
        return None  # the component build reports the unknown kind
    factory = registry.lookup(table_name, kind).component.load_factory()
    if not attrs.has(factory):
        return None
    return {"kind"} | {a.alias for a in attrs.fields(factory) if a.init}
