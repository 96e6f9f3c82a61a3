"""Hook implementation of coarsekl_paper: the named experiments in examples/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from coarsekl import hookimpl
from coarsekl.registry import Experiment

EXPERIMENTS = {
    "paper-restore": "paper Fig. 1–2: restore a 4 × 4 checkerboard from noise, base vs V_δ",
    "forward-randomization": "block blur from noise: block masses kept, V decreases to 0",
    "round-trip": "paper Sec. 2.5.5: forward block blur, then unsharp-mask reverse",
}


def experiments_folder() -> Path:
    """Installed wheels carry examples/ inside this package; a source checkout has it at the
    repository's top level."""
    packaged = resources.files("coarsekl_paper") / "experiments"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "examples"


@hookimpl
def coarsekl_experiments():
    folder = experiments_folder()
    return [
        Experiment(name=name, path=folder / f"{name}.toml", summary=summary)
        for name, summary in EXPERIMENTS.items()
    ]
