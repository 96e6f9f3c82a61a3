"""Specification of the particle partitions (THEORY §7: partition of particles by class —
posterior argmax or the component of x̂_0 — or by spatial cells of R^d; the coarse
quantity is the weighted block mass).

Grid labels are checked against np.digitize and a plain loop, class labels against
np.argmax of the exact posteriors; reference masses of q_ᾱ against exact cell
probabilities (Gauss–Legendre quadrature of the mixture) and the mixture weights, within
Monte Carlo error 4·√(p(1 − p)/n) for the n = ``reference_samples`` fixed data samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl_gmm.data import RingData
from coarsekl_gmm.mixture import GaussianMixture
from coarsekl_gmm.particles import mixture_cell_probabilities
from coarsekl_gmm.partitions import ClassPartition, GridPartition

REFERENCE_SAMPLES = 20_000
# four well-separated components (neighbours 5.7 apart, σ = 0.5) with unequal weights
RING = RingData(components=4, radius=4.0, std=0.5, weights=[4, 3, 2, 1]).distribution(None)
MIXTURE_3D = GaussianMixture(
    [0.5, 0.5], [[0.0, 0.0, 0.0], [2.0, 1.0, -1.0]], [np.eye(3), np.diag([0.5, 2.0, 1.0])]
)


def mc_tolerance(p: np.ndarray, n: int = REFERENCE_SAMPLES) -> np.ndarray:
    """Four standard errors of a Monte Carlo frequency (plus rounding)."""
    return 4 * np.sqrt(p * (1 - p) / n) + 1e-12


def ensemble_of(positions, alpha_bar=1.0, weights=None) -> Ensemble:
    positions = np.asarray(positions, dtype=np.float64)
    if weights is None:
        weights = np.full(positions.shape[:-1], 1.0 / positions.shape[-2])
    return Ensemble(positions, weights, alpha_bar=alpha_bar)


# ---------------------------------------------------------------------------------------
# GridPartition: labels
# ---------------------------------------------------------------------------------------


def test_grid_labels_equal_digitize_in_row_major_cell_order():
    rng = np.random.default_rng(0)
    positions = rng.normal(0.0, 4.0, (2, 3, 500, 3))  # many beyond the range: edge cells
    grid = GridPartition(
        shape=(500,), data=MIXTURE_3D, bins=[3, 4], axes=[2, 0], low=[-3.0, -5.0], high=[3.0, 1.0]
    )
    first = np.digitize(positions[..., 2], np.linspace(-3, 3, 4)[1:-1])
    second = np.digitize(positions[..., 0], np.linspace(-5, 1, 5)[1:-1])
    expected = np.ravel_multi_index((first, second), (3, 4))
    np.testing.assert_array_equal(grid.assign(positions, 1.0), expected)
    assert grid.n_blocks == 12


def test_grid_labels_equal_a_plain_loop_and_ignore_the_signal_level():
    rng = np.random.default_rng(1)
    positions = rng.uniform(-8.0, 8.0, (300, 2))
    grid = GridPartition(shape=(300,), data=RING, bins=[4, 5], low=-6.0, high=6.0)
    expected = []
    for x, y in positions:
        i = min(max(math.floor((x + 6.0) / 3.0), 0), 3)  # cell width 12/4
        j = min(max(math.floor((y + 6.0) / 2.4), 0), 4)  # cell width 12/5
        expected.append(5 * i + j)
    np.testing.assert_array_equal(grid.assign(positions, 1.0), expected)
    np.testing.assert_array_equal(grid.assign(positions, 0.2), expected)


def test_grid_block_coords_name_the_cell_index_of_every_block():
    grid = GridPartition(shape=(10,), data=MIXTURE_3D, bins=[2, 3], axes=[1, 2])
    coords = grid.block_coords()
    assert set(coords) == {"cell_1", "cell_2"}
    np.testing.assert_array_equal(coords["cell_1"][0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(coords["cell_2"][0], [0, 1, 2, 0, 1, 2])
    # a particle in cell (1, 2) has label 5
    assert grid.assign(np.array([[0.0, 5.0, 5.0]]), 1.0)[0] == 5


# ---------------------------------------------------------------------------------------
# GridPartition: reference masses against exact cell probabilities
# ---------------------------------------------------------------------------------------

GRID_EDGES = np.array([-30.0, -3.0, 0.0, 3.0, 30.0])  # bins 4 over [-6, 6], open edge cells


@pytest.mark.parametrize("alpha_bar", [1.0, 0.6, 0.1])
def test_grid_reference_masses_are_the_cell_probabilities_of_the_noised_data(alpha_bar):
    grid = GridPartition(
        shape=(100,),
        data=RING,
        bins=[4, 4],
        low=-6.0,
        high=6.0,
        reference_samples=REFERENCE_SAMPLES,
    )
    reference = grid.reference_masses(RING, alpha_bar=alpha_bar)
    target = RING.noised(alpha_bar)
    cells, outside = mixture_cell_probabilities(
        target.weights, target.means, target.covariances, GRID_EDGES, GRID_EDGES
    )
    assert outside < 1e-12
    exact = cells.ravel()
    assert reference.shape == (16,) and reference.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.abs(reference - exact) <= mc_tolerance(exact))


def test_the_reference_sample_is_fixed_so_the_masses_are_reproducible():
    one = GridPartition(shape=(10,), data=RING, reference_samples=5000)
    two = GridPartition(shape=(10,), data=RING, reference_samples=5000)
    np.testing.assert_array_equal(
        one.reference_masses(RING, alpha_bar=0.3), two.reference_masses(RING, alpha_bar=0.3)
    )


# ---------------------------------------------------------------------------------------
# ClassPartition
# ---------------------------------------------------------------------------------------


def class_partition(assign="posterior", mixture=RING, particles=100) -> ClassPartition:
    return ClassPartition(
        shape=(particles,), data=mixture, assign=assign, reference_samples=REFERENCE_SAMPLES
    )


def test_class_reference_of_well_separated_data_is_the_mixture_weights():
    reference = class_partition().reference_masses(RING)
    np.testing.assert_allclose(reference.sum(), 1.0)
    assert np.all(np.abs(reference - RING.weights) <= mc_tolerance(RING.weights))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.05, 1e-3])
def test_class_labels_are_the_posterior_argmax_at_the_ensembles_level(numerics, alpha_bar):
    rng = np.random.default_rng(2)
    positions = rng.normal(0.0, 3.0, (2, 400, 2))
    labels = class_partition().labels(ensemble_of(positions, alpha_bar))
    np.testing.assert_array_equal(labels, np.argmax(RING.posteriors(positions, alpha_bar), -1))


def test_at_pure_noise_every_particle_is_in_the_a_priori_most_probable_class(numerics):
    positions = np.random.default_rng(3).normal(size=(300, 2))
    partition = class_partition()
    np.testing.assert_array_equal(partition.assign(positions, 0.0), 0)  # weight 4/10
    np.testing.assert_array_equal(partition.labels(ensemble_of(positions, 0.0)), 0)
    np.testing.assert_array_equal(partition.reference_masses(RING, alpha_bar=0.0), [1, 0, 0, 0])


@pytest.mark.parametrize("alpha_bar", [0.8, 0.2, 0.01])
def test_x0_assignment_is_the_class_of_the_x0_prediction(numerics, alpha_bar):
    positions = np.random.default_rng(4).normal(0.0, 2.0, (500, 2))
    partition = class_partition("x0")
    expected = RING.classify(RING.x0_prediction(positions, alpha_bar), 1.0)
    np.testing.assert_array_equal(partition.assign(positions, alpha_bar), expected)
    # at the data level both rules agree
    np.testing.assert_array_equal(
        partition.assign(positions, 1.0), class_partition().assign(positions, 1.0)
    )


def test_x0_and_posterior_assignment_differ_at_high_noise():
    positions = np.random.default_rng(5).normal(0.0, 2.0, (2000, 2))
    posterior = class_partition().assign(positions, 0.05)
    x0 = class_partition("x0").assign(positions, 0.05)
    assert np.mean(posterior != x0) > 0.01


def test_class_reference_at_a_signal_level_is_the_posterior_class_share_of_the_noised_data():
    """At ᾱ the reference is E_{x~q_ᾱ}[1{argmax_c q_ᾱ(c|x) = j}]; estimated independently here
    from a fresh sample of q_ᾱ (two MC estimates: tolerance of the difference)."""
    level = 0.1
    reference = class_partition().reference_masses(RING, alpha_bar=level)
    target = RING.noised(level)
    sample, _ = target.sample(REFERENCE_SAMPLES, np.random.default_rng(6))
    shares = np.bincount(np.argmax(target.posteriors(sample), -1), minlength=4) / sample.shape[0]
    assert np.all(np.abs(reference - shares) <= math.sqrt(2) * mc_tolerance(shares))
    # noise favours the classes with larger prior weight
    assert reference[0] > RING.weights[0] and reference[3] < RING.weights[3]


def test_class_blocks_are_the_mixture_components():
    partition = class_partition()
    assert partition.n_blocks == 4 and partition.site_shape == (100,)
    np.testing.assert_array_equal(partition.block_coords()["component"][0], np.arange(4))


# ---------------------------------------------------------------------------------------
# Labels kept with the ensemble, block sums
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("assign", ["posterior", "x0"])
def test_labels_are_computed_once_and_kept_with_the_ensemble(assign):
    partition = class_partition(assign, particles=200)
    rng = np.random.default_rng(7)
    ensemble = ensemble_of(rng.normal(0.0, 3.0, (3, 200, 2)), alpha_bar=0.5)
    labels = partition.labels(ensemble)
    np.testing.assert_array_equal(labels, partition.assign(ensemble.positions, 0.5))
    assert partition.labels(ensemble) is labels
    assert not labels.flags.writeable
    # indexing the batch keeps them (a view of the same labels), reweighting too
    indexed = partition.labels(ensemble[1])
    np.testing.assert_array_equal(indexed, labels[1])
    assert np.shares_memory(indexed, labels)
    reweighted = ensemble.replace(weights=rng.dirichlet(np.ones(200), 3))
    assert partition.labels(reweighted) is labels
    # moving the particles or changing ᾱ drops them
    moved = ensemble.replace(positions=ensemble.positions[..., ::-1])
    np.testing.assert_array_equal(partition.labels(moved), partition.assign(moved.positions, 0.5))
    assert not np.shares_memory(partition.labels(moved), labels)
    later = ensemble.replace(alpha_bar=0.9)
    np.testing.assert_array_equal(partition.labels(later), partition.assign(later.positions, 0.9))
    # another partition object keeps its own labels
    other = class_partition("x0" if assign == "posterior" else "posterior", particles=200)
    assert not np.shares_memory(other.labels(ensemble), labels)


@pytest.mark.parametrize("kind", ["class", "grid"])
def test_block_sums_are_the_weights_summed_per_label(kind):
    rng = np.random.default_rng(8)
    positions = rng.normal(0.0, 3.0, (2, 300, 2))
    weights = rng.dirichlet(np.ones(300), 2)
    if kind == "class":
        partition = class_partition(particles=300)
    else:
        partition = GridPartition(shape=(300,), data=RING, bins=[3, 3], low=-4, high=4)
    ensemble = ensemble_of(positions, 0.7, weights)
    sums = partition.block_sums(ensemble)
    labels = partition.assign(positions, 0.7)
    expected = np.stack(
        [np.bincount(labels[r], weights[r], minlength=partition.n_blocks) for r in range(2)]
    )
    np.testing.assert_allclose(sums, expected, rtol=1e-13)
    np.testing.assert_allclose(sums.sum(-1), 1.0)


def test_block_sums_need_an_ensemble_and_broadcast_is_refused():
    partition = class_partition()
    with pytest.raises(TypeError, match="sums the weights of an Ensemble"):
        partition.block_sums(np.full(100, 0.01))
    with pytest.raises(TypeError, match=r"labels\(ensemble\)"):
        partition.broadcast(np.ones(4))


# ---------------------------------------------------------------------------------------
# Bad parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bins": [0, 4]}, "bins must be positive integers"),
        ({"bins": [2.5, 4]}, "bins must be positive integers"),
        ({"bins": []}, "bins must be positive integers"),
        ({"bins": [4, 4], "axes": [0]}, "must name 2 distinct coordinate axes"),
        ({"bins": [4, 4], "axes": [0, 2]}, "coordinate axes of R\\^2"),
        ({"bins": [4, 4], "axes": [0, -1]}, "coordinate axes"),
        ({"bins": [4, 4], "axes": [1, 1]}, "distinct coordinate axes"),
        ({"low": 1.0, "high": 1.0}, "finite low < high"),
        ({"low": [-1.0, 2.0], "high": [1.0, 1.0]}, "finite low < high"),
        ({"low": -np.inf}, "finite low < high"),
        ({"reference_samples": 999}, "reference_samples must be an integer ≥ 1000"),
        ({"reference_samples": 5000.0}, "reference_samples"),
        ({"shape": (100, 2)}, r"shape = \(particles,\)"),
        ({"shape": (0,)}, r"shape = \(particles,\)"),
    ],
)
def test_bad_grid_parameters_are_config_errors(changes, message):
    params = {"shape": (100,), "data": RING, **changes}
    with pytest.raises(ConfigError, match=message):
        GridPartition(**params)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"assign": "prior"}, "assign must be one of"),
        ({"reference_samples": True}, "reference_samples"),
        ({"data": np.ones((4, 4))}, "Gaussian-mixture data distribution.*ndarray"),
    ],
)
def test_bad_class_parameters_are_config_errors(changes, message):
    params = {"shape": (100,), "data": RING, **changes}
    with pytest.raises(ConfigError, match=message):
        ClassPartition(**params)


def test_reference_masses_need_mixture_data():
    with pytest.raises(ConfigError, match="Gaussian-mixture"):
        class_partition().reference_masses(np.ones((8, 8)))


def test_a_grid_on_high_dimensional_data_must_name_its_axes_and_stay_small():
    from coarsekl_gmm.data import MixtureData

    data = MixtureData(weights=[1, 1], means=[[0.0] * 5, [1.0] * 5], std=1.0).distribution(None)
    with pytest.raises(ConfigError, match="axes = "):
        GridPartition(shape=(10,), data=data, bins=[2, 2])
    with pytest.raises(ConfigError, match="cells is more than"):
        GridPartition(shape=(10,), data=data, bins=[1000, 1000], axes=[0, 1])
    assert GridPartition(shape=(10,), data=data, bins=[2, 2], axes=[3, 4]).n_blocks == 4
