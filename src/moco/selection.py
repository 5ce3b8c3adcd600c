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

from collections.abc import Callable, Sequence
from typing import Any

from moco.models.base import SamplingParams


def dev_sampling(ctx: Any, **overrides: Any) -> SamplingParams:
    """The sampling of dev answers made for a selection: greedy under `dev_decoding: greedy`."""
    if ctx.decoding.dev_decoding == "greedy":
        overrides["temperature"] = 0.0
    return ctx.sampling(**overrides)


def dev_repeats(ctx: Any) -> int:
    """Independent samples per dev item (1 when dev decoding is greedy: repeats would be identical)."""
    return 1 if ctx.decoding.dev_decoding == "greedy" else ctx.decoding.dev_repeats


def averaged(ctx: Any, score_pass: Callable[[int], list[float]]) -> list[float]:
    """Per-item dev scores averaged over the repeats; `score_pass(r)` gives the item scores of repeat r."""
    passes = [score_pass(r) for r in range(dev_repeats(ctx))]
    return [sum(col) / len(col) for col in zip(*passes)]


def candidate_scores(ctx: Any, handles: Sequence[Any], examples: Sequence[Any], tag: str) -> list[list[float]]:
    """Per-item dev scores of each candidate model on `examples` (out[candidate][item]), answered the shared way:
    greedy, or the mean of `dev_repeats` samples per item; a failed answer scores 0. One batched call."""
    from moco.calls import Call

    sampling, reps, n, k = dev_sampling(ctx), dev_repeats(ctx), len(examples), len(handles)
    with ctx.phase("dev"):
        flat = ctx.generate([Call(h, ex.prompt, sampling, replica=r, images=ex.images)
                             for r in range(reps) for h in handles for ex in examples], tag=tag)
    scored = ctx.score_many(list(examples) * (reps * k), [x.text for x in flat])
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

    rows = []
    for label, s in zip(labels, item_scores):
        iv = mean_ci(list(s), seed=ctx.seed)  # no interval from one item or all-equal scores: None and why
        rows.append({"candidate": label, "dev_score": round(sum(s) / max(1, len(s)), 6),
                     "ci95": [round(iv.lo, 6), round(iv.hi, 6)] if iv.ok else None, "items": len(s),
                     **({} if iv.ok else {"ci_note": iv.note})})
    won = next(r for r in rows if r["candidate"] == chosen)
    others = [r["dev_score"] for r in rows if r is not won]
    rec = {"decoding": ctx.decoding.dev_decoding, "repeats": dev_repeats(ctx), "chosen": chosen,
           "chosen_dev_score": won["dev_score"], "margin": round(won["dev_score"] - max(others), 6) if others else None,
           "candidates": rows, **extra}
    ctx.extra_metrics.setdefault("dev_selection", {})[what] = rec
    return rec


def ranking(ctx: Any, what: str = "dev_ranking") -> tuple[list[int], list[float]]:
    """Pool positions best first by mean dev score (ties keep pool order) and the means; the ranking is
    recorded like a choice (the top model and every model's score with its interval)."""
    items = ctx.dev_item_scores()
    means = [sum(s) / max(1, len(s)) for s in items]
    order = sorted(range(len(means)), key=lambda i: (-means[i], i))
    names = [m.name for m in ctx.models]
    record(ctx, what, names, items, names[order[0]], order=[names[i] for i in order])
    return order, means
