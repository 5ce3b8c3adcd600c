"""weight_dare_ties: DARE random drop + TIES sign consensus relative to a base model (MoCo method #23).

Each expert's task vector τ_i = θ_i − θ_base is sparsified by DARE (Yu et al. 2024): every entry is kept with
probability `density` (seeded per run, parameter and model) and the survivors are rescaled by 1/density. TIES
(Yadav et al. 2023) then elects one sign per entry from the weighted mass Σ w_i τ_i and merges only the
entries that agree with it (their weighted mean when `normalize`): θ = θ_base + λ·merge.
Weights are uniform, or searched on dev with a particle swarm over softmax(position) (the reference's
"optimized" mode), each candidate merged in memory.

Fixes the reference, whose merge config never set the density, so nothing was dropped (DARE was a no-op).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from moco.config import ModelSpec
from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.merging import Node, TaskArithmetic
from moco.merging.search import DevSearch
from moco.methods.registry import method
from moco.methods.weight._common import PSOParams, base_spec, check_weight_pool, experts, lora_pool, source_of
from moco.models import compat
from moco.models.base import Capabilities
from moco.models.compat import base_identity
from moco.models.pool import check_spec
from moco.search import ParticleSwarm


class Params(PSOParams):
    base_model: str = Field(alias="base_model_name", description=(
        "required: the model the task vectors are taken from (a pool model's name, an embedded model, a folder "
        "or a Hub id); for a zoo of LoRA adapters, their base (e.g. smollm2-135m-instruct)"))
    density: float = Field(0.5, gt=0, le=1, description=(
        "DARE keep probability (Yu et al. keep 0.1-0.5 of SFT deltas; the reference never set it: 1.0, no drop)"))
    weights: Literal["uniform", "search"] = Field("uniform", description="uniform 1/n, or a PSO search on dev")
    normalize: bool = Field(True, description="TIES disjoint mean over agreeing models (else their weighted sum)")
    scale: float = Field(1.0, description="λ: multiplies the merged task vector")
    population: int = Field(5, ge=2, description="search: particles (weight vectors) per iteration")
    max_iterations: int = Field(5, ge=1, description="search: at most this many swarm updates")

    reference_keys = {"mode": ("weights", lambda v: {"average": "uniform", "optimized": "search"}.get(v, v))}


def _base_is_pool_model(params: Params, pool) -> int | None:
    return next((h.index for h in pool.handles if h.name == params.base_model), None)


def _validate(params: Params, pool) -> list[str]:
    check_weight_pool(params, pool)
    idx = _base_is_pool_model(params, pool)
    if idx is not None:
        if len(pool.handles) < 3:
            raise ConfigError("weight_dare_ties: with the base inside the pool, at least two other models are needed")
        return [f"base model: pool model '{params.base_model}' (not merged into itself)"]
    spec = ModelSpec(model=params.base_model)
    check_spec(spec)
    entries = compat.entries_for(pool.handles[:1], pool.overrides) + [compat._Entry("base_model", spec)]
    return ["base model " + compat.check_same_architecture(entries, "weight_dare_ties")]


def softmax(x: np.ndarray) -> list[float]:
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


@method("weight_dare_ties", params=Params, level="weight", aliases=("dare_ties",), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=_validate,
        paper="Yu et al. 2024 (DARE); Yadav et al. 2023 (TIES); MoCo method #23",
        summary="DARE drop-and-rescale + TIES sign consensus of task vectors vs a base; weights uniform or PSO-searched")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    base_idx = next((h.index for h in ctx.models if h.name == params.base_model), None)
    lora_base = (lora_pool(ctx.models) and base_idx is None
                 and base_identity(ModelSpec(model=params.base_model)) == base_identity(base_spec(ctx.models[0].spec)))
    ex = experts(ctx, prefer_lora=lora_base)
    if base_idx is not None:
        base: Node = ex.sources[base_idx]
    elif lora_base and ex.base is not None:
        base = ex.base
    else:
        base = source_of(ctx, ctx.add_model("dare_ties_base", base_spec(ctx.models[0].spec, params.base_model)))
    members = [i for i in range(len(ctx.models)) if i != base_idx]
    children = [ex.sources[i] for i in members]

    def recipe(w: list[float]) -> TaskArithmetic:
        return TaskArithmetic(children, base, w, sparsify="dare", density=params.density, consensus="sign",
                              normalize=params.normalize, scale=params.scale, seed=ctx.seed)

    search = DevSearch(ctx, ex.template, "dare_ties")
    n = len(children)
    info: dict = {"base": base.summary(), "members": [ctx.models[i].name for i in members], "density": params.density}
    if params.weights == "uniform":
        weights = [1.0 / n] * n
    else:
        swarm = ParticleSwarm.random(params.population, n, params.swarm_settings(ctx.seed))
        for it in range(params.max_iterations):
            fitness = [await search.score(recipe(softmax(x)), iteration=it, particle=p) for p, x in enumerate(swarm.positions)]
            if not swarm.update(fitness):
                break
        weights = softmax(swarm.gbest)
        info.update(iterations=swarm.iteration, best_dev=swarm.gbest_score, history=swarm.history)
    info["weights"] = dict(zip(info["members"], weights))
    ctx.metrics["dare_ties"] = info
    return await search.finish(recipe(weights), trace={"weights": info["weights"]})
