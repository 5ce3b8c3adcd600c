"""weight_greedy_soup: greedy model soup (Wortsman et al. 2022; MoCo method #22).

Rank the models by dev score; the soup starts as the best model; each next model (in rank order) joins the
uniform average only if the soup's dev score does not drop (>=, as in the paper's recipe). Each candidate soup
is merged in memory into one resident model and scored on dev (no checkpoint per candidate); the final soup is
saved to the run directory and answers the test set.
"""
from __future__ import annotations

from moco.context import Output, RunContext
from moco.merging import average
from moco.merging.search import DevSearch
from moco.methods.registry import MethodParams, method
from moco.methods.weight._common import check_weight_pool, dev_ranking, experts
from moco.models.base import Capabilities


class Params(MethodParams):
    """No hyperparameters: the dev set decides."""


@method("weight_greedy_soup", params=Params, level="weight", aliases=("greedy_soup", "soup"), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=check_weight_pool,
        paper="Wortsman et al. 2022 (model soups); MoCo method #22",
        summary="Greedy soup: add models by dev rank to a uniform weight average while the dev score does not drop")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    order, scores = await dev_ranking(ctx)
    ex = experts(ctx, prefer_lora=False)  # the ranking loaded every model already: use their weights
    search = DevSearch(ctx, ex.template, "soup")
    soup, current = [order[0]], scores[order[0]]
    steps = [{"model": ctx.models[order[0]].name, "soup_dev": current, "kept": True}]
    for i in order[1:]:
        s = await search.score(average([ex.sources[j] for j in soup + [i]]), added=ctx.models[i].name)
        kept = s >= current
        steps.append({"model": ctx.models[i].name, "soup_dev": s, "kept": kept})
        if kept:
            soup.append(i)
            current = s
    names = [ctx.models[j].name for j in soup]
    ctx.metrics["soup"] = {"ranking": [[ctx.models[i].name, scores[i]] for i in order], "steps": steps,
                                 "ingredients": names, "dev_score": current}
    return await search.finish(average([ex.sources[j] for j in soup]), trace={"ingredients": names})
