"""weight_model_swarms: Model Swarms (Feng et al. 2024; MoCo method #24) — particle swarm search in weight space.

Each expert starts as a particle x_i with velocity x_j − x_i towards a random other expert j. Each iteration
every particle is merged in memory and scored on dev (its fitness), then moves:
    v ← w·v + c·(p_i − x_i) + s·(g − x_i) + b·(x_i − g_worst),   x ← x + step·v
(four term weights drawn from U(0,1) and normalised to sum 1; p_i its best, g the swarm's best, g_worst its worst),
the step decays, a particle that stops improving restarts at its best with zero velocity (and still takes that
step's update, as in the authors' code), and the search stops when the global best stalls. The answer is the global best.

Every position is an affine combination of the experts (starting positions are experts, velocities are
differences of positions), so particles are kept as coefficient vectors c over the experts and a candidate is
Σ c_k θ_k merged one tensor at a time into a single resident model: exactly the weight-space swarm, with the
memory of one model plus the experts. Over LoRA adapters of one base, θ_k = θ_base + s·B_k·A_k (the product:
mixing A and B separately, as the reference's fast path does, is not a weighted sum of the experts). No
renormalisation of velocities (the reference merged them with mergekit's normalising `linear`).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from moco.context import Output, RunContext
from moco.merging import Linear
from moco.merging.search import DevSearch
from moco.methods.registry import method
from moco.methods.weight._common import PSOParams, check_weight_pool, experts
from moco.models.base import Capabilities
from moco.search import ParticleSwarm


class Params(PSOParams):
    starting_velocity: Literal["random", "zero"] = Field(
        "random", alias="starting_velocity_mode", description="random: towards a random other expert (x_j − x_i); zero")


def start_velocities(n: int, mode: str, seed: int) -> np.ndarray:
    """Coefficient velocities: e_j − e_i for a random other expert j (or zero)."""
    v = np.zeros((n, n))
    if mode == "random":
        rng = np.random.default_rng(seed)
        for i in range(n):
            j = int(rng.choice([k for k in range(n) if k != i]))
            v[i, j], v[i, i] = 1.0, -1.0
    return v


@method("weight_model_swarms", params=Params, level="weight", aliases=("model_swarms", "swarms"), min_models=2,
        needs=Capabilities(weights=True), same_architecture=True, validate=check_weight_pool,
        paper="Feng et al. 2024 (Model Swarms); MoCo method #24",
        summary="Particle swarm over the experts' weights (or LoRA adapters), dev score as fitness; output = global best")
def run(ctx: RunContext, params: Params) -> list[Output]:
    ex = experts(ctx, prefer_lora=True)
    n = len(ex.sources)
    names = [h.name for h in ctx.models]
    settings = params.swarm_settings(ctx.seed, starting_velocity="zero", restart_velocity="zero", restart_moves=True)
    swarm = ParticleSwarm(np.eye(n), settings)
    swarm.velocities = start_velocities(n, params.starting_velocity, ctx.seed)
    search = DevSearch(ctx, ex.template, "swarm")
    iterations = []
    for it in range(params.max_iterations):
        fitness = [search.score(Linear(ex.sources, list(x)), iteration=it, particle=p)
                   for p, x in enumerate(swarm.positions)]
        iterations.append({"iteration": it, "fitness": fitness,
                           "positions": [dict(zip(names, map(float, x))) for x in swarm.positions]})
        if not swarm.update(fitness):
            break
    best = [float(c) for c in swarm.gbest]
    ctx.extra_metrics["swarm"] = {"experts": names, "lora": ex.base is not None, "global_best": dict(zip(names, best)),
                                  "global_best_dev": swarm.gbest_score, "history": swarm.history,
                                  "restarts": swarm.restarts, "iterations": iterations}
    return search.finish(Linear(ex.sources, best), trace={"coefficients": dict(zip(names, best))})
