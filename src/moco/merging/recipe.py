"""Merge recipes as small composable nodes (mergekit-style): sources (a model's weights, or base + a LoRA
adapter) and operations (linear, task arithmetic with TIES/DARE options, extrapolation, LoRA mixes).

A recipe is evaluated one parameter at a time (`node.tensor(name)`), so merging never holds more than a
few tensors beyond the models themselves. `digest()` hashes the whole recipe, including the fingerprints of
its source weights: it names a candidate model in the response cache, so answers of different candidates
never mix.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from moco.merging import tensors as T
from moco.merging.lora import LoraAdapter, MixMode, mix


class Node:
    """A merge recipe: the tensor of any parameter, and a JSON description that identifies it."""

    def tensor(self, key: str) -> Tensor:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]


def _weights(ws: list[float]) -> list[float]:
    return [float(w) for w in ws]


def _fmt(ws: list[float], names: list[str]) -> str:
    return ", ".join(f"{w:.3g}·{n}" for w, n in zip(ws, names))


@dataclass(eq=False)
class Source(Node):
    """A model's own weights (e.g. the state dict of a loaded model; tensors are not copied)."""

    name: str
    fingerprint: str
    state: Mapping[str, Tensor] = field(repr=False)

    def tensor(self, key: str) -> Tensor:
        t = self.state.get(key)
        if t is None:
            raise KeyError(f"model '{self.name}' has no parameter '{key}'")
        return t

    def spec(self) -> dict[str, Any]:
        return {"source": self.fingerprint}

    def summary(self) -> str:
        return self.name


@dataclass(eq=False)
class LoraSource(Node):
    """Base weights plus one LoRA adapter's delta s·B·A: the fine-tuned model, without materialising it."""

    name: str
    fingerprint: str
    base: Node
    adapter: LoraAdapter = field(repr=False)

    def tensor(self, key: str) -> Tensor:
        w = self.base.tensor(key)
        d = self.adapter.delta(key)
        return w if d is None else T.as_compute(w) + d

    def spec(self) -> dict[str, Any]:
        return {"lora": self.fingerprint, "base": self.base.spec()}

    def summary(self) -> str:
        return self.name


@dataclass(eq=False)
class Linear(Node):
    """Σ w_i·θ_i (a uniform average when the weights are 1/n; not normalised unless asked)."""

    children: list[Node]
    weights: list[float]
    normalize: bool = False

    def __post_init__(self) -> None:
        if len(self.children) != len(self.weights) or not self.children:
            raise ValueError(f"{len(self.children)} models but {len(self.weights)} weights")
        self.weights = _weights(self.weights)

    def tensor(self, key: str) -> Tensor:
        ts = [c.tensor(key) for c in self.children]
        if not ts[0].is_floating_point():
            return ts[0]
        return T.linear(ts, self.weights, self.normalize)

    def spec(self) -> dict[str, Any]:
        return {"op": "linear", "weights": self.weights, "normalize": self.normalize,
                "children": [c.spec() for c in self.children]}

    def summary(self) -> str:
        return f"linear({_fmt(self.weights, [c.summary() for c in self.children])})"


def average(children: list[Node]) -> Node:
    """The uniform average of models (a single model is itself)."""
    return children[0] if len(children) == 1 else Linear(children, [1.0 / len(children)] * len(children))


@dataclass(eq=False)
class TaskArithmetic(Node):
    """θ_base + λ·merge(τ_1..τ_n) with τ_i = θ_i − θ_base. One unit for the task-vector family:
    task arithmetic (no sparsify, no consensus), TIES (magnitude + sign), DARE (dare), DARE-TIES (dare + sign).
    DARE masks are seeded by (seed, parameter name, the model's recipe digest): the same model gets the same
    mask in every candidate, whatever its position."""

    children: list[Node]
    base: Node
    weights: list[float]
    sparsify: Literal["none", "magnitude", "dare"] = "none"
    density: float = 1.0
    consensus: Literal["none", "sign"] = "none"
    normalize: bool = True
    scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.children) != len(self.weights) or not self.children:
            raise ValueError(f"{len(self.children)} models but {len(self.weights)} weights")
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        self.weights = _weights(self.weights)
        self._child_ids = [c.digest() for c in self.children]

    def tensor(self, key: str) -> Tensor:
        base = self.base.tensor(key)
        if not base.is_floating_point():
            return base
        deltas = []
        for child, cid in zip(self.children, self._child_ids):
            d = T.task_vector(child.tensor(key), base)
            if self.sparsify == "dare":
                d = T.dare(d, self.density, T.seeded_generator(self.seed, key, cid))
            elif self.sparsify == "magnitude":
                d = T.magnitude_trim(d, self.density)
            deltas.append(d)
        if self.consensus == "sign":
            mixed = T.disjoint_merge(torch.stack(deltas), self.weights, self.normalize)
        else:
            mixed = T.linear(deltas, self.weights, self.normalize)
        return T.as_compute(base) + self.scale * mixed

    def spec(self) -> dict[str, Any]:
        return {"op": "task_arithmetic", "weights": self.weights, "sparsify": self.sparsify, "density": self.density,
                "consensus": self.consensus, "normalize": self.normalize, "scale": self.scale, "seed": self.seed,
                "base": self.base.spec(), "children": [c.spec() for c in self.children]}

    def summary(self) -> str:
        kind = {("dare", "sign"): "dare_ties", ("magnitude", "sign"): "ties", ("dare", "none"): "dare_linear",
                ("none", "none"): "task_arithmetic"}.get((self.sparsify, self.consensus), "task_arithmetic")
        return (f"{kind}(base={self.base.summary()}, density={self.density:g}; "
                f"{_fmt(self.weights, [c.summary() for c in self.children])})")


@dataclass(eq=False)
class Extrapolate(Node):
    """ExPO: θ_strong + α(θ_strong − θ_weak)."""

    strong: Node
    weak: Node
    alpha: float

    def tensor(self, key: str) -> Tensor:
        s = self.strong.tensor(key)
        if not s.is_floating_point():
            return s
        return T.extrapolate(s, self.weak.tensor(key), self.alpha)

    def spec(self) -> dict[str, Any]:
        return {"op": "extrapolate", "alpha": float(self.alpha), "strong": self.strong.spec(), "weak": self.weak.spec()}

    def summary(self) -> str:
        return f"extrapolate({self.strong.summary()} + {self.alpha:g}·({self.strong.summary()} − {self.weak.summary()}))"


@dataclass(eq=False)
class LoraMix(Node):
    """θ_base + mix(adapters, weights): see `moco.merging.lora` for the `delta` and `factors` modes."""

    base: Node
    adapters: list[LoraAdapter] = field(repr=False)
    names: list[str]
    fingerprints: list[str]
    weights: list[float]
    mode: MixMode = "delta"

    def __post_init__(self) -> None:
        if not (len(self.adapters) == len(self.names) == len(self.fingerprints) == len(self.weights)):
            raise ValueError("adapters, names, fingerprints and weights must have one entry per adapter")
        self.weights = _weights(self.weights)

    def tensor(self, key: str) -> Tensor:
        w = self.base.tensor(key)
        d = mix(self.adapters, self.weights, key, self.mode)
        return w if d is None else T.as_compute(w) + d

    def spec(self) -> dict[str, Any]:
        return {"op": "lora_mix", "mode": self.mode, "weights": self.weights, "adapters": self.fingerprints,
                "base": self.base.spec()}

    def summary(self) -> str:
        return f"lora_{self.mode}({self.base.summary()} + {_fmt(self.weights, self.names)})"
