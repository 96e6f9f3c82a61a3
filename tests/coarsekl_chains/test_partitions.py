"""Specification of the label-vector partition: n chain states cut into blocks, each with
a reference within-block distribution π_j (uniform by default)."""

from __future__ import annotations

import numpy as np
import pytest

from coarsekl.errors import ConfigError, DataError
from coarsekl.interfaces import Partition
from coarsekl_chains.partitions import LabelVector


def test_labels_name_blocks_in_label_order_and_sums_are_per_block():
    partition = LabelVector(shape=(6,), labels=[7, -1, 7, 3, -1, 7])
    assert isinstance(partition, Partition)
    assert partition.n_blocks == 3
    assert partition.block_sizes.tolist() == [2, 1, 3]  # labels -1, 3, 7
    state = np.array([[0.1, 0.2, 0.3, 0.05, 0.15, 0.2]])
    np.testing.assert_allclose(partition.block_sums(state), [[0.35, 0.05, 0.6]])
    assert partition.block_coords()["label"][0].tolist() == [-1, 3, 7]


def test_sizes_cut_consecutive_runs_and_broadcast_inverts_block_sums_of_constants():
    partition = LabelVector(shape=(9,), sizes=[2, 3, 4])
    assert partition.site_shape == (9,) and partition.site_dims == ("site",)
    field = partition.broadcast(np.array([[1.0, 2.0, 3.0]]))
    assert field.tolist() == [[1, 1, 2, 2, 2, 3, 3, 3, 3]]
    np.testing.assert_allclose(partition.block_sums(field), [[2.0, 6.0, 12.0]])
    assert partition.same_block.sum() == 4 + 9 + 16


def test_reference_defaults_to_uniform_and_is_normalised_within_blocks():
    uniform = LabelVector(shape=(5,), sizes=[2, 3])
    np.testing.assert_allclose(uniform.reference, [1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3])
    given = LabelVector(shape=(5,), sizes=[2, 3], reference=[1, 3, 2, 2, 4])
    np.testing.assert_allclose(given.reference, [0.25, 0.75, 0.25, 0.25, 0.5])
    np.testing.assert_allclose(given.block_sums(given.reference), [1.0, 1.0])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"shape": (4,)}, ConfigError, "exactly one of 'labels'"),
        ({"shape": (4,), "labels": [0, 1, 1, 0], "sizes": [2, 2]}, ConfigError, "exactly one"),
        ({"shape": (4,), "sizes": [2, 3]}, ConfigError, "summing to the number of states 4"),
        ({"shape": (4,), "sizes": [4, 0]}, ConfigError, "positive integers"),
        ({"shape": (4,), "labels": [0, 1, 1]}, DataError, "labels has 3 entries but the chain"),
        ({"shape": (4,), "labels": [0.5, 1, 1, 0]}, ConfigError, "list of integers"),
        ({"shape": (8, 8), "sizes": [64]}, DataError, "needs 1-D data"),
        ({"shape": (3,), "sizes": [3], "reference": [1, 0, 1]}, DataError, "> 0 at every"),
        ({"shape": (3,), "sizes": [3], "reference": [1, 1]}, DataError, "one value per state"),
    ],
)
def test_bad_partitions_are_rejected_with_a_clear_message(arguments, error, message):
    with pytest.raises(error, match=message):
        LabelVector(**arguments)


def test_the_vdelta_projection_fills_an_empty_block_with_its_reference_distribution():
    from coarsekl.problem import Problem
    from coarsekl.schedules import Step
    from coarsekl_blocks.quantities import BlockMass
    from coarsekl_blocks.vdelta import VDeltaProjector

    partition = LabelVector(shape=5, sizes=[2, 3], reference=[1, 1, 1, 2, 5])
    problem = Problem(partition=partition, quantity=BlockMass(), data=np.ones(5))
    state = np.array([0.5, 0.5, 0.0, 0.0, 0.0])  # block 1 empty; the reference has 3/5 there
    projected = VDeltaProjector(delta=0.1).project(state, problem, Step(1, 1, 0.1)).state
    np.testing.assert_allclose(projected[:2], [0.25, 0.25])  # w* = (0.5, 0.5), shape kept
    np.testing.assert_allclose(projected[2:], 0.5 * np.array([1, 2, 5]) / 8)  # w* · π_1
