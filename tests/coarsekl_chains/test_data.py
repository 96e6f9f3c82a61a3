"""Specification of the chain data source and initial states."""

from __future__ import annotations

import numpy as np
import pytest

from coarsekl.errors import ConfigError, DataError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl_blocks.quantities import BlockMass
from coarsekl_chains.data import DirichletInitial, EquilibriumInitial, VectorData, VectorInitial
from coarsekl_chains.metrics import within_block_kl
from coarsekl_chains.partitions import LabelVector


def chain_problem(reference=None) -> Problem:
    partition = LabelVector(shape=(6,), sizes=[2, 4], reference=reference)
    return Problem(partition=partition, quantity=BlockMass(), data=[1, 1, 2, 2, 2, 2])


def streams(members=3) -> MemberRandom:
    return MemberRandom.from_seed(0, Purpose.INITIAL, members)


def test_vector_data_from_values_and_from_a_file(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(1.0, 5.0))
    assert VectorData(values=[1, 2, 3, 4]).image(None).tolist() == [1, 2, 3, 4]
    assert VectorData(path=str(tmp_path / "x.npy")).image(None).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({}, ConfigError, "exactly one of 'values'"),
        ({"values": [[1, 2], [3, 4]]}, DataError, "must be 1-D"),
        ({"values": ["a"]}, DataError, "must be numbers"),
        ({"path": "missing.npy"}, DataError, "existing .npy file"),
    ],
)
def test_bad_data_vectors_are_rejected(arguments, error, message):
    with pytest.raises(error, match=message):
        VectorData(**arguments).image(None)


def test_vector_initial_takes_one_state_for_all_members_or_one_per_member():
    problem = chain_problem()
    one = VectorInitial(values=[1, 0, 0, 0, 0, 1]).states(problem, streams())
    assert one.shape == (3, 6) and (one == [1, 0, 0, 0, 0, 1]).all()
    each = np.eye(6)[:3]
    np.testing.assert_array_equal(VectorInitial(values=each).states(problem, streams()), each)
    with pytest.raises(DataError, match=r"expected \(6,\) or \(3, 6\)"):
        VectorInitial(values=[1, 2, 3]).states(problem, streams())


def test_dirichlet_states_are_distributions_with_random_or_reference_block_masses():
    problem = chain_problem()
    free = DirichletInitial(concentration=0.5).states(problem, streams())
    np.testing.assert_allclose(free.sum(axis=-1), 1.0)
    assert np.ptp(problem.partition.block_sums(free)[:, 0]) > 0  # masses differ by member
    fixed = DirichletInitial(block_masses="reference").states(problem, streams())
    np.testing.assert_allclose(
        problem.partition.block_sums(fixed), np.tile(problem.reference_masses, (3, 1))
    )
    assert np.ptp(fixed[:, 2:], axis=0).max() > 0  # but random shapes inside the blocks
    with pytest.raises(ConfigError, match="concentration must be a number > 0"):
        DirichletInitial(concentration=-1)


def test_equilibrium_state_has_the_reference_masses_and_zero_V():
    problem = chain_problem(reference=[1, 3, 1, 2, 3, 4])
    states = EquilibriumInitial().states(problem, streams(members=2))
    np.testing.assert_allclose(
        problem.partition.block_sums(states), np.tile(problem.reference_masses, (2, 1))
    )
    np.testing.assert_allclose(within_block_kl(states, problem.partition), 0.0, atol=1e-15)
