"""The named experiment ``theorems``: the paper's Theorems 1 and 2 on random chains.

* Theorem 1: along random time-inhomogeneous block-diagonal chains that keep every π_j
  invariant, V_π never increases; with row-stochastic blocks that do not keep π_j
  invariant it does (the assumption matters).
* Theorem 2: with off-block leakage ε and the V_δ projection after every step, the
  largest per-step increase of V is at most C·ε. The constant comes from the proof: with
  P_ε = (1 − ε) B + ε L (B block-diagonal and π-preserving, L off-block), convexity of
  D(· ‖ π_j), the data-processing inequality and D(· ‖ π_j) ≤ Λ = max_j log(1 / min π_j)
  give, per step,

      V(p_t) − V(p_{t−1}) ≤ Λ (ρ_t ε + ½ ‖w_t − w_{t−1}‖₁),   ρ_t = max_j w_t,j / w'_t,j,

  with w' the block masses of the kernel's output and w_t those after the projection;
  C = max over steps of that bound / ε (ρ_t → 1 and ‖w_t − w_{t−1}‖₁ = O(ε)).
* Block-mass drift: E_block grows with the accumulated leakage without projection and
  stays ≤ K·δ with it.

Every run goes through :func:`coarsekl.run` with the chain components of this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from coarsekl.errors import ConfigError
from coarsekl.io import save_trajectory

__all__ = [
    "DEFAULT_SETTINGS",
    "DRIFT_FAMILY",
    "LEAK_FAMILIES",
    "THEOREM1_KERNELS",
    "TheoremSettings",
    "fit_power_law",
    "plot_block_drift",
    "plot_theorem1",
    "plot_theorem2",
    "run_theorems",
    "theorem1",
    "theorem2",
    "theorems",
]

NAME = "theorems"
# Theorem 1: (label, kernel table, reference π uniform?, initial state)
THEOREM1_KERNELS: dict[str, tuple[dict[str, Any], bool, str]] = {
    "doubly stochastic, π uniform": (
        {"kind": "random-block", "family": "doubly-stochastic"},
        True,
        "dirichlet",
    ),
    "Metropolis, π invariant": (
        {"kind": "random-block", "family": "stationary"},
        False,
        "dirichlet",
    ),
    "row-stochastic, π not invariant": (
        {"kind": "random-block", "family": "stochastic"},
        False,
        "equilibrium",
    ),
}
# Theorem 2: block kernels mixed with random off-block leakage ε (π uniform). Mixing
# kernels hold the chain near its within-block equilibrium, where the first-order effect
# of the leak vanishes (increase ∝ ε²); random permutations do not mix, the chain stays
# away from equilibrium, and sparse leak rows (Dirichlet 0.1) can raise V at first order.
LEAK_FAMILIES: dict[str, dict[str, Any]] = {
    "mixing (Birkhoff, 4 permutations)": {"kind": "random-block", "family": "doubly-stochastic"},
    "no mixing (1 permutation, sparse leak)": {
        "kind": "random-block",
        "family": "doubly-stochastic",
        "permutations": 1,
        "concentration": 0.1,
    },
}
DRIFT_FAMILY = "mixing (Birkhoff, 4 permutations)"


def _positive_int(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an integer ≥ 1, got {value!r}")


def _epsilons(value) -> tuple[float, ...]:
    values = tuple(float(v) for v in value)
    if len(values) < 2 or not all(0 < v <= 1 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"epsilons must be at least two distinct values in (0, 1], got {value}")
    return tuple(sorted(values))


def _block_sizes(value) -> tuple[int, ...]:
    sizes = tuple(value)
    if len(sizes) < 2 or not all(isinstance(s, int) and s >= 2 for s in sizes):
        raise ConfigError(f"block_sizes must be ≥ 2 integers ≥ 2 (K ≥ 2 blocks), got {value}")
    return sizes


@attrs.frozen(kw_only=True)
class TheoremSettings:
    """Sizes of the theorems experiment (the defaults take a few seconds)."""

    block_sizes: tuple[int, ...] = attrs.field(default=(3, 4, 5), converter=_block_sizes)
    members: int = attrs.field(default=100, validator=_positive_int)
    """random chains per kernel family and ε (ensemble members)"""
    steps: int = attrs.field(default=60, validator=_positive_int)
    epsilons: tuple[float, ...] = attrs.field(
        default=tuple(np.logspace(-4, -1, 13).tolist()), converter=_epsilons
    )
    delta: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @property
    def n_states(self) -> int:
        return sum(self.block_sizes)

    def chain(self) -> tuple[list[float], list[float]]:
        """(data intensities, non-uniform reference π), reproducible from the seed."""
        rng = np.random.default_rng(self.seed)
        data = rng.uniform(0.5, 1.5, self.n_states)
        reference = rng.uniform(0.2, 1.0, self.n_states)
        return data.tolist(), reference.tolist()


DEFAULT_SETTINGS = TheoremSettings()
"""What ``coarsekl run theorems`` uses (100 chains × 60 steps, 13 values of ε)."""


def _config(settings: TheoremSettings, name: str, **tables: Any) -> dict[str, Any]:
    data, _ = settings.chain()
    return {
        "name": name,
        "steps": settings.steps,
        "members": settings.members,
        "seed": settings.seed,
        "data": {"kind": "vector", "values": data},
        "partition": {"kind": "label-vector", "sizes": list(settings.block_sizes)},
        "record": {"snapshots": [0]},
        **tables,
    }


def _progress(items, progress: bool, description: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="run", leave=False)


def theorem1(settings: TheoremSettings, *, registry=None, progress: bool = False):
    """V_π along random chains of every THEOREM1_KERNELS family: ``V1 (kernel, member, step)``."""
    import xarray as xr

    from coarsekl.runner import run

    _, reference = settings.chain()
    trajectories = []
    for label in _progress(list(THEOREM1_KERNELS), progress, "Theorem 1"):
        kernel, uniform, initial = THEOREM1_KERNELS[label]
        config = _config(
            settings,
            f"{NAME}-theorem1",
            schemes=["base"],
            kernel=kernel,
            initial={"kind": initial},
            record={"metrics": ["V_pi"], "snapshots": [0]},
        )
        if not uniform:
            config["partition"]["reference"] = reference
        trajectories.append(run(config, registry=registry).V_pi.sel(scheme="base").values)
    return xr.Dataset(
        {
            "V1": (
                ("kernel", "member", "step"),
                np.stack(trajectories),
                {
                    "long_name": "V_π along random block-preserving chains (Theorem 1)",
                    "units": "nat",
                },
            )
        },
        coords={
            "kernel": ("kernel", list(THEOREM1_KERNELS), {"long_name": "random kernel family"}),
            "step": ("step", np.arange(settings.steps + 1), {"long_name": "step", "units": "1"}),
        },
    )


def theorem2(settings: TheoremSettings, *, registry=None, progress: bool = False):
    """V, E_block and the Theorem 2 bound for every leak family and ε, base and projected.

    Variables: ``V`` and ``E_block`` (family, epsilon, scheme, member, step); ``bound``
    (family, epsilon, member, step), the per-step bound of the module docstring for the
    projected scheme; ``increase`` (family, epsilon): max over members and steps of
    V_t − V_{t−1} of the projected scheme.
    """
    import xarray as xr

    from coarsekl.runner import run

    sizes = np.array(settings.block_sizes)
    indicator = (np.repeat(np.arange(sizes.size), sizes)[:, None] == np.arange(sizes.size)) * 1.0
    log_bound = float(np.log(sizes.max()))  # Λ = max_j log(1 / min π_j), π uniform
    runs = [(f, e) for f in LEAK_FAMILIES for e in settings.epsilons]
    shape = (len(LEAK_FAMILIES), len(settings.epsilons))
    potential, error, bound = [], [], []
    for family, epsilon in _progress(runs, progress, "Theorem 2"):
        proposals = np.zeros((settings.steps + 1, settings.members, sizes.size))

        def keep(record, proposals=proposals):  # masses w' of the kernel's output, proj
            proposals[record["step"]] = record["proposal"][-1] @ indicator

        config = _config(
            settings,
            f"{NAME}-theorem2",
            schemes=["base", "proj"],
            kernel={**LEAK_FAMILIES[family], "leakage": epsilon},
            initial={"kind": "dirichlet", "block_masses": "reference"},
            projector={"kind": "vdelta", "delta": settings.delta},
            record={"metrics": ["V_pi", "E_block"], "snapshots": [0]},
        )
        ds = run(config, registry=registry, callback=keep)
        potential.append(ds.V_pi.values)
        error.append(ds.E_block.values)
        masses = ds.block_mass.sel(scheme="proj").values.swapaxes(0, 1)  # (step, member, K)
        ratio = np.max(masses[1:] / proposals[1:], axis=-1)
        moved = 0.5 * np.abs(np.diff(masses, axis=0)).sum(axis=-1)
        per_step = log_bound * (ratio * epsilon + moved)  # (step, member)
        bound.append(np.concatenate([np.full((1, settings.members), np.nan), per_step]).T)
    dims = ("family", "epsilon", "scheme", "member", "step")
    V = np.reshape(potential, (*shape, 2, settings.members, settings.steps + 1))
    increase = np.diff(V[:, :, 1], axis=-1).max(axis=(-2, -1))
    return xr.Dataset(
        {
            "V": (dims, V, {"long_name": "within-block KL to uniform V", "units": "nat"}),
            "E_block": (
                dims,
                np.reshape(error, V.shape),
                {"long_name": "L1 block-mass error E_block", "units": "1"},
            ),
            "bound": (
                dims[:2] + dims[3:],
                np.reshape(bound, (*shape, settings.members, settings.steps + 1)),
                {
                    "long_name": "Theorem 2 bound Λ(ρ_t ε + ½‖w_t − w_t−1‖₁) of the step",
                    "units": "nat",
                },
            ),
            "increase": (
                ("family", "epsilon"),
                increase,
                {"long_name": "largest per-step increase of V, projected", "units": "nat"},
            ),
        },
        coords={
            "family": ("family", list(LEAK_FAMILIES), {"long_name": "block kernel family"}),
            "epsilon": (
                "epsilon",
                np.array(settings.epsilons),
                {"long_name": "leakage ε (fraction of mass leaving its block)", "units": "1"},
            ),
            "scheme": ("scheme", ["base", "proj"], {"long_name": "sampling scheme"}),
            "step": ("step", np.arange(settings.steps + 1), {"long_name": "step", "units": "1"}),
        },
        attrs={"Lambda": log_bound, "n_blocks": int(sizes.size), "delta": settings.delta},
    )


def fit_power_law(epsilons: np.ndarray, increases: np.ndarray) -> tuple[float, float]:
    """(slope a, prefactor c) of the least-squares fit log y = log c + a log ε over y > 0."""
    epsilons, increases = np.asarray(epsilons), np.asarray(increases)
    positive = increases > 0
    if positive.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(epsilons[positive]), np.log(increases[positive]), 1)
    return float(slope), float(np.exp(intercept))


def theorems(settings: TheoremSettings | None = None, *, progress: bool = False):
    """Run both theorem checks; one dataset with the fitted slopes and C as attributes."""
    import xarray as xr

    from coarsekl._version import __version__
    from coarsekl.manager import get_registry

    settings = settings or DEFAULT_SETTINGS
    registry = get_registry()
    first = theorem1(settings, registry=registry, progress=progress)
    second = theorem2(settings, registry=registry, progress=progress)
    ds = xr.merge([first, second], combine_attrs="override")
    constant = float(np.nanmax(second.bound.max(["member", "step"]) / second.epsilon))
    slopes = {
        family: fit_power_law(second.epsilon.values, second.increase.sel(family=family).values)
        for family in LEAK_FAMILIES
    }
    ds["slope"] = (
        "family",
        [slopes[f][0] for f in LEAK_FAMILIES],
        {"long_name": "fitted exponent a of increase ≈ c·ε^a", "units": "1"},
    )
    ds["prefactor"] = (
        "family",
        [slopes[f][1] for f in LEAK_FAMILIES],
        {"long_name": "fitted prefactor c of increase ≈ c·ε^a", "units": "nat"},
    )
    ds.attrs = {
        "title": "coarsekl: Theorems 1 and 2 on random finite-state chains",
        "experiment": NAME,
        "coarsekl_version": __version__,
        "settings": repr(settings),
        "C": constant,
        "Lambda": float(second.attrs["Lambda"]),
        "n_blocks": int(second.attrs["n_blocks"]),
        "delta": float(settings.delta),
    }
    return ds


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_theorem1(ds):
    """V_π against the step for every random chain (one line per member), per kernel family."""
    figure = _figure(13.5, 3.8)
    axes = figure.subplots(1, ds.sizes["kernel"], squeeze=False)[0]
    for ax, kernel in zip(axes, ds.kernel.values, strict=True):
        values = ds.V1.sel(kernel=kernel).transpose("step", "member").values
        invariant = not str(kernel).startswith("row-stochastic")
        largest = float(np.diff(values, axis=0).max())
        color = "tab:blue" if invariant else "tab:red"
        if invariant:  # decays over many orders of magnitude
            ax.semilogy(ds.step, np.maximum(values, 1e-16), color=color, alpha=0.25, lw=0.7)
            ax.set_ylim(bottom=1e-16)
        else:
            ax.plot(ds.step, values, color=color, alpha=0.25, lw=0.7)
        verdict = "never increases" if largest <= 1e-12 else "increases"
        ax.set_title(f"{kernel}\nlargest step change of V: {largest:+.2g} ({verdict})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("V_π = Σ_j w_j D(p(·|j) ‖ π_j)  [nat]")
    figure.suptitle(
        f"Theorem 1: V along {ds.sizes['member']} random time-inhomogeneous block-diagonal "
        "chains per family"
    )
    return figure


def plot_theorem2(ds):
    """Largest per-step increase of V (projected) against ε, log-log, fits and C·ε."""
    figure = _figure(6.8, 4.8)
    ax = figure.subplots()
    epsilon = ds.epsilon.values
    for family, color in zip(ds.family.values, ("tab:blue", "tab:orange"), strict=False):
        increase = ds.increase.sel(family=family).values
        slope = float(ds.slope.sel(family=family))
        prefactor = float(ds.prefactor.sel(family=family))
        positive = increase > 0
        ax.loglog(epsilon[positive], increase[positive], "o", color=color, label=str(family))
        ax.loglog(
            epsilon,
            prefactor * epsilon**slope,
            "--",
            color=color,
            lw=1,
            label=f"fit {prefactor:.2g}·ε^{slope:.2f}",
        )
    constant = ds.attrs["C"]
    ax.loglog(
        epsilon,
        constant * epsilon,
        color="0.2",
        lw=1.5,
        label=f"C·ε (bound of the proof), C = {constant:.2f}",
    )
    ax.set_xlabel("leakage ε")
    ax.set_ylabel("max per-step increase of V  [nat]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        f"Theorem 2: leakage ε, V_δ projection (δ = {ds.attrs['delta']:g}) after every step",
        fontsize=10,
    )
    return figure


def plot_block_drift(ds, family: str = DRIFT_FAMILY, epsilons=(1e-3, 1e-2, 1e-1)):
    """E_block (worst member) against the step for several ε: base solid, projected
    dashed (the same as base until the masses reach the band), and the K·δ bound."""
    from matplotlib import colormaps

    figure = _figure(6.8, 4.8)
    ax = figure.subplots()
    chosen = sorted({float(ds.epsilon.sel(epsilon=e, method="nearest")) for e in epsilons})
    colors = colormaps["viridis"](np.linspace(0, 0.85, len(chosen)))
    steps = ds.step.values[1:]
    for epsilon, color in zip(chosen, colors, strict=True):
        runs = ds.E_block.sel(family=family, epsilon=epsilon).isel(step=slice(1, None))
        for scheme, style, width in (("base", "-", 1.2), ("proj", "--", 2.2)):
            worst = runs.sel(scheme=scheme).max("member").values
            label = f"ε = {epsilon:.0e}, {'base' if scheme == 'base' else 'projected'}"
            ax.semilogy(steps, worst, style, color=color, lw=width, label=label)
    bound = ds.attrs["n_blocks"] * ds.attrs["delta"]
    ax.axhline(bound, color="tab:red", lw=1.2, label=f"K·δ = {bound:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("E_block = ‖w − w_ref‖₁ (max over members)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncols=2, loc="lower right")
    ax.set_title(f"Block-mass drift under leakage ε ({family})", fontsize=10)
    return figure


FIGURES = {"theorem1": plot_theorem1, "theorem2": plot_theorem2, "block_drift": plot_block_drift}


def run_theorems(
    folder: str | Path,
    *,
    figures: bool = True,
    progress: bool = False,
    settings: TheoremSettings | None = None,
    dpi: int = 120,
) -> list[Path]:
    """The scripted experiment: write ``theorems.nc`` and ``theorems_<figure>.png`` into
    ``folder`` (atomically) and return their paths."""
    folder = Path(folder)
    ds = theorems(settings, progress=progress)
    written = [save_trajectory(ds, folder / f"{NAME}.nc")]
    if figures:
        written += save_figures(ds, folder, NAME, dpi=dpi)
    return written


def save_figures(ds, folder: str | Path, stem: str = NAME, *, dpi: int = 120) -> list[Path]:
    """Draw the three figures of a ``theorems`` dataset into ``folder`` as
    ``<stem>_<figure>.png`` (atomically); what ``coarsekl plot theorems.nc`` calls."""
    from coarsekl.plotting import write_figures

    return write_figures(FIGURES, ds, folder, stem, dpi)
