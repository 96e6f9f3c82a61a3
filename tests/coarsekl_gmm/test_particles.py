"""Specification of the particle numerics (THEORY §7: sample-based V_δ projection and the
distances to an exact Gaussian-mixture target).

Block sums, reweighting and resampling are checked against plain Python loops and the
defining properties (hypothesis); resampling's within-block frequencies by Monte Carlo
over many uniforms (systematic resampling is unbiased); the distances against scipy
(energy distance, Gaussian CDFs, quadrature), closed forms (a shifted Gaussian) and
brute-force quantile computations.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats
from scipy.special import ndtr

from coarsekl.errors import DataError
from coarsekl.numerics import compiled_enabled, reference_numerics
from coarsekl_gmm import particles
from coarsekl_gmm.particles import (
    binned_kl_2d,
    block_weights,
    effective_sample_size,
    energy_distance,
    mixture_cell_probabilities,
    mixture_quantiles_1d,
    random_directions,
    resample_within_blocks,
    reweight,
    sliced_wasserstein,
    weighted_entropy_of_posteriors,
    weighted_histogram_2d,
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# A 2-D two-component mixture with correlated covariances (the distances' target).
PI = np.array([0.3, 0.7])
MU = np.array([[0.0, 0.0], [3.0, 1.0]])
COV = np.array([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 0.4]]])


def sample_mixture(rng, n, pi=PI, mu=MU, cov=COV):
    component = rng.choice(pi.size, n, p=pi)
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((n, mu.shape[1]))
    return mu[component] + np.einsum("nij,nj->ni", chol[component], z)


# ---------------------------------------------------------------------------------------
# Random ensembles for the properties: weights (zeros allowed), labels, a feasible target
# ---------------------------------------------------------------------------------------


@st.composite
def ensembles(draw, max_rows=3, max_particles=40, max_blocks=6):
    rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(1, max_particles))
    k = draw(st.integers(1, max_blocks))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, (rows, n))
    weights = rng.random((rows, n)) ** draw(st.sampled_from([1, 4]))
    weights[rng.random((rows, n)) < draw(st.sampled_from([0.0, 0.3]))] = 0.0
    weights[:, 0] = np.maximum(weights[:, 0], 0.1)  # every row keeps some weight
    occupied = block_weights(weights, labels, k) > 0
    target = rng.random((rows, k)) * occupied
    target[rng.random((rows, k)) < 0.3] = 0.0
    target[np.arange(rows), labels[:, 0]] += 0.05  # occupied: keeps Σ target > 0
    uniforms = rng.random(rows)
    return weights, labels, target / target.sum(-1, keepdims=True), uniforms


def searchsorted_resampling(weights, labels, target, uniforms):
    """The textbook construction, row by row: particles sorted by block, block j's weights
    rescaled to total target_j, the comb (u + i)/N searched in their cumulative sum."""
    rows, n = weights.shape
    out = np.empty((rows, n), dtype=np.int64)
    for r in range(rows):
        order = np.argsort(labels[r], kind="stable")
        masses = np.array([weights[r][labels[r] == j].sum() for j in range(target.shape[1])])
        scaled = [
            weights[r, i] * target[r, labels[r, i]] / masses[labels[r, i]]
            if masses[labels[r, i]] > 0
            else 0.0
            for i in order
        ]
        cdf = np.cumsum(scaled)
        comb = (uniforms[r] + np.arange(n)) / n
        out[r] = order[np.minimum(np.searchsorted(cdf, comb, side="right"), n - 1)]
    return out


def particles_path(path):
    """The compiled (when numba runs) or the plain-numpy path, inside a hypothesis test
    (where the function-scoped ``numerics`` fixture cannot switch per example)."""
    if path == "reference" or not compiled_enabled():
        return reference_numerics()
    return nullcontext()


# ---------------------------------------------------------------------------------------
# Block sums and reweighting
# ---------------------------------------------------------------------------------------


def test_block_weights_equal_a_python_loop_over_batch_and_particles():
    rng = np.random.default_rng(0)
    weights = rng.random((2, 3, 50))
    labels = rng.integers(0, 5, (2, 3, 50))
    expected = np.zeros((2, 3, 5))
    for a in range(2):
        for b in range(3):
            for n in range(50):
                expected[a, b, labels[a, b, n]] += weights[a, b, n]
    np.testing.assert_allclose(block_weights(weights, labels, 5), expected, rtol=1e-14)


def test_block_weights_broadcast_shared_labels_and_keep_empty_blocks_zero():
    weights = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    sums = block_weights(weights, np.array([0, 2, 0]), 4)
    np.testing.assert_allclose(sums, [[0.75, 0.0, 0.25, 0.0], [0.8, 0.0, 0.2, 0.0]])


@pytest.mark.parametrize(
    ("weights", "labels", "message"),
    [
        ([0.5, -0.1, 0.6], [0, 1, 1], "≥ 0"),
        ([0.5, np.nan, 0.5], [0, 1, 1], "NaN"),
        ([0.5, np.inf, 0.5], [0, 1, 1], "finite"),
        ([0.5, 0.5], [0, 1, 1], "do not match"),
        ([0.5, 0.5], [0, 3], r"\[0, 3\)"),
        ([0.5, 0.5], [-1, 0], r"\[0, 3\)"),
        ([0.5, 0.5], [0.0, 1.0], "integers"),
    ],
)
def test_block_weights_reject_bad_input_with_a_clear_message(weights, labels, message):
    with pytest.raises(DataError, match=message):
        block_weights(np.array(weights), np.array(labels), 3)
    assert issubclass(DataError, ValueError)


@PROPERTY_SETTINGS
@given(ensembles())
def test_reweighting_lands_on_the_target_and_keeps_the_shape_within_blocks(ensemble):
    weights, labels, target, _ = ensemble
    k = target.shape[1]
    new = reweight(weights, labels, target)
    np.testing.assert_allclose(new.sum(-1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(block_weights(new, labels, k), target, rtol=0, atol=1e-14)
    # Within a block every weight is scaled by the same factor target_j / w_j.
    current = block_weights(weights, labels, k)
    factor = np.divide(target, current, out=np.zeros_like(target), where=current > 0)
    expected = weights * np.take_along_axis(factor, labels, -1)
    np.testing.assert_allclose(new, expected / expected.sum(-1, keepdims=True), atol=1e-15)


def test_reweighting_normalises_the_target_and_rejects_mass_for_an_empty_block():
    weights = np.array([0.2, 0.3, 0.5])
    labels = np.array([0, 0, 2])
    new = reweight(weights, labels, np.array([2.0, 0.0, 2.0]))
    np.testing.assert_allclose(new, [0.2, 0.3, 0.5])
    with pytest.raises(DataError, match="block 1"):
        reweight(weights, labels, np.array([0.4, 0.2, 0.4]))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        reweight(weights, labels, np.array([0.5, 0.5]))  # K from the target
    with pytest.raises(DataError, match="batch"):
        reweight(np.stack([weights, weights]), labels, np.ones((3, 3)))


# ---------------------------------------------------------------------------------------
# Resampling within blocks
# ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(ensembles())
def test_resampling_gives_each_block_within_one_of_n_target_particles_from_that_block(
    ensemble,
):
    weights, labels, target, uniforms = ensemble
    rows, n = weights.shape
    k = target.shape[1]
    for path in ("compiled", "reference"):
        with particles_path(path):
            indices = resample_within_blocks(weights, labels, target, uniforms)
        assert indices.shape == (rows, n)
        chosen_labels = np.take_along_axis(labels, indices, -1)
        counts = block_weights(np.ones((rows, n)), chosen_labels, k)
        assert np.all(np.abs(counts - n * target) < 1 + 1e-9)
        assert np.all(np.take_along_axis(weights, indices, -1) > 0)  # never a zero weight
        # Each particle gets floor or ceil of its expected number of copies.
        copies = np.stack([np.bincount(indices[r], minlength=n) for r in range(rows)])
        current = block_weights(weights, labels, k)
        share = np.divide(target, current, out=np.zeros_like(target), where=current > 0)
        expected = n * weights * np.take_along_axis(share, labels, -1)
        assert np.all(copies >= np.floor(expected - 1e-9))
        assert np.all(copies <= np.ceil(expected + 1e-9))


def test_resampling_matches_the_textbook_searchsorted_construction(numerics):
    rng = np.random.default_rng(1)
    rows, n, k = 5, 300, 7
    weights = rng.random((rows, n)) ** 3
    labels = rng.integers(0, k, (rows, n))
    target = rng.dirichlet(np.ones(k), rows)
    uniforms = rng.random(rows)
    np.testing.assert_array_equal(
        np.sort(resample_within_blocks(weights, labels, target, uniforms), -1),
        np.sort(searchsorted_resampling(weights, labels, target, uniforms), -1),
    )


def test_compiled_and_reference_paths_give_the_same_indices():
    if not compiled_enabled():
        pytest.skip("the compiled path is off (numba missing or COARSEKL_NUMERICS=reference)")
    rng = np.random.default_rng(2)
    weights = rng.random((3, 2000))
    labels = rng.integers(0, 9, (3, 2000))
    target = rng.dirichlet(np.ones(9), 3)
    uniforms = rng.random(3)
    with particles_path("compiled"):
        compiled = resample_within_blocks(weights, labels, target, uniforms)
    with particles_path("reference"):
        reference = resample_within_blocks(weights, labels, target, uniforms)
    np.testing.assert_array_equal(compiled, reference)


def test_within_block_frequencies_are_proportional_to_weights_monte_carlo(numerics):
    # Systematic resampling is unbiased: E[copies_n] = N · target_j · w_n / w_j for u ~ U[0,1).
    # Copies take two neighbouring values, so each has sd ≤ 1/2; averaged over R uniforms
    # (the batch axis) the standard error is ≤ 0.5/√R; tolerance 5 standard errors.
    rng = np.random.default_rng(3)
    n, k, repeats = 40, 3, 4000
    weights = rng.random(n)
    labels = rng.integers(0, k, n)
    target = np.array([0.5, 0.3, 0.2])
    uniforms = rng.random(repeats)
    batch_weights = np.broadcast_to(weights, (repeats, n))
    indices = resample_within_blocks(batch_weights, labels, target, uniforms)
    copies = np.bincount(indices.ravel(), minlength=n) / repeats
    masses = block_weights(weights, labels, k)
    expected = n * weights * (target / masses)[labels]
    assert np.abs(copies - expected).max() < 5 * 0.5 / np.sqrt(repeats)


def test_resampling_is_reproducible_for_given_uniforms_and_keeps_blocks_in_place(numerics):
    rng = np.random.default_rng(4)
    weights = rng.random((2, 100))
    labels = rng.integers(0, 4, (2, 100))
    target = np.array([0.1, 0.2, 0.3, 0.4])
    first = resample_within_blocks(weights, labels, target, np.array([0.3, 0.7]))
    again = resample_within_blocks(weights, labels, target, np.array([0.3, 0.7]))
    other = resample_within_blocks(weights, labels, target, np.array([0.31, 0.2]))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Output grouped by block: block labels non-decreasing along the particle axis.
    assert np.all(np.diff(np.take_along_axis(labels, first, -1), axis=-1) >= 0)


def test_resampling_edge_cases(numerics):
    # One particle; a block with zero target; u = 0; a delta weight.
    assert resample_within_blocks(np.array([1.0]), np.array([0]), np.array([1.0]), 0.0) == 0
    weights = np.array([0.0, 1.0, 0.0, 0.0])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(
        resample_within_blocks(weights, labels, np.array([1.0, 0.0]), np.float64(0.99)),
        [1, 1, 1, 1],
    )
    with pytest.raises(DataError, match="holds no particle weight"):
        resample_within_blocks(weights, labels, np.array([0.5, 0.5]), np.float64(0.5))
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        resample_within_blocks(weights, labels, np.array([1.0, 0.0]), np.float64(1.0))
    with pytest.raises(DataError, match="batch shape"):
        resample_within_blocks(weights, labels, np.array([1.0, 0.0]), np.zeros(2))


def test_resampling_a_million_particles_keeps_counts_exact(numerics):
    rng = np.random.default_rng(5)
    n, k = 1_000_000, 16
    weights = rng.random((2, n))
    labels = rng.integers(0, k, (2, n))
    target = rng.dirichlet(np.ones(k), 2)
    indices = resample_within_blocks(weights, labels, target, rng.random(2))
    counts = block_weights(np.ones((2, n)), np.take_along_axis(labels, indices, -1), k)
    assert np.all(np.abs(counts - n * target) < 1)


# ---------------------------------------------------------------------------------------
# Effective sample size, posterior entropy
# ---------------------------------------------------------------------------------------


def test_effective_sample_size_is_n_for_uniform_and_one_for_a_delta():
    np.testing.assert_allclose(effective_sample_size(np.full((2, 50), 0.02)), [50, 50])
    assert effective_sample_size(np.array([0.0, 0.0, 1.0, 0.0])) == 1.0
    weights = np.array([0.1, 0.2, 0.7])
    np.testing.assert_allclose(effective_sample_size(weights), 1 / np.sum(weights**2))
    np.testing.assert_allclose(effective_sample_size(5 * weights), 1 / np.sum(weights**2))


def test_posterior_entropy_is_the_weighted_mean_of_entropies():
    rng = np.random.default_rng(6)
    posteriors = rng.dirichlet(np.ones(4), (2, 30))
    posteriors[0, 0] = [1.0, 0.0, 0.0, 0.0]
    weights = rng.random((2, 30))
    entropies = stats.entropy(posteriors, axis=-1)
    expected = (weights * entropies).sum(-1) / weights.sum(-1)
    np.testing.assert_allclose(weighted_entropy_of_posteriors(posteriors, weights), expected)
    uniform = np.full((10, 4), 0.25)
    np.testing.assert_allclose(weighted_entropy_of_posteriors(uniform, np.ones(10)), np.log(4))
    with pytest.raises(DataError, match="posteriors"):
        weighted_entropy_of_posteriors(uniform, np.ones(9))


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein
# ---------------------------------------------------------------------------------------


def test_random_directions_are_unit_vectors_spread_over_the_sphere():
    theta = random_directions(20_000, 3, np.random.default_rng(7))
    np.testing.assert_allclose(np.linalg.norm(theta, axis=-1), 1.0)
    # Uniform on S²: E θ = 0 and E θθᵀ = I/3 (standard errors ≈ 0.004 and 0.002).
    assert np.abs(theta.mean(0)).max() < 0.02
    np.testing.assert_allclose(theta.T @ theta / len(theta), np.eye(3) / 3, atol=0.01)


def test_mixture_quantiles_invert_the_mixture_cdf():
    rng = np.random.default_rng(8)
    weights = np.array([0.2, 0.5, 0.3])
    means = rng.normal(0, 3, (4, 3))
    sds = rng.uniform(0.05, 2.0, (4, 3))
    levels = np.array([1e-4, 0.01, 0.3, 0.5, 0.77, 0.999])
    x = mixture_quantiles_1d(weights, means, sds, levels)
    cdf = (weights * ndtr((x[..., None] - means[:, None, :]) / sds[:, None, :])).sum(-1)
    np.testing.assert_allclose(cdf, np.broadcast_to(levels, cdf.shape), rtol=1e-12, atol=1e-15)
    single = mixture_quantiles_1d(np.ones(1), np.array([[1.5]]), np.array([[0.5]]), levels)
    np.testing.assert_allclose(single[0], stats.norm.ppf(levels, 1.5, 0.5), atol=1e-12)


def brute_force_w2_squared(x, w, weights, means, sds, levels):
    """Midpoint-rule W2² in 1-D with plain loops: weighted quantile by a linear scan,
    mixture quantile by Brent's method."""
    order = np.argsort(x)
    cum = np.cumsum(w[order]) / w.sum()
    total = 0.0
    for u in levels:
        k = next(i for i in range(len(cum)) if cum[i] >= u or i == len(cum) - 1)
        g = optimize.brentq(
            lambda y, u=u: (weights * stats.norm.cdf(y, means, sds)).sum() - u,
            -50,
            50,
            xtol=1e-14,
        )
        total += (x[order][k] - g) ** 2
    return total / len(levels)


def test_one_dimensional_w2_matches_a_brute_force_quantile_computation():
    rng = np.random.default_rng(9)
    weights, means, sds = np.array([0.4, 0.6]), np.array([-1.0, 2.0]), np.array([0.7, 1.2])
    x = rng.normal(0.5, 1.5, 37)
    w = rng.random(37)
    sw = sliced_wasserstein(
        x[:, None], w, weights, means[:, None], sds[:, None, None] ** 2, np.ones((1, 1)), 200
    )
    levels = (np.arange(200) + 0.5) / 200
    expected = brute_force_w2_squared(x, w, weights, means, sds, levels)
    np.testing.assert_allclose(sw**2, expected, rtol=1e-10)


def test_one_dimensional_w2_converges_to_the_exact_integral():
    # Exact W2² = E_w X² + E Y² − 2 Σ_k x_(k) ∫_{c_{k−1}}^{c_k} G^{-1}(u) du, with
    # ∫_0^c G^{-1} = Σ π (m Φ(z) − s φ(z)), z = (G^{-1}(c) − m)/s (partial expectations).
    rng = np.random.default_rng(10)
    weights, means, sds = np.array([0.4, 0.6]), np.array([-1.0, 2.0]), np.array([0.7, 1.2])
    x = np.sort(rng.normal(0.5, 1.5, 8))
    w = rng.random(8)
    w /= w.sum()
    cum = np.cumsum(w)[:-1]
    q = mixture_quantiles_1d(weights, means[None], sds[None], cum)[0]
    z = (q[:, None] - means) / sds
    partial = (weights * (means * stats.norm.cdf(z) - sds * stats.norm.pdf(z))).sum(-1)
    partial = np.concatenate([[0.0], partial, [(weights * means).sum()]])
    exact = (w * x**2).sum() + (weights * (means**2 + sds**2)).sum() - 2 * x @ np.diff(partial)
    sw = sliced_wasserstein(
        x[:, None], w, weights, means[:, None], sds[:, None, None] ** 2, np.ones((1, 1)), 20_000
    )
    np.testing.assert_allclose(sw**2, exact, rtol=1e-4)


def test_shifting_a_symmetric_gaussian_sample_adds_the_mean_squared_projected_shift():
    # For an antithetic sample of N(μ, Σ) (x and 2μ − x) the projections are symmetric, so
    # SW²(X + v) = SW²(X) + mean_θ (θ·v)² exactly (the cross term vanishes); 2N = 3000
    # particles and 2000 levels never tie.
    rng = np.random.default_rng(11)
    mu = np.array([[1.0, -2.0, 0.5]])
    a = rng.standard_normal((3, 3))
    cov = (a @ a.T + 0.5 * np.eye(3))[None]
    half = sample_mixture(rng, 1500, np.ones(1), mu, cov)
    x = np.concatenate([half, 2 * mu - half])
    w = np.full(3000, 1 / 3000)
    theta = random_directions(64, 3, rng)
    v = np.array([0.4, -0.3, 1.1])
    base, shifted = sliced_wasserstein(
        np.stack([x, x + v]), np.stack([w, w]), np.ones(1), mu, cov, theta
    )
    np.testing.assert_allclose(shifted**2 - base**2, np.mean((theta @ v) ** 2), rtol=1e-9)


def test_sliced_wasserstein_of_a_target_sample_is_small_and_of_a_shifted_one_is_the_shift():
    # Population check: a sample of N(μ + v, Σ) against N(μ, Σ) has SW² ≈ mean_θ (θ·v)²;
    # a sample of the target itself has SW² of the order of the Monte Carlo error.
    rng = np.random.default_rng(12)
    theta = random_directions(32, 2, rng)
    x = sample_mixture(rng, 40_000)
    w = np.full(40_000, 1 / 40_000)
    v = np.array([0.8, -0.5])
    one = np.ones(1)
    sw_self = sliced_wasserstein(x, w, PI, MU, COV, theta)
    assert sw_self < 0.03
    single = sample_mixture(rng, 40_000, one, MU[:1], COV[:1]) + v
    sw_shift = sliced_wasserstein(single, w, one, MU[:1], COV[:1], theta)
    np.testing.assert_allclose(sw_shift**2, np.mean((theta @ v) ** 2), rtol=0.05)


def test_sliced_wasserstein_batches_chunks_and_validates(monkeypatch):
    rng = np.random.default_rng(13)
    x = sample_mixture(rng, 600).reshape(2, 300, 2)
    w = rng.random((2, 300))
    theta = random_directions(10, 2, rng)
    together = sliced_wasserstein(x, w, PI, MU, COV, theta)
    monkeypatch.setattr(particles, "CHUNK_ELEMENTS", 700)  # one direction at a time
    rows = [sliced_wasserstein(x[i], w[i], PI, MU, COV, theta) for i in range(2)]
    np.testing.assert_allclose(together, rows, rtol=1e-12)
    with pytest.raises(DataError, match="unit vectors"):
        sliced_wasserstein(x, w, PI, MU, COV, 2 * theta)
    with pytest.raises(DataError, match="directions"):
        sliced_wasserstein(x, w, PI, MU, COV, np.ones((3, 3)) / np.sqrt(3))
    with pytest.raises(DataError, match="covariances"):
        sliced_wasserstein(x, w, PI, MU, COV[:, :1], theta)


# ---------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------


def test_energy_distance_in_one_dimension_is_the_square_of_scipys():
    # scipy.stats.energy_distance returns sqrt(2E|X−Y| − E|X−X'| − E|Y−Y'|).
    rng = np.random.default_rng(14)
    x, y, w = rng.normal(0, 1, 400), rng.normal(0.3, 1.2, 500), rng.random(400)
    expected = stats.energy_distance(x, y, u_weights=w) ** 2
    np.testing.assert_allclose(energy_distance(x[:, None], w, y[:, None]), expected, rtol=1e-9)


def test_energy_distance_is_near_zero_for_the_same_law_and_grows_with_a_shift(monkeypatch):
    rng = np.random.default_rng(15)
    x = sample_mixture(rng, 2000).reshape(2, 1000, 2)
    reference = sample_mixture(rng, 1500)
    w = np.full((2, 1000), 1e-3)
    same = energy_distance(x, w, reference)
    # Same law: E[D²] = E|X−X'|/N + E|Y−Y'|/M ≈ 2.4·(1/1000 + 1/1500) ≈ 0.004.
    assert np.all(same < 0.02)
    shifted = energy_distance(x + np.array([1.0, 0.0]), w, reference)
    assert np.all(shifted > 0.2)
    monkeypatch.setattr(particles, "CHUNK_ELEMENTS", 5000)  # 3-5 rows a chunk, same sums
    np.testing.assert_allclose(energy_distance(x, w, reference), same, rtol=1e-10)


def test_energy_distance_with_pairwise_differences_in_higher_dimension():
    rng = np.random.default_rng(16)
    x, y, w = rng.normal(size=(60, 5)), rng.normal(size=(70, 5)) + 0.2, rng.random(60)
    w /= w.sum()

    def mean_distance(a, wa, b, wb):
        return wa @ np.linalg.norm(a[:, None] - b[None], axis=-1) @ wb

    u = np.full(70, 1 / 70)
    expected = 2 * mean_distance(x, w, y, u) - mean_distance(x, w, x, w)
    expected -= mean_distance(y, u, y, u)
    np.testing.assert_allclose(energy_distance(x, w, y), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Binned KL in 2-D
# ---------------------------------------------------------------------------------------

EDGES_X = np.linspace(-3, 6, 31)
EDGES_Y = np.linspace(-3, 4, 25)


def test_weighted_histogram_equals_numpy_histogram2d_plus_the_outside_mass():
    rng = np.random.default_rng(17)
    x = sample_mixture(rng, 3000).reshape(3, 1000, 2)
    x[:, :5] = [10.0, 0.0]  # outside the window
    x[0, 5] = [EDGES_X[-1], EDGES_Y[-1]]  # on the closed upper corner: inside
    w = rng.random((3, 1000))
    cells, outside = weighted_histogram_2d(x, w, EDGES_X, EDGES_Y)
    for r in range(3):
        hist, _, _ = np.histogram2d(x[r, :, 0], x[r, :, 1], [EDGES_X, EDGES_Y], weights=w[r])
        np.testing.assert_allclose(cells[r], hist / w[r].sum(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cells.sum((-1, -2)) + outside, 1.0)
    ex, ey = EDGES_X, EDGES_Y
    out = (x[..., 0] < ex[0]) | (x[..., 0] > ex[-1]) | (x[..., 1] < ey[0]) | (x[..., 1] > ey[-1])
    np.testing.assert_allclose(outside, (w * out).sum(-1) / w.sum(-1), rtol=1e-12)


def test_cell_probabilities_of_a_diagonal_gaussian_are_products_of_normal_cdfs():
    cov = np.array([[[0.5, 0.0], [0.0, 2.0]]])
    mu = np.array([[0.3, -0.2]])
    cells, outside = mixture_cell_probabilities(np.ones(1), mu, cov, EDGES_X, EDGES_Y)
    px = np.diff(ndtr((EDGES_X - 0.3) / np.sqrt(0.5)))
    py = np.diff(ndtr((EDGES_Y + 0.2) / np.sqrt(2.0)))
    np.testing.assert_allclose(cells, np.outer(px, py), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(outside, 1 - px.sum() * py.sum(), atol=1e-13)


def test_cell_probabilities_of_correlated_mixtures_match_quadrature_and_sum_to_one():
    cells, outside = mixture_cell_probabilities(PI, MU, COV, EDGES_X, EDGES_Y)
    assert np.all(cells >= 0)
    np.testing.assert_allclose(cells.sum() + outside, 1.0, rtol=0, atol=1e-14)
    densities = [stats.multivariate_normal(m, c) for m, c in zip(MU, COV, strict=True)]
    for i, k in [(10, 12), (15, 10), (20, 14), (3, 3)]:
        expected, _ = integrate.dblquad(
            lambda y, x: sum(p * d.pdf([x, y]) for p, d in zip(PI, densities, strict=True)),
            EDGES_X[i],
            EDGES_X[i + 1],
            EDGES_Y[k],
            EDGES_Y[k + 1],
            epsabs=1e-14,
            epsrel=1e-11,
        )
        np.testing.assert_allclose(cells[i, k], expected, rtol=1e-9, atol=1e-15)
    # A nearly degenerate component (ρ = 0.999) still sums to the right marginal.
    sharp = np.array([[[1.0, 0.999], [0.999, 1.0]]])
    cells, outside = mixture_cell_probabilities(np.ones(1), MU[:1], sharp, EDGES_X, EDGES_Y)
    px = np.diff(ndtr(EDGES_X))
    np.testing.assert_allclose(cells.sum(1)[2:20], px[2:20], rtol=1e-8)  # y = x inside


def test_binned_kl_is_near_its_sampling_bias_for_the_target_and_positive_for_a_shift():
    # For N samples of Q the histogram KL has expectation ≈ (occupied cells − 1)/(2N)
    # (the χ² bias); its sd is about that size divided by √(cells/2), tolerance ×2.
    rng = np.random.default_rng(18)
    n = 200_000
    x = sample_mixture(rng, 2 * n).reshape(2, n, 2)
    w = np.full((2, n), 1 / n)
    kl = binned_kl_2d(x, w, PI, MU, COV, EDGES_X, EDGES_Y)
    cells, _ = mixture_cell_probabilities(PI, MU, COV, EDGES_X, EDGES_Y)
    bias = np.count_nonzero(cells * n > 1) / (2 * n)
    assert np.all(np.abs(kl - bias) < bias)
    shifted = binned_kl_2d(x + np.array([0.3, 0.0]), w, PI, MU, COV, EDGES_X, EDGES_Y)
    assert np.all(shifted > 50 * bias)


def test_binned_kl_validates_its_inputs():
    x = np.zeros((5, 2))
    with pytest.raises(DataError, match="increasing"):
        binned_kl_2d(x, np.ones(5), PI, MU, COV, EDGES_X[::-1], EDGES_Y)
    with pytest.raises(DataError, match="d = 2"):
        binned_kl_2d(np.zeros((5, 3)), np.ones(5), PI, MU, COV, EDGES_X, EDGES_Y)
    with pytest.raises(DataError, match="positive definite"):
        binned_kl_2d(x, np.ones(5), PI, MU, np.zeros((2, 2, 2)), EDGES_X, EDGES_Y)
