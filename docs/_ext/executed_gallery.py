"""Run the named experiments while the site builds, for the gallery's figures.

On ``builder-inited`` every named experiment that is a TOML config of a first-party plugin
(``paper-restore``, ``forward-randomization``, ``round-trip``, …) runs with
``coarsekl.run`` and its standard figures are drawn into ``docs/_generated/`` (ignored by
git), so the gallery always shows what the current code computes. ``gallery.md`` includes
them as ``_generated/<name>_<figure>.png``. Each run takes about a second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

GENERATED = Path(__file__).resolve().parents[1] / "_generated"
FIRST_PARTY = ("coarsekl_",)


def gallery_experiments(registry) -> list[str]:
    """Names of the TOML experiments provided by first-party plugins."""
    names = []
    for name in registry.names("experiment"):
        entry = registry.lookup("experiment", name)
        if entry.component.path is not None and entry.provider.plugin.startswith(FIRST_PARTY):
            names.append(name)
    return names


def run_gallery(app) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import coarsekl
    from coarsekl.plotting import save_figures

    registry = coarsekl.get_registry(coarsekl.get_plugin_manager(autoload=False))
    GENERATED.mkdir(exist_ok=True)
    for name in gallery_experiments(registry):
        with tempfile.TemporaryDirectory() as folder:
            dataset = coarsekl.run(name, registry=registry, output=Path(folder) / f"{name}.nc")
            save_figures(dataset, GENERATED, name)
            dataset.close()


def setup(app):
    app.connect("builder-inited", run_gallery)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
