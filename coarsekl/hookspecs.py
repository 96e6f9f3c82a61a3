"""Hook specifications: how a plugin adds components to coarsekl.

Each hook returns an iterable of :class:`coarsekl.Component` records, one per component the
plugin provides. Implement them with the ``coarsekl.hookimpl`` marker in a module and
either declare that module in your package's ``coarsekl`` entry-point group or pass it to
``PluginManager.register``. First-party plugins use exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from coarsekl.registry import Component, Experiment

hookspec = pluggy.HookspecMarker("coarsekl")


@hookspec
def coarsekl_partitions() -> Iterable[Component]:
    """Partitions of the sites into blocks (factory called with ``shape=`` and params)."""


@hookspec
def coarsekl_coarse_quantities() -> Iterable[Component]:
    """Coarse quantities: linear blockwise views of block masses."""


@hookspec
def coarsekl_kernels() -> Iterable[Component]:
    """Kernels: one reverse (or forward) step ``state, problem, step, rng -> state``."""


@hookspec
def coarsekl_projectors() -> Iterable[Component]:
    """Projectors onto an admissible set of the coarse quantity."""


@hookspec
def coarsekl_metrics() -> Iterable[Component]:
    """Metrics recorded per scheme, member and step; the name is the variable name."""


@hookspec
def coarsekl_data_sources() -> Iterable[Component]:
    """Data images (the ``[data]`` table)."""


@hookspec
def coarsekl_initial_states() -> Iterable[Component]:
    """Initial states of the ensemble (the ``[initial]`` table)."""


@hookspec
def coarsekl_experiments() -> Iterable[Experiment]:
    """Named experiments: TOML files runnable by name (``coarsekl run NAME``)."""
