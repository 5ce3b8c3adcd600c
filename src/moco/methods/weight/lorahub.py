"""weight_lorahub: LoraHub (Huang et al. 2024; MoCo method #25) — gradient-free search of LoRA mixing weights.

Every model is a LoRA adapter on one base. A candidate weight vector w composes them as in the paper,
    A = Σ w_i A_i,  B = Σ w_i B_i,  θ = θ_base + s·B·A          (compose: factors; `delta` uses Σ w_i·s·B_i·A_i)
is merged in memory into one resident model. As in the paper and the authors' code (`lorahub_learning`):
- the examples are `dev_samples` (5) dev items drawn with the run's seed (the authors shuffle and take 5);
- the objective is the few-shot cross-entropy of the gold answers (written as the prompt asks, e.g. "The answer
  is (B)."), token-averaged over the examples and divided by their number as the authors' code does (one batch
  of 5), plus 0.05 · mean|w| (`l1`);
- nevergrad NGOpt minimises it over w ∈ [−1.5, 1.5]^n from w = 0 for `budget` = 40 evaluations, and the
  optimizer's recommendation is the answer (the authors' `optimizer.minimize`).
Prompts go through the chat template like every other method (the reference sends raw prompts here) and test
generation uses the run's settings. `objective: dev_score` keeps the former variant (1 − mean dev score of
sampled answers, + the L1 term; the best evaluated w wins): with few items many w tie, and w = 0, the bare
base, is then returned.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError, did_you_mean
from moco.merging import LoraAdapter, LoraMix, Node, Source
from moco.merging.search import DevSearch
from moco.methods.registry import MethodParams, method
from moco.methods.weight._common import base_spec, check_weight_pool, lora_pool
from moco.models.base import Capabilities, GenRequest, with_role_prompt
from moco.tasks.base import Example


class Params(MethodParams):
    dev_samples: int = Field(5, ge=1, alias="lorahub_dev_samples", description="few-shot examples: n dev items "
                             "drawn with the run's seed (the paper's 5)")
    objective: Literal["cross_entropy", "dev_score"] = Field(
        "cross_entropy", description="cross_entropy: the paper's few-shot loss of the gold answers; dev_score: "
        "1 - mean score of generated answers")
    budget: int = Field(40, ge=1, alias="max_inference_step", description="candidate evaluations (nevergrad "
                        "budget; the authors' 40)")
    weight_bound: float = Field(1.5, gt=0, alias="lora_weight_bound", description="each weight lies in [-bound, bound]")
    l1: float = Field(0.05, ge=0, alias="regular_coef", description="L1 regulariser: loss = (1 - score) + l1·mean|w|")
    optimizer: str = Field("NGOpt", description="nevergrad optimizer name")
    compose: Literal["factors", "delta"] = Field("factors", description="factors: (Σw B)(Σw A) as LoraHub; delta: Σ w·BA")


def _validate(params: Params, pool) -> list[str]:
    check_weight_pool(params, pool)
    if not lora_pool(pool.handles):
        raise ConfigError("weight_lorahub composes LoRA adapters: every model needs `adapter:` on the same base model")
    import nevergrad as ng

    if params.optimizer not in ng.optimizers.registry:
        raise ConfigError(f"params (weight_lorahub): unknown nevergrad optimizer '{params.optimizer}'"
                          f"{did_you_mean(params.optimizer, list(ng.optimizers.registry))}")
    adapters = [LoraAdapter.load(h.spec.adapter) for h in pool.handles]
    if params.compose == "factors":
        shapes = {(a.r, a.scaling, tuple(sorted(a.factors))) for a in adapters}
        if len(shapes) != 1:
            raise ConfigError("weight_lorahub: factor-wise composition needs adapters with one rank, alpha and set of "
                              "target modules (use compose: delta otherwise)")
    return [f"lora: {len(adapters)} adapters on '{pool.handles[0].spec.model}', rank {adapters[0].r}, "
            f"{len(adapters[0].factors)} adapted matrices each"]


@method("weight_lorahub", params=Params, level="weight", aliases=("lorahub",), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=_validate,
        paper="Huang et al. 2024 (LoraHub); MoCo method #25",
        summary="Gradient-free (nevergrad) search of scalar weights composing LoRA adapters, L1-regularised few-shot cross-entropy")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    import nevergrad as ng

    handles = ctx.models
    bh = ctx.add_model(f"base:{handles[0].spec.model}", base_spec(handles[0].spec))
    backend = ctx.local(bh).backend
    base = Source(bh.name, ctx.local(bh).fingerprint, backend.model.state_dict())
    adapters = [LoraAdapter.load(h.spec.adapter) for h in handles]
    names = [h.name for h in handles]
    fps = [ctx.local(h).fingerprint for h in handles]

    def recipe(w) -> LoraMix:
        return LoraMix(base, adapters, names, fps, [float(x) for x in w], mode=params.compose)

    examples = few_shot(ctx, params.dev_samples)
    search = DevSearch(ctx, backend, "lorahub", dev=examples)
    loss_of = cross_entropy(ctx, search, examples) if params.objective == "cross_entropy" else None
    n = len(adapters)
    space = ng.p.Array(init=np.zeros(n), lower=-params.weight_bound, upper=params.weight_bound)
    space.random_state = np.random.RandomState(ctx.seed)
    opt = ng.optimizers.registry[params.optimizer](parametrization=space, budget=params.budget)
    best_w, best_loss, steps = np.zeros(n), float("inf"), []
    for step in range(params.budget):
        cand = opt.ask()
        w = np.asarray(cand.value, dtype=float)
        l1 = params.l1 * float(np.mean(np.abs(w)))
        if loss_of is not None:
            ce = loss_of(recipe(w))
            loss, row = ce + l1, {"cross_entropy": ce, "digest": recipe(w).digest()}
        else:
            score = await search.score(recipe(w), step=step)
            loss, row = (1.0 - score) + l1, {"dev_score": score}
        opt.tell(cand, loss)
        steps.append({"step": step, "weights": dict(zip(names, w.tolist())), **row, "loss": loss})
        if loss < best_loss:
            best_w, best_loss = w, loss
    if loss_of is not None:  # the optimizer's recommendation, as the authors' `optimizer.minimize` returns
        best_w = np.asarray(opt.provide_recommendation().value, dtype=float)
        best_loss = loss_of(recipe(best_w)) + params.l1 * float(np.mean(np.abs(best_w)))
        record_ce_choice(ctx, steps, loss_of.items, recipe(best_w),  # type: ignore[attr-defined]
                         lambda ws: params.l1 * float(np.mean(np.abs(list(ws.values())))))
    ctx.metrics["lorahub"] = {"optimizer": params.optimizer, "compose": params.compose,
                                    "objective": params.objective, "examples": [ex.id for ex in examples],
                                    "weights": dict(zip(names, best_w.tolist())), "loss": best_loss, "steps": steps}
    return await search.finish(recipe(best_w), trace={"weights": dict(zip(names, best_w.tolist()))})


def few_shot(ctx: RunContext, n: int) -> list[Example]:
    """n dev items drawn with the run's seed (in dev order), as the authors draw their 5 examples."""
    if not ctx.task.dev:
        raise ConfigError(f"weight_lorahub learns its weights on dev examples; task {ctx.task.name} has none")
    picked = sorted(random.Random(ctx.seed).sample(range(len(ctx.task.dev)), min(n, len(ctx.task.dev))))
    return [ctx.task.dev[i] for i in picked]


def cross_entropy(ctx: RunContext, search: DevSearch, examples: list[Example]) -> Callable[[Node], float]:
    """Recipe -> the paper's few-shot loss: the gold answers' token-averaged cross-entropy under the merged
    model, divided by the number of examples (the authors' `default_get_loss` with one batch of 5)."""
    from moco.methods.text.shared import gold_completion

    golds = [gold_completion(ex) for ex in examples]
    if any(g is None for g in golds):
        raise ConfigError(f"weight_lorahub: the cross-entropy objective needs gold answers; task {ctx.task.name} "
                          "has items without one (use objective: dev_score)")
    tokens = sum(len(search.bench.backend.tokenizer(g, add_special_tokens=False)["input_ids"]) for g in golds)
    seen: dict[str, float] = {}

    def loss(recipe: Node) -> float:
        d = recipe.digest()
        if d not in seen:
            h = search.handle(recipe)
            greedy = ctx.sampling(temperature=0.0)  # the messages generate would send (role prompt included)
            reqs = [GenRequest(with_role_prompt([("user", ex.prompt)], h.role_prompt), greedy) for ex in examples]
            t0 = time.time()
            with ctx.phase("dev"):
                ll = ctx.local(h).backend.loglikelihood(reqs, golds)
                ctx.account(model=h.name, key=d, tag="lorahub loss", tokens_in=tokens, latency=time.time() - t0)
            items[d] = [-x / max(1, tokens) for x in ll]  # per example; their mean is the objective
            seen[d] = sum(items[d]) / len(examples)
        return seen[d]

    items: dict[str, list[float]] = {}
    loss.items = items  # type: ignore[attr-defined]
    return loss


def record_ce_choice(ctx: RunContext, steps: list[dict], items: dict[str, list[float]], chosen: LoraMix,
                     penalty: Callable[[dict], float], top: int = 10) -> None:
    """Record the cross-entropy choice in metrics `dev_selection.lorahub` like every dev selection: the chosen
    weights and the `top` lowest-loss candidates, each with its per-example score = −(cross-entropy + L1 term)
    (mean = −loss) and its interval, so a reader sees how close the recommendation was to the others."""
    from moco.selection import record

    rows = [(f"#{s['step']} w={[round(v, 3) for v in s['weights'].values()]}", s["digest"], penalty(s["weights"]))
            for s in steps]
    rows.sort(key=lambda r: sum(items[r[1]]) / len(items[r[1]]) + r[2])
    shown = rows[:top]
    label = "recommendation w=" + str([round(v, 3) for v in chosen.weights])
    shown.append((label, chosen.digest(), penalty(dict(enumerate(chosen.weights)))))
    record(ctx, "lorahub", [r[0] for r in shown], [[-(x + r[2]) for x in items[r[1]]] for r in shown], label,
           objective="score = -(few-shot cross-entropy + l1 * mean|w|), per example", evaluated=len(steps))
