"""Do models share a vocabulary? Checked from their tokenizers alone, before any model is loaded.

Token-level methods that pass token ids from one model to another (Co-LLM; logit-level methods) need the same
token -> id mapping. Identical model names (pseudo-experts, LoRA variants of one base) share it trivially;
otherwise only the tokenizer files are read.
"""
from __future__ import annotations

from typing import Any

from moco.models.pool import ModelHandle, ModelPool


def _tokenizer(pool: ModelPool, handle: ModelHandle) -> Any:
    override = pool.overrides.get(handle.spec.model)
    if override is not None:
        return getattr(override, "tokenizer", None)
    if handle.spec.kind != "hf":
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pool.source_path(handle), revision=handle.spec.revision,
                                         trust_remote_code=handle.spec.trust_remote_code)


def vocabulary_mismatch(pool: ModelPool, handles: list[ModelHandle]) -> str | None:
    """None when all `handles` share one vocabulary, else a one-line reason naming the two models that differ."""
    if len({(h.spec.model, h.spec.revision) for h in handles}) <= 1 and not any(
            h.spec.model in pool.overrides for h in handles):
        return None
    first, ref = handles[0], None
    for h in handles:
        tok = _tokenizer(pool, h)
        if tok is None:
            return f"model '{h.name}' ({h.spec.kind} backend) has no tokenizer to compare"
        vocab = tok.get_vocab()
        if ref is None:
            ref = vocab
        elif vocab != ref:
            return (f"'{first.name}' ({len(ref)} tokens) and '{h.name}' ({len(vocab)} tokens) differ")
    return None
