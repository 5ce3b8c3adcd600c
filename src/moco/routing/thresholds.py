"""Confidence thresholds of a cascade: calibration on dev, and where each item stops (pure functions, so the
cascade method and the offline router evaluation apply the very same rule)."""
from __future__ import annotations

from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's and torch's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values to take a quantile of")
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def calibrate(dev_confidences: Sequence[Sequence[float | None]], percentage: float) -> list[float]:
    """One threshold per cascade level but the last: the `percentage` quantile of THAT level's model's
    confidences on dev (the reference computes every level's threshold from model 0's). About `percentage`
    of dev items would defer at each level. Failed or empty dev answers (confidence None) are left out."""
    out = []
    for level, confs in enumerate(dev_confidences):
        known = [c for c in confs if c is not None]
        if not known:
            raise ValueError(f"cascade level {level}: no dev answer with a confidence to calibrate on")
        out.append(quantile(known, percentage))
    return out


def stop_level(confidences: Sequence[float | None], thresholds: Sequence[float]) -> int:
    """The level that answers an item: the first whose confidence reaches its threshold, else the last.
    `confidences[l]` is level l's confidence (None: failed, defers); len(thresholds) = levels - 1."""
    for level, thr in enumerate(thresholds):
        c = confidences[level]
        if c is not None and c >= thr:
            return level
    return len(thresholds)
