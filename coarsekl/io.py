"""Reading and writing trajectories and figures, atomically.

Every file is written under a temporary name in its destination folder and renamed into
place only when complete, so an interrupted run never leaves a half-written file and
never clobbers an older result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coarsekl.errors import DataError, OutputError

__all__ = ["atomic_path", "open_trajectory", "prepare_output_dir", "save_trajectory"]


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` (with parents) and check that files can be written there."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".coarsekl-check-"):
            pass
    except OSError as error:
        raise OutputError(
            f"cannot write to the output folder {str(folder)!r}: "
            f"{error.strerror or error}; choose another folder with --out"
        ) from None
    return folder


@contextlib.contextmanager
def atomic_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success."""
    destination = Path(destination)
    try:
        handle, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise OutputError(f"cannot write {str(destination)!r}: {error.strerror or error}") from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# HDF5's byte shuffle, then zlib at level 1: trajectories written 10-20 % faster than with
# zlib level 4 alone, and as small to within 1 % (measured on 512² states, float64 and
# float32). zlib, not a faster filter such as blosc: every HDF5 reader decodes it.
COMPRESSION_LEVEL = 1


def compression(complevel: int = COMPRESSION_LEVEL) -> dict[str, Any]:
    """The netCDF4 encoding of every numeric variable: shuffle, then zlib at ``complevel``."""
    return {"zlib": True, "complevel": complevel, "shuffle": True}


def save_trajectory(
    dataset, path: str | Path, *, complevel: int = COMPRESSION_LEVEL, mode: str = "w"
) -> Path:
    """Write a trajectory to compressed netCDF4 (byte shuffle, then zlib at ``complevel``)
    and return the path.

    ``mode="w"`` (the default) writes atomically: a temporary file renamed into place.
    ``mode="a"`` adds the dataset's variables to an existing netCDF4 file in place (used by
    the runner to complete a file whose snapshots were streamed into it).
    """
    path = Path(path)
    encoding = {
        name: compression(complevel)
        for name, variable in dataset.variables.items()
        if variable.dtype.kind in "fiub"
    }
    if mode == "a":
        dataset.to_netcdf(path, mode="a", engine="netcdf4", format="NETCDF4", encoding=encoding)
        return path
    with atomic_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return path


def open_trajectory(path: str | Path, *, lazy: bool = False):
    """Open a trajectory written by coarsekl.

    By default everything is loaded into memory and the file is closed; with ``lazy=True``
    the variables are read from the file when used (for snapshots larger than memory).
    """
    import xarray as xr

    import coarsekl.accessor  # noqa: F401  (registers ds.coarsekl)

    path = Path(path)
    if not path.is_file():
        raise DataError(f"trajectory file {str(path)!r} does not exist")
    try:
        if lazy:
            return xr.open_dataset(path, engine="netcdf4")
        with xr.open_dataset(path, engine="netcdf4") as dataset:
            return dataset.load()
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {str(path)!r} as a netCDF trajectory: {error}") from None
