"""Parameter sweeps: the [sweep] table, seeds, dask vs serial, resume, bad input, figures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import coarsekl
from coarsekl.cli import main
from coarsekl.sweeps import SweepConfig, point_seed

ROOT = Path(__file__).resolve().parents[1]

BASE_TOML = """
name = "grid"
steps = {steps}
members = 2
seed = 7
[data]
kind = "checkerboard"
shape = [{size}, {size}]
blocks = [4, 4]
[initial]
kind = "uniform-noise"
[partition]
kind = "blocks"
blocks = [4, 4]
[kernel]
kind = "geometric-mean"
beta = 0.05
sigma = 0.5
[projector]
kind = "vdelta"
delta = 0.01
[record]
metrics = ["V", "V_delta", "E_block", "mse"]
snapshots = [0, {steps}]
"""
# 4 δ × a zip group of 2 (β, σ) × 2 seeds = 16 points; 64 × 64 × 24 steps keeps each point
# long enough (a few tenths of a second) for the kill test to stop the sweep midway.
GRID_SWEEP = """
[sweep]
"projector.delta" = [0.005, 0.01, 0.02, 0.04]
"kernel.beta" = [0.05, 0.1]
"kernel.sigma" = [0.5, 1.0]
seed = [0, 1]
zip = [["kernel.beta", "kernel.sigma"]]
"""
TINY_SWEEP = """
[sweep]
"projector.delta" = [0.01, 0.03]
"""


def write_config(folder: Path, sweep: str = GRID_SWEEP, *, steps=24, size=64, name="grid"):
    path = folder / f"{name}.toml"
    path.write_text(BASE_TOML.format(steps=steps, size=size).replace("grid", name) + sweep)
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coarsekl", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def point_files(folder: Path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in sorted((folder / "points").glob("*.nc"))}


def same_numbers(a: Path, b: Path) -> None:
    """Two point files hold identical data (their creation times differ)."""
    with xr.open_dataset(a) as first, xr.open_dataset(b) as second:
        xr.testing.assert_equal(first, second)
        for key in ("config", "seed", "sweep_point", "sweep_index"):
            assert first.attrs[key] == second.attrs[key]


@pytest.fixture(scope="module")
def serial_reference(tmp_path_factory):
    """The grid sweep run uninterrupted with --serial (the reference for the other modes)."""
    folder = tmp_path_factory.mktemp("serial")
    config = write_config(folder)
    result = cli("sweep", str(config), "--out", str(folder / "out"), "--serial", "--no-figures")
    assert result.returncode == 0, result.stderr
    return config, folder / "out"


# --- the [sweep] table ---------------------------------------------------------------------


def test_grid_axes_zip_groups_and_ranges():
    sweep = SweepConfig.from_mapping(
        {
            "projector": {"delta": {"start": 0.001, "stop": 0.1, "num": 3, "spacing": "log"}},
            "kernel.beta": {"start": 0.02, "stop": 0.1, "num": 5},
            "kernel.sigma": [0.5, 1, 1.5, 2, 2.5],
            "seed": {"start": 0, "stop": 6, "step": 2},
            "zip": [["kernel.beta", "kernel.sigma"]],
        }
    )
    assert [axis.name for axis in sweep.axes] == ["projector.delta", "kernel.beta", "seed"]
    assert sweep.axes[1].paths == ("kernel.beta", "kernel.sigma")
    assert sweep.shape == (3, 5, 3) and sweep.size == 45
    values = {p.path: p.values for p in sweep.parameters}
    assert values["projector.delta"] == (0.001, 0.01, 0.1)
    assert values["kernel.beta"] == (0.02, 0.04, 0.06, 0.08, 0.1)
    assert values["seed"] == (0, 2, 4)
    assert SweepConfig.from_mapping(sweep.to_mapping()) == sweep


def test_points_vary_the_last_axis_fastest_and_carry_their_values(small_config):
    config = coarsekl.load_config(small_config()).with_overrides({})
    sweep = SweepConfig.from_mapping({"projector.delta": [0.01, 0.02], "members": [1, 3]})
    points = sweep.points(config)
    assert [p.values for p in points] == [
        {"projector.delta": 0.01, "members": 1},
        {"projector.delta": 0.01, "members": 3},
        {"projector.delta": 0.02, "members": 1},
        {"projector.delta": 0.02, "members": 3},
    ]
    assert points[3].config.projector.params["delta"] == 0.02
    assert points[3].config.members == 3 and points[3].config.sweep is None


def test_point_seeds_depend_on_the_point_only(small_config):
    config = coarsekl.load_config(small_config())
    forward = SweepConfig.from_mapping({"projector.delta": [0.01, 0.02, 0.04], "seed": [0, 1]})
    backward = SweepConfig.from_mapping({"seed": [1, 0], "projector.delta": [0.04, 0.02, 0.01]})
    seeds = {json.dumps(p.values, sort_keys=True): p.config.seed for p in forward.points(config)}
    again = {json.dumps(p.values, sort_keys=True): p.config.seed for p in backward.points(config)}
    assert seeds == again  # whatever the order of the table and of the values
    assert len(set(seeds.values())) == 6  # every point its own streams
    extended = SweepConfig.from_mapping(
        {"projector.delta": [0.01, 0.02, 0.04, 0.08], "seed": [0, 1]}
    )
    more = {json.dumps(p.values, sort_keys=True): p.config.seed for p in extended.points(config)}
    assert {k: more[k] for k in seeds} == seeds  # adding values keeps the old points' seeds
    assert point_seed(0, {"projector.delta": 0.01}) == point_seed(0, {"projector.delta": 0.01})
    common = SweepConfig.from_mapping({"projector.delta": [0.01, 0.02], "streams": "common"})
    assert [p.config.seed for p in common.points(config)] == [config.seed] * 2


def test_config_with_a_sweep_round_trips_through_toml(tmp_path):
    config = coarsekl.load_config(write_config(tmp_path))
    assert config.sweep.shape == (4, 2, 2)
    again = coarsekl.load_config(tomllib.loads(config.to_toml()))
    assert again.sweep == config.sweep
    assert again.with_overrides({"steps": 30}).sweep == config.sweep


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('"projector.dleta" = [0.1]', "unknown parameter path 'projector.dleta'"),
        ('"projetor.delta" = [0.1]', "did you mean 'projector'"),
        ('"projector.delta" = []', "'projector.delta' has no values"),
        ('"projector.delta" = ["big", "small"]', 'projector.delta="big"'),
        ("steps = [10, 2.5]", "steps=2.5"),
        ('"kernel.beta" = 0.1', "must be a list of values or a range"),
        ('"kernel.beta" = [0.1, 0.2]\nzip = [["kernel.beta", "kernel.sigma"]]', "not swept"),
        ('"kernel.beta" = { start = 0.1, stop = 0.2 }', "give num = N"),
        ("seed = [1, 1]", "lists a value twice"),
        ('streams = "shared"\nseed = [1]', "streams must be one of"),
    ],
)
def test_bad_sweep_tables_exit_2_with_one_clear_line(tmp_path, capsys, table, message):
    config = write_config(tmp_path, f"[sweep]\n{table}\n", steps=2, size=16)
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--serial"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coarsekl: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "out" / "points").exists()  # nothing ran


def test_a_config_without_a_sweep_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, "", steps=2, size=16)
    assert main(["sweep", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "has no [sweep] table" in capsys.readouterr().err


def test_run_ignores_the_sweep_table_with_a_note(tmp_path, capsys):
    config = write_config(tmp_path, TINY_SWEEP, steps=2, size=16)
    assert main(["run", str(config), "--out", str(tmp_path), "--no-figures", "--quiet"]) == 0
    assert main(["run", str(config), "--out", str(tmp_path), "--no-figures"]) == 0
    assert "'run' ignores the [sweep] table" in capsys.readouterr().err
    ds = coarsekl.open_trajectory(tmp_path / "grid.nc")
    assert ds.coarsekl.config.sweep is None and ds.coarsekl.config.projector.params["delta"] == 0.01


# --- running: dask against serial, resume, failures ----------------------------------------


def test_local_cluster_gives_the_same_numbers_as_serial(serial_reference, tmp_path):
    config, reference = serial_reference
    out = tmp_path / "cluster"
    result = cli("sweep", str(config), "--out", str(out), "--workers", "2", "--no-figures")
    assert result.returncode == 0, result.stderr
    assert "dask: 2 workers, 2 threads at tcp://127.0.0.1:" in result.stderr
    assert "16 points: 16 run now, 0 already finished, 0 failed" in result.stdout
    assert sorted(point_files(out)) == sorted(point_files(reference))
    for name in point_files(reference):
        same_numbers(reference / "points" / name, out / "points" / name)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest == {
        **json.loads((reference / "sweep.json").read_text()),
        "created": manifest["created"],
    }


def test_killed_sweep_resumes_without_recomputing_finished_points(serial_reference, tmp_path):
    config, reference = serial_reference
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "coarsekl", "sweep", str(config), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--workers", "2", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while len(point_files(out) if (out / "points").is_dir() else {}) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no point finished in 90 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 130
    time.sleep(0.5)  # let the workers see that their parent is gone
    finished = point_files(out)
    assert 3 <= len(finished) < 16, "the sweep finished before it could be interrupted"

    result = cli("sweep", str(config), "--out", str(out), "--workers", "2", "--no-figures")
    assert result.returncode == 0, result.stderr
    assert f"{16 - len(finished)} run now, {len(finished)} already finished" in result.stdout
    after = point_files(out)
    assert len(after) == 16
    for name, stat in finished.items():  # not rewritten: same inode, same modification time
        assert (after[name].st_ino, after[name].st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not list((out / "points").glob(".*tmp"))
    for name in after:
        same_numbers(reference / "points" / name, out / "points" / name)


def test_a_changed_config_in_the_same_folder_is_refused_unless_overwrite(tmp_path, capsys):
    config = write_config(tmp_path, TINY_SWEEP, steps=2, size=16)
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--serial", "--quiet"]) == 0
    assert main(["sweep", str(config), "--out", str(out), "--serial", "--quiet"]) == 0
    changed = ["sweep", str(config), "--out", str(out), "--serial", "--set", "steps=3"]
    assert main([*changed, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds a different sweep (changed steps: 2 → 3" in err and "--overwrite" in err
    assert main([*changed, "--quiet", "--overwrite"]) == 0
    assert coarsekl.open_sweep(out).sizes["step"] == 4


def test_failed_points_are_reported_and_counted_in_the_exit_status(tmp_path, capsys):
    sweep = '[sweep]\n"partition.blocks" = [[4, 4], [3, 3], [5, 5]]\n"projector.delta" = [0.01]\n'
    config = write_config(tmp_path, sweep, steps=2, size=16)
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--serial"]) == 2  # two failed
    captured = capsys.readouterr()
    assert "point 1 (partition.blocks=[3, 3], projector.delta=0.01) failed: ConfigError" in (
        captured.err
    )
    assert "2 of 3 points failed" in captured.err
    assert "3 points: 1 run now, 0 already finished, 2 failed" in captured.out
    failures = json.loads((out / "failures.json").read_text())
    assert [f["index"] for f in failures] == [1, 2]
    with pytest.raises(coarsekl.CoarseklError, match="2 of 3 points .* are not finished"):
        coarsekl.open_sweep(out)
    partial = coarsekl.open_sweep(out, allow_missing=True)
    assert np.isnan(partial.E_block.isel({"partition.blocks": 1}).values).all()
    assert list(partial.sweep_seed.values.ravel()[1:]) == [-1, -1]


def test_an_unexpected_error_is_reported_with_a_traceback_summary(tmp_path, monkeypatch):
    import coarsekl.runner

    def broken(config, **kwargs):
        raise RuntimeError(f"boom at delta {config.projector.params['delta']}")

    monkeypatch.setattr(coarsekl.runner, "run", broken)
    config = write_config(tmp_path, TINY_SWEEP, steps=2, size=16)
    result = coarsekl.sweep(config, tmp_path / "out", serial=True, progress=False)
    assert result.failed == 2 and result.completed == 0
    failure = result.failures[1]
    assert failure.values == {"projector.delta": 0.03}
    assert failure.error == "RuntimeError: boom at delta 0.03"
    assert "test_sweep.py" in failure.traceback and "in broken" in failure.traceback


def test_unreachable_scheduler_exits_2(tmp_path):
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, TINY_SWEEP, steps=2, size=16)
    address = f"tcp://127.0.0.1:{port}"
    result = cli(
        "sweep", str(config), "--out", str(tmp_path / "out"), "--scheduler", address,
        "--connect-timeout", "1",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"coarsekl: error: cannot reach the dask scheduler at '{address}'"
    )
    assert "Traceback" not in result.stderr


def test_local_cluster_options_do_not_go_with_a_scheduler(tmp_path, capsys):
    config = write_config(tmp_path, TINY_SWEEP, steps=2, size=16)
    args = [
        "sweep",
        str(config),
        "--out",
        str(tmp_path),
        "--scheduler",
        "tcp://h:1",
        "--workers",
        "2",
    ]
    assert main(args) == 2
    assert "size the local cluster" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["sweep", str(config), "--out", str(tmp_path), "--workers", "0"])
    assert error.value.code == 2


# --- the combined dataset and the figure ---------------------------------------------------


def test_open_sweep_is_lazy_with_one_dimension_per_swept_parameter(serial_reference):
    _, folder = serial_reference
    ds = coarsekl.open_sweep(folder)
    assert list(ds.E_block.dims[:3]) == ["projector.delta", "kernel.beta", "seed"]
    assert ds.sizes["projector.delta"] == 4 and ds.sizes["kernel.beta"] == 2
    assert list(ds["kernel.sigma"].values) == [0.5, 1.0]  # zipped: a coordinate along beta
    assert ds["kernel.sigma"].dims == ("kernel.beta",)
    assert ds.E_block.chunks is not None and ds.state.chunks is not None  # dask, not loaded
    point = ds.sel({"projector.delta": 0.02, "kernel.beta": 0.1, "seed": 1})
    single = xr.open_dataset(folder / "points" / "00011.nc")
    assert single.attrs["sweep_projector.delta"] == 0.02 and single.attrs["sweep_seed"] == 1
    np.testing.assert_array_equal(point.E_block.values, single.E_block.values)
    assert int(point.sweep_seed) == single.attrs["seed"]


def test_plot_on_a_sweep_folder_draws_the_sweep_figure(serial_reference, tmp_path):
    _, folder = serial_reference
    assert main(["plot", str(folder), "--out", str(tmp_path), "--quiet"]) == 0
    png = tmp_path / "grid_sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = coarsekl.sweeps.plot_sweep(coarsekl.open_sweep(folder))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:3] == ["final E_block", "max V_δ over steps 1 … T", "final mse"]
    assert [ax.get_xlabel() for ax in figure.axes[::3]] == [
        "projector.delta",
        "kernel.beta (with kernel.sigma)",
    ]  # seed is averaged over, not plotted against
    assert len(figure.axes[0].get_lines()) == 2  # one line per scheme


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "sweeps").glob("*.toml")), ids=lambda p: p.stem
)
def test_example_sweeps_run(path, tmp_path):
    out = tmp_path / "out"
    config = coarsekl.load_config(path)
    steps = 2 if config.particles is None else 10  # two diffusion steps would collapse
    short = ["--set", f"steps={steps}", "--set", f"record.snapshots=[0, {steps}]"]
    if "shape" in config.data.params:  # images: smaller
        short += ["--set", "data.shape=[16, 16]"]
    if config.particles is not None:  # particle ensembles: fewer
        short += ["--set", "particles=500"]
    assert main(["sweep", str(path), "--out", str(out), "--serial", "--quiet", *short]) == 0
    ds = coarsekl.open_sweep(out)
    assert ds.sizes["step"] == steps + 1 and (out / f"{path.stem}_sweep.png").is_file()
