"""Reproducible random streams, one per ensemble member.

Streams are derived from the experiment seed with numpy's SeedSequence and a spawn key
that names their purpose and member, so member m's numbers depend only on the seed and m:
adding members never changes the old ones, and every scheme sees the same numbers (common
random numbers). Purposes: 0 data, 1 initial state, 2 kernel, 3 projector.
"""

from __future__ import annotations

import copy
import threading
from enum import IntEnum

import numpy as np

__all__ = ["MemberRandom", "Purpose", "generator_for"]


class Purpose(IntEnum):
    DATA = 0
    INITIAL = 1
    KERNEL = 2
    PROJECTOR = 3


def generator_for(seed: int, purpose: Purpose, member: int | None = None) -> np.random.Generator:
    """The generator for one purpose (and member): SeedSequence(seed, spawn_key=(purpose, m))."""
    key = (int(purpose),) if member is None else (int(purpose), int(member))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class _Streams:
    """The generators of one seed and purpose, each made when first asked for: making one
    costs about 10 µs, and a run makes kernel and projector streams that deterministic
    components never draw from."""

    __slots__ = ("lock", "made", "purpose", "seed")

    def __init__(self, seed: int, purpose: Purpose, members: int) -> None:
        self.seed, self.purpose = seed, purpose
        self.made: list[np.random.Generator | None] = [None] * members
        self.lock = threading.Lock()

    def generator(self, member: int) -> np.random.Generator:
        with self.lock:  # (two threads asking for one member must get one generator)
            generator = self.made[member]
            if generator is None:
                generator = self.made[member] = generator_for(self.seed, self.purpose, member)
            return generator


class MemberRandom:
    """Independent generators for ``n`` ensemble members.

    Draws have shape ``(members, *event_shape)``; they broadcast against a batch whose last
    batch axis is the member axis (for example ``(scheme, member, H, W)``).
    """

    def __init__(self, generators: list[np.random.Generator]) -> None:
        self._generators: list[np.random.Generator] | None = list(generators)
        self._streams: _Streams | None = None
        self._members = range(len(self._generators))

    @classmethod
    def from_seed(cls, seed: int, purpose: Purpose, members: int) -> MemberRandom:
        """The streams of members 0 … members − 1 (made on first use)."""
        return cls._lazy(_Streams(seed, purpose, members), range(members))

    @classmethod
    def _lazy(cls, streams: _Streams, members: range) -> MemberRandom:
        random = cls.__new__(cls)
        random._generators, random._streams, random._members = None, streams, members
        return random

    @property
    def generators(self) -> list[np.random.Generator]:
        """One generator per member."""
        if self._generators is None:
            self._generators = [self._streams.generator(m) for m in self._members]
        return self._generators

    @property
    def members(self) -> int:
        return len(self._members)

    def subset(self, members: slice) -> MemberRandom:
        """The streams of a group of members (the same generator objects, not copies)."""
        if self._generators is None:
            return self._lazy(self._streams, self._members[members])
        return MemberRandom(self._generators[members])

    def copy(self) -> MemberRandom:
        """Independent copies of the generators in their current state: they give the
        same numbers as the originals from here on."""
        return MemberRandom([copy.deepcopy(generator) for generator in self.generators])

    def normal(self, event_shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        """Standard normal draws, ``(members, *event_shape)``."""
        out = np.empty((self.members, *event_shape), dtype=dtype)
        for generator, row in zip(self.generators, out, strict=True):
            generator.standard_normal(out=row, dtype=dtype)
        return out

    def uniform(self, event_shape: tuple[int, ...], low: float = 0.0, high: float = 1.0):
        """Uniform(low, high) draws, ``(members, *event_shape)``."""
        out = np.empty((self.members, *event_shape))
        for member, generator in enumerate(self.generators):
            row = out[member, ...]  # (a view, also for event_shape ())
            if low == 0.0 and high == 1.0:  # the same numbers, drawn straight into place
                generator.random(out=row)
            else:
                row[...] = generator.uniform(low, high, size=event_shape)
        return out
