"""Parameter sweeps: a ``[sweep]`` table, run point by point on dask.distributed or serially.

* :mod:`coarsekl.sweeps.spec`: the ``[sweep]`` table (:class:`SweepConfig`), the grid of
  points and each point's seed;
* :mod:`coarsekl.sweeps.execute`: :func:`sweep` runs the points (resumable, one atomic
  netCDF file per point, a manifest) in-process or on a dask cluster;
* :mod:`coarsekl.sweeps.combine`: :func:`open_sweep` combines the points lazily;
* :mod:`coarsekl.sweeps.figures`: the sweep figure.

The package is named ``sweeps`` so that ``coarsekl.sweep`` stays the function.
"""

from __future__ import annotations

from coarsekl.sweeps.combine import open_sweep
from coarsekl.sweeps.execute import PointFailure, SweepResult, read_manifest, sweep
from coarsekl.sweeps.figures import plot_sweep, save_sweep_figures
from coarsekl.sweeps.spec import SweepConfig, SweepError, SweepParameter, point_seed

__all__ = [
    "PointFailure",
    "SweepConfig",
    "SweepError",
    "SweepParameter",
    "SweepResult",
    "open_sweep",
    "plot_sweep",
    "point_seed",
    "read_manifest",
    "save_sweep_figures",
    "sweep",
]
