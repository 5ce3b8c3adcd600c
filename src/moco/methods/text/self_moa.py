"""text_self_moa: one model's samples aggregated (Li et al. 2025, Rethinking Mixture-of-Agents: Self-MoA).

1. The proposer (the `proposer` role, or `proposer` param, else the dev-best model) samples `samples`
   answers per question (replicas of one call; sampling must be stochastic).
2. The aggregator (default: the proposer itself, as in the paper) synthesizes them with Mixture-of-Agents'
   aggregate-and-synthesize prompt.

`samples` defaults to the pool size: the same number of proposals per question as a 2-layer
Mixture-of-Agents over the pool (compute-matched). The sequential sliding-window variant (Self-MoA-Seq) is
not implemented.
"""
from __future__ import annotations

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text.mixture_of_agents import aggregate_messages, usable
from moco.methods.text.shared import per_model, pick_model


class Params(MethodParams):
    samples: int | None = Field(None, ge=1, le=256, description="proposals per question; default: the number of "
                                "models in the pool (compute-matched to a 2-layer MoA)")
    proposer: int | str | None = Field(None, description="the model that samples; default: the `proposer` role, "
                                       "else the dev-best model")
    aggregator: int | str | None = Field(None, description="the model that synthesizes; default: the `aggregator` "
                                         "role, else the proposer")


@method("text_self_moa", params=Params, level="text", aliases=("self_moa",), min_models=1,
        roles={"proposer": "samples the proposals (default: dev-best model)",
               "aggregator": "synthesizes them (default: the proposer)"},
        paper="Li et al. 2025, Rethinking Mixture-of-Agents: is mixing different LLMs beneficial?",
        summary="The best model samples several answers; one aggregate-and-synthesize call combines them")
def run(ctx: RunContext, params: Params) -> list[Output]:
    test, n = ctx.test, len(ctx.test)
    proposer = pick_model(ctx, params.proposer, "proposer")
    aggregator = ctx.model(params.aggregator) if params.aggregator is not None else ctx.role("aggregator") or proposer
    k = params.samples or len(ctx.models)
    if ctx.generation.temperature <= 0 and k > 1:
        ctx.extra_metrics["warning"] = "temperature 0: the proposer's samples are identical"
    with ctx.phase("test"):
        flat = ctx.generate([Call(proposer, ex.prompt, replica=r) for r in range(k) for ex in test], tag="samples")
        samples = per_model(flat, n)  # samples[replica][example]
        finals = ctx.generate([Call(aggregator, aggregate_messages(ex.prompt, usable([samples[r][j] for r in range(k)])))
                               for j, ex in enumerate(test)], tag="aggregate")
    ctx.extra_metrics["calls_per_question"] = k + 1
    return [Output(f.text, failed=f.failed, trace={"proposer": proposer.name, "aggregator": aggregator.name,
                                                   "samples": [samples[r][j].text for r in range(k)]})
            for j, f in enumerate(finals)]
