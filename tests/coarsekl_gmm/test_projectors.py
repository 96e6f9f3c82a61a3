"""Specification of the sample-based V_δ projection of particle ensembles (THEORY §7 and
§2, Proposition 1; paper Sec. 2.2).

The block masses after a projection are checked against the admissible box around the
exact noised data's reference w^ref(ᾱ), against the closed form (scaling and clipping,
``coarsekl_blocks.vdelta.project_masses``) and against a generic optimiser (SLSQP
minimising D(w ‖ w') over the box ∩ simplex). Reweighting keeps the particles and scales
each block's weights by one factor; resampling keeps each block's particles and gives
block j within one of N·w*_j copies, with uniform weights.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import optimize

from coarsekl.ensemble import Ensemble
from coarsekl.errors import CoarseklWarning, ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.quantities import BlockMass
from coarsekl_blocks.vdelta import project_masses
from coarsekl_gmm.data import RingData
from coarsekl_gmm.particles import effective_sample_size
from coarsekl_gmm.partitions import ClassPartition
from coarsekl_gmm.projectors import ResampleProjector, ReweightProjector, projected_block_masses

PARTICLES = 1000
RING = RingData(components=4, radius=4.0, std=0.5, weights=[4, 3, 2, 1]).distribution(None)
PARTITION = ClassPartition(shape=(PARTICLES,), data=RING, reference_samples=20_000)
PROBLEM = Problem(PARTITION, BlockMass(), RING)
STEP = Step(3, 10)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def random_ensemble(seed: int, alpha_bar: float = 1.0, batch=(2,), spread: float = 1.5):
    """Particles of q_ᾱ with random positive weights whose block masses are far from the
    reference: each class's weights scaled by a random factor exp(N(0, spread²))."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(batch)) * PARTICLES
    sample, _ = RING.noised(alpha_bar).sample(count, rng)
    positions = sample.reshape(*batch, PARTICLES, 2)
    labels = PARTITION.assign(positions, alpha_bar)
    factors = np.exp(spread * rng.standard_normal((*batch, 4)))
    weights = (0.1 + rng.random((*batch, PARTICLES))) * np.take_along_axis(factors, labels, -1)
    weights /= weights.sum(-1, keepdims=True)
    return Ensemble(positions, weights, alpha_bar=alpha_bar)


def masses_by_loop(ensemble: Ensemble) -> np.ndarray:
    """Block masses from np.bincount of freshly assigned labels (not the partition's sums)."""
    labels = PARTITION.assign(ensemble.positions, ensemble.alpha_bar).reshape(-1, PARTICLES)
    weights = ensemble.weights.reshape(-1, PARTICLES)
    rows = [np.bincount(lab, w, minlength=4) for lab, w in zip(labels, weights, strict=True)]
    return np.array(rows).reshape(*ensemble.shape[:-1], 4)


def box(delta: float, alpha_bar: float) -> tuple[np.ndarray, np.ndarray]:
    reference = PROBLEM.reference_for(Ensemble(np.zeros((1, 2)), np.ones(1), alpha_bar=alpha_bar))
    return np.maximum(reference - delta, 0.0), np.minimum(reference + delta, 1.0)


def slsqp_projection(masses: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """argmin_{v in box, Σv = 1} Σ_j w_j log(w_j / v_j), by a generic optimiser."""
    floor = np.maximum(lower, 1e-12)
    start = np.clip(masses, floor, upper)
    start = np.clip(start / start.sum(), floor, upper)
    result = optimize.minimize(
        lambda v: float(np.sum(masses * np.log(masses / v))),
        start,
        jac=lambda v: -masses / v,
        bounds=list(zip(floor, upper, strict=True)),
        constraints=[
            {"type": "eq", "fun": lambda v: v.sum() - 1.0, "jac": lambda v: np.ones_like(v)}
        ],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert result.success, result.message
    return result.x


# ---------------------------------------------------------------------------------------
# Reweighting
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    delta=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**32 - 1),
    alpha_bar=st.sampled_from([1.0, 0.5, 0.2]),
)
def test_reweighting_is_the_kl_projection_of_the_block_masses(delta, seed, alpha_bar):
    state = random_ensemble(seed, alpha_bar)
    before = masses_by_loop(state)
    projection = ReweightProjector(delta=delta).project(state, PROBLEM, STEP)
    new = projection.state
    after = masses_by_loop(new)
    lower, upper = box(delta, alpha_bar)
    reference = PROBLEM.reference_for(state)
    # every block within δ of the reference of the exact noised data at the ensemble's ᾱ
    assert np.all(np.abs(after - reference) <= delta + 1e-12)
    np.testing.assert_allclose(new.weights.sum(-1), 1.0, rtol=1e-13)
    # the closed form, and a generic optimiser of D(w ‖ w') over the box ∩ simplex
    closed, clipped = project_masses(before, lower, upper)
    np.testing.assert_allclose(after, closed, atol=1e-12)
    np.testing.assert_array_equal(projection.clipped, clipped)
    for row in range(2):
        np.testing.assert_allclose(
            after[row], slsqp_projection(before[row], lower, upper), atol=2e-6
        )
    # positions kept; one factor per block (w*_j / w_j)
    assert new.positions is state.positions and new.alpha_bar == alpha_bar
    labels = PARTITION.assign(state.positions, alpha_bar)
    ratio = new.weights / state.weights
    expected = np.take_along_axis(closed / before, labels, -1)
    np.testing.assert_allclose(ratio, expected, rtol=1e-10)
    # clipped blocks sit on a bound; the free ones share one scale factor 1/τ
    on_bound = np.isclose(after, lower, atol=1e-12) | np.isclose(after, upper, atol=1e-12)
    assert np.all(on_bound[projection.clipped])
    for row in range(2):
        free = ~projection.clipped[row]
        if free.sum() > 1:
            scale = after[row, free] / before[row, free]
            np.testing.assert_allclose(scale, scale[0], rtol=1e-10)


def test_an_ensemble_inside_the_box_is_left_alone():
    state = random_ensemble(0, spread=0.0)
    masses = masses_by_loop(state)
    reference = PROBLEM.reference_for(state)
    delta = float(np.abs(masses - reference).max()) + 1e-3
    projection = ReweightProjector(delta=delta).project(state, PROBLEM, STEP)
    np.testing.assert_allclose(projection.state.weights, state.weights, rtol=1e-14)
    assert not projection.clipped.any()


def test_reweighting_remembers_the_new_block_masses_truthfully():
    state = random_ensemble(1)
    new = ReweightProjector(delta=0.02).project(state, PROBLEM, STEP).state
    np.testing.assert_allclose(PROBLEM.block_masses(new), masses_by_loop(new), atol=1e-13)
    # the labels travel with the reweighted ensemble
    assert PARTITION.labels(new) is PARTITION.labels(state)


def test_reweighting_costs_effective_sample_size():
    state = random_ensemble(2, spread=0.0)  # masses near the reference
    skewed = random_ensemble(2, spread=2.0)
    ess_near = effective_sample_size(
        ReweightProjector(delta=0.01).project(state, PROBLEM, STEP).state.weights
    )
    ess_far = effective_sample_size(
        ReweightProjector(delta=0.01).project(skewed, PROBLEM, STEP).state.weights
    )
    assert np.all(ess_far < ess_near) and np.all(ess_near <= PARTICLES)


def test_the_tolerance_may_follow_a_schedule():
    projector = ReweightProjector(delta={"schedule": "linear", "start": 0.1, "stop": 0.0})
    assert projector.tolerance(Step(1, 11)) == pytest.approx(0.1)
    assert projector.tolerance(Step(6, 11)) == pytest.approx(0.05)
    state = random_ensemble(3)
    new = projector.project(state, PROBLEM, Step(11, 11)).state
    reference = np.broadcast_to(PROBLEM.reference_for(state), (2, 4))
    np.testing.assert_allclose(masses_by_loop(new), reference, atol=1e-12)  # δ = 0 at the end


@pytest.mark.parametrize("projector", [ReweightProjector, ResampleProjector])
def test_a_negative_tolerance_is_a_config_error(projector):
    with pytest.raises(ConfigError, match="delta must be ≥ 0"):
        projector(delta=-0.01)


# ---------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------


def resample(state: Ensemble, delta: float, seed: int = 0, members: int = 2):
    rng = MemberRandom.from_seed(seed, Purpose.PROJECTOR, members)
    return ResampleProjector(delta=delta).project(state, PROBLEM, STEP, rng)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("delta", [0.0, 0.01, 0.05])
def test_resampling_moves_the_counts_to_the_projected_masses_within_blocks(numerics, seed, delta):
    state = random_ensemble(seed, alpha_bar=0.5)
    origin = np.broadcast_to(np.arange(PARTICLES), state.shape)
    previous = 2.0 * state.positions + 1.0  # a multistep sampler's memory
    state = state.replace(carried={"origin": origin, "x0_previous": previous})
    _, projected, clipped = projected_block_masses(state, PROBLEM, delta, 1.0 / PARTICLES)
    projection = resample(state, delta, seed)
    new = projection.state
    np.testing.assert_array_equal(projection.clipped, clipped)
    # uniform weights, N particles, same ᾱ
    assert new.shape == state.shape and new.alpha_bar == 0.5
    np.testing.assert_array_equal(new.weights, 1.0 / PARTICLES)
    np.testing.assert_allclose(effective_sample_size(new.weights), PARTICLES)
    # every new particle is an old one of the same block; carried arrays follow it
    index = new.carried["origin"]
    old_labels = PARTITION.assign(state.positions, 0.5)
    new_labels = PARTITION.assign(new.positions, 0.5)
    np.testing.assert_array_equal(
        new.positions, np.take_along_axis(state.positions, index[..., None], -2)
    )
    np.testing.assert_array_equal(new_labels, np.take_along_axis(old_labels, index, -1))
    np.testing.assert_array_equal(new.carried["x0_previous"], 2.0 * new.positions + 1.0)
    np.testing.assert_array_equal(PARTITION.labels(new), new_labels)  # gathered, not stale
    # block j holds N·w*_j particles within one; w* was projected onto the intervals
    # narrowed by 1/N, so the counts land within δ of w^ref whenever δ ≥ 1/N
    counts = np.stack([np.bincount(row, minlength=4) for row in new_labels])
    assert np.all(np.abs(counts - PARTICLES * projected) < 1.0 + 1e-9)
    reference = PROBLEM.reference_for(state)
    slack = 0.0 if delta >= 1.0 / PARTICLES else 1.0 / PARTICLES
    assert np.all(np.abs(counts / PARTICLES - reference) <= delta + slack + 1e-12)


def test_resampling_is_reproducible_and_shares_the_uniform_across_schemes(numerics):
    member_states = random_ensemble(5, batch=(2,))
    state = Ensemble(
        np.stack([member_states.positions] * 2), np.stack([member_states.weights] * 2)
    )  # (scheme, member, N): two identical schemes
    first = resample(state, 0.01, seed=9).state
    again = resample(state, 0.01, seed=9).state
    np.testing.assert_array_equal(first.positions, again.positions)
    np.testing.assert_array_equal(first.positions[0], first.positions[1])  # common numbers
    other = resample(state, 0.01, seed=10).state
    assert not np.array_equal(first.positions, other.positions)


def test_only_the_resampler_draws_random_numbers():
    assert ResampleProjector.uses_random is True
    assert getattr(ReweightProjector, "uses_random", False) is False


# ---------------------------------------------------------------------------------------
# Empty blocks
# ---------------------------------------------------------------------------------------


def ensemble_without(classes: list[int], seed: int = 0, batch: int = 1) -> Ensemble:
    """Particles at ᾱ = 1 drawn only from the components in ``classes`` (the others
    empty: the ring is well separated), random positive weights."""
    rng = np.random.default_rng(seed)
    kept = RING.with_weights(np.isin(np.arange(4), classes).astype(float))
    positions = kept.sample(batch * PARTICLES, rng)[0].reshape(batch, PARTICLES, 2)
    weights = rng.dirichlet(np.ones(PARTICLES), batch)
    return Ensemble(positions, weights)


def test_an_empty_block_with_room_elsewhere_stays_empty_without_a_warning():
    state = ensemble_without([0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masses, projected, _ = projected_block_masses(state, PROBLEM, 0.05)
    assert masses[0, 3] == 0 and projected[0, 3] == 0
    np.testing.assert_allclose(projected.sum(-1), 1.0)
    lower, upper = box(0.05, 1.0)
    assert np.all((projected[0, :3] >= lower[:3] - 1e-12) & (projected[0, :3] <= upper[:3] + 1e-12))


@pytest.mark.parametrize("kind", ["reweight", "resample"])
def test_an_empty_block_without_room_widens_the_others_with_a_warning(numerics, kind):
    delta = 0.01
    state = ensemble_without([0, 1, 2], seed=1)
    reference = PROBLEM.reference_for(state)
    with pytest.warns(CoarseklWarning, match="hold no particles"):
        _, projected, _ = projected_block_masses(state, PROBLEM, delta)
    # every occupied block at its widened upper bound: the missing mass is shared equally
    np.testing.assert_allclose(projected.sum(-1), 1.0, rtol=1e-12)
    assert projected[0, 3] == 0
    np.testing.assert_allclose(projected[0, :3] - reference[:3], reference[3] / 3, atol=1e-12)
    with pytest.warns(CoarseklWarning):
        if kind == "reweight":
            new = ReweightProjector(delta=delta).project(state, PROBLEM, STEP).state
        else:
            new = resample(state, delta, members=1).state
    after = masses_by_loop(new)
    np.testing.assert_allclose(after.sum(-1), 1.0)
    assert after[0, 3] == 0
    np.testing.assert_allclose(
        after, projected, atol=1.0 / PARTICLES if kind == "resample" else 1e-12
    )


def test_a_lone_occupied_block_takes_all_the_mass():
    state = ensemble_without([2])
    with pytest.warns(CoarseklWarning):
        _, projected, _ = projected_block_masses(state, PROBLEM, 0.01)
    np.testing.assert_allclose(projected, [[0.0, 0.0, 1.0, 0.0]], atol=1e-12)


def test_the_widening_acts_on_the_rows_that_need_it_only():
    empty = ensemble_without([0, 1, 2], seed=2)
    full = random_ensemble(4, batch=(1,))
    both = Ensemble(
        np.concatenate([empty.positions, full.positions]),
        np.concatenate([empty.weights, full.weights]),
    )
    with pytest.warns(CoarseklWarning):
        _, projected, _ = projected_block_masses(both, PROBLEM, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, alone, _ = projected_block_masses(full, PROBLEM, 0.01)
    np.testing.assert_allclose(projected[1], alone[0], atol=1e-15)
