from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from tests.plugins import contract_breakers

import coarsekl
from coarsekl.errors import ConfigError, DataError, InfeasibleTargetError, PluginContractError
from coarsekl.runner import build_experiment


@pytest.fixture(scope="module")
def paper_restore():
    return coarsekl.run("paper-restore")


def test_paper_restore_projection_holds_the_block_masses(paper_restore):
    """THEORY §6: projected E_block ≤ K·δ from step 1 on and V_δ = 0 after every projection."""
    ds = paper_restore
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    n_blocks = ds.sizes["block"]
    assert (proj.E_block <= n_blocks * 0.01 + 1e-12).all()
    assert (np.abs(proj.block_mass - ds.reference_mass) <= 0.01 + 1e-12).all()
    assert float(proj.V_delta.max()) <= 1e-12
    # the kernel keeps leaking; the projection absorbs it at every step
    assert (proj.E_block_pre.isel(step=0) > n_blocks * 0.01).all()
    assert (proj.V_delta_pre.isel(step=0) > 0.1).all()


def test_paper_restore_baseline_decays_only_slowly(paper_restore):
    base = paper_restore.sel(scheme="base", member=0)
    n_blocks = paper_restore.sizes["block"]
    assert (base.E_block.diff("step") < 0).all()
    assert float(base.E_block.sel(step=10)) > 2 * n_blocks * 0.01
    assert float(base.V_delta.sel(step=10)) > 0.01


def test_paper_restore_images_are_comparable(paper_restore):
    final = paper_restore.sel(step=40, member=0)
    mse_base, mse_proj = float(final.mse.sel(scheme="base")), float(final.mse.sel(scheme="proj"))
    assert mse_proj < 0.05 * float(paper_restore.mse.isel(step=0).max())
    assert mse_proj <= 1.5 * mse_base
    assert mse_base <= 1.5 * mse_proj


def test_dataset_layout(paper_restore):
    ds = paper_restore
    assert dict(ds.sizes) == {
        "scheme": 2,
        "member": 1,
        "step": 41,
        "block": 16,
        "y": 128,
        "x": 128,
        "snapshot": 4,
    }
    for name in ("V", "V_delta", "E_block", "mse", "leak", "V_delta_pre", "E_block_pre"):
        assert ds[name].dims == ("scheme", "member", "step"), name
    assert ds.block_mass.dims == ("scheme", "member", "step", "block")
    assert ds.block_variance.dims == ("scheme", "member", "step", "block")
    assert ds.clipped.dims == ("scheme", "member", "step", "block")
    assert ds.state.dims == ("scheme", "member", "snapshot", "y", "x")
    assert list(ds.snapshot.values) == [0, 10, 20, 40]
    for name, variable in ds.variables.items():
        assert "long_name" in variable.attrs, name
        if name not in ("scheme", "clipped"):
            assert "units" in variable.attrs, name
    config = coarsekl.load_config("paper-restore")
    assert coarsekl.load_config(__import__("tomllib").loads(ds.attrs["config"])) == config
    assert ds.attrs["seed"] == 0
    assert ds.attrs["coarsekl_version"] == coarsekl.__version__
    assert "coarsekl_images.plugin" in ds.attrs["plugins"]


def test_leak_and_pre_projection_record(paper_restore):
    ds = paper_restore
    base = ds.sel(scheme="base")
    # the baseline is never projected: before == after, nothing clipped
    np.testing.assert_array_equal(base.E_block_pre, base.E_block)
    assert not base.clipped.any()
    np.testing.assert_array_equal(ds.leak.isel(step=0), 0.0)  # no kernel before step 0
    expected_leak = np.abs(ds.block_mass.diff("step")).sum("block")
    np.testing.assert_allclose(
        base.leak.isel(step=slice(1, None)), expected_leak.sel(scheme="base")
    )
    proj = ds.sel(scheme="proj")
    # the first step leaves almost every block outside its band; clipped ones sit on a bound
    assert int(proj.clipped.isel(step=1).sum()) >= 15
    distance = np.abs(proj.block_mass - ds.reference_mass).where(proj.clipped)
    np.testing.assert_allclose(distance.stack(i=distance.dims).dropna("i"), 0.01, rtol=1e-9)
    assert (proj.E_block <= proj.E_block_pre + 1e-15).all()


def test_schemes_share_random_numbers():
    """With a projection that never binds, base and proj are the same trajectory."""
    config = {
        "steps": 4,
        "members": 2,
        "seed": 5,
        "data": {"kind": "checkerboard", "shape": [16, 16], "blocks": [2, 2]},
        "initial": {"kind": "uniform-noise"},
        "partition": {"kind": "blocks", "blocks": [2, 2]},
        "kernel": {"kind": "unsharp-mask", "alpha": 0.2, "sigma": 1.0, "noise": 0.5},
        "projector": {"kind": "vdelta", "delta": 1.0},
        "record": {"snapshots": [4]},
    }
    ds = coarsekl.run(config)
    np.testing.assert_array_equal(ds.state.sel(scheme="base"), ds.state.sel(scheme="proj"))
    assert not np.allclose(ds.state.isel(member=0), ds.state.isel(member=1))


def test_member_streams_do_not_depend_on_the_ensemble_size(small_config):
    two = coarsekl.run(
        small_config(
            members=2, kernel={"kind": "unsharp-mask", "alpha": 0.2, "sigma": 1.0, "noise": 0.3}
        )
    )
    three = coarsekl.run(
        small_config(
            members=3, kernel={"kind": "unsharp-mask", "alpha": 0.2, "sigma": 1.0, "noise": 0.3}
        )
    )
    np.testing.assert_array_equal(two.state, three.state.isel(member=[0, 1]))
    np.testing.assert_array_equal(two.V, three.V.isel(member=[0, 1]))


def test_the_coordinates_and_indexes_are_those_xarray_makes_by_default(small_config):
    """The runner makes the indexes of the dimension coordinates itself (faster): they
    must be what xarray would make of the same values."""
    import xarray as xr

    dataset = coarsekl.run(small_config(steps=2, record__snapshots=[0, 2]))
    coords = {name: (c.dims, c.values, c.attrs) for name, c in dataset.coords.items()}
    assert dataset["scheme"].dtype.kind == "U"  # (as from a list of names)
    expected = xr.Dataset(coords=coords)
    for name in expected.coords:
        assert dataset[name].identical(expected[name]), name
        assert dataset[name].dtype == expected[name].dtype, name
    assert set(dataset.indexes) == {"scheme", "member", "step", "block", "snapshot", "y", "x"}
    for name, index in expected.indexes.items():
        assert dataset.indexes[name].equals(index), name
        assert dataset.indexes[name].dtype == index.dtype, name
    # Runs share the (immutable) indexes of equal coordinates, not their attributes.
    dataset["step"].attrs["note"] = "changed by the user"
    again = coarsekl.run(small_config(steps=2, record__snapshots=[0, 2]))
    assert "note" not in again["step"].attrs


@pytest.mark.parametrize("experiment", ["images", "particles", "chain"])
def test_a_trajectory_is_the_dataset_xarray_makes_of_its_variables(small_config, experiment):
    """The runner puts its trajectory together without xarray's constructor (faster): it
    must be exactly what that constructor makes of the same variables."""
    import xarray as xr
    from tests.coarsekl_chains.test_plugin import CHAIN

    configs = {
        "images": lambda: small_config(steps=2, record__snapshots=[0, 2]),
        "particles": lambda: coarsekl.load_config("gmm-leakage").with_overrides(
            {"steps": 2, "record.snapshots": [0, 2], "members": 2, "particles": 500}
        ),
        "chain": lambda: coarsekl.load_config(CHAIN),
    }
    config = configs[experiment]()
    dataset = coarsekl.run(config)
    expected = xr.Dataset(
        {name: dataset[name].variable for name in dataset.data_vars},
        coords={name: dataset[name].variable for name in dataset.coords},
        attrs=dataset.attrs,
    )
    xr.testing.assert_identical(dataset, expected)
    assert list(dataset.variables) == list(expected.variables)
    assert list(dataset.sizes.items()) == list(expected.sizes.items())
    assert set(dataset.coords) == set(expected.coords)
    assert {name: type(index) for name, index in dataset.xindexes.items()} == {
        name: type(index) for name, index in expected.xindexes.items()
    }


def test_variables_that_disagree_on_a_size_get_xarrays_own_error():
    import xarray as xr

    from coarsekl.runner import _dataset

    variables = {"mass": xr.Variable("block", np.ones(3))}
    with pytest.raises(ValueError, match="block"):
        _dataset(variables, {"block": ("block", np.arange(4), {})}, {})
    dataset = _dataset(variables, {"block": ("block", np.arange(3), {"units": "1"})}, {})
    assert dataset.indexes["block"].equals(
        xr.Dataset(coords={"block": np.arange(3)}).indexes["block"]
    )


def test_same_seed_same_numbers_other_seed_other_numbers(small_config):
    first, again = coarsekl.run(small_config()), coarsekl.run(small_config())
    other = coarsekl.run(small_config(seed=4))
    np.testing.assert_array_equal(first.state, again.state)
    assert not np.allclose(first.state, other.state)


def test_tightening_delta_schedule_is_followed(small_config):
    schedule = {"schedule": "geometric", "start": 0.05, "stop": 0.005}
    ds = coarsekl.run(small_config(projector__delta=schedule))
    expected = 0.05 * (0.005 / 0.05) ** (np.arange(6) / 5)
    np.testing.assert_allclose(ds.delta.isel(step=slice(1, None)), expected)
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    assert (np.abs(proj.block_mass - ds.reference_mass) <= proj.delta + 1e-12).all()


def test_block_mean_quantity_uses_intensity_units(small_config):
    ds = coarsekl.run(small_config(quantity={"kind": "block-mean"}, projector__delta=0.05))
    np.testing.assert_allclose(np.sort(np.unique(ds.reference_value.round(12))), [0.1, 0.9])
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    means = proj.block_mass * ds.reference_value / ds.reference_mass
    assert (np.abs(means - ds.reference_value) <= 0.05 + 1e-12).all()


def test_label_map_partition_runs(tmp_path, small_config):
    labels = np.zeros((32, 32), dtype=np.int64)
    labels[:, 10:] = 7
    labels[20:, :] = -3
    np.save(tmp_path / "labels.npy", labels)
    ds = coarsekl.run(
        small_config(partition={"kind": "labels", "path": str(tmp_path / "labels.npy")})
    )
    assert list(ds.label.values) == [-3, 0, 7]
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    assert (proj.E_block <= 3 * 0.01 + 1e-12).all()


def test_forward_randomization_keeps_block_masses_and_decreases_v():
    ds = coarsekl.run("forward-randomization")
    masses = ds.block_mass.sel(scheme="base")
    assert float(np.abs(masses - masses.isel(step=0)).max()) <= 1e-12
    assert (ds.V.diff("step") <= 1e-14).all()
    assert float(ds.V.isel(step=-1).max()) < 0.01 * float(ds.V.isel(step=0).min())


def test_round_trip_runs_and_the_projection_holds(small_config):
    config = coarsekl.load_config("round-trip").with_overrides(
        {"steps": 8, "record.snapshots": [0, 8], "members": 1}
    )
    ds = coarsekl.run(config)
    n_blocks = ds.sizes["block"]
    proj = ds.sel(scheme="proj").isel(step=slice(1, None))
    assert (proj.E_block <= n_blocks * 0.002 + 1e-12).all()
    assert float(ds.sel(scheme="base").E_block.isel(step=-1).max()) > float(
        proj.E_block.isel(step=-1).max()
    )


def test_callback_sees_every_step(small_config):
    seen = []
    coarsekl.run(small_config(), callback=lambda info: seen.append(info["step"]))
    assert seen == [1, 2, 3, 4, 5, 6]


@pytest.fixture
def plugin_manager():
    pm = coarsekl.get_plugin_manager(autoload=False)
    pm.register(contract_breakers)
    return pm


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("nan", "NaN or inf"),
        ("negative", "negative values"),
        ("unnormalised", "not normalised"),
        ("shape", "returned shape"),
    ],
)
def test_kernel_contract_violations_name_the_plugin_and_step(
    plugin_manager, small_config, fault, message
):
    config = small_config(kernel={"kind": "broken", "fault": fault, "at": 3})
    with pytest.raises(PluginContractError) as error:
        coarsekl.run(config, plugin_manager=plugin_manager)
    assert "kernel 'broken'" in str(error.value)
    assert "at step 3" in str(error.value)
    assert message in str(error.value)


def test_projection_absorbs_an_outside_kernels_leak(plugin_manager, small_config):
    ds = coarsekl.run(
        small_config(kernel={"kind": "leak-to-corner", "epsilon": 0.02}),
        plugin_manager=plugin_manager,
    )
    proj = ds.sel(scheme="proj").isel(step=slice(2, None))
    np.testing.assert_allclose(ds.sel(scheme="base").leak.isel(step=slice(1, None)), 0.0, atol=0.05)
    assert (proj.E_block <= 16 * 0.01 + 1e-12).all()


def test_projecting_in_place_gives_the_same_trajectory(monkeypatch, small_config):
    """The V_δ projector writes into the kernel's output (``projects_in_place``); a run
    where it may not gives the same numbers, bit for bit."""
    from coarsekl_blocks.vdelta import VDeltaProjector

    in_place = coarsekl.run(small_config())
    monkeypatch.setattr(VDeltaProjector, "projects_in_place", False)
    copied = coarsekl.run(small_config())
    for trajectory in (in_place, copied):
        del trajectory.attrs["created"]
    xr.testing.assert_identical(in_place, copied)


def test_a_projection_overlapping_the_state_it_may_overwrite_is_copied_correctly(
    plugin_manager, small_config
):
    """A projector asked to project in place may return any array: one that overlaps the
    kernel's output without being it (here the first member's state for every member,
    a view with stride 0) is copied into the batch as numpy copies overlapping arrays."""
    config = small_config(projector={"kind": "first-member-in-place"})
    ds = coarsekl.run(config, plugin_manager=plugin_manager)
    last = ds.state.isel(snapshot=-1)
    proj, base = last.sel(scheme="proj"), last.sel(scheme="base")
    np.testing.assert_array_equal(proj.isel(member=1), proj.isel(member=0))
    np.testing.assert_array_equal(proj.isel(member=0), base.isel(member=0))
    assert not np.array_equal(base.isel(member=1), base.isel(member=0))


def test_infeasible_target_is_rejected_before_the_run(small_config):
    config = small_config(quantity={"kind": "block-mass", "reference": [0.1] * 16})
    with pytest.raises(InfeasibleTargetError, match="sum to 1.6"):
        coarsekl.run(config)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (-np.ones((8, 8)), "negative values"),
        (np.zeros((8, 8)), "all zero"),
        (np.full((8, 8), np.nan), "NaN or inf"),
        (np.full((8, 8), np.inf), "NaN or inf"),
    ],
)
def test_unusable_data_images_are_rejected(tmp_path, small_config, image, message):
    np.save(tmp_path / "data.npy", image)
    config = small_config(
        data={"kind": "file", "path": str(tmp_path / "data.npy")},
        partition={"kind": "blocks", "blocks": [2, 2]},
    )
    with pytest.raises(DataError, match=message):
        coarsekl.run(config)


def test_unknown_names_and_parameters_are_config_errors(small_config):
    with pytest.raises(coarsekl.CoarseklError, match="did you mean 'geometric-mean'"):
        coarsekl.run(small_config(kernel={"kind": "geometric_mean", "beta": 0.1}))
    with pytest.raises(ConfigError, match="has no parameter 'betta' .did you mean 'beta'"):
        coarsekl.run(small_config(kernel={"kind": "geometric-mean", "betta": 0.1}))
    with pytest.raises(ConfigError, match="needs the parameter.* 'beta'"):
        coarsekl.run(small_config(kernel={"kind": "geometric-mean"}))
    with pytest.raises(ConfigError, match=r"\[kernel\] 'geometric-mean'"):
        coarsekl.run(small_config(kernel={"kind": "geometric-mean", "beta": "a lot"}))
    with pytest.raises(ConfigError, match="cannot be cut into 3 × 3"):
        coarsekl.run(small_config(partition={"kind": "blocks", "blocks": [3, 3]}))
    with pytest.raises(ConfigError, match="≥ 0"):
        coarsekl.run(small_config(projector__delta=-0.1))


def test_a_kernel_claiming_block_preservation_is_checked(plugin_manager, small_config):
    config = small_config(kernel={"kind": "false-preserver", "epsilon": 0.01})
    with pytest.raises(PluginContractError, match="declares block_preserving but changed"):
        coarsekl.run(config, plugin_manager=plugin_manager)


def test_a_metric_returning_nan_is_named(plugin_manager, small_config):
    config = small_config(record__metrics=["V", "nan_metric"])
    with pytest.raises(PluginContractError, match="metric 'nan_metric' returned NaN at step 0"):
        coarsekl.run(config, plugin_manager=plugin_manager)


@pytest.mark.parametrize(
    "delta", [0.01, {"schedule": "linear", "start": 0.05, "stop": 0.005}], ids=["fixed", "linear"]
)
def test_metrics_of_block_masses_equal_compute_on_every_recorded_state(small_config, delta):
    """V_δ and E_block come from the recorded block masses at the end of the run; they are
    what ``compute`` gives on the states themselves, after and before each projection."""
    config = coarsekl.load_config(
        small_config(record__snapshots=list(range(7)), projector__delta=delta)
    )
    proposals = {}
    ds = coarsekl.run(config, callback=lambda info: proposals.update({info["step"]: info}))
    experiment = build_experiment(config, coarsekl.get_registry())
    for name in ("V_delta", "E_block"):
        metric = experiment.metrics[name]
        for step in experiment.steps:
            state = ds.state.sel(snapshot=step.index).values
            expected = metric.compute(state, experiment.problem, step)
            np.testing.assert_allclose(ds[name].sel(step=step.index), expected, rtol=1e-13)
            if step.index > 0:
                proposal = proposals[step.index]["proposal"]
                expected = metric.compute(proposal, experiment.problem, step)
                recorded = ds[f"{name}_pre"].sel(step=step.index)
                np.testing.assert_allclose(recorded, expected, rtol=1e-13)


def test_metrics_of_block_masses_are_evaluated_once_from_the_recorded_masses(
    plugin_manager, small_config
):
    config = small_config(record__metrics=["V", "coarse_probe"])
    ds = coarsekl.run(config, plugin_manager=plugin_manager)
    steps = np.arange(7.0)
    np.testing.assert_array_equal(ds.coarse_probe, np.broadcast_to(steps, (2, 2, 7)))
    np.testing.assert_array_equal(ds.coarse_probe_pre, np.broadcast_to(steps, (2, 2, 7)))
    with pytest.raises(PluginContractError, match="metric 'coarse_misshapen' returned shape"):
        coarsekl.run(
            small_config(record__metrics=["coarse_misshapen"]), plugin_manager=plugin_manager
        )


@pytest.mark.parametrize("view", [False, True], ids=["itself", "view"])
def test_a_kernel_returning_its_input_leaves_earlier_states_alone(
    plugin_manager, small_config, view
):
    """The runner writes projected schemes into the kernel's output when nothing else holds
    it; a kernel that returns its input (or a view of it) gets a copy instead."""
    copying = coarsekl.run(
        small_config(kernel={"kind": "broken", "at": 100}), plugin_manager=plugin_manager
    )
    same = coarsekl.run(
        small_config(kernel={"kind": "same-array", "view": view}), plugin_manager=plugin_manager
    )
    assert_same_trajectory(same, copying)
    states = []
    coarsekl.run(
        small_config(kernel={"kind": "same-array", "view": view}),
        plugin_manager=plugin_manager,
        callback=lambda info: states.append((info["state"], info["proposal"])),
    )
    first_state, first_proposal = states[0]
    assert not np.array_equal(first_state[1], first_proposal[1])  # the projection changed it
    np.testing.assert_array_equal(first_state[0], first_proposal[0])  # base: unprojected


def test_a_kernel_returning_a_broadcast_of_the_data_leaves_the_data_alone(
    plugin_manager, small_config
):
    uniform = {"kind": "block-mass", "reference": [1 / 16] * 16}  # the projection must act
    config = small_config(
        kernel={"kind": "to-data"}, quantity=uniform, steps=2, record__snapshots=[0, 1, 2]
    )
    ds = coarsekl.run(config, plugin_manager=plugin_manager)
    data = ds.data.values / ds.data.values.sum()
    np.testing.assert_allclose(
        ds.state.sel(scheme="base", snapshot=[1, 2]),
        np.broadcast_to(data, (2, 2, 32, 32)),
        rtol=1e-15,
    )
    assert not np.allclose(ds.state.sel(scheme="proj", snapshot=1), data)  # projected
    np.testing.assert_array_equal(ds.leak.sel(scheme="base", step=2), 0.0)  # the data again


def test_metrics_of_block_masses_fail_before_the_first_step(small_config):
    steps = []
    with pytest.raises(ConfigError, match="V_delta' needs a tolerance"):
        coarsekl.run(
            small_config(projector=None, schemes=["base"], record__metrics=["V_delta"]),
            callback=lambda info: steps.append(info["step"]),
        )
    assert steps == []


# --- Performance paths give the same trajectory -------------------------------------------

RECORDED = ("V", "V_delta", "E_block", "mse", "block_mass", "leak", "state")


def assert_same_trajectory(actual, expected, rtol=0.0, atol=0.0):
    for name in RECORDED:
        np.testing.assert_allclose(
            actual[name].values, expected[name].values, rtol=rtol, atol=atol, err_msg=name
        )


def test_results_do_not_depend_on_threads_or_member_groups(small_config):
    """Members are advanced in groups by a thread pool; 5 members on 3 threads make groups
    of 2, 2 and 1. Every number must equal the single-threaded run's exactly."""
    config = small_config(
        members=5, kernel={"kind": "unsharp-mask", "alpha": 0.1, "sigma": 1.0, "noise": 0.2}
    )
    one = coarsekl.run(config, threads=1)
    three = coarsekl.run(config, threads=3)
    assert_same_trajectory(three, one)


def test_parallel_loops_in_the_kernels_do_not_change_the_numbers(small_config, monkeypatch):
    """One tile, its compiled loops (kernel in bands of rows, entropy and check sums in
    pieces) shared among threads: the same numbers as on one thread, to the last bit."""
    from coarsekl import numerics

    if not numerics.compiled_enabled() or not numerics._threadsafe_layer():
        pytest.skip("needs numba with a thread-safe threading layer")
    monkeypatch.setattr(numerics, "PIECE_VALUES", 64)
    monkeypatch.setattr(numerics, "CHEAP_PIECE_VALUES", 64)
    monkeypatch.setattr(numerics, "SUM_PIECE_VALUES", 100)
    monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", 7)
    config = small_config(members=1, record__metrics=["V", "V_delta", "E_block", "mse"])
    assert_same_trajectory(coarsekl.run(config, threads=2), coarsekl.run(config, threads=1))


@pytest.mark.parametrize("threads", [1, 2])
def test_the_states_do_not_depend_on_the_metrics_recorded(small_config, threads):
    """Recording V hands its logs to the next kernel step (and the kernel and projector
    hand their block sums to the runner's checks): the trajectory is the same, bit for
    bit, as one recorded without any metric."""
    snapshots = [0, 1, 2, 3, 4, 5, 6]
    with_v = small_config(members=3, record__snapshots=snapshots, record__metrics=["V", "mse"])
    bare = small_config(members=3, record__snapshots=snapshots, record__metrics=[])
    metrics, bare = coarsekl.run(with_v, threads=threads), coarsekl.run(bare, threads=threads)
    for name in ("state", "block_mass", "leak", "clipped"):
        np.testing.assert_array_equal(metrics[name].values, bare[name].values, err_msg=name)


def test_schemes_split_across_threads_still_share_their_random_numbers(small_config):
    """One member on two threads: base and proj run as separate tiles, proj drawing from
    a copy of the member's generator. Numbers must equal the single-threaded run's."""
    from coarsekl.runner import Engine

    noisy = {"kind": "unsharp-mask", "alpha": 0.1, "sigma": 1.0, "noise": 0.2}
    big = {"kind": "checkerboard", "shape": [256, 256], "blocks": [4, 4]}
    config = small_config(members=1, kernel=noisy, data=big, steps=3, record__snapshots=[0, 3])
    engine = Engine(
        build_experiment(coarsekl.load_config(config), coarsekl.get_registry()), threads=2
    )
    assert [tile[0] for tile in engine.tiles] == [slice(0, 1), slice(1, 2)]  # split by scheme
    engine.close()
    one = coarsekl.run(config, threads=1)
    two = coarsekl.run(config, threads=2)
    assert_same_trajectory(two, one)
    seen = []
    coarsekl.run(config, threads=2, callback=lambda info: seen.append(info["proposal"]))
    assert len(seen) == 3 and seen[0].shape == (2, 1, 256, 256)
    np.testing.assert_array_equal(seen[0][0], seen[0][1])  # same state, same noise: same proposal


def test_a_kernel_that_couples_members_gets_the_whole_ensemble(plugin_manager, small_config):
    config = small_config(members=4, kernel={"kind": "toward-ensemble-mean"})
    one = coarsekl.run(config, plugin_manager=plugin_manager, threads=1)
    four = coarsekl.run(config, plugin_manager=plugin_manager, threads=4)
    assert_same_trajectory(four, one)
    final = one.state.sel(scheme="base").isel(snapshot=-1).values
    assert (
        np.ptp(final, axis=0).max()
        < np.ptp(one.state.sel(scheme="base").isel(snapshot=0).values, axis=0).max()
    )


def test_threads_must_be_a_positive_integer(small_config):
    with pytest.raises(ConfigError, match="threads"):
        coarsekl.run(small_config(), threads=0)


def test_compiled_and_reference_numerics_agree(small_config):
    """The numba kernels against the plain-numpy reference, through a whole run."""
    from coarsekl.numerics import reference_numerics

    config = small_config()
    compiled = coarsekl.run(config)
    with reference_numerics():
        reference = coarsekl.run(config)
    assert_same_trajectory(compiled, reference, rtol=1e-9, atol=1e-13)


def test_float32_keeps_every_metric_within_1e_5_of_float64(small_config):
    config = small_config(steps=20)
    double = coarsekl.run(config)
    single = coarsekl.run({**config, "dtype": "float32"})
    assert single.state.dtype == np.float32
    assert double.state.dtype == np.float64
    for name in ("V", "V_delta", "E_block", "mse", "block_mass"):
        scale = float(np.abs(double[name]).max())
        np.testing.assert_allclose(
            single[name].values, double[name].values, rtol=1e-5, atol=1e-5 * scale, err_msg=name
        )


def test_unknown_dtype_is_a_config_error(small_config):
    with pytest.raises(ConfigError, match="dtype must be one of"):
        coarsekl.run({**small_config(), "dtype": "float16"})


def test_output_file_streams_snapshots_and_equals_the_in_memory_run(tmp_path, small_config):
    config = small_config()
    in_memory = coarsekl.run(config)
    streamed = coarsekl.run(config, output=tmp_path / "run.nc")
    assert (tmp_path / "run.nc").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary left behind
    assert_same_trajectory(streamed, in_memory)
    assert streamed.attrs["config"] == in_memory.attrs["config"]
    assert coarsekl.load_config(streamed.coarsekl.config) == coarsekl.load_config(config)
    for name in ("state", "V", "block_mass"):  # streamed and appended variables alike
        encoding = streamed[name].encoding
        assert (encoding["zlib"], encoding["shuffle"], encoding["complevel"]) == (True, True, 1)
    streamed.close()


def test_an_interrupted_run_leaves_the_older_output_untouched(tmp_path, small_config):
    target = tmp_path / "run.nc"
    target.write_bytes(b"an older result")

    def interrupt(info):
        if info["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        coarsekl.run(small_config(), output=target, callback=interrupt)
    assert target.read_bytes() == b"an older result"
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]


def test_a_single_projected_scheme_equals_the_proj_scheme_of_a_pair(small_config):
    pair = coarsekl.run(small_config())
    alone = coarsekl.run(small_config(schemes=["proj"]))
    for name in ("V", "E_block", "block_mass", "state"):
        np.testing.assert_array_equal(alone[name].sel(scheme="proj"), pair[name].sel(scheme="proj"))
