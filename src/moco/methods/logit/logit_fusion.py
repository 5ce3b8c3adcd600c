"""logit_logit_fusion: decode from the average of the models' next-token distributions (MoCo method #20).

Every step, each model reads the same prompt (through its own role prompt, padding, attention mask and KV
cache) and gives a next-token distribution; the fused distribution is their (weighted) average and each row
samples its token from it with its own seeded generator; the token is fed back to every model. By default the
probabilities are averaged (as the paper says); `space: logits` averages log-probabilities instead (a product
of experts, what the reference does with raw logits — the same distribution, since a softmax ignores per-model
constants). Fixes two reference bugs: no attention mask, and padding every prompt to the longest of the
dataset. The models must share one vocabulary (checked by `moco validate` from the tokenizer files).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities
from moco.models.fused import Combine, fused_model


class Params(MethodParams):
    space: Literal["probs", "logits"] = Field(
        "probs", description="average next-token probabilities (paper) or log-probabilities (product of experts)")
    weights: list[float] | None = Field(None, description="one non-negative weight per model (normalised); None: uniform")


def average(weights: list[float], space: str) -> Combine:
    """log Σ w_i p_i (probs) or Σ w_i log p_i (logits), with Σ w_i = 1."""
    import torch

    def combine(logits: list) -> "torch.Tensor":
        if space == "logits":
            return sum(w * torch.log_softmax(lg, -1) for w, lg in zip(weights, logits))
        return torch.log(sum(w * torch.softmax(lg, -1) for w, lg in zip(weights, logits)))

    return combine


def _validate(params: Params, pool) -> list[str]:
    if params.weights is not None:
        if len(params.weights) != len(pool.handles):
            raise ConfigError(f"params (logit_logit_fusion): weights has {len(params.weights)} entries for "
                              f"{len(pool.handles)} models")
        if any(w < 0 for w in params.weights) or sum(params.weights) <= 0:
            raise ConfigError("params (logit_logit_fusion): weights must be non-negative with a positive sum")
    return []


@method("logit_logit_fusion", params=Params, level="logit", aliases=("logit_fusion", "fusion"), min_models=2,
        needs=Capabilities(logits=True), same_tokenizer=True, validate=_validate,
        paper="MoCo method #20 (logit fusion)",
        summary="Decode from the average of the models' next-token distributions (shared vocabulary)")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    raw = params.weights or [1.0] * len(ctx.models)
    weights = [w / sum(raw) for w in raw]
    handle = fused_model(ctx, "logit_fusion", ctx.models, average(weights, params.space),
                         f"fusion:{params.space}:{weights}")
    with ctx.phase("test"):
        rs = await ctx.ask(handle, [ex.prompt for ex in ctx.task.test], tag="fusion")
    names = [h.name for h in ctx.models]
    ctx.metrics["logit"] = {"members": names, "space": params.space, "weights": weights}
    trace = {"members": names, "space": params.space, "weights": weights}
    return [Output(r.text, trace=dict(trace), failed=r.failed) for r in rs]
