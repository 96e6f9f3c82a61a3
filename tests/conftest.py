from __future__ import annotations

import copy

import pytest

SMALL = {
    "name": "small",
    "steps": 6,
    "members": 2,
    "seed": 3,
    "schemes": ["base", "proj"],
    "data": {"kind": "checkerboard", "shape": [32, 32], "blocks": [4, 4]},
    "initial": {"kind": "uniform-noise"},
    "partition": {"kind": "blocks", "blocks": [4, 4]},
    "kernel": {"kind": "geometric-mean", "beta": 0.05, "sigma": 0.5},
    "projector": {"kind": "vdelta", "delta": 0.01},
    "record": {"snapshots": [0, 3, 6]},
}


def config_maker(base: dict):
    """``make(**changes)``: a copy of the mapping ``base`` with changes; keys name nested
    tables with ``__`` (``kernel__beta=0.1``), and the value None removes a key."""

    def make(**changes):
        mapping = copy.deepcopy(base)
        for dotted, value in changes.items():
            *tables, key = dotted.split("__")
            target = mapping
            for table in tables:
                target = target.setdefault(table, {})
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        return mapping

    return make


@pytest.fixture
def small_config():
    """A small, fast experiment mapping (32 × 32, 4 × 4 blocks, 6 steps, 2 members)."""
    return config_maker(SMALL)


@pytest.fixture(params=["compiled", "parallel", "reference"])
def numerics(request, monkeypatch):
    """Run the test on the compiled (numba) path, on its parallel loops (made to cut even
    tiny arrays into uneven pieces for several threads) and on the plain-numpy reference."""
    from coarsekl import numerics as numerics_module

    if request.param == "reference":
        with numerics_module.reference_numerics():
            yield request.param
        return
    if not numerics_module.compiled_enabled():
        pytest.skip("numba is not installed")
    if request.param == "parallel":
        if not numerics_module._threadsafe_layer():
            pytest.skip("numba has no thread-safe threading layer here")
        monkeypatch.setenv("COARSEKL_THREADS", "3")
        monkeypatch.setattr(numerics_module, "PIECE_VALUES", 8)
        monkeypatch.setattr(numerics_module, "CHEAP_PIECE_VALUES", 8)
        monkeypatch.setattr(numerics_module, "SUM_PIECE_VALUES", 50)
        monkeypatch.setattr("coarsekl_images.kernels.BAND_ROWS", 3)
    yield request.param
