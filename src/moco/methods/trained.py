"""What methods that train models share: the messages a model really sees, registering a trained adapter as a
model of the run, and the training figures reported in metrics.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from moco.context import RunContext
from moco.methods.registry import MethodParams
from moco.models.base import Message, with_role_prompt
from moco.models.pool import ModelHandle


class LoraParams(MethodParams):
    """The LoRA shape every trained method exposes; defaults of the reference's trainers (notes §2.1-2.2)."""

    lora_r: int = Field(64, ge=1, le=1024, description="LoRA rank (reference: 64)")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (reference: 16)")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout (reference: 0.1)")
    lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"],
                                    description="modules that get LoRA (reference: attention projections)")

    def lora_settings(self) -> dict[str, Any]:
        """Keyword arguments of the trainers' settings (SFTSettings, DPOSettings, GRPOSettings)."""
        return {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": list(self.lora_targets)}


def chat(handle: ModelHandle, prompt: str) -> list[Message]:
    """The messages `handle` receives for `prompt` at inference (its role prompt as the system message, as
    `ctx.generate` adds it), so a model is trained on exactly the input it will be asked with."""
    return list(with_role_prompt([("user", prompt)], handle.role_prompt))


def trained_model(ctx: RunContext, origin: ModelHandle, adapter: str | Path, name: str) -> ModelHandle:
    """Register `adapter` (trained from `origin`'s weights) as model `name`; it keeps origin's role prompt,
    dtype and device, and gets its own cache fingerprint (the adapter's contents)."""
    spec = origin.spec.model_copy(update={"adapter": str(adapter), "name": name})
    return ctx.add_model(name, spec)


def train_target(ctx: RunContext, handle: ModelHandle) -> tuple[str, str | None, str]:
    """(base folder, adapter the model already has or None, device) of a model to train."""
    return ctx.local(handle).path, handle.spec.adapter, ctx.local(handle).device


def record_training(ctx: RunContext, label: str, result: Any, **info: Any) -> dict[str, Any]:
    """Add one training run to metrics.json's `training` block (total steps and seconds, one row per run)."""
    block = ctx.metrics.setdefault("training", {"runs": 0, "steps": 0, "seconds": 0.0, "reused": 0,
                                                      "adapters": []})
    row = {"label": label, "adapter": str(result.adapter_dir), "steps": result.steps,
           "seconds": round(result.seconds, 2), "reused": result.reused, **info}
    block["runs"] += 1
    block["steps"] += result.steps
    block["seconds"] = round(block["seconds"] + (0.0 if result.reused else result.seconds), 2)
    block["reused"] += int(result.reused)
    block["adapters"].append(row)
    return row
