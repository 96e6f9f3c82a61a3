"""Specification of the coarsekl_gmm plugin's registrations: every component and named
experiment of issue 7 is found by name through the same registry as an outside plugin's,
names its provider, builds from config parameters, and is listed by ``coarsekl plugins``.
"""

from __future__ import annotations

import numpy as np
import pytest

import coarsekl
from coarsekl.cli import main
from coarsekl.errors import ConfigError
from coarsekl.runner import build_experiment
from coarsekl_gmm import data, experiments, kernels, metrics, partitions, projectors
from coarsekl_gmm.mixture import GaussianMixture

PROVIDER = "coarsekl_gmm.plugin"
COMPONENTS = {
    ("data", "gaussian-mixture"): data.MixtureData,
    ("data", "ring"): data.RingData,
    ("data", "digits"): data.DigitsData,
    ("initial", "noise"): data.NoiseInitial,
    ("partition", "class"): partitions.ClassPartition,
    ("partition", "grid"): partitions.GridPartition,
    ("kernel", "ddpm"): kernels.DDPM,
    ("kernel", "ddim"): kernels.DDIM,
    ("kernel", "dpmpp-2m"): kernels.DPMSolverPP2M,
    ("projector", "reweight"): projectors.ReweightProjector,
    ("projector", "resample"): projectors.ResampleProjector,
    ("metric", "ess"): metrics.EffectiveSampleSize,
    ("metric", "posterior_entropy"): metrics.PosteriorEntropy,
    ("metric", "class_entropy"): metrics.ClassEntropy,
    ("metric", "mean_error"): metrics.MeanError,
    ("metric", "sliced_wasserstein"): metrics.SlicedWasserstein,
    ("metric", "energy_distance"): metrics.EnergyDistance,
    ("metric", "binned_kl"): metrics.BinnedKL,
    ("metric", "image_block_error"): metrics.ImageBlockError,
}
SCRIPTED = {
    "gmm-samplers": (experiments.run_samplers, experiments.save_sampler_figures),
    "gmm-guidance": (experiments.run_guidance, experiments.save_guidance_figures),
}
CONFIGURED = ("gmm-leakage", "digits")


@pytest.fixture(scope="module")
def registry():
    return coarsekl.get_registry()


@pytest.mark.parametrize(("kind", "name"), sorted(COMPONENTS))
def test_every_component_is_registered_under_its_name(registry, kind, name):
    entry = registry.lookup(kind, name)
    assert entry.provider.plugin == PROVIDER
    assert entry.component.load_factory() is COMPONENTS[kind, name]
    assert entry.component.summary


def test_the_plugin_provides_nothing_else(registry):
    provided = {
        (kind, name)
        for kind, table in registry.entries.items()
        for name, entry in table.items()
        if entry.provider.plugin == PROVIDER and kind != "experiment"
    }
    assert provided == set(COMPONENTS)


@pytest.mark.parametrize("name", sorted(SCRIPTED))
def test_scripted_experiments_name_their_script_and_figures(registry, name):
    entry = registry.lookup("experiment", name)
    assert entry.provider.plugin == PROVIDER and entry.component.path is None
    script, plot = SCRIPTED[name]
    assert entry.component.load_script() is script
    assert entry.component.load_plot() is plot
    with pytest.raises(ConfigError, match="scripted experiment"):
        coarsekl.load_config(name)


@pytest.mark.parametrize("name", CONFIGURED)
def test_configured_experiments_load_from_their_toml_files(registry, name):
    entry = registry.lookup("experiment", name)
    assert entry.provider.plugin == PROVIDER
    assert entry.component.path.is_file() and entry.component.path.suffix == ".toml"
    config = coarsekl.load_config(entry.component.path)
    assert config.name == name
    assert coarsekl.load_config(name) == config  # by name, too
    assert config.particles and config.partition.kind == "class"
    assert config.kernel.kind in ("ddpm", "ddim", "dpmpp-2m")


def test_the_leakage_experiment_builds_every_component(registry):
    built = build_experiment(coarsekl.load_config("gmm-leakage"), registry)
    assert isinstance(built.problem.data, GaussianMixture) and built.problem.data.dim == 2
    assert isinstance(built.kernel, kernels.DDIM) and built.kernel.model_error is not None
    assert isinstance(built.projector, projectors.ReweightProjector)
    assert built.initial_states.positions.shape == (2, 20_000, 2)
    np.testing.assert_allclose(built.problem.reference_masses, 1 / 8, atol=0.01)
    assert all(PROVIDER in text or "coarsekl_blocks" in text for text in built.providers.values())


def test_the_digits_experiment_builds_every_component(registry):
    pytest.importorskip("sklearn")
    built = build_experiment(coarsekl.load_config("digits"), registry)
    assert built.problem.data.dim == 64 and built.problem.partition.n_blocks == 10
    assert isinstance(built.projector, projectors.ResampleProjector)
    assert built.initial_states.alpha_bar == pytest.approx(1e-5)


def test_components_build_from_config_tables_with_helpful_errors(registry):
    ring = registry.build("data", "ring", {"components": 4}).distribution(None)
    partition = registry.build("partition", "grid", {"bins": [2, 2]}, shape=(10,), data=ring)
    assert partition.n_blocks == 4
    with pytest.raises(ConfigError, match=r"\[kernel\] 'ddim' has no parameter 'etta'.*'eta'"):
        registry.build("kernel", "ddim", {"etta": 0.5})
    with pytest.raises(ConfigError, match=r"\[data\] 'ring'.*components"):
        registry.build("data", "ring", {"components": 0})
    with pytest.raises(ConfigError, match=r"\[partition\] 'class'.*assign"):
        registry.build("partition", "class", {"assign": "nearest"}, shape=(10,), data=ring)


def test_coarsekl_plugins_lists_the_components_and_experiments(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line for line in lines}
    for kind, name in [*COMPONENTS, *(("experiment", e) for e in (*SCRIPTED, *CONFIGURED))]:
        assert (kind, name) in rows, (kind, name)
        assert PROVIDER in rows[kind, name]
