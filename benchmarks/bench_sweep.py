"""Sweep throughput: the same 64-point sweep run serially and on a 2-worker LocalCluster.

Run: ``python benchmarks/bench_sweep.py`` (``--quick`` for a smoke run: 4 tiny points).
Each point is paper-restore with 8 members (128 × 128 pixels, 40 steps, base and proj, four
metrics), swept over 8 tolerances δ × 8 seeds. Both modes write every point file
(compressed netCDF) and run one thread per point, so the comparison is worker processes
against one process. The cluster is timed twice: starting it (processes, imports), and the
sweep on it, which includes each worker's first-point warm-up (imports, compiled kernels).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import coarsekl
from coarsekl.sweeps import SweepConfig
from coarsekl.sweeps.execute import WORKER_MALLOC_TRIM


def sweep_config(quick: bool):
    steps = 2 if quick else 40
    config = coarsekl.load_config("paper-restore").with_overrides(
        {
            "name": "bench-sweep",
            "steps": steps,
            "members": 1 if quick else 8,
            "data.shape": [16, 16] if quick else [128, 128],
            "record.metrics": ["V", "V_delta", "E_block", "mse"],
            "record.snapshots": [0, steps],
        }
    )
    deltas = [0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    table = {
        "projector.delta": deltas[:2] if quick else deltas,
        "seed": list(range(2 if quick else 8)),
    }
    return config, SweepConfig.from_mapping(table)


def timed_sweep(config, sweep, folder: Path, **mode) -> float:
    """Seconds for the whole sweep into an empty ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    result = coarsekl.sweep(config, folder, sweep=sweep, progress=False, **mode)
    seconds = time.perf_counter() - start
    if result.failed or result.completed != sweep.size:
        raise SystemExit(f"the sweep did not complete: {result}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tiny points (smoke test)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("COARSEKL_THREADS", "1")  # serial: one thread per point, as on workers
    config, sweep = sweep_config(args.quick)
    import dask
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        serial = timed_sweep(config, sweep, Path(scratch) / "serial", serial=True)
        start = time.perf_counter()
        with dask.config.set({WORKER_MALLOC_TRIM: None}):  # as `coarsekl sweep` does
            cluster = LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        with cluster, Client(cluster, set_as_default=False) as client:
            startup = time.perf_counter() - start
            on_cluster = timed_sweep(config, sweep, Path(scratch) / "cluster", client=client)
            # Again on the same, now warm, workers (imports done, compiled kernels loaded).
            warm = timed_sweep(config, sweep, Path(scratch) / "warm", client=client)
        same = coarsekl.open_sweep(Path(scratch) / "serial").E_block.equals(
            coarsekl.open_sweep(Path(scratch) / "cluster").E_block
        )
    total = startup + on_cluster
    print(f"| {sweep.size}-point sweep | wall time | per point | speed-up |")
    print("|---|---|---|---|")
    print(f"| serial (in-process) | {serial:.2f} s | {serial / sweep.size * 1e3:.0f} ms | 1 |")
    print(f"| LocalCluster start ({args.workers} workers × 1 thread) | {startup:.2f} s | | |")
    print(
        f"| sweep on the running cluster | {on_cluster:.2f} s "
        f"| {on_cluster / sweep.size * 1e3:.0f} ms | {serial / on_cluster:.2f}× |"
    )
    print(
        f"| cluster, start + sweep | {total:.2f} s | {total / sweep.size * 1e3:.0f} ms "
        f"| {serial / total:.2f}× |"
    )
    print(
        f"| the same sweep again on the warm workers | {warm:.2f} s "
        f"| {warm / sweep.size * 1e3:.0f} ms | {serial / warm:.2f}× |"
    )
    print(f"\nspeed-up: {serial / total:.2f}× with the start, {serial / on_cluster:.2f}× without")
    print(f"identical E_block: {same}")


if __name__ == "__main__":  # the cluster's worker processes import this module (spawn)
    main()
