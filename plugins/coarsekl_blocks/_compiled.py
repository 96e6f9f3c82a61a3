"""Compiled (numba) kernels for block numerics; each mirrors a plain-numpy reference.

Imported only when the compiled path runs (see :mod:`coarsekl.numerics`). All kernels
release the GIL, so the runner's threads can work on different members at once.
"""

from __future__ import annotations

import numba
import numpy as np

from coarsekl import fastmath
from coarsekl_blocks.vdelta import ROOT_SLACK

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# Reassociation lets LLVM vectorise sums; no finite-math flags, so NaN and inf stay visible.
FAST_SUMS = {**JIT, "fastmath": {"reassoc", "contract"}}
INLINE_SUMS = {**FAST_SUMS, "inline": "always"}
TINY = np.finfo(np.float64).tiny
MAX_PIECE_STEPS = 60
LOG_CHUNK = 1024  # values whose logs V takes, then sums, at a time


@numba.njit(**JIT)
def _finish_row(s, w, lower, upper, projected, clipped) -> None:
    """w*_j = clip(s·w_j, a_j, b_j) (empty blocks: a_j), flagging the clipped blocks."""
    for j in range(w.size):
        scaled = s * w[j] if w[j] > 0 else 0.0
        projected[j] = min(max(scaled, lower[j]), upper[j])
        clipped[j] = scaled < lower[j] or scaled > upper[j]


@numba.njit(**FAST_SUMS)
def _project_row_by_pieces(w, lower, upper, projected, clipped) -> bool:
    """The scale s by steps along the linear pieces of g(s) = Σ_j clip(s·w_j, a_j, b_j),
    each O(K) and vectorised, instead of sorting all 2K breakpoints (O(K log K)).

    At s, the blocks below (s·w_j ≤ a_j), free and above (s·w_j ≥ b_j) give the piece
    g = offset + slope·s; its root r is exact when r keeps that classification, and is
    accepted only then. Otherwise the next s is r (a Newton step) when it falls inside the
    bracket [low, high] around the root, else the Illinois regula falsi point of the
    bracket (g is monotone, so the bracket always holds the root). On a piece where g is
    flat at 1 it takes the piece's left end. After MAX_PIECE_STEPS without a root, or when
    no root exists, it returns False and the sorted method decides.
    """
    k = w.size
    target = 1.0
    g_low = 0.0  # g(0) = Σ a_j over the occupied blocks
    g_high = 0.0  # g(high) = Σ b_j, high the last breakpoint
    high = 0.0
    for j in range(k):
        if w[j] > 0:
            g_low += lower[j]
            g_high += upper[j]
            high = max(high, upper[j] / w[j])
        else:
            target -= lower[j]
    if g_high < target or g_low >= target:
        return False  # no root, or the root at s = 0: left to the sorted method
    low = 0.0
    s = min(1.0, high)
    retained = 0  # Illinois: which end was kept last time (−1 low, +1 high)
    for _ in range(MAX_PIECE_STEPS):
        offset = 0.0
        slope = 0.0
        for j in range(k):
            if w[j] <= 0:
                continue  # empty blocks are in the target already
            scaled = s * w[j]
            if scaled <= lower[j]:
                offset += lower[j]
            elif scaled >= upper[j]:
                offset += upper[j]
            else:
                slope += w[j]
        value = offset + slope * s
        if slope == 0 and abs(value - target) <= ROOT_SLACK:
            # Every block is at a bound and g = 1 on this piece: take its left end, the
            # last upper breakpoint b_j / w_j passed (as the sorted method does).
            left = 0.0
            for j in range(k):
                if w[j] > 0 and s * w[j] >= upper[j]:
                    left = max(left, upper[j] / w[j])
            if left == 0.0:
                return False
            _finish_row(left, w, lower, upper, projected, clipped)
            return True
        if slope > 0:
            root = (target - offset) / slope
            exact = True
            for j in range(k):
                if w[j] <= 0:
                    continue
                scaled = s * w[j]
                candidate = root * w[j]
                if scaled <= lower[j]:
                    exact &= candidate <= lower[j]
                elif scaled >= upper[j]:
                    exact &= candidate >= upper[j]
                else:
                    exact &= lower[j] <= candidate <= upper[j]
            if exact:
                _finish_row(root, w, lower, upper, projected, clipped)
                return True
        if value < target:
            low, g_low = s, value
            if retained == 1:
                g_high = target + 0.5 * (g_high - target)
            retained = 1
        else:
            high, g_high = s, value
            if retained == -1:
                g_low = target - 0.5 * (target - g_low)
            retained = -1
        if slope > 0 and low < root < high:
            s = root
        else:
            s = low + (target - g_low) * (high - low) / (g_high - g_low)
            if not low < s < high:
                s = 0.5 * (low + high)
    return False


@numba.njit(**JIT)
def _project_row(w, lower, upper, projected, clipped) -> None:
    """One row of :func:`coarsekl_blocks.vdelta.project_masses_reference`, in the same
    order of operations (suffix sums of positive terms), so results agree to rounding."""
    k = w.size
    inside = True
    for j in range(k):
        if not (lower[j] <= w[j] <= upper[j]):
            inside = False
            break
    if inside:
        for j in range(k):
            projected[j] = w[j]
            clipped[j] = False
        return
    if _project_row_by_pieces(w, lower, upper, projected, clipped):
        return
    breakpoints = np.empty(2 * k)
    empty_lower = 0.0
    for j in range(k):
        if w[j] > 0:
            breakpoints[j] = lower[j] / w[j]
            breakpoints[k + j] = upper[j] / w[j]
        else:
            breakpoints[j] = np.inf
            breakpoints[k + j] = np.inf
            empty_lower += lower[j]
    order = np.argsort(breakpoints, kind="mergesort")
    n = 2 * k
    # After sorted position i: slope = Σ leave-w ahead − Σ enter-w ahead,
    # offset = Σ enter-lower ahead + Σ empty lower + Σ leave-upper up to i.
    slope = np.empty(n)
    offset = np.empty(n)
    leave_ahead = 0.0
    enter_ahead = 0.0
    lower_ahead = 0.0
    for i in range(n - 1, -1, -1):
        slope[i] = leave_ahead - enter_ahead
        offset[i] = lower_ahead
        event = order[i]
        j = event % k
        if w[j] > 0:
            if event < k:
                enter_ahead += w[j]
                lower_ahead += lower[j]
            else:
                leave_ahead += w[j]
    uppers_left = 0.0
    total_lower = 0.0
    for j in range(k):
        total_lower += lower[j]
    first = -1
    for i in range(n):
        event = order[i]
        j = event % k
        if event >= k and w[j] > 0:
            uppers_left += upper[j]
        offset[i] = offset[i] + empty_lower + uppers_left
        s = breakpoints[event]
        if first < 0 and np.isfinite(s) and offset[i] + slope[i] * s >= 1.0 - ROOT_SLACK:
            first = i
    if first >= 0:
        if first > 0:
            seg_slope = slope[first - 1]
            seg_offset = offset[first - 1]
            seg_start = breakpoints[order[first - 1]]
        else:
            seg_slope = 0.0
            seg_offset = total_lower
            seg_start = 0.0
        seg_end = breakpoints[order[first]]
        s_root = (1.0 - seg_offset) / seg_slope if seg_slope > 0 else seg_end
        s_root = min(max(s_root, seg_start), seg_end)
        _finish_row(s_root, w, lower, upper, projected, clipped)
        return
    # No root: occupied blocks at their upper bounds, empty blocks share the rest by room.
    room_total = 0.0
    total = 0.0
    for j in range(k):
        scaled = np.inf if w[j] > 0 else 0.0
        projected[j] = min(max(scaled, lower[j]), upper[j])
        total += projected[j]
        if w[j] <= 0:
            room_total += upper[j] - lower[j]
    remainder = max(1.0 - total, 0.0)
    for j in range(k):
        if w[j] <= 0 and room_total > 0:
            projected[j] = min(
                projected[j] + remainder * ((upper[j] - lower[j]) / room_total), upper[j]
            )
        clipped[j] = projected[j] <= lower[j] or projected[j] >= upper[j]


@numba.njit(**JIT)
def relative_entropy_rows(p, q):
    """D(p_r ‖ q_r) = Σ_j p log(p / q) for each row of (rows, K) ``p`` and ``q``, as
    scipy's ``rel_entr`` takes each term: 0 where p = 0 ≤ q, inf where q = 0 < p."""
    out = np.empty(p.shape[0])
    for r in range(p.shape[0]):
        total = 0.0
        for j in range(p.shape[1]):
            a, b = p[r, j], q[r, j]
            if a > 0.0 and b > 0.0:
                total += a * np.log(a / b)
            elif not (a == 0.0 and b >= 0.0):  # (NaN, or off the support)
                total += np.nan if a != a or b != b else np.inf
        out[r] = total
    return out


@numba.njit(**JIT)
def project_rows(masses, lower, upper):
    """(rows, K) masses and (rows, K) or shared (K,) bounds -> (projected, clipped)."""
    projected = np.empty_like(masses)
    clipped = np.empty(masses.shape, dtype=np.bool_)
    for row in range(masses.shape[0]):
        if lower.ndim == 1:
            _project_row(masses[row], lower, upper, projected[row], clipped[row])
        else:
            _project_row(masses[row], lower[row], upper[row], projected[row], clipped[row])
    return projected, clipped


@numba.njit(**INLINE_SUMS)
def _band_sums(values, task, rows, cols, sums, negatives):
    """Block sums and the number of negative values of one band of h rows of one image
    (task = image · rows + band): the band is first summed column-wise (a vectorised
    pass), then its W column sums are cut into ``cols`` pieces."""
    b, row = task // rows, task % rows
    h = values.shape[1] // rows
    band = np.zeros(values.shape[2])
    count = 0
    for y in range(row * h, (row + 1) * h):
        count += _add_row(values[b, y], band)
    negatives[task] = count
    _cut_band(band, b, row, cols, sums)


@numba.njit(**INLINE_SUMS)
def _add_row(line, band):
    """band += line (column sums, in float64); returns the number of negative values."""
    count = 0
    for x in range(line.size):
        value = np.float64(line[x])  # as stored (float32 states round)
        band[x] += value
        count += value < 0.0
    return count


@numba.njit(**INLINE_SUMS)
def _cut_band(band, b, row, cols, sums):
    """The column sums of a band cut into ``cols`` block sums of image b's block row."""
    w = band.size // cols
    for col in range(cols):
        piece = band[col * w :]  # index by the bare loop variable: see _scale_band
        partial = 0.0
        for x in range(w):
            partial += piece[x]
        sums[b, row * cols + col] = partial


@numba.njit(**FAST_SUMS)
def grid_block_sums(values, rows, cols):
    """(batch, H, W) -> ((batch, rows · cols) sums over equal rectangles in float64, the
    number of negative values)."""
    sums = np.empty((values.shape[0], rows * cols))
    negatives = np.empty(values.shape[0] * rows, dtype=np.int64)
    for task in range(negatives.size):
        _band_sums(values, task, rows, cols, sums, negatives)
    return sums, negatives.sum()


@numba.njit(parallel=True, **FAST_SUMS)
def grid_block_sums_parallel(values, rows, cols):
    """:func:`grid_block_sums` with the bands shared among numba's threads."""
    sums = np.empty((values.shape[0], rows * cols))
    negatives = np.empty(values.shape[0] * rows, dtype=np.int64)
    for task in numba.prange(negatives.size):
        _band_sums(values, task, rows, cols, sums, negatives)
    return sums, negatives.sum()


@numba.njit(**INLINE_SUMS)
def _scale_band(values, factors, task, rows, cols, out):
    """out = values · factors[block] over one band of h rows (task = image · rows + band).

    Block by block (a factor per block): measured against a row of factors per pixel, a
    tenth faster for blocks 32 pixels wide or more, 1.3-3 times slower for blocks 4 to 8
    pixels wide (scale_band_and_sum, which also sums, is as fast with the row for wide
    blocks and uses it)."""
    b, row = task // rows, task % rows
    h, w = values.shape[1] // rows, values.shape[2] // cols
    for y in range(row * h, (row + 1) * h):
        source, target = values[b, y], out[b, y]
        for col in range(cols):
            factor = factors[b, row * cols + col]
            # Views indexed by the bare loop variable: numba checks any other index for
            # negative values, and that check stops LLVM from vectorising the loop.
            piece, scaled = source[col * w :], target[col * w :]
            for x in range(w):
                scaled[x] = piece[x] * factor


@numba.njit(**FAST_SUMS)
def grid_scale_blocks(values, factors, rows, cols, out):
    """out[b, y, x] = values[b, y, x] · factors[b, block(y, x)] for (batch, H, W) values."""
    for task in range(values.shape[0] * rows):
        _scale_band(values, factors, task, rows, cols, out)
    return out


@numba.njit(parallel=True, **FAST_SUMS)
def grid_scale_blocks_parallel(values, factors, rows, cols, out):
    """:func:`grid_scale_blocks` with the bands shared among numba's threads."""
    for task in numba.prange(values.shape[0] * rows):
        _scale_band(values, factors, task, rows, cols, out)
    return out


@numba.njit(**INLINE_SUMS)
def _grid_projection(masses, lower, upper):
    """(projected masses, clipped, factors w*/w) of (batch, K) masses that are all > 0."""
    projected, clipped = project_rows(masses, lower, upper)
    return projected, clipped, projected / masses


@numba.njit(**INLINE_SUMS)
def normalise_band_and_sum(values, factor, task, rows, cols, sums, negatives):
    """One band of h rows of (batch, H, W) ``values`` (task = image · rows + band) scaled
    in place by ``factor``, and its block sums taken as :func:`_band_sums` takes them (the
    same numbers) in the same pass: whole rows at a time (with one factor for all blocks,
    no need to cut rows at the blocks' borders, which costs short loops small blocks). The
    in-place branch of :func:`scale_band_and_sum` has the same loop with a factor per
    pixel; a row of equal factors here would cost a tenth more (measured)."""
    b, row = task // rows, task % rows
    h = values.shape[1] // rows
    band = np.zeros(values.shape[2])
    count = 0
    for y in range(row * h, (row + 1) * h):
        line = values[b, y]
        for x in range(line.size):  # one loop: scaled, stored, added as stored
            line[x] *= factor
            value = np.float64(line[x])  # (float32 states round)
            band[x] += value
            count += value < 0.0
    negatives[task] = count
    _cut_band(band, b, row, cols, sums)


@numba.njit(**INLINE_SUMS)
def scale_band_and_sum(values, factors, task, rows, cols, out, in_place, sums, negatives):
    """One band of h rows of (batch, H, W) ``values`` (task = image · rows + band) scaled
    block by block by ``factors`` (batch, K) into ``out``, and its block sums taken as
    :func:`_band_sums` takes them (the same numbers): each row is scaled by the row of its
    pixels' factors (whole rows: no short loops for small blocks) and summed in one loop,
    while it is in the L1 cache.

    ``in_place``: ``out`` is ``values``, read and written through that one name (LLVM
    vectorises that; through two names it cannot tell they are the same and runs
    unvectorised)."""
    b, row = task // rows, task % rows
    width = values.shape[2]
    h = values.shape[1] // rows
    band = np.zeros(width)
    row_factors = np.empty(width)  # each pixel's block factor along a row of this band
    w = width // cols
    for col in range(cols):
        # Views indexed by the bare loop variable (see _scale_band).
        factor, segment = factors[b, row * cols + col], row_factors[col * w :]
        for x in range(w):
            segment[x] = factor
    count = 0
    if in_place:
        for y in range(row * h, (row + 1) * h):
            line = out[b, y]
            for x in range(width):  # one loop: scaled, stored, added as stored
                line[x] *= row_factors[x]
                value = np.float64(line[x])  # (float32 states round)
                band[x] += value
                count += value < 0.0
    else:
        for y in range(row * h, (row + 1) * h):
            source, line = values[b, y], out[b, y]
            for x in range(width):
                line[x] = source[x] * row_factors[x]  # (summed as stored, as above)
                value = np.float64(line[x])
                band[x] += value
                count += value < 0.0
    negatives[task] = count
    _cut_band(band, b, row, cols, sums)


@numba.njit(**INLINE_SUMS)
def _all_positive(masses):
    """True when every block mass is > 0 (False for NaN)."""
    for w in masses.ravel():  # noqa: SIM110 (numba compiles the loop, not all(generator))
        if not w > 0.0:
            return False
    return True


@numba.njit(**FAST_SUMS)
def project_grid(values, masses, lower, upper, rows, cols, out, in_place=False):
    """The V_δ projection of (batch, H, W) ``values`` on a grid of rows × cols blocks, with
    block masses (batch, K) and bounds (K,) or (batch, K): ``out`` = the values rescaled
    block by block to the projected masses w*; returns (done, clipped, the block sums of
    ``out`` and its number of negative values, as :func:`grid_block_sums` gives them).
    The same numbers as :func:`project_rows` then :func:`grid_scale_blocks`. Not done
    (and ``out`` untouched) when a block mass is not > 0: empty blocks are the general
    path's to fill."""
    if not _all_positive(masses):
        return False, np.zeros(masses.shape, dtype=np.bool_), masses, 0
    _, clipped, factors = _grid_projection(masses, lower, upper)
    sums = np.empty(masses.shape)
    negatives = np.empty(values.shape[0] * rows, dtype=np.int64)
    for task in range(negatives.size):
        scale_band_and_sum(values, factors, task, rows, cols, out, in_place, sums, negatives)
    return True, clipped, sums, negatives.sum()


@numba.njit(parallel=True, **FAST_SUMS)
def project_grid_parallel(values, masses, lower, upper, rows, cols, out, in_place=False):
    """:func:`project_grid` with the bands shared among numba's threads."""
    if not _all_positive(masses):
        return False, np.zeros(masses.shape, dtype=np.bool_), masses, 0
    _, clipped, factors = _grid_projection(masses, lower, upper)
    sums = np.empty(masses.shape)
    negatives = np.empty(values.shape[0] * rows, dtype=np.int64)
    for task in numba.prange(negatives.size):
        scale_band_and_sum(values, factors, task, rows, cols, out, in_place, sums, negatives)
    return True, clipped, sums, negatives.sum()


@numba.njit(**FAST_SUMS)  # (called, not inlined: V's pass and the MSE's own pass sum every
# chunk with this one compiled loop, so that both give the same bits)
def _squared_error_sum(values, data, total):
    """Σ_i (values_i · total − data_i)² in float64."""
    acc = 0.0
    for i in range(values.size):
        residual = np.float64(values[i]) * total - data[i]
        acc += residual * residual
    return acc


@numba.njit(**INLINE_SUMS)
def _piece_bounds(row_size, task, pieces):
    piece = task % pieces
    return piece * row_size // pieces, (piece + 1) * row_size // pieces


@numba.njit(**INLINE_SUMS)
def _entropy_piece(values, task, pieces, partial, logs, total, data, squared):
    """Σ p log p over piece ``task % pieces`` of row ``task // pieces`` (0 log 0 = 0),
    keeping log max(p, tiny) in the same place of ``logs`` unless it is empty; and, unless
    ``data`` is empty, Σ (p · total − x)² over the piece into ``squared`` (as
    :func:`_squared_error_piece` takes it: the MSE's sums, while p is in the cache)."""
    row = values[task // pieces]
    keep = logs.size > 0
    logs_row = logs[task // pieces] if keep else np.empty(LOG_CHUNK)  # (else a scratch)
    first, stop = _piece_bounds(row.size, task, pieces)
    entropy = 0.0
    error = 0.0
    for start in range(first, stop, LOG_CHUNK):  # chunks: the logs are summed from L1
        end = min(start + LOG_CHUNK, stop)
        # Views indexed by the bare loop variable vectorise (see _scale_band).
        segment = row[start:end]
        log_segment = logs_row[start:end] if keep else logs_row[: end - start]
        fastmath.log_floored(segment, TINY, log_segment)
        for i in range(segment.size):
            entropy += np.float64(segment[i]) * log_segment[i]
        if data.size > 0:
            error += _squared_error_sum(segment, data[start:end], total)
    partial[task] = entropy
    if data.size > 0:
        squared[task] = error


@numba.njit(**INLINE_SUMS)
def _squared_error_piece(values, task, pieces, total, data, squared):
    """Σ (p · total − x)² over piece ``task % pieces`` of row ``task // pieces``, a chunk
    at a time as V's pass takes it."""
    row = values[task // pieces]
    first, stop = _piece_bounds(row.size, task, pieces)
    error = 0.0
    for start in range(first, stop, LOG_CHUNK):
        end = min(start + LOG_CHUNK, stop)
        error += _squared_error_sum(row[start:end], data[start:end], total)
    squared[task] = error


@numba.njit(**INLINE_SUMS)
def _mean_squared_rows(squared, pieces, row_size):
    """The mean squared error of each row from its pieces' sums."""
    errors = np.empty(squared.size // pieces)
    for b in range(errors.size):
        acc = 0.0
        for task in range(b * pieces, (b + 1) * pieces):
            acc += squared[task]
        errors[b] = acc / row_size
    return errors


@numba.njit(**INLINE_SUMS)
def _within_block_v_rows(partial, masses, log_sizes, pieces):
    """V per row from the pieces' Σ p log p: Σ_x p log p − Σ_j w_j log(w_j / |Ω_j|)."""
    v = np.empty(masses.shape[0])
    for b in range(v.size):
        pixel_term = 0.0
        for task in range(b * pieces, (b + 1) * pieces):
            pixel_term += partial[task]
        coarse_term = 0.0
        row = masses[b]
        for j in range(log_sizes.size):  # a select, not a branch, and the vectorisable log:
            # one pass of SIMD code (libm's scalar log took 5 µs a step at K = 1024)
            w = row[j]
            term = w * (fastmath.log(max(w, TINY)) - log_sizes[j])
            coarse_term += term if w > 0.0 else 0.0  # 0 log 0 = 0
        v[b] = max(pixel_term - coarse_term, 0.0)  # rounding may leave −1e−17 where V = 0
    return v


@numba.njit(**FAST_SUMS)
def within_block_v(values, masses, log_sizes, pieces, logs, total, data):
    """V(p) = Σ_x p log p − Σ_j w_j log(w_j / |Ω_j|) for each row of (batch, N) ``values``
    with block masses (batch, K) and log block sizes (K,): (batch,), float64; the pixel
    sums are taken in ``pieces`` pieces per row. Fills (batch, N) float64 ``logs`` with
    log max(p, tiny) on the way, unless ``logs`` is empty (shape (0, 0)). Returns (V, the
    mean squared error of p · total to ``data`` (N,) as :func:`mean_squared_error` gives
    it, or an empty array where ``data`` is empty)."""
    partial = np.empty(values.shape[0] * pieces)
    squared = np.empty(partial.size if data.size > 0 else 0)
    for task in range(partial.size):
        _entropy_piece(values, task, pieces, partial, logs, total, data, squared)
    errors = _mean_squared_rows(squared, pieces, values.shape[1]) if data.size > 0 else squared
    return _within_block_v_rows(partial, masses, log_sizes, pieces), errors


@numba.njit(parallel=True, **FAST_SUMS)
def within_block_v_parallel(values, masses, log_sizes, pieces, logs, total, data):
    """:func:`within_block_v` with the pieces shared among numba's threads."""
    partial = np.empty(values.shape[0] * pieces)
    squared = np.empty(partial.size if data.size > 0 else 0)
    for reversed_task in numba.prange(partial.size):
        # (last piece first, as the geometric mean does: the calling thread keeps the last
        # images, which it goes on working on serially)
        task = partial.size - 1 - reversed_task
        _entropy_piece(values, task, pieces, partial, logs, total, data, squared)
    errors = _mean_squared_rows(squared, pieces, values.shape[1]) if data.size > 0 else squared
    return _within_block_v_rows(partial, masses, log_sizes, pieces), errors


@numba.njit(**FAST_SUMS)
def mean_squared_error(values, total, data, pieces):
    """mean_i (p_i · total − x_i)² over each row of (batch, N) ``values``; ``data`` is (N,);
    the sums are taken in ``pieces`` pieces per row."""
    squared = np.empty(values.shape[0] * pieces)
    for task in range(squared.size):
        _squared_error_piece(values, task, pieces, total, data, squared)
    return _mean_squared_rows(squared, pieces, values.shape[1])


@numba.njit(parallel=True, **FAST_SUMS)
def mean_squared_error_parallel(values, total, data, pieces):
    """:func:`mean_squared_error` with the pieces shared among numba's threads (the last
    ones to the calling thread, as V takes them: they are in its cache)."""
    squared = np.empty(values.shape[0] * pieces)
    for reversed_task in numba.prange(squared.size):
        task = squared.size - 1 - reversed_task
        _squared_error_piece(values, task, pieces, total, data, squared)
    return _mean_squared_rows(squared, pieces, values.shape[1])
