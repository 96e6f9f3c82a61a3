"""Specification of the named experiment ``theorems`` (THEORY.md §5), on a small chain.

Theorem 1: V_π never increases along random π-invariant block chains, and increases
without π-invariance. Theorem 2: with leakage ε from 1e-4 to 1e-1 and the V_δ projection,
every per-step increase of V lies under the bound of the proof, one constant C bounds it
by C·ε over the whole range, the fitted exponent is at least 0.9, and the projected
E_block never exceeds K·δ while the unprojected one drifts past it.
"""

from __future__ import annotations

import numpy as np
import pytest

import coarsekl
from coarsekl.cli import main
from coarsekl.errors import ConfigError
from coarsekl_chains import theorems as theorems_module
from coarsekl_chains.theorems import LEAK_FAMILIES, TheoremSettings, fit_power_law, theorems

SMALL = TheoremSettings(
    block_sizes=(2, 3, 4), members=24, steps=30, epsilons=np.logspace(-4, -1, 4).tolist()
)


@pytest.fixture(scope="module")
def results():
    return theorems(SMALL)


def test_theorem_1_V_never_increases_with_pi_invariant_kernels_and_does_without(results):
    changes = results.V1.diff("step").max(["member", "step"])
    for kernel in results.kernel.values:
        if str(kernel).startswith("row-stochastic"):
            assert float(changes.sel(kernel=kernel)) > 1e-2
        else:
            assert float(changes.sel(kernel=kernel)) <= 1e-12
            assert float(results.V1.sel(kernel=kernel).isel(step=0).min()) > 1e-2


def test_theorem_2_every_step_obeys_the_bound_of_the_proof(results):
    change = results.V.sel(scheme="proj").diff("step")
    bound = results.bound.isel(step=slice(1, None))
    assert bool((change <= bound + 1e-14).all())


def test_theorem_2_one_constant_bounds_the_increase_by_C_epsilon_and_it_vanishes(results):
    constant, log_bound = results.attrs["C"], results.attrs["Lambda"]
    assert 0 < constant <= 3 * log_bound  # block masses move O(ε) per step
    assert bool((results.increase <= constant * results.epsilon).all())
    for family in LEAK_FAMILIES:
        increase = results.increase.sel(family=family).values
        slope, _ = fit_power_law(results.epsilon.values, increase)
        assert slope >= 0.9, family
        assert float(results.slope.sel(family=family)) == pytest.approx(slope)
        assert increase[0] <= (1e-3) ** 0.9 * increase[-1]  # vanishes as ε → 0


def test_projected_block_mass_error_is_held_below_K_delta_and_the_baseline_drifts(results):
    bound = results.attrs["n_blocks"] * results.attrs["delta"]
    assert float(results.E_block.sel(scheme="proj").max()) <= bound + 1e-12
    largest = results.E_block.sel(scheme="base", epsilon=results.epsilon[-1]).isel(step=-1)
    assert float(largest.min()) > bound
    smallest = results.E_block.sel(scheme="base", epsilon=results.epsilon[0]).isel(step=-1)
    assert float(smallest.max()) < bound


def test_power_law_fit_recovers_a_known_exponent():
    epsilon = np.logspace(-4, -1, 5)
    assert fit_power_law(epsilon, 0.3 * epsilon**1.5) == pytest.approx((1.5, 0.3))


def test_coarsekl_run_theorems_writes_the_dataset_and_three_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(theorems_module, "DEFAULT_SETTINGS", SMALL)
    assert main(["run", "theorems", "--out", str(tmp_path), "--quiet"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "theorems.nc",
        "theorems_block_drift.png",
        "theorems_theorem1.png",
        "theorems_theorem2.png",
    ]
    ds = coarsekl.open_trajectory(tmp_path / "theorems.nc")
    assert ds.attrs["experiment"] == "theorems"
    assert ds.V.dims == ("family", "epsilon", "scheme", "member", "step")
    assert ds.V.attrs["units"] == "nat"


def test_a_scripted_experiment_is_not_a_config(capsys):
    with pytest.raises(ConfigError, match="'theorems' is a scripted experiment"):
        coarsekl.load_config("theorems")
    assert main(["run", "theorems", "--set", "steps=3", "--out", "unused"]) == 2
    assert "--set applies only to configs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epsilons": [0.1]}, "at least two distinct values"),
        ({"epsilons": [0.0, 0.1]}, r"in \(0, 1\]"),
        ({"block_sizes": [4]}, "K ≥ 2 blocks"),
        ({"members": 0}, "members must be an integer ≥ 1"),
    ],
)
def test_bad_settings_are_rejected(arguments, message):
    with pytest.raises(ConfigError, match=message):
        TheoremSettings(**arguments)


def test_coarsekl_plot_redraws_the_theorem_figures_from_the_file(results, tmp_path, capsys):
    from coarsekl.io import save_trajectory

    path = save_trajectory(results, tmp_path / "theorems.nc")
    assert main(["plot", str(path), "--out", str(tmp_path / "figures")]) == 0
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert written == [f"theorems_{name}.png" for name in sorted(theorems_module.FIGURES)]
    assert "wrote" in capsys.readouterr().out


def test_coarsekl_plot_rejects_a_file_that_is_no_trajectory(tmp_path, capsys):
    import xarray as xr

    path = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(path)
    assert main(["plot", str(path)]) == 2
    assert "neither a coarsekl trajectory" in capsys.readouterr().err
