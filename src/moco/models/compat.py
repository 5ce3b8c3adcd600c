"""Can these models collaborate below the text level? Checked from their files, before any weight loads.

- Logit-level methods need one vocabulary: compared from the tokenizer files (tokenizer.json's vocabulary and
  added tokens; the tokenizer alone is loaded only for folders without a tokenizer.json).
- Weight-level methods need one architecture: config.json (model type, architecture class) and the name and
  shape of every tensor, read from the safetensors headers (8 bytes + a JSON header per file).

Specs on the same base weights (pseudo-experts, LoRA adapters of one base) are identical by construction and
are not read twice.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco.config import ModelSpec
from moco.errors import ConfigError, ModelError
from moco.models import builtin


@dataclass
class _Entry:
    name: str
    spec: ModelSpec
    backend: Any = None  # an in-memory backend given instead of a spec (tests)


def base_identity(spec: ModelSpec) -> str:
    """Specs with the same identity share tokenizer and architecture (adapters change neither)."""
    return f"{spec.model}@{spec.revision or ''}"


def model_folder(spec: ModelSpec) -> Path:
    """The local folder holding a model's config and tokenizer files (no weights are loaded)."""
    m = spec.model
    if builtin.is_embedded(m):
        return builtin.ensure_converted(m)  # converts once per machine (cached); a no-op afterwards
    p = Path(m).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(m, revision=spec.revision, local_files_only=True))
    except Exception:
        raise ModelError(f"model '{m}' is not available locally; its files cannot be checked") from None


# ------------------------------------------------------------------ tokenizers
def vocabulary(folder: Path) -> dict[str, int]:
    """token -> id, from tokenizer.json (vocabulary + added tokens), else from the loaded tokenizer."""
    tj = folder / "tokenizer.json"
    if tj.exists():
        data = json.loads(tj.read_text())
        raw = (data.get("model") or {}).get("vocab") or {}
        if isinstance(raw, list):  # Unigram: [[piece, score], ...]
            vocab = {piece: i for i, (piece, _score) in enumerate(raw)}
        else:
            vocab = dict(raw)
        for t in data.get("added_tokens") or []:
            vocab[t["content"]] = int(t["id"])
        return vocab
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(folder).get_vocab())


def _vocab_of(e: _Entry) -> dict[str, int] | None:
    if e.backend is not None:
        tok = getattr(e.backend, "tokenizer", None)
        return dict(tok.get_vocab()) if tok is not None else None
    return vocabulary(model_folder(e.spec))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def check_same_tokenizer(entries: list[_Entry], method: str) -> str:
    """One line saying the models share a vocabulary, or a ConfigError naming the first two that differ."""
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        key = f"memory:{id(e.backend)}" if e.backend is not None else base_identity(e.spec)
        groups.setdefault(key, []).append(e)
    if len(groups) == 1:
        first = entries[0]
        vocab = _vocab_of(first) if first.backend is not None else None
        size = f"{len(vocab)} tokens, " if vocab else ""
        return (f"tokenizer: one shared vocabulary ({size}all {len(entries)} models on the same base "
                f"'{first.spec.model}')")
    seen: list[tuple[_Entry, dict[str, int]]] = []
    for members in groups.values():
        vocab = _vocab_of(members[0])
        if vocab is None:
            raise ConfigError(f"method {method} needs one shared vocabulary; model '{members[0].name}' exposes "
                              "no tokenizer to check")
        for other, ovocab in seen:
            if vocab != ovocab:
                diff = sorted(set(vocab.items()) ^ set(ovocab.items()))
                example = f" (e.g. {diff[0][0]!r} -> {diff[0][1]})" if diff else ""
                raise ConfigError(f"method {method} needs one shared vocabulary: '{other.name}' ({len(ovocab)} tokens) "
                                  f"and '{members[0].name}' ({len(vocab)} tokens) differ{example}")
        seen.append((members[0], vocab))
    return (f"tokenizer: one shared vocabulary ({len(seen[0][1])} tokens, identical files across "
            f"{len(groups)} distinct models: {_digest(sorted(seen[0][1].items()))})")


# ------------------------------------------------------------------ architectures
def safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape from the safetensors headers (no tensor data read); None if not safetensors."""
    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter_")]
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                shapes[k] = tuple(v["shape"])
    return shapes


def architecture(folder: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]] | None]:
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise ModelError(f"model folder {folder} has no config.json")
    cfg = json.loads(cfg_file.read_text())
    keys = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "intermediate_size",
            "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")
    return {k: cfg.get(k) for k in keys}, safetensors_shapes(folder)


def _arch_of(e: _Entry) -> tuple[dict[str, Any], dict[str, tuple[int, ...]] | None]:
    if e.backend is not None:
        model = getattr(e.backend, "model", None)
        if model is None:
            raise ConfigError(f"model '{e.name}' exposes no weights to compare")
        cfg = model.config.to_dict()
        return ({k: cfg.get(k) for k in ("model_type", "architectures")},
                {k: tuple(v.shape) for k, v in model.state_dict().items()})
    return architecture(model_folder(e.spec))


def check_same_architecture(entries: list[_Entry], method: str) -> str:
    """One line saying the models share architecture and parameter shapes, or a ConfigError naming the
    first mismatch (config field or tensor)."""
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        key = f"memory:{id(e.backend)}" if e.backend is not None else base_identity(e.spec)
        groups.setdefault(key, []).append(e)
    adapters = sum(1 for e in entries if e.spec.adapter)
    extra = f", {adapters} LoRA adapter(s)" if adapters else ""
    if len(groups) == 1:
        return f"architecture: all {len(entries)} models share the base '{entries[0].spec.model}'{extra}"
    ref_name, (ref_cfg, ref_shapes) = None, (None, None)
    checked = 0
    for members in groups.values():
        e = members[0]
        cfg, shapes = _arch_of(e)
        if ref_name is None:
            ref_name, ref_cfg, ref_shapes = e.name, cfg, shapes
            continue
        for k in ref_cfg:
            if k in cfg and cfg[k] != ref_cfg[k]:
                raise ConfigError(f"method {method} needs one architecture: '{ref_name}' has {k}={ref_cfg[k]!r}, "
                                  f"'{e.name}' has {k}={cfg[k]!r}")
        if shapes is not None and ref_shapes is not None:
            checked = len(ref_shapes)
            for name in sorted(set(ref_shapes) | set(shapes)):
                a, b = ref_shapes.get(name), shapes.get(name)
                if a != b:
                    raise ConfigError(f"method {method} needs equal parameter shapes: tensor '{name}' is "
                                      f"{a} in '{ref_name}' and {b} in '{e.name}'")
    shapes_note = f"{checked} tensors with equal shapes" if checked else "shapes not readable (no safetensors), config equal"
    arch = (ref_cfg.get("architectures") or [ref_cfg.get("model_type")])[0]
    return f"architecture: {len(groups)} distinct weight sets, all {arch}: {shapes_note}{extra}"


def entries_for(handles: list[Any], overrides: dict[str, Any]) -> list[_Entry]:
    """Pool handles as check entries (in-memory backends are inspected directly)."""
    return [_Entry(h.name, h.spec, overrides.get(h.spec.model)) for h in handles]
