"""Tests of coarsekl-stripes: each component on its own, then a run through coarsekl."""

from pathlib import Path

import coarsekl
import numpy as np
import pytest
from coarsekl.errors import ConfigError
from coarsekl.schedules import Step
from coarsekl_blocks.quantities import BlockMass

from coarsekl_stripes import BlockEntropy, BlockPower, Stripes

EXPERIMENT = Path(__file__).resolve().parents[1] / "stripes.toml"


def problem_on(partition):
    """A coarsekl.Problem with a uniform data image: what a component sees during a run."""
    return coarsekl.Problem(
        partition=partition, quantity=BlockMass(), data=np.ones(partition.site_shape)
    )


def random_states(shape, batch=(3,), seed=0):
    values = np.random.default_rng(seed).random((*batch, *shape))
    return values / values.sum(axis=(-2, -1), keepdims=True)


def test_stripe_sums_and_broadcast_agree_with_slicing():
    partition = Stripes(shape=(8, 5), stripes=4)
    state = random_states((8, 5))
    sums = partition.block_sums(state)
    assert sums.shape == (3, 4)
    np.testing.assert_allclose(sums[:, 1], state[:, 2:4, :].sum(axis=(-2, -1)))
    field = partition.broadcast(np.array([1.0, 2.0, 3.0, 4.0]))
    assert field.shape == (8, 5)
    assert (field[6:8] == 4.0).all()
    assert list(partition.block_sizes) == [10, 10, 10, 10]


def test_stripes_must_divide_the_height():
    with pytest.raises(ConfigError, match="cannot be cut into 3 stripes"):
        Stripes(shape=(8, 5), stripes=3)


def test_block_power_keeps_block_masses_and_flattens_within_blocks():
    problem = problem_on(Stripes(shape=(8, 8), stripes=2))
    state = random_states((8, 8))
    new = BlockPower(gamma=0.5).step(state, problem, Step(1, 1), rng=None)
    np.testing.assert_allclose(problem.block_masses(new), problem.block_masses(state))
    # γ < 1 moves every pixel towards its block's mean: the spread inside blocks shrinks
    assert new.std(axis=(-2, -1)).max() < state.std(axis=(-2, -1)).min()


def test_block_power_rejects_a_non_positive_exponent():
    with pytest.raises(ConfigError, match="gamma must be > 0"):
        BlockPower(gamma={"schedule": "linear", "start": 1.0, "stop": 0.0})


def test_block_entropy_is_log_k_for_equal_masses_and_zero_for_one_block():
    problem = problem_on(Stripes(shape=(4, 4), stripes=4))
    uniform = np.full((1, 4, 4), 1 / 16)
    concentrated = np.zeros((1, 4, 4))
    concentrated[0, 0, 0] = 1.0
    metric = BlockEntropy()
    np.testing.assert_allclose(metric.compute(uniform, problem, Step(0, 1)), [np.log(4)])
    np.testing.assert_allclose(metric.compute(concentrated, problem, Step(0, 1)), [0.0])


def test_the_installed_plugin_runs_the_tutorial_experiment():
    # Found through the entry point: no plugin_manager argument, no manual registration.
    ds = coarsekl.run(EXPERIMENT)
    assert "stripes" in ds.attrs["plugins"]
    base = ds.block_mass.sel(scheme="base")
    # block-power keeps the stripe masses of the initial noise in the base scheme ...
    np.testing.assert_allclose(base.isel(step=-1), base.isel(step=0), atol=1e-12)
    # ... and flattens the state inside each stripe
    assert (ds.V.sel(scheme="base").isel(step=-1) < ds.V.sel(scheme="base").isel(step=0)).all()
    # the projection brings the stripe masses within δ of the data's
    assert float(ds.E_block.sel(scheme="proj").isel(step=-1).max()) <= 4 * 0.01 + 1e-12
    assert ds.block_entropy.attrs["units"] == "nat"
