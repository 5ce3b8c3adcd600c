"""logit_logit_contrastive: decode with p_1 + α(Σ top-k p − Σ bottom-k p) (MoCo method #21), or proxy-tune.

contrastive (MoCo paper): every model answers the dev set; rank them by dev score; decode with
    p_1 + α(p_1 + … + p_k − p_{n−k+1} − … − p_n)
where p_i is the next-token distribution of the i-th ranked model. Entries that fall below 0 are clipped
and the rest renormalised before sampling (a distribution cannot be negative). α = 0 is the top model.
`space: logits` uses log-probabilities in the same formula (what the reference does with raw logits).

proxy_tuning (Liu et al. 2024, "Tuning language models by proxy"): a large base model steered by the
difference a fine-tune made to a small model,
    log p_base + α(log p_expert − log p_antiexpert),
with `base`, `expert` (small tuned) and `antiexpert` (small untuned) named from the pool. No dev ranking.

`plausibility` (off by default: the MoCo formula has none) adds contrastive decoding's adaptive plausibility
constraint (Li et al. 2023, "Contrastive Decoding"): only tokens the first member (the dev-top model p_1, or
the proxy-tuned base) finds plausible, p_1(x) >= plausibility · max p_1, may be chosen; the others are masked
before sampling, so the difference term cannot promote a token the strong model rules out.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities
from moco.models.fused import Combine, fused_model
from moco.selection import ranking


class Params(MethodParams):
    mode: Literal["contrastive", "proxy_tuning"] = Field("contrastive", description="MoCo contrastive or proxy tuning")
    k: int = Field(1, ge=1, description="top-k and bottom-k models by dev score (2k <= number of models)")
    alpha: float | None = Field(None, alias="lambda_", description=(
        "strength of the difference term; None: 0.2 for contrastive (reference default), 1.0 for proxy tuning"))
    space: Literal["probs", "logits"] = Field("probs", description="contrastive: combine probabilities (paper) or log-probabilities")
    plausibility: float | None = Field(None, gt=0.0, le=1.0, description=(
        "adaptive plausibility constraint of contrastive decoding (Li et al. 2023; they use 0.1): tokens with "
        "p_1 < plausibility * max p_1 are excluded; None: off (the MoCo formula)"))
    base: int | str = Field(0, description="proxy tuning: the large model to steer")
    expert: int | str = Field(1, description="proxy tuning: the small fine-tuned model")
    antiexpert: int | str = Field(2, description="proxy tuning: the small model before fine-tuning")

    def strength(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 0.2 if self.mode == "contrastive" else 1.0


def contrastive(k: int, alpha: float, space: str) -> Combine:
    """Members are ordered top-1..top-k, then bottom-k..; scores = p_1 + α(Σ top − Σ bottom)."""
    import torch

    def combine(logits: list) -> "torch.Tensor":
        if space == "logits":
            lp = [torch.log_softmax(x, -1) for x in logits]
            return lp[0] + alpha * (sum(lp[:k]) - sum(lp[k:]))
        p = [torch.softmax(x, -1) for x in logits]
        s = (p[0] + alpha * (sum(p[:k]) - sum(p[k:]))).clamp(min=0.0)
        empty = s.sum(-1, keepdim=True) <= 0  # every token clipped (only possible for large α): fall back to p_1
        return torch.log(torch.where(empty, p[0], s))

    return combine


def plausible(combine: Combine, threshold: float | None) -> Combine:
    """`combine` restricted to the tokens the first member finds plausible: p_1(x) >= threshold · max p_1
    (the adaptive plausibility constraint); the others get -inf. None: `combine` unchanged."""
    import math

    import torch

    if threshold is None:
        return combine

    def masked(logits: list) -> "torch.Tensor":
        scores = combine(logits)
        lp1 = torch.log_softmax(logits[0].float(), -1)
        keep = lp1 >= lp1.max(-1, keepdim=True).values + math.log(threshold)
        return torch.where(keep, scores, torch.full_like(scores, float("-inf")))

    return masked


def proxy_tuning(alpha: float) -> Combine:
    """Members are base, expert, antiexpert: log p_base + α(log p_expert − log p_antiexpert)."""
    import torch

    def combine(logits: list) -> "torch.Tensor":
        base, expert, anti = (torch.log_softmax(x, -1) for x in logits)
        return base + alpha * (expert - anti)

    return combine


def _validate(params: Params, pool) -> list[str]:
    n = len(pool.handles)
    if params.mode == "contrastive":
        if 2 * params.k > n:
            raise ConfigError(f"params (logit_logit_contrastive): k={params.k} needs at least {2 * params.k} models "
                              f"(top-k and bottom-k must not overlap); the config has {n}")
        return []
    names = [pool.handle(r).name for r in (params.base, params.expert, params.antiexpert)]
    if len(set(names)) != 3:
        raise ConfigError(f"params (logit_logit_contrastive): proxy tuning needs three different models, got {names}")
    return [f"proxy tuning: {names[0]} + α({names[1]} − {names[2]})"]


@method("logit_logit_contrastive", params=Params, level="logit", aliases=("logit_contrastive", "contrastive"),
        min_models=2, needs=Capabilities(logits=True), same_tokenizer=True, validate=_validate,
        objective_task_only=False, paper="MoCo method #21; Liu et al. 2024 (proxy tuning)",
        summary="Decode with p_top1 + α(Σ top-k − Σ bottom-k) by dev rank; or proxy tuning base + α(expert − anti)")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    alpha = params.strength()
    if params.mode == "contrastive":
        order, scores = await ranking(ctx)
        top, bottom = order[: params.k], order[len(order) - params.k:]
        chosen = [ctx.models[i] for i in top + bottom]
        combine = contrastive(params.k, alpha, params.space)
        key = f"contrastive:{params.k}:{alpha}:{params.space}"
        info = {"mode": "contrastive", "alpha": alpha, "k": params.k, "space": params.space,
                "ranking": [[ctx.models[i].name, scores[i]] for i in order],
                "top": [ctx.models[i].name for i in top], "bottom": [ctx.models[i].name for i in bottom]}
    else:
        chosen = [ctx.model(params.base), ctx.model(params.expert), ctx.model(params.antiexpert)]
        combine = proxy_tuning(alpha)
        key = f"proxy_tuning:{alpha}"
        info = {"mode": "proxy_tuning", "alpha": alpha, "base": chosen[0].name, "expert": chosen[1].name,
                "antiexpert": chosen[2].name}
    combine = plausible(combine, params.plausibility)
    if params.plausibility is not None:
        key += f":plausibility={params.plausibility}"
        info["plausibility"] = params.plausibility
    handle = fused_model(ctx, f"logit_{params.mode}", chosen, combine, key)
    with ctx.phase("test"):
        rs = await ctx.ask(handle, [ex.prompt for ex in ctx.task.test], tag=params.mode)
    ctx.metrics["logit"] = info
    return [Output(r.text, trace=dict(info), failed=r.failed) for r in rs]
