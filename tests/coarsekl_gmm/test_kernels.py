"""Specification of the diffusion-sampler kernels on particle ensembles (THEORY §7):
DDPM, DDIM and DPM-Solver++(2M) with the exact noise predictor of the data mixture, plus
model error ε̂ = ε* + e and classifier guidance ε̂ −= γ √(1 − ᾱ) ∇ log q_ᾱ(c | x).

Each kernel step is checked against the pure update functions of ``samplers`` fed with
the exact predictor (and the same random numbers); the signal-level grid against the
noise schedules; guidance against finite differences of the exact log posterior; model
error against its closed-form effect on one DDIM step and its direction over a run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coarsekl.ensemble import Ensemble
from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.quantities import BlockMass
from coarsekl_gmm.data import NoiseInitial, RingData
from coarsekl_gmm.kernels import DDIM, DDPM, PREVIOUS_X0, DPMSolverPP2M, signal_levels
from coarsekl_gmm.mixture import SmoothFieldError
from coarsekl_gmm.noise import Cosine, LinearBeta, log_snr
from coarsekl_gmm.partitions import ClassPartition
from coarsekl_gmm.samplers import ddim_step, ddpm_step, dpmpp_2m_step

PARTICLES = 4000
RING = RingData(components=4, radius=4.0, std=0.5, weights=[4, 3, 2, 1]).distribution(None)
PROBLEM = Problem(
    ClassPartition(shape=(PARTICLES,), data=RING, reference_samples=1000), BlockMass(), RING
)
KERNELS = {"ddpm": DDPM, "ddim": DDIM, "dpmpp-2m": DPMSolverPP2M}


def kernel_rng(seed: int = 0, members: int = 1) -> MemberRandom:
    return MemberRandom.from_seed(seed, Purpose.KERNEL, members)


def start(seed: int = 0, members: int = 1) -> Ensemble:
    """N(0, I)-ish particles at the cosine schedule's first level ᾱ(t_max)."""
    rng = MemberRandom.from_seed(seed, Purpose.INITIAL, members)
    return NoiseInitial(schedule="cosine").states(PROBLEM, rng)


def run(kernel, steps: int = 10, seed: int = 0) -> Ensemble:
    """All ``steps`` reverse steps of ``kernel`` from :func:`start` (common noise per seed)."""
    state, rng = start(seed), kernel_rng(seed)
    for index in range(1, steps + 1):
        state = kernel.step(state, PROBLEM, Step(index, steps), rng)
    return state


def predict(kernel, x: np.ndarray, level: float, state_level: float | None = None) -> np.ndarray:
    """The kernel's ε̂ at positions x (n, d) and level ᾱ, the particles held by an ensemble
    at ``state_level`` (default ᾱ itself, where the kernel reuses the ensemble's score)."""
    weights = np.full((1, x.shape[0]), 1.0 / x.shape[0])
    state_level = level if state_level is None else state_level
    state = Ensemble(x[None], weights, alpha_bar=state_level)
    return kernel.noise_prediction(state, level, PROBLEM)[0]


def class_masses(state: Ensemble) -> np.ndarray:
    return np.bincount(RING.classify(state.positions[0]), minlength=4) / state.particles


# ---------------------------------------------------------------------------------------
# The grid of signal levels
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "schedule"), [("cosine", Cosine()), ("linear", LinearBeta())])
@pytest.mark.parametrize("spacing", ["time", "logsnr", "quadratic"])
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_signal_levels_rise_from_the_schedules_first_level_to_exactly_one(
    name, schedule, spacing, steps
):
    levels = signal_levels(steps, name, None, 1e-3, spacing)
    assert levels.shape == (steps + 1,)
    assert levels[0] == pytest.approx(float(schedule.alpha_bar(schedule.t_max)), rel=1e-12)
    assert levels[-1] == 1.0
    assert np.all(np.diff(levels) > 0)
    if steps > 1:  # steps − 1 steps reach t_min, the last one the data
        assert levels[-2] == pytest.approx(float(schedule.alpha_bar(1e-3)), rel=1e-12)


def test_signal_levels_start_at_a_given_t_max():
    levels = signal_levels(4, "cosine", 0.5, 1e-2, "time")
    expected = Cosine().alpha_bar(np.linspace(0.5, 1e-2, 4))
    np.testing.assert_allclose(levels, [*expected, 1.0], rtol=1e-12)
    assert signal_levels(1, "linear", 0.3, 1e-3, "time")[0] == pytest.approx(
        float(LinearBeta().alpha_bar(0.3))
    )


@pytest.mark.parametrize("kind", KERNELS)
def test_a_kernel_walks_the_levels_and_ends_on_the_data(kind):
    kernel = KERNELS[kind]()
    levels = signal_levels(5, "cosine", None, 1e-3, "time")
    state, rng = start(), kernel_rng()
    assert state.alpha_bar == levels[0]
    for index in range(1, 6):
        assert kernel.levels(Step(index, 5)) == (levels[index - 1], levels[index])
        state = kernel.step(state, PROBLEM, Step(index, 5), rng)
        assert state.alpha_bar == levels[index]
    assert state.alpha_bar == 1.0 and np.isfinite(state.positions).all()


# ---------------------------------------------------------------------------------------
# Each step is the published update with the exact predictor
# ---------------------------------------------------------------------------------------


def test_ddim_without_noise_is_deterministic_and_is_the_ddim_update():
    x = np.array([[[0.3, -1.2]]])  # one member, one particle
    kernel = DDIM()
    for index in range(1, 7):
        now, after = kernel.levels(Step(index, 6))
        state = Ensemble(x, np.ones((1, 1)), alpha_bar=now)
        one = kernel.step(state, PROBLEM, Step(index, 6), kernel_rng(1))
        two = kernel.step(state, PROBLEM, Step(index, 6), kernel_rng(2))
        np.testing.assert_array_equal(one.positions, two.positions)
        expected = ddim_step(x, RING.noise_prediction(x, now), now, after)
        np.testing.assert_allclose(one.positions, expected, rtol=1e-13, atol=1e-13)
        x = one.positions


@pytest.mark.parametrize("kind", ["ddpm", "ddim-eta"])
def test_stochastic_steps_are_the_published_updates_with_the_kernels_noise(kind):
    kernel = DDPM() if kind == "ddpm" else DDIM(eta=0.5)
    state = start(3, members=2)
    state = state.replace(positions=state.positions[:, :50], weights=state.weights[:, :50] * 80)
    step = Step(2, 5)
    now, after = kernel.levels(step)
    state = state.replace(alpha_bar=now)
    rng = kernel_rng(4, members=2)
    z = rng.copy().normal((50, 2))  # the numbers the kernel will draw
    new = kernel.step(state, PROBLEM, step, rng).positions
    x = state.positions
    prediction = RING.noise_prediction(x, now)
    if kind == "ddpm":
        expected = ddpm_step(x, prediction, now, after, z)
    else:
        expected = ddim_step(x, prediction, now, after, eta=0.5, z=z)
    np.testing.assert_allclose(new, expected, rtol=1e-12, atol=1e-12)


def test_the_last_ddpm_step_is_the_x0_prediction_and_draws_nothing():
    kernel = DDPM()
    step = Step(4, 4)
    now, after = kernel.levels(step)
    assert after == 1.0
    state = start().replace(alpha_bar=now)
    rng = kernel_rng(5)
    before = rng.generators[0].bit_generator.state
    new = kernel.step(state, PROBLEM, step, rng)
    assert rng.generators[0].bit_generator.state == before
    np.testing.assert_allclose(new.positions, RING.x0_prediction(state.positions, now), rtol=1e-12)


def test_dpm_solver_carries_the_previous_x0_and_takes_second_order_steps():
    kernel = DPMSolverPP2M()
    steps = 5
    state = start(6)
    state = state.replace(carried={"tag": np.ones(state.shape)})  # other memories survive
    rng = kernel_rng(6)
    x0_previous, h_previous = None, None
    for index in range(1, steps + 1):
        now, after = kernel.levels(Step(index, steps))
        x = state.positions
        x0 = RING.x0_prediction(x, now)
        expected = dpmpp_2m_step(x, x0, x0_previous, now, after, h_previous)
        state = kernel.step(state, PROBLEM, Step(index, steps), rng)
        np.testing.assert_allclose(state.positions, expected.x, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(state.carried[PREVIOUS_X0], x0, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(state.carried["tag"], 1.0)
        x0_previous, h_previous = x0, float(log_snr(after) - log_snr(now))


def test_dpm_solver_ignores_a_stale_memory_at_its_first_step():
    kernel = DPMSolverPP2M()
    state = start(7)
    stale = state.replace(carried={PREVIOUS_X0: np.full(state.positions.shape, 9.0)})
    fresh = kernel.step(state, PROBLEM, Step(1, 5), kernel_rng())
    again = kernel.step(stale, PROBLEM, Step(1, 5), kernel_rng())
    np.testing.assert_array_equal(fresh.positions, again.positions)


@pytest.mark.parametrize("kind", KERNELS)
def test_single_precision_positions_stay_single(kind):
    state = start(8)
    state = state.replace(positions=state.positions.astype(np.float32))
    new = KERNELS[kind]().step(state, PROBLEM, Step(1, 5), kernel_rng())
    assert new.positions.dtype == np.float32 and new.weights.dtype == np.float64
    assert all(array.dtype == np.float32 for array in new.carried.values())


@pytest.mark.parametrize("kind", KERNELS)
def test_kernels_refuse_an_image_state(kind):
    with pytest.raises(ConfigError, match="moves particle ensembles"):
        KERNELS[kind]().step(np.full((8, 8), 1 / 64), PROBLEM, Step(1, 5), kernel_rng())


# ---------------------------------------------------------------------------------------
# Classifier guidance
# ---------------------------------------------------------------------------------------


def test_guidance_adds_the_gradient_of_the_exact_log_posterior():
    """ε̂ − ε* = −γ √(1 − ᾱ) ∇_x log q_ᾱ(c | x), the gradient by central differences."""
    x = np.random.default_rng(9).normal(0.0, 2.0, (20, 2))
    level, gamma, c, h = 0.4, 1.5, 2, 1e-5
    kernel = DDIM(guidance=gamma, guidance_class=c)
    difference = predict(kernel, x, level) - RING.noise_prediction(x, level)
    gradient = np.empty_like(x)
    for axis in range(2):
        shift = np.zeros(2)
        shift[axis] = h
        up = np.log(RING.posteriors(x + shift, level)[:, c])
        down = np.log(RING.posteriors(x - shift, level)[:, c])
        gradient[:, axis] = (up - down) / (2 * h)
    np.testing.assert_allclose(difference, -gamma * math.sqrt(1 - level) * gradient, atol=1e-6)
    # the same whether or not the ensemble's particles sit at ᾱ (cached exact score)
    np.testing.assert_allclose(
        predict(kernel, x, level, 0.9), predict(kernel, x, level), rtol=1e-12
    )


@pytest.mark.parametrize("kind", KERNELS)
def test_guidance_raises_the_final_mass_of_the_guided_class(kind):
    masses = [class_masses(run(KERNELS[kind](guidance=g, guidance_class=3))) for g in (0, 0.1, 0.4)]
    guided = [m[3] for m in masses]
    assert guided[0] < guided[1] - 0.02 and guided[1] < guided[2] - 0.1
    assert abs(guided[0] - RING.weights[3]) < 0.03  # unguided: the data's 0.1
    # strong guidance takes everything to the class
    assert class_masses(run(KERNELS[kind](guidance=3.0, guidance_class=3)))[3] > 0.99


@pytest.mark.parametrize("guidance_class", [4, -1])
def test_guidance_toward_a_missing_class_is_a_config_error(guidance_class):
    kernel = DDIM(guidance=1.0, guidance_class=guidance_class)
    with pytest.raises(ConfigError, match=r"guidance_class must name a component 0 … 3"):
        kernel.step(start(), PROBLEM, Step(1, 5), kernel_rng())


# ---------------------------------------------------------------------------------------
# Model error
# ---------------------------------------------------------------------------------------


def test_a_bias_moves_one_ddim_step_by_its_closed_form_against_the_bias():
    """ε̂ = ε* + b changes x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s) ε̂ by
    (√(1 − ᾱ_s) − √ᾱ_s √(1 − ᾱ_t)/√ᾱ_t) b = √(1 − ᾱ_s)(1 − e^{λ_s − λ_t}) b, a negative
    multiple of b (ᾱ_s > ᾱ_t): the step moves against the bias."""
    bias = np.array([0.05, -0.02])
    step = Step(3, 8)
    exact, biased = DDIM(), DDIM(model_error={"kind": "bias", "vector": bias.tolist()})
    now, after = exact.levels(step)
    state = start(10).replace(alpha_bar=now)
    shift = (
        biased.step(state, PROBLEM, step, kernel_rng()).positions
        - exact.step(state, PROBLEM, step, kernel_rng()).positions
    )
    coefficient = math.sqrt(1 - after) - math.sqrt(after) * math.sqrt(1 - now) / math.sqrt(now)
    assert coefficient < 0
    np.testing.assert_allclose(shift, np.broadcast_to(coefficient * bias, shift.shape), atol=1e-12)


@pytest.mark.parametrize("kind", KERNELS)
@pytest.mark.parametrize("bias", [[0.05, 0.0], [0.0, 0.05], [-0.03, 0.03]])
def test_a_bias_shifts_the_samples_against_it(kind, bias):
    exact = run(KERNELS[kind]())
    biased = run(KERNELS[kind](model_error={"kind": "bias", "vector": bias}))
    shift = biased.positions.mean(axis=(0, 1)) - exact.positions.mean(axis=(0, 1))
    cosine = shift @ np.asarray(bias) / (np.linalg.norm(shift) * np.linalg.norm(bias))
    assert cosine < -0.8


def test_a_weights_error_is_the_predictor_of_the_wrong_mixture():
    x = np.random.default_rng(11).normal(0.0, 3.0, (30, 2))
    kernel = DDIM(model_error={"kind": "weights", "weights": [1, 1, 1, 5]})
    expected = RING.with_weights([1, 1, 1, 5]).noise_prediction(x, 0.3)
    np.testing.assert_allclose(predict(kernel, x, 0.3), expected, rtol=1e-12)
    # the wrong model generates too much of class 3
    leaky = class_masses(run(DDIM(model_error={"kind": "weights", "weights": [1, 1, 1, 5]})))
    assert leaky[3] > 0.4


def test_a_field_error_adds_the_smooth_random_field():
    x = np.random.default_rng(12).normal(0.0, 3.0, (30, 2))
    table = {"kind": "field", "amplitude": 0.2, "length_scale": 2.0, "seed": 3}
    kernel = DDPM(model_error=table)
    field = SmoothFieldError(amplitude=0.2, length_scale=2.0, seed=3).perturbation(x, 0.5)
    expected = RING.noise_prediction(x, 0.5) + field
    np.testing.assert_allclose(predict(kernel, x, 0.5), expected, rtol=1e-12)
    np.testing.assert_allclose(predict(kernel, x, 0.5, 0.2), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "table",
    [{"kind": "wobble"}, {"vector": [0.1, 0.0]}, [0.1, 0.0], "bias"],
)
def test_an_unknown_model_error_is_a_config_error_at_construction(table):
    with pytest.raises(ConfigError, match="model_error must be a table with kind"):
        DDIM(model_error=table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "bias", "amplitude": 0.1}, "model_error kind = 'bias'"),
        ({"kind": "bias", "vector": [0.1, 0.0, 0.0]}, "positions are 2-D"),
        ({"kind": "field", "amplitude": 0.1, "length_scale": 0.0}, "length_scale > 0"),
        ({"kind": "field", "length_scale": 1.0}, "model_error kind = 'field'"),
        ({"kind": "weights", "weights": [1, 1]}, "one weight per mixture component"),
        ({"kind": "weights", "vector": [1, 1]}, "model_error kind = 'weights'"),
    ],
)
def test_bad_model_error_parameters_are_config_errors(table, message):
    """Unknown or missing parameters fail when the kernel is built; values that need the
    data (a vector of the wrong dimension) at the first step."""
    problem = Problem(PROBLEM.partition, BlockMass(), RING)  # a fresh memo
    with pytest.raises(ConfigError, match=message):
        DDIM(model_error=table).step(start(), problem, Step(1, 5), kernel_rng())


@pytest.mark.parametrize(
    "table",
    [
        {"kind": "bias", "amplitude": 0.1},
        {"kind": "field", "length_scale": 1.0},
        {"kind": "weights", "vector": [1, 1]},
    ],
)
def test_unknown_or_missing_model_error_parameters_fail_at_construction(table):
    with pytest.raises(ConfigError, match=f"model_error kind = '{table['kind']}' takes"):
        DDIM(model_error=table)


# ---------------------------------------------------------------------------------------
# Other parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schedule": "quadratic"}, "schedule must be one of"),
        ({"spacing": "log"}, "spacing must be one of"),
        ({"t_min": 0.0}, r"t_min must lie in \(0, 1\]"),
        ({"t_max": 1.5}, r"t_max must lie in \(0, 1\]"),
        ({"t_max": 0.2, "t_min": 0.3}, "t_min must be below t_max"),
        ({"guidance": -1.0}, "guidance must be a finite number ≥ 0"),
        ({"guidance": float("inf")}, "guidance must be a finite number ≥ 0"),
    ],
)
@pytest.mark.parametrize("kind", KERNELS)
def test_bad_kernel_parameters_are_config_errors(kind, changes, message):
    with pytest.raises(ConfigError, match=message):
        KERNELS[kind](**changes)


def test_kernels_are_not_block_preserving():
    assert not any(kernel.block_preserving for kernel in KERNELS.values())


def test_particles_that_start_at_another_noise_level_are_refused(ring_config):
    import coarsekl

    config = ring_config(kernel={"kind": "ddim", "t_max": 0.5})  # starts at ᾱ ≈ 0.53
    with pytest.raises(ConfigError, match="starts from ᾱ"):
        coarsekl.run(config)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"eta": 1.5}, "eta must lie in"),
        ({"eta": -0.1}, "eta must lie in"),
        ({"t_max": 1.0}, "largest usable time"),
        ({"guidance_class": True}, "guidance_class"),
    ],
)
def test_sampler_parameters_are_checked_when_built(params, message):
    with pytest.raises(ConfigError, match=message):
        DDIM(**params)
