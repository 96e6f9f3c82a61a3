"""The vectorisable exp and log of coarsekl.fastmath against numpy, in units of the last
place (ulp), over their whole range and on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")
fastmath = pytest.importorskip("coarsekl.fastmath")


@numba.njit(error_model="numpy")
def exp_all(values):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = fastmath.exp(values[i])
    return out


@numba.njit(error_model="numpy")
def log_all(values):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = fastmath.log(values[i])
    return out


def ulps(actual, expected):
    return np.abs(actual - expected) / np.spacing(np.abs(expected))


def test_exp_is_within_two_ulp_of_numpy_from_minus_708_to_709():
    values = np.concatenate([np.linspace(-708, 709, 200_001), [0.0, -0.0, 1e-300, -1e-300]])
    assert ulps(exp_all(values), np.exp(values)).max() <= 2


def test_log_is_within_two_ulp_of_numpy_over_every_binade():
    rng = np.random.default_rng(0)
    exponents = rng.uniform(-1021, 1023, 200_000)
    values = np.concatenate(
        [2.0**exponents, [np.finfo(float).tiny, np.finfo(float).max, 1.0, 2.0, 0.5, np.sqrt(2)]]
    )
    expected = np.log(values)
    error = np.abs(log_all(values) - expected)
    # Relative to the result where it is large; near x = 1 the log is near 0, so compare
    # with the spacing of the argument's distance from 1 instead.
    scale = np.maximum(np.spacing(np.abs(expected)), np.spacing(1.0) * np.abs(values - 1))
    assert (error / scale).max() <= 2


def test_exp_floors_very_negative_arguments_at_a_normal_number():
    result = exp_all(np.array([-750.0, -1e6]))
    assert np.all(result > 0)
    assert np.all(result == exp_all(np.array([-708.0]))[0])


@settings(max_examples=200, deadline=None)
@given(st.floats(-708, 709))
def test_exp_matches_numpy_on_random_arguments(x):
    assert ulps(exp_all(np.array([x])), np.exp(np.array([x])))[0] <= 2


@settings(max_examples=200, deadline=None)
@given(st.floats(np.finfo(float).tiny, np.finfo(float).max))
def test_log_matches_numpy_on_random_arguments(x):
    result = log_all(np.array([x]))[0]
    assert abs(result - np.log(x)) <= 2 * max(
        np.spacing(abs(np.log(x))), np.spacing(1.0) * abs(x - 1)
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_floored_is_the_floored_log_with_the_same_bits_wherever_a_value_stands(dtype):
    """The logs V takes and the kernel reads must be the kernel's own to the bit: a value
    gives the same log at any place of any array (vectorised body or scalar remainder)."""
    rng = np.random.default_rng(3)
    values = (rng.random(1037) * 1e-3).astype(dtype)
    values[::97] = 0.0
    floor = 1e-12
    logs = np.empty(values.size)
    fastmath.log_floored(values, floor, logs)
    expected = np.log(np.maximum(values.astype(np.float64), floor))
    assert ulps(logs, expected).max() <= 2
    for start in (0, 1, 5, 500, 1030):
        piece = np.empty(values.size - start)
        fastmath.log_floored(values[start:], floor, piece)
        np.testing.assert_array_equal(piece, logs[start:])
    one = np.empty(1)
    for i in (0, 7, 97, 1036):
        fastmath.log_floored(values[i : i + 1], floor, one)
        assert one[0] == logs[i]
