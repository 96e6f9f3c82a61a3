from __future__ import annotations

import weakref

import numpy as np
import pytest

from coarsekl.errors import DataError, InfeasibleTargetError
from coarsekl.problem import RECENT_STATES, Problem, check_image
from coarsekl_blocks.partitions import BlockGrid
from coarsekl_blocks.quantities import BlockMass, BlockMean


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.array([[1.0, -0.1], [1.0, 1.0]]), "negative values"),
        (np.zeros((2, 2)), "all zero"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), r"NaN or inf \(first at index \(0, 1\)\)"),
        (np.array([[1.0, np.inf], [1.0, 1.0]]), "NaN or inf"),
        (np.array([["a", "b"], ["c", "d"]]), "must be numeric"),
    ],
)
def test_unusable_images_are_rejected_with_the_reason(image, message):
    with pytest.raises(DataError, match=message):
        check_image(image, "the image")


def test_a_batch_with_one_all_zero_member_is_rejected():
    batch = np.ones((3, 2, 2))
    batch[1] = 0
    with pytest.raises(DataError, match="all zero"):
        check_image(batch, "the batch", (2, 2))


def grid():
    return BlockGrid(shape=(4, 4), blocks=(2, 2))


def test_reference_masses_default_to_the_data_block_masses():
    data = np.arange(1.0, 17.0).reshape(4, 4)
    problem = Problem(partition=grid(), quantity=BlockMass(), data=data)
    expected = [data[:2, :2].sum(), data[:2, 2:].sum(), data[2:, :2].sum(), data[2:, 2:].sum()]
    np.testing.assert_allclose(problem.reference_masses, np.array(expected) / data.sum())
    np.testing.assert_allclose(problem.data_state.sum(), 1.0)


def test_bounds_clip_to_the_unit_interval():
    problem = Problem(partition=grid(), quantity=BlockMass(), data=np.ones((4, 4)))
    lower, upper = problem.bounds(0.3)
    np.testing.assert_allclose(lower, 0.0)
    np.testing.assert_allclose(upper, 0.55)


def test_block_mean_tolerance_is_in_intensity_units():
    data = np.full((4, 4), 2.0)  # every block mean 2.0; Σx = 32; |Ω_j| = 4
    problem = Problem(partition=grid(), quantity=BlockMean(), data=data)
    np.testing.assert_allclose(problem.reference_values, 2.0)
    _, upper = problem.bounds(0.4)  # ±0.4 intensity = ±0.4 · 4 / 32 in mass
    np.testing.assert_allclose(upper - problem.reference_masses, 0.05)


def test_given_reference_must_match_the_blocks():
    with pytest.raises(DataError, match="one value per block"):
        Problem(partition=grid(), quantity=BlockMass(reference=[0.5, 0.5]), data=np.ones((4, 4)))


def test_infeasible_reference_names_the_fix():
    problem = Problem(
        partition=grid(), quantity=BlockMass(reference=[0.3] * 4), data=np.ones((4, 4))
    )
    with pytest.raises(InfeasibleTargetError, match=r"sum to 1.2.*raise δ to at least about 0.05"):
        problem.bounds(0.01)
    problem.bounds(0.05)  # exactly feasible


def test_data_image_must_match_the_partition():
    with pytest.raises(DataError, match=r"shape \(4, 5\)"):
        Problem(partition=grid(), quantity=BlockMass(), data=np.ones((4, 5)))


def a_problem() -> Problem:
    return Problem(partition=grid(), quantity=BlockMass(), data=np.ones((4, 4)))


def test_a_value_remembered_for_an_array_is_recalled_for_that_array_alone():
    problem, state, other = a_problem(), np.ones((4, 4)), np.ones((4, 4))
    logs = np.zeros((4, 4))
    assert problem.remember(state, "log", logs) is logs
    assert problem.recall(state, "log") is logs
    assert problem.recall(state, "summary") is None
    assert problem.recall(other, "log") is None
    assert problem.recall(state[:], "log") is None  # a view is another array


def test_forgotten_values_and_values_of_arrays_gone_are_not_recalled():
    problem, state = a_problem(), np.ones((4, 4))
    problem.remember(state, "log", np.zeros((4, 4)))
    problem.forget(state)
    assert problem.recall(state, "log") is None
    state = np.ones((4, 4))
    logs = np.zeros((4, 4))
    kept = weakref.ref(logs)
    problem.remember(state, "log", logs)
    del state, logs  # the array is gone: what was derived from it goes at once
    assert kept() is None


def test_only_the_most_recent_arrays_are_remembered():
    problem = a_problem()
    states = [np.full((4, 4), float(i)) for i in range(RECENT_STATES + 1)]
    for state in states:
        problem.remember(state, "log", state)
    assert problem.recall(states[0], "log") is None
    assert all(problem.recall(state, "log") is state for state in states[1:])
