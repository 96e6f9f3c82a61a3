"""Hook implementations of coarsekl_gmm (registered like any outside plugin)."""

from __future__ import annotations

from pathlib import Path

from coarsekl import hookimpl
from coarsekl.registry import Component, Experiment

_HERE = "coarsekl_gmm"


@hookimpl
def coarsekl_data_sources():
    return [
        Component(
            name="gaussian-mixture",
            factory=f"{_HERE}.data:MixtureData",
            summary="a Gaussian mixture in R^d given by weights, means and covariances (or std)",
        ),
        Component(
            name="ring",
            factory=f"{_HERE}.data:RingData",
            summary="C isotropic Gaussians evenly spaced on a circle in R² (default 8)",
        ),
        Component(
            name="digits",
            factory=f"{_HERE}.data:DigitsData",
            summary="8 × 8 digits as a 64-D mixture, one full-covariance Gaussian per digit",
        ),
    ]


@hookimpl
def coarsekl_initial_states():
    return [
        Component(
            name="noise",
            factory=f"{_HERE}.data:NoiseInitial",
            summary="particles from N(0, I) (or the noised data q_ᾱ), equal weights",
            states=("ensemble",),
        ),
    ]


@hookimpl
def coarsekl_partitions():
    return [
        Component(
            name="class",
            factory=f"{_HERE}.partitions:ClassPartition",
            summary="particles by mixture class: posterior argmax at ᾱ, or the class of x̂_0",
            states=("ensemble",),
        ),
        Component(
            name="grid",
            factory=f"{_HERE}.partitions:GridPartition",
            summary="particles by the cell of a regular grid over some axes of R^d",
            states=("ensemble",),
        ),
    ]


@hookimpl
def coarsekl_kernels():
    return [
        Component(
            name="ddpm",
            factory=f"{_HERE}.kernels:DDPM",
            summary="DDPM ancestral sampling (Ho et al. 2020), exact mixture score",
            states=("ensemble",),
        ),
        Component(
            name="ddim",
            factory=f"{_HERE}.kernels:DDIM",
            summary="DDIM, η = 0 deterministic or η > 0 (Song et al. 2021), exact score",
            states=("ensemble",),
        ),
        Component(
            name="dpmpp-2m",
            factory=f"{_HERE}.kernels:DPMSolverPP2M",
            summary="DPM-Solver++(2M), second-order multistep (Lu et al. 2022), exact score",
            states=("ensemble",),
        ),
    ]


@hookimpl
def coarsekl_projectors():
    return [
        Component(
            name="reweight",
            factory=f"{_HERE}.projectors:ReweightProjector",
            summary="sample-based V_δ projection: weights in block j times w*_j / w_j",
            states=("ensemble",),
        ),
        Component(
            name="resample",
            factory=f"{_HERE}.projectors:ResampleProjector",
            summary="sample-based V_δ projection: systematic resampling within blocks",
            states=("ensemble",),
        ),
    ]


@hookimpl
def coarsekl_metrics():
    return [
        Component(
            name="ess",
            factory=f"{_HERE}.metrics:EffectiveSampleSize",
            summary="effective sample size 1/Σw² of a particle ensemble",
            states=("ensemble",),
        ),
        Component(
            name="posterior_entropy",
            factory=f"{_HERE}.metrics:PosteriorEntropy",
            summary="weighted mean entropy of the exact class posterior q_ᾱ(c | x)",
            states=("ensemble",),
        ),
        Component(
            name="class_entropy",
            factory=f"{_HERE}.metrics:ClassEntropy",
            summary="entropy H(w) of the block (class) masses: class diversity",
            states=("ensemble",),
        ),
        Component(
            name="mean_error",
            factory=f"{_HERE}.metrics:MeanError",
            summary="distance of the ensemble's weighted mean from the exact mean of q_ᾱ",
            states=("ensemble",),
        ),
        Component(
            name="sliced_wasserstein",
            factory=f"{_HERE}.metrics:SlicedWasserstein",
            summary="sliced Wasserstein-2 distance to the exact q_ᾱ (32 directions)",
            states=("ensemble",),
        ),
        Component(
            name="energy_distance",
            factory=f"{_HERE}.metrics:EnergyDistance",
            summary="energy distance to 2,000 exact samples of q_ᾱ",
            states=("ensemble",),
        ),
        Component(
            name="image_block_error",
            factory=f"{_HERE}.metrics:ImageBlockError",
            summary="particles as square images: L1 error of their mean 2 × 2 block masses",
            states=("ensemble",),
        ),
        Component(
            name="binned_kl",
            factory=f"{_HERE}.metrics:BinnedKL",
            summary="KL of 16 × 16 histograms against exact cell probabilities (2-D)",
            states=("ensemble",),
        ),
    ]


@hookimpl
def coarsekl_experiments():
    configs = Path(__file__).parent / "configs"
    return [
        Experiment(
            name="gmm-samplers",
            script=f"{_HERE}.experiments:run_samplers",
            plot=f"{_HERE}.experiments:save_sampler_figures",
            summary="DDPM vs DDIM vs DPM-Solver++(2M) at 10–100 steps against the exact target",
        ),
        Experiment(
            name="gmm-leakage",
            path=configs / "gmm-leakage.toml",
            summary="a wrong-weights model leaks class mass; reweighting keeps it within δ",
        ),
        Experiment(
            name="gmm-guidance",
            script=f"{_HERE}.experiments:run_guidance",
            plot=f"{_HERE}.experiments:save_guidance_figures",
            summary="classifier guidance γ vs class shift and diversity, with/without V_δ",
        ),
        Experiment(
            name="digits",
            path=configs / "digits.toml",
            summary="8 × 8 digits from a 64-D mixture, biased model, base vs resampled",
        ),
    ]
