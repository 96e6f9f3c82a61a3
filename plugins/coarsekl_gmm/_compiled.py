"""Compiled (numba) kernels for Gaussian-mixture numerics; each mirrors the plain-numpy
reference :func:`coarsekl_gmm.mixture._score_and_posteriors_numpy`.

Imported only when the compiled path runs (see :mod:`coarsekl.numerics`). The kernels
release the GIL, so the runner's threads can work on different members at once.
"""

from __future__ import annotations

import numba
import numpy as np

from coarsekl import fastmath

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# Reassociation lets LLVM vectorise sums; no finite-math flags, so NaN and inf stay visible.
FAST = {**JIT, "fastmath": {"reassoc", "contract"}}
BLOCK = 256  # particles per block of the small-d kernel: its buffers stay in L1/L2


@numba.njit(inline="always", **FAST)
def _quadratic_forms(block, size, mean, precision, diff, solved, quad):
    """For the first ``size`` rows x_i of ``block``: diff = x_i − m and solved =
    P(x_i − m), both (d, BLOCK) particle-last, and quad[i] = (x_i − m)·P(x_i − m)."""
    dim = mean.size
    for j in range(dim):
        centre, row = mean[j], diff[j]
        for i in range(size):
            row[i] = block[i, j] - centre
    quad[:size] = 0.0
    for j in range(dim):
        row = solved[j]
        row[:size] = 0.0
        for k in range(dim):
            entry, column = precision[j, k], diff[k]
            for i in range(size):
                row[i] += entry * column[i]
        column = diff[j]
        for i in range(size):
            quad[i] += column[i] * row[i]


@numba.njit(**FAST)
def score_and_posteriors_small(x, means, precisions, log_norm, score, posteriors):
    """Score and class posteriors of (N, d) ``x`` for small d, into ``score`` (N, d) and
    ``posteriors`` (N, C); ``precisions`` (C, d, d) = S_c^{-1}, ``log_norm`` (C,) =
    log π_c − ½ log det(2π S_c).

    l_c = log_norm_c − ½ (x − m_c)·S_c^{-1}(x − m_c), r = softmax(l) shifted by max_c l_c,
    score = −Σ_c r_c S_c^{-1}(x − m_c). Works on blocks of particles laid out particle-last,
    so every inner loop runs over particles and compiles to SIMD code.
    """
    count, dim = x.shape
    components = means.shape[0]
    diff = np.empty((dim, BLOCK))
    solved = np.empty((components, dim, BLOCK))
    joint = np.empty((components, BLOCK))
    top = np.empty(BLOCK)
    quad = np.empty(BLOCK)
    norm = np.empty(BLOCK)
    total = np.empty((dim, BLOCK))
    for start in range(0, count, BLOCK):
        size = min(BLOCK, count - start)
        block = x[start : start + size]
        top[:size] = -np.inf
        for c in range(components):
            _quadratic_forms(block, size, means[c], precisions[c], diff, solved[c], quad)
            offset, values = log_norm[c], joint[c]
            for i in range(size):
                value = offset - 0.5 * quad[i]
                values[i] = value
                top[i] = max(top[i], value)
        norm[:size] = 0.0
        for c in range(components):
            values = joint[c]
            for i in range(size):
                weight = fastmath.exp(values[i] - top[i])
                values[i] = weight
                norm[i] += weight
        for i in range(size):
            norm[i] = 1.0 / norm[i]
        total[:, :size] = 0.0
        for c in range(components):
            values = joint[c]
            for i in range(size):
                values[i] *= norm[i]
                posteriors[start + i, c] = values[i]
            for j in range(dim):
                row, out = solved[c, j], total[j]
                for i in range(size):
                    out[i] -= values[i] * row[i]
        for j in range(dim):
            row = total[j]
            for i in range(size):
                score[start + i, j] = row[i]


@numba.njit(**FAST)
def finish_from_products(x, products, shifts, means, log_norm, score, posteriors):
    """Large-d second half: ``products`` (N, C, d) holds S_c^{-1} x (one BLAS product) and
    ``shifts`` (C, d) = S_c^{-1} m_c. Turns ``products`` into S_c^{-1}(x − m_c) in place and
    writes the score (N, d) and posteriors (N, C) as :func:`score_and_posteriors_small`."""
    count, dim = x.shape
    components = means.shape[0]
    joint = np.empty(components)
    for i in range(count):
        top = -np.inf
        for c in range(components):
            quad = 0.0
            for j in range(dim):
                solved = products[i, c, j] - shifts[c, j]
                products[i, c, j] = solved
                quad += (x[i, j] - means[c, j]) * solved
            value = log_norm[c] - 0.5 * quad
            joint[c] = value
            top = max(top, value)
        norm = 0.0
        for c in range(components):
            weight = fastmath.exp(joint[c] - top)
            joint[c] = weight
            norm += weight
        inverse = 1.0 / norm
        score[i, :] = 0.0
        for c in range(components):
            weight = joint[c] * inverse
            posteriors[i, c] = weight
            for j in range(dim):
                score[i, j] -= weight * products[i, c, j]


@numba.njit(**FAST)
def classify_small(x, means, precisions, log_norm, labels):
    """argmax_c of log_norm_c − ½ (x − m_c)·S_c^{-1}(x − m_c) for each row of (N, d) ``x``,
    into ``labels`` (N,): the most probable component, without the softmax. Blocks of
    particles laid out particle-last, as :func:`score_and_posteriors_small`."""
    count, dim = x.shape
    components = means.shape[0]
    diff = np.empty((dim, BLOCK))
    solved = np.empty((dim, BLOCK))
    quad = np.empty(BLOCK)
    top = np.empty(BLOCK)
    best = np.empty(BLOCK, dtype=np.intp)
    for start in range(0, count, BLOCK):
        size = min(BLOCK, count - start)
        block = x[start : start + size]
        top[:size] = -np.inf
        best[:size] = 0
        for c in range(components):
            _quadratic_forms(block, size, means[c], precisions[c], diff, solved, quad)
            offset = log_norm[c]
            for i in range(size):
                value = offset - 0.5 * quad[i]
                if value > top[i]:
                    top[i] = value
                    best[i] = c
        labels[start : start + size] = best[:size]
