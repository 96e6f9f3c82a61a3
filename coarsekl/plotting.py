"""The standard figures of a trajectory (matplotlib, no pyplot state).

* snapshots: the data image and every recorded snapshot of every scheme (paper Fig. 1);
* metrics: V, V_δ, E_block and the other per-step metrics, base solid and projected
  dashed (paper Fig. 2);
* block masses: every block's mass against the step, with the admissible band.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "FIGURES",
    "plot_block_masses",
    "plot_metrics",
    "plot_particles",
    "plot_snapshots",
    "save_figures",
    "write_figures",
]

SCHEME_STYLE = {
    "base": {"color": "tab:blue", "linestyle": "-", "label": "base"},
    "proj": {"color": "tab:red", "linestyle": "--", "label": "proj (V_δ projection)"},
}
HEADLINE_METRICS = ("V", "V_delta", "E_block")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _style(scheme: str) -> dict:
    return SCHEME_STYLE.get(str(scheme), {"linestyle": ":", "label": str(scheme)})


def _units(variable) -> str:
    units = variable.attrs.get("units", "")
    return "dimensionless" if units in ("", "1") else str(units)


def _quantity_scale(ds):
    """s_j = reference value / reference mass: 1 for block masses (then the bound is K·δ)."""
    return (ds.reference_value / ds.reference_mass.where(ds.reference_mass > 0)).fillna(1.0)


def plot_snapshots(ds, member: int = 0):
    """Data image and snapshots (in data intensity units, p · Σx) of every scheme.

    1-D states (distributions over the states of a chain) are drawn as one panel per scheme:
    the data and every snapshot against the site index. Particle ensembles are drawn as
    scatter plots (see :func:`plot_particles`).
    """
    if "position" in ds:
        return plot_particles(ds, member)
    if ds.data.ndim == 1:
        return _plot_snapshots_1d(ds, member)
    schemes = list(ds.scheme.values)
    snapshots = list(ds.snapshot.values)
    total = float(ds.data.sum())
    intensity = ds.state.isel(member=member) * total
    vmax = max(float(ds.data.max()), float(np.quantile(intensity.values, 0.995)))
    figure = _figure(2.1 * (len(snapshots) + 1) + 0.8, 2.2 * len(schemes) + 0.4)
    axes = figure.subplots(len(schemes), len(snapshots) + 1, squeeze=False)
    image = None
    for row, scheme in enumerate(schemes):
        for column, step in enumerate(["data", *snapshots]):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if step == "data":
                if row == 0:
                    ax.imshow(ds.data.values, cmap="magma", vmin=0, vmax=vmax)
                    ax.set_title("data")
                else:
                    ax.axis("off")
                continue
            values = intensity.sel(scheme=scheme, snapshot=step).values
            image = ax.imshow(values, cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(f"{scheme}, step {step}" if step else f"{scheme}, initial")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="intensity (p · Σx) [data units]")
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: snapshots of member {member}")
    return figure


def plot_particles(ds, member: int = 0, shown: int = 5000):
    """Particle snapshots, one panel per scheme and snapshot.

    2-D (or higher, first two coordinates) ensembles: scatter of up to ``shown`` particles
    (every k-th), marker area ∝ weight, with the data mixture's means (×) when recorded.
    Ensembles whose dimension is a square number ≥ 16 are images (e.g. 8 × 8 digits): a mosaic of 16
    particles spread evenly over the ensemble (a resampled ensemble lists its particles
    block by block).
    """
    schemes, snapshots = list(ds.scheme.values), list(ds.snapshot.values)
    dim = ds.sizes["dim"]
    side = math.isqrt(dim)
    as_images = dim >= 16 and side * side == dim
    figure = _figure(2.6 * len(snapshots) + 0.6, 2.6 * len(schemes) + 0.5)
    axes = figure.subplots(len(schemes), len(snapshots), squeeze=False)
    particles = ds.sizes["particle"]
    for row, scheme in enumerate(schemes):
        for column, step in enumerate(snapshots):
            ax = axes[row, column]
            chosen = ds.sel(scheme=scheme, snapshot=step).isel(member=member)
            positions = chosen.position.values
            title = f"{scheme}, step {step}" if step else f"{scheme}, initial"
            if as_images:
                chosen_rows = np.linspace(0, particles - 1, 16).astype(int)
                mosaic = np.full((4, side + 1, 4, side + 1), np.nan)
                tiles = positions[chosen_rows].reshape(4, 4, side, side).transpose(0, 2, 1, 3)
                mosaic[:, :side, :, :side] = tiles
                low, high = np.percentile(positions[chosen_rows], [1, 99])
                ax.imshow(
                    mosaic.reshape(4 * (side + 1), 4 * (side + 1))[:-1, :-1],
                    cmap="gray_r",
                    vmin=low,
                    vmax=high,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=9)
                continue
            if dim == 1:  # a weighted histogram of the positions
                ax.hist(positions[:, 0], bins=60, weights=chosen.weight.values, color="0.4")
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("x [data units]", fontsize=8)
                ax.set_ylabel("weight per bin", fontsize=8)
                continue
            every = -(-particles // shown)  # strided: resampled particles come block by block
            weights = chosen.weight.values[::every]
            ax.scatter(
                positions[::every, 0],
                positions[::every, 1],
                s=4 * weights * particles,
                color=_style(scheme).get("color", "tab:gray"),
                alpha=0.35,
                linewidths=0,
            )
            if "mixture_mean" in ds and step == snapshots[-1]:
                means = ds.mixture_mean.values
                ax.scatter(means[:, 0], means[:, 1], marker="x", color="k", s=30, label="μ_c")
                ax.legend(loc="upper right", fontsize=7)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("x₀ [data units]", fontsize=8)
            ax.set_ylabel("x₁ [data units]", fontsize=8)
            ax.tick_params(labelsize=7)
    what = "16 particles as images" if as_images else f"up to {shown} particles, area ∝ w"
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: member {member}, {what}")
    return figure


def _plot_snapshots_1d(ds, member: int):
    from matplotlib import colormaps

    schemes = list(ds.scheme.values)
    total = float(ds.data.sum())
    site = ds.data.dims[0]
    sites = ds[site].values
    colors = colormaps["viridis"](np.linspace(0, 0.9, ds.sizes["snapshot"]))
    figure = _figure(5.0 * len(schemes), 3.6)
    axes = figure.subplots(1, len(schemes), squeeze=False, sharey=True)[0]
    for ax, scheme in zip(axes, schemes, strict=True):
        ax.step(sites, ds.data.values, where="mid", color="0.2", linewidth=2, label="data")
        for step, color in zip(ds.snapshot.values, colors, strict=True):
            values = ds.state.sel(scheme=scheme, snapshot=step).isel(member=member) * total
            label = f"step {step}" if step else "initial"
            ax.step(sites, values.values, where="mid", color=color, linewidth=1, label=label)
        ax.set_title(str(scheme))
        ax.set_xlabel(f"{site} (chain state)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("intensity (p · Σx) [data units]")
    axes[-1].legend(fontsize=8)
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: snapshots of member {member}")
    return figure


def _band(ax, variable, style: dict) -> None:
    step = variable["step"].values
    if "member" in variable.dims and variable.sizes["member"] > 1:
        ax.fill_between(
            step,
            variable.min("member"),
            variable.max("member"),
            color=style.get("color"),
            alpha=0.15,
            linewidth=0,
        )
        variable = variable.mean("member")
    elif "member" in variable.dims:
        variable = variable.isel(member=0)
    ax.plot(step, variable.values, **style)


def plot_metrics(ds):
    """Per-step metrics against the step (member mean, min–max band over members)."""
    scalar = [
        name
        for name, v in ds.data_vars.items()
        if v.dims == ("scheme", "member", "step") and not name.endswith("_pre") and name != "leak"
    ]
    names = [n for n in HEADLINE_METRICS if n in scalar]
    names += [n for n in scalar if n not in names] + ["leak"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        for scheme in ds.scheme.values:
            style = _style(scheme)
            _band(ax, ds[name].sel(scheme=scheme), style)
            if f"{name}_pre" in ds and scheme == "proj":
                pre = {**style, "linestyle": ":", "label": "proj, before projection"}
                _band(ax, ds[f"{name}_pre"].sel(scheme=scheme), pre)
        if name == "E_block" and np.isfinite(ds.delta.values[1:]).any():
            # |w_j − w_ref_j| ≤ δ / s_j after a projection (s_j: the quantity's scale)
            scale = _quantity_scale(ds)
            bound = (ds.delta / scale).sum("block")
            label = "K·δ bound" if bool((scale == 1).all()) else "Σ_j δ/s_j bound"
            ax.plot(ds.step, bound, color="0.4", linewidth=0.8, label=label)
        long_name = ds[name].attrs.get("long_name", name)
        ax.set_title(f"{name}: {long_name}" if long_name != name else name, fontsize=9)
        ax.set_xlabel("reverse step")
        ax.set_ylabel(_units(ds[name]))
        ax.set_ylim(bottom=min(0, float(ds[name].min())))
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.axis("off")
    handles = {}
    for ax in axes[: len(names)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles))
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: metrics per step")
    return figure


def plot_block_masses(ds, member: int = 0):
    """Every block's mass against the step, per scheme, with reference ± δ bands."""
    schemes = list(ds.scheme.values)
    figure = _figure(5.0 * len(schemes), 3.6)
    axes = figure.subplots(1, len(schemes), squeeze=False, sharey=True)[0]
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0, 0.9, ds.sizes["block"]))
    delta = float(np.nanmax(ds.delta.values)) if np.isfinite(ds.delta.values).any() else None
    half_widths = (delta / _quantity_scale(ds)).values if delta is not None else None
    for ax, scheme in zip(axes, schemes, strict=True):
        masses = ds.block_mass.sel(scheme=scheme).isel(member=member)
        for block, color in zip(ds.block.values, colors, strict=True):
            ax.plot(ds.step, masses.sel(block=block), color=color, linewidth=1)
        if "target_mass" in ds:  # particle runs: the target moves with the noise level
            targets = ds.target_mass
            for block, color in zip(ds.block.values, colors, strict=True):
                target = targets.sel(block=block)
                ax.plot(ds.step, target, color=color, linewidth=0.8, linestyle=":")
                if delta is not None:
                    ax.fill_between(
                        ds.step, target - delta, target + delta, color=color, alpha=0.12, lw=0
                    )
            ax.set_title(f"{scheme}: block masses (member {member})")
            ax.set_xlabel("reverse step")
            ax.grid(alpha=0.3)
            continue
        references = ds.reference_mass.values
        # Blocks often share a reference value: draw each distinct band and line once.
        bands = {
            (round(r, 12), round(h, 12))
            for r, h in zip(
                references,
                half_widths if half_widths is not None else np.zeros_like(references),
                strict=True,
            )
        }
        for reference, half in bands:
            if half > 0:
                ax.axhspan(reference - half, reference + half, color="0.5", alpha=0.15, linewidth=0)
            ax.axhline(reference, color="0.2", linewidth=0.8, linestyle=":")
        ax.set_title(f"{scheme}: block masses (member {member})")
        ax.set_xlabel("reverse step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("block mass w_j")
    reference = "target w_ref(ᾱ)" if "target_mass" in ds else "reference w_ref"
    note = f"dotted: {reference}" + (", band: ± δ" if delta is not None else "")
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: block masses ({note})")
    return figure


FIGURES = {
    "snapshots": plot_snapshots,
    "metrics": plot_metrics,
    "block_masses": plot_block_masses,
}


def save_figures(ds, folder: str | Path, stem: str | None = None, dpi: int = 120) -> list[Path]:
    """Draw every standard figure and write ``folder/<stem>_<figure>.png`` atomically."""
    return write_figures(FIGURES, ds, folder, stem or ds.attrs.get("experiment", "trajectory"), dpi)


def write_figures(figures: dict, ds, folder: str | Path, stem: str, dpi: int = 120) -> list[Path]:
    """``figures`` maps a name to a function ``dataset -> Figure``; each is written to
    ``folder/<stem>_<name>.png`` atomically (scripted experiments use it for their own
    figures). Returns the paths."""
    from coarsekl.io import atomic_path, prepare_output_dir

    folder = prepare_output_dir(folder)
    written = []
    for name, draw in figures.items():
        path = folder / f"{stem}_{name}.png"
        with atomic_path(path) as temporary:
            draw(ds).savefig(temporary, format="png", dpi=dpi)
        written.append(path)
    return written
