from __future__ import annotations

import numpy as np
import pytest

from coarsekl.errors import ConfigError, DataError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl_blocks.partitions import BlockGrid
from coarsekl_blocks.quantities import BlockMass
from coarsekl_images.data import BlockConstantRandom, Checkerboard, ImageFile
from coarsekl_images.initial import DataInitial, FileInitial, ForwardBlur, UniformNoise


def rng():
    return np.random.default_rng(0)


def test_checkerboard_is_high_on_even_blocks():
    image = Checkerboard(shape=(8, 8), blocks=(2, 2), high=0.9, low=0.1).image(rng())
    assert image[0, 0] == image[7, 7] == 0.9
    assert image[0, 7] == image[7, 0] == 0.1
    assert set(np.unique(image)) == {0.1, 0.9}


def test_paper_checkerboard_reference_masses():
    image = Checkerboard().image(rng())
    problem = Problem(
        partition=BlockGrid(shape=(128, 128), blocks=(4, 4)), quantity=BlockMass(), data=image
    )
    # w_ref_j = c_j / Σ c_k on equal blocks: 0.9 / 8 and 0.1 / 8
    np.testing.assert_allclose(
        np.sort(np.unique(problem.reference_masses.round(15))), [0.1 / 8, 0.9 / 8]
    )


def test_block_constant_random_is_constant_per_block_without_texture():
    image = BlockConstantRandom(shape=(8, 12), blocks=(2, 3), low=0.2, high=0.4).image(rng())
    blocks = image.reshape(2, 4, 3, 4)
    assert np.ptp(blocks, axis=(1, 3)).max() == 0
    assert image.min() >= 0.2 and image.max() <= 0.4


def test_block_constant_random_texture_adds_fine_structure():
    image = BlockConstantRandom(shape=(8, 8), blocks=(2, 2), texture=0.5).image(rng())
    assert np.ptp(image.reshape(2, 4, 2, 4), axis=(1, 3)).min() > 0


def test_block_constant_random_rejects_bad_ranges():
    with pytest.raises(ConfigError, match="must not exceed"):
        BlockConstantRandom(low=0.5, high=0.1)


def test_image_file_reads_npy_and_png(tmp_path):
    from matplotlib.image import imsave

    image = np.linspace(0, 1, 64).reshape(8, 8)
    np.save(tmp_path / "image.npy", image)
    np.testing.assert_array_equal(ImageFile(path=str(tmp_path / "image.npy")).image(rng()), image)
    imsave(tmp_path / "image.png", image, cmap="gray", vmin=0, vmax=1)
    grey = ImageFile(path=str(tmp_path / "image.png")).image(rng())
    assert grey.shape == (8, 8)
    np.testing.assert_allclose(grey, image, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npy", None, "does not exist"),
        ("image.txt", "1 2 3", "must be .npy or .png"),
        ("broken.npy", "not numpy", "cannot read"),
        ("broken.png", "not a png", "cannot read"),
        ("cube.npy", np.ones((2, 2, 2)), "must be 2-D"),
    ],
)
def test_image_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(DataError, match=message):
        ImageFile(path=str(path)).image(rng())


@pytest.fixture
def problem():
    image = BlockConstantRandom(shape=(16, 16), blocks=(2, 2), texture=0.8).image(rng())
    return Problem(
        partition=BlockGrid(shape=(16, 16), blocks=(2, 2)), quantity=BlockMass(), data=image
    )


def members(n):
    return MemberRandom.from_seed(0, Purpose.INITIAL, n)


def test_uniform_noise_gives_one_independent_field_per_member(problem):
    states = UniformNoise().states(problem, members(3))
    assert states.shape == (3, 16, 16)
    assert states.min() >= 0 and states.max() <= 1
    assert not np.allclose(states[0], states[1])


def test_data_initial_starts_at_the_data_state(problem):
    states = DataInitial().states(problem, members(2))
    np.testing.assert_array_equal(states[1], problem.data_state)


def test_file_initial_accepts_one_image_or_one_per_member(tmp_path, problem):
    np.save(tmp_path / "one.npy", np.ones((16, 16)))
    np.save(tmp_path / "each.npy", np.ones((2, 16, 16)))
    np.save(tmp_path / "wrong.npy", np.ones((3, 16, 16)))
    assert FileInitial(path=str(tmp_path / "one.npy")).states(problem, members(2)).shape == (
        2,
        16,
        16,
    )
    assert FileInitial(path=str(tmp_path / "each.npy")).states(problem, members(2)).shape == (
        2,
        16,
        16,
    )
    with pytest.raises(DataError, match="expected"):
        FileInitial(path=str(tmp_path / "wrong.npy")).states(problem, members(2))


def test_forward_blur_keeps_block_masses_and_flattens_blocks(problem):
    states = ForwardBlur(steps=40, sigma=1.0, start="data").states(problem, members(1))
    partition = problem.partition
    np.testing.assert_allclose(
        partition.block_sums(states[0]), problem.reference_masses, rtol=0, atol=1e-12
    )
    within = states[0].reshape(2, 8, 2, 8)
    original = problem.data_state.reshape(2, 8, 2, 8)
    assert np.ptp(within, axis=(1, 3)).max() < 0.05 * np.ptp(original, axis=(1, 3)).min()


def test_forward_blur_rejects_unknown_start():
    with pytest.raises(ValueError, match="start"):
        ForwardBlur(steps=3, start="ones")
