from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

import coarsekl
from coarsekl.errors import DataError, OutputError
from coarsekl.io import atomic_path, prepare_output_dir


@pytest.fixture(scope="module")
def trajectory():
    return coarsekl.run(
        {
            "steps": 3,
            "members": 2,
            "data": {"kind": "checkerboard", "shape": [16, 16], "blocks": [2, 2]},
            "initial": {"kind": "uniform-noise"},
            "partition": {"kind": "blocks", "blocks": [2, 2]},
            "kernel": {"kind": "geometric-mean", "beta": 0.1, "sigma": 0.5},
            "projector": {"kind": "vdelta", "delta": 0.02},
        }
    )


def test_netcdf_round_trip_is_identical(tmp_path, trajectory):
    path = coarsekl.save_trajectory(trajectory, tmp_path / "run.nc")
    loaded = coarsekl.open_trajectory(path)
    xr.testing.assert_identical(loaded, trajectory)
    assert loaded.clipped.dtype == bool


def test_saved_file_is_compressed(tmp_path, trajectory):
    path = coarsekl.save_trajectory(trajectory, tmp_path / "run.nc")
    with xr.open_dataset(path) as ds:
        assert ds.state.encoding["zlib"] is True
        assert ds.state.encoding["shuffle"] is True


def test_loaded_trajectory_offers_the_accessor_and_reruns_identically(tmp_path, trajectory):
    loaded = coarsekl.open_trajectory(coarsekl.save_trajectory(trajectory, tmp_path / "a.nc"))
    assert loaded.coarsekl.config.steps == 3
    np.testing.assert_array_equal(loaded.coarsekl.rerun().state, trajectory.state)


def test_failed_write_keeps_the_older_result(tmp_path, trajectory, monkeypatch):
    path = tmp_path / "run.nc"
    coarsekl.save_trajectory(trajectory, path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", explode)
    with pytest.raises(KeyboardInterrupt):
        coarsekl.save_trajectory(trajectory, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.nc"]  # no temporary left behind


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"


def test_unwritable_output_folder_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write to the output folder"):
        prepare_output_dir(blocker / "results")


def test_opening_a_missing_or_foreign_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        coarsekl.open_trajectory(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(DataError, match="cannot read"):
        coarsekl.open_trajectory(tmp_path / "junk.nc")
