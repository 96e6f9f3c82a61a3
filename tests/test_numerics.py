"""The switch between the compiled kernels and the plain-numpy reference path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import coarsekl
from coarsekl.errors import ConfigError
from coarsekl.numerics import NUMERICS_ENV, compiled_enabled, reference_numerics


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
