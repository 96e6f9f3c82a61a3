"""The five abstractions of coarsekl, as small typed interfaces.

A *state* is a non-negative array ``p`` of shape ``(..., *site_shape)`` that sums to 1 over
its site axes (for images ``site_shape = (H, W)``); the leading axes are batch axes
(scheme, member, sweep point …). A *partition* cuts the sites into K blocks; the *coarse
quantity* of a state is a vector over the blocks (block masses by default). Plugins
implement these protocols; the runner only talks to them through these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import attrs
import numpy as np

if TYPE_CHECKING:
    from coarsekl.problem import Problem
    from coarsekl.random import MemberRandom
    from coarsekl.schedules import Step

__all__ = [
    "CoarseQuantity",
    "DataSource",
    "DistributionSource",
    "InitialState",
    "Kernel",
    "Metric",
    "Partition",
    "Projection",
    "Projector",
]


@runtime_checkable
class Partition(Protocol):
    """Ω = Ω_1 ⊔ … ⊔ Ω_K over the sites of a state.

    Partition factories receive the grid shape as the keyword ``shape``.
    """

    site_shape: tuple[int, ...]
    """Shape of the site axes, e.g. ``(H, W)``."""
    site_dims: tuple[str, ...]
    """Dimension names of the site axes in a dataset, e.g. ``("y", "x")``."""

    @property
    def n_blocks(self) -> int:
        """K, the number of blocks."""

    @property
    def block_sizes(self) -> np.ndarray:
        """The block sizes ``|Ω_j|``, shape (K,), integers."""

    def block_sums(self, values: np.ndarray) -> np.ndarray:
        """Σ_{x∈Ω_j} values(x): ``(..., *site_shape) -> (..., K)``."""

    def broadcast(self, block_values: np.ndarray) -> np.ndarray:
        """The blockwise-constant field v(x) = block_values[j(x)]: ``(..., K) -> (..., *sites)``."""

    def block_coords(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """Extra coordinates along the ``block`` dimension: name -> (values, attributes)."""


@runtime_checkable
class CoarseQuantity(Protocol):
    """A linear, blockwise view of the block masses: ``value_j = scale_j · w_j``.

    ``reference`` optionally overrides the data's reference values (in the quantity's units).
    """

    long_name: ClassVar[str]
    units: ClassVar[str]
    reference: np.ndarray | None

    def scale(self, partition: Partition, data_total: float) -> np.ndarray:
        """``scale_j`` with ``value_j = scale_j · w_j``, shape (K,), all > 0."""


@runtime_checkable
class Kernel(Protocol):
    """One step ``p_t -> p_{t−1}`` on a batch of states.

    Randomness comes only from ``rng`` (one stream per ensemble member, shared by all
    schemes: common random numbers). ``block_preserving`` declares that block masses are
    kept exactly. ``state`` has shape ``(scheme, member, *site_shape)`` and keeps the run's
    dtype (float64 or float32).

    Members evolve independently, so the runner may call ``step`` on any group of members
    (with the matching ``rng``), from several threads at once: keep ``step`` free of shared
    mutable state. A kernel that couples members (an interacting ensemble) sets the class
    attribute ``couples_members = True`` and always receives the whole ensemble.
    """

    block_preserving: ClassVar[bool]

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        """Return the next state, same shape as ``state``, non-negative, normalised: a new
        array (or ``state`` itself), which the runner may then write into."""


@attrs.frozen
class Projection:
    """What a projector returns: the projected ``state`` and which blocks it clipped.

    ``clipped`` is a boolean array ``(..., K)``: True where a block's mass was set to a
    bound of the admissible interval.
    """

    state: np.ndarray
    clipped: np.ndarray


@runtime_checkable
class Projector(Protocol):
    """A map onto an admissible set of the coarse quantity (identity for the baseline).

    A projector that draws random numbers (resampling) sets the class attribute
    ``uses_random = True``; ``project`` then also receives ``rng=``, a
    :class:`~coarsekl.random.MemberRandom` with one stream per member of the batch.

    A projector that can write its result over its input sets ``projects_in_place =
    True``; the runner then passes ``in_place=True`` where nothing else needs the state
    (the kernel's output, which becomes the new state): ``project`` may overwrite
    ``state`` and return that very object as ``Projection.state`` (the runner then copies
    nothing), or return another array as usual. Without ``in_place=True`` a projector
    never changes ``state``.
    """

    def tolerance(self, step: Step) -> float | None:
        """δ in force at ``step`` (in the coarse quantity's units), or None."""

    def project(self, state: np.ndarray, problem: Problem, step: Step) -> Projection:
        """Project a batch of states; ``step.tolerance`` equals ``self.tolerance(step)``."""


@runtime_checkable
class Metric(Protocol):
    """A named quantity of a state, recorded per scheme, member and step.

    The component name is the data variable's name. ``per_block`` metrics return
    ``(..., K)`` and gain a ``block`` dimension; the others return ``(...)``. Metrics with
    ``record_before_projection`` are also recorded on the kernel's output, before the
    projection (variable ``<name>_pre``).
    """

    long_name: ClassVar[str]
    units: ClassVar[str]
    per_block: ClassVar[bool]
    record_before_projection: ClassVar[bool]

    def compute(self, state: np.ndarray, problem: Problem, step: Step) -> np.ndarray:
        """Evaluate on a batch of states."""

    # Optional, for metrics of the block masses alone (V_δ, E_block):
    #
    #     def from_block_masses(self, masses, problem, steps) -> np.ndarray:
    #         """The metric from block masses (..., step, K), float64 (read-only), along ``steps``
    #         (the Step of each position of the step axis) -> (..., step), or
    #         (..., step, K) for per_block metrics."""
    #
    # When the reference masses stay fixed during a run (Problem.reference_is_fixed), the
    # runner then evaluates the metric once, at the end of the run, over the recorded block
    # masses of every step, instead of calling ``compute`` at every step. It must give
    # what ``compute`` gives on states with those block masses.


@runtime_checkable
class DataSource(Protocol):
    """The data image x (intensities ≥ 0, not all zero); q_data = x / Σx."""

    def image(self, rng: np.random.Generator) -> np.ndarray:
        """Return the data image, shape ``site_shape``, float64."""


@runtime_checkable
class DistributionSource(Protocol):
    """The data of particle-ensemble experiments: a distribution in R^d.

    The returned object has an integer ``dim`` and whatever the plugin's kernels and
    partitions need (for a Gaussian mixture: exact scores and posteriors). Optional:
    ``dataset_variables()`` returning ``{name: (dims, values, attributes)}`` to describe
    it in the trajectory. The runs set ``particles = N`` (particles per member); states
    are :class:`~coarsekl.ensemble.Ensemble` objects and particle partitions provide
    ``labels(ensemble)`` and ``reference_masses(data, alpha_bar=1.0)``.
    """

    def distribution(self, rng: np.random.Generator) -> object:
        """Return the data distribution."""


@runtime_checkable
class InitialState(Protocol):
    """The initial states of all ensemble members."""

    def states(self, problem: Problem, rng: MemberRandom) -> np.ndarray:
        """Return ``(members, *site_shape)`` non-negative arrays (normalised by the runner),
        or for particle experiments an Ensemble with positions ``(members, N, d)``."""
