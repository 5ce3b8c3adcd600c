"""weight_expo: model extrapolation, ExPO (Zheng et al. 2024; MoCo method #26).

Rank the models on dev, average the top-k (x_top) and the bottom-k (x_bottom), and extrapolate past the top:
    x = x_top + α(x_top − x_bottom).
α is fixed, or searched on dev over `alpha_candidates` (each candidate merged in memory and scored). The
paper's own setting — a weak model (SFT) and a strong one trained further from it (DPO/RLHF) — is `strong`
and `weak` given by name (then no ranking is needed).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.merging import Extrapolate, average
from moco.merging.search import DevSearch
from moco.methods.registry import MethodParams, method
from moco.methods.weight._common import check_weight_pool, dev_ranking, experts
from moco.models.base import Capabilities


class Params(MethodParams):
    k: int = Field(1, ge=1, description="average the top-k and the bottom-k models by dev score (2k <= n)")
    alpha: float = Field(0.3, description="extrapolation strength (alpha_mode: fixed)")
    alpha_mode: Literal["fixed", "search"] = Field("fixed", description="fixed α, or the best of alpha_candidates on dev")
    alpha_candidates: list[float] = Field([0.1, 0.2, 0.3, 0.4, 0.5], min_length=1, description="α values tried on dev")
    strong: int | str | None = Field(None, description="explicit direction: the stronger model (with `weak`)")
    weak: int | str | None = Field(None, description="explicit direction: the weaker model (with `strong`)")

    @field_validator("alpha_mode", mode="before")
    @classmethod
    def _reference_mode(cls, v: object) -> object:
        return "search" if v == "optimized" else v  # the reference calls the search "optimized"


def _validate(params: Params, pool) -> list[str]:
    check_weight_pool(params, pool)
    if (params.strong is None) != (params.weak is None):
        raise ConfigError("params (weight_expo): give both `strong` and `weak`, or neither (dev ranking)")
    if params.strong is not None:
        s, w = pool.handle(params.strong).name, pool.handle(params.weak).name
        if s == w:
            raise ConfigError("params (weight_expo): `strong` and `weak` must be different models")
        return [f"direction: {w} -> {s} (given)"]
    if 2 * params.k > len(pool.handles):
        raise ConfigError(f"params (weight_expo): k={params.k} needs at least {2 * params.k} models "
                          f"(top-k and bottom-k must not overlap); the config has {len(pool.handles)}")
    return []


@method("weight_expo", params=Params, level="weight", aliases=("expo",), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=_validate,
        paper="Zheng et al. 2024 (ExPO); MoCo method #26",
        summary="Extrapolate x_top + α(x_top − x_bottom) from the dev-ranked top-k and bottom-k models; α fixed or searched")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    if params.strong is not None:
        top, bottom = [ctx.model(params.strong).index], [ctx.model(params.weak).index]
        ranking = None
    else:
        order, scores = await dev_ranking(ctx)
        top, bottom = order[: params.k], order[len(order) - params.k:]
        ranking = [[ctx.models[i].name, scores[i]] for i in order]
    ex = experts(ctx, prefer_lora=ranking is None)
    strong = average([ex.sources[i] for i in top])
    weak = average([ex.sources[i] for i in bottom])
    search = DevSearch(ctx, ex.template, "expo")
    if params.alpha_mode == "fixed":
        alpha = params.alpha
    else:
        tried = [(await search.score(Extrapolate(strong, weak, a), alpha=a), a) for a in params.alpha_candidates]
        alpha = max(tried, key=lambda t: t[0])[1]  # first best on ties
    info = {"top": [ctx.models[i].name for i in top], "bottom": [ctx.models[i].name for i in bottom],
            "alpha": alpha, "alpha_mode": params.alpha_mode, "ranking": ranking}
    ctx.metrics["expo"] = info
    return await search.finish(Extrapolate(strong, weak, alpha), trace={"alpha": alpha, "top": info["top"],
                                                                   "bottom": info["bottom"]})
