"""Particle ensembles through the whole runner: coarsekl.run on Gaussian-mixture data."""

from __future__ import annotations

import numpy as np
import pytest
from tests.plugins import contract_breakers

import coarsekl
from coarsekl.errors import ConfigError, PluginContractError


@pytest.fixture(scope="module")
def leaky_run():
    from tests.coarsekl_gmm.conftest import RING

    return coarsekl.run(RING)


def test_trajectory_layout_of_a_particle_run(leaky_run):
    ds = leaky_run
    assert dict(ds.position.sizes) == {
        "scheme": 2, "member": 2, "snapshot": 3, "particle": 2000, "dim": 2,
    }  # fmt: skip
    assert ds.weight.dims == ("scheme", "member", "snapshot", "particle")
    assert ds.block_mass.dims == ("scheme", "member", "step", "block")
    assert ds.target_mass.dims == ("step", "block")
    assert ds.position.attrs["long_name"] and ds.alpha_bar.attrs["units"] == "1"
    np.testing.assert_allclose(ds.mixture_weight, 1 / 8)
    assert ds.mixture_covariance.dims == ("component", "dim", "dim_")
    # the signal level rises from noise to the data
    assert ds.alpha_bar[0] == 0.0 and ds.alpha_bar[-1] == 1.0
    assert (ds.alpha_bar.diff("step") > 0).all()
    np.testing.assert_allclose(ds.weight.sum("particle"), 1.0)


def test_model_error_leaks_class_mass_and_the_projection_holds_it(leaky_run):
    ds = leaky_run
    final = ds.isel(step=-1)
    # the wrong model over-weights classes 0 and 4 (weights 4/12 each instead of 1/8)
    base = final.block_mass.sel(scheme="base")
    assert (base.sel(block=[0, 4]) > 0.2).all()
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    target = ds.target_mass.isel(step=slice(1, None))
    assert (np.abs(proj.block_mass - target) <= 0.01 + 1e-12).all()
    assert float(proj.V_delta.max()) <= 1e-12
    assert (proj.E_block_pre.max("step") > 0.15).all()  # the kernel keeps leaking
    # reweighting costs effective sample size, the baseline keeps all particles
    np.testing.assert_allclose(ds.ess.sel(scheme="base"), 2000)
    assert 200 < float(final.ess.sel(scheme="proj").min()) < 2000


def test_resampling_holds_the_class_masses_with_equal_weights(ring_config):
    ds = coarsekl.run(ring_config(projector__kind="resample"))
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    target = ds.target_mass.isel(step=slice(1, None))
    # whole particle counts, yet within δ of the target (δ = 0.01 ≥ 1/N)
    assert (np.abs(proj.block_mass - target) <= 0.01 + 1e-12).all()
    assert float(proj.V_delta.max()) <= 1e-12
    np.testing.assert_allclose(ds.weight.sel(scheme="proj"), 1 / 2000)
    np.testing.assert_allclose(proj.ess, 2000)


@pytest.mark.parametrize("kernel", ["ddpm", "ddim", "dpmpp-2m"])
def test_every_sampler_runs_and_the_schemes_share_their_noise(ring_config, kernel):
    ds = coarsekl.run(ring_config(kernel__kind=kernel, kernel__model_error=None))
    start = ds.position.sel(snapshot=0)
    np.testing.assert_array_equal(start.sel(scheme="base"), start.sel(scheme="proj"))
    # with the exact model the classes stay near their target masses anyway
    assert float(ds.E_block.sel(scheme="base").isel(step=-1).max()) < 0.15


def test_results_do_not_depend_on_threads(ring_config):
    config = ring_config(kernel__kind="ddpm", projector__kind="resample")
    one = coarsekl.run(config, threads=1)
    two = coarsekl.run(config, threads=2)
    np.testing.assert_array_equal(one.position.values, two.position.values)
    np.testing.assert_array_equal(one.E_block.values, two.E_block.values)


def test_streamed_output_equals_the_in_memory_run(tmp_path, ring_config):
    config = ring_config()
    memory = coarsekl.run(config)
    streamed = coarsekl.run(config, output=tmp_path / "run.nc")
    for name in ("position", "weight", "block_mass", "E_block", "alpha_bar", "target_mass"):
        np.testing.assert_array_equal(memory[name].values, streamed[name].values)
    reopened = coarsekl.open_trajectory(tmp_path / "run.nc")
    assert reopened.position.dims == memory.position.dims


def test_float32_positions_keep_the_metrics_close(ring_config):
    double = coarsekl.run(ring_config(kernel__model_error=None))
    single = coarsekl.run(ring_config(kernel__model_error=None, dtype="float32"))
    assert single.position.dtype == np.float32 and single.weight.dtype == np.float64
    np.testing.assert_allclose(single.mean_error, double.mean_error, atol=1e-4)


def test_the_callback_sees_ensembles(ring_config):
    seen = []
    coarsekl.run(ring_config(), callback=seen.append)
    last = seen[-1]
    assert isinstance(last["state"], coarsekl.Ensemble)
    assert last["state"].positions.shape == (2, 2, 2000, 2)
    assert last["proposal"].alpha_bar == 1.0


@pytest.fixture
def breaking_plugins():
    pm = coarsekl.get_plugin_manager(autoload=False)
    pm.register(contract_breakers, name="contract_breakers")
    return pm


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("nan", "NaN or inf particle positions"),
        ("unnormalised", "not normalised"),
        ("array", "expected a coarsekl.Ensemble"),
        ("shape", "positions of shape"),
    ],
)
def test_particle_kernel_contract_violations_name_the_plugin_and_step(
    breaking_plugins, ring_config, fault, message
):
    config = ring_config(kernel={"kind": "broken-particles", "fault": fault, "at": 3})
    with pytest.raises(PluginContractError, match=message) as error:
        coarsekl.run(config, plugin_manager=breaking_plugins)
    assert "kernel 'broken-particles'" in str(error.value) and "at step 3" in str(error.value)


def test_a_distribution_needs_a_particle_count(ring_config):
    with pytest.raises(ConfigError, match="particles = N"):
        coarsekl.run(ring_config(particles=None))


def test_particles_with_an_image_are_refused(small_config):
    with pytest.raises(ConfigError, match="remove 'particles'"):
        coarsekl.run({**small_config(), "particles": 100})


def test_a_particle_kernel_on_an_image_is_refused(small_config):
    with pytest.raises(ConfigError, match="kernel .ddim. works on weighted particle ensembles"):
        coarsekl.run(small_config(kernel={"kind": "ddim"}))


def test_default_metrics_of_a_particle_run(ring_config):
    ds = coarsekl.run(ring_config(record=None, steps=2))
    assert {"E_block", "V_delta"} <= set(ds.data_vars)
    assert "V" not in ds and "mse" not in ds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"record__metrics": ["E_block", "V"]}, "metric 'V' works on arrays over sites"),
        ({"projector": {"kind": "vdelta", "delta": 0.01}}, "projector 'vdelta' works on arrays"),
        ({"quantity": "block-mean"}, "quantity 'block-mean' works on arrays"),
        ({"partition": {"kind": "blocks", "blocks": [2, 2]}}, "partition 'blocks' works on"),
        ({"kernel": {"kind": "block-blur", "sigma": 1.0}}, "kernel 'block-blur' works on"),
    ],
)
def test_image_components_in_a_particle_run_are_named(ring_config, change, message):
    with pytest.raises(ConfigError, match=message) as error:
        coarsekl.run(ring_config(**change))
    assert "weighted particle ensembles" in str(error.value)


def test_particle_components_in_an_image_run_are_named(small_config):
    with pytest.raises(ConfigError, match="metric 'ess' works on weighted particle ensembles"):
        coarsekl.run(small_config(record__metrics=["ess"]))


def test_a_one_dimensional_mixture_runs_and_draws(ring_config, tmp_path):
    from coarsekl.plotting import save_figures

    data = {"kind": "gaussian-mixture", "weights": [1, 2], "means": [[-2.0], [2.0]], "std": 0.5}
    ds = coarsekl.run(ring_config(data=data, kernel__model_error=None))
    assert ds.sizes["dim"] == 1 and ds.sizes["block"] == 2
    assert all(path.is_file() for path in save_figures(ds, tmp_path))
