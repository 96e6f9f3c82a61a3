"""The problem every component sees: partition, data and reference coarse quantity."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import numpy as np

from coarsekl.errors import DataError, InfeasibleTargetError
from coarsekl.interfaces import CoarseQuantity, Partition

__all__ = ["Problem", "check_image", "is_distribution"]

RECENT_STATES = 8  # arrays whose derived values each thread remembers (the current step's)


def is_distribution(data: Any) -> bool:
    """True when ``data`` is a distribution to sample particles from, not an image (an
    array of intensities): what makes a run's states particle ensembles."""
    return not isinstance(data, np.ndarray | list | tuple)


def check_image(
    image: np.ndarray, what: str, site_shape: tuple[int, ...] | None = None, values: bool = True
):
    """Return ``image`` as float64 after checking it can be a state: finite, ≥ 0, not all 0
    (``values=False``: only that it is a numeric array of the site shape)."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric, got an array of dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if site_shape is not None and array.shape[-len(site_shape) :] != tuple(site_shape):
        raise DataError(
            f"{what} has shape {array.shape}, expected (..., {', '.join(map(str, site_shape))})"
        )
    if not values:
        return array
    site_axes = tuple(range(-len(site_shape or array.shape), 0))
    totals = array.sum(axis=site_axes)
    if array.size and array.min() >= 0 and np.isfinite(totals).all() and (totals > 0).all():
        return array  # (two passes: min ≥ 0 rules out NaN and −inf, finite sums +inf)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise DataError(
            f"{what} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
            "clean the image or replace missing values before using it"
        )
    if (array < 0).any():
        raise DataError(
            f"{what} has negative values (min {array.min():.4g}); intensities must be ≥ 0 — "
            "shift or clip the image first"
        )
    if np.any(totals == 0):
        raise DataError(f"{what} is all zero; a state needs some positive intensity")
    return array


@attrs.frozen(eq=False)
class Problem:
    """Partition, data and reference masses: the target of coarse-grained control.

    ``data`` is the data image x in intensity units, shape ``site_shape``, or, for particle
    ensembles, the data distribution (an object with ``dim``, such as a Gaussian mixture);
    ``data_state`` is q_data = x / Σx (None for a distribution); ``reference_masses`` is
    w^ref (K,): by default w(q_data), or the partition's ``reference_masses(data)`` for a
    distribution, or the coarse quantity's own ``reference`` converted to masses.
    """

    partition: Partition
    quantity: CoarseQuantity
    data: Any
    data_total: float = attrs.field(init=False)
    data_state: np.ndarray | None = attrs.field(init=False)
    scale: np.ndarray = attrs.field(init=False)
    reference_masses: np.ndarray = attrs.field(init=False)
    _memo: dict = attrs.field(init=False, factory=dict, repr=False)
    _recent: threading.local = attrs.field(init=False, factory=threading.local, repr=False)

    def __attrs_post_init__(self) -> None:
        fixed = self.quantity.reference is not None  # then no default reference is needed
        if self.is_distribution:
            data, total, data_state = self.data, 1.0, None
            reference = None if fixed else self._distribution_reference()
        else:
            data = check_image(self.data, "the data image", self.partition.site_shape)
            if data.shape != tuple(self.partition.site_shape):
                raise DataError(
                    f"the data image has shape {data.shape} but the partition expects "
                    f"{tuple(self.partition.site_shape)}"
                )
            total = float(data.sum())
            data_state = data / total
            reference = None if fixed else self.partition.block_sums(data_state)
        scale = np.asarray(self.quantity.scale(self.partition, total), dtype=np.float64)
        if fixed:
            values = np.asarray(self.quantity.reference, dtype=np.float64)
            if values.shape != (self.partition.n_blocks,):
                raise DataError(
                    f"the coarse reference has {values.size} values, the partition has "
                    f"{self.partition.n_blocks} blocks; give one value per block"
                )
            if not np.isfinite(values).all() or (values < 0).any():
                raise DataError("the coarse reference values must be finite and ≥ 0")
            reference = values / scale
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "data_total", total)
        object.__setattr__(self, "data_state", data_state)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "reference_masses", reference)

    @property
    def is_distribution(self) -> bool:
        """True when the data is a distribution (particle ensembles), not an image."""
        return is_distribution(self.data)

    def _distribution_reference(self, alpha_bar: float = 1.0) -> np.ndarray:
        compute = getattr(self.partition, "reference_masses", None)
        if compute is None:
            raise DataError(
                f"the partition {type(self.partition).__name__} cuts images, but the data is a "
                f"distribution ({type(self.data).__name__}); use a partition of particles "
                '(one with reference_masses(data)), e.g. kind = "class"'
            )
        reference = np.asarray(compute(self.data, alpha_bar=alpha_bar), dtype=np.float64)
        if reference.shape != (self.partition.n_blocks,) or not np.isfinite(reference).all():
            raise DataError(
                f"the partition's reference masses have shape {reference.shape}, expected "
                f"({self.partition.n_blocks},) finite values"
            )
        return reference

    def block_masses(self, state: np.ndarray) -> np.ndarray:
        """w(p) = ``partition.block_sums(state)``, (..., K), read-only.

        Remembered for the state array (see :meth:`remember`): the runner, the projector
        and every metric ask for the masses of the same arrays within a step, and only the
        first asks pays.
        """
        masses = self.recall(state, "block_masses")
        if masses is None:
            masses = self.remember_block_masses(state, self.partition.block_sums(state))
        return masses

    def remember_block_masses(self, state: np.ndarray, masses: np.ndarray) -> np.ndarray:
        """Record ``masses`` as the block masses of ``state`` (known without summing, e.g.
        one scheme's slice of a batch whose masses are known); returns them read-only."""
        masses = masses.view()
        masses.flags.writeable = False
        return self.remember(state, "block_masses", masses)

    def remember(self, state: Any, name: str, value: Any) -> Any:
        """Keep ``value``, a quantity derived from the very array ``state``, for
        :meth:`recall` by the plugins that see the same array later; returns ``value``.

        In use: ``"block_masses"`` (w(p), (..., K), see :meth:`block_masses`);
        ``"summary"`` ((block masses (..., K) in float64, number of negative values), taken
        by the plugin that made the state in the same pass: the runner checks the state
        with it instead of another pass); ``"log"`` (log max(p, tiny) in float64, the
        state's shape: the metric V keeps it for small float64 states, and the
        geometric-mean kernel of the next step reads it instead of taking the log again);
        ``"mean_squared_error"`` (the metric mse of the state, (...), which V sums in its
        pass over the state, and mse then reads).
        Values are kept per thread for the last few arrays, and only while the array
        lives. Plugins never change a state in place (but a projector asked to project in
        place, which then forgets the state first); the runner, which writes projected
        schemes into the kernel's output, forgets (:meth:`forget`) that array first.
        """
        entries = self._recent_states()
        key = id(state)
        entry = entries.get(key)
        if entry is not None and entry[0]() is state:
            entry[1][name] = value
            return value
        if len(entries) >= RECENT_STATES:
            entries.popitem(last=False)  # the oldest

        def gone(reference, entries=entries, key=key) -> None:
            # The array is gone: its values go at once (a state's logs are as large as
            # the state), unless a newer array with the same id took its place.
            entry = entries.get(key)
            if entry is not None and entry[0] is reference:
                entries.pop(key, None)

        entries[key] = (weakref.ref(state, gone), {name: value})
        return value

    def recall(self, state: Any, name: str) -> Any:
        """The value remembered (:meth:`remember`) as ``name`` for the array ``state``, or None."""
        try:  # (asked several times a step: no call to _recent_states)
            entry = self._recent.entries.get(id(state))
        except AttributeError:  # nothing remembered in this thread yet
            return None
        if entry is not None and entry[0]() is state:
            return entry[1].get(name)
        return None

    def forget(self, state: Any) -> None:
        """Drop every value remembered for ``state`` (its contents are about to change)."""
        try:
            entries = self._recent.entries
        except AttributeError:
            return
        entry = entries.get(id(state))
        if entry is not None and entry[0]() is state:
            entries.pop(id(state), None)

    def _recent_states(self) -> OrderedDict[int, tuple[weakref.ref, dict[str, Any]]]:
        """This thread's ``id(array): (weak reference to it, {name: value})``, oldest first
        (an entry leaves when its array is gone: the weak reference's callback)."""
        try:
            return self._recent.entries
        except AttributeError:
            self._recent.entries = OrderedDict()
            return self._recent.entries

    def member_states(self, states: np.ndarray, members: int, what: str) -> np.ndarray:
        """``states`` as ``(members, *site_shape)``: one state for every member (repeated)
        or one per member; anything else is a DataError naming ``what``."""
        shape = tuple(self.partition.site_shape)
        if states.shape == shape:
            return np.broadcast_to(states, (members, *shape)).copy()
        if states.shape == (members, *shape):
            return states
        raise DataError(
            f"{what} has shape {states.shape}; expected {shape} or "
            f"({members}, {', '.join(map(str, shape))})"
        )

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value derived from the problem, computed on first use and kept (for example
        ``log q_data`` for a kernel): the problem never changes during a run."""
        try:
            return self._memo[key]
        except KeyError:
            return self._memo.setdefault(key, compute())

    @property
    def reference_values(self) -> np.ndarray:
        """The reference in the coarse quantity's units, shape (K,)."""
        return self.reference_masses * self.scale

    @property
    def reference_is_fixed(self) -> bool:
        """True when :meth:`reference_for` is ``reference_masses`` for every state (always,
        except for particle ensembles whose target moves with the noise level)."""
        return not self.is_distribution or self.quantity.reference is not None

    def reference_for(self, state: Any = None) -> np.ndarray:
        """w^ref for ``state``, (K,): ``reference_masses``, except for a particle ensemble at
        signal level ᾱ < 1 whose partition knows the block masses of the exact noised data
        q_ᾱ (``partition.reference_masses(data, alpha_bar=ᾱ)``): the target moves with the
        noise level and reaches the data's at ᾱ = 1. A coarse ``reference`` given in the
        config is fixed."""
        level = getattr(state, "alpha_bar", 1.0)
        if level == 1.0 or not self.is_distribution or self.quantity.reference is not None:
            return self.reference_masses
        return self.memo(
            ("reference", level), lambda: self._distribution_reference(alpha_bar=level)
        )

    def bounds(self, delta: float, state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Mass bounds of A_δ: a_j = max(0, w^ref_j − δ/s_j), b_j = min(1, w^ref_j + δ/s_j).

        δ is in the coarse quantity's units (s_j its scale); w^ref is
        ``reference_for(state)``. Raises InfeasibleTargetError when Σa > 1 or Σb < 1 (then
        no state meets the bounds).
        """
        key = ("bounds", float(delta), getattr(state, "alpha_bar", 1.0))
        try:
            return self._memo[key]  # (asked for every step: the look-up alone)
        except KeyError:
            return self.memo(key, lambda: self._bounds(delta, self.reference_for(state)))

    def _bounds(self, delta: float, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(delta) or delta < 0:
            raise InfeasibleTargetError(f"the tolerance δ must be finite and ≥ 0, got {delta}")
        half_width = delta / self.scale
        lower = np.maximum(0.0, reference - half_width)
        upper = np.minimum(1.0, reference + half_width)
        slack = 1e-12
        if lower.sum() > 1 + slack or upper.sum() < 1 - slack:
            total = reference.sum()
            raise InfeasibleTargetError(
                f"the admissible set is empty at δ = {delta:g}: the reference masses sum to "
                f"{total:.6g} and the bounds allow masses between {lower.sum():.6g} and "
                f"{upper.sum():.6g} in total, which excludes 1. Give reference values whose "
                f"masses sum to 1, or raise δ to at least about "
                f"{abs(1 - total) / np.sum(1 / self.scale):.3g}"
            )
        return lower, upper
