"""Reproducible random streams, one per ensemble member.

Streams are derived from the experiment seed with numpy's SeedSequence and a spawn key
that names their purpose and member, so member m's numbers depend only on the seed and m:
adding members never changes the old ones, and every scheme sees the same numbers (common
random numbers). Purposes: 0 data, 1 initial state, 2 kernel, 3 projector.
"""

from __future__ import annotations

import copy
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


class MemberRandom:
    """Independent generators for ``n`` ensemble members.

    Draws have shape ``(members, *event_shape)``; they broadcast against a batch whose last
    batch axis is the member axis (for example ``(scheme, member, H, W)``).
    """

    def __init__(self, generators: list[np.random.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def from_seed(cls, seed: int, purpose: Purpose, members: int) -> MemberRandom:
        return cls([generator_for(seed, purpose, m) for m in range(members)])

    @property
    def members(self) -> int:
        return len(self.generators)

    def subset(self, members: slice) -> MemberRandom:
        """The streams of a group of members (the same generator objects, not copies)."""
        return MemberRandom(self.generators[members])

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
        return np.stack([g.uniform(low, high, size=event_shape) for g in self.generators])
