"""Compiled (numba) kernel for resampling within blocks; mirrors the plain-numpy path
``coarsekl_gmm.particles._resample_reference``.

Imported only when the compiled path runs (see :mod:`coarsekl.numerics`). The kernel
releases the GIL, so the runner's threads can resample different members at once.
"""

from __future__ import annotations

import math

import numba
import numpy as np

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(**JIT)
def resample_rows(weights, labels, inverse, slope, offset, lower, upper, out) -> None:
    """Systematic resampling within blocks, row by row, two sequential passes, O(N + K).

    weights, labels (R, N); per (row, block): inverse = 1/w_j, slope = N·t_j,
    offset = N·C_{j−1} − u, lower/upper = first/end comb index of the block (R, K);
    out: flat (R·N + K,) buffer; row r's indices land in out[r·N:(r+1)·N], block j in
    its slots lower_j..upper_j − 1; the last K entries are scratch.

    No sort: the within-block cumulative share F of particle n is a running sum of
    weight·inverse over block j's particles in their original order (one accumulator per
    block); the particle takes the comb slots from the block's previous G up to
    G = clip(ceil(slope·F + offset), lower, upper) (G = upper once F reaches the block's
    total, so rounding can neither lose a copy nor give one to a zero-weight particle).
    The numpy path walks the particles in the same order (stable sort by block), so both
    give the same indices except when slope·F + offset falls within rounding of an integer.

    Branch-free writes: every particle writes its index to the block's next two slots
    whatever its number of copies (0, 1 or 2 mostly; a mispredicted copy loop would cost
    more than the writes). A slot written by a particle with fewer copies is overwritten by
    the block's next particle; a write past the block's end goes to scratch entry R·N + j.
    """
    rows, n = weights.shape
    n_blocks = inverse.shape[1]
    scratch = rows * n
    totals = np.empty(n_blocks, np.float64)
    running = np.empty(n_blocks, np.float64)
    filled = np.empty(n_blocks, np.int64)
    low = np.empty(n_blocks, np.int64)
    high = np.empty(n_blocks, np.int64)
    for r in range(rows):
        base = r * n
        totals[:] = 0.0
        for i in range(n):
            j = labels[r, i]
            totals[j] += weights[r, i] * inverse[r, j]
        running[:] = 0.0
        for j in range(n_blocks):
            low[j] = base + int(lower[r, j])
            high[j] = base + int(upper[r, j])
            filled[j] = low[j]
        for i in range(n):
            j = labels[r, i]
            running[j] += weights[r, i] * inverse[r, j]
            g = base + math.ceil(slope[r, j] * running[j] + offset[r, j])
            g = min(max(g, low[j]), high[j])
            g = high[j] if running[j] == totals[j] else g
            f = filled[j]
            out[f if f < high[j] else scratch + j] = i
            out[f + 1 if f + 1 < high[j] else scratch + j] = i
            for c in range(f + 2, g):
                out[c] = i
            filled[j] = g
