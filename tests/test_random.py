"""Member streams: one reproducible generator per member, made when first drawn from."""

from __future__ import annotations

import itertools

import numpy as np

from coarsekl.random import MemberRandom, Purpose, generator_for


def test_member_streams_are_the_seed_sequence_streams_of_their_purpose_and_member():
    rng = MemberRandom.from_seed(7, Purpose.KERNEL, 3)
    assert rng.members == 3
    draws = rng.normal((4,))
    for member in range(3):
        expected = generator_for(7, Purpose.KERNEL, member).standard_normal(4)
        np.testing.assert_array_equal(draws[member], expected)


def test_uniform_draws_are_each_members_generator_uniform_draws_and_leave_it_alike():
    for (low, high), shape in itertools.product(((0.0, 1.0), (0.25, 3.0)), ((3, 4), ())):
        rng = MemberRandom.from_seed(9, Purpose.INITIAL, 2)
        draws = rng.uniform(shape, low, high)
        assert draws.shape == (2, *shape)
        for member in range(2):
            generator = generator_for(9, Purpose.INITIAL, member)
            np.testing.assert_array_equal(draws[member], generator.uniform(low, high, shape))
            assert rng.generators[member].random() == generator.random()  # the same state


def test_a_members_numbers_do_not_depend_on_how_many_members_there_are():
    few = MemberRandom.from_seed(7, Purpose.INITIAL, 2).uniform((5,))
    many = MemberRandom.from_seed(7, Purpose.INITIAL, 6).uniform((5,))
    np.testing.assert_array_equal(few, many[:2])


def test_a_subset_shares_the_generators_of_its_members_whichever_draws_first():
    for subset_first in (True, False):
        rng = MemberRandom.from_seed(3, Purpose.KERNEL, 4)
        group = rng.subset(slice(1, 3))
        assert group.members == 2
        if subset_first:
            group.normal((1,))
        else:
            rng.normal((1,))
        assert group.generators == rng.generators[1:3]
        assert all(a is b for a, b in zip(group.generators, rng.generators[1:3], strict=True))


def test_a_copy_gives_the_numbers_the_original_gives_next_and_draws_apart():
    rng = MemberRandom.from_seed(5, Purpose.PROJECTOR, 2)
    rng.normal((3,))
    twin = rng.copy()
    np.testing.assert_array_equal(twin.normal((3,)), rng.normal((3,)))
    assert twin.generators[0] is not rng.generators[0]


def test_streams_never_drawn_from_are_not_made():
    rng = MemberRandom.from_seed(1, Purpose.KERNEL, 3)
    group = rng.subset(slice(0, 2))
    assert rng._streams.made == [None, None, None]
    group.normal((1,))
    assert [made is not None for made in rng._streams.made] == [True, True, False]


def test_random_from_a_list_of_generators():
    generators = [np.random.default_rng(0), np.random.default_rng(1)]
    rng = MemberRandom(generators)
    assert rng.members == 2
    assert rng.subset(slice(1, 2)).generators[0] is generators[1]
