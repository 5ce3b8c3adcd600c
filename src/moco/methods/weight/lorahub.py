"""weight_lorahub: LoraHub (Huang et al. 2024; MoCo method #25) — gradient-free search of LoRA mixing weights.

Every model is a LoRA adapter on one base. A candidate weight vector w composes them as in the paper,
    A = Σ w_i A_i,  B = Σ w_i B_i,  θ = θ_base + s·B·A          (compose: factors; `delta` uses Σ w_i·s·B_i·A_i)
is merged in memory into one resident model and scored on the first `dev_samples` dev examples; nevergrad
(NGOpt by default) minimises (1 − dev score) + l1·mean|w| over w ∈ [−bound, bound]^n from w = 0 for `budget`
evaluations. The best evaluated w is used on test. Prompts go through the chat template like every other
method (the reference sends raw prompts here) and generation uses the run's settings.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError, did_you_mean
from moco.merging import LoraAdapter, LoraMix, Source
from moco.merging.search import DevSearch
from moco.methods.registry import MethodParams, method
from moco.methods.weight._common import base_spec, check_weight_pool, lora_pool
from moco.models.base import Capabilities


class Params(MethodParams):
    dev_samples: int = Field(5, ge=1, alias="lorahub_dev_samples", description="score candidates on the first n dev examples")
    budget: int = Field(20, ge=1, alias="max_inference_step", description="candidate evaluations (nevergrad budget)")
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
        summary="Gradient-free (nevergrad) search of scalar weights composing LoRA adapters, L1-regularised dev loss")
def run(ctx: RunContext, params: Params) -> list[Output]:
    import nevergrad as ng

    handles = ctx.models
    bh = ctx.add_model(f"base:{handles[0].spec.model}", base_spec(handles[0].spec))
    backend = ctx.pool.backend(bh)
    base = Source(bh.name, ctx.pool.fingerprint(bh), backend.model.state_dict())
    adapters = [LoraAdapter.load(h.spec.adapter) for h in handles]
    names = [h.name for h in handles]
    fps = [ctx.pool.fingerprint(h) for h in handles]

    def recipe(w) -> LoraMix:
        return LoraMix(base, adapters, names, fps, [float(x) for x in w], mode=params.compose)

    search = DevSearch(ctx, backend, "lorahub", dev=ctx.dev[: params.dev_samples])
    n = len(adapters)
    space = ng.p.Array(init=np.zeros(n), lower=-params.weight_bound, upper=params.weight_bound)
    space.random_state = np.random.RandomState(ctx.seed)
    opt = ng.optimizers.registry[params.optimizer](parametrization=space, budget=params.budget)
    best_w, best_loss, steps = np.zeros(n), float("inf"), []
    for step in range(params.budget):
        cand = opt.ask()
        w = np.asarray(cand.value, dtype=float)
        score = search.score(recipe(w), step=step)
        loss = (1.0 - score) + params.l1 * float(np.mean(np.abs(w)))
        opt.tell(cand, loss)
        steps.append({"step": step, "weights": dict(zip(names, w.tolist())), "dev_score": score, "loss": loss})
        if loss < best_loss:
            best_w, best_loss = w, loss
    ctx.extra_metrics["lorahub"] = {"optimizer": params.optimizer, "compose": params.compose,
                                    "weights": dict(zip(names, best_w.tolist())), "loss": best_loss, "steps": steps}
    return search.finish(recipe(best_w), trace={"weights": dict(zip(names, best_w.tolist()))})
