"""The ``coarsekl`` command line: run, plot, plugins, experiments.

Bad input exits with status 2 and one line saying what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
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
    from coarsekl.io import prepare_output_dir, save_trajectory
    from coarsekl.manager import get_registry
    from coarsekl.plotting import save_figures
    from coarsekl.runner import run

    registry = get_registry()
    config = load_config(args.config, registry=registry)
    if args.set:
        config = config.with_overrides(dict(_parse_override(item) for item in args.set))
    folder = prepare_output_dir(args.out)
    dataset = run(config, registry=registry, progress=not args.quiet)
    path = save_trajectory(dataset, folder / f"{config.name}.nc")
    figures = [] if args.no_figures else save_figures(dataset, folder, config.name)
    if not args.quiet:
        print(f"wrote {path}")
        for figure in figures:
            print(f"wrote {figure}")
    return 0


def _command_plot(args: argparse.Namespace) -> int:
    from coarsekl.io import open_trajectory, prepare_output_dir
    from coarsekl.plotting import save_figures

    dataset = open_trajectory(args.file)
    folder = prepare_output_dir(args.out or Path(args.file).parent)
    for figure in save_figures(dataset, folder, Path(args.file).stem):
        if not args.quiet:
            print(f"wrote {figure}")
    return 0


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

    plot_parser = commands.add_parser("plot", help="redraw the figures of a trajectory file")
    plot_parser.add_argument("file", metavar="FILE.nc")
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
