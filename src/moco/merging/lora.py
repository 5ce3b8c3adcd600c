"""LoRA adapters as weight deltas, read straight from a peft adapter folder (no peft model is built).

A LoRA adapter changes a linear weight W (shape [out, in]) by ΔW = s·B·A with A [r, in], B [out, r] and
s = lora_alpha / r (lora_alpha / √r with rsLoRA). Two ways to mix adapters with weights w_i:

- `delta` (default for every method that searches in weight space): Σ w_i·s_i·B_i·A_i — the exact weighted
  sum of the adapters' effects, the same as mixing the full fine-tuned models W + ΔW_i.
- `factors` (LoraHub, Huang et al. 2024, eq. 2): (Σ w_i B_i)(Σ w_i A_i)·s — what the LoraHub paper composes,
  and the search space of the Model Swarms authors' code over LoRA experts. It is not a weighted sum of the
  adapters' effects (cross terms B_i A_j appear), so it is used where the authors do.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from moco.errors import ModelError

PREFIX = "base_model.model."
MixMode = Literal["delta", "factors"]


@dataclass
class LoraAdapter:
    """The A and B matrices of every adapted linear layer, keyed by the base model's parameter name."""

    path: Path
    r: int
    scaling: float
    fan_in_fan_out: bool
    base_model: str | None
    factors: dict[str, tuple[Tensor, Tensor]]  # "model.layers.0.self_attn.q_proj.weight" -> (A, B)

    @classmethod
    def load(cls, path: str | Path) -> "LoraAdapter":
        from safetensors.torch import load_file

        p = Path(path).expanduser()
        cfg_file = p / "adapter_config.json"
        if not cfg_file.exists():
            raise ModelError(f"adapter folder {p} has no adapter_config.json")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ModelError(f"adapter {p} is {cfg.get('peft_type')}, not LoRA")
        if cfg.get("use_dora"):
            raise ModelError(f"adapter {p} uses DoRA, whose weights are not a plain low-rank delta")
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise ModelError(f"adapter {p} has per-layer ranks (rank_pattern/alpha_pattern): not supported")
        weights_file = p / "adapter_model.safetensors"
        if not weights_file.exists():
            raise ModelError(f"adapter folder {p} has no adapter_model.safetensors")
        raw = load_file(str(weights_file))
        r = int(cfg["r"])
        alpha = float(cfg.get("lora_alpha", r))
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        factors: dict[str, tuple[Tensor, Tensor]] = {}
        for key, a in raw.items():
            if key.endswith(".lora_B.weight"):
                continue
            if not key.endswith(".lora_A.weight"):
                raise ModelError(f"adapter {p} stores {key} (not a LoRA linear A/B pair: embedding LoRA, "
                                 "bias or modules_to_save): not supported")
            module = key[: -len(".lora_A.weight")]
            b = raw.get(module + ".lora_B.weight")
            if b is None:
                raise ModelError(f"adapter {p}: {key} has no matching lora_B")
            name = module[len(PREFIX):] if module.startswith(PREFIX) else module
            factors[name + ".weight"] = (a, b)
        if not factors:
            raise ModelError(f"adapter {p} contains no LoRA linear layers")
        return cls(p, r, scaling, bool(cfg.get("fan_in_fan_out")), cfg.get("base_model_name_or_path"), factors)

    def delta(self, key: str) -> Tensor | None:
        """ΔW for the base parameter `key` (float32), or None if this adapter does not touch it."""
        ab = self.factors.get(key)
        if ab is None:
            return None
        a, b = ab
        d = (b.float() @ a.float()) * self.scaling
        return d.T if self.fan_in_fan_out else d


def mix(adapters: list[LoraAdapter], weights: list[float], key: str, mode: MixMode = "delta") -> Tensor | None:
    """The weighted combination of the adapters' deltas for `key`, or None if no adapter touches it."""
    if len(adapters) != len(weights):
        raise ValueError(f"{len(adapters)} adapters but {len(weights)} weights")
    touched = [(ad, w) for ad, w in zip(adapters, weights) if key in ad.factors]
    if not touched:
        return None
    if mode == "delta":
        out = None
        for ad, w in touched:
            d = ad.delta(key) * float(w)
            out = d if out is None else out.add_(d)
        return out
    if len(touched) != len(adapters):
        raise ValueError(f"factor-wise LoRA mixing needs every adapter to adapt {key}")
    scalings = {ad.scaling for ad in adapters}
    ranks = {ad.r for ad in adapters}
    if len(scalings) != 1 or len(ranks) != 1:
        raise ValueError("factor-wise LoRA mixing needs adapters of one rank and one scaling")
    a = sum(float(w) * ad.factors[key][0].float() for ad, w in touched)
    b = sum(float(w) * ad.factors[key][1].float() for ad, w in touched)
    d = (b @ a) * adapters[0].scaling
    return d.T if adapters[0].fan_in_fan_out else d
