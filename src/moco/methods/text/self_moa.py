"""text_self_moa: one model's samples aggregated (Li et al. 2025, Rethinking Mixture-of-Agents: Self-MoA).

1. The proposer (the `proposer` role, or `proposer` param, else the dev-best model) samples `samples`
   answers per question (replicas of one call; sampling must be stochastic).
2. The aggregator (default: the proposer itself, as in the paper) synthesizes them with Mixture-of-Agents'
   aggregate-and-synthesize prompt:
   * `variant: parallel` (Self-MoA): one call over all samples;
   * `variant: seq` (Self-MoA-Seq, the paper's sequential version for many samples): a sliding window —
     the first call aggregates the first `window` samples, every later call aggregates the previous
     synthesis together with the next `window` samples, until all are used; the last synthesis is the answer.

`samples` defaults to what makes Self-MoA compute-matched to `text_mixture_of_agents` with its default
layers L (today 3) over the same pool of n models: (L-1)*n proposals + 1 aggregation = MoA's (L-1)*n + 1
calls per question (Self-MoA-Seq adds one aggregation call per further window).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text import mixture_of_agents as moa
from moco.methods.text.mixture_of_agents import aggregate_messages, usable
from moco.methods.text.shared import per_model, pick_model


def moa_default_proposals(n_models: int) -> int:
    """Proposals per question of `text_mixture_of_agents` at its default layers: (L-1) layers of n proposers."""
    return (moa.Params.model_fields["layers"].default - 1) * n_models


class Params(MethodParams):
    samples: int | None = Field(None, ge=1, le=256, description="proposals per question; default: as many as "
                                "text_mixture_of_agents makes at its default layers over the pool ((L-1) x models: "
                                "compute-matched)")
    variant: Literal["parallel", "seq"] = Field("parallel", description="parallel: one aggregation over all samples "
                                                "(Self-MoA); seq: sliding-window aggregation (Self-MoA-Seq)")
    window: int = Field(3, ge=1, le=256, description="seq: new samples per aggregation call (each call after the "
                        "first also sees the previous synthesis)")
    proposer: int | str | None = Field(None, description="the model that samples; default: the `proposer` role, "
                                       "else the dev-best model")
    aggregator: int | str | None = Field(None, description="the model that synthesizes; default: the `aggregator` "
                                         "role, else the proposer")


@method("text_self_moa", params=Params, level="text", aliases=("self_moa",), min_models=1,
        roles={"proposer": "samples the proposals (default: dev-best model)",
               "aggregator": "synthesizes them (default: the proposer)"},
        paper="Li et al. 2025, Rethinking Mixture-of-Agents: is mixing different LLMs beneficial?",
        summary="The best model samples several answers; aggregate-and-synthesize combines them at once "
                "(Self-MoA) or in a sliding window (Self-MoA-Seq)")
def run(ctx: RunContext, params: Params) -> list[Output]:
    test, n = ctx.test, len(ctx.test)
    proposer = pick_model(ctx, params.proposer, "proposer")
    aggregator = ctx.model(params.aggregator) if params.aggregator is not None else ctx.role("aggregator") or proposer
    k = params.samples or moa_default_proposals(len(ctx.models))
    if ctx.decoding.temperature <= 0 and k > 1:
        ctx.extra_metrics["warning"] = "temperature 0: the proposer's samples are identical"
    w = k if params.variant == "parallel" else params.window
    with ctx.phase("test"):
        flat = ctx.generate([Call(proposer, ex.prompt, replica=r) for r in range(k) for ex in test], tag="samples")
        samples = per_model(flat, n)  # samples[replica][example]
        steps: list[list[dict]] = [[] for _ in range(n)]
        finals = None
        for s, start in enumerate(range(0, k, w)):
            window = list(range(start, min(k, start + w)))
            shown = [([finals[j]] if finals is not None else []) + [samples[r][j] for r in window] for j in range(n)]
            finals = ctx.generate([Call(aggregator, aggregate_messages(ex.prompt, usable(shown[j])))
                                   for j, ex in enumerate(test)], tag="aggregate" + (f" step {s + 1}" if s else ""))
            for j in range(n):
                steps[j].append({"samples": window, "with_previous": s > 0, "output": finals[j].text})
    aggregations = math.ceil(k / w)
    ctx.extra_metrics["calls_per_question"] = k + aggregations
    ctx.extra_metrics["self_moa"] = {"variant": params.variant, "samples": k, "aggregations": aggregations,
                                     "moa_default_calls_per_question": moa_default_proposals(len(ctx.models)) + 1}
    return [Output(f.text, failed=f.failed, trace={"proposer": proposer.name, "aggregator": aggregator.name,
                                                   "samples": [samples[r][j].text for r in range(k)],
                                                   **({"steps": steps[j]} if params.variant == "seq" else {})})
            for j, f in enumerate(finals)]
