"""Which numerics path runs: compiled (numba) kernels or the plain-numpy reference.

Plugins keep a plain-numpy reference for every compiled kernel; tests compare the two.
The compiled path is the default when numba is installed; set the environment variable
``COARSEKL_NUMERICS=reference`` (or use :func:`reference_numerics`) to run the reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

__all__ = ["NUMERICS_ENV", "compiled_enabled", "reference_numerics"]

NUMERICS_ENV = "COARSEKL_NUMERICS"
_forced_reference = False
_compiled_available: bool | None = None  # numba installed and not switched off by the env


def compiled_enabled() -> bool:
    """True when the compiled kernels should run: numba is installed and not switched off.

    Called in hot paths, so the environment is read once, on the first call.
    """
    global _compiled_available
    if _forced_reference:
        return False
    if _compiled_available is None:
        _compiled_available = (
            os.environ.get(NUMERICS_ENV, "compiled") != "reference"
            and importlib.util.find_spec("numba") is not None
        )
    return _compiled_available


@contextlib.contextmanager
def reference_numerics() -> Iterator[None]:
    """Run the plain-numpy reference path inside the ``with`` block."""
    global _forced_reference
    previous, _forced_reference = _forced_reference, True
    try:
        yield
    finally:
        _forced_reference = previous
