"""Records that plugins return, and the registry that finds components by name."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from coarsekl.errors import ConfigError, PluginError, did_you_mean

__all__ = ["KINDS", "STATE_KINDS", "Component", "Experiment", "Provider", "Registry"]

STATE_KINDS = ("array", "ensemble")
STATE_NAMES = {
    "array": "arrays over sites (images, distributions over chain states)",
    "ensemble": "weighted particle ensembles",
}

# kind -> (hook name, table name in a config)
KINDS: dict[str, tuple[str, str]] = {
    "partition": ("coarsekl_partitions", "partition"),
    "quantity": ("coarsekl_coarse_quantities", "quantity"),
    "kernel": ("coarsekl_kernels", "kernel"),
    "projector": ("coarsekl_projectors", "projector"),
    "metric": ("coarsekl_metrics", "record.metrics"),
    "data": ("coarsekl_data_sources", "data"),
    "initial": ("coarsekl_initial_states", "initial"),
}


def _non_empty_str(instance, attribute, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen(kw_only=True)
class Component:
    """One named component a plugin provides.

    ``factory`` builds it from the config table's parameters (keyword arguments); it may
    be a callable or a ``"module:attribute"`` string imported only when the component is
    used, which keeps ``coarsekl plugins`` fast. ``states`` names the kinds of state the
    component works on: ``"array"`` (distributions over sites: images, chains) and/or
    ``"ensemble"`` (weighted particle ensembles); a run refuses a component for another
    kind with a clear error, before building it.
    """

    name: str = attrs.field(validator=_non_empty_str)
    factory: Callable[..., Any] | str
    summary: str = attrs.field(validator=_non_empty_str)
    states: tuple[str, ...] = attrs.field(default=STATE_KINDS, converter=tuple)

    @states.validator
    def _known_states(self, attribute, value) -> None:
        if not value or set(value) - set(STATE_KINDS):
            raise TypeError(f"states must name some of {list(STATE_KINDS)}, got {value!r}")

    def load_factory(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


@attrs.frozen(kw_only=True)
class Experiment:
    """A named experiment runnable as ``coarsekl run NAME``: a TOML config file (``path``),
    or a script (``script = "module:function"``) for analyses over many runs.

    A script is called as ``function(folder, *, figures=True, progress=False)``; it writes
    its results into the existing ``folder`` (atomically) and returns the written paths.
    ``plot`` (optional, ``"module:function"``) redraws a scripted experiment's figures from
    its netCDF file for ``coarsekl plot``: ``function(dataset, folder, stem)`` returns the
    written paths.
    """

    name: str = attrs.field(validator=_non_empty_str)
    path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    summary: str = attrs.field(validator=_non_empty_str)
    script: str | None = None
    plot: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.path is None) == (self.script is None):
            raise TypeError(
                f"experiment {self.name!r} needs exactly one of path (a TOML file) or "
                "script ('module:function')"
            )
        for field in ("script", "plot"):
            value = getattr(self, field)
            if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
                raise TypeError(f"{field} must be 'module:function', got {value!r}")

    def load_script(self) -> Callable[..., list[Path]]:
        """Import the script function (``script = "module:function"``)."""
        return _import_attribute(str(self.script))

    def load_plot(self) -> Callable[..., list[Path]] | None:
        """Import the figure function (``plot = "module:function"``), if there is one."""
        return None if self.plot is None else _import_attribute(self.plot)


def _import_attribute(target: str):
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@attrs.frozen
class Provider:
    """Who provides a component: plugin name and its distribution (name, version)."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from {self.distribution} {self.version}"


@attrs.frozen
class Registered:
    component: Component | Experiment
    provider: Provider


@attrs.frozen
class LoadFailure:
    """An outside plugin that raised while loading: reported, not fatal."""

    provider: Provider
    error: str


@attrs.define
class Registry:
    """Components by kind and name, with the plugin that provides each."""

    entries: dict[str, dict[str, Registered]] = attrs.field(factory=dict)
    failures: list[LoadFailure] = attrs.field(factory=list)

    def add(self, kind: str, item: Component | Experiment, provider: Provider) -> None:
        table = self.entries.setdefault(kind, {})
        if item.name in table:
            other = table[item.name].provider
            raise PluginError(
                f"two plugins provide a {kind} named {item.name!r}: {other} and {provider}; "
                "uninstall one of them or rename the component"
            )
        table[item.name] = Registered(item, provider)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))

    def lookup(self, kind: str, name: str) -> Registered:
        table = self.entries.get(kind, {})
        if name in table:
            return table[name]
        known = sorted(table)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        failed = "".join(f" (note: {f.provider} failed to load: {f.error})" for f in self.failures)
        raise PluginError(
            f"no {kind} named {name!r}; {hint}available: {', '.join(known) or 'none'}.{failed}"
        )

    def build(self, kind: str, name: str, params: Mapping[str, Any], **context: Any) -> Any:
        """Build component ``name`` of ``kind`` from config ``params`` (+ runner context).

        Runner context (``shape=``, ``data=`` for partitions) is passed only where the
        factory accepts it.

        Unknown or missing parameters and invalid values become a ConfigError that names
        the config table, the component and what it accepts.
        """
        registered = self.lookup(kind, name)
        where = f"[{KINDS[kind][1]}] {name!r}" if kind in KINDS else repr(name)
        try:
            factory = registered.component.load_factory()
        except Exception as error:  # an outside plugin's import failing
            raise PluginError(
                f"{kind} {name!r} from {registered.provider} could not be imported: {error}"
            ) from error
        accepted, required = _parameters(factory)
        if accepted is not None:
            context = {key: value for key, value in context.items() if key in accepted}
        unknown = sorted(set(params) - accepted) if accepted is not None else []
        if unknown:
            public = sorted(accepted - set(context))
            hints = [f"{key!r}{did_you_mean(key, public)}" for key in unknown]
            raise ConfigError(
                f"{where} has no parameter {', '.join(hints)}; it accepts: "
                f"{', '.join(public) or 'no parameters'}"
            )
        missing = sorted(required - set(params) - set(context))
        if missing:
            raise ConfigError(f"{where} needs the parameter(s) {', '.join(map(repr, missing))}")
        try:
            return factory(**context, **params)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from None


def _parameters(factory: Callable[..., Any]) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(keyword parameters the factory accepts, None when it takes ``**kwargs``; those
    without a default, only known for attrs classes)."""
    try:
        return _parameters_of_hashable(factory)
    except TypeError:  # an unhashable callable: not cached
        return _parameters_of_hashable.__wrapped__(factory)


@functools.cache  # a run builds about ten components; their signatures do not change
def _parameters_of_hashable(factory) -> tuple[frozenset[str] | None, frozenset[str]]:
    if attrs.has(factory):
        fields = [a for a in attrs.fields(factory) if a.init]
        required = (a.alias for a in fields if a.default is attrs.NOTHING)
        return frozenset(a.alias for a in fields), frozenset(required)
    signature = inspect.signature(factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None, frozenset()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = (name for name, p in signature.parameters.items() if p.kind in keyword)
    return frozenset(names), frozenset()
