"""Transition-matrix kernels on distributions over n states.

Convention: P is row-stochastic, P[x, y] = probability of moving from state x to state y,
and one step maps a (row-vector) distribution p to p' = p P. A batch of states
``(scheme, member, n)`` is advanced by one batched matmul, with one matrix for all members
or one per member (``(member, n, n)``: every scheme sees the same matrix, common random
numbers).

Leakage: every kernel may be mixed with an off-block-diagonal kernel L,
P_ε = (1 − ε) P + ε L, so that a fraction ε of every state's mass leaves its block; L is
uniform over the states of the other blocks for the fixed kernels and random for the
random generators. Then ‖w(p P_ε) − w(p P)‖₁ ≤ 2ε.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import scipy.sparse

from coarsekl.errors import ConfigError, DataError, did_you_mean
from coarsekl.interfaces import Partition
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom
from coarsekl.schedules import Schedule, Step, schedule_field

__all__ = [
    "FAMILIES",
    "MatrixSequence",
    "RandomBlockKernel",
    "TransitionMatrix",
    "apply_transition",
    "block_diagonal_stochastic",
    "check_transition_matrix",
    "doubly_stochastic_blocks",
    "metropolis_blocks",
    "off_block_stochastic",
    "reference_of",
    "uniform_leak",
    "uniform_reference",
    "within_block_permutations",
]

ROW_SUM_TOLERANCE = 1e-9  # |Σ_y P[x, y] − 1| accepted for a user-given matrix
FAMILIES = ("stochastic", "doubly-stochastic", "stationary")


def check_transition_matrix(matrix: Any, what: str = "the transition matrix"):
    """Check that ``matrix`` is a row-stochastic square matrix and return it as float64.

    Dense input (array-like ``(n, n)``) comes back as a read-only ndarray, scipy.sparse input
    as a CSR array. Raises DataError naming the first bad row or entry.
    """
    if scipy.sparse.issparse(matrix):
        matrix = scipy.sparse.csr_array(matrix, dtype=np.float64)
        entries = matrix.data
    else:
        try:
            matrix = np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what} must be a square array of numbers") from None
        entries = matrix
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise DataError(f"{what} must be a square n × n matrix, got shape {matrix.shape}")
    if not np.isfinite(entries).all():
        raise DataError(f"{what} contains NaN or inf")
    if (entries < 0).any():
        if scipy.sparse.issparse(matrix):
            row, col = (index[0] for index in (matrix < 0).nonzero())
        else:
            row, col = np.argwhere(matrix < 0)[0]
        raise DataError(
            f"{what} has a negative entry P[{row}, {col}] = {matrix[row, col]:.4g}; "
            "transition probabilities must be ≥ 0"
        )
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    bad = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOLERANCE)
    if bad.size:
        raise DataError(
            f"{what} is not row-stochastic: row {bad[0]} sums to {sums[bad[0]]:.10g} "
            f"({bad.size} bad row(s)); every row must sum to 1, P[x, y] being the "
            "probability of moving from state x to state y"
        )
    if not scipy.sparse.issparse(matrix):
        matrix.flags.writeable = False
    return matrix


def _load_matrices(path: str, ndim: int):
    file = Path(path)
    if not file.is_file():
        raise DataError(f"matrix file {str(file)!r} does not exist")
    try:
        if file.suffix == ".npz" and ndim == 2:
            return scipy.sparse.load_npz(file)
        if file.suffix == ".npy":
            return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the matrix file {str(file)!r}: {error}") from None
    kinds = ".npy (dense) or .npz (scipy.sparse)" if ndim == 2 else ".npy"
    raise DataError(f"matrix file {str(file)!r} must be {kinds}")


def _exactly_one(value, path, name: str):
    if (value is None) == (path is None):
        raise ConfigError(f"give exactly one of {name!r} (numbers) or 'path' (a file)")


def _check_chain_size(matrix_size: int, n_states: int) -> None:
    if matrix_size != n_states:
        raise DataError(
            f"the transition matrix is {matrix_size} × {matrix_size} but the chain has "
            f"{n_states} states"
        )


def _leakage_schedule(instance, attribute, value: Schedule) -> None:
    low, high = value.extremes()
    if low < 0 or high > 1:
        raise ConfigError(
            f"{attribute.name} ε must lie in [0, 1] (the fraction of mass that leaves its "
            f"block per step), got {value.to_config()}"
        )


def apply_transition(state: np.ndarray, matrix) -> np.ndarray:
    """p' = p P for a batch ``(..., n)``.

    ``matrix`` is one matrix ``(n, n)`` (dense or scipy.sparse) or one per member
    ``(member, n, n)``, broadcast against the member axis (the one before the last).
    """
    if scipy.sparse.issparse(matrix):
        rows = np.ascontiguousarray(state, dtype=np.float64).reshape(-1, state.shape[-1])
        return np.asarray(rows @ matrix).reshape(state.shape)
    if matrix.ndim == 2:
        return state @ matrix
    return np.matmul(state[..., None, :], matrix)[..., 0, :]


def uniform_leak(state: np.ndarray, partition: Partition) -> np.ndarray:
    """p L for L[x, y] = 1 / (n − |Ω_j(x)|) on the states y outside x's block, 0 inside.

    (p L)(y) = Σ_{i ≠ j(y)} w_i / (n − |Ω_i|): O(n) with block sums, no n × n matrix.
    """
    sizes = partition.block_sizes
    n_states = int(sizes.sum())
    if sizes.size < 2:
        raise ConfigError("leakage ε > 0 needs at least two blocks (mass has nowhere to go)")
    share = partition.block_sums(state) / (n_states - sizes)
    return share.sum(axis=-1, keepdims=True) - partition.broadcast(share)


def uniform_reference(partition: Partition) -> np.ndarray:
    """π_j(x) = 1 / |Ω_j| for every site x, flattened to (n,)."""
    sizes = partition.broadcast(partition.block_sizes.astype(np.float64))
    return 1.0 / sizes.reshape(-1)


def reference_of(partition: Partition) -> np.ndarray:
    """The reference within-block distribution π (n,) of a partition: its
    ``within_block_reference`` if it has one (label-vector partitions), else uniform in
    every block."""
    reference = getattr(partition, "within_block_reference", None)
    if reference is not None:
        return np.asarray(reference, dtype=np.float64).reshape(-1)
    return uniform_reference(partition)


def _gamma(rng: MemberRandom, shape: tuple[int, ...], concentration: float) -> np.ndarray:
    """Gamma(concentration, 1) draws ``(members, *shape)``, one stream per member."""
    return np.stack([g.gamma(concentration, size=shape) for g in rng.generators])


def _normalise_rows(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum(axis=-1, keepdims=True)


def block_diagonal_stochastic(
    same_block: np.ndarray, rng: MemberRandom, concentration: float
) -> np.ndarray:
    """Random block-diagonal row-stochastic matrices ``(members, n, n)``: each row is
    Dirichlet(concentration) over the states of its own block. π is generally not invariant."""
    weights = _gamma(rng, same_block.shape, concentration) * same_block
    return _normalise_rows(weights)


def off_block_stochastic(
    same_block: np.ndarray, rng: MemberRandom, concentration: float
) -> np.ndarray:
    """Random off-block-diagonal row-stochastic matrices ``(members, n, n)``: each row is
    Dirichlet(concentration) over the states outside its block (the leakage kernel L)."""
    if same_block.all():
        raise ConfigError("leakage ε > 0 needs at least two blocks (mass has nowhere to go)")
    weights = _gamma(rng, same_block.shape, concentration) * ~same_block
    return _normalise_rows(weights)


def within_block_permutations(inverse: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Random permutations σ that map every block onto itself, from uniform ``keys``
    ``(..., n)`` in [0, 1): returns σ ``(..., n)`` (state x moves to σ(x)).

    Sorting ``block + key`` lists every block's states in a random order; pairing it with
    the states sorted by block alone gives a uniformly random permutation inside each block.
    """
    by_block = np.argsort(inverse, kind="stable")
    shuffled = np.argsort(inverse + keys, axis=-1)
    sigma = np.empty_like(shuffled)
    sigma[..., by_block] = shuffled
    return sigma


def doubly_stochastic_blocks(
    inverse: np.ndarray, rng: MemberRandom, permutations: int, concentration: float
) -> np.ndarray:
    """Random block-diagonal doubly stochastic matrices ``(members, n, n)`` (Birkhoff):
    B = Σ_k λ_k Π_{σ_k} with ``permutations`` random within-block permutations σ_k and
    weights λ ~ Dirichlet(concentration). Every row and column sums to 1, so the uniform
    within-block distribution is invariant. One permutation gives a permutation matrix,
    which mixes nothing (V is kept exactly without leakage)."""
    n_states = inverse.size
    keys = rng.uniform((permutations, n_states))
    sigma = within_block_permutations(inverse, keys)  # (members, permutations, n)
    weights = _normalise_rows(_gamma(rng, (permutations,), concentration))
    one_hot = sigma[..., None] == np.arange(n_states)  # (members, permutations, n, n)
    return np.einsum("mk,mkxy->mxy", weights, one_hot)


def metropolis_blocks(symmetric: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Metropolis kernels with proposal Q (symmetric, block-diagonal) and target π:
    P[x, y] = Q[x, y] min(1, π(y)/π(x)) for y ≠ x, P[x, x] = 1 − Σ_{y≠x} P[x, y].

    Detailed balance π(x) P[x, y] = Q[x, y] min(π(x), π(y)) makes every π_j invariant.
    """
    ratio = np.minimum(1.0, reference[None, :] / reference[:, None])
    moves = symmetric * ratio
    diagonal = np.arange(reference.size)
    moves[..., diagonal, diagonal] = 0.0
    moves[..., diagonal, diagonal] = 1.0 - moves.sum(axis=-1)
    return moves


@attrs.frozen(kw_only=True, eq=False)
class TransitionMatrix:
    """p' = p P_ε with one fixed row-stochastic matrix P (``matrix``: nested lists, or
    ``path``: .npy dense or .npz scipy.sparse) and uniform off-block leakage ε.

    Declared leaking (``block_preserving = False``): a given matrix need not respect the
    partition. The runner's ``leak`` variable shows the block-mass change of every step.

    Parameters
    ----------
    matrix
        A row-stochastic n × n matrix (nested lists). Units: probability per step.
    path
        A .npy (dense) or .npz (scipy.sparse) file instead of ``matrix``. Units: probability
        per step.
    leakage
        Fraction ε of every state's mass moved off its block per step, in [0, 1]; a number or a
        schedule. Units: probability per step.
    """

    block_preserving: ClassVar[bool] = False
    matrix: Any = None
    path: str | None = None
    leakage: Schedule = schedule_field(default=0.0, validator=_leakage_schedule)
    transition: Any = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _exactly_one(self.matrix, self.path, "matrix")
        raw = self.matrix if self.path is None else _load_matrices(self.path, 2)
        object.__setattr__(self, "transition", check_transition_matrix(raw))

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        _check_chain_size(self.transition.shape[0], state.shape[-1])
        moved = apply_transition(state, self.transition)
        return _with_uniform_leak(moved, state, problem, self.leakage.at(step))


def _with_uniform_leak(moved, state, problem: Problem, leakage: float) -> np.ndarray:
    if leakage == 0:
        return moved
    return (1 - leakage) * moved + leakage * uniform_leak(state, problem.partition)


@attrs.frozen(kw_only=True, eq=False)
class MatrixSequence:
    """A time-dependent chain: step k uses P_{(k−1) mod T} of ``matrices`` (T, n, n)
    (nested lists, or ``path`` to a .npy file), so a sequence shorter than the run repeats;
    uniform off-block leakage ε as for ``matrix``. Declared leaking.

    Parameters
    ----------
    matrices
        T row-stochastic n × n matrices; step k uses matrix (k − 1) mod T. Units: probability
        per step.
    path
        A .npy file of shape (T, n, n) instead of ``matrices``. Units: probability per step.
    leakage
        Fraction ε of every state's mass moved off its block per step, in [0, 1]. Units:
        probability per step.
    """

    block_preserving: ClassVar[bool] = False
    matrices: Any = None
    path: str | None = None
    leakage: Schedule = schedule_field(default=0.0, validator=_leakage_schedule)
    transitions: np.ndarray = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _exactly_one(self.matrices, self.path, "matrices")
        raw = self.matrices if self.path is None else _load_matrices(self.path, 3)
        try:
            stack = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("matrices must be a (T, n, n) array of numbers") from None
        if stack.ndim != 3 or stack.shape[0] == 0:
            raise DataError(f"matrices must have shape (T, n, n), got {stack.shape}")
        for index, matrix in enumerate(stack):  # T checks at construction, not per step
            check_transition_matrix(matrix, f"matrix {index} of the sequence")
        stack.flags.writeable = False
        object.__setattr__(self, "transitions", stack)

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        matrix = self.transitions[(step.index - 1) % len(self.transitions)]
        _check_chain_size(matrix.shape[0], state.shape[-1])
        moved = apply_transition(state, matrix)
        return _with_uniform_leak(moved, state, problem, self.leakage.at(step))


def _family(instance, attribute, value) -> None:
    if value not in FAMILIES:
        raise ConfigError(
            f"unknown family {value!r}{did_you_mean(value, FAMILIES)}; choose one of "
            f"{', '.join(map(repr, FAMILIES))}"
        )


def _positive_number(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{attribute.name} must be a number > 0, got {value!r}")


def _positive_int(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an integer ≥ 1, got {value!r}")


def _optional_positive_vector(value):
    if value is None:
        return None
    array = np.array(value, dtype=np.float64)
    if array.ndim != 1 or not np.isfinite(array).all() or (array <= 0).any():
        raise ConfigError("stationary must be a list of positive numbers, one per state")
    array.flags.writeable = False
    return array


@attrs.frozen(kw_only=True, eq=False)
class RandomBlockKernel:
    """A fresh random block-diagonal kernel at every step and for every member (a random
    time-inhomogeneous chain per member), mixed with a random off-block kernel at leakage ε.

    ``family``:

    * ``"stochastic"``: rows Dirichlet(``concentration``) inside the block; row-stochastic
      only, so π_j is generally *not* invariant (Theorem 1's assumption fails);
    * ``"doubly-stochastic"``: Birkhoff mixtures of ``permutations`` random within-block
      permutations; the uniform distribution is invariant;
    * ``"stationary"``: Metropolis kernels whose symmetric proposal is a symmetrised
      doubly stochastic mixture; π_j is invariant, with π the ``stationary`` vector if
      given (normalised within blocks), else the partition's reference.

    Block-preserving exactly when the leakage is 0 at every step.

    Parameters
    ----------
    family
        ``stochastic``, ``doubly-stochastic`` or ``stationary`` (π-invariant Metropolis).
        Units: none (a choice).
    concentration
        Dirichlet concentration of the random rows or weights. Units: dimensionless.
    permutations
        Number of within-block permutations mixed (doubly-stochastic family). Units:
        dimensionless.
    stationary
        The stationary distribution π (n positive numbers) of the ``stationary`` family;
        default: the partition's reference. Units: probability.
    leakage
        Fraction ε of every state's mass moved off its block per step, in [0, 1]. Units:
        probability per step.
    """

    family: str = attrs.field(validator=_family)
    concentration: float = attrs.field(default=1.0, validator=_positive_number)
    permutations: int = attrs.field(default=4, validator=_positive_int)
    stationary: np.ndarray | None = attrs.field(default=None, converter=_optional_positive_vector)
    leakage: Schedule = schedule_field(default=0.0, validator=_leakage_schedule)

    def __attrs_post_init__(self) -> None:
        if self.stationary is not None and self.family != "stationary":
            raise ConfigError(
                f"'stationary' applies only to family = \"stationary\", not {self.family!r}"
            )

    @property
    def block_preserving(self) -> bool:
        return self.leakage.extremes()[1] == 0

    def invariant(self, partition: Partition) -> np.ndarray | None:
        """The within-block distribution every drawn kernel keeps invariant, (n,), or None
        for the ``stochastic`` family (no common invariant distribution)."""
        from coarsekl_chains.partitions import normalise_within_blocks

        if self.family == "stochastic":
            return None
        if self.family == "doubly-stochastic":
            return uniform_reference(partition)
        if self.stationary is None:
            return reference_of(partition)
        inverse = _inverse(partition)
        if self.stationary.size != inverse.size:
            raise DataError(
                f"stationary has {self.stationary.size} values but the chain has "
                f"{inverse.size} states"
            )
        return normalise_within_blocks(self.stationary, inverse, partition.n_blocks)

    def matrices(self, partition: Partition, step: Step, rng: MemberRandom) -> np.ndarray:
        """The kernels P_ε of this step, ``(members, n, n)``, row-stochastic."""
        inverse = _inverse(partition)
        same_block = inverse[:, None] == inverse[None, :]
        if self.family == "stochastic":
            kernel = block_diagonal_stochastic(same_block, rng, self.concentration)
        else:
            kernel = doubly_stochastic_blocks(inverse, rng, self.permutations, self.concentration)
            if self.family == "stationary":
                symmetric = 0.5 * (kernel + kernel.swapaxes(-1, -2))
                kernel = metropolis_blocks(symmetric, self.invariant(partition))
        leakage = self.leakage.at(step)
        if leakage == 0:
            return kernel
        leak = off_block_stochastic(same_block, rng, self.concentration)
        return (1 - leakage) * kernel + leakage * leak

    def step(
        self, state: np.ndarray, problem: Problem, step: Step, rng: MemberRandom
    ) -> np.ndarray:
        return apply_transition(state, self.matrices(problem.partition, step, rng))


def _inverse(partition: Partition) -> np.ndarray:
    """Block index of every state, (n,), for any 1-D partition."""
    if len(partition.site_shape) != 1:
        raise ConfigError(
            'transition-matrix kernels need a 1-D chain partition (kind = "label-vector"), '
            f"got sites of shape {tuple(partition.site_shape)}"
        )
    inverse = getattr(partition, "inverse", None)
    if inverse is None:
        inverse = partition.broadcast(np.arange(partition.n_blocks))
    return np.asarray(inverse)
