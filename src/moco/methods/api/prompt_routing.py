"""api_prompt_routing: a router LM reads the model descriptions and the query, and names the model that answers.

1. The router (params `router`, else the `router` role, else the dev-best model as in the reference) sees
   the query (question and options, without the answer-format instruction) and the numbered descriptions of
   the models (params `model_descriptions`, else each model's config `description`, else its role prompt),
   and is asked for the number of the best-suited model. All router calls are one batched call.
2. Its output is parsed strictly (`moco.routing.choice`: "model k", a bare number, one number or one model
   name); the reference's "highest digit anywhere" reading ("10" counts as "1") is not used.
3. An unreadable choice is a recorded parse failure: the query goes to the dev-best model (the reference's
   fallback too, but silent there). Failures are counted in metrics (`router_parse_failures`) and each
   example's trace says why.
4. Each query is answered by its routed model with the plain answering call, so answers already computed by
   other methods come from the cache. Metrics report the share of queries sent to each model.
"""
from __future__ import annotations

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.routing.choice import model_descriptions, query_text
from moco.routing.outcomes import read_router, routed_outputs
from moco.selection import dev_best


class Params(MethodParams):
    model_descriptions: list[str] | None = Field(
        None, description="one description per model, in pool order; default: each model's `description` "
        "in the config (else its role prompt, else its name)")
    router: int | str | None = Field(None, description="router model (pool index or name); default: the "
                                     "`router` role if bound, else the dev-best model (reference)")
    router_max_new_tokens: int = Field(16, ge=1, le=4096, description="the router is asked for a model number only")
    router_temperature: float | None = Field(None, ge=0.0, le=5.0, description="router decoding temperature; "
                                             "None: the run's (the reference samples with the global settings)")


def routing_prompt(query: str, descriptions: list[str]) -> str:
    shown = "\n".join(f"Model {i}: {d}" for i, d in enumerate(descriptions, 1))
    return ("You are a router. You send each question to the most suitable model, judging from the models' "
            f"descriptions.\n\nQuestion:\n{query}\n\nModels:\n{shown}\n\n"
            f"Which model is best suited to answer this question? Reply with the model number (1-{len(descriptions)}) only.")


@method("api_prompt_routing", params=Params, level="api", aliases=("prompt_routing", "prompt_router"),
        min_models=2, roles={"router": "reads the model descriptions and picks a model per query (default: dev-best)"},
        paper="MoCo (Feng et al. 2026) method #1, prompt routing",
        summary="A router LM reads model descriptions and the query and picks the model that answers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    descriptions = model_descriptions(models, params.model_descriptions, ctx)
    router = ctx.model(params.router) if params.router is not None else ctx.role("router") or await dev_best(ctx)
    overrides = {"max_new_tokens": params.router_max_new_tokens}
    if params.router_temperature is not None:
        overrides["temperature"] = params.router_temperature
    sampling = ctx.sampling(**overrides)
    with ctx.phase("test"):
        prompts = [routing_prompt(query_text(ex), descriptions) for ex in ctx.task.test]
        raw = await ctx.generate([Call(router, p, sampling) for p in prompts], tag="route")
    chosen, traces = await read_router(ctx, router, raw, fallback=lambda: dev_best(ctx))
    return await routed_outputs(ctx, chosen, traces)
