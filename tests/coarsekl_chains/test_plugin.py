"""The chain components through the public API: registration, whole runs, figures, and the
consistency of the image kernels with the chain view (the block blur as a sparse matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import coarsekl
from coarsekl.registry import Experiment
from coarsekl_images.data import Checkerboard

CHAIN = {
    "name": "chain",
    "steps": 8,
    "members": 3,
    "seed": 2,
    "schemes": ["base", "proj"],
    "data": {"kind": "vector", "values": [1, 2, 3, 4, 5, 6, 7, 8, 9]},
    "initial": {"kind": "dirichlet", "block_masses": "reference"},
    "partition": {"kind": "label-vector", "sizes": [2, 3, 4], "reference": [1] * 5 + [2] * 4},
    "kernel": {"kind": "random-block", "family": "stationary", "leakage": 0.05},
    "projector": {"kind": "vdelta", "delta": 0.01},
    "record": {"metrics": ["V", "V_pi", "V_delta", "E_block", "mse"], "snapshots": [0, 4, 8]},
}


def test_every_chain_component_is_registered_by_name():
    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    assert "label-vector" in registry.names("partition")
    assert {"matrix", "matrix-sequence", "random-block"} <= set(registry.names("kernel"))
    assert "V_pi" in registry.names("metric")
    assert "vector" in registry.names("data")
    assert {"vector", "dirichlet", "equilibrium"} <= set(registry.names("initial"))
    theorems = registry.lookup("experiment", "theorems")
    assert "coarsekl_chains" in str(theorems.provider)
    assert theorems.component.script == "coarsekl_chains.theorems:run_theorems"


def test_a_chain_experiment_runs_with_projection_and_draws_the_standard_figures(tmp_path):
    ds = coarsekl.run(CHAIN)
    assert ds.state.dims == ("scheme", "member", "snapshot", "site")
    assert ds.data.dims == ("site",)
    assert float(ds.E_block.sel(scheme="proj").max()) <= 3 * 0.01 + 1e-12
    assert float(ds.leak.sel(scheme="base").isel(step=slice(1, None)).min()) > 0
    figures = coarsekl.plotting.save_figures(ds, tmp_path, "chain")
    assert [f.name for f in figures] == [
        "chain_snapshots.png",
        "chain_metrics.png",
        "chain_block_masses.png",
    ]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_a_block_preserving_random_kernel_is_checked_by_the_runner():
    ds = coarsekl.run({**CHAIN, "kernel": {"kind": "random-block", "family": "stationary"}})
    masses = ds.block_mass.sel(scheme="base")
    assert float(abs(masses - masses.isel(step=0)).max()) <= 1e-12
    assert float(ds.V_pi.sel(scheme="base").diff("step").max()) <= 1e-12


def test_an_experiment_record_is_a_file_or_a_script_not_both():
    with pytest.raises(TypeError, match="exactly one of path"):
        Experiment(name="x", summary="s")
    with pytest.raises(TypeError, match="exactly one of path"):
        Experiment(name="x", summary="s", path="x.toml", script="m:f")
    with pytest.raises(TypeError, match="'module:function'"):
        Experiment(name="x", summary="s", script="no function")


def reflecting_gaussian(length: int, sigma: float) -> np.ndarray:
    """G_σ on one segment, written out: out[i] = Σ_k g_k in[reflect(i + k)], with the
    sampled Gaussian of radius int(4σ + 0.5) and half-sample symmetric reflection."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * offsets**2 / sigma**2)
    weights /= weights.sum()
    matrix = np.zeros((length, length))
    for row in range(length):
        folded = (row + offsets) % (2 * length)
        source = np.where(folded < length, folded, 2 * length - 1 - folded)
        np.add.at(matrix[row], source, weights)
    return matrix


def block_blur_transition(shape, blocks, sigma) -> scipy.sparse.csr_array:
    """The block blur of an image as a chain on its H·W pixels: P = (B_y ⊗ B_x)ᵀ with
    B_y = I_rows ⊗ G_σ(h) and B_x = I_cols ⊗ G_σ(w) (row-major pixel order)."""
    (height, width), (rows, cols) = shape, blocks
    along_y = scipy.sparse.kron(np.eye(rows), reflecting_gaussian(height // rows, sigma))
    along_x = scipy.sparse.kron(np.eye(cols), reflecting_gaussian(width // cols, sigma))
    return scipy.sparse.csr_array(scipy.sparse.kron(along_y, along_x).T)


def test_the_block_blur_is_the_chain_of_its_sparse_transition_matrix(tmp_path):
    shape, blocks, sigma = (8, 12), (2, 3), 0.9
    matrix = block_blur_transition(shape, blocks, sigma)
    scipy.sparse.save_npz(tmp_path / "blur.npz", matrix)
    common = {"steps": 6, "members": 2, "seed": 4, "schemes": ["base"]}
    common["initial"] = {"kind": "uniform-noise"}
    common["record"] = {"metrics": ["V", "E_block"], "snapshots": list(range(7))}
    image_run = coarsekl.run(
        {
            **common,
            "data": {"kind": "checkerboard", "shape": list(shape), "blocks": list(blocks)},
            "partition": {"kind": "blocks", "blocks": list(blocks)},
            "kernel": {"kind": "block-blur", "sigma": sigma},
        }
    )
    data = Checkerboard(shape=shape, blocks=blocks).image(None).ravel()
    block_of_pixel = np.arange(6).reshape(2, 3).repeat(4, axis=0).repeat(4, axis=1).ravel()
    chain_run = coarsekl.run(
        {
            **common,
            "data": {"kind": "vector", "values": data},
            "partition": {"kind": "label-vector", "labels": block_of_pixel},
            "kernel": {"kind": "matrix", "path": str(tmp_path / "blur.npz")},
        }
    )
    image_states = image_run.state.values.reshape(*chain_run.state.shape)
    assert np.abs(image_states[:, :, 0] - image_states[:, :, -1]).max() > 1e-4  # it moved
    np.testing.assert_allclose(chain_run.state.values, image_states, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(chain_run.V.values, image_run.V.values, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(chain_run.block_mass.values, image_run.block_mass.values)
