"""Performance benchmarks of the coarsekl_gmm plugin: diffusion sampling with projection.

Run ``python benchmarks/bench_gmm.py`` for every table (about two minutes), ``--only NAME``
for one of: ring, digits; ``--quick`` for a smoke run at tiny sizes (what CI runs).

The targets (issue 7): DDIM with 50 steps on 1,000,000 particles of the 2-D 8-component
``ring`` mixture, projected (``reweight``, δ = 0.01, class partition), through
``coarsekl.run`` end to end, at ≥ 10 million particle-steps per second; the 64-D
``digits`` mixture (10 full-covariance components) at ≥ 250,000. Particle-steps per second
= members × particles × steps / wall time of the whole run (numba compiles in a tiny
warm-up run first, not in the timed ones). Times are medians over repeats; shares and
ratios compare measurements taken in the same run, since these machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time

import numpy as np
from bench_core import median_time  # this folder is the script's sys.path[0]

import coarsekl
from coarsekl.numerics import compiled_enabled
from coarsekl.runner import Engine, _MemorySnapshots, _Recorder, build_experiment
from coarsekl.schedules import Step
from coarsekl_blocks.vdelta import project_masses
from coarsekl_gmm.mixture import COMPILED_MAX_DIM
from coarsekl_gmm.particles import block_weights, resample_within_blocks, reweight
from coarsekl_gmm.samplers import ddim_step

RING_TARGET = 10_000_000  # particle-steps per second
DIGITS_TARGET = 250_000
DELTA = 0.01


def gmm_config(
    data: dict,
    particles: int,
    steps: int,
    members: int = 1,
    projector: str = "reweight",
    reference_samples: int | None = None,
):
    """DDIM (η = 0, cosine schedule) with a V_δ projection on the class partition, the
    ``proj`` scheme only, E_block and ESS recorded, one snapshot at the end."""
    partition = {"kind": "class"}
    if reference_samples is not None:
        partition["reference_samples"] = reference_samples
    return coarsekl.load_config(
        {
            "name": "bench-gmm",
            "steps": steps,
            "members": members,
            "seed": 0,
            "particles": particles,
            "schemes": ["proj"],
            "data": data,
            "initial": {"kind": "noise", "schedule": "cosine"},
            "partition": partition,
            "kernel": {"kind": "ddim", "schedule": "cosine"},
            "projector": {"kind": projector, "delta": DELTA},
            "record": {"metrics": ["E_block", "ess"], "snapshots": [steps]},
        }
    )


def time_run(config, repeats: int, threads: int | None = None) -> float:
    """Median wall seconds of ``coarsekl.run`` (a tiny run of the same kind compiles first)."""
    registry = coarsekl.get_registry()
    tiny = config.with_overrides({"particles": 2000, "steps": 3, "record.snapshots": [3]})
    coarsekl.run(tiny, registry=registry, threads=threads)
    return median_time(lambda: coarsekl.run(config, registry=registry, threads=threads), repeats)


def rate_row(label: str, config, seconds: float, target: float, first: float | None) -> str:
    rate = config.members * config.particles * config.steps / seconds
    versus = "1.00×" if first is None else f"{rate / first:.2f}×"
    return (
        f"| {label} | {config.members} | {seconds:.2f} s | {rate / 1e6:.2f} M | {versus} "
        f"| {target / 1e6:g} M | {rate / target:.2f}× | {'yes' if rate >= target else 'no'} |"
    )


RATE_HEADER = (
    "| run | members | wall (median) | particle-steps/s | vs first row | target "
    "| measured / target | met |\n|---|---|---|---|---|---|---|---|"
)


def step_parts(config, projector: str, repeats: int) -> list[tuple[str, float]]:
    """Median seconds of each part of one step, measured directly at the middle step on
    ``config.particles`` particles drawn from the exact noised data there."""
    registry = coarsekl.get_registry()
    small = config.with_overrides({"particles": 2000, "members": 1})  # the parts, not states
    experiment = build_experiment(small, registry)
    mixture, partition = experiment.problem.data, experiment.problem.partition
    kernel, n_blocks = experiment.kernel, partition.n_blocks
    now, after = kernel.levels(Step(config.steps // 2 + 1, config.steps))
    rng = np.random.default_rng(0)
    x = mixture.noised(now).sample(config.particles, rng)[0]
    weights = np.full(config.particles, 1.0 / config.particles)
    reference = partition.reference_masses(mixture, after)
    lower, upper = np.maximum(reference - DELTA, 0.0), np.minimum(reference + DELTA, 1.0)

    score, _ = mixture.score_and_posteriors(x, now)
    prediction = -math.sqrt(1.0 - now) * score
    x_next = ddim_step(x, prediction, now, after)
    labels = mixture.classify(x_next, after)

    def update():
        return ddim_step(x, -math.sqrt(1.0 - now) * score, now, after)

    def project():
        masses = block_weights(weights, labels, n_blocks)
        projected, _ = project_masses(masses, lower, upper)
        if projector == "reweight":
            return reweight(weights, labels, projected)
        indices = resample_within_blocks(weights, labels, projected, np.array(0.5))
        return x_next[indices]

    if mixture.dim <= COMPILED_MAX_DIM:
        labels_part = ("class labels: mixture.classify", lambda: mixture.classify(x_next, after))
    else:  # large d: the labels are the argmax of the posteriors the next step reuses
        labels_part = (
            "class labels: argmax of the exact posteriors (their score is reused next step)",
            lambda: mixture.score_and_posteriors(x_next, after)[1].argmax(axis=-1),
        )
    parts = [
        (
            "noise predictor: mixture.score_and_posteriors"
            + ("" if mixture.dim <= COMPILED_MAX_DIM else " (in the run: shared with the labels)"),
            lambda: mixture.score_and_posteriors(x, now),
        ),
        ("DDIM update: ε̂ = −√(1 − ᾱ) score, ddim_step", update),
        labels_part,
        (
            f"projection: block_weights + project_masses + {projector}"
            + (" + gather" if projector == "resample" else ""),
            project,
        ),
        (
            f"reference masses at the new ᾱ ({partition.reference_samples:,} samples)",
            lambda: partition.reference_masses(mixture, after),
        ),
    ]
    for _, function in parts:  # compile and warm the caches
        function()
    times = [[] for _ in parts]
    for _ in range(repeats):  # round-robin, so that a slow spell of the machine hits all
        for (_, function), seconds in zip(parts, times, strict=True):
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
    return [(name, statistics.median(t)) for (name, _), t in zip(parts, times, strict=True)]


def engine_step(config, repeats: int) -> float:
    """Median seconds of one engine step (kernel, projection, labels, block masses, metrics,
    records) on ``config``'s whole batch, over steps 2 … repeats + 1."""
    experiment = build_experiment(config, coarsekl.get_registry())
    engine = Engine(experiment, threads=2)
    engine.start(_Recorder(experiment, _MemorySnapshots(experiment)))
    engine.advance(1)  # warm the caches
    times = []
    for index in range(2, min(repeats + 2, config.steps + 1)):
        start = time.perf_counter()
        engine.advance(index)
        times.append(time.perf_counter() - start)
    engine.close()
    return statistics.median(times)


def print_parts(config, projector: str, run_seconds: float, repeats: int) -> None:
    per_step = run_seconds / config.steps
    step = engine_step(config, repeats)
    parts = step_parts(config, projector, repeats)
    print(
        f"\nOne step part by part ({config.particles:,} particles, {projector}, parts at the "
        f"middle step, each timed alone), against one engine step and the run's wall / "
        f"{config.steps}:\n"
    )
    print("| part | time | share of an engine step | particle-steps/s alone |\n|---|---|---|---|")
    for name, seconds in parts:
        print(
            f"| {name} | {seconds * 1e3:.1f} ms | {seconds / step:.0%} "
            f"| {config.particles / seconds / 1e6:.2f} M |"
        )
    total = sum(seconds for _, seconds in parts)
    rows = [
        ("sum of the parts", total),
        ("one engine step (Engine.advance: the parts + metrics, checks, records)", step),
        ("whole run per step (coarsekl.run wall / steps: + set-up, initial particles)", per_step),
    ]
    for name, seconds in rows:
        print(
            f"| {name} | {seconds * 1e3:.1f} ms | {seconds / step:.0%} "
            f"| {config.particles / seconds / 1e6:.2f} M |"
        )


def print_target(name: str, measured: float, target: float) -> None:
    met = "yes" if measured >= target else "no"
    print(
        f"\n**{name}**: measured {measured:,.0f} particle-steps/s, target {target:,.0f}, "
        f"met: {met} ({measured / target:.2f}× the target)"
    )


def bench_ring(quick: bool) -> None:
    """Target 1: DDIM, 50 steps, 1,000,000 particles of the 2-D ring mixture, projected."""
    particles, steps = (2000, 3) if quick else (1_000_000, 50)
    repeats, part_repeats = (1, 2) if quick else (3, 7)
    data = {"kind": "ring", "components": 8}
    print(
        f"\n### Target 1: DDIM, {steps} steps, {particles:,} particles, 2-D ring of 8, "
        f"V_δ by class (δ = {DELTA}), coarsekl.run end to end\n"
    )
    print(RATE_HEADER)
    runs = [
        ("reweight, threads 2", gmm_config(data, particles, steps), 2),
        ("resample, threads 2", gmm_config(data, particles, steps, projector="resample"), 2),
        ("reweight, 2 members, threads 2", gmm_config(data, particles, steps, members=2), 2),
    ]
    first = None
    seconds = {}
    for label, config, threads in runs:
        seconds[label] = time_run(config, repeats, threads)
        print(rate_row(label, config, seconds[label], RING_TARGET, first))
        rate = config.members * config.particles * config.steps / seconds[label]
        first = first or rate
    main = runs[0]
    print_parts(main[1], "reweight", seconds[main[0]], part_repeats)
    print_parts(runs[1][1], "resample", seconds[runs[1][0]], part_repeats)
    print_target(
        "Target 1 (reweight, 1 member)",
        particles * steps / seconds[main[0]],
        RING_TARGET,
    )


def bench_digits(quick: bool) -> None:
    """Target 2: DDIM on the 64-D digits mixture (10 full-covariance components)."""
    particles, steps = (2000, 3) if quick else (50_000, 20)
    repeats, part_repeats = (1, 2) if quick else (3, 7)
    data = {"kind": "digits"}
    print(
        f"\n### Target 2: DDIM, {steps} steps, {particles:,} particles, 64-D digits mixture "
        f"(10 full-covariance components), V_δ by class (δ = {DELTA}, 20,000 reference "
        "samples)\n"
    )
    print(RATE_HEADER)
    config = gmm_config(data, particles, steps, reference_samples=20000)
    seconds = time_run(config, repeats, 2)
    print(rate_row("reweight, threads 2", config, seconds, DIGITS_TARGET, None))
    print_parts(config, "reweight", seconds, part_repeats)
    print_target("Target 2 (digits, reweight)", particles * steps / seconds, DIGITS_TARGET)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{model}, {cores} cores; Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba_version} (compiled kernels {'on' if compiled_enabled() else 'off'}); "
        f"{when}"
    )


BENCHMARKS = {"ring": bench_ring, "digits": bench_digits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name in args.only or BENCHMARKS:
        BENCHMARKS[name](args.quick)


if __name__ == "__main__":
    main()
