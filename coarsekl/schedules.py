"""Parameter schedules over the reverse steps.

A kernel or projector parameter is either a number (constant over the run) or a TOML table
naming a schedule::

    beta = 0.05
    delta = { schedule = "geometric", start = 0.05, stop = 0.005 }

Steps are numbered ``1 … total`` (step 0 is the initial state; it uses the value of step 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from coarsekl.errors import ConfigError

__all__ = [
    "Constant",
    "Geometric",
    "Linear",
    "Schedule",
    "Step",
    "as_schedule",
    "non_negative_schedule",
    "schedule_field",
]


@attrs.frozen
class Step:
    """Where a reverse step stands: ``index`` in ``1 … total``; 0 is the initial state.

    ``tolerance`` is the projector's δ in force at this step (``None`` without a projector).
    """

    index: int
    total: int
    tolerance: float | None = None

    @property
    def fraction(self) -> float:
        """Progress ``(index − 1) / (total − 1)`` in [0, 1]; 0 when there is one step."""
        if self.total <= 1:
            return 0.0
        return min(max((self.index - 1) / (self.total - 1), 0.0), 1.0)


def _finite_number(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{attribute.name} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{attribute.name} must be finite, got {value!r}")


@attrs.frozen
class Constant:
    """The same value at every step."""

    value: float = attrs.field(validator=_finite_number)

    def at(self, step: Step) -> float:
        return float(self.value)

    def extremes(self) -> tuple[float, float]:
        return float(self.value), float(self.value)

    def to_config(self) -> float:
        return self.value


@attrs.frozen(kw_only=True)
class Linear:
    """``start + (stop − start) · (k − 1)/(T − 1)`` at step k of T.

    Examples
    --------
    >>> beta = Linear(start=0.02, stop=0.1)
    >>> [round(beta.at(Step(index=k, total=5)), 6) for k in (1, 3, 5)]
    [0.02, 0.06, 0.1]
    >>> beta.extremes()
    (0.02, 0.1)
    """

    start: float = attrs.field(validator=_finite_number)
    stop: float = attrs.field(validator=_finite_number)

    def at(self, step: Step) -> float:
        return float(self.start + (self.stop - self.start) * step.fraction)

    def extremes(self) -> tuple[float, float]:
        """Smallest and largest value over the run (schedules are monotone)."""
        return min(self.start, self.stop), max(self.start, self.stop)

    def to_config(self) -> dict[str, Any]:
        return {"schedule": "linear", "start": self.start, "stop": self.stop}


@attrs.frozen(kw_only=True)
class Geometric:
    """``start · (stop / start)^((k − 1)/(T − 1))`` at step k of T; start and stop > 0."""

    start: float = attrs.field(validator=_finite_number)
    stop: float = attrs.field(validator=_finite_number)

    def __attrs_post_init__(self) -> None:
        if self.start <= 0 or self.stop <= 0:
            raise ConfigError(
                f"a geometric schedule needs start > 0 and stop > 0, got start={self.start}, "
                f"stop={self.stop}; use a linear schedule to reach 0"
            )

    def at(self, step: Step) -> float:
        return float(self.start * (self.stop / self.start) ** step.fraction)

    def extremes(self) -> tuple[float, float]:
        return min(self.start, self.stop), max(self.start, self.stop)

    def to_config(self) -> dict[str, Any]:
        return {"schedule": "geometric", "start": self.start, "stop": self.stop}


Schedule = Constant | Linear | Geometric
_SCHEDULES = {"constant": Constant, "linear": Linear, "geometric": Geometric}


def as_schedule(value: Any, name: str = "parameter") -> Schedule:
    """Turn a config value (number, table or schedule) into a schedule.

    Examples
    --------
    >>> as_schedule(0.5)
    Constant(value=0.5)
    >>> delta = as_schedule({"schedule": "geometric", "start": 0.05, "stop": 0.005})
    >>> round(delta.at(Step(index=2, total=3)), 6)
    0.015811
    """
    if isinstance(value, Constant | Linear | Geometric):
        return value
    if not isinstance(value, Mapping) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ConfigError(
            f"{name} must be a number or a schedule table such as "
            f'{{ schedule = "linear", start = …, stop = … }}, got {value!r}'
        )
    if isinstance(value, Mapping):
        table = dict(value)
        kind = table.pop("schedule", None)
        if kind not in _SCHEDULES:
            raise ConfigError(
                f'unknown schedule {kind!r}; write {{ schedule = "linear", start = …, '
                f"stop = … }} with one of {sorted(_SCHEDULES)}"
            )
        if kind == "constant":
            if set(table) != {"value"}:
                raise ConfigError("a constant schedule takes exactly one key, 'value'")
            return Constant(table["value"])
        if set(table) != {"start", "stop"}:
            raise ConfigError(
                f"a {kind} schedule takes the keys 'start' and 'stop', got {sorted(table)}"
            )
        return _SCHEDULES[kind](start=table["start"], stop=table["stop"])
    return Constant(value)


def schedule_field(*, default: Any = attrs.NOTHING, validator=None) -> Any:
    """An attrs field holding a schedule; config errors name the field."""
    converter = attrs.Converter(
        lambda value, field: as_schedule(value, field.name), takes_field=True
    )
    return attrs.field(default=default, converter=converter, validator=validator)


def non_negative_schedule(instance, attribute, value: Schedule) -> None:
    """attrs validator: the schedule never goes below 0 (checked at both ends)."""
    if value.extremes()[0] < 0:
        raise ConfigError(f"{attribute.name} must be ≥ 0 at every step, got {value.to_config()}")
