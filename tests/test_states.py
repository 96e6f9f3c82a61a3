"""The runner's contract checks on what plugins return (coarsekl.states), on every path:
the compiled summary, its parallel loops (pieces summed by different threads) and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from coarsekl.errors import PluginContractError
from coarsekl.states import check_state

SHAPE = (3, 2, 20, 30)


def good_states() -> np.ndarray:
    states = np.random.default_rng(0).random(SHAPE)
    return states / states.sum(axis=(-2, -1), keepdims=True)


def check(states: np.ndarray) -> np.ndarray:
    return check_state(states, SHAPE, 2, "kernel 'k'", 4)


def test_a_normalised_non_negative_state_passes(numerics):
    states = good_states()
    assert check(states) is states


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.nan, "NaN or inf"),
        (np.inf, "NaN or inf"),
        (-np.inf, "NaN or inf"),
        (-1e-3, "negative values"),
        (0.5, "not normalised"),
    ],
)
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (2, 1, 19, 29), (1, 0, 11, 7)])
def test_one_bad_value_anywhere_is_named(numerics, bad, message, where):
    """Under fast-math flags LLVM may fold a finiteness test away: the summary must still
    see a NaN or inf in any piece of any state (a regression on the compiled path)."""
    states = good_states()
    states[where] = bad
    with pytest.raises(PluginContractError, match=f"kernel 'k' at step 4 returned .*{message}"):
        check(states)


@pytest.fixture(params=["grid", "labels"])
def problem(request):
    """A problem whose partition can summarise in one pass (a block grid) or cannot (a
    label map: the layout then checks and sums in two)."""
    from coarsekl.problem import Problem
    from coarsekl_blocks.partitions import BlockGrid, LabelMap
    from coarsekl_blocks.quantities import BlockMass

    if request.param == "grid":
        partition = BlockGrid(shape=SHAPE[2:], blocks=(4, 5))
    else:
        labels = np.random.default_rng(1).integers(0, 6, SHAPE[2:])
        labels[:6] = np.arange(6)[:, None]  # every label is used
        partition = LabelMap(shape=SHAPE[2:], labels=labels)
    data = np.random.default_rng(2).random(SHAPE[2:])
    return Problem(partition=partition, quantity=BlockMass(), data=data)


def check_and_sum(states, problem):
    from coarsekl.states import DistributionStates

    layout = DistributionStates(SHAPE[2:], ("y", "x"), "float64")
    return layout.check_and_sum(states, SHAPE[:2], "projector 'p'", 7, problem)


def test_checking_and_summing_gives_the_state_and_its_block_masses(numerics, problem):
    states = good_states()
    checked, masses = check_and_sum(states, problem)
    assert checked is states
    np.testing.assert_allclose(masses, problem.partition.block_sums(states), rtol=1e-14)
    assert problem.block_masses(states) is not None  # remembered for the metrics
    np.testing.assert_array_equal(problem.block_masses(states), masses)


def test_a_summary_taken_by_the_plugin_that_made_the_state_replaces_the_pass(problem):
    """A plugin that takes the block sums and negative values of the state it returns in
    its own pass remembers them; the runner checks the state with them."""
    states = good_states()
    masses = problem.partition.block_sums(states)
    problem.remember(states, "summary", (masses, 0))
    np.testing.assert_array_equal(check_and_sum(states, problem)[1], masses)
    problem.remember(states, "summary", (masses, 2))
    with pytest.raises(PluginContractError, match="projector 'p' at step 7 .*negative"):
        check_and_sum(states, problem)
    problem.remember(states, "summary", (masses * 2, 0))
    with pytest.raises(PluginContractError, match="not normalised"):
        check_and_sum(states, problem)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-1e-3, "negative"), (0.5, "normalised")],
)
def test_checking_and_summing_names_a_bad_value(numerics, problem, bad, message):
    states = good_states()
    states[2, 1, 13, 17] = bad
    with pytest.raises(PluginContractError, match=f"projector 'p' at step 7 .*{message}"):
        check_and_sum(states, problem)


def test_checking_and_summing_names_a_wrong_shape(problem):
    with pytest.raises(PluginContractError, match=r"returned shape \(2, 2, 20, 30\)"):
        check_and_sum(good_states()[:2], problem)
