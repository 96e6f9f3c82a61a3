"""Compiled (numba) kernels for image numerics; each mirrors a plain-numpy reference.

Imported only when the compiled path runs (see :mod:`coarsekl.numerics`). All kernels
release the GIL, so the runner's threads can work on different members at once, and work
one image at a time through buffers that stay in the CPU cache.
"""

from __future__ import annotations

import numba
import numpy as np

from coarsekl import fastmath
from coarsekl_blocks._compiled import normalise_band_and_sum

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# Reassociation lets LLVM vectorise sums; no finite-math flags, so NaN and inf stay visible.
FAST = {**JIT, "fastmath": {"reassoc", "contract"}}
# Small helpers called once per row: a call between compiled functions costs more than
# the row's arithmetic, so they are inlined into their callers.
INLINE = {**FAST, "inline": "always"}
TINY = np.finfo(np.float64).tiny
MIX_CHUNK = 2048  # values the geometric mean mixes in one loop (a chunk of whole rows)
CHUNK_VALUES = 8192  # values of output rows the five-tap geometric mean works on at a time
MIN_CHUNK_ROWS = 8  # (so that the four rows each chunk keeps are at most a third of it)


@numba.njit(**INLINE)
def _reflect(index, start, length):
    """Half-sample symmetric reflection of ``index`` into [start, start + length)."""
    offset = (index - start) % (2 * length)
    if offset >= length:
        offset = 2 * length - 1 - offset
    return start + offset


@numba.njit(**INLINE)
def _correlate(values, weights, out, count):
    """out[x] = Σ_k w_k values[x + k] for x < count.

    Every array is indexed by the bare loop index (shifted views instead of x + k): numba
    checks other index expressions for negative values, which stops vectorisation.
    """
    if weights.size == 5:  # σ ≈ 0.5, the paper's value: unrolled
        p0, p1, p2, p3, p4 = values[0:], values[1:], values[2:], values[3:], values[4:]
        w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
        for x in range(count):
            out[x] = w0 * p0[x] + w1 * p1[x] + w2 * p2[x] + w3 * p3[x] + w4 * p4[x]
        return
    for x in range(count):
        out[x] = 0.0
    for k in range(weights.size):
        weight = weights[k]
        shifted = values[k:]
        for x in range(count):
            out[x] += weight * shifted[x]


@numba.njit(**FAST)
def _smooth_image(image, weights, segment_h, segment_w, rows, out):
    """G_σ of one (H, W) image into ``out`` (its dtype), reflecting at the borders of
    segments of ``segment_h`` × ``segment_w``; ``rows`` is an (H, W) float64 buffer.
    Returns the sum of ``out``."""
    height, width = image.shape
    column = np.empty(width)
    for y in range(height):  # along x, segment by segment
        source, target = image[y], rows[y]
        for start in range(0, width, segment_w):
            stop = start + segment_w
            _correlate_row(source[start:stop], weights, target[start:stop])
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
def _correlate_row(source, weights, target):
    """target[x] = Σ_k w_k source[x + k − r], the row reflected (half-sample symmetric)
    beyond its ends; ``weights`` of odd length 2r + 1."""
    width, taps = source.size, weights.size
    radius = taps // 2
    if width <= 2 * radius:  # a row shorter than the stencil: every value reflects
        for x in range(width):
            value = 0.0
            for k in range(taps):
                value += weights[k] * source[_reflect(x + k - radius, 0, width)]
            target[x] = value
        return
    if taps == 5:  # (the offset spelt out: LLVM vectorises it better; alone, a third faster)
        _correlate(source, weights, target[2:], width - 4)
        _five_tap_ends(source, weights, target)
        return
    _correlate(source, weights, target[radius:], width - 2 * radius)
    for x in range(radius):  # the r values at either end, reflected without a modulo
        left = 0.0
        right = 0.0
        for k in range(taps):
            offset = x + k - radius  # in [−r, 2r)
            left += weights[k] * source[offset if offset >= 0 else -1 - offset]
            index = width - radius + offset
            right += weights[k] * source[index if index < width else 2 * width - 1 - index]
        target[x] = left
        target[width - radius + x] = right


@numba.njit(**INLINE)
def _vertical_five(rows, w0, w1, w2, w3, w4, y, start, length, line):
    """:func:`_vertical` for five weights w0 … w4."""
    kept = rows.shape[0]
    r0 = rows[_reflect(y - 2, start, length) % kept]
    r1 = rows[_reflect(y - 1, start, length) % kept]
    r2 = rows[y % kept]
    r3 = rows[_reflect(y + 1, start, length) % kept]
    r4 = rows[_reflect(y + 2, start, length) % kept]
    total = 0.0
    for x in range(line.size):
        value = w0 * r0[x] + w1 * r1[x] + w2 * r2[x] + w3 * r3[x] + w4 * r4[x]
        line[x] = value
        total += value
    return total


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
        w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
        return _vertical_five(rows, w0, w1, w2, w3, w4, y, start, length, line)
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


@numba.njit(**FAST)  # (called, not inlined: the serial and the parallel entry points share
# one compilation of it, which halves the time to compile them)
def _geometric_mean_band(image, logs, log_data, beta, floor, weights, target, first, stop):
    """Rows [first, stop) of G_σ exp((1 − β) log max(p, floor) + β log q) for one (H, W)
    image into ``target``, not yet normalised; returns their sum. ``logs`` is log max(p,
    tiny) of the image when known (then no log is taken here), else an empty array.

    Rows are mixed a chunk of rows at a time (one long vectorised loop), smoothed along x
    into a ring of 2r + 1 rows, and smoothed along y as soon as their neighbours are there,
    so the work stays in cache whatever the image size (five weights: in chunks of rows,
    :func:`_five_tap_band`). A band recomputes the r rows above and below it that its
    neighbours also mix. With p, q ≤ 1 and the floor, the exponent lies in [log floor, 0]:
    exp needs no shift by the maximum (the reference subtracts it; results agree to
    rounding)."""
    log_floor = _log_floor(floor)
    if weights.size == 5:  # σ ≈ 0.5, the paper's value
        return _five_tap_band(image, logs, log_data, beta, log_floor, weights, target, first, stop)
    height, width = image.shape
    taps = weights.size
    radius = taps // 2
    ring = np.empty((taps, width))
    column = np.empty(width)
    chunk_rows = max(1, MIX_CHUNK // width)
    mixed = np.empty((chunk_rows, width))
    taken = np.empty((chunk_rows, width))  # logs of a chunk, when they are taken here
    ready = max(first - radius, 0)  # the next row to smooth along x
    last = min(stop + radius, height)  # the rows this band mixes end here
    chunk_start = chunk_stop = ready  # the rows in ``mixed``
    total = 0.0
    mixing = (image, logs, log_data, beta, log_floor, weights, ring, mixed, taken, last)
    for y in range(first, stop):
        ready, chunk_start, chunk_stop = _fill_ring(
            mixing, ready, min(y + radius, height - 1), chunk_start, chunk_stop
        )
        total += _vertical(ring, weights, y, 0, height, column, target[y])
    return total


@numba.njit(**INLINE)
def _five_tap_band(image, logs, log_data, beta, log_floor, weights, target, first, stop):
    """:func:`_geometric_mean_band` for five weights, a chunk of rows at a time: the
    chunk's rows (and the two above and below it) are mixed, smoothed along x and then
    along y, each in one long loop over the chunk's contiguous rows: loops over single rows
    of short images spend about as long starting as computing (a third of the time at
    128 × 128). The four rows the next chunk needs again stay in the buffer."""
    height, width = image.shape
    w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
    rows = max(MIN_CHUNK_ROWS, CHUNK_VALUES // width)  # output rows per chunk
    smoothed = np.empty((rows + 4, width))  # along x: the image rows y − 2 … y + count + 1
    mixed = np.empty((rows + 4, width))
    taken = np.empty((rows + 4 if logs.size == 0 else 0, width))  # logs, if taken here
    total = 0.0
    y = first
    kept = 0  # rows of ``smoothed`` that hold the rows y − 2 … y − 3 + kept already
    while y < stop:
        count = min(rows, stop - y)
        top = y - 2  # the image row in the buffer's first row
        start, end = max(top + kept, 0), min(y + count + 2, height)  # rows to smooth now
        if end > start:
            _mix_rows(image, logs, log_data, beta, log_floor, start, end, mixed, taken)
            _correlate_rows_five(mixed[: end - start], weights, smoothed[start - top : end - top])
        for row in range(top + kept, y + count + 2):  # beyond the image: reflected rows
            if row < 0 or row >= height:
                smoothed[row - top] = smoothed[_reflect(row, 0, height) - top]
        flat = smoothed.reshape(-1)
        r0, r1, r2 = flat, flat[width:], flat[2 * width :]
        r3, r4 = flat[3 * width :], flat[4 * width :]
        out = target[y : y + count].reshape(-1)
        for x in range(out.size):
            value = w0 * r0[x] + w1 * r1[x] + w2 * r2[x] + w3 * r3[x] + w4 * r4[x]
            out[x] = value
            total += value
        for row in range(4):  # forwards: the rows read lie past the rows written
            smoothed[row] = smoothed[count + row]
        kept = 4
        y += count
    return total


@numba.njit(**INLINE)
def _correlate_rows_five(source, weights, target):
    """:func:`_correlate_row` for five weights on each row of (n, W) ``source`` into
    ``target``: one loop over all the values (it runs across the ends of rows), then the
    two values at either end of each row, reflected."""
    width = source.shape[1]
    if width <= 4:
        for row in range(source.shape[0]):
            _correlate_row(source[row], weights, target[row])
        return
    values, out = source.reshape(-1), target.reshape(-1)
    _correlate(values, weights, out[2:], values.size - 4)
    for row in range(source.shape[0]):
        _five_tap_ends(source[row], weights, target[row])


@numba.njit(**INLINE)
def _five_tap_ends(source, weights, target):
    """The two values at either end of a row (of more than four values) smoothed with five
    weights, the row reflected (half-sample symmetric), written out."""
    s, e = source, source.size
    w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
    target[0] = w0 * s[1] + w1 * s[0] + w2 * s[0] + w3 * s[1] + w4 * s[2]
    target[1] = w0 * s[0] + w1 * s[0] + w2 * s[1] + w3 * s[2] + w4 * s[3]
    target[e - 2] = w0 * s[e - 4] + w1 * s[e - 3] + w2 * s[e - 2] + w3 * s[e - 1] + w4 * s[e - 1]
    target[e - 1] = w0 * s[e - 3] + w1 * s[e - 2] + w2 * s[e - 1] + w3 * s[e - 1] + w4 * s[e - 2]


@numba.njit(**INLINE)
def _fill_ring(mixing, ready, until, chunk_start, chunk_stop):
    """Mix (a chunk at a time) and smooth along x the rows ``ready`` … ``until`` into the
    ring; returns the next row to smooth and the rows now in the chunk buffer ``mixed``."""
    image, logs, log_data, beta, log_floor, weights, ring, mixed, taken, last = mixing
    while ready <= until:
        if ready == chunk_stop:
            chunk_start, chunk_stop = ready, min(ready + mixed.shape[0], last)
            _mix_rows(image, logs, log_data, beta, log_floor, chunk_start, chunk_stop, mixed, taken)
        _correlate_row(mixed[ready - chunk_start], weights, ring[ready % ring.shape[0]])
        ready += 1
    return ready, chunk_start, chunk_stop


@numba.njit(**INLINE)
def _log_floor(floor):
    """log floor, taken as :func:`_mix_rows` takes its logs (the same bits)."""
    log_floors = np.empty(1)
    fastmath.log_floored(np.full(1, floor), TINY, log_floors)
    return log_floors[0]


@numba.njit(**INLINE)
def _mix_rows(image, logs, log_data, beta, log_floor, start, stop, mixed, taken):
    """Rows [start, stop) of exp((1 − β) log max(p, floor) + β log q) into the first rows
    of ``mixed``, where log max(p, floor) = max(log max(p, tiny), log floor) with the logs
    taken as the metric V takes them (``logs``, if it has: then the same bits are read
    instead of taken here, else they are taken into ``taken``; not into ``mixed``: a loop
    that reads and writes one array through two names runs unvectorised). Whole rows are
    contiguous: one loop over all their values."""
    count = stop - start
    out = mixed[:count].reshape(-1)
    data = log_data[start:stop].reshape(-1)
    if logs.size > 0:
        row_logs = logs[start:stop].reshape(-1)
    else:
        row_logs = taken[:count].reshape(-1)
        fastmath.log_floored(image[start:stop].reshape(-1), TINY, row_logs)
    for x in range(out.size):
        log_p = max(row_logs[x], log_floor)
        out[x] = fastmath.exp((1.0 - beta) * log_p + beta * data[x])


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
    _scale_band(out[image], first, stop, 1.0 / _image_total(totals, image, bands))


@numba.njit(**INLINE)
def _image_total(totals, image, bands):
    total = 0.0
    for band in range(image * bands, (image + 1) * bands):
        total += totals[band]
    return total


@numba.njit(**INLINE)
def _normalise_block_row(task, bands, rows, cols, out, totals, sums, negatives):
    """Normalise block row ``task % rows`` of image ``task // rows`` (worked on in
    ``bands`` bands) and take its block sums in the same pass over memory."""
    factor = 1.0 / _image_total(totals, task // rows, bands)
    normalise_band_and_sum(out, factor, task, rows, cols, sums, negatives)


@numba.njit(**INLINE)
def _normalise_and_sum(image, out, totals, rows, cols, sums, negatives):
    """Normalise an image worked on in one band and take its block sums on a grid of
    rows × cols blocks (if rows > 0) in the same pass, while it is in this thread's cache."""
    if rows == 0:
        _normalise_task(image, 1, out, totals)
        return
    for task in range(image * rows, (image + 1) * rows):
        _normalise_block_row(task, 1, rows, cols, out, totals, sums, negatives)


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
        if bands == 1:
            _normalise_and_sum(task, out, totals, rows, cols, sums, negatives)
    if bands > 1 and rows > 0:  # normalised and summed in one pass
        for task in range(negatives.size):
            _normalise_block_row(task, bands, rows, cols, out, totals, sums, negatives)
    elif bands > 1:
        for task in range(tasks):
            _normalise_task(task, bands, out, totals)
    return negatives.sum()


@numba.njit(parallel=True, **FAST)
def geometric_mean_parallel(
    values, logs, log_data, beta, floor, weights, out, bands, rows, cols, sums
):
    """:func:`geometric_mean` with the images and bands shared among numba's threads (in
    one parallel loop when each image is one band)."""
    tasks = values.shape[0] * bands
    totals = np.empty(tasks)
    negatives = np.zeros(values.shape[0] * rows, dtype=np.int64)
    for reversed_task in numba.prange(tasks):
        # Last task first: numba gives the calling thread the first iterations, and it goes
        # on with the serial work on the batch's last images (the runner projects the
        # scheme 'proj', after 'base'): they stay in its core's cache (6 % of a run).
        task = tasks - 1 - reversed_task
        _geometric_mean_task(task, bands, values, logs, log_data, beta, floor, weights, out, totals)
        if bands == 1:
            _normalise_and_sum(task, out, totals, rows, cols, sums, negatives)
    if bands > 1 and rows > 0:
        for task in numba.prange(negatives.size):
            _normalise_block_row(task, bands, rows, cols, out, totals, sums, negatives)
    elif bands > 1:
        for task in numba.prange(tasks):
            _normalise_task(task, bands, out, totals)
    return negatives.sum()
