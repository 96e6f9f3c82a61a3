"""Hook implementations of coarsekl_blocks (registered like any outside plugin)."""

from __future__ import annotations

from coarsekl import hookimpl
from coarsekl.registry import Component

_HERE = "coarsekl_blocks"


@hookimpl
def coarsekl_partitions():
    return [
        Component(
            name="blocks",
            factory=f"{_HERE}.partitions:BlockGrid",
            summary="H × W grid cut into blocks = [rows, cols] equal rectangles",
            states=("array",),
        ),
        Component(
            name="labels",
            factory=f"{_HERE}.partitions:LabelMap",
            summary="arbitrary regions from an integer label map (labels = array or path = .npy)",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_coarse_quantities():
    return [
        Component(
            name="block-mass",
            factory=f"{_HERE}.quantities:BlockMass",
            summary="block masses w_j = Σ_{x∈Ω_j} p(x) (δ is a mass)",
        ),
        Component(
            name="block-mean",
            factory=f"{_HERE}.quantities:BlockMean",
            summary="block mean intensity w_j Σx_data / |Ω_j| (δ is an intensity)",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_projectors():
    return [
        Component(
            name="vdelta",
            factory=f"{_HERE}.vdelta:VDeltaProjector",
            summary="exact KL projection onto |w_j − w^ref_j| ≤ δ (scaling and clipping)",
            states=("array",),
        ),
        Component(
            name="identity",
            factory=f"{_HERE}.vdelta:IdentityProjector",
            summary="no projection (the baseline scheme)",
        ),
    ]


@hookimpl
def coarsekl_metrics():
    return [
        Component(
            name="V",
            factory=f"{_HERE}.metrics:WithinBlockV",
            summary="within-block non-uniformity Σ_j w_j D(p(·|j) ‖ uniform)",
            states=("array",),
        ),
        Component(
            name="V_delta",
            factory=f"{_HERE}.metrics:VDelta",
            summary="coarse-grained KL to the admissible set, D(w ‖ w*)",
        ),
        Component(
            name="E_block",
            factory=f"{_HERE}.metrics:BlockMassError",
            summary="L1 block-mass error ‖w − w^ref‖₁",
        ),
        Component(
            name="mse",
            factory=f"{_HERE}.metrics:MeanSquaredError",
            summary="pixel mean squared error to the data image (data units²)",
            states=("array",),
        ),
        Component(
            name="block_variance",
            factory=f"{_HERE}.metrics:BlockVariance",
            summary="intensity variance inside each block (per block)",
            states=("array",),
        ),
    ]
