"""Every shipped example runs (TOML configs as named experiments, scripts as smoke tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import coarsekl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_config_is_a_named_experiment_that_runs(path):
    assert path.stem in coarsekl.get_registry().names("experiment")
    config = coarsekl.load_config(path)
    short = config.with_overrides({"steps": 2, "record.snapshots": [0, 2]})
    ds = coarsekl.run(short)
    assert ds.sizes["step"] == 3


def test_compare_deltas_script(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "compare_deltas.py"),
            "--out",
            str(tmp_path),
            "--steps",
            "3",
            "--deltas",
            "0.01",
            "0.02",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ds = coarsekl.open_trajectory(tmp_path / "compare-deltas.nc")
    assert list(ds.delta_value.values) == [0.01, 0.02]
    assert (tmp_path / "compare-deltas.png").stat().st_size > 0
