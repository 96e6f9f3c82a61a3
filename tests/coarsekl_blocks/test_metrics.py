"""Specification of the standard metrics (THEORY §2) and of the coarse quantities (§1).

V is checked against its definition Σ_j w_j D(p(·|j) ‖ u_j), computed block by block, and
against the vectorised identity; V_δ against a generic optimiser minimising D(p‖q) over
q ∈ A_δ; E_block, MSE and within-block variance against direct per-block loops.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, minimize
from scipy.special import rel_entr, xlogy

from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_blocks.metrics import (
    BlockMassError,
    BlockVariance,
    MeanSquaredError,
    VDelta,
    WithinBlockV,
)
from coarsekl_blocks.partitions import BlockGrid, LabelMap
from coarsekl_blocks.quantities import BlockMass, BlockMean
from coarsekl_blocks.vdelta import VDeltaProjector

STEP = Step(1, 1)


def grid_problem(shape=(6, 8), blocks=(3, 2), seed=0, quantity=None) -> Problem:
    data = np.random.default_rng(seed).uniform(0.1, 2.0, shape)
    return Problem(
        partition=BlockGrid(shape=shape, blocks=blocks),
        quantity=quantity or BlockMass(),
        data=data,
    )


def label_problem(seed=0) -> Problem:
    """Five irregular regions of different sizes with arbitrary label values."""
    rng = np.random.default_rng(seed)
    values = np.array([-4, 0, 7, 12, 99])
    labels = rng.permutation(np.concatenate([values, rng.choice(values, 30 - 5)]))
    return Problem(
        partition=LabelMap(shape=(5, 6), labels=labels.reshape(5, 6)),
        quantity=BlockMass(),
        data=rng.uniform(0.1, 2.0, (5, 6)),
    )


def random_states(problem: Problem, batch=(2, 3), seed=1, empty_blocks=()) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.random((*batch, *problem.partition.site_shape))
    keep = np.ones(problem.partition.n_blocks)
    keep[list(empty_blocks)] = 0.0
    pixels *= problem.partition.broadcast(keep)
    return pixels / pixels.sum(axis=(-2, -1), keepdims=True)


def block_pixel_lists(problem: Problem) -> list[np.ndarray]:
    """Boolean masks of the blocks, read off the partition's broadcast of one-hot vectors."""
    n_blocks = problem.partition.n_blocks
    return [problem.partition.broadcast(np.eye(n_blocks)[j]) == 1 for j in range(n_blocks)]


def v_by_definition(state: np.ndarray, problem: Problem) -> np.ndarray:
    """Σ_j w_j D(p(·|j) ‖ uniform on Ω_j), block by block, skipping empty blocks."""
    result = np.zeros(state.shape[:-2])
    for index in np.ndindex(*state.shape[:-2]):
        total = 0.0
        for mask in block_pixel_lists(problem):
            block = state[index][mask]
            mass = block.sum()
            if mass > 0:
                uniform = np.full(block.size, 1.0 / block.size)
                total += mass * rel_entr(block / mass, uniform).sum()
        result[index] = total
    return result


def v_by_identity(state: np.ndarray, problem: Problem) -> np.ndarray:
    """Σ_x p log p − Σ_j w_j log w_j + Σ_j w_j log |Ω_j| (THEORY §2)."""
    masses = problem.partition.block_sums(state)
    return (
        xlogy(state, state).sum(axis=(-2, -1))
        - xlogy(masses, masses).sum(axis=-1)
        + (masses * np.log(problem.partition.block_sizes)).sum(axis=-1)
    )


PROBLEMS = [grid_problem, label_problem]


# ---------------------------------------------------------------------------------------
# V
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_v_matches_its_blockwise_definition_and_the_vectorised_identity(numerics, make_problem):
    problem = make_problem()
    states = random_states(problem)
    value = WithinBlockV().compute(states, problem, STEP)
    assert value.shape == states.shape[:-2]
    np.testing.assert_allclose(value, v_by_definition(states, problem), rtol=1e-12)
    np.testing.assert_allclose(value, v_by_identity(states, problem), rtol=1e-10)


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_v_handles_empty_blocks_and_zero_pixels(numerics, make_problem):
    problem = make_problem()
    states = random_states(problem, empty_blocks=(0, 2))
    states[..., 1, 1] = 0.0  # a zero pixel in an occupied block
    states /= states.sum(axis=(-2, -1), keepdims=True)
    value = WithinBlockV().compute(states, problem, STEP)
    assert np.all(np.isfinite(value))
    np.testing.assert_allclose(value, v_by_definition(states, problem), rtol=1e-12)


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_v_vanishes_exactly_on_block_constant_states_and_is_positive_otherwise(
    numerics, make_problem
):
    problem = make_problem()
    partition = problem.partition
    masses = np.random.default_rng(2).dirichlet(np.ones(partition.n_blocks), size=3)
    block_constant = partition.broadcast(masses / partition.block_sizes)
    np.testing.assert_allclose(WithinBlockV().compute(block_constant, problem, STEP), 0, atol=1e-15)
    assert np.all(WithinBlockV().compute(random_states(problem), problem, STEP) > 0)


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_v_keeps_the_logs_it_took_for_the_next_kernel_step(numerics, make_problem):
    """On the compiled path V remembers log max(p, tiny) of the state (for the geometric
    mean kernel of the next step, which then takes no log of its own)."""
    problem = make_problem()
    states = random_states(problem, empty_blocks=(1,))
    WithinBlockV().compute(states, problem, Step(1, 1))
    logs = problem.recall(states, "log")
    if numerics == "reference":
        assert logs is None
        return
    expected = np.log(np.maximum(states, np.finfo(np.float64).tiny))
    np.testing.assert_allclose(logs, expected, rtol=1e-15, atol=0)


def test_v_of_a_point_mass_is_log_of_its_block_size():
    problem = grid_problem(shape=(4, 6), blocks=(2, 2))  # blocks of 2 × 3 = 6 pixels
    state = np.zeros((4, 6))
    state[0, 0] = 1.0
    np.testing.assert_allclose(WithinBlockV().compute(state, problem, STEP), np.log(6.0))


def random_block_diagonal_doubly_stochastic(rng, problem: Problem) -> np.ndarray:
    """A random doubly stochastic matrix on each block (convex mix of permutations),
    zero between blocks: the kernels of Theorem 1."""
    sites = int(np.prod(problem.partition.site_shape))
    matrix = np.zeros((sites, sites))
    for mask in block_pixel_lists(problem):
        members = np.flatnonzero(mask.ravel())
        weights = rng.dirichlet(np.ones(3))
        for weight in weights:
            permuted = rng.permutation(members)
            matrix[permuted, members] += weight
    return matrix


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_theorem_1_v_never_increases_under_time_dependent_block_preserving_kernels(
    make_problem,
):
    """THEORY §5: random block-diagonal doubly stochastic K_t, a new one at every step."""
    problem = make_problem()
    rng = np.random.default_rng(3)
    state = random_states(problem, batch=(4,), seed=4)
    masses = problem.partition.block_sums(state)
    history = [WithinBlockV().compute(state, problem, STEP)]
    for _ in range(40):
        kernel = random_block_diagonal_doubly_stochastic(rng, problem)
        state = (state.reshape(4, -1) @ kernel.T).reshape(state.shape)
        history.append(WithinBlockV().compute(state, problem, STEP))
        np.testing.assert_allclose(problem.partition.block_sums(state), masses, atol=1e-14)
    history = np.array(history)
    assert np.all(np.diff(history, axis=0) <= 1e-14)
    assert np.all(history[-1] < 0.5 * history[0])  # and it really decreases


# ---------------------------------------------------------------------------------------
# V_δ
# ---------------------------------------------------------------------------------------


def optimiser_vdelta(state: np.ndarray, problem: Problem, delta: float):
    """min over q with a_j ≤ Σ_{Ω_j} q ≤ b_j, Σq = 1, q ≥ 0 of D(p‖q), by scipy's
    trust-constr on the pixels; returns the minimum and the minimiser."""
    p = state.ravel()
    masks = np.array([mask.ravel() for mask in block_pixel_lists(problem)], dtype=float)
    lower, upper = problem.bounds(delta)
    result = minimize(
        lambda q: rel_entr(p, q).sum(),
        problem.data_state.ravel(),  # a point of A_δ
        jac=lambda q: -p / q,
        hess=lambda q: np.diag(p / q**2),
        method="trust-constr",
        constraints=[
            LinearConstraint(np.vstack([np.ones(p.size), masks]), [1.0, *lower], [1.0, *upper])
        ],
        bounds=Bounds(1e-14, 1.0),
        options={"gtol": 1e-13, "xtol": 1e-15, "maxiter": 5000},
    )
    assert result.status in (1, 2), result.message  # converged (gradient or step size)
    return float(result.fun), result.x.reshape(state.shape)


@pytest.mark.parametrize("seed", range(6))
def test_vdelta_equals_the_minimal_kl_to_the_admissible_set(seed):
    problem = grid_problem(shape=(4, 4), blocks=(2, 2), seed=seed)
    rng = np.random.default_rng(100 + seed)
    state = rng.dirichlet(np.full(16, 0.5)).reshape(4, 4)
    delta = float(rng.uniform(0.002, 0.03))
    value = VDelta().compute(state, problem, Step(1, 1, delta))
    expected, minimiser = optimiser_vdelta(state, problem, delta)
    assert value > 1e-4  # the case is not trivial: p lies outside A_δ
    np.testing.assert_allclose(value, expected, rtol=1e-7)
    # and the minimiser is the projection Π_δ(p)
    projected = VDeltaProjector(delta=delta).project(state, problem, Step(1, 1, delta)).state
    np.testing.assert_allclose(projected, minimiser, atol=1e-6)


def test_vdelta_is_zero_exactly_inside_the_admissible_set():
    problem = grid_problem()
    step = Step(1, 1, 0.01)
    assert VDelta().compute(problem.data_state, problem, step) == 0.0
    # any within-block shape with the reference masses, and states with masses close by
    partition = problem.partition
    states = random_states(problem)
    masses = partition.block_sums(states)
    near = 0.99 * 0.01 / np.abs(masses - problem.reference_masses).max(axis=-1, keepdims=True)
    weight = np.minimum(1.0, near)
    target = problem.reference_masses * (1 - weight) + masses * weight
    inside = states * partition.broadcast(target / masses)
    np.testing.assert_array_equal(VDelta().compute(inside, problem, step), 0.0)


def test_vdelta_depends_on_block_masses_only():
    problem = grid_problem()
    state = random_states(problem, batch=())
    reshuffled = state.copy()
    for mask in block_pixel_lists(problem):
        reshuffled[mask] = np.random.default_rng(5).permutation(state[mask])
    step = Step(1, 1, 0.005)
    first = VDelta().compute(state, problem, step)
    assert first > 0
    np.testing.assert_allclose(VDelta().compute(reshuffled, problem, step), first, rtol=1e-12)


def test_vdelta_is_non_negative_and_non_increasing_in_delta():
    problem = grid_problem()
    states = random_states(problem, batch=(5,))
    values = np.array(
        [VDelta().compute(states, problem, Step(1, 1, d)) for d in [0, 0.001, 0.01, 0.05, 1]]
    )
    assert np.all(values >= -1e-15)
    assert np.all(np.diff(values, axis=0) <= 1e-15)
    np.testing.assert_array_equal(values[-1], 0.0)  # δ = 1: every state is admissible
    # δ = 0: V_δ is the KL divergence between the block masses and the reference masses
    masses = problem.partition.block_sums(states)
    np.testing.assert_allclose(
        values[0], rel_entr(masses, problem.reference_masses).sum(axis=-1), rtol=1e-12
    )


def test_vdelta_is_zero_after_a_projection_and_positive_before():
    problem = grid_problem()
    states = random_states(problem)
    step = Step(1, 1, 0.01)
    assert np.all(VDelta().compute(states, problem, step) > 0)
    projected = VDeltaProjector(delta=0.01).project(states, problem, step).state
    assert np.all(np.abs(VDelta().compute(projected, problem, step)) <= 1e-14)


def test_vdelta_without_a_tolerance_is_a_config_error():
    problem = grid_problem()
    with pytest.raises(ConfigError, match="delta"):
        VDelta().compute(problem.data_state, problem, Step(1, 1))


def test_vdelta_of_block_means_uses_intensity_units():
    """For equal blocks, δ in block-mean units equals δ · |Ω| / Σx in mass units."""
    mass_problem = grid_problem()
    mean_problem = grid_problem(quantity=BlockMean())
    states = random_states(mass_problem)
    delta_mass = 0.004
    delta_mean = delta_mass * mean_problem.data_total / mean_problem.partition.block_sizes[0]
    np.testing.assert_allclose(
        VDelta().compute(states, mean_problem, Step(1, 1, delta_mean)),
        VDelta().compute(states, mass_problem, Step(1, 1, delta_mass)),
        rtol=1e-12,
    )


# ---------------------------------------------------------------------------------------
# E_block
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_block_mass_error_is_the_l1_distance_to_the_reference_masses(make_problem):
    problem = make_problem()
    states = random_states(problem)
    expected = np.zeros(states.shape[:-2])
    for index in np.ndindex(*states.shape[:-2]):
        for j, mask in enumerate(block_pixel_lists(problem)):
            expected[index] += abs(states[index][mask].sum() - problem.reference_masses[j])
    value = BlockMassError().compute(states, problem, STEP)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert np.all(value <= 2 + 1e-12)
    assert BlockMassError().compute(problem.data_state, problem, STEP) <= 1e-15


@pytest.mark.parametrize("make_problem", PROBLEMS)
@pytest.mark.parametrize("delta", [0.0, 0.002, 0.02, 0.2])
def test_block_mass_error_after_projection_is_at_most_k_delta(make_problem, delta):
    problem = make_problem()
    states = random_states(problem, batch=(8,), seed=6, empty_blocks=(1,))
    projected = VDeltaProjector(delta=delta).project(states, problem, Step(1, 1, delta)).state
    masses = problem.partition.block_sums(projected)
    assert np.all(np.abs(masses - problem.reference_masses) <= delta + 1e-15)
    error = BlockMassError().compute(projected, problem, STEP)
    assert np.all(error <= problem.partition.n_blocks * delta + 1e-14)


def test_block_mean_projection_keeps_block_mean_intensities_within_delta():
    problem = grid_problem(quantity=BlockMean())
    states = random_states(problem)
    delta = 0.05  # intensity units
    projected = VDeltaProjector(delta=delta).project(states, problem, Step(1, 1, delta)).state
    partition = problem.partition
    intensity = projected * problem.data_total
    means = partition.block_sums(intensity) / partition.block_sizes
    data_means = partition.block_sums(problem.data) / partition.block_sizes
    assert np.all(np.abs(means - data_means) <= delta + 1e-12)
    assert np.any(np.abs(means - data_means) > 0.99 * delta)  # the bound is active


# ---------------------------------------------------------------------------------------
# MSE and within-block variance
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_mse_is_the_pixel_mean_squared_error_in_data_units(numerics, make_problem):
    problem = make_problem()
    states = random_states(problem)
    data = problem.data
    expected = np.zeros(states.shape[:-2])
    for index in np.ndindex(*states.shape[:-2]):
        scaled = states[index] * data.sum()
        expected[index] = (
            sum(
                (scaled[y, x] - data[y, x]) ** 2
                for y in range(data.shape[0])
                for x in range(data.shape[1])
            )
            / data.size
        )
    np.testing.assert_allclose(
        MeanSquaredError().compute(states, problem, STEP), expected, rtol=1e-12
    )
    assert MeanSquaredError().compute(problem.data_state, problem, STEP) <= 1e-28


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 8), (40, 36)])
def test_v_sums_the_mse_for_the_state_with_the_bits_of_the_mses_own_pass(numerics, dtype, shape):
    """V's pass over a state also sums its squared error to the data and remembers it;
    mse then reads that instead of passing over the state again: the same numbers, bit
    for bit, as mse's own pass (the 'parallel' numerics cut the sums into several pieces)."""
    problem = grid_problem(shape=shape, blocks=(2, 2))
    states = random_states(problem).astype(dtype)
    own = MeanSquaredError().compute(states, problem, STEP)
    assert problem.recall(states, "mean_squared_error") is None
    WithinBlockV().compute(states, problem, STEP)
    shared = problem.recall(states, "mean_squared_error")
    if numerics == "reference":
        assert shared is None
        return
    np.testing.assert_array_equal(shared, own)
    assert MeanSquaredError().compute(states, problem, STEP) is shared


def test_mse_scales_with_the_square_of_the_data_units():
    problem = grid_problem()
    doubled = Problem(partition=problem.partition, quantity=BlockMass(), data=2 * problem.data)
    states = random_states(problem)
    np.testing.assert_allclose(
        MeanSquaredError().compute(states, doubled, STEP),
        4 * MeanSquaredError().compute(states, problem, STEP),
        rtol=1e-12,
    )


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_block_variance_is_the_population_variance_inside_each_block(make_problem):
    problem = make_problem()
    states = random_states(problem)
    expected = np.zeros((*states.shape[:-2], problem.partition.n_blocks))
    for index in np.ndindex(*states.shape[:-2]):
        for j, mask in enumerate(block_pixel_lists(problem)):
            expected[(*index, j)] = np.var(states[index][mask] * problem.data.sum())
    value = BlockVariance().compute(states, problem, STEP)
    assert value.shape == expected.shape
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-14)


def test_block_variance_vanishes_on_block_constant_states():
    problem = grid_problem()
    partition = problem.partition
    state = partition.broadcast(np.full(partition.n_blocks, 1.0) / partition.block_sizes.sum())
    np.testing.assert_allclose(BlockVariance().compute(state, problem, STEP), 0.0, atol=1e-28)


def test_metric_declarations():
    assert BlockVariance.per_block
    for metric in (WithinBlockV, VDelta, BlockMassError, MeanSquaredError):
        assert not metric.per_block
    assert VDelta.record_before_projection and BlockMassError.record_before_projection
    assert not WithinBlockV.record_before_projection


# ---------------------------------------------------------------------------------------
# Coarse quantities
# ---------------------------------------------------------------------------------------


def test_block_mass_reference_defaults_to_the_data_block_masses():
    problem = grid_problem()
    partition = problem.partition
    expected = [
        problem.data[mask].sum() / problem.data.sum() for mask in block_pixel_lists(problem)
    ]
    np.testing.assert_allclose(problem.reference_masses, expected, rtol=1e-13)
    np.testing.assert_array_equal(BlockMass().scale(partition, 3.0), np.ones(partition.n_blocks))


def test_block_mean_reference_is_given_in_intensity_units():
    partition = BlockGrid(shape=(4, 4), blocks=(2, 2))  # |Ω_j| = 4, Σx = 16
    means = np.array([1.5, 0.5, 1.0, 1.0])
    problem = Problem(
        partition=partition, quantity=BlockMean(reference=means), data=np.ones((4, 4))
    )
    np.testing.assert_allclose(problem.reference_masses, means * 4 / 16, rtol=1e-15)
    np.testing.assert_allclose(problem.reference_values, means, rtol=1e-15)
    np.testing.assert_allclose(BlockMean().scale(partition, 16.0), np.full(4, 4.0))


def test_block_mean_of_a_block_constant_image_is_its_intensity():
    """THEORY §1: for a block-constant image c_j on equal blocks, w_ref_j = c_j / Σc."""
    intensities = np.array([[0.9, 0.1], [0.1, 0.9]])
    data = np.kron(intensities, np.ones((3, 3)))
    for quantity in (BlockMass(), BlockMean()):
        problem = Problem(
            partition=BlockGrid(shape=(6, 6), blocks=(2, 2)), quantity=quantity, data=data
        )
        np.testing.assert_allclose(
            problem.reference_masses, intensities.ravel() / intensities.sum(), rtol=1e-14
        )
    np.testing.assert_allclose(problem.reference_values, intensities.ravel(), rtol=1e-14)


# ---------------------------------------------------------------------------------------
# Metrics of the block masses alone, evaluated over many steps at once
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_problem", PROBLEMS)
def test_metrics_from_block_masses_equal_compute_step_by_step(make_problem):
    """The runner's end-of-run path: masses (..., step, K) with a δ for every step."""
    problem = make_problem()
    deltas = [0.002, 0.01, 0.01, 0.05]
    steps = [Step(i + 1, len(deltas), delta) for i, delta in enumerate(deltas)]
    states = random_states(problem, batch=(2, 3, len(steps)))
    masses = problem.partition.block_sums(states)
    for metric in (VDelta(), BlockMassError()):
        from_masses = metric.from_block_masses(masses, problem, steps)
        assert from_masses.shape == (2, 3, len(steps))
        for i, step in enumerate(steps):
            np.testing.assert_allclose(
                from_masses[..., i], metric.compute(states[:, :, i], problem, step), rtol=1e-13
            )
    same_delta = [Step(i + 1, 4, 0.01) for i in range(4)]
    np.testing.assert_array_equal(
        VDelta().from_block_masses(masses, problem, same_delta),
        np.stack([VDelta().compute(states[:, :, i], problem, same_delta[i]) for i in range(4)], -1),
    )
    with pytest.raises(ConfigError, match="delta"):
        VDelta().from_block_masses(masses, problem, [Step(1, 1)] * 4)
