"""Specification of the paper's kernels (THEORY §3): geometric-mean step, unsharp mask and
block blur, checked against their formulas written out with scipy.ndimage, against the
block-preservation of Theorem 1, and for common random numbers across schemes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from coarsekl.errors import ConfigError
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.metrics import WithinBlockV
from coarsekl_blocks.partitions import BlockGrid, LabelMap
from coarsekl_blocks.quantities import BlockMass
from coarsekl_images.kernels import BlockBlur, GeometricMean, UnsharpMask

SHAPE, BLOCKS = (16, 12), (4, 3)  # blocks of 4 × 4 pixels
STEP = Step(1, 10)


def make_problem(data: np.ndarray | None = None) -> Problem:
    if data is None:
        data = np.random.default_rng(10).uniform(0.05, 1.0, SHAPE)
    return Problem(partition=BlockGrid(shape=SHAPE, blocks=BLOCKS), quantity=BlockMass(), data=data)


def random_states(batch=(2, 3), seed=0, zeros=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    states = rng.random((*batch, *SHAPE))
    if zeros:
        states[rng.random(states.shape) < 0.1] = 0.0
    return states / states.sum(axis=(-2, -1), keepdims=True)


def rng_for(members: int, seed: int = 1) -> MemberRandom:
    return MemberRandom.from_seed(seed, Purpose.KERNEL, members)


def normalised(values: np.ndarray) -> np.ndarray:
    return values / values.sum(axis=(-2, -1), keepdims=True)


def smooth_each(batch: np.ndarray, sigma: float) -> np.ndarray:
    """scipy's gaussian_filter on every image of a batch separately."""
    result = np.empty_like(batch)
    for index in np.ndindex(*batch.shape[:-2]):
        result[index] = gaussian_filter(batch[index], sigma, mode="reflect", truncate=4.0)
    return result


def blur_each_block(batch: np.ndarray, sigma: float) -> np.ndarray:
    """scipy's gaussian_filter on every block cut out of every image separately."""
    (rows, cols), (h, w) = BLOCKS, (SHAPE[0] // BLOCKS[0], SHAPE[1] // BLOCKS[1])
    result = np.empty_like(batch)
    for index in np.ndindex(*batch.shape[:-2]):
        for r in range(rows):
            for c in range(cols):
                window = (*index, slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w))
                result[window] = gaussian_filter(batch[window], sigma, mode="reflect", truncate=4.0)
    return result


# ---------------------------------------------------------------------------------------
# Contract shared by every kernel
# ---------------------------------------------------------------------------------------

KERNELS = [
    GeometricMean(beta=0.05, sigma=0.5),
    GeometricMean(beta={"schedule": "linear", "start": 0.1, "stop": 0.0}),
    UnsharpMask(alpha=0.8, sigma=1.0),
    UnsharpMask(alpha=3.0, sigma=1.5, noise=0.5),
    BlockBlur(sigma=0.7),
]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: type(k).__name__)
@pytest.mark.parametrize("batch", [(3,), (2, 3)])
def test_kernels_keep_shape_non_negativity_and_normalisation(numerics, kernel, batch):
    states = random_states(batch, zeros=True)
    result = kernel.step(states, make_problem(), STEP, rng_for(3))
    assert result.shape == states.shape
    assert np.all(np.isfinite(result)) and np.all(result >= 0)
    np.testing.assert_allclose(result.sum(axis=(-2, -1)), 1.0, rtol=0, atol=1e-12)


def test_only_the_block_blur_declares_itself_block_preserving():
    assert BlockBlur.block_preserving
    assert not GeometricMean.block_preserving and not UnsharpMask.block_preserving


def test_global_smoothing_leaks_mass_between_blocks():
    """G_σ over the whole grid moves mass across block borders (block-constant input)."""
    problem = make_problem()
    masses = np.random.default_rng(3).dirichlet(np.ones(12))
    state = problem.partition.broadcast(masses / 16)
    for kernel in (UnsharpMask(alpha=0.0, sigma=0.0, noise=0.0), GeometricMean(beta=0.0, sigma=0)):
        np.testing.assert_allclose(kernel.step(state, problem, STEP, rng_for(1)), state)
    for kernel in (GeometricMean(beta=0.0, sigma=1.0), UnsharpMask(alpha=1.0, sigma=1.0)):
        moved = problem.partition.block_sums(kernel.step(state, problem, STEP, rng_for(1)))
        assert np.abs(moved - masses).sum() > 1e-3


# ---------------------------------------------------------------------------------------
# Geometric-mean step
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "sigma"), [(0.05, 0.5), (0.3, 0.0), (0.7, 1.3)])
def test_geometric_mean_step_is_the_normalised_geometric_mean_then_smoothed(numerics, beta, sigma):
    data = np.random.default_rng(11).uniform(0.0, 1.0, SHAPE)
    data[0, :3] = 0.0  # zero data pixels are floored like zero state pixels
    problem = make_problem(data)
    states = random_states(zeros=True)
    floor = 1e-12
    mixed = normalised(
        np.maximum(states, floor) ** (1 - beta) * np.maximum(problem.data_state, floor) ** beta
    )
    expected = normalised(smooth_each(mixed, sigma)) if sigma > 0 else mixed
    result = GeometricMean(beta=beta, sigma=sigma).step(states, problem, STEP, rng_for(3))
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("sigma", [0.5, 1.3])  # five weights (the paper's σ), and nine
@pytest.mark.parametrize("band_rows", [256, 16])  # each image one band, or five
def test_geometric_mean_of_wide_images_is_the_formula(numerics, monkeypatch, sigma, band_rows):
    """The compiled kernel mixes a chunk of rows at a time (2048 values: 6 rows of 300
    here) and cuts images into bands; neither shows in the result, whether it takes the
    logs of the state or reads those the metric V took."""
    monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", band_rows)
    shape = (70, 300)
    rng = np.random.default_rng(12)
    problem = Problem(
        partition=BlockGrid(shape=shape, blocks=(7, 10)),
        quantity=BlockMass(),
        data=rng.uniform(0.0, 1.0, shape),
    )
    states = normalised(rng.random((1, 2, *shape)))
    beta, floor = 0.1, 1e-12
    mixed = normalised(
        np.maximum(states, floor) ** (1 - beta) * np.maximum(problem.data_state, floor) ** beta
    )
    expected = normalised(smooth_each(mixed, sigma))
    kernel = GeometricMean(beta=beta, sigma=sigma)
    taking_logs = kernel.step(states, problem, STEP, rng_for(2))
    np.testing.assert_allclose(taking_logs, expected, rtol=1e-12, atol=1e-300)
    WithinBlockV().compute(states, problem, STEP)
    np.testing.assert_array_equal(kernel.step(states, problem, STEP, rng_for(2)), taking_logs)


@pytest.mark.parametrize(
    "shape",
    # rows shorter than the stencil; images of fewer rows than it; 300 wide: chunks of 27
    # rows, the last one of 1 (fewer than the 4 rows kept for the next chunk) or of 10
    [(1, 1), (1, 7), (3, 2), (2, 9), (4, 4), (5, 3), (9, 5), (28, 300), (37, 300)],
)
@pytest.mark.parametrize("band_rows", [256, 2])  # each image one band, or bands of 2–3 rows
def test_geometric_mean_with_five_weights_is_the_formula_at_any_shape(
    numerics, monkeypatch, shape, band_rows
):
    """σ = 0.5 (five weights) has a path of its own in the compiled kernel, which smooths
    chunks of rows in long loops that run across the ends of the rows, and reflects at the
    image's borders by copying rows."""
    monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", band_rows)
    rng = np.random.default_rng(13)
    problem = Problem(
        partition=BlockGrid(shape=shape, blocks=(1, 1)),
        quantity=BlockMass(),
        data=rng.uniform(0.0, 1.0, shape),
    )
    states = normalised(rng.random((2, *shape)))
    beta, floor = 0.1, 1e-12
    mixed = normalised(
        np.maximum(states, floor) ** (1 - beta) * np.maximum(problem.data_state, floor) ** beta
    )
    result = GeometricMean(beta=beta, sigma=0.5).step(states, problem, STEP, rng_for(2))
    np.testing.assert_allclose(result, normalised(smooth_each(mixed, 0.5)), rtol=1e-12)


def test_geometric_mean_gives_the_same_numbers_on_any_number_of_threads(monkeypatch):
    """Bands of rows shared among threads: each pixel is computed the same way, and the
    bands (hence the rounding of each image's total) depend on the image size alone."""
    from coarsekl import numerics

    if not numerics.compiled_enabled() or not numerics._threadsafe_layer():
        pytest.skip("needs numba with a thread-safe threading layer")
    monkeypatch.setattr(numerics, "PIECE_VALUES", 8)
    monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", 5)  # 3 bands of 5, 5, 6 rows
    problem, states = make_problem(), random_states(batch=(1,))
    kernel = GeometricMean(beta=0.2, sigma=0.7)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("COARSEKL_THREADS", threads)
        results.append(kernel.step(states, problem, STEP, rng_for(1)))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0].sum(), 1.0, rtol=1e-14)


@pytest.mark.parametrize("band_rows", [256, 5])  # each image one band, or three
def test_geometric_mean_on_a_grid_remembers_the_block_sums_of_its_result(monkeypatch, band_rows):
    """The runner checks the kernel's output with the block sums the kernel took of it in
    its own pass: exactly the partition's (the same order of summation)."""
    from coarsekl import numerics

    if not numerics.compiled_enabled():
        pytest.skip("numba is not installed")
    monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", band_rows)
    problem, states = make_problem(), random_states(zeros=True)
    result = GeometricMean(beta=0.2, sigma=0.7).step(states, problem, STEP, rng_for(3))
    masses, negatives = problem.recall(result, "summary")
    expected, expected_negatives = problem.partition.summarise(result)
    np.testing.assert_array_equal(masses, expected)
    assert negatives == expected_negatives == 0


def test_geometric_mean_reads_the_logs_the_metric_v_took_instead_of_taking_them(numerics):
    problem, states = make_problem(), random_states(zeros=True)
    kernel = GeometricMean(beta=0.2, sigma=0.7)
    taking_logs = kernel.step(states, problem, STEP, rng_for(3))
    WithinBlockV().compute(states, problem, STEP)
    assert (problem.recall(states, "log") is None) == (numerics == "reference")
    reading_logs = kernel.step(states, problem, STEP, rng_for(3))
    np.testing.assert_array_equal(reading_logs, taking_logs)


def test_geometric_mean_end_points_are_the_state_and_the_data(numerics):
    problem = make_problem()
    states = random_states()
    keep = GeometricMean(beta=0.0, sigma=0.0).step(states, problem, STEP, rng_for(3))
    np.testing.assert_allclose(keep, states, rtol=1e-13)
    jump = GeometricMean(beta=1.0, sigma=0.0).step(states, problem, STEP, rng_for(3))
    np.testing.assert_allclose(jump, np.broadcast_to(problem.data_state, states.shape), rtol=1e-13)


def test_repeated_geometric_mean_steps_follow_the_geometric_path_to_the_data(numerics):
    """Without smoothing, n steps give p^{(1−β)^n} q^{1−(1−β)^n}, normalised."""
    problem = make_problem()
    state = random_states(batch=(2,))
    beta, n_steps = 0.05, 30
    kernel = GeometricMean(beta=beta)
    current = state
    for index in range(1, n_steps + 1):
        current = kernel.step(current, problem, Step(index, n_steps), rng_for(2))
    weight = (1 - beta) ** n_steps
    expected = normalised(state**weight * problem.data_state ** (1 - weight))
    np.testing.assert_allclose(current, expected, rtol=1e-11)


def test_geometric_mean_with_a_beta_schedule_changes_over_the_steps():
    problem = make_problem()
    states = random_states()
    scheduled = GeometricMean(beta={"schedule": "linear", "start": 0.1, "stop": 0.0}, sigma=0.5)
    for index, beta in [(1, 0.1), (3, 0.05), (5, 0.0)]:
        step = Step(index, 5)
        constant = GeometricMean(beta=beta, sigma=0.5)
        np.testing.assert_allclose(
            scheduled.step(states, problem, step, rng_for(3)),
            constant.step(states, problem, step, rng_for(3)),
            rtol=1e-13,
        )
    first = scheduled.step(states, problem, Step(1, 5), rng_for(3))
    last = scheduled.step(states, problem, Step(5, 5), rng_for(3))
    assert np.abs(first - last).max() > 1e-4  # the schedule matters
    unsmoothed = GeometricMean(beta={"schedule": "linear", "start": 0.1, "stop": 0.0})
    np.testing.assert_allclose(
        unsmoothed.step(states, problem, Step(5, 5), rng_for(3)), states, rtol=1e-13
    )


# ---------------------------------------------------------------------------------------
# Unsharp mask
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "sigma"), [(0.5, 1.0), (3.0, 1.5), (0.0, 2.0)])
def test_unsharp_mask_without_noise_is_the_formula(alpha, sigma):
    states = random_states(zeros=True)
    floor = 1e-12
    expected = normalised(np.maximum(states + alpha * (states - smooth_each(states, sigma)), floor))
    result = UnsharpMask(alpha=alpha, sigma=sigma).step(states, make_problem(), STEP, rng_for(3))
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-300)


def test_unsharp_mask_clips_negative_pixels_at_the_floor():
    states = random_states(zeros=True)
    sharpened = states + 3.0 * (states - smooth_each(states, 1.5))
    assert np.any(sharpened < 0)  # the formula alone would go negative here
    result = UnsharpMask(alpha=3.0, sigma=1.5).step(states, make_problem(), STEP, rng_for(3))
    assert np.all(result > 0)


@pytest.mark.parametrize("noise", [0.05, 0.5])
def test_unsharp_mask_noise_is_member_streams_shared_by_all_schemes(noise):
    """The perturbation is (noise / N) · ξ with ξ ~ N(0, 1) drawn once per member from
    MemberRandom and applied to every scheme (common random numbers)."""
    alpha, sigma, members = 0.6, 1.0, 3
    states = random_states(batch=(2, members), seed=5)
    kernel = UnsharpMask(alpha=alpha, sigma=sigma, noise=noise)
    result = kernel.step(states, make_problem(), STEP, rng_for(members, seed=7))
    xi = rng_for(members, seed=7).normal(SHAPE)  # (members, H, W): a fresh copy of the draws
    n_pixels = SHAPE[0] * SHAPE[1]
    sharpened = states + alpha * (states - smooth_each(states, sigma)) + noise / n_pixels * xi
    expected = normalised(np.maximum(sharpened, 1e-12))
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-300)


def test_unsharp_mask_gives_identical_schemes_identical_noise_and_members_different_noise():
    members = 2
    one_state = random_states(batch=(1, members), seed=6)
    states = np.concatenate([one_state, one_state])  # (scheme = 2, member, H, W)
    kernel = UnsharpMask(alpha=0.5, sigma=1.0, noise=1.0)
    result = kernel.step(states, make_problem(), STEP, rng_for(members))
    np.testing.assert_array_equal(result[0], result[1])
    quiet = UnsharpMask(alpha=0.5, sigma=1.0).step(states, make_problem(), STEP, rng_for(members))
    perturbation = result - quiet
    assert np.abs(perturbation).max() > 1e-4 / np.prod(SHAPE)
    assert not np.allclose(perturbation[0, 0], perturbation[0, 1])


def test_unsharp_mask_noise_of_a_member_does_not_depend_on_the_ensemble_size():
    states = random_states(batch=(5,), seed=8)
    kernel = UnsharpMask(alpha=0.5, sigma=1.0, noise=0.3)
    five = kernel.step(states, make_problem(), STEP, rng_for(5, seed=9))
    three = kernel.step(states[:3], make_problem(), STEP, rng_for(3, seed=9))
    np.testing.assert_array_equal(five[:3], three)
    other_seed = kernel.step(states[:3], make_problem(), STEP, rng_for(3, seed=10))
    assert not np.allclose(three, other_seed)


def test_unsharp_mask_with_an_alpha_schedule_ends_as_the_identity():
    states = random_states()
    kernel = UnsharpMask(alpha={"schedule": "linear", "start": 1.0, "stop": 0.0}, sigma=1.0)
    last = kernel.step(states, make_problem(), Step(4, 4), rng_for(3))
    np.testing.assert_allclose(last, states, rtol=1e-13)
    first = kernel.step(states, make_problem(), Step(1, 4), rng_for(3))
    constant = UnsharpMask(alpha=1.0, sigma=1.0).step(states, make_problem(), STEP, rng_for(3))
    np.testing.assert_allclose(first, constant, rtol=1e-13)


# ---------------------------------------------------------------------------------------
# Block blur
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.0])
def test_block_blur_is_the_gaussian_filter_on_each_block_cut_out(numerics, sigma):
    states = random_states()
    result = BlockBlur(sigma=sigma).step(states, make_problem(), STEP, rng_for(3))
    np.testing.assert_allclose(result, blur_each_block(states, sigma), rtol=0, atol=1e-15)


def test_block_blur_keeps_masses_lowers_v_and_tends_to_block_constant(numerics):
    """Theorem 1 with the block blur: over 100 steps block masses stay put to 1e-12, V never
    increases, and the state converges to the block-constant state with the same masses."""
    problem = make_problem()
    partition = problem.partition
    state = random_states(batch=(2, 2), seed=12, zeros=True)
    masses = partition.block_sums(state)
    limit = partition.broadcast(masses / partition.block_sizes)
    kernel = BlockBlur(sigma=0.6)
    v_metric = WithinBlockV()
    history = [v_metric.compute(state, problem, STEP)]
    for index in range(1, 101):
        state = kernel.step(state, problem, Step(index, 100), rng_for(2))
        np.testing.assert_allclose(partition.block_sums(state), masses, rtol=0, atol=1e-12)
        history.append(v_metric.compute(state, problem, STEP))
    history = np.array(history)
    assert np.all(np.diff(history, axis=0) <= 1e-14)
    assert np.all(history[-1] < 1e-6 * history[0])
    np.testing.assert_allclose(state, limit, rtol=1e-4)


def test_block_blur_follows_a_sigma_schedule():
    states = random_states()
    kernel = BlockBlur(sigma={"schedule": "linear", "start": 1.0, "stop": 0.0})
    np.testing.assert_allclose(
        kernel.step(states, make_problem(), Step(1, 3), rng_for(3)),
        blur_each_block(states, 1.0),
        rtol=0,
        atol=1e-15,
    )
    np.testing.assert_allclose(
        kernel.step(states, make_problem(), Step(2, 3), rng_for(3)),
        blur_each_block(states, 0.5),
        rtol=0,
        atol=1e-15,
    )
    np.testing.assert_array_equal(
        kernel.step(states, make_problem(), Step(3, 3), rng_for(3)), states
    )


def test_block_blur_needs_a_rectangular_grid_partition():
    labels = np.arange(SHAPE[0] * SHAPE[1]).reshape(SHAPE) % 5
    problem = Problem(
        partition=LabelMap(shape=SHAPE, labels=labels), quantity=BlockMass(), data=np.ones(SHAPE)
    )
    with pytest.raises(ConfigError, match="block"):
        BlockBlur(sigma=1.0).step(random_states(), problem, STEP, rng_for(3))


# ---------------------------------------------------------------------------------------
# Parameter validation
# ---------------------------------------------------------------------------------------


BAD_PARAMETERS = [
    pytest.param(lambda: GeometricMean(beta=1.5), id="beta above 1"),
    pytest.param(lambda: GeometricMean(beta=-0.1), id="negative beta"),
    pytest.param(
        lambda: GeometricMean(beta={"schedule": "linear", "start": 0.1, "stop": 1.2}),
        id="beta schedule above 1",
    ),
    pytest.param(
        lambda: GeometricMean(beta={"schedule": "linear", "start": 0.1, "stop": -0.1}),
        id="beta schedule below 0",
    ),
    pytest.param(lambda: GeometricMean(beta="strong"), id="beta not a number"),
    pytest.param(lambda: GeometricMean(beta=float("nan")), id="beta nan"),
    pytest.param(lambda: GeometricMean(beta=0.05, sigma=-1.0), id="negative sigma"),
    pytest.param(lambda: GeometricMean(beta=0.05, floor=0.0), id="zero floor"),
    pytest.param(lambda: GeometricMean(beta=0.05, floor=0.5), id="large floor"),
    pytest.param(lambda: UnsharpMask(alpha=-1.0, sigma=1.0), id="negative alpha"),
    pytest.param(lambda: UnsharpMask(alpha=1.0, sigma=-0.5), id="unsharp negative sigma"),
    pytest.param(lambda: UnsharpMask(alpha=1.0, sigma=1.0, noise=-0.1), id="negative noise"),
    pytest.param(
        lambda: UnsharpMask(alpha=1.0, sigma={"schedule": "geometric", "start": 1, "stop": 0}),
        id="geometric schedule to 0",
    ),
    pytest.param(lambda: BlockBlur(sigma=-1.0), id="blur negative sigma"),
    pytest.param(
        lambda: BlockBlur(sigma={"schedule": "linear", "start": 1.0, "stop": -1.0}),
        id="blur sigma schedule below 0",
    ),
]


@pytest.mark.parametrize("make", BAD_PARAMETERS)
def test_bad_parameters_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()
