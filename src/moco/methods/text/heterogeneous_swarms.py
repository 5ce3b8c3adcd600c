"""text_heterogeneous_swarms: Heterogeneous Swarms (Feng et al. 2025) — a DAG of models whose roles (the
graph) and weights are optimised in alternation by particle swarm optimisation on the dev set.

Role-step: a swarm of continuous N x N adjacency matrices (`population` particles; as the authors start it,
entries uniform in [0, 1) and velocities towards a random other particle), each decoded to a DAG (G-decode,
`swarm_graphs.decode`); every graph is run with the models' current weights, scored on dev, and
the swarm moves (`moco.search.ParticleSwarm`).
Weight-step: the n models are themselves particles in weight space — as in `weight_model_swarms`, coefficient
vectors over the experts (LoRA factors mixed separately by default, the authors' space), each merged in
memory. A particle's fitness is its JFK-score on the role-step's best graph of that iteration (Algorithm 2):
the models are assigned at random, with replacement, to the graph's positions `jfk_assignments` times (paper:
M = 10), each assignment is run on dev, and a model's score is sum_j cnt_ij f(X_j) / sum_j cnt_ij.
The two steps alternate — role, weight, role, weight, ... (the authors' code: one of each per iteration; the
next role-step runs the graphs with the moved weights) — until the best graph has not improved for `patience`
iterations or `max_iterations` is reached. Every system evaluated on dev (a graph and the model playing each
node: the role-step's graphs, and the weight-step's random assignments) is a candidate; the answer is the
system with the best dev score.

The weight-step needs one architecture with weights exposed (local Hugging Face models or LoRA adapters of
one base, no role prompts, not all the same model). Otherwise (API, endpoint or scripted models, mixed
architectures, pseudo-experts that differ only by role prompt, one model listed n times: nothing to mix) it is
unavailable: one warning line says why, metrics
`swarm.weight_step` is "unavailable: <reason>", and only the role-step runs (the JFK-score of each model on
the chosen graph is still reported as credit). `weight_step: false` turns it off.

Dev selection: the whole dev set by default (`ratio` < 1: a prefix, as the reference's 0.25); dev answers
follow the shared settings (`decoding.dev_decoding`, `decoding.dev_repeats`: each item's score is the mean
over that many samples). The best dev score found is the maximum of many noisy evaluations, so the chosen
system is run on dev once more with fresh samples: `swarm.dev_score` is that re-evaluation
(`search_dev_score`: the search's maximum), and `dev_selection.heterogeneous_swarms` lists the best candidates'
dev scores with their 95% intervals and the re-evaluation's.

Defaults: 10 graph particles and 10 JFK assignments (the authors' code), at most 20 iterations with
patience 6 and restarts after 4 stale iterations (authors' script: patience 6, restart 0.67 x patience; their
code allows up to 200 iterations), G-decode with threshold 0 (the authors' code: the most likely choice at
every step; the reference samples with 0.7). The authors tune inertia, cognitive, social, repel and step
length per task by random search over grids; the defaults (0.2, 0.3, 0.4, 0.05, 0.5) are one point of those
grids. Still differs from the authors' code: the end node is drawn from softmax(-out-degree) (theirs:
softmax(1/out-degree), which is not monotone once PSO makes entries negative), and a restarted particle
returns to its personal best (theirs keeps its position; both zero its velocity and move on). Fixed reference
bugs: decoding mutated the matrix in place, was unseeded, and the test graph was re-sampled from the best
particle (so it could differ from the graph scored on dev).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from moco.context import Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import warn
from moco.methods.text.swarm_graphs import Graph, System, decode, run_systems, top_p_choice
from moco.models.pool import ModelHandle
from moco.search import ParticleSwarm, SwarmSettings
from moco.selection import dev_repeats, dev_sampling, record
from moco.tasks.base import Example

__all__ = ["Graph", "decode", "top_p_choice", "jfk_scores", "run"]


class Params(MethodParams):
    population: int = Field(10, ge=2, le=256, description="graph particles per role-step (authors' code: 10)")
    max_iterations: int = Field(20, ge=1, le=1000, description="role-step + weight-step rounds (stops earlier when "
                                "the best graph stalls for `patience` rounds; the authors' code allows 200)")
    dev_ratio: float = Field(1.0, gt=0.0, le=1.0, alias="ratio",
                             description="fraction of the dev set (a prefix) the systems are scored on (paper: the "
                             "whole dev set; reference: 0.25)")
    weight_step: bool = Field(True, description="alternate the paper's weight-step with the role-step (PSO over the "
                              "models' weights, JFK-score as fitness); unavailable, with the reason, when the pool "
                              "has no mixable weights; false: role-step only")
    jfk_assignments: int = Field(10, ge=0, le=1000, description="random model-to-position assignments of a graph "
                                 "for the JFK-score (paper: M = 10; 0 = no JFK-score, and no weight-step)")
    lora_space: Literal["factors", "product"] = Field(
        "factors", description="LoRA experts in the weight-step: factors = A and B mixed separately (the authors' "
        "space); product = the weighted sum of the experts' full weights")
    graph_top_p: float = Field(0.0, ge=0.0, le=1.0, description="top-p threshold of G-decode's choices (0: the "
                               "most likely choice, the authors' code; the reference samples with 0.7)")
    starting_velocity_mode: Literal["random", "zero"] = Field(
        "random", description="random: each particle's velocity points at a random other particle (authors' script)")
    weight_randomness: bool = Field(True, description="draw the four term weights from U(0,1) every step (authors')")
    inertia: float = Field(0.2, ge=0.0, description="authors' grid: 0.1, 0.2, 0.3")
    cognitive_coeff: float = Field(0.3, ge=0.0, description="authors' grid: 0.1 to 0.5")
    social_coeff: float = Field(0.4, ge=0.0, description="authors' grid: 0.2 to 0.6")
    repel_coeff: float = Field(0.05, ge=0.0, description="authors' grid: 0.01, 0.05, 0.1")
    repel_term: bool = Field(True, description="push away from the swarm's worst (authors' script: on)")
    step_length: float = Field(0.5, gt=0.0, description="authors' grid: 0.5 to 1.0")
    step_length_factor: float = Field(0.95, gt=0.0, le=1.0, description="step decay per round (authors' script)")
    minimum_step_length: float = Field(0.1, ge=0.0, description="authors' code: 0.1")
    patience: int = Field(6, ge=1, description="stop when the best graph has not improved for this many rounds "
                          "(authors' script: 6)")
    restart_patience: int = Field(4, ge=1, description="restart a particle after this many stale rounds (authors' "
                                  "script: 0.67 x patience)")


class DevEvaluator:
    """Per-item dev scores of systems (greedy, or the mean of `dev_repeats` samples per item), and every
    system evaluated so far as a selection candidate (its first evaluation)."""

    def __init__(self, ctx: RunContext, dev: list[Example]):
        self.ctx, self.dev = ctx, dev
        self.sampling, self.reps = dev_sampling(ctx), dev_repeats(ctx)
        self.candidates: dict[tuple, dict[str, Any]] = {}
        self.best: tuple | None = None

    async def __call__(self, systems: Sequence[System], tag: str, fresh: bool = False,
                 labels: Sequence[str] | None = None) -> list[list[float]]:
        """Item scores of each system. `fresh`: new samples (replicas never used by the search)."""
        replicas = range(self.reps, 2 * self.reps) if fresh else range(self.reps)
        runs = await run_systems(self.ctx, systems, self.dev, tag, replicas, self.sampling)
        ends = [runs[si][ri][j][s.graph.end] for si, s in enumerate(systems) for ri in range(self.reps)
                for j in range(len(self.dev))]
        scored = await self.ctx.score(self.dev * (len(systems) * self.reps), [r.text for r in ends])
        flat = [0.0 if r.failed else x.score for x, r in zip(scored, ends)]
        n, per = len(self.dev), self.reps * len(self.dev)
        items = [[sum(flat[si * per + ri * n + j] for ri in range(self.reps)) / self.reps for j in range(n)]
                 for si in range(len(systems))]
        if not fresh and labels is not None:
            for s, it, label in zip(systems, items, labels):
                self._consider(s, it, label)
        return items

    def _consider(self, system: System, items: list[float], label: str) -> None:
        if system.key in self.candidates:
            return
        mean = sum(items) / len(items)
        self.candidates[system.key] = {"system": system, "items": items, "mean": mean, "label": label}
        if self.best is None or mean > self.candidates[self.best]["mean"]:  # ties: the first reached
            self.best = system.key

    @property
    def best_score(self) -> float:
        return self.candidates[self.best]["mean"] if self.best is not None else float("-inf")


async def jfk_scores(ctx: RunContext, graph: Graph, models: Sequence[ModelHandle], assignments: int,
               rng: np.random.Generator, evaluate: DevEvaluator, tag: str = "jfk",
               candidates: bool = False) -> dict[str, Any]:
    """The paper's JFK-score: `models` assigned at random, with replacement, to the graph's positions
    `assignments` times; a model's score = sum_j cnt_ij f(X_j) / sum_j cnt_ij (None: never took part).
    `candidates`: the assignments are also selection candidates (the weight-step's, as the authors' code)."""
    rows = [[int(x) for x in rng.integers(0, len(models), size=graph.n)] for _ in range(assignments)]
    systems = [System(graph, tuple(models[m] for m in row)) for row in rows]
    labels = [f"{tag} assignment {j + 1}" for j in range(len(rows))] if candidates else None
    utility = [sum(i) / len(i) for i in await evaluate(systems, tag, labels=labels)]
    cnt = np.array([[row.count(i) for row in rows] for i in range(len(models))], dtype=float)  # [model][assignment]
    score = [float(cnt[i] @ utility / cnt[i].sum()) if cnt[i].sum() else None for i in range(len(models))]
    return {"scores": score, "assignments": rows, "utilities": utility}


def weight_pool_problem(ctx: RunContext) -> str | None:
    """Why the weight-step cannot run on this pool (None when it can). Decided from the specs, without loading a
    model (a pool of LoRA experts then loads only their base, in the weight-step)."""
    from moco.models import compat

    for h in ctx.models:
        if h.role_prompt:
            return f"model '{h.name}' has a role prompt, which merged weights cannot keep"
    if len({(h.spec.model, h.spec.adapter, h.spec.revision) for h in ctx.models}) == 1:
        return f"every model is {ctx.models[0].spec.model}: the same weights, nothing to mix"
    for h in ctx.models:
        caps = ctx.local(h).capabilities
        if not caps.weights:
            return f"model '{h.name}' ({h.spec.kind}) exposes no weights"
    try:
        compat.check_same_architecture(compat.entries_for(ctx.models, {h.spec.model: ctx.local(h).preloaded for h in ctx.models
                                                                if ctx.local(h).preloaded is not None}), "text_heterogeneous_swarms")
    except ConfigError as e:
        return str(e)
    return None


class WeightParticles:
    """The models as particles in weight space, with Model Swarms' machinery: coefficient vectors over the
    experts (particle i starts as expert i, moving towards a random other expert), merged in memory."""

    def __init__(self, ctx: RunContext, params: Params):
        from moco.merging.search import DevSearch
        from moco.methods.weight._common import experts
        from moco.methods.weight.model_swarms import candidate_recipe, start_velocities

        ex = experts(ctx, prefer_lora=True)
        n = len(ex.sources)
        self.names = [h.name for h in ctx.models]
        self.recipe = candidate_recipe(ex, params.lora_space)
        self.search = DevSearch(ctx, ex.template, "hswarm")
        # the graph swarm decides when to stop (authors' code: "graph-level is the main level")
        settings = _swarm_settings(params, ctx.seed + 1, patience=10 ** 6, starting_velocity="zero",
                                   restart_velocity="zero", restart_moves=True)
        self.swarm = ParticleSwarm(np.eye(n), settings)
        self.swarm.velocities = start_velocities(n, params.starting_velocity_mode, ctx.seed + 1)
        self.coefficients: dict[str, dict[str, float]] = {}  # handle name -> its coefficients over the experts

    def handles(self, positions: np.ndarray | None = None) -> list[ModelHandle]:
        out = []
        for x in self.swarm.positions if positions is None else positions:
            c = [float(v) for v in x]
            h = self.search.handle(self.recipe(c))
            self.coefficients[h.name] = dict(zip(self.names, c))
            out.append(h)
        return out


def _swarm_settings(params: Params, seed: int, **overrides: Any) -> SwarmSettings:
    values = dict(inertia=params.inertia, cognitive=params.cognitive_coeff, social=params.social_coeff,
                  repel=params.repel_coeff, repel_term=params.repel_term, weight_randomness=params.weight_randomness,
                  step_length=params.step_length, step_length_factor=params.step_length_factor,
                  minimum_step_length=params.minimum_step_length, patience=params.patience,
                  restart_patience=params.restart_patience, starting_velocity=params.starting_velocity_mode, seed=seed)
    return SwarmSettings(**{**values, **overrides})


def graph_swarm(params: Params, n: int, seed: int) -> ParticleSwarm:
    """The role-step's swarm as the authors run it: adjacency entries uniform in [0, 1) (the diagonal is never
    read), each particle's velocity pointing at a random other particle (`starting_velocity_mode: random`); a
    restarted particle's velocity is zeroed and it still takes that round's step."""
    rng = np.random.default_rng([seed, 15485863])
    swarm = ParticleSwarm(rng.uniform(0.0, 1.0, (params.population, n * n)),
                          _swarm_settings(params, seed, starting_velocity="zero", restart_velocity="zero",
                                          restart_moves=True))
    if params.starting_velocity_mode == "random":
        for i in range(params.population):
            j = int(rng.choice([k for k in range(params.population) if k != i]))
            swarm.velocities[i] = swarm.positions[j] - swarm.positions[i]
    return swarm


def _unavailable(ctx: RunContext, params: Params) -> str | None:
    """Why no weight-step runs (None: it runs), said once on the console and in metrics when it was asked for."""
    if not params.weight_step:
        return "off (weight_step: false)"
    problem = weight_pool_problem(ctx) or (None if params.jfk_assignments else
                                           "jfk_assignments: 0 (no JFK-score to use as fitness)")
    if problem is None:
        return None
    warn(ctx, f"text_heterogeneous_swarms: weight-step unavailable ({problem}); only the roles (graph) are optimised")
    return f"unavailable: {problem}"


async def role_step(ctx: RunContext, params: Params, graphs: ParticleSwarm, players: list[ModelHandle],
              evaluate: DevEvaluator, it: int) -> tuple[list[Graph], list[float], dict[str, Any]]:
    """Decode every graph particle, run each graph with the current players on dev: graphs, scores, a log."""
    n, names = len(players), [m.name for m in ctx.models]
    positions = graphs.positions.round(4).tolist()
    decoded = [decode(graphs.positions[p], n, params.graph_top_p, np.random.default_rng([ctx.seed, it, p]))
               for p in range(params.population)]
    items = await evaluate([System(g, tuple(players)) for g in decoded], f"role {it}",
                     labels=[f"role {it} particle {p + 1}" for p in range(params.population)])
    scores = [sum(i) / len(i) for i in items]
    return decoded, scores, {"step": "role", "iteration": it, "scores": scores,
                             "graphs": [g.describe(names) for g in decoded], "models": [p.name for p in players],
                             "best_score": evaluate.best_score, "positions": positions}


async def weight_step(ctx: RunContext, params: Params, weights: WeightParticles, graph: Graph, players: list[ModelHandle],
                evaluate: DevEvaluator, rng: np.random.Generator, it: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each weight particle's fitness is its JFK-score on `graph` (the role-step's best); the swarm moves."""
    jfk = await jfk_scores(ctx, graph, players, params.jfk_assignments, rng, evaluate, tag=f"weight {it} jfk",
                     candidates=True)
    worst = min(jfk["utilities"])  # a particle never drawn gets the round's worst utility
    fitness = [s if s is not None else worst for s in jfk["scores"]]
    log = {"step": "weight", "iteration": it, "graph": graph.describe([m.name for m in ctx.models]),
           "models": [p.name for p in players], "jfk": jfk["scores"], "fitness": fitness,
           "utilities": jfk["utilities"], "assignments": [[players[m].name for m in row] for row in jfk["assignments"]],
           "coefficients": [weights.coefficients[p.name] for p in players], "best_score": evaluate.best_score}
    weights.swarm.update(fitness)
    return jfk, log


def _record_selection(ctx: RunContext, evaluate: DevEvaluator, fresh: list[float], top: int = 10) -> None:
    from moco.scoring.stats import mean_ci

    ranked = sorted(evaluate.candidates, key=lambda k: -evaluate.candidates[k]["mean"])[:top]
    shown = ranked + ([evaluate.best] if evaluate.best not in ranked else [])
    cands = [evaluate.candidates[k] for k in shown]
    rec = record(ctx, "heterogeneous_swarms", [c["label"] for c in cands], [c["items"] for c in cands],
                 evaluate.candidates[evaluate.best]["label"], evaluated=len(evaluate.candidates))
    iv = mean_ci(fresh, seed=ctx.seed)
    rec["reevaluated"] = {"dev_score": round(sum(fresh) / len(fresh), 6), "ci95": iv.as_list(), "items": len(fresh),
                          **({} if iv.ok else {"ci_note": iv.note})}


@method("text_heterogeneous_swarms", params=Params, level="text", aliases=("heterogeneous_swarms", "hswarms"),
        min_models=2, paper="Feng et al. 2025, Heterogeneous Swarms: jointly optimizing model roles and weights "
        "for multi-LLM systems",
        summary="Models as nodes of a DAG, outputs flowing along its edges; role-step (the graph, by PSO on dev) "
                "and weight-step (the models' weights, by PSO on their JFK-scores) alternate; 10 particles")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, n = ctx.models, len(ctx.models)
    names = [m.name for m in models]
    if not ctx.task.dev:
        raise ValueError(f"task {ctx.task.name} has no dev split; the graph search needs one")
    dev = ctx.task.dev[:max(1, int(len(ctx.task.dev) * params.dev_ratio))]
    unavailable = _unavailable(ctx, params)
    graphs = graph_swarm(params, n, ctx.seed)
    evaluate = DevEvaluator(ctx, dev)
    jfk_rng = np.random.default_rng([ctx.seed, 7919])
    steps: list[dict[str, Any]] = []
    jfk = None
    with ctx.phase("dev"):
        weights = WeightParticles(ctx, params) if unavailable is None else None
        players = weights.handles() if weights else list(models)
        for it in range(1, params.max_iterations + 1):
            decoded, scores, record_ = await role_step(ctx, params, graphs, players, evaluate, it)
            steps.append(record_)
            go_on = graphs.update(scores)
            if weights is not None:
                jfk, record_ = await weight_step(ctx, params, weights, decoded[int(np.argmax(scores))], players,
                                           evaluate, jfk_rng, it)
                steps.append(record_)
                players = weights.handles()
            if not go_on:
                break
        chosen: System = evaluate.candidates[evaluate.best]["system"]
        if weights is None and params.jfk_assignments:  # credit only: the chosen graph, the pool's models
            jfk = await jfk_scores(ctx, chosen.graph, models, params.jfk_assignments, jfk_rng, evaluate, tag="jfk")
        # the search's best is the maximum of many noisy evaluations: run the chosen system on dev once more
        fresh = (await evaluate([chosen], "re-evaluate", fresh=True))[0]
        _record_selection(ctx, evaluate, fresh)
    with ctx.phase("test"):
        runs = (await run_systems(ctx, [chosen], ctx.task.test, tag="test"))[0][0]
    best, node_players = chosen.graph, chosen.players
    graph = best.describe(names)
    rounds = max(s["iteration"] for s in steps)
    ctx.metrics["swarm"] = {
        "graph": graph, "levels": [[names[v] for v in lv] for lv in best.levels()],
        "chosen": evaluate.candidates[evaluate.best]["label"],
        "dev_score": sum(fresh) / len(fresh), "search_dev_score": evaluate.best_score, "dev_examples": len(dev),
        "dev_repeats": evaluate.reps, "candidates": len(evaluate.candidates),
        "weight_step": unavailable if weights is None else {
            "rounds": rounds, "lora_space": params.lora_space,
            "node_coefficients": {names[v]: weights.coefficients[p.name] for v, p in enumerate(node_players)}},
        "node_models": {names[v]: p.name for v, p in enumerate(node_players)},
        "order": [f"{s['step']} {s['iteration']}" for s in steps],
        "jfk": None if jfk is None else {
            "on": "the last weight-step's graph (particle i started as model i)" if weights else "the chosen graph",
            "scores": dict(zip(names, jfk["scores"])), "utilities": jfk["utilities"],
            "assignments": [[names[m] for m in row] for row in jfk["assignments"]]},
        "iterations": rounds, "restarts": [list(r) for r in graphs.restarts], "trajectory": steps}
    outputs = []
    for j in range(len(ctx.task.test)):
        nodes = {names[v]: {"output": runs[j][v].text, "saw": [names[p] for p in best.predecessors(v)],
                            "model": node_players[v].name} for v in range(n)}
        final = runs[j][best.end]
        outputs.append(Output(final.text, failed=final.failed, trace={"graph": graph, "nodes": nodes}))
    return outputs
