"""The switch between the compiled kernels and the plain-numpy reference path."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numba
import pytest

import coarsekl
from coarsekl.errors import ConfigError
from coarsekl.numerics import (
    COMPILING_NOTICE,
    NUMERICS_ENV,
    compilation_notice,
    compiled_enabled,
    compiled_module,
    reference_numerics,
)


def test_reference_numerics_switches_the_path_and_restores_it():
    before = compiled_enabled()
    with reference_numerics():
        assert not compiled_enabled()
        with reference_numerics():
            assert not compiled_enabled()
        assert not compiled_enabled()
    assert compiled_enabled() == before


@pytest.mark.parametrize(("value", "expected"), [("reference", "False"), ("compiled", "True")])
def test_the_environment_variable_chooses_the_path(value, expected):
    pytest.importorskip("numba")
    result = subprocess.run(
        [sys.executable, "-c", "from coarsekl import numerics; print(numerics.compiled_enabled())"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, NUMERICS_ENV: value},
    )
    assert result.stdout.strip() == expected


def test_reference_path_runs_without_importing_numba():
    code = (
        "import sys, coarsekl\n"
        "coarsekl.run('paper-restore', threads=1)\n"
        "print('numba' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, NUMERICS_ENV: "reference"},
    )
    assert result.stdout.strip() == "False"


def test_threads_from_the_environment_are_checked(monkeypatch, small_config):
    monkeypatch.setenv("COARSEKL_THREADS", "two")
    with pytest.raises(ConfigError, match="COARSEKL_THREADS must be a positive integer"):
        coarsekl.run(small_config())
    monkeypatch.setenv("COARSEKL_THREADS", "1")
    assert coarsekl.run(small_config()).sizes["member"] == 2


def test_split_rows_covers_every_row_once_in_pieces(monkeypatch):
    from coarsekl.numerics import split_rows

    monkeypatch.setenv("COARSEKL_THREADS", "3")
    seen = []
    split_rows(lambda a, b: seen.append((a, b)), 10, minimum=3)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    seen.clear()
    split_rows(lambda a, b: seen.append((a, b)), 5, minimum=3)  # too few rows to split
    assert seen == [(0, 5)]


def test_split_rows_runs_in_one_piece_inside_an_engine_worker(monkeypatch):
    from coarsekl.numerics import engine_worker, split_rows

    monkeypatch.setenv("COARSEKL_THREADS", "4")
    seen = []
    with engine_worker():
        split_rows(lambda a, b: seen.append((a, b)), 1000, minimum=10)
    assert seen == [(0, 1000)]


# --- Parallel loops in the compiled kernels ----------------------------------------------


@pytest.fixture
def tiny_pieces(monkeypatch):
    """Parallel loops even for tiny arrays, as many threads as asked for."""
    from coarsekl import numerics

    if not numerics.compiled_enabled() or not numerics._threadsafe_layer():
        pytest.skip("needs numba with a thread-safe threading layer")
    monkeypatch.setattr(numerics, "PIECE_VALUES", 10)
    monkeypatch.setattr(numerics, "CHEAP_PIECE_VALUES", 100)
    monkeypatch.setenv("COARSEKL_THREADS", "2")
    return numerics


def test_parallel_threads_need_enough_work_for_each_thread(tiny_pieces):
    assert tiny_pieces.parallel_threads(19) == 1  # two pieces need 20 values
    assert tiny_pieces.parallel_threads(20) == 2
    assert tiny_pieces.parallel_threads(10**6) == 2  # no more than COARSEKL_THREADS
    assert tiny_pieces.parallel_threads(150, cheap=True) == 1
    assert tiny_pieces.parallel_threads(200, cheap=True) == 2


def test_parallel_threads_keep_to_the_budget_and_to_one_in_engine_workers(tiny_pieces):
    with tiny_pieces.thread_budget(1):
        assert tiny_pieces.parallel_threads(10**6) == 1
        with tiny_pieces.thread_budget(4):  # the budget nests; COARSEKL_THREADS still caps
            assert tiny_pieces.parallel_threads(10**6) == 2
        assert tiny_pieces.parallel_threads(10**6) == 1
    with tiny_pieces.engine_worker():
        assert tiny_pieces.parallel_threads(10**6) == 1
    assert tiny_pieces.parallel_threads(10**6) == 2
    one = tiny_pieces.thread_budget(1)
    with one, one:  # one budget entered twice still restores what it replaced
        assert tiny_pieces.parallel_threads(10**6) == 1
    assert tiny_pieces.parallel_threads(10**6) == 2


def test_parallel_or_serial_picks_the_compilation_the_thread_count_calls_for(tiny_pieces):
    pick = tiny_pieces.parallel_or_serial
    assert pick("serial", "parallel", 10**6) == "parallel"
    assert pick("serial", "parallel", 19) == "serial"
    assert pick("serial", "parallel", 150, cheap=True) == "serial"
    with tiny_pieces.engine_worker():
        assert pick("serial", "parallel", 10**6) == "serial"


def test_compiled_module_is_the_imported_module_and_names_a_missing_one():
    module = compiled_module("coarsekl.fastmath")
    assert module is importlib.import_module("coarsekl.fastmath")
    assert compiled_module("coarsekl.fastmath") is module
    with pytest.raises(ModuleNotFoundError, match="coarsekl_no_such_plugin"):
        compiled_module("coarsekl_no_such_plugin._compiled")


def _compile_a_new_function() -> None:
    """numba compiles a function it has not seen (a new dispatcher, no cache)."""

    def add_one(x):
        return x + 1

    assert numba.njit(add_one)(1) == 2


def test_compilation_notice_is_written_once_while_numba_compiles():
    messages = []
    with compilation_notice(messages.append):
        _compile_a_new_function()
        _compile_a_new_function()
    _compile_a_new_function()  # outside the block: not announced
    assert messages == [COMPILING_NOTICE]


def test_no_compilation_notice_when_nothing_is_compiled():
    compiled = numba.njit(lambda x: 2 * x)
    compiled(1)
    messages = []
    with compilation_notice(messages.append):
        assert compiled(3) == 6
    with reference_numerics(), compilation_notice(messages.append):
        _compile_a_new_function()  # (the reference path listens for nothing)
    assert messages == []


def test_a_run_with_progress_says_when_it_compiles(small_config, capsys):
    def compile_something(info) -> None:
        _compile_a_new_function()

    coarsekl.run(small_config(), callback=compile_something)
    assert COMPILING_NOTICE not in capsys.readouterr().err
    coarsekl.run(small_config(), progress=True, callback=compile_something)
    assert capsys.readouterr().err.count(COMPILING_NOTICE) == 1


def test_sums_are_cut_by_their_size_alone_so_threads_do_not_change_rounding(monkeypatch):
    from coarsekl import numerics

    monkeypatch.setattr(numerics, "SUM_PIECE_VALUES", 100)
    assert [numerics.summation_pieces(n) for n in (1, 100, 101, 1000)] == [1, 1, 2, 10]
    monkeypatch.setenv("COARSEKL_THREADS", "7")
    assert numerics.summation_pieces(1000) == 10


def test_recycled_arrays_are_reused_only_when_nothing_refers_to_them():
    from coarsekl.numerics import RECYCLE_BYTES, recycled_empty, release_recycled

    shape = (RECYCLE_BYTES // 8 // 64, 64)
    release_recycled()
    first = recycled_empty(shape)
    view = first[1:]  # a view keeps the array in use
    second = recycled_empty(shape)
    assert second is not first
    del first
    assert recycled_empty(shape) is not view.base
    third_id = id(second)
    del second
    assert id(recycled_empty(shape)) == third_id  # nothing refers to it: reused
    del view
    small = recycled_empty((4, 4))
    assert small is not recycled_empty((4, 4))  # small arrays are never kept
    release_recycled()


def test_released_arrays_are_kept_for_the_next_run_up_to_a_size():
    import weakref

    from coarsekl.numerics import RECYCLE_BYTES, recycled_empty, release_recycled

    small, large = (RECYCLE_BYTES // 8,), (4 * RECYCLE_BYTES // 8,)
    release_recycled()
    small_array, large_array = (
        weakref.ref(recycled_empty(small)),
        weakref.ref(recycled_empty(large)),
    )
    release_recycled(retain=2 * RECYCLE_BYTES)  # room for the small array only
    assert large_array() is None
    assert recycled_empty(small) is small_array()
    release_recycled()
    assert small_array() is None


FORKED_CHILD = """
import multiprocessing, coarsekl
from coarsekl import numerics
numerics.PIECE_VALUES = 8
config = {
    "name": "t", "steps": 2, "members": 1,
    "data": {"kind": "checkerboard", "shape": [32, 32], "blocks": [4, 4]},
    "initial": {"kind": "uniform-noise"},
    "partition": {"kind": "blocks", "blocks": [4, 4]},
    "kernel": {"kind": "geometric-mean", "beta": 0.05, "sigma": 0.5},
    "projector": {"kind": "vdelta", "delta": 0.01},
}
def child(queue):
    queue.put(float(coarsekl.run(config, threads=2)["V"].sum()))
if __name__ == "__main__":
    parent = float(coarsekl.run(config, threads=2)["V"].sum())  # parallel loops start
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(120)
    print(process.exitcode, queue.get(timeout=5) == parent)
"""


def test_a_child_forked_after_parallel_loops_runs_its_loops_in_one_piece(tmp_path):
    """GNU OpenMP cannot start parallel loops in a forked child once the parent has: numba
    would terminate the child. coarsekl runs such a child's loops in one piece."""
    from coarsekl import numerics

    if not numerics.compiled_enabled() or not numerics._threadsafe_layer():
        pytest.skip("needs numba with a thread-safe threading layer")
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    script = tmp_path / "forked.py"
    script.write_text(FORKED_CHILD)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.split() == ["0", "True"], result.stderr
