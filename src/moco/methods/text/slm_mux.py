"""text_slm_mux: pick the most self-consistent model per question (Wang et al. 2026, SLM-MUX).

1. Every model samples `samples_per_model` = k answers per question (replicas of one call, one batched call).
2. Per question and model: the most frequent extracted answer (ties between answers: seeded random) and its
   confidence = max_count / k. Unparsed or failed samples count in k: a model that parses 1 of 5 samples has
   confidence 0.2, not 1.0 (the reference implementation divides by the number of parsed samples; that
   figure is kept in the trace as `confidence_parsed`).
3. The model with the highest confidence answers; ties between models by `tie`: dev-based (the better dev
   score, then pool order), model-order, or random (seeded).

Sampling must be stochastic (temperature > 0): at temperature 0 the k samples are identical and every model
that parses has confidence 1 (a warning is written to metrics.json).
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method


class Params(MethodParams):
    samples_per_model: int = Field(5, ge=1, le=256, description="samples k per model and question")
    tie: Literal["dev-based", "model-order", "random"] = Field(
        "dev-based", description="tie-break between equally confident models")
    seed: int | None = Field(None, ge=0, description="seed of the random tie-breaks; default: the run's seed")


def consistency(votes: list[str | None], k: int, rng: random.Random) -> tuple[str | None, float, float]:
    """(majority answer, max_count / k, max_count / parsed) of one model's k samples."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None, 0.0, 0.0
    top = max(counts.values())
    answer = rng.choice(sorted(a for a, c in counts.items() if c == top))
    return answer, top / k, top / sum(counts.values())


@method("text_slm_mux", params=Params, level="text", aliases=("slm_mux",), min_models=2, objective_task_only=True,
        paper="Wang et al. 2026, SLM-MUX: orchestrating small language models for reasoning",
        summary="k samples per model; the most self-consistent model's majority answer wins, ties by dev score")
def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test, k = ctx.models, ctx.test, params.samples_per_model
    seed = ctx.seed if params.seed is None else params.seed
    if params.tie == "dev-based":
        from moco.selection import ranking

        dev = ranking(ctx, "tie_break")[1]  # recorded: every model's dev score with its interval
    else:
        dev = [0.0] * len(models)
    if ctx.decoding.temperature <= 0 and k > 1:
        ctx.extra_metrics["warning"] = "temperature 0: the k samples of a model are identical"
    with ctx.phase("test"):
        calls = [Call(m, ex.prompt, replica=r) for m in models for ex in test for r in range(k)]
        flat = ctx.generate(calls, tag="samples")
    outputs = []
    for j, ex in enumerate(test):
        per: dict[str, dict] = {}
        best: list[tuple[float, int]] = []
        for m in models:
            samples = [flat[(m.index * len(test) + j) * k + r] for r in range(k)]
            votes = [None if s.failed else ctx.scorer.extract(ex, s.text) for s in samples]
            answer, conf, conf_parsed = consistency(votes, k, random.Random(f"slm_mux:{seed}:{j}:{m.index}"))
            per[m.name] = {"votes": votes, "answer": answer, "confidence": conf, "confidence_parsed": conf_parsed}
            best.append((conf, m.index))
        top = max(c for c, _ in best)
        tied = [i for c, i in best if c == top]
        if params.tie == "random":
            winner = random.Random(f"slm_mux-tie:{seed}:{j}").choice(tied)
        else:  # dev-based: better dev score first; model-order (and equal dev scores): earlier in the pool
            winner = min(tied, key=lambda i: (-dev[i], i))
        w = models[winner]
        answer = per[w.name]["answer"]
        pos = next((r for r, v in enumerate(per[w.name]["votes"]) if v == answer and answer is not None), 0)
        chosen = flat[(winner * len(test) + j) * k + pos]
        trace = {"models": per, "chosen": w.name, "tied": [models[i].name for i in tied] if len(tied) > 1 else []}
        outputs.append(Output(chosen.text, answer=answer, use_answer=True, trace=trace,
                              failed=all(flat[(m.index * len(test) + j) * k + r].failed for m in models for r in range(k))))
    return outputs
