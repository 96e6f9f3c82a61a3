"""Specification of the partitions (THEORY §1): rectangular block grids and label maps.

Block sums and broadcasts are checked against naive per-pixel loops, on batches, and the
two operations against each other (broadcast is the adjoint of block_sums).
"""

from __future__ import annotations

import numpy as np
import pytest

from coarsekl.errors import ConfigError, DataError
from coarsekl_blocks.partitions import BlockGrid, LabelMap

GRID_CASES = [
    ((6, 8), (3, 2)),
    ((4, 4), (1, 1)),
    ((5, 7), (5, 7)),
    ((12, 12), (4, 4)),
    ((2, 9), (1, 3)),
]


def naive_grid_labels(shape, blocks) -> np.ndarray:
    """Block index of every pixel, row-major over blocks: j = row · cols + col."""
    (height, width), (rows, cols) = shape, blocks
    h, w = height // rows, width // cols
    labels = np.empty(shape, dtype=int)
    for y in range(height):
        for x in range(width):
            labels[y, x] = (y // h) * cols + (x // w)
    return labels


def naive_block_sums(values: np.ndarray, labels: np.ndarray, label_values) -> np.ndarray:
    """Σ over the pixels carrying each label, one pixel at a time, for every batch entry."""
    batch = values.shape[:-2]
    sums = np.zeros((*batch, len(label_values)))
    for index in np.ndindex(*batch):
        for y in range(labels.shape[0]):
            for x in range(labels.shape[1]):
                j = list(label_values).index(labels[y, x])
                sums[(*index, j)] += values[(*index, y, x)]
    return sums


def naive_broadcast(block_values: np.ndarray, labels: np.ndarray, label_values) -> np.ndarray:
    batch = block_values.shape[:-1]
    field = np.zeros((*batch, *labels.shape))
    for index in np.ndindex(*batch):
        for y in range(labels.shape[0]):
            for x in range(labels.shape[1]):
                j = list(label_values).index(labels[y, x])
                field[(*index, y, x)] = block_values[(*index, j)]
    return field


def scrambled_labels(rng, shape, values) -> np.ndarray:
    """A label map using every value of ``values`` at least once, in random places."""
    n_pixels = shape[0] * shape[1]
    picks = np.concatenate([values, rng.choice(values, n_pixels - len(values))])
    return rng.permutation(picks).reshape(shape)


# ---------------------------------------------------------------------------------------
# BlockGrid
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "blocks"), GRID_CASES)
def test_block_grid_sums_match_a_naive_loop_on_batches(numerics, shape, blocks):
    grid = BlockGrid(shape=shape, blocks=blocks)
    values = np.random.default_rng(0).random((2, 3, *shape))
    labels = naive_grid_labels(shape, blocks)
    expected = naive_block_sums(values, labels, range(grid.n_blocks))
    np.testing.assert_allclose(grid.block_sums(values), expected, rtol=1e-13)
    np.testing.assert_allclose(grid.block_sums(values[0, 0]), expected[0, 0], rtol=1e-13)


@pytest.mark.parametrize(("shape", "blocks"), GRID_CASES)
def test_block_grid_broadcast_matches_a_naive_loop_on_batches(shape, blocks):
    grid = BlockGrid(shape=shape, blocks=blocks)
    block_values = np.random.default_rng(1).random((2, grid.n_blocks))
    labels = naive_grid_labels(shape, blocks)
    expected = naive_broadcast(block_values, labels, range(grid.n_blocks))
    np.testing.assert_array_equal(grid.broadcast(block_values), expected)


@pytest.mark.parametrize(("shape", "blocks"), GRID_CASES)
def test_block_grid_counts_and_sizes(shape, blocks):
    grid = BlockGrid(shape=shape, blocks=blocks)
    assert grid.n_blocks == blocks[0] * blocks[1]
    assert grid.site_shape == shape
    expected_size = (shape[0] // blocks[0]) * (shape[1] // blocks[1])
    np.testing.assert_array_equal(grid.block_sizes, np.full(grid.n_blocks, expected_size))
    assert grid.block_sizes.sum() == shape[0] * shape[1]
    np.testing.assert_array_equal(grid.block_sums(np.ones(shape)), grid.block_sizes)


def test_block_grid_numbering_is_row_major_and_matches_its_coordinates():
    grid = BlockGrid(shape=(6, 8), blocks=(3, 2))
    coords = grid.block_coords()
    rows, cols = coords["block_row"][0], coords["block_col"][0]
    for j in range(grid.n_blocks):
        indicator = grid.broadcast(np.eye(grid.n_blocks)[j])
        ys, xs = np.nonzero(indicator)
        assert set(ys) == set(range(2 * rows[j], 2 * rows[j] + 2))
        assert set(xs) == set(range(4 * cols[j], 4 * cols[j] + 4))
        assert j == rows[j] * 2 + cols[j]


@pytest.mark.parametrize(("shape", "blocks"), GRID_CASES)
def test_broadcast_is_the_adjoint_of_block_sums(numerics, shape, blocks):
    """⟨block_sums(x), v⟩ = ⟨x, broadcast(v)⟩, and block_sums(broadcast(v)) = |Ω| · v."""
    grid = BlockGrid(shape=shape, blocks=blocks)
    rng = np.random.default_rng(2)
    values, block_values = rng.random((3, *shape)), rng.random((3, grid.n_blocks))
    np.testing.assert_allclose(
        (grid.block_sums(values) * block_values).sum(axis=-1),
        (values * grid.broadcast(block_values)).sum(axis=(-2, -1)),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        grid.block_sums(grid.broadcast(block_values)), block_values * grid.block_sizes, rtol=1e-14
    )


def test_block_average_is_a_projection():
    """A = broadcast(block_sums(·)/|Ω|) keeps block sums and A∘A = A."""
    grid = BlockGrid(shape=(6, 6), blocks=(2, 3))
    values = np.random.default_rng(3).random((4, 6, 6))

    def average(x):
        return grid.broadcast(grid.block_sums(x) / grid.block_sizes)

    np.testing.assert_allclose(grid.block_sums(average(values)), grid.block_sums(values))
    np.testing.assert_allclose(average(average(values)), average(values), rtol=1e-14)


def test_block_grid_accepts_one_integer_for_square_blocks():
    grid = BlockGrid(shape=(6, 6), blocks=3)
    assert grid.blocks == (3, 3) and grid.n_blocks == 9
    assert BlockGrid(shape=np.array([4, 4]), blocks=[np.int64(2), np.int64(2)]).n_blocks == 4


@pytest.mark.parametrize(("shape", "blocks"), [((6, 8), (4, 2)), ((6, 8), (3, 3)), ((4, 4), 8)])
def test_block_grid_rejects_non_divisible_shapes_with_a_clear_message(shape, blocks):
    with pytest.raises(ConfigError, match="divisible") as info:
        BlockGrid(shape=shape, blocks=blocks)
    assert str(shape[0]) in str(info.value) and "label" in str(info.value)


@pytest.mark.parametrize(
    "blocks", [(0, 2), (-1, 2), (2,), (2, 2, 2), (2.5, 2), (True, 2), "ab", None]
)
def test_block_grid_rejects_malformed_block_counts(blocks):
    with pytest.raises(ConfigError):
        BlockGrid(shape=(4, 4), blocks=blocks)


@pytest.mark.parametrize("shape", [(0, 4), (4,), (4.0, 4), None])
def test_block_grid_rejects_malformed_shapes(shape):
    with pytest.raises(ConfigError):
        BlockGrid(shape=shape, blocks=(1, 1))


# ---------------------------------------------------------------------------------------
# LabelMap
# ---------------------------------------------------------------------------------------

LABEL_VALUES = [np.array([-7, 3, 42, 100]), np.array([5]), np.array([-3, -2, 0, 9, 11, 2**40])]


@pytest.mark.parametrize("values", LABEL_VALUES)
def test_label_map_block_sums_follow_sorted_label_values(values):
    rng = np.random.default_rng(4)
    labels = scrambled_labels(rng, (5, 6), values)
    partition = LabelMap(shape=(5, 6), labels=labels)
    sorted_values = np.sort(values)
    assert partition.n_blocks == len(values)
    np.testing.assert_array_equal(partition.block_coords()["label"][0], sorted_values)
    state = rng.random((2, 3, 5, 6))
    expected = naive_block_sums(state, labels, sorted_values)
    np.testing.assert_allclose(partition.block_sums(state), expected, rtol=1e-13)
    np.testing.assert_allclose(partition.block_sums(state[1, 2]), expected[1, 2], rtol=1e-13)
    np.testing.assert_array_equal(
        partition.block_sizes, [(labels == value).sum() for value in sorted_values]
    )


@pytest.mark.parametrize("values", LABEL_VALUES)
def test_label_map_broadcast_matches_a_naive_loop(values):
    rng = np.random.default_rng(5)
    labels = scrambled_labels(rng, (5, 6), values)
    partition = LabelMap(shape=(5, 6), labels=labels)
    block_values = rng.random((2, 3, len(values)))
    expected = naive_broadcast(block_values, labels, np.sort(values))
    np.testing.assert_array_equal(partition.broadcast(block_values), expected)
    np.testing.assert_allclose(
        partition.block_sums(partition.broadcast(block_values)),
        block_values * partition.block_sizes,
        rtol=1e-14,
    )


def test_label_map_of_a_grid_agrees_with_the_block_grid(numerics):
    grid = BlockGrid(shape=(6, 8), blocks=(3, 2))
    labels = naive_grid_labels((6, 8), (3, 2)) * 10 - 20  # same order, other values
    partition = LabelMap(shape=(6, 8), labels=labels)
    values = np.random.default_rng(6).random((4, 6, 8))
    np.testing.assert_allclose(partition.block_sums(values), grid.block_sums(values))
    block_values = np.random.default_rng(7).random((4, grid.n_blocks))
    np.testing.assert_array_equal(partition.broadcast(block_values), grid.broadcast(block_values))
    np.testing.assert_array_equal(partition.block_sizes, grid.block_sizes)


def test_label_map_accepts_unsigned_integers_and_nested_lists():
    labels = [[2, 2, 0], [1, 1, 0]]
    from_list = LabelMap(shape=(2, 3), labels=labels)
    from_uint = LabelMap(shape=(2, 3), labels=np.array(labels, dtype=np.uint8))
    values = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(from_list.block_sums(values), [2 + 5, 3 + 4, 0 + 1])
    np.testing.assert_array_equal(from_uint.block_sums(values), [2 + 5, 3 + 4, 0 + 1])


def test_label_map_reads_a_npy_file(tmp_path):
    labels = scrambled_labels(np.random.default_rng(8), (4, 5), np.array([-1, 7, 8]))
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    from_file = LabelMap(shape=(4, 5), path=str(path))
    from_array = LabelMap(shape=(4, 5), labels=labels)
    values = np.random.default_rng(9).random((4, 5))
    np.testing.assert_array_equal(from_file.block_sums(values), from_array.block_sums(values))
    np.testing.assert_array_equal(from_file.label_map, labels)


def test_label_map_missing_file_is_a_data_error_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere.npy"
    with pytest.raises(DataError, match="nowhere.npy"):
        LabelMap(shape=(4, 4), path=str(missing))


def test_label_map_rejects_files_that_are_not_npy(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0 1\n1 0\n")
    with pytest.raises(DataError, match=r"\.npy"):
        LabelMap(shape=(2, 2), path=str(path))


def test_label_map_rejects_a_corrupt_npy_file_with_a_data_error(tmp_path):
    path = tmp_path / "labels.npy"
    path.write_text("not a numpy file")
    with pytest.raises(DataError, match="labels.npy"):
        LabelMap(shape=(2, 2), path=str(path))


def test_label_map_rejects_a_pickled_object_array(tmp_path):
    path = tmp_path / "labels.npy"
    np.save(path, np.array([[0, 1], [1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):
        LabelMap(shape=(2, 2), path=str(path))


def test_label_map_with_the_wrong_shape_is_a_data_error():
    with pytest.raises(DataError, match=r"\(3, 4\)") as info:
        LabelMap(shape=(4, 3), labels=np.zeros((3, 4), dtype=int))
    assert "(4, 3)" in str(info.value)


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((2, 2)),  # floats, even if integral
        np.array([[0.5, 1.0], [1.0, 0.0]]),
        np.array([[True, False], [False, True]]),
        np.array([["a", "b"], ["b", "a"]]),
        np.zeros(4, dtype=int),  # not 2-D
        np.zeros((1, 2, 2), dtype=int),
    ],
)
def test_label_map_rejects_non_integer_or_non_2d_labels(labels):
    with pytest.raises(DataError):
        LabelMap(shape=(2, 2), labels=labels)


def test_label_map_needs_exactly_one_of_labels_and_path(tmp_path):
    with pytest.raises(ConfigError):
        LabelMap(shape=(2, 2))
    np.save(tmp_path / "labels.npy", np.zeros((2, 2), dtype=int))
    with pytest.raises(ConfigError):
        LabelMap(
            shape=(2, 2), labels=np.zeros((2, 2), dtype=int), path=str(tmp_path / "labels.npy")
        )


def test_label_map_is_unaffected_by_later_changes_to_the_caller_array():
    labels = np.array([[0, 0], [1, 1]])
    partition = LabelMap(shape=(2, 2), labels=labels)
    labels[:] = 5
    np.testing.assert_array_equal(partition.label_map, [[0, 0], [1, 1]])
    np.testing.assert_array_equal(partition.block_sums(np.ones((2, 2))), [2, 2])


@pytest.mark.parametrize(("shape", "blocks"), GRID_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_grid_scale_blocks_equals_multiplying_by_the_broadcast(
    numerics, shape, blocks, dtype
):
    grid = BlockGrid(shape=shape, blocks=blocks)
    rng = np.random.default_rng(4)
    values = rng.random((2, 3, *shape)).astype(dtype)
    factors = rng.random((2, 3, grid.n_blocks))
    scaled = grid.scale_blocks(values, factors)
    assert scaled.dtype == dtype
    expected = values * grid.broadcast(factors.astype(dtype))
    np.testing.assert_allclose(scaled, expected, rtol=1e-6 if dtype == np.float32 else 1e-15)
    shared = grid.scale_blocks(values, factors[0, 0])  # one factor per block for the batch
    np.testing.assert_allclose(
        shared, values * grid.broadcast(factors[0, 0].astype(dtype)), rtol=1e-6
    )


def test_block_grid_sums_of_float32_values_are_float64():
    grid = BlockGrid(shape=(4, 4), blocks=(2, 2))
    sums = grid.block_sums(np.full((4, 4), 1 / 16, dtype=np.float32))
    assert sums.dtype == np.float64
    np.testing.assert_allclose(sums, 0.25, rtol=1e-7)
