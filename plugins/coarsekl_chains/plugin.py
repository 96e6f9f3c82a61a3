"""Hook implementations of coarsekl_chains (registered like any outside plugin)."""

from __future__ import annotations

from coarsekl import hookimpl
from coarsekl.registry import Component, Experiment

_HERE = "coarsekl_chains"


@hookimpl
def coarsekl_partitions():
    return [
        Component(
            name="label-vector",
            factory=f"{_HERE}.partitions:LabelVector",
            summary="n chain states cut by labels (or sizes); reference π_j, uniform by default",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_kernels():
    return [
        Component(
            name="matrix",
            factory=f"{_HERE}.kernels:TransitionMatrix",
            summary="p' = p P, one row-stochastic matrix (dense or .npz sparse), leakage ε",
            states=("array",),
        ),
        Component(
            name="matrix-sequence",
            factory=f"{_HERE}.kernels:MatrixSequence",
            summary="p' = p P_k with a time-dependent sequence of matrices, leakage ε",
            states=("array",),
        ),
        Component(
            name="random-block",
            factory=f"{_HERE}.kernels:RandomBlockKernel",
            summary="random block-diagonal P per step and member (3 families), leakage ε",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_metrics():
    return [
        Component(
            name="V_pi",
            factory=f"{_HERE}.metrics:WithinBlockReferenceV",
            summary="within-block KL to the partition's reference π_j, Σ_j w_j D(p(·|j) ‖ π_j)",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_data_sources():
    return [
        Component(
            name="vector",
            factory=f"{_HERE}.data:VectorData",
            summary="intensities over n chain states (values or .npy path)",
        ),
    ]


@hookimpl
def coarsekl_initial_states():
    return [
        Component(
            name="vector",
            factory=f"{_HERE}.data:VectorInitial",
            summary="given distributions over n states (one, or one per member)",
            states=("array",),
        ),
        Component(
            name="dirichlet",
            factory=f"{_HERE}.data:DirichletInitial",
            summary="random Dirichlet distributions (block masses random or the reference)",
            states=("array",),
        ),
        Component(
            name="equilibrium",
            factory=f"{_HERE}.data:EquilibriumInitial",
            summary="Σ_j w^ref_j π_j: reference masses, reference within-block shape",
            states=("array",),
        ),
    ]


@hookimpl
def coarsekl_experiments():
    return [
        Experiment(
            name="theorems",
            script=f"{_HERE}.theorems:run_theorems",
            plot=f"{_HERE}.theorems:save_figures",
            summary="Theorems 1 and 2 on random finite-state chains (V monotone; O(ε) leak)",
        ),
    ]
