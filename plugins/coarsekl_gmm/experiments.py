"""The scripted experiments ``gmm-samplers`` and ``gmm-guidance`` (analyses over many runs).

``gmm-samplers``: DDPM, DDIM and DPM-Solver++(2M) with the exact noise predictor on the
8-component ring, at 10, 20, 50 and 100 steps: distances of the samples to the exact
data, and for the two deterministic samplers the error against a fine-step solution from
the same initial noise (which removes the Monte Carlo noise and shows the order).

``gmm-guidance``: classifier guidance toward class 0 at strengths γ = 0 … 1, without and
with the V_δ projection of the class masses: guidance shifts the class proportions and
lowers the diversity; the projection keeps the proportions within δ.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import coarsekl
from coarsekl.errors import CoarseklWarning
from coarsekl.io import save_trajectory
from coarsekl.plotting import write_figures

__all__ = [
    "GuidanceSettings",
    "SamplerSettings",
    "guidance_study",
    "run_guidance",
    "run_samplers",
    "sampler_study",
    "save_guidance_figures",
    "save_sampler_figures",
]

SAMPLERS = ("ddpm", "ddim", "dpmpp-2m")
DETERMINISTIC = ("ddim", "dpmpp-2m")
LABELS = {"ddpm": "DDPM", "ddim": "DDIM (η = 0)", "dpmpp-2m": "DPM-Solver++(2M)"}
COLORS = {"ddpm": "tab:green", "ddim": "tab:blue", "dpmpp-2m": "tab:red"}
FLOOR_SAMPLES = 5  # exact samples whose distances give the Monte Carlo floor


def _ring_config(name: str, steps: int, particles: int, seed: int, kernel: dict) -> dict:
    return {
        "name": name,
        "steps": steps,
        "members": 1,
        "seed": seed,
        "particles": particles,
        "schemes": ["base"],
        "data": {"kind": "ring"},
        "initial": {"kind": "noise", "schedule": "cosine"},
        "partition": {"kind": "class"},
        "kernel": kernel,
        "record": {"metrics": ["E_block"], "snapshots": [steps]},
    }


@attrs.frozen(kw_only=True)
class SamplerSettings:
    """What ``gmm-samplers`` runs: particle count, step counts, the fine reference."""

    particles: int = 20_000
    steps: tuple[int, ...] = (10, 20, 50, 100)
    reference_steps: int = 1_000
    spacing: str = "logsnr"
    seed: int = 11


def _final_ensemble(config: dict) -> coarsekl.Ensemble:
    ds = coarsekl.run(config, threads=1)
    final = ds.isel(scheme=0, member=0, snapshot=-1)
    return coarsekl.Ensemble(final.position.values, final.weight.values, alpha_bar=1.0)


def sampler_study(settings: SamplerSettings | None = None, progress: bool = False):
    """Distances to the exact target and errors against the fine solution, as a Dataset
    with dims ``sampler`` and ``steps`` (plus the final particles for the figures)."""
    import xarray as xr

    from coarsekl_gmm import metrics as particle_metrics
    from coarsekl_gmm.data import RingData

    settings = settings or SamplerSettings()
    mixture = RingData().distribution(np.random.default_rng(0))
    metrics = {  # name -> (distance function, metric class with its long name and units)
        "sliced_wasserstein": (
            particle_metrics.sliced_wasserstein_to,
            particle_metrics.SlicedWasserstein,
        ),
        "energy_distance": (particle_metrics.energy_distance_to, particle_metrics.EnergyDistance),
        "binned_kl": (particle_metrics.binned_kl_to, particle_metrics.BinnedKL),
        "mean_error": (particle_metrics.mean_error, particle_metrics.MeanError),
    }
    shape = (len(SAMPLERS), len(settings.steps))
    distances = {name: np.full(shape, np.nan) for name in metrics}
    errors = np.full(shape, np.nan)
    shown = min(2_000, settings.particles)  # final positions kept for the figures
    finals = np.zeros((*shape, shown, 2))

    def kernel(name: str, steps: int) -> dict:
        return {"kind": name, "spacing": settings.spacing}

    reference = _final_ensemble(
        _ring_config(
            "gmm-samplers-reference",
            settings.reference_steps,
            settings.particles,
            settings.seed,
            kernel("dpmpp-2m", settings.reference_steps),
        )
    )
    runs = [(i, j) for i in range(len(SAMPLERS)) for j in range(len(settings.steps))]
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc="gmm-samplers", unit="run", leave=False)
    for i, j in runs:
        name, steps = SAMPLERS[i], settings.steps[j]
        final = _final_ensemble(
            _ring_config(
                f"gmm-samplers-{name}-{steps}",
                steps,
                settings.particles,
                settings.seed,
                kernel(name, steps),
            )
        )
        for metric_name, (distance, _) in metrics.items():
            distances[metric_name][i, j] = float(distance(mixture, final.positions, final.weights))
        if name in DETERMINISTIC:
            gap = np.linalg.norm(final.positions - reference.positions, axis=-1)
            errors[i, j] = float(np.sqrt(np.mean(gap**2)))
        finals[i, j] = final.positions[:shown]
    floor_rng = np.random.default_rng(settings.seed)
    exact = [mixture.sample(settings.particles, floor_rng)[0] for _ in range(FLOOR_SAMPLES)]
    uniform = np.full(settings.particles, 1.0 / settings.particles)
    orders = {}
    for i, name in enumerate(SAMPLERS):
        if name in DETERMINISTIC:
            slope = np.polyfit(np.log(settings.steps), np.log(errors[i]), 1)[0]
            orders[name] = -float(slope)
    data_vars: dict[str, Any] = {
        name: (
            ("sampler", "steps"),
            values,
            {"long_name": metrics[name][1].long_name, "units": metrics[name][1].units},
        )
        for name, values in distances.items()
    }
    for name, (distance, metric) in metrics.items():
        values = [float(distance(mixture, sample, uniform)) for sample in exact]
        data_vars[f"{name}_floor"] = (
            "exact_sample",
            np.array(values),
            {
                "long_name": f"{metric.long_name} of {settings.particles} exact samples "
                "(the Monte Carlo floor and its spread)",
                "units": metric.units,
            },
        )
    data_vars["fine_error"] = (
        ("sampler", "steps"),
        errors,
        {
            "long_name": f"RMS distance to the {settings.reference_steps}-step DPM-Solver++(2M) "
            "solution from the same noise (deterministic samplers)",
            "units": "data units",
        },
    )
    data_vars["order"] = (
        "sampler",
        np.array([orders.get(name, np.nan) for name in SAMPLERS]),
        {"long_name": "convergence order fitted to fine_error (−slope in log–log)", "units": "1"},
    )
    data_vars["final_position"] = (
        ("sampler", "steps", "particle", "dim"),
        finals,
        {"long_name": f"final positions (first {shown} particles)", "units": "data units"},
    )
    data_vars |= mixture.dataset_variables()
    return xr.Dataset(
        data_vars,
        coords={
            "sampler": ("sampler", list(SAMPLERS), {"long_name": "diffusion sampler"}),
            "steps": ("steps", np.array(settings.steps), {"long_name": "steps", "units": "1"}),
        },
        attrs={
            "title": "coarsekl: diffusion samplers on a Gaussian mixture with exact scores",
            "experiment": "gmm-samplers",
            "coarsekl_version": coarsekl.__version__,
            "particles": settings.particles,
            "spacing": settings.spacing,
            "seed": settings.seed,
        },
    )


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _sample_panel(ax, positions, sizes, color, means, title: str) -> None:
    """One panel of samples in the (x₀, x₁) plane over the component means (×)."""
    ax.scatter(*positions.T, s=sizes, alpha=0.4, color=color, linewidths=0)
    ax.scatter(*means.T, marker="x", color="k", s=20)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def _label_plane(axes) -> None:
    """Axis labels of a grid of panels in the (x₀, x₁) plane: bottom row and left column."""
    for ax in axes[-1]:
        ax.set_xlabel("x₀ [data units]", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("x₁ [data units]", fontsize=8)


def plot_sampler_distances(ds):
    """Distance to the target and error against the fine solution, against the steps."""
    figure = _figure(14, 4.0)
    axes = figure.subplots(1, 3)
    steps = ds.steps.values
    for ax, name in zip(axes[:2], ("sliced_wasserstein", "energy_distance"), strict=True):
        for sampler in ds.sampler.values:
            ax.loglog(
                steps,
                ds[name].sel(sampler=sampler),
                marker="o",
                color=COLORS[sampler],
                label=LABELS[sampler],
            )
        floor = ds[f"{name}_floor"]
        ax.axhspan(
            float(floor.min()),
            float(floor.max()),
            color="0.5",
            alpha=0.25,
            lw=0,
            label=f"{floor.size} exact samples (MC spread)",
        )
        ax.set_title(ds[name].attrs["long_name"], fontsize=9)
        ax.set_xlabel("steps")
        ax.set_ylabel(ds[name].attrs["units"])
        ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    for sampler in DETERMINISTIC:
        order = float(ds.order.sel(sampler=sampler))
        ax.loglog(
            steps,
            ds.fine_error.sel(sampler=sampler),
            marker="o",
            color=COLORS[sampler],
            label=f"{LABELS[sampler]}: order {order:.2f}",
        )
    first = float(ds.fine_error.sel(sampler="ddim")[0])
    ax.loglog(steps, first * (steps[0] / steps), color="0.5", ls=":", label="slope −1")
    ax.loglog(steps, first * (steps[0] / steps) ** 2, color="0.5", ls="--", label="slope −2")
    ax.set_title("error against the fine-step solution (same noise)", fontsize=9)
    ax.set_xlabel("steps")
    ax.set_ylabel("RMS distance [data units]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"gmm-samplers: exact predictor, {ds.attrs['particles']} particles, 8-component ring"
    )
    return figure


def plot_sampler_samples(ds):
    """Final samples of every sampler and step count over the data's component means."""
    samplers, steps = list(ds.sampler.values), list(ds.steps.values)
    figure = _figure(2.6 * len(steps), 2.6 * len(samplers) + 0.4)
    axes = figure.subplots(len(samplers), len(steps), squeeze=False, sharex=True, sharey=True)
    means = ds.mixture_mean.values
    for row, sampler in enumerate(samplers):
        for column, count in enumerate(steps):
            ax = axes[row, column]
            positions = ds.final_position.sel(sampler=sampler, steps=count).values
            title = f"{LABELS[sampler]}, {count} steps"
            _sample_panel(ax, positions, 1, COLORS[sampler], means, title)
    _label_plane(axes)
    figure.suptitle("gmm-samplers: final samples (× component means)")
    return figure


SAMPLER_FIGURES = {"distances": plot_sampler_distances, "samples": plot_sampler_samples}


def save_sampler_figures(ds, folder: str | Path, stem: str = "gmm-samplers", *, dpi=120):
    """The figures of a ``gmm-samplers`` dataset (what ``coarsekl plot`` calls)."""
    return write_figures(SAMPLER_FIGURES, ds, folder, stem, dpi)


def run_samplers(
    folder: str | Path,
    *,
    figures: bool = True,
    progress: bool = False,
    settings: SamplerSettings | None = None,
) -> list[Path]:
    """``coarsekl run gmm-samplers``: write ``gmm-samplers.nc`` and its figures."""
    ds = sampler_study(settings, progress=progress)
    return _write_study(ds, folder, "gmm-samplers", save_sampler_figures if figures else None)


@attrs.frozen(kw_only=True)
class GuidanceSettings:
    """What ``gmm-guidance`` runs."""

    strengths: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    projector: str = "resample"
    particles: int = 10_000
    steps: int = 50
    delta: float = 0.02
    guided_class: int = 0
    seed: int = 13


def guidance_study(settings: GuidanceSettings | None = None, progress: bool = False):
    """Final class masses and entropies against the guidance strength γ, base and proj."""
    import xarray as xr

    settings = settings or GuidanceSettings()
    strengths = list(settings.strengths)
    if progress:
        from tqdm.auto import tqdm

        strengths = tqdm(strengths, desc="gmm-guidance", unit="run", leave=False)
    finals = []
    for gamma in strengths:
        config = _ring_config(
            f"gmm-guidance-{gamma:g}",
            settings.steps,
            settings.particles,
            settings.seed,
            {"kind": "ddim", "guidance": gamma, "guidance_class": settings.guided_class},
        )
        config["schemes"] = ["base", "proj"]
        config["projector"] = {"kind": settings.projector, "delta": settings.delta}
        config["record"] = {
            "metrics": ["E_block", "class_entropy", "posterior_entropy", "ess"],
            "snapshots": [settings.steps],
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CoarseklWarning)
            ds = coarsekl.run(config)
        final = ds.isel(member=0, step=-1, snapshot=-1).drop_vars(["step", "snapshot"])
        emptied = any(issubclass(w.category, CoarseklWarning) for w in caught)
        finals.append(final.assign(classes_emptied=emptied))
    result = xr.concat(finals, dim="guidance", coords="minimal", compat="override")
    result = result.assign_coords(
        guidance=("guidance", np.array(settings.strengths), {"long_name": "guidance γ"})
    )
    keep = [
        "block_mass",
        "target_mass",
        "E_block",
        "class_entropy",
        "posterior_entropy",
        "ess",
        "position",
        "weight",
        "mixture_mean",
        "classes_emptied",
    ]
    result = result[keep]
    result["classes_emptied"].attrs = {
        "long_name": "some class lost all its particles, so the projection could not hold "
        "its mass (bounds widened)"
    }
    result.attrs = {
        "title": "coarsekl: classifier guidance on a Gaussian mixture, with and without V_δ",
        "experiment": "gmm-guidance",
        "coarsekl_version": coarsekl.__version__,
        "guided_class": settings.guided_class,
        "delta": settings.delta,
        "particles": settings.particles,
        "steps": settings.steps,
    }
    return result


def plot_guidance(ds):
    """Guided class's mass, class diversity and posterior entropy against γ."""
    from coarsekl.plotting import SCHEME_STYLE

    figure = _figure(13, 3.6)
    axes = figure.subplots(1, 3)
    guided = int(ds.attrs["guided_class"])
    delta = float(ds.attrs["delta"])
    gamma = ds.guidance.values
    target = float(ds.target_mass.isel(guidance=0).sel(block=guided))
    panels = [
        (ds.block_mass.sel(block=guided), f"mass of the guided class {guided}", "1"),
        (ds.class_entropy, "class diversity H(w)", "nat"),
        (ds.posterior_entropy, "mean posterior entropy", "nat"),
    ]
    emptied = ds.classes_emptied.values.astype(bool)
    for ax, (values, title, units) in zip(axes, panels, strict=True):
        for scheme in ds.scheme.values:
            style = SCHEME_STYLE.get(str(scheme), {})
            ax.plot(gamma, values.sel(scheme=scheme), marker="o", **style)
        if emptied.any():
            ax.plot(
                gamma[emptied],
                values.sel(scheme="proj").values[emptied],
                linestyle="none",
                marker="o",
                markersize=11,
                markerfacecolor="none",
                color="k",
                label="proj: a class emptied, bounds widened",
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("guidance strength γ")
        ax.set_ylabel(units)
        ax.grid(alpha=0.3)
    axes[0].axhspan(target - delta, target + delta, color="0.5", alpha=0.2, label="target ± δ")
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"gmm-guidance: DDIM {ds.attrs['steps']} steps, {ds.attrs['particles']} particles, "
        f"guidance toward class {guided}"
    )
    return figure


def plot_guidance_samples(ds):
    """Final particles for every γ, base and projected (marker area ∝ weight)."""
    from coarsekl.plotting import SCHEME_STYLE

    schemes, gammas = list(ds.scheme.values), list(ds.guidance.values)
    figure = _figure(2.3 * len(gammas), 2.5 * len(schemes) + 0.4)
    axes = figure.subplots(len(schemes), len(gammas), squeeze=False, sharex=True, sharey=True)
    shown = 3_000
    particles = ds.sizes["particle"]
    for row, scheme in enumerate(schemes):
        for column, gamma in enumerate(gammas):
            ax = axes[row, column]
            final = ds.sel(scheme=scheme, guidance=gamma)
            every = -(-particles // shown)  # strided: resampled particles come block by block
            positions = final.position.values[::every]
            weights = final.weight.values[::every]
            color = SCHEME_STYLE.get(str(scheme), {}).get("color", "tab:gray")
            title = f"{scheme}, γ = {gamma:g}"
            means = ds.mixture_mean.values
            _sample_panel(ax, positions, 2 * weights * particles, color, means, title)
    _label_plane(axes)
    figure.suptitle("gmm-guidance: final samples (area ∝ weight; × component means)")
    return figure


GUIDANCE_FIGURES = {"strength": plot_guidance, "samples": plot_guidance_samples}


def save_guidance_figures(ds, folder: str | Path, stem: str = "gmm-guidance", *, dpi=120):
    """The figures of a ``gmm-guidance`` dataset (what ``coarsekl plot`` calls)."""
    return write_figures(GUIDANCE_FIGURES, ds, folder, stem, dpi)


def run_guidance(
    folder: str | Path,
    *,
    figures: bool = True,
    progress: bool = False,
    settings: GuidanceSettings | None = None,
) -> list[Path]:
    """``coarsekl run gmm-guidance``: write ``gmm-guidance.nc`` and its figures."""
    ds = guidance_study(settings, progress=progress)
    return _write_study(ds, folder, "gmm-guidance", save_guidance_figures if figures else None)


def _write_study(ds, folder: str | Path, name: str, save_figures) -> list[Path]:
    """``name``.nc in ``folder``, then the figures ``save_figures(ds, folder)`` (if any)."""
    written = [save_trajectory(ds, Path(folder) / f"{name}.nc")]
    if save_figures is not None:
        written += save_figures(ds, folder)
    return written
