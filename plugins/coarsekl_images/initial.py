"""Initial states of the ensemble."""

from __future__ import annotations

import attrs
import numpy as np

from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Step
from coarsekl_images.data import read_image
from coarsekl_images.kernels import BlockBlur, normalise

__all__ = ["DataInitial", "FileInitial", "ForwardBlur", "UniformNoise"]


@attrs.frozen(kw_only=True)
class UniformNoise:
    """i.i.d. Uniform(low, high) pixels for every member (normalised by the runner).

    Parameters
    ----------
    low
        Lower end of the uniform pixel values, ≥ 0. Units: data intensity (normalised away).
    high
        Upper end, > low. Units: data intensity (normalised away).
    """

    low: float = 0.0
    high: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ConfigError(f"need 0 ≤ low < high, got low={self.low}, high={self.high}")

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        return rng.uniform(problem.partition.site_shape, self.low, self.high)


@attrs.frozen(kw_only=True)
class DataInitial:
    """Every member starts at the data state q_data."""

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        return np.broadcast_to(problem.data_state, (rng.members, *problem.data.shape)).copy()


@attrs.frozen(kw_only=True)
class FileInitial:
    """One image for all members (H, W) or one per member (members, H, W), .npy or .png.

    Parameters
    ----------
    path
        One image (H, W) or one per member (members, H, W), .npy or .png. Units: data intensity
        (normalised away).
    """

    path: str

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        image = read_image(self.path)
        return problem.member_states(image, rng.members, f"the initial image {self.path!r}")


@attrs.frozen(kw_only=True)
class ForwardBlur:
    """``steps`` block-blur steps of width ``sigma`` from noise or from the data state.

    The forward half of the round trip: block masses are kept, fine structure fades.

    Parameters
    ----------
    steps
        Number of block-blur steps applied to the start. Units: steps.
    sigma
        Standard deviation of the within-block Gaussian blur. Units: pixel.
    start
        What is blurred: ``data`` (the data state) or ``noise`` (uniform noise). Units:
        none (a choice).
    """

    steps: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.ge(0))
    )
    sigma: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    start: str = attrs.field(default="data", validator=attrs.validators.in_(("data", "noise")))

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        start = DataInitial() if self.start == "data" else UniformNoise()
        state = start.states(problem, rng)
        state = normalise(state)
        kernel = BlockBlur(sigma=self.sigma)
        for index in range(1, self.steps + 1):
            state = kernel.step(state, problem, Step(index, self.steps), rng)
        return state
