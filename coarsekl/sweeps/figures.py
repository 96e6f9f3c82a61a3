"""The sweep figure: final E_block, max V_δ and final mse against each swept parameter.

One row per swept parameter (``seed`` only when nothing else is swept), one column per
summary, one line per scheme: the mean over the members and every other swept parameter,
with a band from the minimum to the maximum.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["SUMMARIES", "plot_sweep", "save_sweep_figures"]

SUMMARIES = (  # (variable, reduction over steps, panel title)
    ("E_block", "final", "final E_block"),
    ("V_delta", "max", "max V_δ over steps 1 … T"),
    ("mse", "final", "final mse"),
)
SCHEME_COLORS = {"base": "tab:blue", "proj": "tab:red"}
SCHEME_LABELS = {"base": "base", "proj": "proj (V_δ projection)"}


def _final(values: np.ndarray) -> np.ndarray:
    """The last non-NaN value along the last axis (runs of different lengths)."""
    valid = ~np.isnan(values)
    last = values.shape[-1] - 1 - np.argmax(valid[..., ::-1], axis=-1)
    final = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    return np.where(valid.any(axis=-1), final, np.nan)


def _summary(ds, variable: str, reduction: str):
    """``variable`` reduced over steps: (scheme, member, *sweep dims), in memory."""
    import xarray as xr

    data = ds[variable].load()
    if reduction == "max":  # step 0 is the initial state, the same in every scheme
        return data.sel(step=data.step > 0).max("step")
    return xr.apply_ufunc(_final, data, input_core_dims=[["step"]])


def _plotted_dims(ds) -> list[str]:
    names = [n for n in ds["sweep_seed"].dims]
    return [n for n in names if n != "seed"] or names


def plot_sweep(ds):
    """The sweep figure of an :func:`coarsekl.open_sweep` dataset (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    summaries = [s for s in SUMMARIES if s[0] in ds.data_vars]
    dims = _plotted_dims(ds)
    sweep_dims = list(ds["sweep_seed"].dims)
    figure = Figure(
        figsize=(3.7 * len(summaries) + 0.4, 2.9 * len(dims) + 0.6), layout="constrained"
    )
    axes = figure.subplots(len(dims), len(summaries), squeeze=False)
    for column, (variable, reduction, title) in enumerate(summaries):
        summary = _summary(ds, variable, reduction)
        units = ds[variable].attrs.get("units", "")
        for row, dim in enumerate(dims):
            ax = axes[row, column]
            others = [d for d in ("member", *sweep_dims) if d != dim and d in summary.dims]
            x, numeric = _positions(ds[dim].values)
            for scheme in summary["scheme"].values:
                values = summary.sel(scheme=scheme).transpose(dim, *others).values
                flat = values.reshape(len(x), -1)
                color = SCHEME_COLORS.get(str(scheme))
                with warnings.catch_warnings():  # an all-NaN column: a point not finished
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(flat, axis=1) if flat.size else flat[:, 0]
                    low, high = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
                ax.plot(x, mean, marker="o", color=color, label=SCHEME_LABELS.get(scheme, scheme))
                if flat.shape[1] > 1:
                    ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
            _axis(ax, ds, dim, x, numeric)
            ax.set_ylabel(f"{variable} [{units}]" if units not in ("", "1") else variable)
            if row == 0:
                ax.set_title(title)
    averaged = [d for d in ("member", *sweep_dims) if d in ds.dims and ds.sizes[d] > 1]
    note = ""
    if averaged:
        note = (
            f"\neach point: mean over {', '.join(averaged)} (all but the x axis); "
            "band: their min–max"
        )
    figure.suptitle(f"{ds.attrs.get('title', 'coarsekl sweep')}{note}", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    return figure


def _positions(values: np.ndarray) -> tuple[np.ndarray, bool]:
    if values.dtype.kind in "iuf":
        return values.astype(float), True
    return np.arange(len(values), dtype=float), False


def _axis(ax, ds, dim: str, x: np.ndarray, numeric: bool) -> None:
    zipped = [
        name
        for name in ds.coords
        if name != dim
        and ds[name].dims == (dim,)
        and "(zipped)" in ds[name].attrs.get("long_name", "")
    ]
    label = dim + (f" (with {', '.join(zipped)})" if zipped else "")
    ax.set_xlabel(label)
    if numeric and len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(x, [str(v) for v in ds[dim].values], rotation=20, fontsize=8)
    elif zipped and len(x) <= 8:
        ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.grid(alpha=0.3)


def save_sweep_figures(ds, folder: str | Path, stem: str) -> list[Path]:
    """Write ``<stem>_sweep.png`` into ``folder`` (atomically); return the paths."""
    from coarsekl.io import atomic_path

    path = Path(folder) / f"{stem}_sweep.png"
    figure = plot_sweep(ds)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return [path]
