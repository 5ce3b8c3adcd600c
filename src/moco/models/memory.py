"""How much memory a model's weights take once loaded, estimated without loading it.

The parameter count comes from the safetensors headers (8-byte length + a JSON table of tensor shapes: a few
KB read per file, never the weights), from the Hub's safetensors metadata for a Hub model not in the local
cache (when online), or else from config.json (the standard decoder layout). Bytes = parameters x the bytes
of the dtype the model will be loaded in (fp32 on CPU: a bf16 checkpoint doubles). A budget that cannot hold
a model is then an error before loading, not an out-of-memory crash midway.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from moco.models.placement import DTYPE_BYTES

GB = 2**30


def safetensors_params(folder: Path) -> int | None:
    """Parameters in the folder's *.safetensors files, read from their headers; None when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def config_params(config: dict[str, Any]) -> int | None:
    """Parameters of a standard decoder-only transformer from its config (Llama/Mistral/Qwen/GPT layouts)."""
    cfg = config.get("text_config") or config
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers")
    vocab = cfg.get("vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    inter = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    attn = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * inter * experts
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", True) else 2)
    total: int = embed + layers * (attn + mlp + 2 * hidden) + hidden  # the config's JSON numbers
    return total


def hub_params(repo_id: str, revision: str | None) -> int | None:
    """Parameter count from the Hub's safetensors metadata (headers only); None offline or on any failure."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        from huggingface_hub import get_safetensors_metadata

        meta = get_safetensors_metadata(repo_id, revision=revision)
        return int(sum(meta.parameter_count.values()))
    except Exception:
        return None


def local_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The folder of a Hub model in the local cache, without downloading."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:
        return None


def folder_params(folder: Path) -> int | None:
    n = safetensors_params(folder)
    if n is None and (folder / "config.json").exists():
        n = config_params(json.loads((folder / "config.json").read_text()))
    return n


def estimate_gb(folder: Path | None, dtype: str, *, repo_id: str | None = None, revision: str | None = None) -> float:
    """GB the weights take in `dtype` ('float32', 'bfloat16', 'float16'); 0.0 when nothing tells the size."""
    n = folder_params(folder) if folder is not None and folder.is_dir() else None
    if n is None and repo_id:
        n = hub_params(repo_id, revision)
    return (n or 0) * DTYPE_BYTES[dtype] / GB
