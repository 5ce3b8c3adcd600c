"""single_model: each model answers alone. The baseline every collaboration must beat.

All models answer the test set in one batched call (these answers are shared, through the cache, with every
method that starts from independent answers). The run's final output is the model chosen on dev (or the
one given by `model`); metrics also list each model's test score and the best of them (the paper's
"best single model", an oracle choice).
"""
from __future__ import annotations

import asyncio

from pydantic import Field

from moco.context import Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.scoring.base import ScoreResult
from moco.selection import dev_best


class Params(MethodParams):
    model: int | str | None = Field(None, description="the model whose answers are the output; None: dev-best (or the only model)")


@method("single_model", params=Params, level="baseline", aliases=("single",),
        summary="Each model answers alone; output = the dev-best model (per-model test scores reported)")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    if params.model is not None:
        chosen = ctx.model(params.model)
    elif len(ctx.models) == 1:
        chosen = ctx.models[0]
    else:
        chosen = await dev_best(ctx)
    with ctx.phase("test"):
        answers = await ctx.answer_all(ctx.task.test)
    per_model_scores = {}
    # item_scores[m][j]: each model's score on each test item (None without a gold answer); the per-item
    # record lets analyses (collaborative emergence) tell which items no single model solves. Each model's
    # answers are one scoring batch (a judge: one call per model, not per item; a group rule such as
    # CultureBench's applies within one model's answers, as it does to the run's output)
    gold = [j for j, ex in enumerate(ctx.task.test) if ex.answer is not None]
    test = ctx.task.test
    batches = await asyncio.gather(*(ctx.score([test[j] for j in gold], [answers[m.index][j].text for j in gold])
                                     for m in ctx.models)) if gold else [[] for _ in ctx.models]
    item_scores: dict[str, list[ScoreResult | None]] = {}
    for m, got in zip(ctx.models, batches):  # a batch per model; gathered, so a judge's calls still merge
        item_scores[m.name] = [None] * len(test)
        for j, res in zip(gold, got):
            item_scores[m.name][j] = res
    for m in ctx.models:  # a failed call is no score, not 0 (the run reports it, see failures.py)
        scored = [res.score for j, res in enumerate(item_scores[m.name])
                  if res is not None and not answers[m.index][j].failed]
        if scored:
            per_model_scores[m.name] = sum(scored) / len(scored)
    if per_model_scores:
        ctx.metrics["per_model_test"] = per_model_scores
        ctx.metrics["best_single_test"] = max(per_model_scores.values())
    ctx.metrics["chosen_model"] = chosen.name
    outputs = []
    for j, ex in enumerate(ctx.task.test):
        per_model = {m.name: answers[m.index][j].text for m in ctx.models}
        trace = {"chosen": chosen.name, "answers": per_model}
        if ex.answer is not None:
            trace["scores"] = {m.name: item_scores[m.name][j].score for m in ctx.models
                               if not answers[m.index][j].failed}  # a failed call has no score
            trace["extracted"] = {m.name: item_scores[m.name][j].extracted for m in ctx.models}
        r = answers[chosen.index][j]
        outputs.append(Output(r.text, trace=trace, failed=r.failed))
    return outputs
