"""``ds.coarsekl``: the domain methods of a coarsekl trajectory dataset."""

from __future__ import annotations

import xarray as xr

from coarsekl import plotting

__all__ = ["CoarseklAccessor"]


@xr.register_dataset_accessor("coarsekl")
class CoarseklAccessor:
    """Figures and the experiment config of a trajectory: ``ds.coarsekl.plot_metrics()``."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self._ds = dataset

    @property
    def config(self):
        """The ExperimentConfig stored in the file (global attribute ``config``)."""
        import tomllib

        from coarsekl.config import ExperimentConfig

        return ExperimentConfig.from_mapping(tomllib.loads(self._ds.attrs["config"]))

    def rerun(self, **kwargs) -> xr.Dataset:
        """Run the stored config again (same seed: the same numbers)."""
        from coarsekl.runner import run

        return run(self.config, **kwargs)

    def plot_snapshots(self, member: int = 0):
        return plotting.plot_snapshots(self._ds, member=member)

    def plot_metrics(self):
        return plotting.plot_metrics(self._ds)

    def plot_block_masses(self, member: int = 0):
        return plotting.plot_block_masses(self._ds, member=member)

    def save_figures(self, folder, stem: str | None = None):
        return plotting.save_figures(self._ds, folder, stem)
