"""Building the plugin manager and the component registry.

As pytest does, the first-party plugins are a tuple of module names registered with the
same ``register`` call and the same hooks an outside plugin uses; then the ``coarsekl``
entry-point group is loaded (unless ``COARSEKL_DISABLE_PLUGIN_AUTOLOAD`` is set), and
``check_pending()`` turns a misspelled hook implementation into an error.
"""

from __future__ import annotations

import importlib
import os
import warnings
from importlib import metadata

import pluggy

from coarsekl import hookspecs
from coarsekl._version import __version__
from coarsekl.errors import PluginError
from coarsekl.registry import KINDS, LoadFailure, Provider, Registry

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "get_plugin_manager", "get_registry"]

ENTRY_POINT_GROUP = "coarsekl"
BUILTIN_PLUGINS = (
    "coarsekl_blocks.plugin",
    "coarsekl_images.plugin",
    "coarsekl_paper.plugin",
    "coarsekl_chains.plugin",
    "coarsekl_gmm.plugin",
)
DISABLE_AUTOLOAD = "COARSEKL_DISABLE_PLUGIN_AUTOLOAD"


class CoarseklPluginManager(pluggy.PluginManager):
    """A PluginManager that remembers which distribution each plugin came from."""

    def __init__(self) -> None:
        super().__init__("coarsekl")
        self.providers: dict[str, Provider] = {}
        self.load_failures: list[LoadFailure] = []

    def register_module(self, module_name: str, provider: Provider | None = None):
        module = importlib.import_module(module_name)
        name = self.register(module, name=module_name)
        self.providers[name] = provider or Provider(module_name, "coarsekl", __version__)
        return name


def get_plugin_manager(*, autoload: bool | None = None) -> CoarseklPluginManager:
    """A fresh plugin manager with the built-in and the installed outside plugins."""
    pm = CoarseklPluginManager()
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        pm.register_module(module_name)
    pm.check_pending()
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD)
    if autoload:
        _load_entry_points(pm)
    return pm


def _load_entry_points(pm: CoarseklPluginManager) -> None:
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        provider = Provider(
            entry_point.name,
            dist.metadata["Name"] if dist else "unknown distribution",
            dist.version if dist else "?",
        )
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=entry_point.name)
            try:
                pm.check_pending()  # a misspelled hook: report this plugin, keep the rest
            except pluggy.PluginValidationError:
                pm.unregister(name=entry_point.name)
                raise
        except Exception as error:  # a broken outside plugin must not take coarsekl down
            failure = LoadFailure(provider, f"{type(error).__name__}: {error}")
            pm.load_failures.append(failure)
            warnings.warn(f"{provider} failed to load: {failure.error}", stacklevel=2)
            continue
        pm.providers[entry_point.name] = provider


def get_registry(pm: CoarseklPluginManager | None = None) -> Registry:
    """Collect every component of every registered plugin, by kind and name."""
    pm = pm or get_plugin_manager()
    registry = Registry(failures=list(pm.load_failures))
    hooks = {kind: hook for kind, (hook, _) in KINDS.items()}
    hooks["experiment"] = "coarsekl_experiments"
    for kind, hook_name in hooks.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            provider = pm.providers.get(impl.plugin_name) or Provider(
                impl.plugin_name, "unknown distribution", "?"
            )
            try:
                items = list(impl.function() or ())
            except Exception as error:
                raise PluginError(
                    f"{provider} raised in {hook_name}: {type(error).__name__}: {error}"
                ) from error
            for item in items:
                registry.add(kind, item, provider)
    return registry
