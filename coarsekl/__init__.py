"""coarsekl: coarse-grained Kullback–Leibler control of diffusion-based generative models.

Importing coarsekl is cheap: the public functions load their heavy modules (xarray,
scipy, matplotlib) on first use.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import pluggy

from coarsekl._version import __version__

hookimpl = pluggy.HookimplMarker("coarsekl")
"""Marker for hook implementations: ``@coarsekl.hookimpl``."""

_LAZY = {
    "load_config": "coarsekl.config",
    "ExperimentConfig": "coarsekl.config",
    "ComponentConfig": "coarsekl.config",
    "RecordConfig": "coarsekl.config",
    "run": "coarsekl.runner",
    "open_trajectory": "coarsekl.io",
    "save_trajectory": "coarsekl.io",
    "get_plugin_manager": "coarsekl.manager",
    "get_registry": "coarsekl.manager",
    "Component": "coarsekl.registry",
    "Experiment": "coarsekl.registry",
    "Problem": "coarsekl.problem",
    "Projection": "coarsekl.interfaces",
    "Ensemble": "coarsekl.ensemble",
    "MemberRandom": "coarsekl.random",
    "Step": "coarsekl.schedules",
    "CoarseklError": "coarsekl.errors",
    "sweep": "coarsekl.sweeps",
    "open_sweep": "coarsekl.sweeps",
    "SweepConfig": "coarsekl.sweeps",
}

__all__ = [
    "CoarseklError",
    "Component",
    "ComponentConfig",
    "Ensemble",
    "Experiment",
    "ExperimentConfig",
    "MemberRandom",
    "Problem",
    "Projection",
    "RecordConfig",
    "Step",
    "SweepConfig",
    "__version__",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "load_config",
    "open_sweep",
    "open_trajectory",
    "run",
    "save_trajectory",
    "sweep",
]

if TYPE_CHECKING:
    from coarsekl.config import ComponentConfig, ExperimentConfig, RecordConfig, load_config
    from coarsekl.ensemble import Ensemble
    from coarsekl.errors import CoarseklError
    from coarsekl.interfaces import Projection
    from coarsekl.io import open_trajectory, save_trajectory
    from coarsekl.manager import get_plugin_manager, get_registry
    from coarsekl.problem import Problem
    from coarsekl.random import MemberRandom
    from coarsekl.registry import Component, Experiment
    from coarsekl.runner import run
    from coarsekl.schedules import Step
    from coarsekl.sweeps import SweepConfig, open_sweep, sweep


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coarsekl' has no attribute {name!r}")


if "xarray" in sys.modules:  # xarray already paid for: offer ds.coarsekl right away
    importlib.import_module("coarsekl.accessor")
