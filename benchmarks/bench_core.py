"""Core throughput benchmarks: whole runs, one projected step, the projection alone.

Run: ``python benchmarks/bench_core.py`` (``--quick`` for a smoke run at tiny sizes).
Reports medians over repeats and ratios to the elementwise floor (one np.log plus one
np.exp over the same batch), measured in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import coarsekl
from coarsekl.problem import Problem
from coarsekl.random import MemberRandom, Purpose
from coarsekl.schedules import Step
from coarsekl_blocks.partitions import BlockGrid
from coarsekl_blocks.quantities import BlockMass
from coarsekl_blocks.vdelta import VDeltaProjector, project_masses
from coarsekl_images.data import Checkerboard
from coarsekl_images.kernels import GeometricMean


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_run(quick: bool) -> None:
    config = coarsekl.load_config("paper-restore")
    if quick:
        config = config.with_overrides({"steps": 2, "record.snapshots": [0, 2]})
    seconds = median_time(lambda: coarsekl.run(config), 1 if quick else 5)
    print(
        f"| paper-restore run ({config.steps} steps, base + proj, 5 metrics) "
        f"| {seconds * 1e3:.0f} ms |"
    )


def bench_step(quick: bool) -> None:
    size = 32 if quick else 128
    print(
        "\n| members | step (kernel + projection + masses) | log+exp floor | ratio "
        "| pixel-steps/s |"
    )
    print("|---|---|---|---|---|")
    partition = BlockGrid(shape=(size, size), blocks=(4, 4))
    problem = Problem(
        partition=partition,
        quantity=BlockMass(),
        data=Checkerboard(shape=(size, size)).image(np.random.default_rng(0)),
    )
    kernel = GeometricMean(beta=0.05, sigma=0.5)
    projector = VDeltaProjector(delta=0.01)
    for members in (1, 4) if quick else (1, 16, 64, 256):
        rng = MemberRandom.from_seed(0, Purpose.KERNEL, members)
        state = rng.uniform((size, size))
        state /= state.sum(axis=(-2, -1), keepdims=True)
        step = Step(1, 40, 0.01)

        def one_step(state=state, rng=rng, step=step):
            proposal = kernel.step(state, problem, step, rng)
            projected = projector.project(proposal, problem, step).state
            partition.block_sums(projected)

        def floor(state=state):
            np.exp(np.log(state))

        repeats = 3 if quick else 7
        step_time, floor_time = median_time(one_step, repeats), median_time(floor, repeats)
        rate = members * size * size / step_time
        print(
            f"| {members} | {step_time * 1e3:.2f} ms | {floor_time * 1e3:.2f} ms "
            f"| {step_time / floor_time:.1f}× | {rate / 1e6:.1f} M |"
        )


def bench_projection(quick: bool) -> None:
    print("\n| blocks K | project_masses, batch 16 | per block |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)
    for n_blocks in (16, 256) if quick else (16, 256, 4096, 16384, 65536):
        masses = rng.dirichlet(np.ones(n_blocks), size=16)
        reference = rng.dirichlet(np.ones(n_blocks))
        delta = 0.1 / n_blocks
        lower, upper = np.maximum(reference - delta, 0), np.minimum(reference + delta, 1)
        seconds = median_time(
            lambda m=masses, a=lower, b=upper: project_masses(m, a, b), 3 if quick else 7
        )
        print(f"| {n_blocks} | {seconds * 1e3:.3f} ms | {seconds / n_blocks / 16 * 1e9:.0f} ns |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    quick = parser.parse_args().quick
    print("| workload | median |\n|---|---|")
    bench_run(quick)
    bench_step(quick)
    bench_projection(quick)


if __name__ == "__main__":
    main()
