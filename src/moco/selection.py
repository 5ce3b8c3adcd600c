"""Dev-based selection, shared by every method that picks something on the dev set (dev-best models, rankings,
soups, swarms, ExPO's α, the nudging grid, LoraHub, Co-LLM's threshold).

One sampled pass over a small dev set makes the winner's score optimistic and seed-dependent. Two shared
settings (`decoding.dev_decoding`, `decoding.dev_repeats`) say how dev answers for a selection are made:

- `sampled` (default, the papers' protocol): the run's sampling, averaged over `dev_repeats` independent
  samples per item (1 = one pass, as the papers);
- `greedy`: temperature 0, one pass (repeats would be identical).

Every selection records in metrics (`dev_selection.<what>`) each candidate's dev score with its 95% bootstrap
interval over items, which candidate won and its margin over the runner-up, so a reader sees how close the
choice was.
"""
from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moco.calls import Call, Response
from moco.models.base import SamplingParams


@dataclass
class _DevAnswers:
    """Each model's dev answers and scores, made once per run context (every selection reuses them)."""

    answers: dict[int, list[Response]] = field(default_factory=dict)
    scores: dict[int, list[float]] = field(default_factory=dict)  # first pass, per item
    item_scores: dict[int, list[float]] = field(default_factory=dict)  # mean over dev_repeats, per item


_DEV: weakref.WeakKeyDictionary[Any, _DevAnswers] = weakref.WeakKeyDictionary()


def share_dev_answers(child: Any, parent: Any) -> None:
    """Let `child` (a context derived from `parent` with the same models, dev split and dev decoding, e.g. one
    per batch a server answers) reuse `parent`'s dev answers, and add to them: dev work is done once."""
    _DEV[child] = _DEV.setdefault(parent, _DevAnswers())


def dev_sampling(ctx: Any, **overrides: Any) -> SamplingParams:
    """The sampling of dev answers made for a selection: greedy under `dev_decoding: greedy`."""
    if ctx.decoding.dev_decoding == "greedy":
        overrides["temperature"] = 0.0
    sampling: SamplingParams = ctx.sampling(**overrides)
    return sampling


def dev_repeats(ctx: Any) -> int:
    """Independent samples per dev item (1 when dev decoding is greedy: repeats would be identical)."""
    return 1 if ctx.decoding.dev_decoding == "greedy" else ctx.decoding.dev_repeats


async def averaged(ctx: Any, score_pass: Callable[[int], Awaitable[list[float]]]) -> list[float]:
    """Per-item dev scores averaged over the repeats; `await score_pass(r)` gives the item scores of repeat r
    (the repeats are gathered, so their calls are decoded in shared batches)."""
    passes = await asyncio.gather(*(score_pass(r) for r in range(dev_repeats(ctx))))
    return [sum(col) / len(col) for col in zip(*passes)]


async def candidate_scores(ctx: Any, handles: Sequence[Any], examples: Sequence[Any], tag: str) -> list[list[float]]:
    """Per-item dev scores of each candidate model on `examples` (out[candidate][item]), answered the shared way:
    greedy, or the mean of `dev_repeats` samples per item; a failed answer scores 0. One batched call."""
    reps, n, k = dev_repeats(ctx), len(examples), len(handles)
    with ctx.phase("dev"):
        sampling = dev_sampling(ctx)  # in the dev phase: a served context samples dev work as configured
        flat = await ctx.generate([Call(h, ex.prompt, sampling, replica=r, images=ex.images)
                                   for r in range(reps) for h in handles for ex in examples], tag=tag)
    scored = await ctx.score(list(examples) * (reps * k), [x.text for x in flat])
    item = [0.0 if x.failed else s.score for x, s in zip(flat, scored)]
    return [[sum(item[(r * k + c) * n + i] for r in range(reps)) / reps for i in range(n)] for c in range(k)]


def choose(ctx: Any, what: str, labels: Sequence[str], item_scores: Sequence[Sequence[float]],
           key: Callable[[int], Any] | None = None, **extra: Any) -> int:
    """Index of the candidate with the best mean dev score (ties: the first, unless `key(i)` orders them:
    the largest key wins) and the record of the choice in metrics `dev_selection.<what>`."""
    means = [sum(s) / len(s) if len(s) else float("-inf") for s in item_scores]
    order = key or (lambda i: -i)
    best = max(range(len(labels)), key=lambda i: (means[i], order(i)))
    record(ctx, what, labels, item_scores, labels[best], **extra)
    return best


def record(ctx: Any, what: str, labels: Sequence[str], item_scores: Sequence[Sequence[float]], chosen: str,
           **extra: Any) -> dict[str, Any]:
    """Write (and return) the selection record: every candidate's dev score and 95% interval, the winner."""
    from moco.scoring.stats import mean_ci

    rows: list[dict[str, Any]] = []
    for label, s in zip(labels, item_scores):
        iv = mean_ci(list(s), seed=ctx.seed)  # no interval from one item or all-equal scores: None and why
        rows.append({"candidate": label, "dev_score": round(sum(s) / max(1, len(s)), 6),
                     "ci95": [round(iv.lo, 6), round(iv.hi, 6)] if iv.lo is not None and iv.hi is not None else None, "items": len(s),
                     **({} if iv.ok else {"ci_note": iv.note})})
    won = next(r for r in rows if r["candidate"] == chosen)
    others = [r["dev_score"] for r in rows if r is not won]
    rec = {"decoding": ctx.decoding.dev_decoding, "repeats": dev_repeats(ctx), "chosen": chosen,
           "chosen_dev_score": won["dev_score"], "margin": round(won["dev_score"] - max(others), 6) if others else None,
           "candidates": rows, **extra}
    ctx.metrics.setdefault("dev_selection", {})[what] = rec
    return rec


async def ranking(ctx: Any, what: str = "dev_ranking") -> tuple[list[int], list[float]]:
    """Pool positions best first by mean dev score (ties keep pool order) and the means; the ranking is
    recorded like a choice (the top model and every model's score with its interval)."""
    items = await dev_item_scores(ctx)
    means = [sum(s) / max(1, len(s)) for s in items]
    order = sorted(range(len(means)), key=lambda i: (-means[i], i))
    names = [m.name for m in ctx.models]
    record(ctx, what, names, items, names[order[0]], order=[names[i] for i in order])
    return order, means


async def dev_item_scores(ctx: Any) -> list[list[float]]:
    """Per-item dev scores of every model, out[model_index][example_index] (means over `dev_repeats`), made
    once per run: every model answers the whole dev set in one batched call, the shared dev decoding."""
    store = _DEV.setdefault(ctx, _DevAnswers())
    missing = [m for m in ctx.models if m.index not in store.item_scores]
    if missing:
        dev = ctx.task.dev
        if not dev:
            raise ValueError(f"task {ctx.task.name} has no dev split; dev-based selection is impossible")
        reps, n = dev_repeats(ctx), len(dev)
        with ctx.phase("dev"):
            sampling = dev_sampling(ctx)
            flat = await ctx.generate([Call(m, ex.prompt, sampling, replica=r, images=ex.images)
                                       for r in range(reps) for m in missing for ex in dev], tag="answer")
        for k, m in enumerate(missing):
            passes = [flat[(r * len(missing) + k) * n:(r * len(missing) + k + 1) * n] for r in range(reps)]
            scored = [await ctx.score(dev, [x.text for x in outs]) for outs in passes]
            store.answers[m.index] = passes[0]
            store.scores[m.index] = [s.score for s in scored[0]]
            store.item_scores[m.index] = [sum(p[i].score for p in scored) / reps for i in range(n)]
    return [store.item_scores[m.index] for m in ctx.models]


async def dev_scores(ctx: Any) -> list[float]:
    """Mean dev score of every model (ties keep pool order), by the shared dev decoding."""
    return [sum(s) / max(1, len(s)) for s in await dev_item_scores(ctx)]


async def dev_answers(ctx: Any) -> tuple[list[list[Response]], list[list[float]]]:
    """The dev answers `dev_scores` scored, and their per-item scores: out[model_index][example_index].
    Methods that train on dev candidates reuse them instead of asking (and paying) again."""
    await dev_item_scores(ctx)
    store = _DEV[ctx]
    return [store.answers[m.index] for m in ctx.models], [store.scores[m.index] for m in ctx.models]


async def dev_best(ctx: Any) -> Any:
    """The model with the best mean dev score (first in pool order on ties); the choice and every model's
    dev score with its interval are recorded in metrics (`dev_selection.dev_best`)."""
    return ctx.models[choose(ctx, "dev_best", [m.name for m in ctx.models], await dev_item_scores(ctx))]
