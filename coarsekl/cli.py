"""The ``coarsekl`` command line: run, plot, plugins, experiments.

Bad input exits with status 2 and one line saying what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from coarsekl._version import __version__
from coarsekl.errors import CoarseklError, ConfigError

__all__ = ["main"]


def _parse_override(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. projector.delta=0.02), got {text!r}")
    try:
        parsed = tomllib.loads(f"value = {value}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word: take it as a string
    return key.strip(), parsed


def _command_run(args: argparse.Namespace) -> int:
    from coarsekl.config import load_config
    from coarsekl.io import prepare_output_dir
    from coarsekl.manager import get_registry
    from coarsekl.plotting import save_figures
    from coarsekl.runner import run

    registry = get_registry()
    scripted = _scripted_experiment(args.config, registry)
    if scripted is not None:
        return _run_script(scripted, args)
    config = load_config(args.config, registry=registry)
    if args.set:
        config = config.with_overrides(dict(_parse_override(item) for item in args.set))
    if config.sweep is not None:
        config = _without_sweep(config, quiet=args.quiet)
    folder = prepare_output_dir(args.out)
    path = folder / f"{config.name}.nc"
    dataset = run(config, registry=registry, progress=not args.quiet, output=path)
    figures = [] if args.no_figures else save_figures(dataset, folder, config.name)
    if not args.quiet:
        print(f"wrote {path}")
        for figure in figures:
            print(f"wrote {figure}")
    return 0


def _scripted_experiment(name: str, registry):
    """The named experiment ``name`` if it is a script (and no file of that name exists)."""
    if Path(name).is_file() or name not in registry.names("experiment"):
        return None
    experiment = registry.lookup("experiment", name).component
    return experiment if experiment.script is not None else None


def _run_script(experiment, args: argparse.Namespace) -> int:
    """``coarsekl run NAME`` of a scripted experiment: the script writes into --out."""
    from coarsekl.io import prepare_output_dir

    if args.set:
        raise ConfigError(
            f"{experiment.name!r} is a scripted experiment; --set applies only to configs "
            "(call its script from Python to change its settings)"
        )
    folder = prepare_output_dir(args.out)
    written = experiment.load_script()(folder, figures=not args.no_figures, progress=not args.quiet)
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
    return 0


def _without_sweep(config, *, quiet: bool):
    """``coarsekl run`` of a config with a [sweep] table runs the base experiment alone."""
    import attrs

    if not quiet:
        print(
            "coarsekl: note: 'run' ignores the [sweep] table and runs the base experiment; "
            "use 'coarsekl sweep CONFIG --out DIR' to run the sweep",
            file=sys.stderr,
        )
    return attrs.evolve(config, sweep=None)


def _command_sweep(args: argparse.Namespace) -> int:
    from coarsekl.config import load_config
    from coarsekl.sweeps import open_sweep, save_sweep_figures, sweep
    from coarsekl.sweeps.execute import exit_status

    config = load_config(args.config)
    if args.set:
        config = config.with_overrides(dict(_parse_override(item) for item in args.set))
    signal.signal(signal.SIGTERM, _interrupt)  # a batch system's SIGTERM: stop like Ctrl-C
    try:
        result = sweep(
            config,
            args.out,
            serial=args.serial,
            scheduler=args.scheduler,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            overwrite=args.overwrite,
            progress=not args.quiet,
            connect_timeout=args.connect_timeout,
        )
    except KeyboardInterrupt:
        print(
            "coarsekl: interrupted; the finished points are kept, and re-running the same "
            "command completes the rest",
            file=sys.stderr,
        )
        return 130
    figures = []
    if not args.no_figures and result.failed < result.total:
        figures = save_sweep_figures(
            open_sweep(result.folder, allow_missing=True), result.folder, config.name
        )
    if not args.quiet:
        print(
            f"{result.total} points: {result.completed} run now, {result.skipped} already "
            f"finished, {result.failed} failed; wrote {result.folder}"
        )
        for figure in figures:
            print(f"wrote {figure}")
    for failure in result.failures if args.quiet else ():
        print(f"coarsekl: {failure.describe()}", file=sys.stderr)
    if result.failed:
        print(
            f"coarsekl: {result.failed} of {result.total} points failed (details in "
            f"{result.folder / 'failures.json'}); re-run the same command to retry them",
            file=sys.stderr,
        )
    return exit_status(result)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _command_plot(args: argparse.Namespace) -> int:
    from coarsekl.io import open_trajectory, prepare_output_dir
    from coarsekl.plotting import save_figures

    if Path(args.file).is_dir():
        return _plot_sweep(args)
    dataset = open_trajectory(args.file)
    folder = prepare_output_dir(args.out or Path(args.file).parent)
    draw = save_figures
    if "state" not in dataset.variables and "position" not in dataset.variables:
        # not a trajectory: a scripted experiment's result?
        draw = _scripted_figures(dataset, args.file)
    for figure in draw(dataset, folder, Path(args.file).stem):
        if not args.quiet:
            print(f"wrote {figure}")
    return 0


def _scripted_figures(dataset, file: str):
    """The figure function of the scripted experiment that wrote ``dataset``."""
    from coarsekl.errors import DataError
    from coarsekl.manager import get_registry

    name = dataset.attrs.get("experiment")
    registry = get_registry()
    if name in registry.names("experiment"):
        plot = registry.lookup("experiment", name).component.load_plot()
        if plot is not None:
            return plot
    raise DataError(
        f"{file!r} is neither a coarsekl trajectory (it has no 'state' or 'position' "
        "variable) nor the "
        "result of a scripted experiment that can redraw its figures"
    )


def _plot_sweep(args: argparse.Namespace) -> int:
    from coarsekl.io import prepare_output_dir
    from coarsekl.sweeps import open_sweep, read_manifest, save_sweep_figures

    name = read_manifest(args.file)["name"]
    folder = prepare_output_dir(args.out or args.file)
    for figure in save_sweep_figures(open_sweep(args.file, allow_missing=True), folder, name):
        if not args.quiet:
            print(f"wrote {figure}")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}")
    return int(text)


def _command_plugins(args: argparse.Namespace) -> int:
    from coarsekl.manager import get_registry

    registry = get_registry()
    rows = []
    for kind in sorted(registry.entries):
        for name in registry.names(kind):
            entry = registry.entries[kind][name]
            provider = entry.provider
            rows.append(
                (
                    kind,
                    name,
                    f"{provider.distribution} {provider.version}",
                    provider.plugin,
                    entry.component.summary,
                )
            )
    header = ("kind", "name", "distribution", "plugin", "summary")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
    for failure in registry.failures:
        print(f"failed to load: {failure.provider}: {failure.error}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coarsekl",
        description="Coarse-grained KL control of diffusion-based generative models.",
    )
    parser.add_argument("--version", action="version", version=f"coarsekl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_parser = commands.add_parser(
        "run", help="run an experiment and write DIR/<name>.nc and its figures"
    )
    run_parser.add_argument(
        "config",
        metavar="CONFIG_OR_NAME",
        help="a TOML file or a named experiment (see 'coarsekl plugins')",
    )
    run_parser.add_argument(
        "--out",
        default="results",
        metavar="DIR",
        help="output folder (created if needed; default: results)",
    )
    run_parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set projector.delta=0.02",
    )
    run_parser.add_argument("--quiet", action="store_true", help="no progress bar, no output")
    run_parser.add_argument("--no-figures", action="store_true", help="write only the .nc file")
    run_parser.set_defaults(handler=_command_run)

    sweep_parser = commands.add_parser(
        "sweep",
        help="run the [sweep] of a config, one point per task (dask), into DIR; resumable",
    )
    sweep_parser.add_argument("config", metavar="CONFIG", help="a TOML file with a [sweep] table")
    sweep_parser.add_argument(
        "--out", required=True, metavar="DIR", help="sweep folder (re-use it to resume)"
    )
    sweep_parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a base config value"
    )
    where = sweep_parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing dask scheduler, e.g. tcp://host:8786"
    )
    where.add_argument("--serial", action="store_true", help="run in this process, no dask")
    sweep_parser.add_argument(
        "--workers", type=_positive_int, metavar="N", help="local cluster: worker processes"
    )
    sweep_parser.add_argument(
        "--threads-per-worker", type=_positive_int, metavar="N", help="local cluster: threads"
    )
    sweep_parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to try to reach --scheduler (default: 10)",
    )
    sweep_parser.add_argument(
        "--overwrite", action="store_true", help="delete a different sweep found in DIR"
    )
    sweep_parser.add_argument("--quiet", action="store_true", help="no progress bar, no output")
    sweep_parser.add_argument("--no-figures", action="store_true", help="no sweep figure")
    sweep_parser.set_defaults(handler=_command_sweep)

    plot_parser = commands.add_parser(
        "plot", help="redraw the figures of a trajectory file, or of a sweep folder"
    )
    plot_parser.add_argument("file", metavar="FILE.nc|DIR")
    plot_parser.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: beside)")
    plot_parser.add_argument("--quiet", action="store_true")
    plot_parser.set_defaults(handler=_command_plot)

    plugins_parser = commands.add_parser(
        "plugins", help="list every component and named experiment with its provider"
    )
    plugins_parser.set_defaults(handler=_command_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CoarseklError as error:
        print(f"coarsekl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coarsekl: interrupted; no output file was left half-written", file=sys.stderr)
        return 130
