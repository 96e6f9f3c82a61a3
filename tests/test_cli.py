from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import coarsekl
from coarsekl.cli import main

FILE_DATA = 'kind = "file"\npath = "{}"'
CHECKERBOARD = 'kind = "checkerboard"\nshape = [16, 16]\nblocks = [2, 2]'
SMALL_TOML = """
name = "tiny"
steps = 4
members = 1
[data]
kind = "checkerboard"
shape = [16, 16]
blocks = [2, 2]
[initial]
kind = "uniform-noise"
[partition]
kind = "blocks"
blocks = [2, 2]
[kernel]
kind = "geometric-mean"
beta = 0.1
sigma = 0.5
[projector]
kind = "vdelta"
delta = 0.02
"""


def test_run_end_to_end_in_a_subprocess(tmp_path):
    """`python -m coarsekl run` writes the trajectory and the three figures."""
    config = tmp_path / "tiny.toml"
    config.write_text(SMALL_TOML)
    out = tmp_path / "out" / "nested"
    result = subprocess.run(
        [sys.executable, "-m", "coarsekl", "run", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tiny.nc", "tiny_block_masses.png", "tiny_metrics.png", "tiny_snapshots.png"]
    ds = coarsekl.open_trajectory(out / "tiny.nc")
    assert ds.sizes["step"] == 5
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_exits_2_without_traceback_in_a_subprocess(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(SMALL_TOML.replace("blocks = [2, 2]\n[kernel]", "blocks = [3, 3]\n[kernel]"))
    result = subprocess.run(
        [sys.executable, "-m", "coarsekl", "run", str(config), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot be cut into 3 × 3 equal blocks" in result.stderr
    assert not list(tmp_path.glob("*.nc"))


def _write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_INPUTS = {
    "non-divisible blocks": (
        lambda t: _write(
            t, SMALL_TOML.replace("blocks = [2, 2]\n[kernel]", "blocks = [3, 5]\n[kernel]")
        ),
        "not divisible",
    ),
    "negative delta": (
        lambda t: _write(t, SMALL_TOML.replace("delta = 0.02", "delta = -0.02")),
        "delta must be ≥ 0",
    ),
    "unknown kernel": (
        lambda t: _write(t, SMALL_TOML.replace('"geometric-mean"', '"geometric_mean"')),
        "did you mean 'geometric-mean'",
    ),
    "unknown parameter": (
        lambda t: _write(t, SMALL_TOML.replace("beta = 0.1", "bta = 0.1")),
        "has no parameter 'bta'",
    ),
    "wrong parameter type": (
        lambda t: _write(t, SMALL_TOML.replace("beta = 0.1", 'beta = "strong"')),
        "beta must be a number",
    ),
    "malformed toml": (
        lambda t: _write(t, SMALL_TOML.replace("[kernel]", "[kernel")),
        "is not valid TOML",
    ),
    "missing config": (lambda t: str(t / "nowhere.toml"), "does not exist"),
    "missing data file": (
        lambda t: _write(t, SMALL_TOML.replace(CHECKERBOARD, FILE_DATA.format("missing.npy"))),
        "missing.npy' does not exist",
    ),
    "infeasible target": (
        lambda t: _write(
            t, SMALL_TOML + '[quantity]\nkind = "block-mass"\nreference = [0.5, 0.5, 0.5, 0.5]\n'
        ),
        "admissible set is empty",
    ),
    "unknown experiment": (lambda t: "paper-restroe", "did you mean 'paper-restore'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_clear_message_and_status_2(tmp_path, capsys, case):
    make_config, message = BAD_INPUTS[case]
    status = main(["run", make_config(tmp_path), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("coarsekl: error: ")
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert not list(tmp_path.rglob("*.nc"))


@pytest.mark.parametrize("value", [np.nan, -1.0, 0.0])
def test_bad_data_images_exit_2(tmp_path, capsys, value):
    image = np.ones((16, 16))
    image[3, 3] = value if value != 0.0 else 1.0
    if value == 0.0:
        image[:] = 0.0
    np.save(tmp_path / "data.npy", image)
    config = _write(tmp_path, SMALL_TOML.replace(CHECKERBOARD, FILE_DATA.format("data.npy")))
    assert main(["run", config, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "the data image" in capsys.readouterr().err


def test_unwritable_output_folder_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    config = _write(tmp_path, SMALL_TOML)
    assert main(["run", config, "--out", str(tmp_path / "file" / "out")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_set_overrides_a_value(tmp_path):
    config = _write(tmp_path, SMALL_TOML)
    assert (
        main(
            [
                "run",
                config,
                "--out",
                str(tmp_path),
                "--quiet",
                "--no-figures",
                "--set",
                "projector.delta=0.05",
                "--set",
                "steps=2",
            ]
        )
        == 0
    )
    ds = coarsekl.open_trajectory(tmp_path / "tiny.nc")
    assert ds.sizes["step"] == 3
    assert float(ds.delta.isel(step=1)) == 0.05


def test_plot_redraws_the_figures(tmp_path):
    config = _write(tmp_path, SMALL_TOML)
    assert main(["run", config, "--out", str(tmp_path), "--quiet", "--no-figures"]) == 0
    assert not list(tmp_path.glob("*.png"))
    assert main(["plot", str(tmp_path / "tiny.nc"), "--out", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "tiny_block_masses.png",
        "tiny_metrics.png",
        "tiny_snapshots.png",
    ]


def test_plugins_lists_every_builtin_component(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    expected = {
        "partition": ["blocks", "labels"],
        "quantity": ["block-mass", "block-mean"],
        "kernel": ["geometric-mean", "unsharp-mask", "block-blur"],
        "projector": ["vdelta", "identity"],
        "metric": ["V", "V_delta", "E_block", "mse", "block_variance"],
        "experiment": ["paper-restore", "forward-randomization", "round-trip"],
    }
    rows = {tuple(line.split()[:2]) for line in out.splitlines()}
    for kind, names in expected.items():
        for name in names:
            assert (kind, name) in rows, (kind, name)
    assert f"coarsekl {coarsekl.__version__}" in out


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert coarsekl.__version__ in capsys.readouterr().out
