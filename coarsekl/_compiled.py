"""Compiled (numba) kernels of the core; imported only when the compiled path runs."""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets LLVM vectorise the sums; no finite-math flags, so NaN and inf survive.
FAST_SUMS = {
    "cache": True,
    "nogil": True,
    "error_model": "numpy",
    "fastmath": {"contract", "reassoc", "nsz"},
}


@numba.njit(**FAST_SUMS)
def state_summary(values):
    """(batch, N) -> (row sums in float64, number of negative values): one vectorised pass.

    (Counting negatives vectorises; a running minimum does not.)"""
    batch, size = values.shape
    totals = np.empty(batch)
    negatives = 0
    for b in range(batch):
        row = values[b]
        total = 0.0
        count = 0
        for i in range(size):
            value = np.float64(row[i])
            total += value
            count += value < 0.0
        totals[b] = total
        negatives += count
    return totals, negatives
