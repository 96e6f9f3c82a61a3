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


@numba.njit(inline="always", **FAST_SUMS)
def _summarise_piece(values, task, pieces, totals, negatives):
    """Sum and count of negative values of piece ``task % pieces`` of row ``task // pieces``.

    (Counting negatives vectorises; a running minimum does not.)"""
    row = values[task // pieces]
    piece = task % pieces
    segment = row[piece * row.size // pieces : (piece + 1) * row.size // pieces]
    total = 0.0
    count = 0
    for i in range(segment.size):  # the bare loop index: numba adds no bounds check
        value = np.float64(segment[i])
        total += value
        count += value < 0.0
    totals[task] = total
    negatives[task] = count


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=False)
def worst_deviation(totals, pieces):
    """(max over rows of |row total − 1|, all row totals finite), where each row's total
    is the sum of ``pieces`` consecutive ``totals`` (pieces of a sum, or block masses).

    Compiled without fast-math flags (explicitly: a callee inherits its caller's unless it
    sets its own), under which LLVM may fold the finiteness test."""
    worst = 0.0
    finite = True
    for row in range(totals.size // pieces):
        total = 0.0
        for task in range(row * pieces, (row + 1) * pieces):
            total += totals[task]
        if np.isfinite(total):
            worst = max(worst, abs(total - 1.0))
        else:
            finite = False
    return worst, finite


@numba.njit(**FAST_SUMS)
def state_summary(values, pieces):
    """(batch, N) -> (max |row sum − 1|, number of negative values, all sums finite), each
    row summed in ``pieces`` pieces, in float64. A NaN or inf anywhere makes its row's sum
    so."""
    totals = np.empty(values.shape[0] * pieces)
    negatives = np.empty(totals.size, dtype=np.int64)
    for task in range(totals.size):
        _summarise_piece(values, task, pieces, totals, negatives)
    worst, finite = worst_deviation(totals, pieces)
    return worst, negatives.sum(), finite


@numba.njit(parallel=True, **FAST_SUMS)
def state_summary_parallel(values, pieces):
    """:func:`state_summary` with the pieces shared among numba's threads."""
    totals = np.empty(values.shape[0] * pieces)
    negatives = np.empty(totals.size, dtype=np.int64)
    for task in numba.prange(totals.size):
        _summarise_piece(values, task, pieces, totals, negatives)
    worst, finite = worst_deviation(totals, pieces)
    return worst, negatives.sum(), finite
