"""Errors that reach users.

Every problem a user can cause (a bad config, a bad image, an unknown plugin name) raises a
subclass of :class:`CoarseklError`. Its message says what is wrong and how to fix it; the
command line prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CoarseklError",
    "CoarseklWarning",
    "ConfigError",
    "DataError",
    "InfeasibleTargetError",
    "OutputError",
    "PluginContractError",
    "PluginError",
    "did_you_mean",
]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest known name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


class CoarseklWarning(UserWarning):
    """Something the run could do only approximately (it goes on; the metrics show it)."""
