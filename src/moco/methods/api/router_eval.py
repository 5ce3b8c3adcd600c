"""api_router_eval: offline router evaluation (RouteLLM style) — every model answers dev and test once, then
routing rules are swept for free and reported as quality vs. share of calls to the most expensive model.

1. Every model answers every dev and test query with per-token log-probabilities: the plain answering calls,
   so they come from the cache when `single_model`, a router or a cascade already made them, and any later
   sweep (other `percentages`, `costs`, `decisions`) makes no model call at all.
2. `moco.routing.offline.sweep` evaluates single models, the random mix, the oracle, cascades over a grid of
   threshold quantiles (thresholds calibrated on dev per model, as api_cascade), and the recorded routes of
   other runs (`decisions`: run directories of prompt/trained/graph routing or cascade on the same test set).
3. The run's own answers are those of the cascade setting with the best dev quality whose dev share of calls
   to the most expensive model is at most `max_strong_share` (cheaper on ties): a budgeted cascade.
4. Artifacts: router_eval.csv (every point, dev and test), router_eval.md (test table), router_eval.png
   (test curves). Metrics: the points, APGR per family, the selected setting and its route shares.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError, ModelError
from moco.methods.registry import MethodParams, method
from moco.routing import offline
from moco.routing.outcomes import collect, route_shares

GRID = [round(0.1 * k, 1) for k in range(11)]


class Params(MethodParams):
    costs: list[float] | None = Field(None, description="cost of one call per model (pool order); default: config "
                                      "order is cheap -> expensive, costs 1..M")
    percentages: list[float] = Field(GRID, description="cascade threshold quantiles to sweep (and random-mix shares)")
    confidence: Literal["mean_token_prob", "mean_top_prob", "min_token_prob"] = Field(
        "mean_token_prob", description="confidence statistic of an answer (see api_cascade)")
    max_strong_share: float = Field(0.5, ge=0.0, le=1.0, description="budget for the run's own answers: the best "
                                    "cascade setting on dev with at most this share of calls to the most expensive model")
    decisions: list[str] = Field(default_factory=list, description="run directories whose recorded routes are "
                                 "evaluated on these answers (same task and test slice)")
    plot: bool = Field(True, description="write router_eval.png")


@method("api_router_eval", params=Params, level="api", aliases=("router_eval", "routellm_eval", "offline_routing"),
        min_models=2, paper="Ong et al. 2025 (RouteLLM) evaluation protocol: quality vs. % calls to the strong model",
        summary="Every model answers once; routers and cascade thresholds are swept offline (quality vs. share of "
        "calls to the most expensive model)")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    n_m = len(models)
    costs = params.costs or [float(i + 1) for i in range(n_m)]
    if len(costs) != n_m:
        raise ConfigError(f"params: costs has {len(costs)} entries for {n_m} models")
    if not ctx.task.dev:
        raise ConfigError(f"task {ctx.task.name} has no dev split: cascade thresholds are calibrated on dev")
    if any(not 0.0 <= p <= 1.0 for p in params.percentages) or not params.percentages:
        raise ConfigError("params: percentages must be a non-empty list of values in [0, 1]")
    tables, outs = {}, {}
    for split, examples in (("dev", ctx.task.dev), ("test", ctx.task.test)):
        with ctx.phase(split):
            outs[split] = await collect(ctx, examples, tag=f"answer {split}", logprobs=True)
        missing = [m.name for m, row in zip(models, outs[split].answers)
                   if any(r.token_logprobs is None and not r.failed for r in row)]
        if missing:
            raise ModelError(f"api_router_eval needs per-token log-probabilities; model(s) {', '.join(missing)} "
                             "returned none (use an HF or OpenAI-compatible backend)")
        tables[split] = offline.Table([m.name for m in models], [ex.id for ex in examples], outs[split].scores,
                                      outs[split].confidences(params.confidence))
    test_out = outs["test"]
    decisions = {d: offline.decisions_from_run(d, tables["test"]) for d in params.decisions}
    points = offline.sweep(tables["dev"], tables["test"], costs, params.percentages, decisions)
    order = offline.order_by_cost(costs)
    cheap, strong = order[0], order[-1]
    # the run's own answers: the budgeted cascade chosen on dev
    dev_cascade = [p for p in points if p.router == "cascade" and p.split == "dev"]
    allowed = [p for p in dev_cascade if p.strong_share <= params.max_strong_share + 1e-9]
    if not allowed:
        allowed = [min(dev_cascade, key=lambda p: (p.strong_share, -p.quality))]
    pick = max(allowed, key=lambda p: (p.quality, -p.cost, -(p.param or 0.0)))
    thresholds = offline.cascade_thresholds(tables["dev"], order, pick.param)
    route = offline.cascade_route(tables["test"], order, thresholds)
    test_pick = next(p for p in points if p.router == "cascade" and p.split == "test" and p.param == pick.param)
    q = {s: [sum(t.scores[m]) / max(1, len(t.ids)) for m in range(n_m)] for s, t in tables.items()}
    families = ["random", "cascade"] + (["cascade_2"] if n_m > 2 else [])
    ctx.metrics.update(
        cost_order=[models[m].name for m in order], costs={m.name: c for m, c in zip(models, costs)},
        most_expensive=models[strong].name,
        selected={"router": "cascade", "percentage": pick.param, "max_strong_share": params.max_strong_share,
                  "thresholds": {models[m].name: round(t, 6) for m, t in zip(order, thresholds)},
                  "dev_quality": pick.quality, "dev_strong_share": pick.strong_share,
                  "test_quality": test_pick.quality, "test_strong_share": test_pick.strong_share},
        route_share=route_shares(models, [models[a] for a in route.answerer]),
        apgr={s: {f: offline.apgr(points, f, s, q[s][cheap], q[s][strong]) for f in families} for s in ("dev", "test")},
        router_eval=[p.__dict__ for p in points])
    if ctx.artifacts_dir is not None:
        files = offline.write_report(points, ctx.artifacts_dir, f"{ctx.task.name}: routers, {n_m} models",
                                     plot=params.plot)
        ctx.metrics["router_eval_files"] = [f.name for f in files]
    outputs = []
    for i, _ex in enumerate(ctx.task.test):
        a = route.answerer[i]
        r = test_out.answers[a][i]
        trace = {"routed_to": models[a].name, "answered_by": models[a].name,
                 "levels": [{"model": models[m].name, "confidence": tables["test"].confidences[m][i]} for m in route.calls[i]],
                 "answers": {m.name: {"text": test_out.answers[k][i].text, "score": test_out.scores[k][i],
                                      "confidence": tables["test"].confidences[k][i]} for k, m in enumerate(models)}}
        outputs.append(Output(r.text, failed=r.failed, trace=trace))
    return outputs
