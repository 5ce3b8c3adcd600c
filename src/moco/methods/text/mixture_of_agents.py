"""text_mixture_of_agents: layers of proposers and a final aggregator (Wang et al. 2024, Mixture-of-Agents).

1. Layer 1: every proposer answers the question independently.
2. Layers 2..L-1: every proposer answers again with all of the previous layer's responses in the
   aggregate-and-synthesize system prompt (the paper's Table 1 prompt).
3. Layer L: the aggregator (the `aggregator` role, or `aggregator` param, else the dev-best model) writes
   the final answer with the same prompt over layer L-1's responses.

`layers` counts every layer, the aggregator's included: the paper's default MoA has 3 layers; MoA-Lite 2.
One batched call per layer. Compute: (L-1) x proposers + 1 calls per question (`text_self_moa` with the
same number of samples is the compute-matched single-model baseline).
"""
from __future__ import annotations

from pydantic import Field

from moco.context import Call, Output, Response, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import per_model, pick_model
from moco.models.base import Message

AGGREGATE_AND_SYNTHESIZE = (
    "You have been provided with a set of responses from various open-source models to the latest user query. "
    "Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically "
    "evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. "
    "Your response should not simply replicate the given answers but should offer a refined, accurate, and "
    "comprehensive reply to the instruction. Ensure your response is well-structured, coherent, and adheres to the "
    "highest standards of accuracy and reliability.\n\nResponses from models:")


def aggregate_messages(question: str, responses: list[str]) -> list[Message]:
    """The paper's aggregate-and-synthesize prompt as the system message, the question as the user message."""
    shown = "\n".join(f"{i}. {r.strip()}" for i, r in enumerate(responses, 1))
    return [("system", f"{AGGREGATE_AND_SYNTHESIZE}\n{shown}"), ("user", question)]


def usable(responses: list[Response]) -> list[str]:
    return [r.text for r in responses if not r.failed and r.text.strip()]


class Params(MethodParams):
    layers: int = Field(3, ge=2, le=10, description="layers, the aggregator's included (paper: 3; MoA-Lite: 2)")
    proposers: list[int | str] | None = Field(None, description="models (index or name) in the proposer layers; "
                                              "default: every model of the pool")
    aggregator: int | str | None = Field(None, description="model (index or name) of the last layer; default: "
                                         "the `aggregator` role, else the dev-best model")


@method("text_mixture_of_agents", params=Params, level="text", aliases=("mixture_of_agents", "moa"), min_models=2,
        roles={"aggregator": "synthesizes the last proposer layer (default: dev-best model)"},
        paper="Wang et al. 2024, Mixture-of-Agents enhances large language model capabilities",
        summary="Layers of proposers, each seeing the previous layer's answers; an aggregator synthesizes the last")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    test, n = ctx.task.test, len(ctx.task.test)
    proposers = [ctx.model(p) for p in params.proposers] if params.proposers else ctx.models
    aggregator = await pick_model(ctx, params.aggregator, "aggregator")
    with ctx.phase("test"):
        layer = per_model(await ctx.generate([Call(p, ex.prompt) for p in proposers for ex in test], tag="layer 1"), n)
        trace = [[{p.name: layer[a][j].text for a, p in enumerate(proposers)}] for j in range(n)]
        for ell in range(2, params.layers):
            shown = [usable([layer[a][j] for a in range(len(proposers))]) for j in range(n)]
            layer = per_model(await ctx.generate([Call(p, aggregate_messages(ex.prompt, shown[j]))
                                            for p in proposers for j, ex in enumerate(test)], tag=f"layer {ell}"), n)
            for j in range(n):
                trace[j].append({p.name: layer[a][j].text for a, p in enumerate(proposers)})
        shown = [usable([layer[a][j] for a in range(len(proposers))]) for j in range(n)]
        finals = await ctx.generate([Call(aggregator, aggregate_messages(ex.prompt, shown[j])) for j, ex in enumerate(test)],
                              tag="aggregate")
    ctx.metrics["calls_per_question"] = (params.layers - 1) * len(proposers) + 1
    return [Output(f.text, failed=f.failed, trace={"layers": trace[j], "aggregator": aggregator.name})
            for j, f in enumerate(finals)]
