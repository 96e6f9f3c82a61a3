"""Compiled (numba) kernels of the core; imported only when the compiled path runs."""

from __future__ import annotations

import numba
import numpy as np

FAST_SUMS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}


@numba.njit(**FAST_SUMS)
def state_summary(values):
    """(batch, N) -> (row sums in float64, smallest value, all finite): one pass."""
    batch, size = values.shape
    totals = np.empty(batch)
    smallest = np.inf
    finite = True
    for b in range(batch):
        row = values[b]
        total = 0.0
        low = np.inf
        for i in range(size):
            value = np.float64(row[i])
            total += value
            low = min(low, value)
        totals[b] = total
        smallest = min(smallest, low)
        finite &= np.isfinite(total)  # a NaN or an inf anywhere makes the sum non-finite
    return totals, smallest, finite
