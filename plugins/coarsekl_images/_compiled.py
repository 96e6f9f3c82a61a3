"""Compiled (numba) kernels for image numerics; each mirrors a plain-numpy reference.

Imported only when the compiled path runs (see :mod:`coarsekl.numerics`). All kernels
release the GIL, so the runner's threads can work on different members at once, and work
one image at a time through buffers that stay in the CPU cache.
"""

from __future__ import annotations

import numba
import numpy as np

from coarsekl import fastmath
from coarsekl_blocks._compiled import _band_sums

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# Reassociation lets LLVM vectorise sums; no finite-math flags, so NaN and inf stay visible.
FAST = {**JIT, "fastmath": {"reassoc", "contract"}}
# Small helpers called once per row: a call between compiled functions costs more than
# the row's arithmetic, so they are inlined into their callers.
INLINE = {**FAST, "inline": "always"}
TINY = np.finfo(np.float64).tiny


@numba.njit(**INLINE)
def _reflect(index, start, length):
    """Half-sample symmetric reflection of ``index`` into [start, start + length)."""
    offset = (index - start) % (2 * length)
    if offset >= length:
        offset = 2 * length - 1 - offset
    return start + offset


@numba.njit(**INLINE)
def _correlate(padded, weights, out, count):
    """out[x] = Σ_k w_k padded[x + k] for x < count.

    Every array is indexed by the bare loop index (shifted views instead of x + k): numba
    checks other index expressions for negative values, which stops vectorisation.
    """
    if weights.size == 5:  # σ ≈ 0.5, the paper's value: unrolled
        p0, p1, p2, p3, p4 = padded[0:], padded[1:], padded[2:], padded[3:], padded[4:]
        w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
        for x in range(count):
            out[x] = w0 * p0[x] + w1 * p1[x] + w2 * p2[x] + w3 * p3[x] + w4 * p4[x]
        return
    for x in range(count):
        out[x] = 0.0
    for k in range(weights.size):
        weight = weights[k]
        shifted = padded[k:]
        for x in range(count):
            out[x] += weight * shifted[x]


@numba.njit(**FAST)
def _smooth_image(image, weights, segment_h, segment_w, rows, out):
    """G_σ of one (H, W) image into ``out`` (its dtype), reflecting at the borders of
    segments of ``segment_h`` × ``segment_w``; ``rows`` is an (H, W) float64 buffer.
    Returns the sum of ``out``."""
    height, width = image.shape
    padded = np.empty(segment_w + weights.size - 1)
    column = np.empty(width)
    for y in range(height):  # along x, segment by segment
        source, target = image[y], rows[y]
        for start in range(0, width, segment_w):
            stop = start + segment_w
            _horizontal(source[start:stop], weights, padded, target[start:stop])
    total = 0.0
    for y in range(height):  # along y, whole rows at a time
        start = (y // segment_h) * segment_h
        total += _vertical(rows, weights, y, start, segment_h, column, out[y])
    return total


@numba.njit(**FAST)
def smooth(values, weights, segment_h, segment_w, out):
    """Separable correlation with ``weights`` (odd length 2r + 1) over (batch, H, W)
    ``values`` into ``out``, reflecting at segment borders; returns the per-image sums."""
    batch, height, width = values.shape
    rows = np.empty((height, width))
    totals = np.empty(batch)
    for b in range(batch):
        totals[b] = _smooth_image(values[b], weights, segment_h, segment_w, rows, out[b])
    return totals


@numba.njit(**INLINE)
def _horizontal(source, weights, padded, target):
    """One row: target = the weights correlated with ``source`` reflected at its ends;
    ``padded`` is a buffer of len(source) + 2r."""
    width = source.size
    radius = weights.size // 2
    inner = padded[radius:]
    for i in range(width):
        inner[i] = source[i]
    _correlate_padded(padded, weights, target, width)


@numba.njit(**INLINE)
def _correlate_padded(padded, weights, target, width):
    """target = the weights correlated with the row held in padded[r : r + width], after
    reflecting it into the r places at either end."""
    radius = weights.size // 2
    if width >= radius:  # one reflection: d c b a | a b c d | d c b a
        for i in range(radius):
            padded[radius - 1 - i] = padded[radius + i]
            padded[radius + width + i] = padded[radius + width - 1 - i]
    else:
        for i in range(radius):
            padded[i] = padded[radius + _reflect(i - radius, 0, width)]
            padded[radius + width + i] = padded[radius + _reflect(width + i, 0, width)]
    _correlate(padded, weights, target, width)


@numba.njit(**INLINE)
def _vertical(rows, weights, y, start, length, column, line):
    """Output row y from the rows y − r … y + r, reflected at the borders of the segment
    [start, start + length) and found in ``rows`` at their index modulo its length (a whole
    image, or a ring of 2r + 1 rows); returns the row's sum."""
    taps = weights.size
    radius = taps // 2
    kept = rows.shape[0]
    total = 0.0
    if taps == 5:  # σ ≈ 0.5: one pass over the five rows
        r0 = rows[_reflect(y - 2, start, length) % kept]
        r1 = rows[_reflect(y - 1, start, length) % kept]
        r2 = rows[y % kept]
        r3 = rows[_reflect(y + 1, start, length) % kept]
        r4 = rows[_reflect(y + 2, start, length) % kept]
        w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
        for x in range(line.size):
            value = w0 * r0[x] + w1 * r1[x] + w2 * r2[x] + w3 * r3[x] + w4 * r4[x]
            line[x] = value
            total += value
        return total
    for x in range(line.size):
        column[x] = 0.0
    for k in range(taps):
        row = rows[_reflect(y - radius + k, start, length) % kept]
        weight = weights[k]
        for x in range(line.size):
            column[x] += weight * row[x]
    for x in range(line.size):
        line[x] = column[x]
        total += column[x]
    return total


@numba.njit(**INLINE)
def _geometric_mean_band(image, logs, log_data, beta, floor, weights, target, first, stop):
    """Rows [first, stop) of G_σ exp((1 − β) log max(p, floor) + β log q) for one (H, W)
    image into ``target``, not yet normalised; returns their sum. ``logs`` is log max(p,
    tiny) of the image when known (then no log is taken here), else an empty array.

    Rows are mixed and smoothed along x as they are read, kept in a ring of 2r + 1 rows,
    and smoothed along y as soon as their neighbours are there, so the work stays in cache
    whatever the image size. A band recomputes the r rows above and below it that its
    neighbours also mix. With p, q ≤ 1 and the floor, the exponent lies in [log floor, 0]:
    exp needs no shift by the maximum (the reference subtracts it; results agree to
    rounding)."""
    height, width = image.shape
    taps = weights.size
    radius = taps // 2
    ring = np.empty((taps, width))
    padded = np.empty(width + 2 * radius)
    mixed = padded[radius:]  # rows are mixed in place, between their reflected ends
    column = np.empty(width)
    taken = np.empty(width)  # a row's logs, when they are taken here
    ready = max(first - radius, 0)  # the next row to mix and smooth along x
    total = 0.0
    log_floor = _log_floor(floor)
    for y in range(first, stop):
        while ready <= min(y + radius, height - 1):
            _mix_row(image, logs, log_data, beta, log_floor, ready, mixed, taken)
            _correlate_padded(padded, weights, ring[ready % taps], width)
            ready += 1
        total += _vertical(ring, weights, y, 0, height, column, target[y])
    return total


@numba.njit(**INLINE)
def _log_floor(floor):
    """log floor, taken as :func:`_mix_row` takes its logs (the same bits)."""
    log_floors = np.empty(1)
    fastmath.log_floored(np.full(1, floor), TINY, log_floors)
    return log_floors[0]


@numba.njit(**INLINE)
def _mix_row(image, logs, log_data, beta, log_floor, y, mixed, taken):
    """mixed = exp((1 − β) log max(p, floor) + β log q) along row y, where log max(p,
    floor) = max(log max(p, tiny), log floor) with the logs taken as the metric V takes
    them (``logs``, if it has: then the same bits are read instead of taken here, else
    they are taken into the row buffer ``taken``; not into ``mixed``: a loop that reads
    and writes one array through two names runs unvectorised)."""
    if logs.size > 0:
        row_logs = logs[y]
    else:
        fastmath.log_floored(image[y], TINY, taken)
        row_logs = taken
    data = log_data[y]
    for x in range(mixed.size):
        log_p = max(row_logs[x], log_floor)
        mixed[x] = fastmath.exp((1.0 - beta) * log_p + beta * data[x])


@numba.njit(**INLINE)
def _band_rows(band, bands, height):
    """The rows [first, stop) of band ``band`` of ``bands`` over ``height`` rows."""
    return band * height // bands, (band + 1) * height // bands


@numba.njit(**INLINE)
def _scale_band(target, first, stop, factor):
    for y in range(first, stop):
        line = target[y]
        for x in range(line.size):
            line[x] *= factor


@numba.njit(**INLINE)
def _geometric_mean_task(task, bands, values, logs, log_data, beta, floor, weights, out, totals):
    image = task // bands
    first, stop = _band_rows(task % bands, bands, values.shape[1])
    image_logs = logs[image] if logs.size > 0 else logs[0]
    totals[task] = _geometric_mean_band(
        values[image], image_logs, log_data, beta, floor, weights, out[image], first, stop
    )


@numba.njit(**INLINE)
def _normalise_task(task, bands, out, totals):
    image = task // bands
    first, stop = _band_rows(task % bands, bands, out.shape[1])
    total = 0.0
    for band in range(image * bands, (image + 1) * bands):
        total += totals[band]
    _scale_band(out[image], first, stop, 1.0 / total)


@numba.njit(**INLINE)
def _normalise_and_sum(task, bands, out, totals, rows, cols, sums, negatives):
    """Normalise band ``task``; when the image is one band, also take its block sums on a
    grid of rows × cols blocks (if rows > 0) while it is in this thread's cache."""
    _normalise_task(task, bands, out, totals)
    if bands == 1:
        for band in range(task * rows, (task + 1) * rows):
            _band_sums(out, band, rows, cols, sums, negatives)


@numba.njit(**FAST)
def geometric_mean(values, logs, log_data, beta, floor, weights, out, bands, rows, cols, sums):
    """The geometric-mean step for (batch, H, W) ``values`` into ``out``:
    p' ∝ G_σ exp((1 − β) log max(p, floor) + β log q), each image summing to 1; each image
    is worked on in ``bands`` bands of rows. ``weights`` (odd length) of length 1: σ = 0.
    ``logs``: log max(p, tiny) of ``values`` in float64 if known, else shape (1, 0, 0).
    With rows > 0, also fills (batch, rows · cols) ``sums`` with the block sums of ``out``
    (as ``grid_block_sums`` takes them) and returns its number of negative values."""
    tasks = values.shape[0] * bands
    totals = np.empty(tasks)
    negatives = np.zeros(values.shape[0] * rows, dtype=np.int64)
    for task in range(tasks):
        _geometric_mean_task(task, bands, values, logs, log_data, beta, floor, weights, out, totals)
    for task in range(tasks):
        _normalise_and_sum(task, bands, out, totals, rows, cols, sums, negatives)
    if bands > 1:
        for band in range(negatives.size):
            _band_sums(out, band, rows, cols, sums, negatives)
    return negatives.sum()


@numba.njit(parallel=True, **FAST)
def geometric_mean_parallel(
    values, logs, log_data, beta, floor, weights, out, bands, rows, cols, sums
):
    """:func:`geometric_mean` with the images and bands shared among numba's threads."""
    tasks = values.shape[0] * bands
    totals = np.empty(tasks)
    negatives = np.zeros(values.shape[0] * rows, dtype=np.int64)
    for task in numba.prange(tasks):
        _geometric_mean_task(task, bands, values, logs, log_data, beta, floor, weights, out, totals)
    for task in numba.prange(tasks):
        _normalise_and_sum(task, bands, out, totals, rows, cols, sums, negatives)
    if bands > 1:
        for band in numba.prange(negatives.size):
            _band_sums(out, band, rows, cols, sums, negatives)
    return negatives.sum()
