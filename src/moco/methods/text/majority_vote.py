"""text_majority_vote: every model answers; the plurality of the extracted answers wins.

Answers are compared by the scorer's canonical key, so "18", "$18" and "18.0" are one vote. Unparseable
answers do not vote. Ties are broken by `tie`: dev-based (the tied answer given by the model with the best dev
score), model-order (the tied answer of the earliest model in the pool), or random (seeded). Only for tasks
with a definite answer.
"""
from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from moco.context import Output, RunContext
from moco.methods.registry import MethodParams, method


class Params(MethodParams):
    tie: Literal["dev-based", "model-order", "random"] = Field(
        "dev-based", description="tie-break between equally voted answers")


def plurality(votes: list[str | None], tie: str, rank: list[int], rng) -> tuple[str | None, list[str]]:
    """The winning answer and the tied candidates. `rank[i]` orders models for tie-breaks (lower = better)."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None, []
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    if len(tied) == 1:
        return tied[0], tied
    if tie == "random":
        return rng.choice(tied), tied
    best_model = min((i for i, v in enumerate(votes) if v in tied), key=lambda i: rank[i])
    return votes[best_model], tied


@method("text_majority_vote", params=Params, level="text", aliases=("majority_vote", "vote"), min_models=2,
        objective_task_only=True, paper="Wang et al. 2023 (self-consistency); MoCo method #13",
        summary="Every model answers; plurality vote over extracted answers with a defined tie-break")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    n = len(ctx.models)
    if params.tie == "dev-based":
        from moco.selection import ranking

        order, _ = await ranking(ctx, "tie_break")  # recorded: every model's dev score with its interval
        rank = [order.index(i) for i in range(n)]
    else:
        rank = list(range(n))
    with ctx.phase("test"):
        answers = await ctx.answer_all(ctx.task.test)
    outputs = []
    for j, ex in enumerate(ctx.task.test):
        votes = [ctx.scorer.extract(ex, answers[m.index][j].text) for m in ctx.models]
        winner, tied = plurality(votes, params.tie, rank, ctx.rng)
        trace = {"votes": {m.name: v for m, v in zip(ctx.models, votes)},
                 "answers": {m.name: answers[m.index][j].text for m in ctx.models}, "tied": tied if len(tied) > 1 else []}
        text = next((answers[m.index][j].text for m, v in zip(ctx.models, votes) if v == winner and winner), "")
        failed = all(answers[m.index][j].failed for m in ctx.models)
        outputs.append(Output(text, answer=winner, use_answer=True, trace=trace, failed=failed))
    return outputs
