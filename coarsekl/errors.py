"""Errors that reach users.

Every problem a user can cause (a bad config, a bad image, an unknown plugin name) raises a
subclass of :class:`CoarseklError`. Its message says what is wrong and how to fix it; the
command line prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "CoarseklError",
    "ConfigError",
    "DataError",
    "InfeasibleTargetError",
    "OutputError",
    "PluginContractError",
    "PluginError",
]


class CoarseklError(Exception):
    """Base class of every error caused by user input or by a plugin."""


class ConfigError(CoarseklError, ValueError):
    """A configuration is malformed: unknown key, wrong type, invalid value."""


class DataError(CoarseklError, ValueError):
    """An image or state is unusable: negative, all zero, NaN or inf, wrong shape."""


class InfeasibleTargetError(CoarseklError, ValueError):
    """The admissible set A_δ is empty: no state meets the block-mass bounds."""


class PluginError(CoarseklError, LookupError):
    """A plugin is unknown, duplicated or failed to load."""


class PluginContractError(CoarseklError, RuntimeError):
    """A plugin returned something that breaks its contract (shape, NaN, normalisation)."""


class OutputError(CoarseklError, OSError):
    """An output location cannot be written."""
