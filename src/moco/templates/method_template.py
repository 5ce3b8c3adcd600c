"""text_my_method: one line on what the method does (and the paper it implements).

Copy this file to src/moco/methods/<level>/<name>.py (built-in) or into your own package (plug-in), rename,
and fill in the three marked parts. A method reads top to bottom like the paper's algorithm box:
batch every model call of a step into one `await ctx.generate`, record in the trace what each model saw.
`run` is a coroutine: await `ctx.generate`, `ctx.ask`, `ctx.answer_all`, `ctx.score` and `moco.selection`
(e.g. `await dev_best(ctx)`); while it waits, the other cells of a sweep run and their calls share batches.
"""
from __future__ import annotations

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method


class Params(MethodParams):
    # (1) every hyperparameter with its default (from the paper) and a one-line description
    rounds: int = Field(1, ge=0, le=10, description="how many times the models revise")


@method(
    "text_my_method",                 # (2) the registered name: <level>_<name>, as the reference implementation
    params=Params,
    level="text",                     # api | text | logit | weight | client_server | baseline
    aliases=("my_method",),
    summary="Every model answers, then revises once after reading a critique of its answer",
    min_models=2,                     # requirements are checked by `moco validate` before any model loads
    objective_task_only=False,
    paper="Author et al. 2025, Title",
)
async def run(ctx: RunContext, params: Params) -> list[Output]:
    # (3) the algorithm. Dev-set work (selection, training, search) goes in a `ctx.phase("dev")` block.
    with ctx.phase("test"):
        answers = await ctx.answer_all(ctx.task.test)  # answers[model_index][example_index], one batched call
        for r in range(params.rounds):
            calls = [Call(m, f"{ex.prompt}\n\nYour answer: {answers[m.index][j].text}\n\nImprove it.")
                     for m in ctx.models for j, ex in enumerate(ctx.task.test)]
            flat = await ctx.generate(calls, tag=f"revise {r + 1}")
            n = len(ctx.task.test)
            answers = [flat[i * n:(i + 1) * n] for i in range(len(ctx.models))]
    first = ctx.models[0]
    return [Output(answers[first.index][j].text, failed=answers[first.index][j].failed,
                   trace={m.name: answers[m.index][j].text for m in ctx.models})
            for j in range(len(ctx.task.test))]
