from __future__ import annotations

import pytest

from coarsekl.errors import ConfigError
from coarsekl.schedules import Constant, Geometric, Linear, Step, as_schedule


def test_constant_from_a_number():
    schedule = as_schedule(0.25)
    assert schedule == Constant(0.25)
    assert schedule.at(Step(7, 10)) == 0.25


def test_linear_runs_from_start_at_step_1_to_stop_at_the_last_step():
    schedule = as_schedule({"schedule": "linear", "start": 1.0, "stop": 0.0})
    assert isinstance(schedule, Linear)
    assert [schedule.at(Step(k, 5)) for k in range(1, 6)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert schedule.at(Step(0, 5)) == 1.0  # the initial state uses step 1's value


def test_geometric_interpolates_in_log_space():
    schedule = as_schedule({"schedule": "geometric", "start": 0.1, "stop": 0.001})
    assert isinstance(schedule, Geometric)
    assert schedule.at(Step(2, 3)) == pytest.approx(0.01)
    assert schedule.at(Step(1, 1)) == 0.1


def test_schedules_round_trip_through_their_config_form():
    for value in (
        0.3,
        {"schedule": "linear", "start": 0.0, "stop": 2.0},
        {"schedule": "geometric", "start": 1.0, "stop": 2.0},
    ):
        schedule = as_schedule(value)
        assert as_schedule(schedule.to_config()) == schedule


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"schedule": "cosine", "start": 1, "stop": 0}, "unknown schedule 'cosine'"),
        ({"schedule": "linear", "start": 1}, "takes the keys 'start' and 'stop'"),
        ({"schedule": "geometric", "start": 1, "stop": 0}, "start > 0 and stop > 0"),
        ({"schedule": "linear", "start": 1, "stop": float("nan")}, "must be finite"),
        ("fast", "must be a number or a schedule table"),
        (True, "must be a number or a schedule table"),
    ],
)
def test_bad_schedules_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        as_schedule(value)
