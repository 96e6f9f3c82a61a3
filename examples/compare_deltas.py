"""Run paper-restore for several tolerances δ and compare them with xarray.

    python examples/compare_deltas.py --out results/compare-deltas

Each run is an ordinary coarsekl trajectory; ``xarray.concat`` stacks them along a new
``delta_value`` dimension for analysis. Writes the combined netCDF file and a PNG of the
projected E_block and mse against the step for every δ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

import coarsekl
from coarsekl.io import atomic_path, prepare_output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/compare-deltas", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.002, 0.005, 0.01, 0.02])
    args = parser.parse_args()
    folder = prepare_output_dir(args.out)

    base = coarsekl.load_config("paper-restore").with_overrides(
        {"steps": args.steps, "record.snapshots": [0, args.steps]}
    )
    runs = [
        coarsekl.run(base.with_overrides({"projector.delta": delta})).sel(scheme="proj")
        for delta in args.deltas
    ]
    combined = xr.concat(
        runs, dim=xr.DataArray(args.deltas, dims="delta_value", name="delta_value")
    )
    combined["delta_value"].attrs.update(long_name="tolerance δ of the run", units="1")
    coarsekl.save_trajectory(combined.drop_vars("state"), folder / "compare-deltas.nc")

    figure = Figure(figsize=(9, 3.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for delta in args.deltas:
        run = combined.sel(delta_value=delta).isel(member=0)
        axes[0].plot(run.step, run.E_block, label=f"δ = {delta:g}")
        axes[1].plot(run.step, run.mse, label=f"δ = {delta:g}")
    axes[0].set(title="projected E_block", xlabel="reverse step", ylabel="‖w − w_ref‖₁")
    axes[1].set(title="projected mse", xlabel="reverse step", ylabel="data intensity²")
    axes[0].legend()
    with atomic_path(folder / "compare-deltas.png") as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    print(f"wrote {folder / 'compare-deltas.nc'} and {folder / 'compare-deltas.png'}")


if __name__ == "__main__":
    main()
