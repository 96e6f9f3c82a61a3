"""Specification of the noise schedules: the published formulas, their inverses, the
log-SNR, and the reverse time grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coarsekl.errors import ConfigError
from coarsekl_gmm.noise import (
    Cosine,
    LinearBeta,
    alpha_bar_of_log_snr,
    log_snr,
    schedule_by_name,
)

SCHEDULES = [LinearBeta(), Cosine(), LinearBeta(beta_min=8.0, beta_max=8.0), Cosine(s=0.1)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_alpha_bar_starts_at_the_data_and_decreases(schedule):
    t = np.linspace(0.0, schedule.t_max, 1001)
    alpha_bar = schedule.alpha_bar(t)
    assert alpha_bar[0] == pytest.approx(1.0, abs=1e-15)
    assert np.all(np.diff(alpha_bar) < 0)
    assert 0 < alpha_bar[-1] < 1e-3


def test_linear_beta_is_the_limit_of_ho_et_al_discrete_schedule():
    """Ho et al. 2020: β_i from 1e-4 to 0.02 over T = 1000 steps, ᾱ_n = Π_{i≤n} (1 − β_i);
    step n is time n/T. The continuous log ᾱ agrees within 1 %."""
    betas = np.linspace(1e-4, 0.02, 1000)
    discrete = np.cumsum(np.log1p(-betas))
    continuous = np.log(LinearBeta().alpha_bar(np.arange(1, 1001) / 1000))
    np.testing.assert_allclose(continuous[99:], discrete[99:], rtol=0.01)
    assert LinearBeta().alpha_bar(1.0) == pytest.approx(math.exp(-10.05))


def test_cosine_is_nichol_and_dhariwal_equation_17():
    s = 0.008

    def f(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    for t in [0.0, 0.25, 0.5, 0.9]:
        assert Cosine().alpha_bar(t) == pytest.approx(f(t) / f(0), rel=1e-14)
    assert Cosine().alpha_bar(Cosine().t_max) == pytest.approx(1e-5, rel=1e-9)
    assert Cosine().t_max == pytest.approx(0.998, abs=1e-3)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@given(t=st.floats(0.0, 0.99))
def test_time_of_inverts_alpha_bar(schedule, t):
    t = t * schedule.t_max
    assert schedule.time_of(schedule.alpha_bar(t)) == pytest.approx(t, abs=1e-9)


@given(alpha_bar=st.floats(1e-12, 1 - 1e-12))
def test_log_snr_is_half_the_log_odds_and_inverts(alpha_bar):
    lam = log_snr(alpha_bar)
    assert lam == pytest.approx(0.5 * math.log(alpha_bar / (1 - alpha_bar)), rel=1e-9, abs=1e-9)
    assert alpha_bar_of_log_snr(lam) == pytest.approx(alpha_bar, rel=1e-9)


def test_log_snr_of_the_data_is_infinite_without_warnings():
    assert log_snr(1.0) == np.inf
    assert alpha_bar_of_log_snr(np.inf) == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("spacing", ["time", "logsnr", "quadratic"])
def test_time_grids_decrease_from_t_max_to_t_min(schedule, spacing):
    grid = schedule.time_grid(20, t_min=2e-3, spacing=spacing)
    assert grid.shape == (21,)
    assert grid[0] == schedule.t_max and grid[-1] == 2e-3
    assert np.all(np.diff(grid) < 0)


def test_spacings_are_uniform_in_their_variable():
    schedule = LinearBeta()
    time = schedule.time_grid(10, t_max=0.8, t_min=0.01)
    np.testing.assert_allclose(np.diff(time), -0.079, rtol=1e-12)
    lam = log_snr(schedule.alpha_bar(schedule.time_grid(10, spacing="logsnr")))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam).mean(), rtol=1e-9)
    quadratic = schedule.time_grid(4, t_max=1.0, t_min=0.0 + 1e-3, spacing="quadratic")
    np.testing.assert_allclose(quadratic, 1e-3 + 0.999 * np.array([1, 9 / 16, 1 / 4, 1 / 16, 0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 5, "t_min": 0.0}, "t_min"),
        ({"steps": 5, "t_min": 0.5, "t_max": 0.4}, "t_min"),
        ({"steps": 5, "t_max": 1.5}, "t_max"),
        ({"steps": 5, "spacing": "logsrn"}, "did you mean 'logsnr'"),
    ],
)
def test_bad_grids_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LinearBeta().time_grid(**kwargs)


def test_cosine_grids_stop_where_alpha_bar_is_still_positive():
    with pytest.raises(ConfigError, match="t_max"):
        Cosine().time_grid(10, t_max=1.0)


def test_schedules_by_name():
    assert schedule_by_name("linear") == LinearBeta()
    assert schedule_by_name("cosine", s=0.01) == Cosine(s=0.01)
    with pytest.raises(ConfigError, match="did you mean 'cosine'.*known: linear, cosine"):
        schedule_by_name("cosin")
    with pytest.raises(ConfigError, match="beta_mn.*known: beta_min, beta_max"):
        schedule_by_name("linear", beta_mn=0.1)
    with pytest.raises(ConfigError, match="beta_max ≥ beta_min"):
        schedule_by_name("linear", beta_min=2.0, beta_max=1.0)
    with pytest.raises(ConfigError, match="beta_min must be > 0"):
        schedule_by_name("linear", beta_min=-1.0)
    with pytest.raises(ConfigError, match="bad parameters"):
        schedule_by_name("cosine", s="abc")
