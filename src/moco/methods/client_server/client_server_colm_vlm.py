"""client_server_colm_vlm: CoLM for vision-language models (Huang, Huang & Zhang, AAAI 2026).

VLMs rarely reason step by step, so the paper drops the server model here: every client VLM answers the
same image question; all answers are concatenated into one structured prompt and fed back, with the
image, to each VLM, which gives its refined answer. `rounds` repeats the feedback on the refined answers.

One run gives the paper's Table 1 rows (metrics `colm_vlm.table`: each model alone and refined) and,
with `ablate_only_each`, Table 3: each target model collaborating with only one other model (the pair's
answers are concatenated and both refine). Each step of every group is one batched `ctx.generate` call.
"""
from __future__ import annotations

from itertools import combinations

from pydantic import Field

from moco.context import Call, Output, Response, RunContext
from moco.methods.client_server.colm_common import concat_prompt, mean_score, rounded
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities


class Params(MethodParams):
    rounds: int = Field(1, ge=1, le=10, description="times the concatenated answers are fed back (paper: 1)")
    target: str | int | None = Field(None, description="the model whose refined answer is the run's output "
                                     "(default: the first model); every model's score is reported")
    ablate_only_each: bool = Field(False, description="also run every pair of models alone (Table 3: "
                                   "'only X' rows for each target)")


@method("client_server_colm_vlm", params=Params, level="client_server", aliases=("colm_vlm",),
        min_models=2, needs=Capabilities(chat=True, images=True),
        paper="Huang, Huang & Zhang 2026, CoLM: Collaborative Large Models via a Client-Server Paradigm",
        summary="VLMs answer an image question; all answers concatenated and fed back; each VLM refines")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    test = ctx.task.test
    target = ctx.model(params.target) if params.target is not None else models[0]
    groups = [tuple(m.index for m in models)]
    if params.ablate_only_each:
        groups += [pair for pair in combinations(range(len(models)), 2) if pair != groups[0]]
    with ctx.phase("test"):
        first = await ctx.answer_all(test, tag="colm vlm answer")  # first[model][example]
        # history[group][model][example] = [answer after round 0, 1, ...]
        history = {g: {m: [[first[m][j]] for j in range(len(test))] for m in g} for g in groups}
        for r in range(1, params.rounds + 1):
            calls, where = [], []
            for g in groups:
                for j, ex in enumerate(test):
                    shown = [history[g][m][j][-1].text for m in g if not history[g][m][j][-1].failed]
                    prompt = concat_prompt(ex.prompt, shown)
                    for m in g:
                        calls.append(Call(models[m], prompt, images=ex.images))
                        where.append((g, m, j))
            for (g, m, j), resp in zip(where, await ctx.generate(calls, tag=f"colm vlm refine r{r}")):
                history[g][m][j].append(resp)
    await _report(ctx, models, test, groups, history, params.rounds, target.name)
    main = history[groups[0]]
    return [Output(main[target.index][j][-1].text, failed=main[target.index][j][-1].failed,
                   trace=_trace(models, main, j, target.name)) for j in range(len(test))]


async def _score(ctx: RunContext, test, answers: list[list[Response]], r: int) -> float | None:
    return await mean_score(ctx, [(ex, answers[j][r].text) for j, ex in enumerate(test)])


async def _report(ctx: RunContext, models, test, groups, history, rounds: int, target: str) -> None:
    main = history[groups[0]]
    per_round = {m.name: [rounded(await _score(ctx, test, main[m.index], r)) for r in range(rounds + 1)] for m in models}
    table = []
    for m in models:
        table.append({"system": m.name, "setting": "alone", "score": per_round[m.name][0], "n": len(test)})
        table.append({"system": f"{m.name}*", "setting": "refined", "score": per_round[m.name][-1], "n": len(test)})
    info = {"target": target, "rounds": rounds, "table": table, "per_round": per_round}
    if len(groups) > 1:
        only: dict[str, dict[str, float | None]] = {m.name: {} for m in models}
        for g in groups[1:]:
            for t in g:
                partner = next(o for o in g if o != t)
                only[models[t].name][models[partner].name] = rounded(await _score(ctx, test, history[g][t], rounds))
        info["only"] = only
    ctx.metrics["colm_vlm"] = info


def _trace(models, main, j: int, target: str) -> dict:
    """Every model's answer alone and after each round (each round saw all answers of the previous one)."""
    n_rounds = len(main[0][j])
    return {"target": target,
            "alone": {m.name: main[m.index][j][0].text for m in models},
            "rounds": [{m.name: main[m.index][j][r].text for m in models} for r in range(1, n_rounds)]}
