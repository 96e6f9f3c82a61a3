"""Particles read as images: the spatial blocks partition of the generated digits."""

from __future__ import annotations

import numpy as np
import pytest

import coarsekl
from coarsekl.errors import ConfigError
from coarsekl_gmm.metrics import image_block_masses


def test_block_masses_of_particles_read_as_square_images():
    image = np.zeros((4, 4))
    image[:2, :2] = 1.0  # all intensity in the top-left quadrant
    image[3, 3] = -5.0  # negative intensities count as 0
    other = np.ones((4, 4))
    masses = image_block_masses(np.stack([image.ravel(), other.ravel()])[None])
    np.testing.assert_allclose(masses[0], [[1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])


def test_particles_that_are_no_square_images_are_refused():
    with pytest.raises(ConfigError, match="square image"):
        image_block_masses(np.zeros((3, 5)))


def test_the_projection_also_brings_the_digits_block_masses_closer():
    pytest.importorskip("sklearn")
    config = coarsekl.load_config("digits").with_overrides(
        {"particles": 1500, "steps": 12, "record.snapshots": [12], "members": 1}
    )
    ds = coarsekl.run(config)
    final = ds.isel(step=-1, member=0)
    assert float(final.E_block.sel(scheme="proj")) <= 10 * 0.01 + 1e-9
    error = final.image_block_error
    assert float(error.sel(scheme="proj")) < float(error.sel(scheme="base"))
