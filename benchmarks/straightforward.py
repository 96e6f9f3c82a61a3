"""The paper's restore experiment written the way a researcher first writes it.

Python loops over blocks for block masses, scaling and metrics; the V_δ normaliser s found
by bisection (80 iterations); ``scipy.ndimage.gaussian_filter`` for G_σ. It is the baseline
that ``bench_restore.py`` compares ``coarsekl.run`` with, on the same inputs (data image and
initial state taken from coarsekl's own set-up), and an independent check of its numbers.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

FLOOR = 1e-12


def block_slices(shape, blocks):
    rows, cols = blocks
    h, w = shape[0] // rows, shape[1] // cols
    return [
        (slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w))
        for r in range(rows)
        for c in range(cols)
    ]


def block_masses(p, slices):
    return np.array([p[s].sum() for s in slices])


def geometric_mean_step(p, q_data, beta, sigma):
    log_mix = (1 - beta) * np.log(np.maximum(p, FLOOR)) + beta * np.log(np.maximum(q_data, FLOOR))
    mixed = np.exp(log_mix - log_mix.max())
    mixed /= mixed.sum()
    smoothed = gaussian_filter(mixed, sigma, mode="reflect", truncate=4.0)
    return smoothed / smoothed.sum()


def normaliser_by_bisection(w, lower, upper, iterations=80):
    """s with Σ_j clip(s·w_j, a_j, b_j) = 1, by bisection on [0, max_j b_j / w_j]."""
    low, high = 0.0, max(b / m for m, b in zip(w, upper, strict=True) if m > 0)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        total = sum(min(max(middle * m, a), b) for m, a, b in zip(w, lower, upper, strict=True))
        if total < 1:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def project(p, slices, lower, upper):
    w = block_masses(p, slices)
    if all(a <= m <= b for m, a, b in zip(w, lower, upper, strict=True)):
        return p.copy()
    s = normaliser_by_bisection(w, lower, upper)
    q = p.copy()
    for j, block in enumerate(slices):
        target = min(max(s * w[j], lower[j]), upper[j])
        q[block] *= target / w[j]
    return q


def kl(p, q):
    return sum(a * np.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def metrics(p, x_data, slices, reference, lower, upper):
    total = x_data.sum()
    v = 0.0
    for block in slices:
        inside = p[block]
        mass = inside.sum()
        uniform = mass / inside.size
        positive = inside[inside > 0]
        v += np.sum(positive * np.log(positive / uniform))
    w = block_masses(p, slices)
    projected = []
    if lower is not None:
        s = normaliser_by_bisection(w, lower, upper)
        projected = [min(max(s * m, a), b) for m, a, b in zip(w, lower, upper, strict=True)]
        if all(a <= m <= b for m, a, b in zip(w, lower, upper, strict=True)):
            projected = list(w)
    return {
        "V": v,
        "V_delta": kl(w, projected) if lower is not None else np.nan,
        "E_block": sum(abs(m - r) for m, r in zip(w, reference, strict=True)),
        "mse": np.mean((p * total - x_data) ** 2),
    }


def restore(x_data, initial, blocks, steps, beta, sigma, delta):
    """Both schemes, every metric every step: {scheme: {metric: (steps + 1,) array}}, and
    under "proj_pre" V_δ and E_block of the proj scheme before each projection."""
    slices = block_slices(x_data.shape, blocks)
    q_data = x_data / x_data.sum()
    reference = block_masses(q_data, slices)
    lower = np.maximum(reference - delta, 0)
    upper = np.minimum(reference + delta, 1)
    results = {}
    before_projection = []
    for scheme in ("base", "proj"):
        p = initial / initial.sum()
        history = [metrics(p, x_data, slices, reference, lower, upper)]
        if scheme == "proj":
            before_projection.append(history[0])
        for _ in range(steps):
            p = geometric_mean_step(p, q_data, beta, sigma)
            if scheme == "proj":
                before_projection.append(metrics(p, x_data, slices, reference, lower, upper))
                p = project(p, slices, lower, upper)
            history.append(metrics(p, x_data, slices, reference, lower, upper))
        results[scheme] = {name: np.array([h[name] for h in history]) for name in history[0]}
    results["proj_pre"] = {
        name: np.array([h[name] for h in before_projection]) for name in ("V_delta", "E_block")
    }
    return results
