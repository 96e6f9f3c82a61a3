"""Which numerics path runs: compiled (numba) kernels or the plain-numpy reference.

Plugins keep a plain-numpy reference for every compiled kernel; tests compare the two.
The compiled path is the default when numba is installed; set the environment variable
``COARSEKL_NUMERICS=reference`` (or use :func:`reference_numerics`) to run the reference.

Compiled kernels release the GIL, and large ones use the spare cores: in the runner's
worker threads (the batch is already spread over the cores) they run in one piece,
elsewhere in up to ``COARSEKL_THREADS`` pieces at once — numba's parallel loops where
:func:`parallel_threads` says so, Python threads through :func:`split_rows`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np

from coarsekl.errors import ConfigError

__all__ = [
    "COMPILING_NOTICE",
    "NUMERICS_ENV",
    "compilation_notice",
    "compiled_enabled",
    "compiled_module",
    "default_threads",
    "engine_worker",
    "parallel_or_serial",
    "parallel_threads",
    "recycled_empty",
    "reference_numerics",
    "release_recycled",
    "split_rows",
    "summation_pieces",
    "thread_budget",
]

NUMERICS_ENV = "COARSEKL_NUMERICS"
# Values a thread of a parallel loop needs to pay for its start: a log or exp per value,
# or (CHEAP_PIECE_VALUES) a few additions per value.
PIECE_VALUES = 1 << 14
CHEAP_PIECE_VALUES = 1 << 17
SUM_PIECE_VALUES = 1 << 16  # sums are cut into pieces of this many values
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


_compiled_modules: dict[str, ModuleType] = {}


def compiled_module(name: str) -> ModuleType:
    """The module ``name`` (a plugin's compiled kernels), imported on the first call.

    For functions called every step: an import statement there costs 0.3–0.4 µs, this a
    dictionary look-up. (A module reloaded with ``importlib.reload`` is the same object.)
    """
    try:
        return _compiled_modules[name]
    except KeyError:  # (the import waits for another thread's import of it to finish)
        return _compiled_modules.setdefault(name, importlib.import_module(name))


@contextlib.contextmanager
def reference_numerics() -> Iterator[None]:
    """Run the plain-numpy reference path inside the ``with`` block."""
    global _forced_reference
    previous, _forced_reference = _forced_reference, True
    try:
        yield
    finally:
        _forced_reference = previous


COMPILING_NOTICE = (
    "coarsekl: note: compiling the numerical kernels for this machine; this happens once "
    "(numba caches them) and can take a minute"
)


@contextlib.contextmanager
def compilation_notice(write: Callable[[str], None]) -> Iterator[None]:
    """Call ``write(COMPILING_NOTICE)`` once if numba compiles anything inside the ``with``
    block: the first run on a machine (or after an upgrade) compiles for up to a minute
    with no other sign of life. Silent where every kernel comes from numba's cache, and on
    the reference path."""
    if not compiled_enabled():
        yield
        return
    from numba.core import event

    class Notice(event.Listener):
        written = False

        def on_start(self, _event) -> None:
            if not self.written:  # (nested compilations each start an event)
                self.written = True
                write(COMPILING_NOTICE)

        def on_end(self, _event) -> None:
            pass

    with event.install_listener("numba:compile", Notice()):
        yield


THREADS_ENV = "COARSEKL_THREADS"
_available_cpus: int | None = None
_checked_threads: tuple[str | None, int] = (None, 0)  # the last COARSEKL_THREADS, parsed


def default_threads() -> int:
    """``COARSEKL_THREADS`` if set, else the number of CPUs this process may use."""
    global _available_cpus, _checked_threads
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        checked, threads = _checked_threads  # read in every hot loop: parse each value once
        if value == checked:
            return threads
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        _checked_threads = (value, int(value))
        return int(value)
    if _available_cpus is None:
        affinity = getattr(os, "sched_getaffinity", None)
        _available_cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return _available_cpus


_thread_state = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class thread_budget:  # lower case: used like a function, ``with thread_budget(2):``
    """Inside the ``with`` block, parallel work started from the calling thread (numba's
    parallel loops, :func:`split_rows`) uses at most ``threads`` threads.

    (A class, not a generator: the runner enters one every step, and this costs a tenth.)"""

    __slots__ = ("allowed",)

    def __init__(self, threads: int) -> None:
        # Capped by COARSEKL_THREADS as it is on entry: hot loops then read one number.
        self.allowed = min(threads, default_threads())

    def __enter__(self) -> None:
        # The budgets it replaces are kept per thread, so one instance may be entered
        # again, nested or from several threads.
        outer = _thread_state.__dict__.setdefault("outer_budgets", [])
        outer.append(getattr(_thread_state, "budget", None))
        _thread_state.budget = self.allowed

    def __exit__(self, *exc_info) -> None:
        _thread_state.budget = _thread_state.outer_budgets.pop()


def engine_worker() -> thread_budget:
    """Mark the calling thread as one of the runner's workers: parallel work then runs in
    one piece (the other cores are busy with other tiles)."""
    return thread_budget(1)


def _threads_allowed() -> int:
    budget = getattr(_thread_state, "budget", None)
    return default_threads() if budget is None else budget


def summation_pieces(values: int) -> int:
    """How many pieces a sum over ``values`` values is cut into, for threads to share: fixed
    by the number of values alone, so that results do not depend on the number of
    threads (pieces of ``SUM_PIECE_VALUES``)."""
    return max(1, -(-values // SUM_PIECE_VALUES))


def parallel_threads(values: int, cheap: bool = False) -> int:
    """How many threads a compiled parallel loop over ``values`` values (pixels, say) should
    use, ≥ 1: up to ``COARSEKL_THREADS`` (and the :func:`thread_budget`), each with at
    least ``PIECE_VALUES`` values (``CHEAP_PIECE_VALUES`` for a ``cheap`` loop: no log or
    exp); 1 in the runner's worker threads and where numba has no thread-safe threading
    layer (its "workqueue" layer aborts when two threads launch parallel loops at once).
    Sets numba's thread count for the calling thread's next parallel loops to it."""
    piece = CHEAP_PIECE_VALUES if cheap else PIECE_VALUES
    if values < 2 * piece:
        return 1
    threads = min(_threads_allowed(), values // piece)
    if threads <= 1 or _forked_after_parallel or not _threadsafe_layer():
        return 1
    threads = min(threads, _numba_threads)
    # numba's count is the calling thread's own; asking numba for it costs a microsecond,
    # so the count this thread last set is remembered (a count set elsewhere changes only
    # the speed of the next loop, not its results).
    if getattr(_thread_state, "numba_threads", None) != threads:
        import numba

        numba.set_num_threads(threads)
        _thread_state.numba_threads = threads
    global _parallel_started
    _parallel_started = True
    return threads


def parallel_or_serial(serial, parallel, values: int, cheap: bool = False):
    """``parallel`` (a compiled function with ``prange`` loops) where
    :func:`parallel_threads` gives it more than one thread, else ``serial`` (the same loops
    with ``range``): which of a kernel's two compilations to call."""
    return parallel if parallel_threads(values, cheap) > 1 else serial


# GNU OpenMP cannot run parallel loops in a child forked after the parent ran some (numba
# terminates the child): such a child runs every loop in one piece. The parent's thread
# pool has no threads in the child: the child starts its own.
_parallel_started = False
_forked_after_parallel = False


def _after_fork_in_child() -> None:
    global _forked_after_parallel, _pool
    _forked_after_parallel = _forked_after_parallel or _parallel_started
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_threadsafe: bool | None = None
_numba_threads = 1  # the most threads numba's parallel loops may use (NUMBA_NUM_THREADS)


def _threadsafe_layer() -> bool:
    """True when numba's parallel loops run on a layer that several threads may launch at
    once: TBB or OpenMP (not "workqueue")."""
    global _threadsafe, _numba_threads
    if _threadsafe is None:
        import numba

        _numba_threads = numba.config.NUMBA_NUM_THREADS
        chosen = numba.config.THREADING_LAYER
        candidates = {"tbb": ["tbbpool"], "omp": ["omppool"]}.get(
            chosen, [] if chosen == "workqueue" else ["tbbpool", "omppool"]
        )
        _threadsafe = False
        for module in candidates:
            try:
                importlib.import_module(f"numba.np.ufunc.{module}")
            except Exception:  # ImportError, or a TBB of the wrong version
                continue
            _threadsafe = True
            break
    return _threadsafe


def split_rows(work: Callable[[int, int], None], rows: int, minimum: int = 1 << 16) -> None:
    """Call ``work(start, stop)`` over ``range(rows)`` cut into pieces of at least
    ``minimum`` rows, in parallel on the spare cores (``work`` must release the GIL to
    gain, and write disjoint outputs)."""
    pieces = min(_threads_allowed(), rows // minimum)
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


RECYCLE_BYTES = 1 << 16  # arrays this large are recycled: fresh pages cost ~0.1 ns a byte
RECYCLE_KEEP = 4  # arrays kept per shape and dtype
RETAINED_BYTES = 1 << 24  # what release_recycled keeps for the next run (small arrays)
_recycled: dict[tuple, list[np.ndarray]] = {}
_recycled_lock = threading.Lock()


def _references_when_unused() -> int:
    """The reference count :func:`recycled_empty` sees for an array that only its list
    holds (the list, the loop's name, getrefcount's argument: 3 on CPython 3.11)."""
    kept = [np.empty(0)]
    for array in kept:
        count = sys.getrefcount(array)
    return count


_UNUSED_REFERENCES = _references_when_unused()


def recycled_empty(shape: tuple[int, ...], dtype: np.dtype | str = np.float64) -> np.ndarray:
    """``np.empty(shape, dtype)``, but an array of ``RECYCLE_BYTES`` or more reuses one
    handed out before that nothing refers to any more (not even a view).

    The operating system hands a new large array fresh pages, and the first write to each
    costs a page fault and zeroing: about as long as the kernel's own work on the array
    for a 2048 × 2048 image, and a tenth of a short run (paper-restore) whose arrays come
    back from a heap that other work trimmed. Kernels and metrics that make a state-sized
    array every step use this for it.
    """
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < RECYCLE_BYTES:
        return np.empty(shape, dtype)
    key = (tuple(shape), dtype)
    with _recycled_lock:
        kept = _recycled.setdefault(key, [])
        for array in kept:
            if sys.getrefcount(array) <= _UNUSED_REFERENCES:  # no state, no view of it
                return array
        array = np.empty(shape, dtype)
        kept.append(array)
        del kept[:-RECYCLE_KEEP]
        return array


def release_recycled(retain: int = 0) -> None:
    """Let go of the arrays kept by :func:`recycled_empty`, except (the smallest first) up
    to ``retain`` bytes of them for the next run. The runner calls it at the end of a run
    with ``RETAINED_BYTES``: the next short run finds its arrays, pages and all."""
    with _recycled_lock:
        kept, total = {}, 0
        for key, arrays in sorted(_recycled.items(), key=lambda item: item[1][0].nbytes):
            size = sum(array.nbytes for array in arrays)
            if total + size > retain:
                break
            kept[key], total = arrays, total + size
        _recycled.clear()
        _recycled.update(kept)
