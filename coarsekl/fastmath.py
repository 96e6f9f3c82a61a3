"""Vectorisable ``exp`` and ``log`` for numba kernels.

numba compiles ``np.exp``/``np.log`` inside loops to scalar libm calls, which keeps LLVM
from vectorising the loop (about 4 ns per value here, against under 1 ns for numpy's SIMD
ufuncs). These versions use only arithmetic and bit operations, so a loop that calls them
compiles to SIMD code and can fuse a log, an exp and a stencil in one pass over the data.
Accuracy: within 2 ulp of numpy for normal inputs (tested). Use them from functions
compiled with ``error_model="numpy"`` (Python's error model adds a branch per division).

Importing this module imports numba; plugins import it only from their compiled modules.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["exp", "log", "log_floored"]

LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k · LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10
LOG2E = 1.44269504088896338700e00
SQRT2 = 1.41421356237309504880
MANTISSA_BITS = np.int64(0x000FFFFFFFFFFFFF)
ONE_BITS = np.int64(0x3FF0000000000000)  # the bits of 1.0: exponent 0
INLINE = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE-754 bits of a float64 as an int64 (a bit cast, no conversion)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, value):
    """The float64 whose IEEE-754 bits are the int64 ``value``."""
    if value != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@numba.njit(**INLINE)
def exp(x):
    """e^x for x ≤ 709 (x < −708 gives e^−708 ≈ 3e−308, not a subnormal or 0).

    x = k ln 2 + r with |r| ≤ ln 2 / 2; e^r by its Taylor series to r^13 / 13! (truncation
    below 1e−17 relative); 2^k built from its exponent bits.
    """
    x = max(float(x), -708.0)
    k = np.floor(x * LOG2E + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_float((np.int64(k) + np.int64(1023)) << np.int64(52))


@numba.njit(**INLINE)
def log(x):
    """ln x for normal positive x (≥ 2.2e−308; callers floor their inputs).

    x = m · 2^e with m in [√½, √2); ln m = 2 atanh(f) = 2f + f R(f²), f = (m − 1)/(m + 1),
    |f| ≤ 0.1716, with fdlibm's minimax polynomial R of degree 7 (error below 2^−58).
    """
    bits = _float_bits(float(x))
    e = np.float64((bits >> np.int64(52)) - np.int64(1023))
    m = _bits_float((bits & MANTISSA_BITS) | ONE_BITS)  # in [1, 2)
    above = np.float64(m > SQRT2)  # arithmetic instead of a branch keeps the loop SIMD
    m = m * (1.0 - 0.5 * above)
    e = e + above
    f = (m - 1.0) / (m + 1.0)
    z = f * f
    r = 1.479819860511658591e-01
    r = r * z + 1.531383769920937332e-01
    r = r * z + 1.818357216161805012e-01
    r = r * z + 2.222219843214978396e-01
    r = r * z + 2.857142874366239149e-01
    r = r * z + 3.999999999940941908e-01
    r = r * z + 6.666666666666735130e-01
    return e * LN2_HI + (2.0 * f + (f * (r * z) + e * LN2_LO))


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def log_floored(values, floor, out):
    """out[i] = ln max(values[i], floor) in float64, for 1-d ``values`` (any float dtype).

    Compiled on its own and without reassociation, so that every caller gets the same
    bits for the same value (inlined into callers compiled with their own fast-math flags,
    :func:`log` may round differently from one loop to another): a kernel reading logs
    that a metric took gets exactly the numbers it would take itself."""
    for i in range(values.size):
        out[i] = log(max(np.float64(values[i]), floor))
