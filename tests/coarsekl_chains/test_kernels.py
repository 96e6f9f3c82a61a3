"""Specification of the transition-matrix kernels: p' = p P on batches (scheme, member, n).

The random generators are checked against their defining properties (row sums, column
sums, invariance of π, the exact leaked fraction ε); the fixed kernels against explicit
matrix products; bad matrices and parameters against clear error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import coarsekl
from coarsekl.errors import ConfigError, DataError, PluginError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.quantities import BlockMass
from coarsekl_chains.kernels import (
    MatrixSequence,
    RandomBlockKernel,
    TransitionMatrix,
    apply_transition,
    check_transition_matrix,
    uniform_leak,
)
from coarsekl_chains.partitions import LabelVector

SIZES = [2, 3, 4]
N = sum(SIZES)


def chain_problem(sizes=SIZES, reference=None) -> Problem:
    n = sum(sizes)
    partition = LabelVector(shape=(n,), sizes=sizes, reference=reference)
    data = np.random.default_rng(0).uniform(0.5, 1.5, n)
    return Problem(partition=partition, quantity=BlockMass(), data=data)


def random_batch(schemes=2, members=3, n=N, seed=1) -> np.ndarray:
    values = np.random.default_rng(seed).random((schemes, members, n))
    return values / values.sum(axis=-1, keepdims=True)


def member_rng(members=3, seed=5) -> MemberRandom:
    return MemberRandom.from_seed(seed, Purpose.KERNEL, members)


def test_apply_transition_is_the_row_vector_product_for_shared_and_per_member_matrices():
    state = random_batch()
    rng = np.random.default_rng(2)
    shared = rng.random((N, N))
    shared /= shared.sum(axis=1, keepdims=True)
    per_member = rng.random((3, N, N))
    per_member /= per_member.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(apply_transition(state, shared), state @ shared)
    expected = np.einsum("smx,mxy->smy", state, per_member)
    np.testing.assert_allclose(apply_transition(state, per_member), expected)
    sparse = apply_transition(state, scipy.sparse.csr_array(shared))
    np.testing.assert_allclose(sparse, state @ shared)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[0.5, 0.5], [0.2, 0.7]], "not row-stochastic: row 1 sums to 0.9"),
        ([[1.2, -0.2], [0.5, 0.5]], r"negative entry P\[0, 1\] = -0.2"),
        ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], "square n × n matrix, got shape"),
        ([[np.nan, 1.0], [0.0, 1.0]], "NaN or inf"),
        ([["a", "b"], ["c", "d"]], "square array of numbers"),
        (scipy.sparse.csr_array(np.array([[1.0, 0.0], [0.3, 0.3]])), "row 1 sums to 0.6"),
        (scipy.sparse.csr_array(np.array([[1.5, -0.5], [0.0, 1.0]])), r"P\[0, 1\]"),
    ],
)
def test_bad_transition_matrices_are_rejected(matrix, message):
    with pytest.raises(DataError, match=message):
        check_transition_matrix(matrix)


def test_fixed_matrix_with_leakage_moves_exactly_epsilon_of_every_blocks_mass_out():
    problem = chain_problem()
    partition = problem.partition
    identity = np.eye(N)
    kernel = TransitionMatrix(matrix=identity.tolist(), leakage=0.1)
    state = random_batch()
    new = kernel.step(state, problem, Step(1, 1), member_rng())
    np.testing.assert_allclose(new.sum(axis=-1), 1.0)
    # L explicitly: uniform over the states of the other blocks.
    outside = ~partition.same_block
    leak_matrix = outside / outside.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(uniform_leak(state, partition), state @ leak_matrix)
    np.testing.assert_allclose(new, 0.9 * state + 0.1 * state @ leak_matrix)
    kept = partition.block_sums(state * 0.9)  # no mass moves inside a block under P = I
    inflow = partition.block_sums(new) - kept
    np.testing.assert_allclose(inflow.sum(axis=-1), 0.1)


def test_matrix_size_must_match_the_chain():
    kernel = TransitionMatrix(matrix=np.eye(4))
    with pytest.raises(DataError, match="4 × 4 but the chain has 9 states"):
        kernel.step(random_batch(), chain_problem(), Step(1, 1), member_rng())


def test_sparse_matrix_file_gives_the_same_step_as_the_dense_matrix(tmp_path):
    rng = np.random.default_rng(3)
    dense = rng.random((N, N)) * (rng.random((N, N)) < 0.4) + np.eye(N)
    dense /= dense.sum(axis=1, keepdims=True)
    scipy.sparse.save_npz(tmp_path / "p.npz", scipy.sparse.csr_array(dense))
    np.save(tmp_path / "p.npy", dense)
    state, problem = random_batch(), chain_problem()
    steps = [
        TransitionMatrix(path=str(tmp_path / name)).step(state, problem, Step(1, 1), None)
        for name in ("p.npz", "p.npy")
    ]
    np.testing.assert_allclose(steps[0], state @ dense, rtol=1e-13)
    np.testing.assert_allclose(steps[1], state @ dense, rtol=1e-13)


def test_matrix_sequence_uses_matrix_k_minus_1_and_repeats():
    a = np.eye(N)
    b = np.roll(np.eye(N), 1, axis=1)  # a cyclic shift
    kernel = MatrixSequence(matrices=[a.tolist(), b.tolist()])
    state, problem = random_batch(), chain_problem()
    results = [kernel.step(state, problem, Step(k, 5), None) for k in (1, 2, 3, 4)]
    np.testing.assert_allclose(results[0], state)
    np.testing.assert_allclose(results[1], state @ b)
    np.testing.assert_allclose(results[2], state)
    np.testing.assert_allclose(results[3], state @ b)


def test_a_bad_matrix_in_a_sequence_is_named():
    good = np.eye(3)
    bad = np.full((3, 3), 0.5)
    with pytest.raises(DataError, match="matrix 1 of the sequence is not row-stochastic"):
        MatrixSequence(matrices=[good, bad])


@pytest.mark.parametrize("family", ["stochastic", "doubly-stochastic", "stationary"])
def test_random_kernels_are_block_diagonal_and_row_stochastic(family):
    problem = chain_problem(reference=np.arange(1.0, N + 1))
    kernel = RandomBlockKernel(family=family)
    matrices = kernel.matrices(problem.partition, Step(1, 1), member_rng(members=4))
    assert matrices.shape == (4, N, N)
    assert (matrices >= 0).all()
    np.testing.assert_allclose(matrices.sum(axis=-1), 1.0, atol=1e-14)
    assert np.all(matrices[:, ~problem.partition.same_block] == 0)
    assert kernel.block_preserving


def test_doubly_stochastic_kernels_have_unit_column_sums_and_mix_permutations():
    partition = chain_problem().partition
    kernel = RandomBlockKernel(family="doubly-stochastic", permutations=3)
    matrices = kernel.matrices(partition, Step(1, 1), member_rng())
    np.testing.assert_allclose(matrices.sum(axis=-2), 1.0, atol=1e-14)
    single = RandomBlockKernel(family="doubly-stochastic", permutations=1)
    permutation = single.matrices(partition, Step(1, 1), member_rng())
    assert set(np.unique(permutation)) == {0.0, 1.0}  # a permutation matrix


def test_stationary_kernels_keep_the_reference_invariant():
    reference = np.random.default_rng(4).uniform(0.1, 1.0, N)
    partition = chain_problem(reference=reference).partition
    kernel = RandomBlockKernel(family="stationary")
    matrices = kernel.matrices(partition, Step(1, 1), member_rng(members=5))
    pi = partition.reference
    np.testing.assert_allclose(np.einsum("x,mxy->my", pi, matrices), np.tile(pi, (5, 1)))
    explicit = RandomBlockKernel(family="stationary", stationary=np.arange(1.0, N + 1))
    target = explicit.invariant(partition)
    moved = np.einsum("x,mxy->my", target, explicit.matrices(partition, Step(1, 1), member_rng()))
    np.testing.assert_allclose(moved, np.tile(target, (3, 1)))


def test_row_stochastic_kernels_do_not_keep_the_reference_invariant():
    partition = chain_problem().partition
    kernel = RandomBlockKernel(family="stochastic")
    matrices = kernel.matrices(partition, Step(1, 1), member_rng())
    assert kernel.invariant(partition) is None
    moved = np.einsum("x,mxy->my", partition.reference, matrices)
    assert np.abs(moved - partition.reference).max() > 1e-3


def test_leakage_sends_exactly_epsilon_of_every_state_out_of_its_block():
    partition = chain_problem().partition
    kernel = RandomBlockKernel(family="doubly-stochastic", leakage=0.03)
    assert not kernel.block_preserving
    matrices = kernel.matrices(partition, Step(1, 1), member_rng())
    outside = np.where(partition.same_block, 0.0, matrices).sum(axis=-1)
    np.testing.assert_allclose(outside, 0.03)
    np.testing.assert_allclose(matrices.sum(axis=-1), 1.0)


def test_every_member_draws_its_own_chain_and_every_scheme_sees_the_same_one():
    problem = chain_problem()
    kernel = RandomBlockKernel(family="doubly-stochastic")
    state = np.broadcast_to(random_batch(schemes=1, members=1), (2, 3, N)).copy()
    new = kernel.step(state, problem, Step(1, 1), member_rng())
    np.testing.assert_array_equal(new[0], new[1])
    assert not np.allclose(new[0, 0], new[0, 1])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"family": "doubly-stochastic", "leakage": 1.5}, r"leakage ε must lie in \[0, 1\]"),
        ({"family": "doubly-stochastic", "leakage": -0.1}, r"leakage ε must lie in \[0, 1\]"),
        ({"family": "doubly_stochastic"}, "did you mean 'doubly-stochastic'"),
        ({"family": "stochastic", "stationary": [1, 2]}, "applies only to family"),
        ({"family": "stationary", "stationary": [1, -2]}, "positive numbers"),
        ({"family": "stochastic", "concentration": 0}, "concentration must be a number > 0"),
        ({"family": "stochastic", "permutations": 0}, "permutations must be an integer ≥ 1"),
    ],
)
def test_bad_kernel_parameters_are_rejected(arguments, message):
    with pytest.raises(ConfigError, match=message):
        RandomBlockKernel(**arguments)


def test_leakage_needs_two_blocks():
    problem = chain_problem(sizes=[4])
    kernel = RandomBlockKernel(family="stochastic", leakage=0.1)
    with pytest.raises(ConfigError, match="at least two blocks"):
        kernel.step(random_batch(n=4), problem, Step(1, 1), member_rng())


def test_kernels_are_found_by_name_with_close_matches_for_typos():
    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    assert {"matrix", "matrix-sequence", "random-block"} <= set(registry.names("kernel"))
    with pytest.raises(PluginError, match="did you mean 'random-block'"):
        registry.lookup("kernel", "random_block")
    with pytest.raises(ConfigError, match=r"\[kernel\] 'matrix': .*not row-stochastic"):
        registry.build("kernel", "matrix", {"matrix": [[0.5, 0.4], [0.5, 0.5]]})
