"""weight_model_swarms: Model Swarms (Feng et al. 2024; MoCo method #24) — particle swarm search in weight space.

Each expert starts as a particle x_i with velocity x_j − x_i towards a random other expert j. Each iteration
every particle is merged in memory and scored on dev (its fitness), then moves:
    v ← w·v + c·(p_i − x_i) + s·(g − x_i) + b·(x_i − g_worst),   x ← x + step·v
(four term weights drawn from U(0,1) and normalised to sum 1; p_i its best, g the swarm's best, g_worst its worst),
the step decays, a particle that stops improving restarts at its best with zero velocity (and still takes that
step's update, as in the authors' code), and the search stops when the global best stalls. The answer is the global best.

Every position is an affine combination of the experts (starting positions are experts, velocities are
differences of positions), so particles are kept as coefficient vectors c over the experts and a candidate is
merged from c one tensor at a time into a single resident model: exactly the weight-space swarm, with the
memory of one model plus the experts. Over LoRA adapters of one base the search space is, by default, the
authors' (`lora_space: factors`): the particle is the adapter's A and B tensors, mixed separately,
A = Σ c_k A_k and B = Σ c_k B_k, θ = θ_base + s·B·A (the authors' code swarms over adapter files). The product
space (`lora_space: product`: θ = θ_base + s·Σ c_k B_k·A_k, the weighted sum of the experts' full weights) is
kept as an option; the two are different searches (cross terms B_i·A_j appear in the factors space). No
renormalisation of velocities (the reference merged them with mergekit's normalising `linear`).

Hyperparameter defaults are those of the authors' released code (`search.py` of Model Swarms: inertia 0.4,
cognitive 0.3, social 0.3, repel 0.3, step length 1, decay 0.95 to at least 0.1, patience 10, restart after
0.5 × patience = 5 stale iterations, at most 200 iterations), not the MoCo reference's (inertia 0.2, cognitive
0.3, social 0.4, repel 0.05, step 0.5, patience 5, restart 3, 10 iterations), which earlier versions of this
docstring attributed to the paper. The search stops early when the global best stalls for `patience` steps.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.merging import Linear, LoraMix, LoraSource, Node
from moco.merging.search import DevSearch
from moco.methods.registry import method
from moco.methods.weight._common import Experts, PSOParams, check_weight_pool, experts
from moco.models.base import Capabilities
from moco.search import ParticleSwarm


class Params(PSOParams):
    inertia: float = Field(0.4, ge=0, description="weight of the particle's previous velocity (authors' code 0.4)")
    cognitive: float = Field(0.3, ge=0, alias="cognitive_coefficient", description="pull towards the particle's "
                             "best (authors' code 0.3)")
    social: float = Field(0.3, ge=0, alias="social_coefficient", description="pull towards the swarm's best "
                          "(authors' code 0.3)")
    repel: float = Field(0.3, ge=0, alias="repel_coefficient", description="push away from the swarm's worst "
                         "(authors' code 0.3)")
    step_length: float = Field(1.0, gt=0, description="initial step length (authors' code 1)")
    patience: int = Field(10, ge=1, description="stop when the global best has not improved for this many "
                          "iterations (authors' code 10)")
    restart_patience: int = Field(5, ge=1, description="restart a particle at its best after this many stale "
                                  "iterations (authors' code: 0.5 x patience)")
    max_iterations: int = Field(200, ge=1, description="at most this many swarm updates (authors' code 200; "
                                "patience usually stops it far earlier)")
    starting_velocity: Literal["random", "zero"] = Field(
        "random", alias="starting_velocity_mode", description="random: towards a random other expert (x_j − x_i); zero")
    lora_space: Literal["factors", "product"] = Field(
        "factors", description="LoRA experts: factors = A and B mixed separately (the authors' search space); "
        "product = Σ c·B·A, the weighted sum of the experts' full weights")


def start_velocities(n: int, mode: str, seed: int) -> np.ndarray:
    """Coefficient velocities: e_j − e_i for a random other expert j (or zero)."""
    v = np.zeros((n, n))
    if mode == "random":
        rng = np.random.default_rng(seed)
        for i in range(n):
            j = int(rng.choice([k for k in range(n) if k != i]))
            v[i, j], v[i, i] = 1.0, -1.0
    return v


def candidate_recipe(ex: Experts, lora_space: str) -> Callable[[list[float]], Node]:
    """Coefficients over the experts -> the merge recipe of that particle: LoRA factors mixed separately
    (the authors' space), or the weighted sum of the experts' weights (full models, or `product`)."""
    if ex.base is None or lora_space == "product":
        return lambda c: Linear(ex.sources, c)
    srcs = [s for s in ex.sources if isinstance(s, LoraSource)]
    adapters = [s.adapter for s in srcs]
    if len({(a.r, a.scaling, a.fan_in_fan_out, tuple(sorted(a.factors))) for a in adapters}) != 1:
        raise ConfigError("weight_model_swarms: mixing LoRA factors (lora_space: factors) needs adapters of one "
                          "rank, alpha and set of target modules; use lora_space: product")
    names, fps = [s.name for s in srcs], [s.fingerprint for s in srcs]
    return lambda c: LoraMix(ex.base, adapters, names, fps, c, mode="factors")


@method("weight_model_swarms", params=Params, level="weight", aliases=("model_swarms", "swarms"), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=check_weight_pool,
        paper="Feng et al. 2024 (Model Swarms); MoCo method #24",
        summary="Particle swarm over the experts' weights (or LoRA adapters), dev score as fitness; output = global best")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    ex = experts(ctx, prefer_lora=True)
    n = len(ex.sources)
    names = [h.name for h in ctx.models]
    settings = params.swarm_settings(ctx.seed, starting_velocity="zero", restart_velocity="zero", restart_moves=True)
    swarm = ParticleSwarm(np.eye(n), settings)
    swarm.velocities = start_velocities(n, params.starting_velocity, ctx.seed)
    search = DevSearch(ctx, ex.template, "swarm")
    recipe = candidate_recipe(ex, params.lora_space)
    iterations = []
    for it in range(params.max_iterations):
        fitness = [await search.score(recipe(list(x)), iteration=it, particle=p)
                   for p, x in enumerate(swarm.positions)]
        iterations.append({"iteration": it, "fitness": fitness,
                           "positions": [dict(zip(names, map(float, x))) for x in swarm.positions]})
        if not swarm.update(fitness):
            break
    best = [float(c) for c in swarm.gbest]
    ctx.metrics["swarm"] = {"experts": names, "lora": ex.base is not None,
                                  "space": params.lora_space if ex.base is not None else "weights",
                                  "global_best": dict(zip(names, best)),
                                  "global_best_dev": swarm.gbest_score, "history": swarm.history,
                                  "restarts": swarm.restarts, "iterations": iterations}
    return await search.finish(recipe(best), trace={"coefficients": dict(zip(names, best))})
