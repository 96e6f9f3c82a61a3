"""The vectorisable exp and log of coarsekl.fastmath against numpy, in units of the last
place (ulp), over their whole range and on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")
fastmath = pytest.importorskip("coarsekl.fastmath")


def compiled(function, **flags):
    """A loop applying ``function`` to every value, compiled with the given flags."""

    @numba.njit(error_model="numpy", **flags)
    def apply(values):
        out = np.empty_like(values)
        for i in range(values.size):
            out[i] = function(values[i])
        return out

    return apply


exp_all = compiled(fastmath.exp)
log_all = compiled(fastmath.log)
# Inlined, the functions take their callers' flags: the kernels compile with these.
CALLER_FLAGS = [{"contract"}, {"reassoc", "contract"}]


def flags_id(flags):
    return "+".join(sorted(flags)) or "none"


def ulps(actual, expected):
    return np.abs(actual - expected) / np.spacing(np.abs(expected))


def exp_error(apply):
    """The largest error of ``apply``'s exp from -708 to 709 in ulp of numpy's."""
    values = np.concatenate([np.linspace(-708, 709, 200_001), [0.0, -0.0, 1e-300, -1e-300]])
    return ulps(apply(values), np.exp(values)).max()


def log_error(apply):
    """The largest error of ``apply``'s log over every binade in ulp of numpy's."""
    rng = np.random.default_rng(0)
    exponents = rng.uniform(-1021, 1023, 200_000)
    values = np.concatenate(
        [2.0**exponents, [np.finfo(float).tiny, np.finfo(float).max, 1.0, 2.0, 0.5, np.sqrt(2)]]
    )
    expected = np.log(values)
    error = np.abs(apply(values) - expected)
    # Relative to the result where it is large; near x = 1 the log is near 0, so compare
    # with the spacing of the argument's distance from 1 instead.
    scale = np.maximum(np.spacing(np.abs(expected)), np.spacing(1.0) * np.abs(values - 1))
    return (error / scale).max()


def test_exp_is_within_two_ulp_of_numpy_from_minus_708_to_709():
    assert exp_error(exp_all) <= 2


def test_log_is_within_two_ulp_of_numpy_over_every_binade():
    assert log_error(log_all) <= 2


@pytest.mark.parametrize("flags", CALLER_FLAGS, ids=flags_id)
def test_exp_and_log_keep_their_accuracy_with_the_callers_fast_math_flags(flags):
    assert exp_error(compiled(fastmath.exp, fastmath=flags)) <= 2
    assert log_error(compiled(fastmath.log, fastmath=flags)) <= 2


@pytest.mark.parametrize("flags", [set(), *CALLER_FLAGS], ids=flags_id)
def test_exp_of_zero_is_one_and_log_of_one_is_zero_exactly(flags):
    # 37 values: the vectorised body of the loop and its scalar remainder
    apply_exp = compiled(fastmath.exp, fastmath=flags)
    assert np.all(apply_exp(np.zeros(37)) == 1.0)
    assert np.all(apply_exp(np.full(37, -0.0)) == 1.0)
    assert np.all(compiled(fastmath.log, fastmath=flags)(np.ones(37)) == 0.0)


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


@pytest.mark.parametrize("flags", [set(), *CALLER_FLAGS], ids=flags_id)
def test_nan_and_infinite_arguments_give_nan_not_a_number_wherever_they_stand(flags):
    """NaN, also one with a payload (R's NA), gives NaN from exp and log, and so do +inf
    for exp and ±inf for log (exp(-inf) is the floor e^-708): the bit arithmetic must not
    turn them into numbers, in the vectorised body of a loop or in its scalar remainder."""
    r_na = np.array([0x7FF00000000007A2], dtype=np.int64).view(np.float64)[0]
    apply_exp = compiled(fastmath.exp, fastmath=flags)
    apply_log = compiled(fastmath.log, fastmath=flags)
    for position in (0, 13, 36):
        for special in (np.nan, r_na, np.inf):
            values = np.full(37, 0.5)
            values[position] = special
            assert np.isnan(apply_exp(values)[position])
        for special in (np.nan, r_na, np.inf, -np.inf):
            values = np.full(37, 0.5)
            values[position] = special
            assert np.isnan(apply_log(values)[position])
        values = np.full(37, 0.5)
        values[position] = -np.inf
        assert apply_exp(values)[position] == apply_exp(np.array([-708.0]))[0]
