"""Benchmarks are not timed tests: CI only checks that they still run (tiny sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "bench_core.py",
            [
                "Target 1",
                "largest metric difference",
                "pixel-steps/s",
                "share of the step",
                "vs 64²",
                "vs 11 snapshots",
                "coarsekl plugins",
            ],
        ),
        ("bench_sweep.py", ["speed-up:", "identical E_block: True"]),
    ],
)
def test_benchmark_smoke_run(script, expected):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, text


def test_bench_gmm_smoke_run():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gmm.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for text in ["machine:", "Target 1", "Target 2", "particle-steps/s", "whole run per step"]:
        assert text in result.stdout, text
