"""Confidence intervals: percentile bootstrap over items, seeded so the interval is reproducible."""
from __future__ import annotations

import numpy as np


def bootstrap_ci(scores: list[float], n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    if not scores:
        return (float("nan"), float("nan"))
    x = np.asarray(scores, dtype=float)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def summarize(scores: list[float], unparsed: int, failed: int = 0, seed: int = 0) -> dict:
    """Mean, 95% bootstrap interval, and how many items were scored / unparsed / failed."""
    lo, hi = bootstrap_ci(scores, seed=seed)
    return {
        "score": float(np.mean(scores)) if scores else float("nan"),
        "ci95": [lo, hi],
        "n": len(scores),
        "unparsed": unparsed,
        "failed": failed,
    }
