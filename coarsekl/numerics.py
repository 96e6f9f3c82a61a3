"""Which numerics path runs: compiled (numba) kernels or the plain-numpy reference.

Plugins keep a plain-numpy reference for every compiled kernel; tests compare the two.
The compiled path is the default when numba is installed; set the environment variable
``COARSEKL_NUMERICS=reference`` (or use :func:`reference_numerics`) to run the reference.

Compiled kernels release the GIL. :func:`split_rows` lets one large call use the spare
cores: in the runner's worker threads (the batch is already spread over the cores) it runs
the work in one piece, elsewhere in up to ``COARSEKL_THREADS`` pieces at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "NUMERICS_ENV",
    "compiled_enabled",
    "engine_worker",
    "reference_numerics",
    "split_rows",
]

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


_worker = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@contextlib.contextmanager
def engine_worker() -> Iterator[None]:
    """Mark the calling thread as one of the runner's workers: :func:`split_rows` then
    runs its work in one piece (the other cores are busy with other tiles)."""
    previous, _worker.active = getattr(_worker, "active", False), True
    try:
        yield
    finally:
        _worker.active = previous


def split_rows(work: Callable[[int, int], None], rows: int, minimum: int = 1 << 16) -> None:
    """Call ``work(start, stop)`` over ``range(rows)`` cut into pieces of at least
    ``minimum`` rows, in parallel on the spare cores (``work`` must release the GIL to
    gain, and write disjoint outputs)."""
    from coarsekl.runner import default_threads

    pieces = 1 if getattr(_worker, "active", False) else min(default_threads(), rows // minimum)
    if pieces <= 1:
        work(0, rows)
        return
    bounds = [rows * i // pieces for i in range(pieces + 1)]
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(default_threads(), "coarsekl-numerics")
        pool = _pool
    futures = [pool.submit(work, a, b) for a, b in itertools.pairwise(bounds)]
    for future in futures:
        future.result()
