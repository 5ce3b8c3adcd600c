"""What every LoRA trainer shares: the reuse digest, the `.complete` marker, atomic saving, model loading.

A trained adapter folder holds the adapter, the tokenizer, `training_log.json` and a `.complete` marker with
the digest of (base weights, starting adapter, data, settings). A trainer called again with the same inputs
finds the marker and returns the saved log instead of training (a resumed run does not train twice);
anything different retrains. The folder is written under a temporary name and renamed when complete, so an
interrupted training never leaves a folder that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


def training_digest(base: str | Path, data: Any, settings: Any, init_adapter: str | Path | None = None,
                    **extra: Any) -> str:
    """Hash of everything that determines a trained adapter."""
    from moco.models.hf import folder_fingerprint

    blob = json.dumps({"base": folder_fingerprint(Path(base)),
                       "init": folder_fingerprint(Path(init_adapter)) if init_adapter else None,
                       "data": data, "settings": asdict(settings) if is_dataclass(settings) else settings, **extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def reusable_log(out: Path, digest: str) -> dict[str, Any] | None:
    """The training log of a finished adapter in `out` trained from the same inputs, else None."""
    marker = out / ".complete"
    if marker.exists() and json.loads(marker.read_text()).get("digest") == digest:
        return json.loads((out / "training_log.json").read_text())
    return None


def save_adapter(model: Any, tokenizer: Any, out: Path, digest: str, log: dict[str, Any]) -> None:
    """Write adapter + tokenizer + log + marker to `out` atomically (temporary folder, then rename)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "training_log.json").write_text(json.dumps(log, default=str))
    (tmp / ".complete").write_text(json.dumps({"digest": digest}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def load_tokenizer(base_dir: str | Path, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def training_placement(ctx: Any, handle: Any) -> tuple[str, str]:
    """(device, dtype name) to train a model of the pool on: where and in what precision the run places it
    (its `device`, else hardware.gpu_ids, else the CPU; fp32 on CPU, bf16/fp16 on a GPU unless its `dtype`
    says otherwise) — not always CPU fp32. LoRA weights stay fp32 (peft upcasts adapters)."""
    from moco.models.placement import dtype_name, pick_device

    device = pick_device(ctx.local(handle).device)
    return device, dtype_name(handle.spec.dtype, device)


def load_lora_model(base_dir: str | Path, init_adapter: str | Path | None, lora: dict[str, Any],
                    device: str = "cpu", dtype: str = "float32") -> Any:
    """The base model (fp32 unless `dtype` says otherwise) on `device` with a trainable LoRA adapter: a fresh
    one from `lora` settings, or the adapter in `init_adapter` to continue training (the model then is
    base + that adapter, and so is the result)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype)).to(device)
    model.config.use_cache = False
    if init_adapter:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))


def lora_kwargs(settings: Any) -> dict[str, Any]:
    return {"r": settings.lora_r, "lora_alpha": settings.lora_alpha, "lora_dropout": settings.lora_dropout,
            "target_modules": settings.target_modules}


def trl_cpu_args(device: str) -> dict[str, Any]:
    """trl defaults to bf16 and gradient checkpointing, ~3x slower on CPU: fp32 without checkpointing there."""
    on_cpu = not device.startswith("cuda")
    return {"bf16": False, "fp16": False, "gradient_checkpointing": False, "use_cpu": on_cpu,
            "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True,
            "dataloader_num_workers": 0}


def adapter_delta(adapter_dir: str | Path) -> float:
    """Norm of the weight change an adapter makes (sum over layers of |B @ A| * scale): 0 = no change."""
    import torch
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg = json.loads((d / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    tensors = load_file(d / "adapter_model.safetensors")
    total = 0.0
    for name, a in tensors.items():
        if ".lora_A." in name:
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            total += float(torch.linalg.norm(b.float() @ a.float()) * scale)
    return total
