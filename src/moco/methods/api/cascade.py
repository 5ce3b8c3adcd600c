"""api_cascade: models ordered from cheap to expensive; each answers and defers to the next when unsure.

FrugalGPT (Chen et al. 2023) and token-uncertainty cascades (Gupta et al. 2024), as in the reference
implementation, with its bug fixed:

1. Order: the config order (list models weak -> strong), or ascending `costs` (one per model; stable).
2. `mode: logit` — confidence of an answer = the mean probability of its generated tokens (per-token
   log-probabilities, `confidence` chooses the statistic). Each level but the last gets its own threshold:
   the `percentage` quantile of ITS model's confidences on the dev set (the reference computes every level's
   threshold from model 0's dev answers). `thresholds` skips calibration.
   `mode: just_ask` — the prompt asks the model to say "unconfident" after its answer when unsure; an answer
   containing that word defers. The last level gets the plain question. No dev set needed.
3. Test: level 0 answers every item; items below its threshold go to level 1, and so on; the last level answers
   what is left. Each level is one batched call; answers are the plain answering calls (with log-probabilities),
   so they are shared through the cache with `single_model` and the offline router evaluation.
4. Every item's trace lists the levels it visited (confidence, threshold, accept/defer) and which level
   answered; metrics give the thresholds per model and the share of items answered by each model.
   A failed call at a non-last level defers; a response without log-probabilities in logit mode is an error.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from moco.context import Call, Output, Response, RunContext
from moco.errors import ConfigError, ModelError
from moco.methods.registry import MethodParams, method
from moco.models.pool import ModelHandle
from moco.routing.outcomes import answer_call, confidence, route_shares
from moco.routing.thresholds import calibrate

UNCONFIDENT = "unconfident"


class Params(MethodParams):
    mode: Literal["logit", "just_ask"] = Field("logit", description="logit: token-probability confidence with "
                                                "dev-calibrated thresholds; just_ask: the model says 'unconfident'")
    percentage: float = Field(0.5, ge=0.0, le=1.0, description="each threshold is this quantile of its model's dev "
                              "confidences (about this share of dev items defers at each level)")
    costs: list[float] | None = Field(None, description="cost of one call per model, in pool order; the cascade "
                                      "runs cheapest first (default: config order is cheap -> expensive)")
    confidence: Literal["mean_token_prob", "mean_top_prob", "min_token_prob"] = Field(
        "mean_token_prob", description="confidence statistic (mean_top_prob: the reference's top-1 probability)")
    thresholds: list[float] | None = Field(None, description="fixed thresholds for every level but the last "
                                           "(skips dev calibration)")


def cascade_order(models: list[ModelHandle], costs: list[float] | None) -> list[ModelHandle]:
    """Models cheapest first: by `costs` (ties keep config order), else in config order."""
    if costs is None:
        return list(models)
    if len(costs) != len(models):
        raise ConfigError(f"params: costs has {len(costs)} entries for {len(models)} models")
    return [models[i] for i in sorted(range(len(models)), key=lambda i: (costs[i], i))]


def just_ask_prompt(question: str) -> str:
    return (f"### Question: {question}\n\nAnswer the question as well as you can. If you are not confident in "
            f"your answer, write the word \"{UNCONFIDENT}\" after your answer.")


def _confidences(responses: list[Response], kind: str, model: ModelHandle) -> list[float | None]:
    out = []
    for r in responses:
        c = confidence(r, kind)
        if c is None and not r.failed:
            raise ModelError(f"cascade mode 'logit' needs per-token log-probabilities; model '{model.name}' "
                             "returned none (use an HF or OpenAI-compatible backend, or mode: just_ask)")
        out.append(c)
    return out


@method("api_cascade", params=Params, level="api", aliases=("cascade",), min_models=2,
        paper="Chen et al. 2023 (FrugalGPT); Gupta et al. 2024 (Language model cascades: token-level uncertainty)",
        summary="Models answer cheapest first; an answer below its model's dev-calibrated confidence defers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    order = cascade_order(ctx.models, params.costs)
    levels = len(order)
    logit = params.mode == "logit"
    lp = ctx.sampling(logprobs=True)
    thresholds: list[float] = []
    if logit:
        if params.thresholds is not None:
            if len(params.thresholds) != levels - 1:
                raise ConfigError(f"params: thresholds needs {levels - 1} values (one per level but the last), "
                                  f"got {len(params.thresholds)}")
            thresholds = list(params.thresholds)
        else:
            if not ctx.task.dev:
                raise ConfigError(f"task {ctx.task.name} has no dev split: give `thresholds` or use mode just_ask")
            with ctx.phase("dev"):
                dev = await ctx.generate([answer_call(m, ex, lp) for m in order[:-1] for ex in ctx.task.dev], tag="calibrate")
            n = len(ctx.task.dev)
            dev_conf = [_confidences(dev[i * n:(i + 1) * n], params.confidence, m) for i, m in enumerate(order[:-1])]
            try:
                thresholds = calibrate(dev_conf, params.percentage)
            except ValueError as e:
                raise ModelError(str(e)) from None
    test = ctx.task.test
    final: list[Response | None] = [None] * len(test)
    answered_by: list[ModelHandle | None] = [None] * len(test)
    visits: list[list[dict]] = [[] for _ in test]
    pending = list(range(len(test)))
    with ctx.phase("test"):
        for level, m in enumerate(order):
            if not pending:
                break
            last = level == levels - 1
            if logit:
                calls = [answer_call(m, test[j], lp) for j in pending]
            elif last:
                calls = [answer_call(m, test[j]) for j in pending]
            else:
                calls = [Call(m, just_ask_prompt(test[j].prompt), images=test[j].images) for j in pending]
            responses = await ctx.generate(calls, tag=f"level {level}")
            confs = _confidences(responses, params.confidence, m) if logit else [None] * len(responses)
            deferred = []
            for j, r, c in zip(pending, responses, confs):
                if last:
                    accept, why = True, "last level"
                elif logit:
                    accept = c is not None and c >= thresholds[level]
                    why = ("call failed" if c is None else
                           f"confidence {c:.4f} {'>=' if accept else '<'} threshold {thresholds[level]:.4f}")
                else:
                    accept = not r.failed and UNCONFIDENT not in r.text.lower()
                    why = "call failed" if r.failed else ("said unconfident" if not accept else "did not say unconfident")
                visits[j].append({"level": level, "model": m.name, "output": r.text,
                                  "confidence": None if c is None else round(c, 6),
                                  "threshold": thresholds[level] if logit and not last else None,
                                  "decision": "accept" if accept else "defer", "why": why})
                if accept:
                    final[j], answered_by[j] = r, m
                else:
                    deferred.append(j)
            pending = deferred
    shares = route_shares(ctx.models, answered_by)
    ctx.metrics.update(
        cascade_order=[m.name for m in order], mode=params.mode,
        thresholds={m.name: round(t, 6) for m, t in zip(order, thresholds)},
        answered_share=shares, route_share=shares,
        calls_per_query=round(sum(len(v) for v in visits) / max(1, len(test)), 4),
        reached_share={m.name: round(sum(len(v) > lvl for v in visits) / max(1, len(test)), 4)
                       for lvl, m in enumerate(order)})
    return [Output(r.text, failed=r.failed,
                   trace={"answered_by": h.name, "level": len(v) - 1, "levels": v, "routed_to": h.name})
            for r, h, v in zip(final, answered_by, visits)]
