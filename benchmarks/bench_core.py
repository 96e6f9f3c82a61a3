"""Core performance benchmarks, each measured side by side in one process.

Run ``python benchmarks/bench_core.py`` for every table (a few minutes), ``--only NAME``
for one of: restore, step, blocks, sizes, memory, startup; ``--quick`` for a smoke run at
tiny sizes (what CI runs). Times are medians over repeats; ratios compare measurements
taken in the same run, since these machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import coarsekl
from coarsekl.numerics import default_threads, reference_numerics, thread_budget
from coarsekl.runner import Engine, _MemorySnapshots, _Recorder, build_experiment
from coarsekl_blocks.vdelta import VDeltaProjector

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import straightforward  # noqa: E402  (the baseline beside this file)

RESTORE_METRICS = ["V", "V_delta", "E_block", "mse"]


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_config(size: int, blocks: int, members: int, schemes=("proj",), dtype="float64"):
    """A geometric-mean + V_δ run on a size × size checkerboard, no metrics, no snapshots."""
    return coarsekl.load_config(
        {
            "name": "bench",
            "steps": 1,
            "members": members,
            "schemes": list(schemes),
            "dtype": dtype,
            "data": {"kind": "checkerboard", "shape": [size, size], "blocks": [blocks, blocks]},
            "initial": {"kind": "uniform-noise"},
            "partition": {"kind": "blocks", "blocks": [blocks, blocks]},
            "kernel": {"kind": "geometric-mean", "beta": 0.05, "sigma": 0.5},
            "projector": {"kind": "vdelta", "delta": 0.1 / blocks**2},
            "record": {"metrics": [], "snapshots": []},
        }
    )


@contextlib.contextmanager
def stepper(config, threads: int | None = None):
    """A function that advances a warmed-up engine by one step (the same step each time)."""
    experiment = build_experiment(config, coarsekl.get_registry())
    engine = Engine(experiment, threads=threads)
    engine.start(_Recorder(experiment, _MemorySnapshots(experiment)))
    engine.advance(1)  # compile and warm the caches
    try:
        yield lambda: engine.advance(1)
    finally:
        engine.close()


SETTLE_SECONDS = 0.02  # numba's OpenMP threads spin for some milliseconds after a loop


def interleaved_medians(timed: dict, rounds: int, block: int = 5) -> dict:
    """Median seconds of each timed function, round after round in turn, so that a slow
    spell of this shared machine falls on all of them alike instead of on one table row.

    ``timed`` maps keys to context managers factories that give the function (an engine
    is built for its block and closed after it, as one run at a time would). Each block
    waits for the machine to settle (no threads left spinning from the block before),
    calls the function twice untimed and then times ``block`` calls in a row: a steady
    state, of that function alone."""
    times = {key: [] for key in timed}
    for _ in range(rounds):
        for key, factory in timed.items():
            with factory() as function:
                time.sleep(SETTLE_SECONDS)
                function()
                function()
                times[key].append(median_time(function, block))
    return {key: statistics.median(values) for key, values in times.items()}


def plain(function):
    """A factory for :func:`interleaved_medians` of a function that needs no set-up."""
    return lambda: contextlib.nullcontext(function)


def bench_restore(quick: bool) -> None:
    """Target 1: coarsekl.run against the straightforward implementation."""
    config = coarsekl.load_config("paper-restore").with_overrides(
        {"record.metrics": RESTORE_METRICS, "record.snapshots": [0, 40]}
    )
    if quick:
        config = config.with_overrides({"steps": 3, "record.snapshots": [0, 3]})
    registry = coarsekl.get_registry()
    experiment = build_experiment(config, registry)
    kernel, projector = config.kernel.params, config.projector.params

    def baseline():
        return straightforward.restore(
            experiment.problem.data,
            experiment.initial_states[0],
            tuple(config.partition.params["blocks"]),
            config.steps,
            kernel["beta"],
            kernel["sigma"],
            projector["delta"],
        )

    dataset = coarsekl.run(config, registry=registry)
    expected = baseline()
    worst = max(
        float(np.max(np.abs(dataset[name].sel(scheme=scheme, member=0).values - values)))
        for scheme in ("base", "proj")
        for name, values in expected[scheme].items()
    )
    worst_pre = max(
        float(np.max(np.abs(dataset[f"{name}_pre"].sel(scheme="proj", member=0).values - values)))
        for name, values in expected["proj_pre"].items()
    )

    # Interleaved: each round times all three one after the other, so that a slow spell
    # of this shared machine falls on all of them; the speed-up is the median of the
    # rounds' ratios.
    def run():
        coarsekl.run(config, registry=registry)

    def run_reference():
        with reference_numerics():
            run()

    rounds = 1 if quick else 15
    times = {"fast": [], "reference": [], "slow": []}
    run_reference()
    run()
    # Every timed fast run follows a straightforward run, the first one too: right after
    # the plain-numpy path, numpy's OpenBLAS threads still spin for about 0.1 s and slow
    # the compiled loops (1.65×, measured).
    baseline()
    for _ in range(rounds):
        for name, function in (("fast", run), ("reference", run_reference), ("slow", baseline)):
            times[name].append(median_time(function, 1))
    slow, reference, fast = (statistics.median(times[k]) for k in ("slow", "reference", "fast"))

    def rounds_speed_up(name: str) -> list[float]:
        return [s / t for s, t in zip(times["slow"], times[name], strict=True)]

    def speed_up(name: str) -> float:
        return statistics.median(rounds_speed_up(name))

    print("\n### Target 1: paper-restore against the straightforward implementation\n")
    print(f"({rounds} interleaved rounds; speed-up: the median of the rounds' ratios)\n")
    print("| implementation | median | speed-up |\n|---|---|---|")
    print(f"| straightforward (loops over blocks, bisection) | {slow * 1e3:.1f} ms | 1.0× |")
    print(
        f"| coarsekl.run, plain-numpy path | {reference * 1e3:.1f} ms "
        f"| {speed_up('reference'):.1f}× |"
    )
    print(f"| coarsekl.run, compiled path | {fast * 1e3:.1f} ms | {speed_up('fast'):.1f}× |")
    fast_rounds = rounds_speed_up("fast")
    print(
        f"\ncompiled path, speed-up of single rounds: {min(fast_rounds):.1f}× to "
        f"{max(fast_rounds):.1f}× (quartiles {_quartiles(fast_rounds)})"
    )
    print(f"\nlargest metric difference: {max(worst, worst_pre):.2e}")
    restore_breakdown(config, registry, experiment, quick)


def _quartiles(values) -> str:
    if len(values) < 2:
        return "n/a"
    first, _, third = statistics.quantiles(values, n=4)
    return f"{first:.1f}× and {third:.1f}×"


def restore_breakdown(config, registry, experiment, quick: bool) -> None:
    """Where a paper-restore run's time goes: the run without metrics and with 3 steps
    (its fixed cost by extrapolation), and the parts of a step timed alone."""
    steps = config.steps
    short = 1 if quick else 3
    short_run = f"all four metrics, {short} step{'s' * (short > 1)}"
    variants = {
        "all four metrics": config,
        "no metrics": config.with_overrides({"record.metrics": []}),
        short_run: config.with_overrides({"steps": short, "record.snapshots": [0, short]}),
    }
    timed = {
        name: plain(functools.partial(coarsekl.run, variant, registry=registry))
        for name, variant in variants.items()
    }
    medians = interleaved_medians(timed, 1 if quick else 9, block=3)
    full, few = medians["all four metrics"], medians[short_run]
    per_step = (full - few) / (steps - short)
    print("\nWhere a run's time goes (interleaved medians):\n")
    print("| run | median |\n|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.2f} ms |")
    print(
        f"\nper step {per_step * 1e6:.0f} µs; fixed per run {(few - short * per_step) * 1e3:.2f} ms"
    )

    # The parts of one step, each called alone on a state of the run (2 images, 128²).
    problem, layout, step = experiment.problem, experiment.states, experiment.steps[1]
    state = layout.repeat(experiment.initial_states, len(config.schemes))
    proposal = experiment.kernel.step(state, problem, step, None)
    batch = state.shape[:2]
    recorded = state.copy()
    experiment.metrics["V"].compute(recorded, problem, step)  # V keeps the logs it takes
    scheme = proposal[1]  # with its block masses known, as the runner hands it over
    problem.remember_block_masses(
        scheme, layout.check_and_sum(proposal, batch, "", 1, problem)[1][1]
    )
    parts = {
        "kernel (geometric mean, both schemes), taking its logs": lambda: experiment.kernel.step(
            state, problem, step, None
        ),
        "kernel, reading the logs V took of the state": lambda: experiment.kernel.step(
            recorded, problem, step, None
        ),
        # (with the block sums the kernel took of its result: no pass of its own)
        "contract check + block masses": lambda: layout.check_and_sum(
            proposal, batch, "kernel", 1, problem
        ),
        "projection (one scheme, with the block sums of its result)": lambda: (
            experiment.projector.project(scheme, problem, step)
        ),
        "V": lambda: experiment.metrics["V"].compute(proposal, problem, step),
        "mse": lambda: experiment.metrics["mse"].compute(proposal, problem, step),
    }
    repeats = 20 if quick else 2000
    print("\n| part of a step, timed alone | median per call |\n|---|---|")
    with thread_budget(default_threads()):
        for name, function in parts.items():
            function()
            seconds = statistics.median(
                median_time(function, repeats) for _ in range(1 if quick else 5)
            )
            print(f"| {name} | {seconds * 1e6:.1f} µs |")
    runner_share(config, registry, quick)


def runner_share(config, registry, quick: bool) -> None:
    """The runner's own share of a step: ``Engine.advance`` against the same plugin calls
    made in a bare loop on the same batch (kernel, contract check, projection in place of
    the scheme 'proj', its contract check, V and mse), interleaved in rounds."""
    experiment = build_experiment(config, registry)
    engine = Engine(experiment)
    engine.start(_Recorder(experiment, _MemorySnapshots(experiment)))
    problem, layout, step = experiment.problem, experiment.states, experiment.steps[1]
    kernel, projector = experiment.kernel, experiment.projector
    metrics = [experiment.metrics[name] for name in ("V", "mse")]
    proj = list(config.schemes).index("proj")

    def bare_step() -> None:
        state = engine.states[0]
        proposal = kernel.step(state, problem, step, None)
        proposal, masses = layout.check_and_sum(
            proposal, state.shape[:2], "", 1, problem, remember=False
        )
        scheme = proposal[proj]
        problem.remember_block_masses(scheme, masses[proj])
        projection = projector.project(scheme, problem, step, in_place=True)
        new_masses = masses.copy()
        new_masses[proj] = layout.check_and_sum(
            projection.state, state.shape[1:2], "", 1, problem, remember=False
        )[1]
        problem.remember_block_masses(proposal, new_masses)
        for metric in metrics:
            metric.compute(proposal, problem, step)
        engine.states[0], engine.masses[0] = proposal, new_masses

    steps = 5 if quick else 200
    timed = {
        "Engine.advance": plain(lambda: [engine.advance(1) for _ in range(steps)]),
        "the same plugin calls, bare": plain(lambda: [bare_step() for _ in range(steps)]),
    }
    try:
        with engine.loop_budget:
            medians = interleaved_medians(timed, 1 if quick else 7, block=3)
    finally:
        engine.close()
    print("\n| a step of the paper-restore batch | median |\n|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds / steps * 1e6:.1f} µs |")


def bench_step(quick: bool) -> None:
    """Target 2: one projected geometric-mean step against the log + exp floor."""
    size = 32 if quick else 128
    print(f"\n### Target 2: one projected geometric-mean step, {size} × {size}, 4 × 4 blocks\n")
    print(
        "| members | threads | step | np.log + np.exp floor | step / floor | pixel-steps/s |\n"
        "|---|---|---|---|---|---|"
    )
    rounds = 1 if quick else 7
    cases = [(m, t) for m in ((1, 4) if quick else (1, 16, 64, 256)) for t in (1, 2)]
    timed = {}
    for members, threads in cases:
        batch = np.random.default_rng(0).uniform(0.1, 1.0, (members, size, size))
        timed["floor", members, threads] = plain(lambda b=batch: np.exp(np.log(b)))
        config = step_config(size, 4, members)
        timed["step", members, threads] = functools.partial(stepper, config, threads)
    medians = interleaved_medians(timed, rounds)
    for members, threads in cases:
        seconds, floor = medians["step", members, threads], medians["floor", members, threads]
        rate = members * size * size / seconds
        print(
            f"| {members} | {threads} | {seconds * 1e3:.2f} ms | {floor * 1e3:.2f} ms "
            f"| {seconds / floor:.2f}× | {rate / 1e6:.0f} M |"
        )


def bench_blocks(quick: bool) -> None:
    """Target 3: step time against the number of blocks K at a fixed image size, and the
    projection's share of a step: timed inside the very steps it belongs to (in place, as
    the runner projects), so that a slow spell of the machine falls on both alike."""
    size = 64 if quick else 1024
    counts = (2, 8) if quick else (4, 16, 32, 64, 128, 256)
    print(f"\n### Target 3: scaling in blocks, {size} × {size}, one member\n")
    print(
        "| blocks | K | step | projection in the step | share of the step "
        "| projection alone, out of place |\n|---|---|---|---|---|---|"
    )
    repeats = 3 if quick else 15
    for blocks in counts:
        config = step_config(size, blocks, 1)
        steps, projections = [], []
        with stepper(config) as advance, timed_calls(VDeltaProjector, "project") as inside:
            for _ in range(repeats):
                inside.clear()
                start = time.perf_counter()
                advance()
                steps.append(time.perf_counter() - start)
                projections.append(sum(inside))
        share = statistics.median(p / s for p, s in zip(projections, steps, strict=True))
        experiment = build_experiment(config, coarsekl.get_registry())
        state = experiment.initial_states[None].copy()
        info = experiment.step_info(1)
        alone = median_time(
            lambda s=state, e=experiment, i=info: e.projector.project(s[0], e.problem, i), repeats
        )
        print(
            f"| {blocks} × {blocks} | {blocks**2} | {statistics.median(steps) * 1e3:.2f} ms "
            f"| {statistics.median(projections) * 1e3:.2f} ms | {share:.0%} "
            f"| {alone * 1e3:.2f} ms |"
        )


@contextlib.contextmanager
def timed_calls(owner: type, name: str):
    """Within the block, the seconds of every call of method ``name`` of class ``owner``
    are appended to the list it gives."""
    method = getattr(owner, name)
    seconds: list[float] = []

    @functools.wraps(method)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, timed)
    try:
        yield seconds
    finally:
        setattr(owner, name, method)


def bench_sizes(quick: bool) -> None:
    """Target 4: step time per pixel from 64 × 64 to 2048 × 2048 (same pixels per batch)."""
    sizes = (32, 64) if quick else (64, 128, 256, 512, 1024, 2048)
    total = sizes[-1] ** 2
    print(f"\n### Target 4: scaling in image size, 4 × 4 blocks, batch of {sizes[-1]}² pixels\n")
    print(
        "| size | members | step, 1 thread | per pixel | vs 64² | step, 2 threads | per pixel |\n"
        "|---|---|---|---|---|---|---|"
    )
    rounds = 1 if quick else 7
    timed = {
        (size, threads): functools.partial(stepper, step_config(size, 4, total // size**2), threads)
        for size in sizes
        for threads in (1, 2)
    }
    medians = interleaved_medians(timed, rounds)
    first = medians[sizes[0], 1] / total
    for size in sizes:
        single, double = medians[size, 1] / total, medians[size, 2] / total
        print(
            f"| {size} × {size} | {total // size**2} | {single * total * 1e3:.1f} ms "
            f"| {single * 1e9:.2f} ns | {single / first:.2f}× "
            f"| {double * total * 1e3:.1f} ms | {double * 1e9:.2f} ns |"
        )
    for threads in (1, 2):
        spread = [medians[size, threads] for size in sizes]
        print(
            f"\n{threads} thread{'s' * (threads > 1)}: slowest size per pixel "
            f"{max(spread) / min(spread):.2f}× the fastest"
        )


MEMORY_SCRIPT = """
import json, pathlib, re, sys, tempfile
import coarsekl

def status(field):
    text = pathlib.Path("/proc/self/status").read_text()
    return int(re.search(field + r":\\s+(\\d+) kB", text).group(1))

config = coarsekl.load_config(json.loads(sys.argv[1]))
tiny = config.with_overrides({"members": 1, "steps": 1, "record.snapshots": [0, 1]})
with tempfile.TemporaryDirectory() as folder:  # imports and compiles everything
    coarsekl.run(tiny, output=pathlib.Path(folder) / "tiny.nc").close()
pathlib.Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
before = status("VmRSS")
with tempfile.TemporaryDirectory() as folder:
    dataset = coarsekl.run(config, output=pathlib.Path(folder) / "run.nc")
    dataset.close()
print(before, status("VmHWM"))
"""


def peak_memory_mib(config) -> tuple[float, float]:
    """(peak RSS, peak RSS added by the run) in MiB, in a fresh process that runs
    ``config`` to a file; the second excludes the libraries loaded before the run."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(config.to_mapping())],
        capture_output=True,
        text=True,
        check=True,
    )
    before, peak = (int(value) / 1024 for value in result.stdout.split()[-2:])
    return peak, peak - before


def bench_memory(quick: bool) -> None:
    """Target 5: peak memory against the number of snapshots, and float32 against float64."""
    size, members, steps = (64, 2, 10) if quick else (512, 16, 100)
    state_mib = 2 * members * size**2 * 8 / 2**20
    print(f"\n### Target 5: peak memory, {members} members × {size}², {steps} steps, to a file\n")
    print(f"(one float64 batch of states, base + proj: {state_mib:.1f} MiB)\n")
    print(
        "| dtype | snapshots | peak RSS | vs 11 snapshots | added by the run "
        "| vs 11 snapshots |\n|---|---|---|---|---|---|"
    )
    for dtype in ("float64", "float32"):
        peaks = {}
        for count in (11, steps + 1):
            snapshots = sorted({round(i * steps / (count - 1)) for i in range(count)})
            config = step_config(size, 4, members, ("base", "proj"), dtype).with_overrides(
                {"steps": steps, "record.snapshots": snapshots, "record.metrics": None}
            )
            peak, added = peaks[count] = peak_memory_mib(config)
            # (the peak includes the process's memory before the run, which varies from
            # process to process by up to about 100 MiB: what the run adds compares runs)
            print(
                f"| {dtype} | {len(snapshots)} | {peak:.0f} MiB | {peak / peaks[11][0]:.2f}× "
                f"| {added:.0f} MiB | {added / peaks[11][1]:.2f}× |"
            )


def bench_startup(quick: bool) -> None:
    """Target 6: command-line start-up."""
    print("\n### Target 6: start-up\n\n| command | median |\n|---|---|")
    command = [sys.executable, "-m", "coarsekl"]
    env = {**os.environ, "COARSEKL_DISABLE_PLUGIN_AUTOLOAD": ""}
    for arguments in (["--help"], ["plugins"]):
        seconds = median_time(
            lambda a=arguments: subprocess.run(
                command + a, capture_output=True, check=True, env=env
            ),
            3 if quick else 7,
        )
        print(f"| coarsekl {' '.join(arguments)} | {seconds:.2f} s |")


BENCHMARKS = {
    "restore": bench_restore,
    "step": bench_step,
    "blocks": bench_blocks,
    "sizes": bench_sizes,
    "memory": bench_memory,
    "startup": bench_startup,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args()
    for name in args.only or BENCHMARKS:
        BENCHMARKS[name](args.quick)


if __name__ == "__main__":
    main()
