"""Per-request limits of `moco serve`: the prompt must fit every model's context window, and the answer
must come within the time limit (`--timeout-s`, enforced in the worker, see serve/batcher.py).

A prompt longer than a model's context is refused with 400 and the limit, as OpenAI does
(`context_length_exceeded`), instead of running for minutes (or failing) in a batch shared with other
clients. The window of a local transformers model is the smaller of its config's position limit and its
tokenizer's `model_max_length`; the prompt is counted as that model will see it (its chat template
applied) plus the requested `max_tokens`. Models whose window MoCo cannot know (endpoints, scripted
models) are held to the character limit that applies to datasets too.
"""
from __future__ import annotations

from typing import Any

from moco.models.base import GenRequest, SamplingParams
from moco.tasks.moco_json import MAX_PROMPT_CHARS

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def context_window(backend: Any) -> int | None:
    """The most tokens (prompt + answer) a local model takes, or None when it cannot be known."""
    model, tok = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    if model is None or tok is None or not hasattr(backend, "encode"):
        return None
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    limits = [v for k in _POSITION_KEYS if isinstance(v := getattr(cfg, k, None), int) and v > 0]
    mml = getattr(tok, "model_max_length", None)
    if isinstance(mml, int) and 0 < mml < 10**8:  # tokenizers without a limit say 1e30
        limits.append(mml)
    return min(limits) if limits else None


def chars_problem(prompt: str) -> str | None:
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"the prompt has {len(prompt):,} characters; this server takes at most {MAX_PROMPT_CHARS:,}"
    return None


def context_problem(pool: Any, prompt: str, max_new_tokens: int) -> str | None:
    """Why `prompt` plus `max_new_tokens` does not fit one of the pool's models, or None. Loads the pool's
    models (they answer the request anyway); call it from the thread that owns them."""
    for h in pool.handles:
        backend = pool.backend(h)
        limit = context_window(backend)
        if limit is None:
            continue
        req = GenRequest((("user", prompt),), SamplingParams(max_new_tokens=max_new_tokens))
        try:
            n = len(backend.encode(req))
        except Exception:  # noqa: BLE001 - a backend that cannot count text alone (vision): its own checks apply
            continue
        if n + max_new_tokens > limit:
            return (f"this model's maximum context length is {limit} tokens ('{h.name}'); the prompt has {n} "
                    f"tokens and max_tokens asks for {max_new_tokens} more")
    return None


def backstop_s(limit_s: float) -> float:
    """When the HTTP layer gives up on a request whose decoding did not stop at `limit_s` (a remote endpoint,
    a backend without a stop check): a little later, so a batch stopped at the limit still delivers its
    neighbours' answers."""
    return limit_s + min(5.0, max(0.25, 0.5 * limit_s))
