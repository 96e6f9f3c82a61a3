"""Specification of the V_δ projection (THEORY §2, Proposition 1).

The closed form w*_j = clip(s·w_j, a_j, b_j), Σ w* = 1 is checked against independent
references: a generic constrained optimiser (scipy SLSQP) minimising D(w‖w*) and D(w*‖w),
a bisection on the scale s, and the defining properties (box, simplex, idempotence,
within-block shape, batch = row by row).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import rel_entr

from coarsekl.errors import CoarseklError, ConfigError, InfeasibleTargetError
from coarsekl.problem import Problem
from coarsekl.schedules import Step
from coarsekl_blocks.metrics import VDelta
from coarsekl_blocks.partitions import BlockGrid, LabelMap
from coarsekl_blocks.quantities import BlockMass
from coarsekl_blocks.vdelta import (
    IdentityProjector,
    VDeltaProjector,
    apply_block_masses,
    kl_divergence,
    project_masses,
    project_masses_reference,
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------


def admissible_box(reference: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """a_j = max(0, w_ref_j − δ), b_j = min(1, w_ref_j + δ), straight from THEORY §2."""
    return np.maximum(0.0, reference - delta), np.minimum(1.0, reference + delta)


def optimiser_projection(masses, lower, upper, direction: str) -> np.ndarray:
    """argmin over {lower ≤ v ≤ upper, Σv = 1} of D(w‖v) ("forward") or D(v‖w) ("reverse")
    by SLSQP, started from the box's midpoint rescaled onto the simplex where possible."""
    tiny = 1e-12
    if direction == "forward":

        def objective(v):
            return float(np.sum(rel_entr(masses, v)))

        def gradient(v):
            return -masses / v

    else:

        def objective(v):
            return float(np.sum(rel_entr(v, masses)))

        def gradient(v):
            return np.log(v / masses) + 1.0

    start = np.clip(masses, lower, upper)
    start = np.clip(start / start.sum(), np.maximum(lower, tiny), upper)
    result = minimize(
        objective,
        start,
        jac=gradient,
        method="SLSQP",
        bounds=list(zip(np.maximum(lower, tiny), upper, strict=True)),
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1.0, "jac": np.ones_like}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert result.success, result.message
    return result.x


def bisection_projection(masses, lower, upper) -> np.ndarray | None:
    """Solve Σ_j clip(s·w_j, a_j, b_j) = 1 (empty blocks at a_j) for s by plain bisection.

    Returns None when the occupied blocks cannot reach total 1 even at their upper bounds.
    """
    occupied = masses > 0

    def total(s: float) -> float:
        return (
            np.clip(s * masses[occupied], lower[occupied], upper[occupied]).sum()
            + lower[~occupied].sum()
        )

    if not occupied.any():
        return None
    high = 2.0 * float(np.max(upper[occupied] / masses[occupied])) + 1.0
    if total(high) < 1.0:
        return None
    low = 0.0
    for _ in range(2000):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if total(middle) < 1.0:
            low = middle
        else:
            high = middle
    return np.where(occupied, np.clip(high * masses, lower, upper), lower)


def assert_scaling_and_clipping(masses, lower, upper, projected, clipped) -> None:
    """The result is clip(s·w, a, b) for one scalar s on the occupied blocks, and
    ``clipped`` marks blocks put on a bound (never a block strictly inside its interval)."""
    at_lower, at_upper = projected == lower, projected == upper
    assert np.all((at_lower | at_upper)[clipped]), "a clipped block is not on a bound"
    strictly_inside = (projected > lower) & (projected < upper)
    assert not np.any(clipped & strictly_inside), "a block strictly inside is marked clipped"
    occupied = masses > 0
    free = occupied & ~clipped
    if free.any():
        ratios = projected[free] / masses[free]
        scale = float(np.median(ratios))
        np.testing.assert_allclose(ratios, scale, rtol=1e-12)
        np.testing.assert_allclose(
            np.clip(scale * masses, lower, upper)[occupied],
            projected[occupied],
            rtol=1e-12,
            atol=1e-15,
        )
    else:
        # Every occupied block is on a bound: one s must put each on its own side.
        pushed_up = occupied & at_upper & ~at_lower
        pushed_down = occupied & at_lower & ~at_upper
        s_min = np.max(upper[pushed_up] / masses[pushed_up], initial=0.0)
        s_max = np.min(lower[pushed_down] / masses[pushed_down], initial=np.inf)
        assert s_min <= s_max * (1 + 1e-12)


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------


# δ = 0 or δ ≥ 1e-10: a δ far below the rounding unit of the masses (say 1e-38) makes
# a_j = w_ref_j − δ round to w_ref_j, so Σa rounds to 1 and the box degenerates.
DELTAS = st.one_of(st.just(0.0), st.floats(1e-10, 0.5))


@st.composite
def simplex_points(draw, size: int, zeros: bool = True) -> np.ndarray:
    """A point of the simplex Δ_size, exact zeros allowed and frequent."""
    positive = st.floats(1e-9, 1.0)
    element = st.one_of(st.just(0.0), positive) if zeros else positive
    values = np.array(draw(st.lists(element, min_size=size, max_size=size)))
    if values.sum() == 0:
        values[draw(st.integers(0, size - 1))] = 1.0
    return values / values.sum()


@st.composite
def projection_cases(draw, max_blocks: int = 40):
    """(masses, lower, upper, reference, delta) with a feasible box from a simplex point."""
    size = draw(st.integers(1, max_blocks))
    reference = draw(simplex_points(size))
    masses = draw(simplex_points(size))
    delta = draw(DELTAS)
    lower, upper = admissible_box(reference, delta)
    return masses, lower, upper, reference, delta


def mass_problem(labels: np.ndarray, reference: np.ndarray) -> Problem:
    partition = LabelMap(shape=labels.shape, labels=labels)
    return Problem(
        partition=partition,
        quantity=BlockMass(reference=reference),
        data=np.ones(labels.shape),
    )


# ---------------------------------------------------------------------------------------
# Against a generic optimiser (both KL directions)
# ---------------------------------------------------------------------------------------


def random_optimiser_case(seed: int):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 10))
    reference = rng.dirichlet(np.full(size, 2.0))
    masses = rng.dirichlet(np.full(size, 0.7))
    masses = np.maximum(masses, 1e-4)  # the optimiser needs w > 0 for D(w*‖w)
    masses /= masses.sum()
    delta = float(rng.uniform(0.005, 0.15))
    return masses, *admissible_box(reference, delta)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_projection_matches_scipy_minimiser_of_either_kl_direction(seed, direction):
    """THEORY §2: w* minimises D(w‖w*) and also D(w*‖w) over the box ∩ simplex."""
    masses, lower, upper = random_optimiser_case(seed)
    projected, _ = project_masses(masses, lower, upper)
    expected = optimiser_projection(masses, lower, upper, direction)
    np.testing.assert_allclose(projected, expected, atol=2e-6)
    # and the closed form is at least as good as the optimiser's answer
    divergence = (
        (lambda v: rel_entr(masses, v).sum())
        if direction == "forward"
        else (lambda v: rel_entr(v, masses).sum())
    )
    assert divergence(projected) <= divergence(expected) + 1e-10


def test_projection_of_random_inputs_actually_clips_some_blocks():
    """Guard for the optimiser comparison: its cases are not all trivially inside A_δ."""
    n_clipped = sum(project_masses(*random_optimiser_case(seed))[1].sum() for seed in range(12))
    assert n_clipped >= 12


# ---------------------------------------------------------------------------------------
# Properties of project_masses
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(projection_cases())
def test_projection_lies_in_the_box_and_on_the_simplex(case):
    masses, lower, upper, _, _ = case
    projected, clipped = project_masses(masses, lower, upper)
    assert projected.shape == masses.shape and clipped.shape == masses.shape
    assert clipped.dtype == bool
    assert np.all(projected >= lower - 1e-12) and np.all(projected <= upper + 1e-12)
    assert abs(projected.sum() - 1.0) <= 1e-12


@PROPERTY_SETTINGS
@given(projection_cases())
def test_projection_is_scaling_and_clipping_with_one_scale(case):
    masses, lower, upper, _, _ = case
    projected, clipped = project_masses(masses, lower, upper)
    assert_scaling_and_clipping(masses, lower, upper, projected, clipped)


@PROPERTY_SETTINGS
@given(projection_cases())
def test_projection_agrees_with_bisection_on_the_scale(case):
    masses, lower, upper, _, _ = case
    projected, _ = project_masses(masses, lower, upper)
    expected = bisection_projection(masses, lower, upper)
    occupied = masses > 0
    if expected is None:
        # Occupied blocks cannot take all the mass: they sit at their upper bounds, the
        # empty blocks take the rest within their own bounds.
        np.testing.assert_allclose(projected[occupied], upper[occupied], rtol=0, atol=1e-12)
        empty = ~occupied
        assert np.all(projected[empty] >= lower[empty] - 1e-12)
        assert np.all(projected[empty] <= upper[empty] + 1e-12)
    else:
        np.testing.assert_allclose(projected, expected, rtol=0, atol=1e-12)


@PROPERTY_SETTINGS
@given(projection_cases())
def test_projection_is_idempotent(case):
    masses, lower, upper, _, _ = case
    once, _ = project_masses(masses, lower, upper)
    twice, _ = project_masses(once, lower, upper)
    np.testing.assert_allclose(twice, once, rtol=0, atol=1e-14)


@PROPERTY_SETTINGS
@given(projection_cases(), st.floats(0.0, 0.999))
def test_masses_inside_the_box_are_returned_exactly_and_vdelta_is_zero(case, shrink):
    """p ∈ A_δ ⇒ w* = w (bit for bit), nothing clipped, V_δ = D(w‖w*) = 0 exactly."""
    masses, lower, upper, reference, delta = case
    spread = np.max(np.abs(masses - reference))
    weight = 0.0 if spread == 0 else min(1.0, shrink * delta / spread)
    inside = (1 - weight) * reference + weight * masses
    assert np.all(inside >= lower) and np.all(inside <= upper)
    projected, clipped = project_masses(inside, lower, upper)
    np.testing.assert_array_equal(projected, inside)
    assert not clipped.any()
    assert kl_divergence(inside, projected) == 0.0


@PROPERTY_SETTINGS
@given(st.data())
def test_batch_projection_equals_row_by_row(data):
    size = data.draw(st.integers(1, 20), label="K")
    batch_shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="batch")
    per_row_bounds = data.draw(st.booleans(), label="per-row bounds")
    rows = int(np.prod(batch_shape))
    masses = np.stack([data.draw(simplex_points(size)) for _ in range(rows)])
    delta = data.draw(DELTAS)
    references = np.stack(
        [data.draw(simplex_points(size)) for _ in range(rows if per_row_bounds else 1)]
    )
    lower, upper = admissible_box(references, delta)
    if per_row_bounds:
        batch_lower = lower.reshape(*batch_shape, size)
        batch_upper = upper.reshape(*batch_shape, size)
    else:
        batch_lower, batch_upper = lower[0], upper[0]
    projected, clipped = project_masses(
        masses.reshape(*batch_shape, size), batch_lower, batch_upper
    )
    assert projected.shape == clipped.shape == (*batch_shape, size)
    for row in range(rows):
        bounds = (lower[row], upper[row]) if per_row_bounds else (lower[0], upper[0])
        expected, expected_clipped = project_masses(masses[row], *bounds)
        np.testing.assert_allclose(projected.reshape(rows, size)[row], expected, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(clipped.reshape(rows, size)[row], expected_clipped)


def test_projection_examples_worked_by_hand():
    # scaling only: w = (0.7, 0.3), box [0.4, 0.6]² -> (0.6, 0.4); block 2 is clipped
    projected, clipped = project_masses(np.array([0.7, 0.3]), [0.4, 0.4], [0.6, 0.6])
    np.testing.assert_allclose(projected, [0.6, 0.4], rtol=0, atol=1e-15)
    assert clipped[1]
    # one block above its upper bound, the others scale up together
    projected, clipped = project_masses(
        np.array([0.5, 0.25, 0.25]), [0.0, 0.0, 0.0], [0.3, 1.0, 1.0]
    )
    np.testing.assert_allclose(projected, [0.3, 0.35, 0.35], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(clipped, [True, False, False])


def test_empty_block_with_positive_lower_bound_receives_exactly_that_bound():
    """An empty block (w_j = 0) that must hold a_j > 0 gets a_j; the rest rescale."""
    projected, clipped = project_masses(np.array([0.6, 0.4, 0.0]), [0.0, 0.0, 0.2], [1.0, 1.0, 0.4])
    np.testing.assert_allclose(projected, [0.48, 0.32, 0.2], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(clipped, [False, False, True])


def test_empty_blocks_take_the_rest_when_occupied_blocks_are_full():
    projected, clipped = project_masses(np.array([0.5, 0.5, 0.0]), [0.2, 0.2, 0.2], [0.3, 0.3, 0.5])
    np.testing.assert_allclose(projected, [0.3, 0.3, 0.4], rtol=0, atol=1e-15)
    # the empty block ends strictly inside its interval: it was not set to a bound
    np.testing.assert_array_equal(clipped, [True, True, False])


def test_projection_keeps_its_sum_with_nearly_empty_blocks():
    """Masses spanning many orders of magnitude (floored, nearly empty blocks) still give
    Σ w* = 1 to rounding: no loss of precision when s is as large as 1/w_min."""
    rng = np.random.default_rng(7)
    masses = rng.dirichlet(np.ones(30), size=200)
    tiny = rng.random(masses.shape) < 0.3
    masses = np.where(tiny, masses * 10.0 ** rng.uniform(-14, -6, masses.shape), masses)
    masses /= masses.sum(axis=-1, keepdims=True)
    lower, upper = admissible_box(rng.dirichlet(np.ones(30), size=200), 0.02)
    projected, _ = project_masses(masses, lower, upper)
    np.testing.assert_allclose(projected.sum(axis=-1), 1.0, rtol=0, atol=1e-13)
    for row in range(0, 200, 20):
        expected = bisection_projection(masses[row], lower[row], upper[row])
        np.testing.assert_allclose(projected[row], expected, rtol=0, atol=1e-12)


def assert_same_clipping(clipped, expected, projected, lower, upper) -> None:
    """Equal clipped flags, except for blocks that end within rounding of a bound: there the
    root sits on a kink of g, and which side of it rounding lands on is arbitrary."""
    on_a_bound = np.isclose(projected, lower, rtol=1e-12, atol=1e-17) | np.isclose(
        projected, upper, rtol=1e-12, atol=1e-17
    )
    np.testing.assert_array_equal(clipped[~on_a_bound], expected[~on_a_bound])


@PROPERTY_SETTINGS
@given(st.data())
def test_compiled_projection_equals_the_numpy_reference(data):
    """The numba kernel (one row at a time) and the batched numpy reference, on batches with
    empty blocks, shared or per-row bounds, rows inside the box and rows without a root."""
    size = data.draw(st.integers(1, 30), label="K")
    rows = data.draw(st.integers(1, 6), label="rows")
    masses = np.stack([data.draw(simplex_points(size)) for _ in range(rows)])
    if data.draw(st.booleans(), label="per-row bounds"):
        boxes = [
            admissible_box(data.draw(simplex_points(size)), data.draw(DELTAS)) for _ in range(rows)
        ]
        lower, upper = (np.stack(b) for b in zip(*boxes, strict=True))
    else:
        lower, upper = admissible_box(data.draw(simplex_points(size)), data.draw(DELTAS))
    projected, clipped = project_masses(masses, lower, upper)
    expected, expected_clipped = project_masses_reference(masses, lower, upper)
    np.testing.assert_allclose(projected, expected, rtol=1e-12, atol=1e-15)
    assert_same_clipping(clipped, expected_clipped, projected, lower, upper)


def test_compiled_projection_equals_the_reference_on_large_problems():
    rng = np.random.default_rng(11)
    masses = rng.dirichlet(np.full(4096, 0.5), size=8)
    lower, upper = admissible_box(rng.dirichlet(np.ones(4096)), 1e-4)
    projected, clipped = project_masses(masses, lower, upper)
    expected, expected_clipped = project_masses_reference(masses, lower, upper)
    np.testing.assert_allclose(projected, expected, rtol=1e-12, atol=1e-17)
    assert_same_clipping(clipped, expected_clipped, projected, lower, upper)


def test_compiled_projection_usually_finds_the_scale_without_sorting():
    """The O(K) Newton-on-pieces search settles typical rows; only degenerate ones (flat
    pieces at 1, no root) fall back to sorting the breakpoints. White-box: the private
    kernel reports whether it settled the row, and then agrees with the reference."""
    compiled = pytest.importorskip("coarsekl_blocks._compiled")
    rng = np.random.default_rng(5)
    settled = 0
    for _ in range(200):
        size = int(rng.integers(2, 300))
        masses = rng.dirichlet(np.full(size, 0.3))
        lower, upper = admissible_box(rng.dirichlet(np.ones(size)), 0.2 / size)
        projected, clipped = np.empty(size), np.empty(size, dtype=bool)
        if compiled._project_row_by_pieces(masses, lower, upper, projected, clipped):
            settled += 1
            expected, expected_clipped = project_masses_reference(masses, lower, upper)
            np.testing.assert_allclose(projected, expected, rtol=1e-12, atol=1e-17)
            assert_same_clipping(clipped, expected_clipped, projected, lower, upper)
    assert settled >= 190


# ---------------------------------------------------------------------------------------
# kl_divergence
# ---------------------------------------------------------------------------------------


def test_kl_divergence_matches_scipy_rel_entr_with_batches():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6), size=(3, 4))
    q = rng.dirichlet(np.ones(6), size=(3, 4))
    np.testing.assert_allclose(kl_divergence(p, q), rel_entr(p, q).sum(axis=-1), rtol=1e-13)
    np.testing.assert_allclose(
        kl_divergence(p, q, axis=(-2, -1)), rel_entr(p, q).sum(axis=(-2, -1)), rtol=1e-13
    )


def test_kl_divergence_uses_zero_log_zero_and_is_infinite_off_support():
    assert kl_divergence([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0
    np.testing.assert_allclose(kl_divergence([1.0, 0.0], [0.5, 0.5]), np.log(2.0), rtol=1e-15)
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]),
        ([1.0, 0.0], [0.5, 0.5]),
        ([0.5, 0.5], [1.0, 0.0]),
        ([np.nan, 1.0], [0.5, 0.5]),
        ([0.5, 0.5], [np.nan, 1.0]),
        ([-0.1, 1.1], [0.5, 0.5]),
        ([0.0, 1.0], [-0.5, 1.5]),
        ([[0.2, 0.8], [0.7, 0.3]], [[0.5, 0.5], [0.6, 0.4]]),
    ],
)
def test_kl_divergence_gives_scipys_terms_at_the_edges(numerics, p, q):
    """The compiled sum over the last axis takes each term as rel_entr does: 0 log 0 = 0,
    inf off the support or for negative values, NaN for NaN."""
    expected = rel_entr(p, q).sum(axis=-1)
    np.testing.assert_allclose(
        kl_divergence(np.array(p), np.array(q)), expected, rtol=1e-13, atol=1e-16
    )


# ---------------------------------------------------------------------------------------
# VDeltaProjector on states
# ---------------------------------------------------------------------------------------


@st.composite
def projector_cases(draw):
    """A random label-map partition of a 6 × 8 grid into K blocks (arbitrary label values),
    a reference on the simplex, a batch of states with some empty blocks, and δ."""
    size = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = 3 * rng.permutation(np.arange(48) % size).reshape(6, 8) - 5
    problem = mass_problem(labels, draw(simplex_points(size)))
    batch = draw(st.sampled_from([(), (2,), (2, 3)]))
    pixels = rng.random((*batch, 6, 8))
    empty = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    if empty.all():
        empty[0] = False
    pixels *= problem.partition.broadcast(np.where(empty, 0.0, 1.0))
    state = pixels / pixels.sum(axis=(-2, -1), keepdims=True)
    delta = draw(DELTAS)
    return problem, state, delta


@PROPERTY_SETTINGS
@given(projector_cases())
def test_projector_moves_block_masses_to_the_closed_form_and_keeps_shapes(case):
    problem, state, delta = case
    partition = problem.partition
    projector = VDeltaProjector(delta=delta)
    result = projector.project(state, problem, Step(1, 1, delta))
    masses = partition.block_sums(state)
    lower, upper = problem.bounds(delta)
    expected_masses, expected_clipped = project_masses(masses, lower, upper)

    new_state = result.state
    assert new_state.shape == state.shape
    assert np.all(new_state >= 0)
    np.testing.assert_allclose(new_state.sum(axis=(-2, -1)), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(partition.block_sums(new_state), expected_masses, atol=1e-15)
    np.testing.assert_array_equal(result.clipped, expected_clipped)

    new_masses = partition.broadcast(expected_masses)
    old_masses = partition.broadcast(masses)
    occupied = (old_masses > 0) & (new_masses > 0)
    # within-block shape p(x|j) is kept for occupied blocks
    np.testing.assert_allclose(
        (new_state / np.where(occupied, new_masses, 1.0))[occupied],
        (state / np.where(occupied, old_masses, 1.0))[occupied],
        rtol=1e-12,
    )
    # empty blocks that receive mass are filled uniformly: w*_j / |Ω_j| on every pixel
    filled = (old_masses == 0) & (new_masses > 0)
    sizes = partition.broadcast(partition.block_sizes.astype(float))
    np.testing.assert_allclose(new_state[filled], (new_masses / sizes)[filled], rtol=1e-14)
    # blocks that end with no mass are zero
    assert np.all(new_state[new_masses == 0] == 0)


@PROPERTY_SETTINGS
@given(projector_cases())
def test_projector_is_idempotent_and_gives_zero_vdelta(case):
    problem, state, delta = case
    step = Step(1, 1, delta)
    projector = VDeltaProjector(delta=delta)
    once = projector.project(state, problem, step).state
    twice = projector.project(once, problem, step).state
    np.testing.assert_allclose(twice, once, rtol=1e-12, atol=1e-15)
    assert np.all(VDelta().compute(once, problem, step) <= 1e-13)


@PROPERTY_SETTINGS
@given(projector_cases())
def test_projector_leaves_states_inside_the_admissible_set_untouched(case):
    problem, state, delta = case
    assume_delta = max(delta, 1e-3)
    masses = problem.partition.block_sums(state)
    reference = problem.reference_masses
    spread = np.max(np.abs(masses - reference), axis=-1, keepdims=True)
    limit = np.divide(0.9 * assume_delta, spread, out=np.ones_like(spread), where=spread > 0)
    weight = np.minimum(1.0, limit)
    # mix towards a state with reference block masses and uniform within-block shapes
    target = problem.partition.broadcast(reference / problem.partition.block_sizes)
    inside = (1 - weight[..., None]) * target + weight[..., None] * state
    step = Step(1, 1, assume_delta)
    lower, upper = problem.bounds(assume_delta)
    inside_masses = problem.partition.block_sums(inside)
    # rounding may put Σ p a hair above 1 = b_1 (K = 1): such a state is not inside
    assume(np.all((inside_masses >= lower) & (inside_masses <= upper)))
    result = VDeltaProjector(delta=assume_delta).project(inside, problem, step)
    np.testing.assert_array_equal(result.state, inside)
    assert not result.clipped.any()
    np.testing.assert_array_equal(VDelta().compute(inside, problem, step), 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("delta", [0.0, 0.004, 0.5])  # all clipped … inside the box
def test_projection_on_a_grid_gives_the_numbers_of_the_general_path(numerics, delta, dtype):
    """On a block grid with no empty block, the compiled projector projects and rescales
    in one call: the same numbers as project_masses then apply_block_masses, and the
    block sums of its result, taken in the same pass, are the partition's (float32 states:
    of the values as stored)."""
    grid = BlockGrid(shape=(16, 12), blocks=(4, 3))
    rng = np.random.default_rng(7)
    problem = Problem(partition=grid, quantity=BlockMass(), data=rng.random((16, 12)))
    state = rng.random((2, 3, 16, 12))
    state = (state / state.sum(axis=(-2, -1), keepdims=True)).astype(dtype)
    result = VDeltaProjector(delta=delta).project(state, problem, Step(1, 1, delta))
    masses = grid.block_sums(state)
    new_masses, clipped = project_masses(masses, *problem.bounds(delta))
    expected = apply_block_masses(state, problem, masses, new_masses)
    np.testing.assert_array_equal(result.state, expected)
    np.testing.assert_array_equal(result.clipped, clipped)
    summary = problem.recall(result.state, "summary")
    if numerics == "reference":
        assert summary is None
    else:
        np.testing.assert_array_equal(summary[0], grid.summarise(result.state)[0])
        assert summary[1] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("delta", [0.0, 0.004, 0.5])
def test_projection_in_place_writes_the_same_numbers_into_the_state(numerics, dtype, delta):
    """``in_place=True`` (what the runner asks of a projector declaring
    ``projects_in_place``): the state itself ends up holding what the projection out of
    place returns, bit for bit, and the block sums remembered with it are the result's."""
    assert VDeltaProjector.projects_in_place
    grid = BlockGrid(shape=(16, 12), blocks=(4, 3))
    rng = np.random.default_rng(11)
    problem = Problem(partition=grid, quantity=BlockMass(), data=rng.random((16, 12)))
    state = rng.random((2, 3, 16, 12))
    state = (state / state.sum(axis=(-2, -1), keepdims=True)).astype(dtype)
    projector, step = VDeltaProjector(delta=delta), Step(1, 1, delta)
    expected = projector.project(state, problem, step)
    written = state.copy()
    result = projector.project(written, problem, step, in_place=True)
    np.testing.assert_array_equal(result.state, expected.state)
    np.testing.assert_array_equal(result.clipped, expected.clipped)
    if numerics == "compiled":  # (the reference path may return a new array)
        assert result.state is written
        np.testing.assert_array_equal(written, expected.state)
        summary = problem.recall(result.state, "summary")
        np.testing.assert_array_equal(summary[0], grid.summarise(result.state)[0])


def test_projection_in_place_leaves_a_read_only_state_alone():
    grid = BlockGrid(shape=(8, 8), blocks=(2, 2))
    rng = np.random.default_rng(3)
    problem = Problem(partition=grid, quantity=BlockMass(), data=rng.random((8, 8)))
    state = rng.random((1, 8, 8))
    state /= state.sum()
    state.flags.writeable = False
    before = state.copy()
    result = VDeltaProjector(delta=0.0).project(state, problem, Step(1, 1, 0.0), in_place=True)
    np.testing.assert_array_equal(state, before)
    np.testing.assert_allclose(grid.block_sums(result.state), problem.reference_masses[None])


def test_apply_block_masses_rescales_blocks_and_fills_empty_ones_uniformly():
    grid = BlockGrid(shape=(2, 4), blocks=(1, 2))
    problem = Problem(partition=grid, quantity=BlockMass(), data=np.ones((2, 4)))
    state = np.array([[0.1, 0.3, 0.0, 0.0], [0.2, 0.4, 0.0, 0.0]])
    result = apply_block_masses(state, problem, np.array([1.0, 0.0]), np.array([0.6, 0.4]))
    np.testing.assert_allclose(result[:, :2], 0.6 * state[:, :2], rtol=1e-15)
    np.testing.assert_allclose(result[:, 2:], 0.1, rtol=1e-15)


def test_projector_follows_a_delta_schedule():
    grid = BlockGrid(shape=(4, 4), blocks=(2, 2))
    data = np.kron(np.array([[0.9, 0.1], [0.1, 0.9]]), np.ones((2, 2)))
    problem = Problem(partition=grid, quantity=BlockMass(), data=data)
    projector = VDeltaProjector(delta={"schedule": "linear", "start": 0.2, "stop": 0.0})
    assert projector.tolerance(Step(1, 5)) == pytest.approx(0.2)
    assert projector.tolerance(Step(3, 5)) == pytest.approx(0.1)
    assert projector.tolerance(Step(5, 5)) == 0.0
    state = np.full((4, 4), 1 / 16)
    final = projector.project(state, problem, Step(5, 5, 0.0)).state
    # δ = 0 at the last step: the block masses are pinned to the reference
    np.testing.assert_allclose(grid.block_sums(final), problem.reference_masses, atol=1e-15)
    first = projector.project(state, problem, Step(1, 5, 0.2)).state
    np.testing.assert_array_equal(first, state)  # uniform masses are within 0.2


def test_identity_projector_changes_nothing_and_clips_nothing():
    grid = BlockGrid(shape=(4, 6), blocks=(2, 3))
    problem = Problem(partition=grid, quantity=BlockMass(), data=np.ones((4, 6)))
    state = np.random.default_rng(0).dirichlet(np.ones(24), size=(2, 3)).reshape(2, 3, 4, 6)
    result = IdentityProjector().project(state, problem, Step(1, 1))
    np.testing.assert_array_equal(result.state, state)
    assert result.clipped.shape == (2, 3, 6)
    assert result.clipped.dtype == bool and not result.clipped.any()
    assert IdentityProjector().tolerance(Step(1, 1)) is None


# ---------------------------------------------------------------------------------------
# Infeasible targets and bad tolerances
# ---------------------------------------------------------------------------------------


def four_block_problem(reference) -> Problem:
    return Problem(
        partition=BlockGrid(shape=(4, 4), blocks=(2, 2)),
        quantity=BlockMass(reference=reference),
        data=np.ones((4, 4)),
    )


@pytest.mark.parametrize("reference", [[0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.1, 0.1]])
def test_reference_masses_not_summing_to_one_with_small_delta_are_infeasible(reference):
    problem = four_block_problem(reference)
    total = sum(reference)
    with pytest.raises(InfeasibleTargetError) as info:
        problem.bounds(0.01)
    message = str(info.value)
    assert "δ" in message and "sum" in message
    assert f"{total:.6g}" in message  # says what the references add up to
    with pytest.raises(InfeasibleTargetError):
        VDeltaProjector(delta=0.01).project(np.full((4, 4), 1 / 16), problem, Step(1, 1, 0.01))
    with pytest.raises(InfeasibleTargetError):
        VDelta().compute(np.full((4, 4), 1 / 16), problem, Step(1, 1, 0.01))


def test_infeasibility_is_exactly_sum_a_above_one_or_sum_b_below_one():
    problem = four_block_problem([0.3, 0.3, 0.3, 0.3])  # Σ = 1.2: need 4δ ≥ 0.2
    with pytest.raises(InfeasibleTargetError):
        problem.bounds(0.049)
    lower, upper = problem.bounds(0.051)
    assert lower.sum() <= 1 <= upper.sum()
    projected, _ = project_masses(np.full(4, 0.25), lower, upper)
    np.testing.assert_allclose(projected.sum(), 1.0, atol=1e-15)


@pytest.mark.parametrize("delta", [-0.01, float("nan"), float("inf")])
def test_bounds_reject_negative_or_non_finite_delta(delta):
    problem = four_block_problem(None)
    with pytest.raises(CoarseklError, match="δ"):
        problem.bounds(delta)


@pytest.mark.parametrize(
    "delta", [-0.01, {"schedule": "linear", "start": 0.1, "stop": -0.1}, "small"]
)
def test_projector_rejects_negative_or_malformed_delta(delta):
    with pytest.raises(ConfigError):
        VDeltaProjector(delta=delta)
