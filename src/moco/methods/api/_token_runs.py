"""Plumbing shared by the token-level API methods (nudging, Co-LLM, MentorCollab).

These methods drive the models' forward passes themselves (`moco.models.stepper`), outside `ctx.generate`.
`run_token_level` gives them what `ctx.generate` gives everyone else:

* each example's outcome (text, trace, per-model usage) is stored in the response cache under a key made of
  the method, its settings, the models' fingerprints, the exact prompts and the run seed — written batch by
  batch, so a killed run resumes and a re-run decodes nothing it already has;
* every outcome is recorded (calls.jsonl and the phase totals): one record per model per example, with the
  tokens that model read and wrote and its share of the batch's time; cache hits are recorded as such;
* rows are decoded in batches of `generation.batch_size`, longest prompts first.

What is not cached: the models' intermediate KV caches, and training (Co-LLM's head and MentorCollab's
classifier are cached as files by their own modules).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moco.context import Call, RunContext
from moco.errors import ConfigError
from moco.models.base import GenRequest, GenResult, SamplingParams
from moco.models.pool import ModelHandle
from moco.models.stepper import RowUsage


@dataclass
class Outcome:
    """One example decoded by a token-level method."""

    text: str
    finish: str = "stop"  # stop (end of answer) | length (token budget reached)
    trace: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, list[int]] = field(default_factory=dict)  # model name -> [tokens_in, tokens_out]


def usage_of(pairs: Sequence[tuple[str, RowUsage]]) -> dict[str, list[int]]:
    """Per-model [tokens_in, tokens_out] of one row (models sharing a name are summed)."""
    out: dict[str, list[int]] = {}
    for name, u in pairs:
        cur = out.setdefault(name, [0, 0])
        cur[0] += u.tokens_in
        cur[1] += u.tokens_out
    return out


def hf_backend(ctx: RunContext, handle: ModelHandle, method: str) -> Any:
    """The loaded Hugging Face backend of a model (token-level methods need its model and tokenizer)."""
    backend = ctx.local(handle).backend
    if not hasattr(backend, "model") or not hasattr(backend, "tokenizer"):
        raise ConfigError(f"method {method} decodes token by token and needs a local Hugging Face model; "
                          f"'{handle.name}' is a {handle.spec.kind} backend")
    return backend


def requests_for(ctx: RunContext, handle: ModelHandle, prompts: Sequence[str],
                 sampling: SamplingParams, replica: int = 0) -> list[GenRequest]:
    """The exact requests `ctx.generate` would send (role prompt, chat messages, per-request seed; `replica`:
    the i-th independent sample, e.g. a dev repeat)."""
    return [ctx.request(Call(handle, p, sampling, replica))[1] for p in prompts]


def run_token_level(ctx: RunContext, *, method: str, settings: dict[str, Any], models: Sequence[ModelHandle],
                    prompts: Sequence[str], sampling: SamplingParams,
                    decode: Callable[[list[int]], list[Outcome]], tag: str) -> list[Outcome]:
    """Decode `prompts` (by index, in batches) with `decode`, through the response cache and the call records."""
    fps = [ctx.local(h).fingerprint for h in models]
    keys = []
    for p in prompts:
        msgs = [list(map(list, ctx.request(Call(h, p, sampling))[1].messages)) for h in models]
        payload = {"method": method, "settings": settings, "models": fps, "messages": msgs,
                   "sampling": sampling.key()}
        if not sampling.greedy:
            payload["seed"] = ctx.seed
        keys.append(hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest())
    results: list[Outcome | None] = [None] * len(prompts)
    hits = ctx.cache.get_many(list(dict.fromkeys(keys)))
    for i, k in enumerate(keys):
        if k in hits:
            extra = hits[k].extra or {}
            stored = extra.get("extra") or {}
            results[i] = Outcome(hits[k].text, hits[k].finish_reason, stored.get("trace", {}), stored.get("usage", {}))
            _record(ctx, k, results[i], hits[k].latency_s, True, tag)
    todo = [i for i, r in enumerate(results) if r is None]
    bar = ctx.progress.task(f"{ctx.recorder.phase} {tag}".strip(), len(prompts)) if prompts else None
    ctx.progress.advance(bar, len(prompts) - len(todo))
    lengths = {i: len(prompts[i]) for i in todo}
    order = sorted(todo, key=lambda i: (-lengths[i], i))
    size = max(1, ctx.decoding.batch_size)
    fp = "token-level:" + method + ":" + "+".join(fps)
    for start in range(0, len(order), size):
        batch = order[start:start + size]
        t0 = time.time()
        outs = decode(batch)
        dt = time.time() - t0
        weights = [sum(a + b for a, b in o.usage.values()) or 1 for o in outs]
        total = sum(weights)
        rows = []
        for i, o, w in zip(batch, outs, weights):
            results[i] = o
            lat = dt * w / total
            rows.append((keys[i], fp, GenResult(o.text, sum(u[0] for u in o.usage.values()),
                                                sum(u[1] for u in o.usage.values()), o.finish, lat,
                                                extra={"trace": o.trace, "usage": o.usage})))
            _record(ctx, keys[i], o, lat, False, tag)
        ctx.cache.put_many(rows)
        ctx.progress.advance(bar, len(batch))
    ctx.progress.done(bar)
    return [r for r in results if r is not None]


def _record(ctx: RunContext, key: str, o: Outcome, latency: float, cached: bool, tag: str) -> None:
    total = sum(a + b for a, b in o.usage.values()) or 1
    for name, (tin, tout) in o.usage.items():
        ctx.account(model=name, key=key, tag=tag, tokens_in=tin, tokens_out=tout,
                            latency=latency * (tin + tout) / total, cached=cached, finish=o.finish, error=None,
                            batch=None)


def add_segment(segments: list[list[str]], writer: str, text: str) -> None:
    """Append text to the trace's [writer, text] segments, merging consecutive text of the same writer."""
    if not text:
        return
    if segments and segments[-1][0] == writer:
        segments[-1][1] += text
    else:
        segments.append([writer, text])
