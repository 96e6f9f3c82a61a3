"""Combining the points of a sweep folder into one lazy xarray.Dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coarsekl.sweeps.execute import read_manifest
from coarsekl.sweeps.spec import SweepError

__all__ = ["open_sweep"]


def open_sweep(folder: str | Path, *, allow_missing: bool = False):
    """Open the sweep in ``folder`` as one Dataset with a dimension per swept parameter.

    Variables are dask arrays read from the point files on demand: nothing is loaded until
    asked (``.load()``, ``.values``, a plot). A ``zip`` group is one dimension, named after
    its first parameter, with the others as coordinates along it. ``sweep_seed`` holds each
    point's seed. Points that are not finished raise SweepError, or with
    ``allow_missing=True`` read as NaN.
    """
    import xarray as xr

    import coarsekl.accessor  # noqa: F401  (registers ds.coarsekl)

    folder = Path(folder)
    manifest = read_manifest(folder)
    dims = manifest["dims"]
    shape = tuple(len(next(iter(d["coords"].values()))) for d in dims)
    cells = np.empty(shape, dtype=object)
    missing, first = [], None
    for point in manifest["points"]:
        path = folder / point["file"]
        if not path.is_file():
            missing.append(point)
            continue
        try:
            dataset = xr.open_dataset(path, engine="netcdf4", chunks={})
        except (OSError, ValueError) as error:
            raise SweepError(f"cannot read the point file {str(path)!r}: {error}") from None
        first = dataset if first is None else first
        cells[tuple(point["grid"])] = _label(dataset, point, dims, point["seed"])
    if len(missing) == len(manifest["points"]):
        raise SweepError(f"no point of the sweep in {str(folder)!r} has finished yet")
    if missing and not allow_missing:
        example = ", ".join(f"{k}={v!r}" for k, v in missing[0]["values"].items())
        raise SweepError(
            f"{len(missing)} of {len(manifest['points'])} points of the sweep in {str(folder)!r} "
            f"are not finished (e.g. {example}); re-run the same 'coarsekl sweep' command to "
            "complete them, or open_sweep(folder, allow_missing=True) for NaN in their place"
        )
    if missing:
        template = _blank(first)
        for point in missing:
            cells[tuple(point["grid"])] = _label(template, point, dims, -1)
    combined = xr.combine_nested(
        cells.tolist(),
        concat_dim=[d["name"] for d in dims],
        data_vars="all",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    combined = combined.transpose(*(d["name"] for d in dims), ...)  # table order, not reversed
    for attribute in ("seed", "created", "config", "sweep_index", "sweep_point"):
        combined.attrs.pop(attribute, None)
    combined.attrs.update(
        title=f"coarsekl sweep: {manifest['name']}",
        sweep_config=manifest["config"],
        sweep_folder=str(folder.resolve()),
        sweep_missing=len(missing),
    )
    return combined


def _label(dataset, point: dict[str, Any], dims: list[dict[str, Any]], seed: Any):
    """One point as a cell of the grid: a length-1 dimension per swept axis, with coords."""
    for axis, position in zip(dims, point["grid"], strict=True):
        name = axis["name"]
        dataset = dataset.expand_dims({name: [axis["coords"][name][position]]})
        dataset[name].attrs.update(long_name=f"swept parameter {name}")
        for path, values in axis["coords"].items():
            if path != name:
                dataset = dataset.assign_coords({path: (name, [values[position]])})
                dataset[path].attrs.update(long_name=f"swept parameter {path} (zipped)")
    seeds = np.full([1] * len(dims), seed, dtype=np.int64)
    dataset["sweep_seed"] = (
        [d["name"] for d in dims],
        seeds,
        {"long_name": "seed of the point (−1: not finished)"},
    )
    return dataset


def _blank(dataset):
    """A NaN dataset shaped like ``dataset`` (for a missing point)."""
    import xarray as xr

    return xr.Dataset(
        {name: xr.full_like(var, np.nan, dtype=float) for name, var in dataset.data_vars.items()},
        attrs=dataset.attrs,
    )
