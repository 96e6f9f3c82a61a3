from __future__ import annotations

import pytest
from tests.conftest import config_maker

RING = {
    "name": "ring-small",
    "steps": 8,
    "members": 2,
    "seed": 5,
    "particles": 2000,
    "schemes": ["base", "proj"],
    "data": {"kind": "ring"},
    "initial": {"kind": "noise"},
    "partition": {"kind": "class", "reference_samples": 20000},
    "kernel": {
        "kind": "ddim",
        "model_error": {"kind": "weights", "weights": [4, 1, 1, 1, 4, 1, 1, 1]},
    },
    "projector": {"kind": "reweight", "delta": 0.01},
    "record": {"metrics": ["E_block", "V_delta", "ess", "mean_error"], "snapshots": [0, 4, 8]},
}


@pytest.fixture
def ring_config():
    """A small particle experiment: 8-component ring, DDIM with a wrong-weights model,
    2 members × 2,000 particles, 8 steps; ``ring_config(**{"kernel__kind": "ddpm"})``."""

    return config_maker(RING)
