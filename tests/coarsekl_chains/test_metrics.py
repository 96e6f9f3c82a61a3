"""Specification of V_π and Theorem 1 (THEORY.md §2 and §5).

V_π(p) = Σ_j w_j D(p(·|j) ‖ π_j) is the smallest KL divergence from p to the stationary
distributions Σ_j v_j π_j of π-preserving block chains (checked against scipy.optimize);
it never increases along block-diagonal kernels that keep every π_j invariant, whatever
their time dependence (hypothesis searches random chains), and it can increase when the
kernel does not keep π_j invariant (hypothesis finds a counterexample).
"""

from __future__ import annotations

import hypothesis
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.metrics import WithinBlockV
from coarsekl_blocks.partitions import BlockGrid
from coarsekl_blocks.quantities import BlockMass
from coarsekl_chains.kernels import RandomBlockKernel, apply_transition
from coarsekl_chains.metrics import WithinBlockReferenceV, kl_to_stationary, within_block_kl
from coarsekl_chains.partitions import LabelVector

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def random_distributions(shape, seed) -> np.ndarray:
    values = np.random.default_rng(seed).gamma(0.7, size=shape)
    return values / values.sum(axis=-1, keepdims=True)


def test_with_uniform_reference_V_pi_is_the_V_of_coarsekl_blocks():
    grid = BlockGrid(shape=(4, 6), blocks=(2, 3))
    rng = np.random.default_rng(0)
    problem = Problem(partition=grid, quantity=BlockMass(), data=rng.random((4, 6)))
    states = rng.random((2, 3, 4, 6))
    states /= states.sum(axis=(-2, -1), keepdims=True)
    expected = WithinBlockV().compute(states, problem, Step(1, 1))
    actual = WithinBlockReferenceV().compute(states, problem, Step(1, 1))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


def test_V_pi_is_the_block_weighted_divergence_of_the_conditionals():
    partition = LabelVector(shape=(7,), sizes=[3, 4], reference=[1, 2, 3, 4, 3, 2, 1])
    p = random_distributions((7,), seed=1)
    expected = 0.0
    for block in range(2):
        inside = partition.inverse == block
        mass = p[inside].sum()
        conditional = p[inside] / mass
        expected += mass * np.sum(conditional * np.log(conditional / partition.reference[inside]))
    assert within_block_kl(p, partition) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_V_pi_is_the_minimal_KL_to_the_reachable_stationary_set(seed):
    """min over v ∈ Δ_K of D(p ‖ Σ_j v_j π_j), found by a generic optimiser, equals V_π(p)
    and is attained at v = w(p)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=rng.integers(2, 5)).tolist()
    n = sum(sizes)
    partition = LabelVector(shape=(n,), sizes=sizes, reference=rng.uniform(0.1, 1.0, n))
    p = random_distributions((n,), seed)
    k = len(sizes)

    def divergence(v):
        return float(kl_to_stationary(p, partition, partition.reference, v))

    result = minimize(
        divergence,
        np.full(k, 1.0 / k),
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert result.success, result.message
    assert result.fun == pytest.approx(within_block_kl(p, partition), abs=1e-8)
    np.testing.assert_allclose(result.x, partition.block_sums(p), atol=1e-4)


def test_V_pi_is_zero_exactly_at_the_stationary_set_and_positive_elsewhere():
    partition = LabelVector(shape=(5,), sizes=[2, 3], reference=[1, 3, 1, 1, 2])
    stationary = partition.broadcast(np.array([0.3, 0.7])) * partition.reference
    assert within_block_kl(stationary, partition) == pytest.approx(0.0, abs=1e-15)
    assert within_block_kl(random_distributions((5,), 3), partition) > 0


chains = st.fixed_dictionaries(
    {
        "sizes": st.lists(st.integers(1, 4), min_size=1, max_size=4),
        "seed": st.integers(0, 2**32 - 1),
        "steps": st.integers(1, 6),
        "permutations": st.integers(1, 4),
        "concentration": st.sampled_from([0.2, 1.0, 5.0]),
    }
)


def run_chain(chain: dict, family: str, uniform_reference: bool, start: str = "random"):
    """V_π along one random time-inhomogeneous chain: (steps + 1,) values."""
    rng = np.random.default_rng(chain["seed"])
    n = sum(chain["sizes"])
    reference = None if uniform_reference else rng.uniform(0.05, 1.0, n)
    partition = LabelVector(shape=(n,), sizes=chain["sizes"], reference=reference)
    kernel = RandomBlockKernel(
        family=family,
        permutations=chain["permutations"],
        concentration=chain["concentration"],
    )
    if start == "random":
        state = random_distributions((1, 1, n), chain["seed"])
    else:  # the stationary distribution with random block masses: V_π = 0
        masses = random_distributions((partition.n_blocks,), chain["seed"])
        state = (partition.broadcast(masses) * partition.reference)[None, None]
    streams = MemberRandom.from_seed(chain["seed"], Purpose.KERNEL, 1)
    values = [within_block_kl(state, partition)]
    for index in range(1, chain["steps"] + 1):
        state = apply_transition(state, kernel.matrices(partition, Step(index, 9), streams))
        values.append(within_block_kl(state, partition))
    return np.concatenate(values).ravel()


@PROPERTY_SETTINGS
@given(chains)
def test_theorem_1_doubly_stochastic_blocks_never_increase_V_to_uniform(chain):
    values = run_chain(chain, "doubly-stochastic", uniform_reference=True)
    assert np.all(np.diff(values) <= 1e-12 * (1 + values[:-1]))


@PROPERTY_SETTINGS
@given(chains)
def test_theorem_1_pi_invariant_blocks_never_increase_V_to_pi(chain):
    values = run_chain(chain, "stationary", uniform_reference=False)
    assert np.all(np.diff(values) <= 1e-12 * (1 + values[:-1]))


def test_without_pi_invariance_hypothesis_finds_a_chain_where_V_increases():
    """Row-stochastic blocks that do not keep π_j invariant break Theorem 1."""

    def increases(chain):
        values = run_chain(chain, "stochastic", uniform_reference=False, start="stationary")
        return np.diff(values).max() > 1e-6

    counterexample = hypothesis.find(
        chains, increases, settings=settings(max_examples=200, deadline=None, derandomize=True)
    )
    values = run_chain(counterexample, "stochastic", uniform_reference=False, start="stationary")
    assert values[0] == pytest.approx(0.0, abs=1e-15)
    assert values.max() > 1e-6


def test_doubly_stochastic_blocks_do_not_keep_a_non_uniform_pi_and_can_increase_V_pi():
    chain = {"sizes": [3, 4], "seed": 1, "steps": 3, "permutations": 3, "concentration": 1.0}
    values = run_chain(chain, "doubly-stochastic", uniform_reference=False, start="stationary")
    assert values[0] == pytest.approx(0.0, abs=1e-15)
    assert np.diff(values).max() > 1e-3
