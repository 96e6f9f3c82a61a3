"""A partition, a kernel and a metric, each an attrs class that satisfies a coarsekl protocol.

States are batches ``(..., H, W)`` of non-negative arrays, each summing to 1 over its last
two axes; block masses are ``(..., K)``.
"""

from typing import ClassVar

import attrs
import numpy as np
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Schedule, Step, schedule_field


def _image_shape(value) -> tuple[int, int]:
    height, width = (int(v) for v in value)
    return height, width


@attrs.frozen(kw_only=True, eq=False)
class Stripes:
    """The H × W grid cut into ``stripes`` horizontal bands of equal height.

    Stripe j covers the pixel rows ``j·h … j·h + h − 1`` with h = H / stripes.

    Parameters
    ----------
    shape
        (H, W), the data image's shape; coarsekl passes it in, it is not a config key.
        Units: pixel.
    stripes
        Number of bands K; must divide the image height H.
    """

    shape: tuple[int, int] = attrs.field(converter=_image_shape)
    stripes: int = attrs.field(
        validator=[attrs.validators.instance_of(int), attrs.validators.gt(0)]
    )
    site_dims: ClassVar[tuple[str, str]] = ("y", "x")

    def __attrs_post_init__(self) -> None:
        if self.shape[0] % self.stripes:
            raise ConfigError(
                f"an image of height {self.shape[0]} cannot be cut into {self.stripes} "
                "stripes of equal height; choose a divisor of the height"
            )

    @property
    def site_shape(self) -> tuple[int, int]:
        return self.shape

    @property
    def n_blocks(self) -> int:
        return self.stripes

    @property
    def stripe_height(self) -> int:
        return self.shape[0] // self.stripes

    @property
    def block_sizes(self) -> np.ndarray:
        return np.full(self.stripes, self.stripe_height * self.shape[1])

    def block_sums(self, values: np.ndarray) -> np.ndarray:
        """Σ over each stripe: ``(..., H, W) -> (..., K)``, in float64."""
        bands = values.reshape(*values.shape[:-2], self.stripes, self.stripe_height, -1)
        return bands.sum(axis=(-2, -1), dtype=np.float64)

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        """The field equal to ``block_values[..., j]`` on stripe j: ``(..., K) -> (..., H, W)``."""
        batch = block_values.shape[:-1]
        bands = np.broadcast_to(
            block_values[..., :, None, None],
            (*batch, self.stripes, self.stripe_height, self.shape[1]),
        )
        return bands.reshape(*batch, *self.shape)

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        top_rows = np.arange(self.stripes) * self.stripe_height
        return {"stripe_top": (top_rows, {"long_name": "first pixel row", "units": "pixel"})}


def _positive_schedule(instance, attribute, value: Schedule) -> None:
    if value.extremes()[0] <= 0:
        raise ConfigError(f"{attribute.name} must be > 0 at every step, got {value.to_config()}")


@attrs.frozen(kw_only=True)
class BlockPower:
    """p'(x) = w_j · p(x)^γ / Σ_{y∈Ω_j} p(y)^γ for x in block Ω_j: block masses kept exactly.

    γ > 1 sharpens the state inside every block (V grows), γ < 1 flattens it (V falls
    towards 0), γ = 1 leaves it unchanged. Blocks without mass stay empty.

    Parameters
    ----------
    gamma
        The exponent γ > 0; a number or a schedule. Units: dimensionless.
    """

    block_preserving: ClassVar[bool] = True
    gamma: Schedule = schedule_field(validator=_positive_schedule)

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        partition = problem.partition
        powered = state ** self.gamma.at(step)
        masses = problem.block_masses(state)
        powered_sums = partition.block_sums(powered)
        factors = np.divide(masses, powered_sums, out=np.zeros_like(masses), where=powered_sums > 0)
        return powered * partition.broadcast(factors)


@attrs.frozen
class BlockEntropy:
    """H(w) = −Σ_j w_j log w_j, the Shannon entropy of the block masses (0 log 0 = 0).

    It is log K for equal block masses and 0 when one block holds all the mass.
    """

    long_name: ClassVar[str] = "entropy of the block masses"
    units: ClassVar[str] = "nat"
    per_block: ClassVar[bool] = False
    record_before_projection: ClassVar[bool] = False

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        masses = problem.block_masses(state)
        logs = np.log(np.where(masses > 0, masses, 1.0))
        return -(masses * logs).sum(axis=-1)
