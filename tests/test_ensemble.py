"""coarsekl.Ensemble: a weighted particle batch indexed on its batch axes."""

from __future__ import annotations

import numpy as np
import pytest

from coarsekl import Ensemble
from coarsekl.ensemble import stack_ensembles


def make(batch=(2, 3), particles=5, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.random((*batch, particles))
    return Ensemble(
        rng.normal(size=(*batch, particles, dim)),
        weights / weights.sum(axis=-1, keepdims=True),
        alpha_bar=0.5,
        carried={"x0": rng.normal(size=(*batch, particles, dim))},
    )


def test_shape_is_the_batch_and_particle_axes():
    ensemble = make()
    assert ensemble.shape == (2, 3, 5)
    assert (ensemble.ndim, ensemble.particles, ensemble.dim) == (3, 5, 2)


def test_indexing_acts_on_batch_axes_only():
    ensemble = make()
    one = ensemble[1]
    assert one.shape == (3, 5) and one.positions.shape == (3, 5, 2)
    np.testing.assert_array_equal(one.carried["x0"], ensemble.carried["x0"][1])
    assert one.alpha_bar == 0.5
    assert ensemble[None].shape == (1, 2, 3, 5)
    assert ensemble[:, 1:].shape == (2, 2, 5)


def test_stack_and_broadcast_make_new_batch_axes():
    ensemble = make()
    stacked = stack_ensembles([ensemble[0], ensemble[1]])
    np.testing.assert_array_equal(stacked.positions, ensemble.positions)
    np.testing.assert_array_equal(stacked.carried["x0"], ensemble.carried["x0"])
    repeated = ensemble[0].broadcast_to((4,))
    assert repeated.shape == (4, 3, 5)
    repeated.positions[0] += 1  # its own memory
    np.testing.assert_array_equal(repeated.positions[1], ensemble.positions[0])


def test_stacking_ensembles_at_different_noise_levels_is_refused():
    with pytest.raises(ValueError, match="signal levels"):
        stack_ensembles([make(), make().replace(alpha_bar=0.7)])


def test_gather_takes_particles_with_their_carried_arrays_and_equal_weights():
    ensemble = make(batch=(2,))
    indices = np.array([[0, 0, 4, 4, 4], [1, 2, 3, 3, 0]])
    gathered = ensemble.gather(indices)
    np.testing.assert_array_equal(gathered.positions[1, 3], ensemble.positions[1, 3])
    np.testing.assert_array_equal(gathered.positions[0, 2], ensemble.positions[0, 4])
    np.testing.assert_array_equal(gathered.carried["x0"][1, 0], ensemble.carried["x0"][1, 1])
    np.testing.assert_allclose(gathered.weights, 0.2)


@pytest.mark.parametrize(
    ("positions", "weights", "carried", "message"),
    [
        ((2, 5), (2, 4), {}, "positions"),
        ((5,), (5,), {}, "positions"),
        ((2, 5, 3), (2, 5), {"x": (2, 4)}, "carried array 'x'"),
    ],
)
def test_inconsistent_shapes_are_refused(positions, weights, carried, message):
    with pytest.raises(ValueError, match=message):
        Ensemble(
            np.zeros(positions),
            np.ones(weights),
            carried={k: np.zeros(v) for k, v in carried.items()},
        )
