"""Running a sweep: one task per point, serially or on dask.distributed, resumable.

Layout of a sweep folder::

    DIR/sweep.json          the manifest: config (TOML text), dimensions, every point
    DIR/points/00017.nc     one finished point (a complete coarsekl trajectory)
    DIR/failures.json       the points that failed in the last call (absent if none)
    DIR/<name>_sweep.png    the sweep figure (command line)

A point file is written under a temporary name and renamed when complete, so its
existence means the point is finished: a re-run skips it. A folder holding a different
sweep is refused unless ``overwrite=True``, which deletes that sweep's files first.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from coarsekl._version import __version__
from coarsekl.errors import CoarseklError, ConfigError
from coarsekl.sweeps.spec import SweepConfig, SweepError, SweepPoint, coordinate_value

__all__ = ["MANIFEST", "PointFailure", "SweepResult", "read_manifest", "run_point", "sweep"]

MANIFEST = "sweep.json"
FAILURES = "failures.json"
POINTS = "points"
MANIFEST_FORMAT = 1
CHECKED_TABLES = ("data", "initial", "quantity", "kernel", "projector")

_registry = None  # one per process (a dask worker builds it once)
# dask gives its workers MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
# threshold: every state-sized array is then a fresh mmap with page faults, and a run is ~3×
# slower (measured). The local cluster's workers keep the default allocator settings.
WORKER_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@attrs.frozen
class PointTask:
    """What a worker needs to run one point (small and picklable)."""

    index: int
    description: str
    config_toml: str
    path: str
    attributes: dict[str, Any]
    threads: int | None
    progress: bool


@attrs.frozen
class PointOutcome:
    """How one point went: ``error`` is None on success."""

    index: int
    seconds: float = 0.0
    error: str | None = None
    traceback: str = ""


@attrs.frozen
class PointFailure:
    """A point that failed: where it is, its parameter values, the error and where it rose."""

    index: int
    values: dict[str, Any]
    error: str
    traceback: str

    def describe(self) -> str:
        parameters = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        where = f"\n    {self.traceback}" if self.traceback else ""
        return f"point {self.index} ({parameters}) failed: {self.error}{where}"


@attrs.frozen
class SweepResult:
    """What a call to :func:`sweep` did."""

    folder: Path
    total: int
    skipped: int  # finished before this call
    completed: int  # finished by this call
    failures: tuple[PointFailure, ...]

    @property
    def failed(self) -> int:
        return len(self.failures)

    def open(self, **kwargs):
        """The combined dataset (:func:`coarsekl.open_sweep`)."""
        from coarsekl.sweeps.combine import open_sweep

        return open_sweep(self.folder, **kwargs)


def run_point(task: PointTask) -> PointOutcome:
    """Run one point and write its file atomically (runs on a dask worker or in-process)."""
    import tomllib

    import dask

    from coarsekl.config import ExperimentConfig
    from coarsekl.io import save_trajectory
    from coarsekl.manager import get_registry
    from coarsekl.runner import run

    global _registry
    start = time.perf_counter()
    try:
        folder = Path(task.path).parent
        if not folder.is_dir():
            raise SweepError(
                f"the worker on {socket.gethostname()} cannot see the sweep folder {str(folder)!r};"
                " on a remote cluster the output folder must be on a filesystem the workers share"
            )
        if _registry is None:
            _registry = get_registry()
        config = ExperimentConfig.from_mapping(tomllib.loads(task.config_toml))
        dataset = run(config, registry=_registry, progress=task.progress, threads=task.threads)
        dataset.attrs.update(task.attributes)
        # On a dask worker xarray would guard the write with a cluster-wide distributed.Lock
        # (a scheduler round trip per variable); each point owns its file, a local lock does.
        with dask.config.set(scheduler="synchronous"):
            save_trajectory(dataset, task.path)
    except Exception as error:  # reported with the point's parameters; the sweep goes on
        return PointOutcome(
            task.index,
            time.perf_counter() - start,
            error=f"{type(error).__name__}: {error}",
            traceback="" if isinstance(error, CoarseklError) else _traceback_summary(error),
        )
    return PointOutcome(task.index, time.perf_counter() - start)


def _traceback_summary(error: BaseException, frames: int = 3) -> str:
    """The innermost frames as ``file:line in function``, innermost last."""
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    return " → ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in stack)


def sweep(
    config,
    out: str | Path,
    *,
    sweep: SweepConfig | Mapping[str, Any] | None = None,
    serial: bool = False,
    scheduler: str | None = None,
    client=None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    connect_timeout: float = 10.0,
) -> SweepResult:
    """Run every point of a sweep into the folder ``out``; finished points are skipped.

    ``config`` is an ExperimentConfig, mapping, TOML path or named experiment with a
    ``[sweep]`` table, or any config together with ``sweep=`` (a SweepConfig or the table
    as a mapping). Points run in-process with ``serial=True``; on an existing
    ``distributed.Client`` given as ``client``; on the scheduler at ``scheduler``
    (``"tcp://host:8786"``); or by default on a LocalCluster on this machine (``workers``
    processes of ``threads_per_worker`` threads, sized by dask unless given). A point that
    fails is reported and the rest go on; see ``SweepResult.failures``.
    """
    from coarsekl.config import load_config
    from coarsekl.io import prepare_output_dir
    from coarsekl.manager import get_registry

    _check_execution_options(serial, scheduler, client, workers, threads_per_worker)
    registry = get_registry()
    config = load_config(config, registry=registry)
    if sweep is not None:
        if not isinstance(sweep, SweepConfig):
            sweep = SweepConfig.from_mapping(sweep)
        config = attrs.evolve(config, sweep=sweep)
    if config.sweep is None:
        raise ConfigError(
            f"the experiment {config.name!r} has no [sweep] table; add one (see "
            'examples/sweeps/delta-sweep.toml), e.g. [sweep] "projector.delta" = [0.005, 0.01]'
        )
    points = config.sweep.points(config)
    _check_components(points, registry)
    folder = prepare_output_dir(out)
    finished = _claim_folder(folder, config, points, overwrite)
    tasks = [
        _task(folder, config, point, serial=serial, progress=progress)
        for point in points
        if point.index not in finished
    ]
    by_index = {point.index: point for point in points}
    failures: list[PointFailure] = []

    def record(outcome: PointOutcome) -> None:
        bar.update(1)
        if outcome.error is not None:
            failure = PointFailure(
                outcome.index, by_index[outcome.index].values, outcome.error, outcome.traceback
            )
            failures.append(failure)
            if progress:
                bar.write(f"coarsekl: {failure.describe()}", file=sys.stderr)

    with contextlib.ExitStack() as stack:
        if tasks and not serial and client is None:
            client = stack.enter_context(
                _connect(scheduler, connect_timeout)
                if scheduler
                else _local_client(workers, threads_per_worker)
            )
        if tasks and not serial and progress:
            print(_cluster_line(client), file=sys.stderr, flush=True)
        bar = stack.enter_context(_progress_bar(len(points), len(finished), config.name, progress))
        if serial:
            for task in tasks:
                record(run_point(task))
        elif tasks:
            _run_on_dask(client, tasks, record, config.name)
    failures.sort(key=lambda f: f.index)
    _write_failures(folder, failures)
    return SweepResult(
        folder=folder,
        total=len(points),
        skipped=len(finished),
        completed=len(tasks) - len(failures),
        failures=tuple(failures),
    )


def _check_execution_options(serial, scheduler, client, workers, threads_per_worker) -> None:
    chosen = [name for name, value in (("serial", serial), ("scheduler", scheduler),
              ("client", client)) if value]  # fmt: skip
    if len(chosen) > 1:
        raise ConfigError(f"choose one of serial, scheduler and client, got {' and '.join(chosen)}")
    local = (workers, threads_per_worker)
    if chosen and any(v is not None for v in local):
        raise ConfigError(
            "workers and threads per worker size the local cluster; they do not go with "
            f"{chosen[0]} (size a remote cluster where it is started)"
        )
    for name, value in zip(("workers", "threads per worker"), local, strict=True):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}")


def _check_components(points: list[SweepPoint], registry) -> None:
    """Build every distinct component table once, so that a bad value fails before any run."""
    seen: set[tuple[str, str]] = set()
    for point in points:
        for table in CHECKED_TABLES:
            component = getattr(point.config, table)
            if component is None:
                continue
            key = (table, json.dumps(component.to_mapping(), sort_keys=True, default=str))
            if key in seen:
                continue
            seen.add(key)
            try:
                registry.build(table, component.kind, component.params)
            except CoarseklError as error:
                raise type(error)(f"[sweep] the point {point.describe()}: {error}") from None


def fingerprint(config) -> str:
    """SHA-256 of the config (with its [sweep]) as canonical JSON."""
    text = json.dumps(config.to_mapping(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def point_file(index: int, total: int) -> str:
    return f"{POINTS}/{index:0{max(5, len(str(total - 1)))}d}.nc"


def _manifest(config, points: list[SweepPoint]) -> dict[str, Any]:
    dims = [
        {
            "name": axis.name,
            "coords": {p.path: [coordinate_value(v) for v in p.values] for p in axis.parameters},
        }
        for axis in config.sweep.axes
    ]
    return {
        "coarsekl_sweep": MANIFEST_FORMAT,
        "name": config.name,
        "coarsekl_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(config),
        "config": config.to_toml(),
        "dims": dims,
        "points": [
            {
                "index": p.index,
                "grid": list(p.grid),
                "file": point_file(p.index, len(points)),
                "values": p.values,
                "seed": p.config.seed,
            }
            for p in points
        ],
    }


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of the sweep in ``folder`` (SweepError when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SweepError(
            f"{str(folder)!r} is not a sweep folder (no {MANIFEST}); run "
            f"'coarsekl sweep CONFIG --out {folder}' first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SweepError(f"cannot read the sweep manifest {str(path)!r}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("coarsekl_sweep") != MANIFEST_FORMAT:
        raise SweepError(f"{str(path)!r} is not a coarsekl sweep manifest (format 1)")
    return manifest


def _claim_folder(folder: Path, config, points: list[SweepPoint], overwrite: bool) -> set[int]:
    """Check the folder holds this sweep (or none), write the manifest, return finished points."""
    from coarsekl.io import atomic_path

    manifest = _manifest(config, points)
    path = folder / MANIFEST
    if path.exists():
        old = read_manifest(folder)
        if old.get("fingerprint") != manifest["fingerprint"] and not overwrite:
            raise SweepError(
                f"{str(folder)!r} holds a different sweep ({_difference(old, config)}); "
                "use another --out folder, or --overwrite to delete its points and start again"
            )
        if old.get("fingerprint") != manifest["fingerprint"]:
            _delete_sweep(folder, old)
        else:
            manifest["created"] = old.get("created", manifest["created"])
    (folder / POINTS).mkdir(exist_ok=True)
    for stale in (folder / POINTS).glob(".*.nc.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return {point["index"] for point in manifest["points"] if (folder / point["file"]).is_file()}


def _difference(old_manifest: dict[str, Any], config) -> str:
    """The dotted keys whose values differ between the folder's config and ``config``."""
    import tomllib

    try:
        old = _flatten(tomllib.loads(old_manifest.get("config", "")))
    except tomllib.TOMLDecodeError:
        return "its manifest holds no readable config"
    new = _flatten(config.to_mapping())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k, '—')!r} → {new.get(k, '—')!r}" for k in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return f"changed {shown}{more}" if changed else "a different coarsekl sweep format"


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and prefix != "sweep.":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _delete_sweep(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete the files of the sweep described by ``manifest`` (and only those)."""
    for point in manifest.get("points", []):
        (folder / str(point.get("file", ""))).unlink(missing_ok=True)
    (folder / FAILURES).unlink(missing_ok=True)
    (folder / f"{manifest.get('name', '')}_sweep.png").unlink(missing_ok=True)


def _task(folder: Path, config, point: SweepPoint, *, serial: bool, progress: bool) -> PointTask:
    attributes: dict[str, Any] = {
        "sweep_index": point.index,
        "sweep_point": json.dumps(point.values, ensure_ascii=False, default=str),
        "sweep_name": config.name,
    }
    for path, value in point.values.items():
        attributes[f"sweep_{path}"] = coordinate_value(value)
    return PointTask(
        index=point.index,
        description=point.describe(),
        config_toml=point.config.to_toml(),
        path=str(folder / point_file(point.index, config.sweep.size)),
        attributes=attributes,
        threads=None if serial else 1,
        progress=serial and progress,
    )


def _progress_bar(total: int, done: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=done, desc=f"{name} sweep", unit="point", disable=not enabled,
        dynamic_ncols=True,
    )  # fmt: skip


def _run_on_dask(
    client, tasks: list[PointTask], record: Callable[[PointOutcome], None], name: str
) -> None:
    """Submit one task per point and record each outcome as it arrives, in any order."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            run_point, task, key=f"coarsekl-{name}-{token}-point-{task.index}", pure=False
        ): task
        for task in tasks
    }
    try:
        for future in as_completed(futures, loop=client.loop):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # the worker died, the task was lost or cancelled
                outcome = PointOutcome(
                    task.index, error=f"{type(error).__name__}: {error}", traceback=""
                )
            record(outcome)
    finally:
        client.cancel(list(futures))


@contextlib.contextmanager
def _connect(address: str, timeout: float):
    from distributed import Client

    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise SweepError(
            f"cannot reach the dask scheduler at {address!r} within {timeout:g} s "
            f"({type(error).__name__}: {error}); check the address (e.g. tcp://host:8786) "
            "and that 'dask scheduler' runs there, or leave out --scheduler to use a local cluster"
        ) from None
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_client(workers: int | None, threads_per_worker: int | None):
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({WORKER_MALLOC_TRIM: None}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:8787",
            silence_logs=logging.ERROR,
        )
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _cluster_line(client) -> str:
    """``dask: N workers × T threads at ADDRESS; dashboard URL``."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    try:
        dashboard = f"dashboard {client.dashboard_link}"
    except (KeyError, AttributeError):
        dashboard = "no dashboard (pip install bokeh to get one)"
    return (
        f"dask: {len(workers)} workers, {threads} threads at {info.get('address', '?')}; "
        f"{dashboard}"
    )


def _write_failures(folder: Path, failures: list[PointFailure]) -> None:
    from coarsekl.io import atomic_path

    path = folder / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return
    rows = [attrs.asdict(failure) for failure in failures]
    with atomic_path(path) as temporary:
        temporary.write_text(
            json.dumps(rows, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
        )


def exit_status(result: SweepResult) -> int:
    """The number of failed points, at most 125 (126 and up mean other things to shells)."""
    return min(result.failed, 125)
