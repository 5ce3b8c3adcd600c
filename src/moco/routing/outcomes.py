"""Every model's outcome on a split, and answering routed queries.

A routed answer is the very call a model makes when it answers alone (`Call(model, example.prompt)` with the
run's sampling), so routers reuse through the cache what `single_model`, votes or other routers already
computed, and a router's cost is the router's own calls plus one answer per query.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from moco.context import Call, Output, Response, RunContext
from moco.errors import ConfigError
from moco.models.pool import ModelHandle
from moco.routing.choice import parse_model_choice
from moco.scoring.evaluate import is_generation_only
from moco.tasks.base import Example

CONFIDENCES = ("mean_token_prob", "mean_top_prob", "min_token_prob")


def confidence(resp: Response, kind: str = "mean_token_prob") -> float | None:
    """How sure a model was of its answer, from per-token log-probabilities (None when it has none).

    mean_token_prob: mean over generated tokens of p(chosen token); mean_top_prob: mean of the top-1
    probability at each step (what the reference implementation uses); min_token_prob: the least likely token.
    An empty answer has confidence 0."""
    if resp.failed:
        return None
    lps = resp.top_logprobs if kind == "mean_top_prob" else resp.token_logprobs
    if lps is None:
        return None
    if not lps:
        return 0.0
    probs = [math.exp(x) for x in lps]
    if kind == "min_token_prob":
        return min(probs)
    if kind in ("mean_token_prob", "mean_top_prob"):
        return sum(probs) / len(probs)
    raise ValueError(f"unknown confidence '{kind}' (one of {', '.join(CONFIDENCES)})")


@dataclass
class Outcomes:
    """answers[m][i] of model m on example i, its score, and (when asked for) its confidence."""

    examples: list[Example]
    models: list[ModelHandle]
    answers: list[list[Response]]
    scores: list[list[float]]

    def best_order(self) -> list[int]:
        """Model positions by mean score, best first (ties keep pool order): the dev-best is first."""
        means = [sum(s) / max(1, len(s)) for s in self.scores]
        return sorted(range(len(self.models)), key=lambda m: (-means[m], m))

    def mean_scores(self) -> dict[str, float]:
        return {h.name: sum(s) / max(1, len(s)) for h, s in zip(self.models, self.scores)}

    def confidences(self, kind: str = "mean_token_prob") -> list[list[float | None]]:
        return [[confidence(r, kind) for r in row] for row in self.answers]


def answer_call(model: ModelHandle, example: Example, sampling=None) -> Call:
    """The call a model makes when it answers an example alone (as `ctx.answer_all`): routers, cascades and
    single models share its cache entry (log-probabilities or not)."""
    return Call(model, example.prompt, sampling, images=example.images)


async def collect(ctx: RunContext, examples: Sequence[Example], models: Sequence[ModelHandle] | None = None,
            tag: str = "answer", logprobs: bool = False) -> Outcomes:
    """Every model answers every example in one batched call, and every answer is scored in one batch by the
    task's scorer (a judge or reward model too); a failed call scores 0. With `logprobs`, answers carry
    per-token log-probabilities (the same cache entries as plain answers)."""
    if is_generation_only(ctx.scorer):
        raise ConfigError(f"task {ctx.task.name} is generation-only (no scorer): routing by outcomes needs scores")
    ms = list(models) if models is not None else list(ctx.models)
    sampling = ctx.sampling(logprobs=True) if logprobs else None
    flat = await ctx.generate([answer_call(m, ex, sampling) for m in ms for ex in examples], tag=tag)
    results = await ctx.score([ex for _ in ms for ex in examples], [r.text for r in flat])
    n = len(examples)
    answers = [flat[i * n:(i + 1) * n] for i in range(len(ms))]
    scores = [[0.0 if r.failed else float(s.score) for r, s in zip(row, results[i * n:(i + 1) * n])]
              for i, row in enumerate(answers)]
    return Outcomes(list(examples), ms, answers, scores)


async def answer_routed(ctx: RunContext, examples: Sequence[Example], chosen: Sequence[ModelHandle],
                  tag: str = "routed answer", logprobs: bool = False) -> list[Response]:
    """Each example answered by its chosen model: one batched call, the same calls as plain answers."""
    sampling = ctx.sampling(logprobs=True) if logprobs else None
    return await ctx.generate([answer_call(m, ex, sampling) for m, ex in zip(chosen, examples)], tag=tag)


def route_shares(models: Sequence[ModelHandle], chosen: Sequence[ModelHandle]) -> dict[str, float]:
    """Share of queries sent to each model (every pool model listed, zeros included)."""
    counts = Counter(h.name for h in chosen)
    n = max(1, len(chosen))
    return {h.name: round(counts.get(h.name, 0) / n, 4) for h in models}


async def routed_outputs(ctx: RunContext, chosen: Sequence[ModelHandle], traces: list[dict],
                   tag: str = "routed answer") -> list[Output]:
    """Answer every test example with its chosen model and report the share of queries per model.

    `traces[i]` (why example i went where it went) is completed with the routed model and its answer."""
    with ctx.phase("test"):
        answers = await answer_routed(ctx, ctx.task.test, chosen, tag=tag)
    shares = route_shares(ctx.models, chosen)
    ctx.metrics["route_share"] = shares
    ctx.metrics["routed_counts"] = {h.name: sum(c.name == h.name for c in chosen) for h in ctx.models}
    outputs = []
    for h, r, tr in zip(chosen, answers, traces):
        outputs.append(Output(r.text, failed=r.failed, trace={**tr, "routed_to": h.name, "answer": r.text}))
    return outputs


async def read_router(ctx: RunContext, router: ModelHandle, raw: Sequence[Response],
                      fallback: Callable[[], Awaitable[ModelHandle]]) -> tuple[list[ModelHandle], list[dict]]:
    """The model each router output names (strict parsing), and why. An unreadable output is a counted parse
    failure sent to `fallback()` (evaluated only when some output is unreadable), never a silent default."""
    models = ctx.models
    parsed = [parse_model_choice("" if r.failed else r.text, len(models), [m.name for m in models]) for r in raw]
    failures = sum(not c.ok for c in parsed)
    backup = await fallback() if failures else None
    ctx.metrics.update(router=router.name, router_parse_failures=failures,
                             router_parse_failure_rate=round(failures / max(1, len(parsed)), 4),
                             fallback_model=backup.name if backup else None)
    chosen = [models[c.index] if c.ok else backup for c in parsed]
    traces = [{"router": router.name, "router_output": r.text, "router_error": r.error, "parsed": c.ok,
               "why": c.reason if c.ok else f"parse failure ({c.reason}); fallback: {backup.name}"}
              for r, c in zip(raw, parsed)]
    return chosen, traces
