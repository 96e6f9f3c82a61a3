"""Pure numerics for weighted particle ensembles (THEORY §7, paper Sec. 2.2).

Every function works on leading batch axes ``...`` (schemes, members): positions
``(..., N, d)``, weights ``(..., N)``, block labels ``(..., N)`` with values in ``[0, K)``.
The hot paths (block sums, reweighting, resampling) flatten the batch and use one
``bincount`` / ``cumsum`` / ``repeat`` over all rows at once; resampling also has a
compiled (numba) kernel, chosen by :func:`coarsekl.numerics.compiled_enabled`, that gives
the same indices (up to ties at rounding level) about four times faster.

Distances to an exact Gaussian mixture take the mixture as plain arrays: ``mix_weights``
``(C,)``, ``means`` ``(C, d)``, ``covariances`` ``(C, d, d)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import entr, ndtr, rel_entr

from coarsekl.errors import DataError
from coarsekl.numerics import compiled_enabled, compiled_module

__all__ = [
    "binned_kl_2d",
    "block_weights",
    "effective_sample_size",
    "energy_distance",
    "mixture_cell_probabilities",
    "mixture_quantiles_1d",
    "random_directions",
    "resample_within_blocks",
    "reweight",
    "sliced_wasserstein",
    "weighted_entropy_of_posteriors",
    "weighted_histogram_2d",
]

# Chunks of pairwise distances / projections hold at most this many float64 (32 MB each).
CHUNK_ELEMENTS = 1 << 22
# Gauss–Legendre nodes per x-piece in the cell probabilities of a 2-D mixture.
CELL_NODES = 12
CELL_MAX_PIECES = 64


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _weights(weights: np.ndarray, name: str = "weights") -> np.ndarray:
    """float64 weights (..., N), N ≥ 1, finite and ≥ 0 (one pass: min catches NaN too)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < 1 or w.shape[-1] < 1:
        raise DataError(f"{name} must have shape (..., N) with N ≥ 1, got {w.shape}")
    low, high = w.min(), w.max()
    if not low >= 0:
        raise DataError(f"{name} must be ≥ 0 and not NaN (minimum {low})")
    if not np.isfinite(high):
        raise DataError(f"{name} must be finite (maximum {high})")
    return w


def _labels(labels: np.ndarray, shape: tuple[int, ...], n_blocks: int) -> np.ndarray:
    """Integer labels broadcast to ``shape``, every value in [0, n_blocks)."""
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {lab.dtype}")
    try:
        lab = np.broadcast_to(lab, shape)
    except ValueError:
        raise DataError(
            f"labels of shape {np.shape(labels)} do not match weights of shape {shape}"
        ) from None
    if n_blocks < 1:
        raise DataError(f"the number of blocks must be ≥ 1, got {n_blocks}")
    low, high = lab.min(), lab.max()
    if low < 0 or high >= n_blocks:
        raise DataError(f"labels must lie in [0, {n_blocks}), found values in [{low}, {high}]")
    return lab


def _target(target: np.ndarray, batch: tuple[int, ...], current: np.ndarray) -> np.ndarray:
    """Target block masses (..., K), ≥ 0, normalised to Σ = 1; zero where a block is empty."""
    t = np.asarray(target, dtype=np.float64)
    if t.ndim < 1 or t.shape[-1] != current.shape[-1]:
        raise DataError(
            f"target must have shape (..., {current.shape[-1]}) (one mass per block), got {t.shape}"
        )
    try:
        t = np.broadcast_to(t, current.shape)
    except ValueError:
        raise DataError(
            f"target of shape {t.shape} does not match the batch {batch} of the weights"
        ) from None
    if not (np.isfinite(t).all() and t.min() >= 0):
        raise DataError("target masses must be finite and ≥ 0")
    total = t.sum(axis=-1, keepdims=True)
    if not (total > 0).all():
        raise DataError("target masses must not all be zero")
    t = t / total
    stranded = (current <= 0) & (t > 0)
    if stranded.any():
        where = np.argwhere(stranded)[0]
        raise DataError(
            f"target gives mass {t[tuple(where)]:.3g} to block {where[-1]} (batch index "
            f"{tuple(where[:-1])}), which holds no particle weight: such blocks cannot "
            "receive mass by reweighting or resampling (set their target to 0)"
        )
    return t


def _mixture(
    mix_weights: np.ndarray, means: np.ndarray, covariances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(π normalised (C,), μ (C, d), Σ (C, d, d)) as float64, shapes checked."""
    pi = np.asarray(mix_weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    cov = np.asarray(covariances, dtype=np.float64)
    if pi.ndim != 1 or mu.ndim != 2 or mu.shape[0] != pi.size:
        raise DataError(
            f"mixture needs mix_weights (C,) and means (C, d); got {pi.shape} and {mu.shape}"
        )
    if cov.shape != (pi.size, mu.shape[1], mu.shape[1]):
        raise DataError(
            f"covariances must have shape {(pi.size, mu.shape[1], mu.shape[1])}, got {cov.shape}"
        )
    if not (np.isfinite(pi).all() and pi.min() >= 0 and pi.sum() > 0):
        raise DataError("mix_weights must be finite, ≥ 0 and not all zero")
    return pi / pi.sum(), mu, cov


def _positions(positions: np.ndarray, weights: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.asarray(positions)
    if x.ndim < 2 or x.shape[:-1] != weights.shape:
        raise DataError(
            f"positions must have shape (..., N, d) matching weights {weights.shape}, got {x.shape}"
        )
    if dim is not None and x.shape[-1] != dim:
        raise DataError(f"positions must have dimension d = {dim}, got {x.shape[-1]}")
    return x


def _row_totals(w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=-1)
    if not (total > 0).all():
        raise DataError("every batch row needs positive total weight")
    return total


# ---------------------------------------------------------------------------------------
# Block sums, reweighting, resampling
# ---------------------------------------------------------------------------------------


def _flat_keys(labels: np.ndarray, n_blocks: int, small: bool = False) -> np.ndarray:
    """row·K + label over the flattened batch; ``small``: in the smallest unsigned type
    that holds them (numpy then sorts them by radix sort)."""
    rows = labels.reshape(-1, labels.shape[-1])
    n_keys = rows.shape[0] * n_blocks
    dtype = np.uint16 if small and n_keys <= 1 << 16 else np.intp
    offsets = (np.arange(rows.shape[0], dtype=dtype) * dtype(n_blocks))[:, None]
    return (rows.astype(dtype, copy=False) + offsets).ravel()


def block_weights(weights: np.ndarray, labels: np.ndarray, n_blocks: int) -> np.ndarray:
    """Weighted block masses w_j = Σ_{n: label_n = j} weight_n.

    weights (..., N) ≥ 0, labels (..., N) (or broadcastable) in [0, K) → (..., K).
    One ``bincount`` over the flattened batch with keys row·K + label.
    """
    w = _weights(weights)
    return _block_sums(w, _labels(labels, w.shape, n_blocks), n_blocks)


def _block_sums(w: np.ndarray, lab: np.ndarray, n_blocks: int) -> np.ndarray:
    """:func:`block_weights` of checked inputs."""
    rows = int(np.prod(w.shape[:-1], dtype=np.int64))
    keys = _flat_keys(lab, n_blocks)
    sums = np.bincount(keys, weights=w.ravel(), minlength=rows * n_blocks)
    return sums.reshape(*w.shape[:-1], n_blocks)


def reweight(weights: np.ndarray, labels: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Sample-based V_δ projection by reweighting (THEORY §7): weight_n · target_j / w_j.

    weights (..., N), labels (..., N) in [0, K), target (..., K) ≥ 0 (normalised here)
    → new weights (..., N), each row summing to 1, whose block masses equal the target
    to rounding. Blocks with w_j = 0 keep weight 0; their target must be 0.
    """
    w = _weights(weights)
    n_blocks = np.shape(target)[-1] if np.ndim(target) else 0
    lab = _labels(labels, w.shape, n_blocks)
    current = _block_sums(w, lab, n_blocks)
    t = _target(target, w.shape[:-1], current)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(current > 0, t / current, 0.0)
    new = w * np.take_along_axis(factor, lab, axis=-1)
    new /= new.sum(axis=-1, keepdims=True)
    return new


def _resampling_plan(
    w: np.ndarray, lab: np.ndarray, target: np.ndarray, uniforms: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per (row, block): 1/w_j, slope N·t_j, offset N·C_{j−1} − u, first and end comb index.

    The comb (u + i)/N, i = 0..N−1, over the target's cumulative masses C gives block j
    the indices i ∈ [ceil(N·C_{j−1} − u), ceil(N·C_j − u)): floor or ceil of N·t_j of them,
    N in all. C is clipped to 1 and set to exactly 1 from the last positive target on, so
    no rounding can lose or add a particle.
    """
    n = w.shape[-1]
    n_blocks = target.shape[-1]
    current = _block_sums(w, lab, n_blocks).reshape(-1, n_blocks)
    t = _target(target, w.shape[:-1], current.reshape(*w.shape[:-1], n_blocks))
    t = t.reshape(-1, n_blocks)
    u = np.asarray(uniforms, dtype=np.float64)
    if u.shape != w.shape[:-1]:
        raise DataError(f"uniforms must have the batch shape {w.shape[:-1]}, got {u.shape}")
    u = u.reshape(-1, 1)
    if not ((u >= 0) & (u < 1)).all():
        raise DataError("uniforms must lie in [0, 1)")
    cumulative = np.minimum(np.cumsum(t, axis=-1), 1.0)
    last_positive = n_blocks - 1 - np.argmax(t[:, ::-1] > 0, axis=-1)
    cumulative[np.arange(n_blocks) >= last_positive[:, None]] = 1.0
    before = np.concatenate([np.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], axis=-1)
    offset = n * before - u
    upper = np.clip(np.ceil(n * cumulative - u), 0, n)
    lower = np.clip(np.ceil(offset), 0, n)
    with np.errstate(divide="ignore"):
        inverse = np.where(current > 0, 1.0 / current, 0.0)
    return inverse, n * t, offset, lower, upper


def resample_within_blocks(
    weights: np.ndarray, labels: np.ndarray, target: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
    """Systematic resampling that moves block masses to ``target`` and keeps positions
    within each block (sample-based V_δ projection by resampling, THEORY §7).

    weights (..., N) ≥ 0, labels (..., N) in [0, K), target (..., K) ≥ 0 (normalised here;
    zero where a block has no weight), uniforms (...,) in [0, 1), one per batch row
    → indices (..., N) into the particle axis; the caller gathers positions (and carried
    arrays) with them and sets the weights to 1/N.

    One systematic comb (u + i)/N, i = 0..N−1, is laid over the particles sorted by block
    (stable), block j's weights rescaled to total target_j: the same u drives both the
    allocation between blocks and the choice within them. Block j receives
    ceil(N·C_j − u) − ceil(N·C_{j−1} − u) particles (C the cumulative target), which
    differs from N·target_j by less than 1 and sums to N; within the block, particle n
    gets floor or ceil of N·target_j·weight_n/w_j copies (unbiased over u ~ U[0, 1)),
    zero-weight particles none. Only particles of block j fill block j. Indices come
    grouped by block, ascending within a block.
    """
    w = _weights(weights)
    n_blocks = np.shape(target)[-1] if np.ndim(target) else 0
    lab = _labels(labels, w.shape, n_blocks)
    plan = _resampling_plan(w, lab, np.asarray(target), uniforms)
    n = w.shape[-1]
    if compiled_enabled():
        resample_rows = compiled_module("coarsekl_gmm._compiled_particles").resample_rows
        rows = w.reshape(-1, n)
        out = np.empty(rows.size + n_blocks, dtype=np.int64)  # K scratch entries at the end
        resample_rows(
            np.ascontiguousarray(rows),
            np.ascontiguousarray(lab.reshape(-1, n)),
            *(np.ascontiguousarray(p) for p in plan),
            out,
        )
        return out[: rows.size].reshape(w.shape)
    return _resample_reference(w, lab, *plan).reshape(w.shape)


def _resample_reference(
    w: np.ndarray,
    lab: np.ndarray,
    inverse: np.ndarray,
    slope: np.ndarray,
    offset: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    """Plain-numpy path of :func:`resample_within_blocks` (rows flattened).

    Sorted (stably) by key row·K + label, S is the running sum along each row of
    weight/w_j, so block j's within-block cumulative share is F = S − S_before(j). Its
    particles take the comb indices below G = clip(ceil(N·t_j·F + N·C_{j−1} − u), lo, hi),
    G = hi from the block's last positive weight on; copies = differences of G.
    """
    n = w.shape[-1]
    rows, n_blocks = inverse.shape
    keys = _flat_keys(lab, n_blocks, small=True)
    order = np.argsort(keys, kind="stable")
    per_key = np.bincount(keys, minlength=rows * n_blocks)

    def spread(values: np.ndarray) -> np.ndarray:
        return np.repeat(values.ravel(), per_key)

    running = np.cumsum((w.ravel()[order] * spread(inverse)).reshape(rows, n), axis=-1).ravel()
    ends = np.cumsum(per_key)
    starts = ends - per_key
    occupied = per_key > 0
    s_end = np.zeros(rows * n_blocks)
    s_end[occupied] = running[ends[occupied] - 1]
    s_before = np.zeros(rows * n_blocks)
    inner = occupied & (starts % n != 0)
    s_before[inner] = running[starts[inner] - 1]
    hi = spread(upper)
    comb = np.ceil(spread(slope) * (running - spread(s_before)) + spread(offset))
    comb = np.clip(comb, spread(lower), hi)
    comb = np.where(running == spread(s_end), hi, comb).reshape(rows, n)
    copies = np.diff(comb, axis=-1, prepend=0.0).astype(np.int64).ravel()
    local = order.reshape(rows, n) - (np.arange(rows) * n)[:, None]
    return np.repeat(local.ravel(), copies).reshape(rows, n)


def effective_sample_size(weights: np.ndarray) -> np.ndarray:
    """ESS = (Σ_n w_n)² / Σ_n w_n² (= 1/Σ w² for normalised weights), in particles.

    weights (..., N) → (...); N for uniform weights, 1 for a single non-zero weight.
    """
    w = _weights(weights)
    total = _row_totals(w)
    return total**2 / np.einsum("...n,...n->...", w, w)


def weighted_entropy_of_posteriors(posteriors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over particles of H(q(·|x_n)) = −Σ_c q_c log q_c, in nats.

    posteriors (..., N, C) (rows summing to 1), weights (..., N) → (...).
    """
    w = _weights(weights)
    q = np.asarray(posteriors, dtype=np.float64)
    if q.ndim < 2 or q.shape[:-1] != w.shape:
        raise DataError(
            f"posteriors must have shape (..., N, C) matching weights {w.shape}, got {q.shape}"
        )
    if not (np.isfinite(q).all() and q.min() >= 0):
        raise DataError("posteriors must be finite and ≥ 0")
    entropy = entr(q).sum(axis=-1)
    return np.einsum("...n,...n->...", w, entropy) / _row_totals(w)


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance to a Gaussian mixture
# ---------------------------------------------------------------------------------------


def random_directions(n_directions: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n_directions unit vectors uniform on the sphere S^{d−1}: (P, d)."""
    if n_directions < 1 or dim < 1:
        raise DataError(f"need P ≥ 1 directions in d ≥ 1 dimensions, got {n_directions}, {dim}")
    v = rng.standard_normal((n_directions, dim))
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    while (norms == 0).any():  # probability zero; keep the vectors well defined anyway
        v = np.where(norms == 0, rng.standard_normal(v.shape), v)
        norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / norms


def _row_searchsorted(sorted_rows: np.ndarray, keys: np.ndarray, side: str) -> np.ndarray:
    """searchsorted row by row in one call: rows hold values in [0, 1], shifted by their
    row index they form one increasing array (keys (Q, M) likewise) → (Q, M) indices."""
    q, n = sorted_rows.shape
    shift = np.arange(q, dtype=np.float64)[:, None]
    found = np.searchsorted((sorted_rows + shift).ravel(), (keys + shift).ravel(), side=side)
    return found.reshape(keys.shape) - (np.arange(q) * n)[:, None]


def mixture_quantiles_1d(
    mix_weights: np.ndarray, means: np.ndarray, sds: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """Quantile function G^{-1}(u) of 1-D Gaussian mixtures Σ_c π_c N(m_c, s_c²).

    mix_weights (C,), means and sds (P, C) (one mixture per row), levels (M,) in (0, 1)
    → (P, M). G is tabulated on 4097 points over [min m − 12 s, max m + 12 s] (ndtr);
    the bracketing grid cell gives a linear first guess, then 6 Newton steps clipped to
    the cell converge to rounding (|G(x) − u| ≲ 1e-15) wherever the density is not tiny.
    """
    pi = np.asarray(mix_weights, dtype=np.float64)
    pi = pi / pi.sum()
    m = np.atleast_2d(np.asarray(means, dtype=np.float64))
    s = np.atleast_2d(np.asarray(sds, dtype=np.float64))
    u = np.asarray(levels, dtype=np.float64)
    if not (s > 0).all():
        raise DataError("mixture standard deviations must be > 0")
    if not ((u > 0) & (u < 1)).all():
        raise DataError("quantile levels must lie in (0, 1)")
    low = (m - 12 * s).min(axis=-1, keepdims=True)
    high = (m + 12 * s).max(axis=-1, keepdims=True)
    grid = low + (high - low) * np.linspace(0.0, 1.0, 4097)

    def cdf(x: np.ndarray) -> np.ndarray:
        return sum(p * ndtr((x - m[:, c, None]) / s[:, c, None]) for c, p in enumerate(pi))

    def pdf(x: np.ndarray) -> np.ndarray:
        z = [(x - m[:, c, None]) / s[:, c, None] for c in range(pi.size)]
        return sum(
            p * np.exp(-0.5 * zc * zc) / (s[:, c, None] * np.sqrt(2 * np.pi))
            for c, (p, zc) in enumerate(zip(pi, z, strict=True))
        )

    table = cdf(grid)
    levels_rows = np.broadcast_to(u, (m.shape[0], u.size))
    right = np.clip(_row_searchsorted(table, levels_rows, "left"), 1, grid.shape[-1] - 1)
    x_lo = np.take_along_axis(grid, right - 1, axis=-1)
    x_hi = np.take_along_axis(grid, right, axis=-1)
    g_lo = np.take_along_axis(table, right - 1, axis=-1)
    g_hi = np.take_along_axis(table, right, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(g_hi > g_lo, (levels_rows - g_lo) / (g_hi - g_lo), 0.5)
    x = x_lo + np.clip(frac, 0.0, 1.0) * (x_hi - x_lo)
    for _ in range(6):
        density = pdf(x)
        residual = cdf(x) - levels_rows
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(density > 0, residual / density, 0.0)
        x = np.clip(x - step, x_lo, x_hi)
    return x


def sliced_wasserstein(
    positions: np.ndarray,
    weights: np.ndarray,
    mix_weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    directions: np.ndarray,
    quantiles: int = 2000,
) -> np.ndarray:
    """Sliced 2-Wasserstein distance from a weighted sample to a Gaussian mixture.

    SW2 = sqrt(mean_θ W2²(θ·X, θ·Y)), W2² = ∫_0^1 (F_θ^{-1}(u) − G_θ^{-1}(u))² du, with F_θ
    the weighted empirical law of the projections θ·x_n and G_θ the projected mixture
    Σ_c π_c N(θ·μ_c, θᵀΣ_cθ). The integral is the midpoint rule on ``quantiles`` levels
    u_m = (m + ½)/M (error O(log M / M) from the Gaussian tails, ~1e-3 relative for
    M = 2000); F^{-1} by sorting and searchsorted of cumulative weights, G^{-1} by
    :func:`mixture_quantiles_1d`.

    positions (..., N, d), weights (..., N), directions (P, d) unit vectors → (...).
    Cost O(P·N log N) per batch row; directions are processed in chunks so that the
    projections stay below ~32 MB.
    """
    w = _weights(weights)
    pi, mu, cov = _mixture(mix_weights, means, covariances)
    x = _positions(positions, w, mu.shape[1])
    theta = np.asarray(directions, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != mu.shape[1]:
        raise DataError(f"directions must have shape (P, {mu.shape[1]}), got {theta.shape}")
    if not np.allclose(np.linalg.norm(theta, axis=-1), 1.0, rtol=0, atol=1e-10):
        raise DataError("directions must be unit vectors")
    if quantiles < 1:
        raise DataError(f"quantiles must be ≥ 1, got {quantiles}")
    _row_totals(w)
    levels = (np.arange(quantiles) + 0.5) / quantiles
    projected_means = theta @ mu.T  # (P, C)
    projected_sds = np.sqrt(np.einsum("pi,cij,pj->pc", theta, cov, theta))
    target_quantiles = mixture_quantiles_1d(pi, projected_means, projected_sds, levels)

    batch, n = w.shape[:-1], w.shape[-1]
    w_rows = w.reshape(-1, n)
    x_rows = x.reshape(-1, n, mu.shape[1])
    rows = w_rows.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // (rows * n))
    squared = np.zeros(rows)
    for first in range(0, theta.shape[0], chunk):
        part = slice(first, first + chunk)
        proj = np.einsum("rnd,pd->rpn", x_rows, theta[part], dtype=np.float64)
        order = np.argsort(proj, axis=-1)
        sorted_proj = np.take_along_axis(proj, order, axis=-1)
        cum = np.cumsum(np.take_along_axis(w_rows[:, None, :], order, axis=-1), axis=-1)
        cum /= cum[..., -1:]
        cum[..., -1] = 1.0
        p = cum.shape[1]
        flat_cum = cum.reshape(rows * p, n)
        keys = np.broadcast_to(levels, (rows * p, quantiles))
        index = np.clip(_row_searchsorted(flat_cum, keys, "left"), 0, n - 1)
        sample_quantiles = np.take_along_axis(sorted_proj.reshape(rows * p, n), index, axis=-1)
        diff = sample_quantiles.reshape(rows, p, quantiles) - target_quantiles[part]
        squared += np.einsum("rpm,rpm->r", diff, diff) / quantiles
    return np.sqrt(squared / theta.shape[0]).reshape(batch)


# ---------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------


def _weighted_pair_sum(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> float:
    """Σ_{n,m} wa_n wb_m |a_n − b_m| for a (N, d), b (M, d), in chunks of rows of a so
    that a chunk's distance block holds at most CHUNK_ELEMENTS entries."""
    chunk = max(1, CHUNK_ELEMENTS // b.shape[0])
    total = 0.0
    for first in range(0, a.shape[0], chunk):
        part = slice(first, first + chunk)
        total += wa[part] @ (cdist(a[part], b) @ wb)
    return total


def _weighted_self_sum(a: np.ndarray, wa: np.ndarray) -> float:
    """Σ_{n,n'} wa_n wa_n' |a_n − a_n'|: each chunk of rows against itself and the rows
    after it (counted twice), so only the upper triangle of distances is formed."""
    chunk = max(1, CHUNK_ELEMENTS // a.shape[0])
    total = 0.0
    for first in range(0, a.shape[0], chunk):
        last = min(first + chunk, a.shape[0])
        distances = cdist(a[first:last], a[first:])
        w_part = wa[first:last]
        total += w_part @ distances[:, : last - first] @ w_part
        total += 2 * (w_part @ (distances[:, last - first :] @ wa[last:]))
    return total


def energy_distance(
    positions: np.ndarray, weights: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Squared energy distance 2E|X − Y| − E|X − X'| − E|Y − Y'| (Székely & Rizzo) between
    the weighted sample X and the unweighted reference sample Y, V-statistics (pairs with
    themselves included), clipped at 0 against rounding.

    positions (..., N, d), weights (..., N), reference (M, d) → (...). Note:
    ``scipy.stats.energy_distance`` (1-D) returns the square root of this quantity.
    Cost O(N·(N/2 + M)·d) per batch row plus O(M²·d/2) (``scipy.spatial.distance.cdist``,
    ~10 ns per pair in 2-D, ~25 in 64-D); distances are formed in chunks of ≤ 2^22 entries
    (32 MB). Subsample large ensembles (N = M = 10⁴: about 1.5 s per row).
    """
    w = _weights(weights)
    y = np.asarray(reference, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 1:
        raise DataError(f"reference must have shape (M, d) with M ≥ 1, got {y.shape}")
    x = _positions(positions, w, y.shape[1])
    total = _row_totals(w)
    batch, n, d = w.shape[:-1], w.shape[-1], y.shape[1]
    x_rows = x.reshape(-1, n, d).astype(np.float64, copy=False)
    w_rows = w.reshape(-1, n) / total.reshape(-1, 1)
    wy = np.full(y.shape[0], 1.0 / y.shape[0])
    within_y = _weighted_self_sum(y, wy)
    result = np.array(
        [
            2 * _weighted_pair_sum(xr, wr, y, wy) - _weighted_self_sum(xr, wr) - within_y
            for xr, wr in zip(x_rows, w_rows, strict=True)
        ]
    )
    return np.maximum(result, 0.0).reshape(batch)


# ---------------------------------------------------------------------------------------
# Binned KL divergence in 2-D
# ---------------------------------------------------------------------------------------


def _edges(edges: np.ndarray, name: str) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or not (np.diff(e) > 0).all():
        raise DataError(f"{name} must be a 1-D strictly increasing array of ≥ 2 finite edges")
    return e


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin i for edges[i] ≤ v < edges[i+1] (the last bin closed), −1 / B outside."""
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = edges.size - 2
    return index


def weighted_histogram_2d(
    positions: np.ndarray, weights: np.ndarray, edges_x: np.ndarray, edges_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted 2-D histogram over the rectangular window, normalised by the total weight.

    positions (..., N, 2), weights (..., N), edges (Bx+1,), (By+1,) → (cells (..., Bx, By),
    outside (...)): the mass in each cell [x_i, x_{i+1}) × [y_k, y_{k+1}) (last bins closed,
    as numpy.histogram2d) and the mass outside the window; together they sum to 1.
    One bincount over the flattened batch.
    """
    w = _weights(weights)
    x = _positions(positions, w, 2)
    ex, ey = _edges(edges_x, "edges_x"), _edges(edges_y, "edges_y")
    total = _row_totals(w)
    bx, by = ex.size - 1, ey.size - 1
    ix = _bin_index(x[..., 0], ex)
    iy = _bin_index(x[..., 1], ey)
    inside = (ix >= 0) & (ix < bx) & (iy >= 0) & (iy < by)
    cells = bx * by + 1
    cell = np.where(inside, ix * by + iy, bx * by).reshape(-1, w.shape[-1])
    keys = (cell + (np.arange(cell.shape[0]) * cells)[:, None]).ravel()
    hist = np.bincount(keys, weights=w.ravel(), minlength=cell.shape[0] * cells)
    hist = hist.reshape(*w.shape[:-1], cells) / total[..., None]
    return hist[..., :-1].reshape(*w.shape[:-1], bx, by), hist[..., -1]


def mixture_cell_probabilities(
    mix_weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    edges_x: np.ndarray,
    edges_y: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Exact probabilities of a 2-D Gaussian mixture on the cells of a rectangular grid.

    P(cell) = Σ_c π_c ∫_{x_i}^{x_{i+1}} φ(x; μ_x, σ_x²) [Φ((y_{k+1} − m(x))/s) −
    Φ((y_k − m(x))/s)] dx, with y | x ~ N(m(x), s²) the conditional normal. The x integral
    is Gauss–Legendre (12 nodes) on pieces no wider than half the smallest length scale of
    the integrand (σ_x, and σ_x √(1−ρ²)/|ρ| on which Φ changes; at most 64 pieces per bin):
    error below ~1e-12 absolute. Covariances must be positive definite.

    → (cells (Bx, By), outside): the mass outside the window is 1 − Σ cells (clipped ≥ 0).
    """
    pi, mu, cov = _mixture(mix_weights, means, covariances)
    if mu.shape[1] != 2:
        raise DataError(f"mixture_cell_probabilities needs a 2-D mixture, got d = {mu.shape[1]}")
    ex, ey = _edges(edges_x, "edges_x"), _edges(edges_y, "edges_y")
    var_x, var_y, cov_xy = cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1]
    cond_var = var_y - cov_xy**2 / np.where(var_x > 0, var_x, 1.0)
    if not ((var_x > 0) & (cond_var > 0)).all():
        raise DataError("covariances must be positive definite")
    sd_x = np.sqrt(var_x)
    slope = cov_xy / var_x
    cond_sd = np.sqrt(cond_var)
    with np.errstate(divide="ignore"):
        scale = np.minimum(sd_x, np.where(slope != 0, cond_sd / np.abs(slope), np.inf))
    width = np.diff(ex)
    pieces = np.clip(np.ceil(width / (0.5 * scale.min())), 1, CELL_MAX_PIECES).astype(np.int64)
    bin_of_piece = np.repeat(np.arange(width.size), pieces)
    k = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    h = width[bin_of_piece] / pieces[bin_of_piece]
    start = ex[bin_of_piece] + k * h
    nodes, gl_weights = np.polynomial.legendre.leggauss(CELL_NODES)
    xs = (start[:, None] + 0.5 * h[:, None] * (nodes + 1)).ravel()  # (pieces·nodes,)
    xw = (0.5 * h[:, None] * gl_weights).ravel()
    bin_starts = (np.cumsum(pieces) - pieces) * CELL_NODES  # first node of every x-bin
    cells = np.zeros((width.size, ey.size - 1))
    for c in range(pi.size):  # one vectorised evaluation over all nodes and edges per component
        zx = (xs - mu[c, 0]) / sd_x[c]
        density = np.exp(-0.5 * zx * zx) / (sd_x[c] * np.sqrt(2 * np.pi))
        centre = mu[c, 1] + slope[c] * (xs - mu[c, 0])
        column = np.diff(ndtr((ey[None, :] - centre[:, None]) / cond_sd[c]), axis=-1)
        per_node = (pi[c] * xw * density)[:, None] * column
        cells += np.add.reduceat(per_node, bin_starts, axis=0)
    outside = max(1.0 - cells.sum(), 0.0)
    return cells, outside


def binned_kl_2d(
    positions: np.ndarray,
    weights: np.ndarray,
    mix_weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    edges_x: np.ndarray,
    edges_y: np.ndarray,
    floor: float = 1e-12,
) -> np.ndarray:
    """KL(P_hist ‖ Q_cells) = Σ_cells p log(p/q) in nats, over the Bx·By cells of the window
    plus one cell for everything outside it.

    P_hist: the weighted particle histogram (:func:`weighted_histogram_2d`); Q_cells: the
    mixture's exact cell probabilities (:func:`mixture_cell_probabilities`), floored at
    ``floor`` and renormalised. positions (..., N, 2), weights (..., N) → (...).
    For N samples of Q itself the expected value is ≈ (occupied cells − 1)/(2N).
    """
    inside, outside = weighted_histogram_2d(positions, weights, edges_x, edges_y)
    q_cells, q_out = mixture_cell_probabilities(mix_weights, means, covariances, edges_x, edges_y)
    p = np.concatenate([inside.reshape(*outside.shape, -1), outside[..., None]], axis=-1)
    q = np.maximum(np.append(q_cells.ravel(), q_out), floor)
    q /= q.sum()
    return rel_entr(p, q).sum(axis=-1)
