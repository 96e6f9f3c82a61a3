"""Coarse quantities: block mass and block mean intensity."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from coarsekl.interfaces import Partition

__all__ = ["BlockMass", "BlockMean"]


def _optional_vector(value):
    return None if value is None else np.asarray(value, dtype=np.float64)


@attrs.frozen(kw_only=True, eq=False)
class BlockMass:
    """w_j(p) = Σ_{x∈Ω_j} p(x), a point of the simplex; δ is a mass (dimensionless).

    Parameters
    ----------
    reference
        Optional reference masses, one per block (default: the data's block masses). Units:
        dimensionless (a mass).
    """

    long_name: ClassVar[str] = "block mass"
    units: ClassVar[str] = "1"
    reference: np.ndarray | None = attrs.field(default=None, converter=_optional_vector)

    def scale(self, partition: Partition, data_total: float) -> np.ndarray:
        return np.ones(partition.n_blocks)


@attrs.frozen(kw_only=True, eq=False)
class BlockMean:
    """Mean intensity of block j in data units: w_j · Σx_data / |Ω_j|; δ is an intensity.

    Parameters
    ----------
    reference
        Optional reference mean intensities, one per block (default: the data's). Units: data
        intensity.
    """

    long_name: ClassVar[str] = "block mean intensity"
    units: ClassVar[str] = "data intensity"
    reference: np.ndarray | None = attrs.field(default=None, converter=_optional_vector)

    def scale(self, partition: Partition, data_total: float) -> np.ndarray:
        return data_total / partition.block_sizes
