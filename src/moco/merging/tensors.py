"""Per-tensor merge arithmetic: weighted sums, task vectors, TIES trimming and sign election, DARE drop,
extrapolation. Every function computes in float32 (float64 stays float64) and returns that compute dtype;
the caller casts once into the destination parameter, so bf16/fp16 inputs are not rounded at every step.

Nothing here normalises weights unless asked: a velocity (weights summing to 0) or an extrapolation
(weights summing to 1 with a negative entry) is computed as written. (The reference implementation merged
swarm velocities with mergekit's `linear`, which divides by the sum of the weights by default.)
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def as_compute(t: Tensor) -> Tensor:
    """The tensor in its compute dtype (a new tensor if a conversion is needed; never modified in place)."""
    return t.to(compute_dtype(t))


def linear(tensors: Sequence[Tensor], weights: Sequence[float], normalize: bool = False) -> Tensor:
    """Σ w_i·t_i (divided by Σ w_i when `normalize`; refusing a zero sum rather than dividing by it)."""
    if len(tensors) != len(weights) or not tensors:
        raise ValueError(f"{len(tensors)} tensors but {len(weights)} weights")
    total = float(sum(weights))
    if normalize:
        if abs(total) < 1e-12:
            raise ValueError("cannot normalise weights that sum to zero")
        weights = [w / total for w in weights]
    out = as_compute(tensors[0]) * float(weights[0])
    for t, w in zip(tensors[1:], weights[1:]):
        if w != 0.0:
            out.add_(as_compute(t), alpha=float(w))
    return out


def task_vector(tensor: Tensor, base: Tensor) -> Tensor:
    """τ = θ_finetuned − θ_base."""
    if tensor.shape != base.shape:
        raise ValueError(f"shape {tuple(tensor.shape)} differs from the base's {tuple(base.shape)}")
    return as_compute(tensor) - as_compute(base)


def seeded_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator whose seed depends on `seed` and `parts` (e.g. tensor name, model index), stably across
    processes, so a tensor's DARE mask does not depend on the order tensors are merged in."""
    h = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def dare(delta: Tensor, density: float, generator: torch.Generator, rescale: bool = True) -> Tensor:
    """DARE (Yu et al. 2024): keep each entry with probability `density`, drop the rest, and rescale the kept
    entries by 1/density so the expected task vector is unchanged."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    delta = as_compute(delta)
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    out = delta * keep
    return out / density if rescale else out


def magnitude_trim(delta: Tensor, density: float) -> Tensor:
    """TIES step 1 (Yadav et al. 2023): keep the `density` fraction of entries with the largest magnitude."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    delta = as_compute(delta)
    k = int(round(density * delta.numel()))
    if k >= delta.numel():
        return delta
    if k == 0:
        return torch.zeros_like(delta)
    flat = delta.abs().flatten()
    threshold = flat.kthvalue(flat.numel() - k + 1).values
    return delta * (delta.abs() >= threshold)


def elect_sign(deltas: Tensor) -> Tensor:
    """TIES step 2: the sign of the total (weighted) mass per entry; +1 where the mass is exactly 0.
    `deltas` is stacked [n_models, ...] and already weighted."""
    return torch.where(deltas.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)


def disjoint_merge(deltas: Tensor, weights: Sequence[float], normalize: bool = True) -> Tensor:
    """TIES step 3: sum the weighted entries that agree with the elected sign; with `normalize`, divide by the
    total weight of the agreeing models per entry (the paper's disjoint mean)."""
    w = torch.tensor([float(x) for x in weights], dtype=deltas.dtype).reshape(-1, *([1] * (deltas.dim() - 1)))
    weighted = deltas * w
    sign = elect_sign(weighted)
    agree = (torch.sign(weighted) == sign) & (weighted != 0)
    mixed = (weighted * agree).sum(0)
    if not normalize:
        return mixed
    divisor = (w * agree).sum(0)
    return mixed / torch.where(divisor.abs() < 1e-12, torch.ones_like(divisor), divisor)


def extrapolate(strong: Tensor, weak: Tensor, alpha: float) -> Tensor:
    """ExPO (Zheng et al. 2024): θ = θ_strong + α(θ_strong − θ_weak)."""
    if strong.shape != weak.shape:
        raise ValueError(f"shapes differ: {tuple(strong.shape)} vs {tuple(weak.shape)}")
    s = as_compute(strong)
    return s + float(alpha) * (s - as_compute(weak))
