"""Where a model goes and in which precision: small pure decisions, unit-tested with torch.cuda mocked.

- `pick_device`: 'auto' means the first GPU when there is one, else the CPU.
- `pick_dtype`: fp32 on CPU (bf16 matmuls are ~3x slower there); on a GPU bf16 when that GPU supports it
  (compute capability >= 8, Ampere and newer), else fp16.
- `big_model_kwargs`: a model larger than one GPU is sharded by accelerate (`device_map="auto"`) over the
  configured `hardware.gpu_ids` only, with a `max_memory` per GPU that leaves headroom for activations and
  the KV cache; a model that cannot fit on those GPUs is refused before loading.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moco.errors import ModelError

if TYPE_CHECKING:
    import torch

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HEADROOM = 0.85  # fraction of a GPU's free memory given to weights under device_map="auto"


def pick_device(device: str | None) -> str:
    """'auto' or None -> cuda:0 when a GPU exists, else cpu."""
    import torch

    if device in (None, "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device} requested but no CUDA GPU is visible")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """fp32 on CPU; on a GPU bf16 when that GPU supports it, else fp16; an explicit dtype wins."""
    import torch

    if dtype != "auto":
        chosen: torch.dtype = getattr(torch, dtype)  # a config Literal: float32, bfloat16, float16
        return chosen
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        major, _minor = torch.cuda.get_device_capability(index)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.float32


def dtype_name(dtype: str, device: str) -> str:
    """'float32' / 'bfloat16' / 'float16': what `pick_dtype` chooses, as a string."""
    return str(pick_dtype(dtype, device)).replace("torch.", "")


def big_model_kwargs(gpu_ids: list[int], need_gb: float = 0.0, headroom: float = HEADROOM) -> dict[str, Any]:
    """`from_pretrained` arguments that shard one model over exactly `gpu_ids` (no CPU offload).

    accelerate only places layers on the devices named in `max_memory`, so other visible GPUs stay free for
    other models or other users."""
    import torch

    if not gpu_ids:
        raise ModelError("hardware.big_model_mode needs hardware.gpu_ids (the GPUs to shard each model over)")
    max_memory: dict[int, int] = {}
    for i in gpu_ids:
        free, _total = torch.cuda.mem_get_info(i)
        max_memory[i] = int(free * headroom)
    avail_gb = sum(max_memory.values()) / 2**30
    if need_gb > avail_gb:
        raise ModelError(f"a model needs {need_gb:.1f} GB, more than the {avail_gb:.1f} GB usable on GPUs {gpu_ids}")
    return {"device_map": "auto", "max_memory": max_memory}


def load_kwargs(spec: Any, hardware: Any) -> dict[str, Any]:
    """The keyword arguments of a Hugging Face text model's load (in this process or in a Ray actor)."""
    return dict(dtype=spec.dtype, revision=spec.revision, adapter=spec.adapter, batch_size=hardware.batch_size,
                trust_remote_code=spec.trust_remote_code, prefix_cache_mb=hardware.prefix_cache_mb)
