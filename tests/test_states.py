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
