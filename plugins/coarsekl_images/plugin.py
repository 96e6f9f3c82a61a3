"""Hook implementations of coarsekl_images (registered like any outside plugin)."""

from __future__ import annotations

from coarsekl import hookimpl
from coarsekl.registry import Component

_HERE = "coarsekl_images"


@hookimpl
def coarsekl_kernels():
    return [
        Component(
            name="geometric-mean",
            factory=f"{_HERE}.kernels:GeometricMean",
            summary="p' ∝ p^(1−β) q_data^β, then Gaussian smoothing σ (leaks)",
            states=("array",),
        ),
        Component(
            name="unsharp-mask",
            factory=f"{_HERE}.kernels:UnsharpMask",
            summary="p' = p + α(p − G_σ p) + Gaussian noise (approximate inverse blur; leaks)",
            states=("array",),
        ),
        Component(
            name="block-blur",
            factory=f"{_HERE}.kernels:BlockBlur",
            summary="Gaussian blur σ inside each block (forward dynamics; block-preserving)",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_data_sources():
    return [
        Component(
            name="checkerboard",
            factory=f"{_HERE}.data:Checkerboard",
            summary="block checkerboard of intensities high / low (the paper's data)",
        ),
        Component(
            name="block-constant-random",
            factory=f"{_HERE}.data:BlockConstantRandom",
            summary="random block intensities, optional within-block texture",
        ),
        Component(
            name="file",
            factory=f"{_HERE}.data:ImageFile",
            summary="an image from a .npy or .png file",
        ),
    ]


@hookimpl
def coarsekl_initial_states():
    return [
        Component(
            name="uniform-noise",
            factory=f"{_HERE}.initial:UniformNoise",
            summary="i.i.d. Uniform(low, high) pixels per member, normalised",
            states=("array",),
        ),
        Component(
            name="data",
            factory=f"{_HERE}.initial:DataInitial",
            summary="start at the data state q_data",
            states=("array",),
        ),
        Component(
            name="file",
            factory=f"{_HERE}.initial:FileInitial",
            summary="states from a .npy or .png file (one image or one per member)",
            states=("array",),
        ),
        Component(
            name="forward-blur",
            factory=f"{_HERE}.initial:ForwardBlur",
            summary="block-blur `steps` times from the data or from noise",
            states=("array",),
        ),
    ]
