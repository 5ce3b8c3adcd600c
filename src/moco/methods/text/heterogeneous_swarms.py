"""text_heterogeneous_swarms: a DAG of models searched with particle swarm optimisation (Feng et al. 2025,
Heterogeneous Swarms): a role-step (the graph), then a weight-step (the models' weights, JFK-score as fitness).

A particle is a continuous N x N adjacency matrix. Decoding it gives a DAG (an in-tree towards one end node):
1. the end node is sampled (top-p) from a softmax over the negated out-degrees (row sums, diagonal excluded);
2. until every node is placed: a remaining node is sampled from a softmax over the out-degrees, and linked to
   one placed node sampled from a softmax over its row restricted to the placed nodes.
Running a graph: nodes in topological levels; a source answers the question, any other node answers seeing
its predecessors' outputs; the end node's output is the answer. Every level is one batched call across all
particles and all examples.

Search (dev phase): the whole dev set by default (`ratio` < 1: a prefix, as the reference's 0.25); every
iteration decodes each particle with a seeded generator, runs the graphs, scores them, and updates the swarm
(`moco.search.ParticleSwarm`). The test set is answered by the decoded graph that achieved the best dev score.
That best score is the maximum of many noisy evaluations, so the chosen graph is run on dev once more (fresh
samples) and metrics `swarm.dev_score` is that re-evaluation (`search_dev_score`: the search's maximum).

JFK-score (the paper's credit assignment, Algorithm 2): the models are assigned at random, with replacement,
to the positions of the chosen graph `jfk_assignments` times (paper: M = 10); each assignment is run on dev;
a model's JFK-score is the mean utility of the assignments it took part in, weighted by how many positions it
held: sum_j cnt_ij f(X_j) / sum_j cnt_ij (metrics `swarm.jfk`).

Weight-step (when every model exposes its weights, one architecture, no role prompts; otherwise skipped with
a one-line reason in the console and metrics `warnings`): the n models are the particles of a weight-space
swarm — kept, as in `weight_model_swarms`, as coefficient vectors over the experts, each merged in memory —
and each iteration's fitness is every particle's JFK-score on the chosen graph. Afterwards node v of the
graph is played by particle v's best weights. The paper alternates the two steps until the utility stops
improving; here one role-step is followed by one weight-step (`weight_iterations` swarm updates). Fixed reference bugs: decoding mutated the
matrix in place, was unseeded, and the test graph was re-sampled from the best particle (so it could differ
from the graph scored on dev).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from moco.context import Call, Output, Response, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import numbered, warn
from moco.models.pool import ModelHandle
from moco.search import ParticleSwarm, SwarmSettings
from moco.tasks.base import Example


class Params(MethodParams):
    population: int = Field(5, ge=2, le=256, description="particles (graphs evaluated per iteration)")
    max_iterations: int = Field(5, ge=1, le=1000, description="swarm iterations (stops early when stalled)")
    dev_ratio: float = Field(1.0, gt=0.0, le=1.0, alias="ratio",
                             description="fraction of the dev set (a prefix) the graphs are scored on (paper: the "
                             "whole dev set; reference: 0.25)")
    jfk_assignments: int = Field(10, ge=0, le=1000, description="random model-to-position assignments of the "
                                 "chosen graph for the JFK-score (paper: M = 10; 0 = skip, and no weight-step)")
    weight_step: bool = Field(True, description="the paper's weight-step: PSO over the models' weights with the "
                              "JFK-score as fitness (skipped, with the reason, when the pool has no weights)")
    weight_iterations: int = Field(5, ge=1, le=100, description="weight-step swarm updates")
    graph_top_p: float = Field(0.7, gt=0.0, le=1.0, description="top-p of the graph decoding samples")
    starting_velocity_mode: Literal["random", "zero"] = "random"
    weight_randomness: bool = True
    inertia: float = Field(0.2, ge=0.0)
    cognitive_coeff: float = Field(0.3, ge=0.0)
    social_coeff: float = Field(0.4, ge=0.0)
    repel_coeff: float = Field(0.05, ge=0.0)
    repel_term: bool = True
    step_length: float = Field(0.5, gt=0.0)
    step_length_factor: float = Field(0.95, gt=0.0, le=1.0)
    minimum_step_length: float = Field(0.1, ge=0.0)
    patience: int = Field(5, ge=1)
    restart_patience: int = Field(3, ge=1)


@dataclass(frozen=True)
class Graph:
    """An in-tree over model indices: `edges` (src, dst) means src's output is shown to dst."""

    n: int
    end: int
    edges: tuple[tuple[int, int], ...]

    def predecessors(self, node: int) -> list[int]:
        return sorted(s for s, d in self.edges if d == node)

    def levels(self) -> list[list[int]]:
        """Topological levels: a node's level is the longest path to it from a source."""
        depth: dict[int, int] = {}

        def level(v: int) -> int:
            if v not in depth:
                depth[v] = 1 + max((level(p) for p in self.predecessors(v)), default=-1)
            return depth[v]

        for v in range(self.n):
            level(v)
        return [sorted(v for v in range(self.n) if depth[v] == d) for d in range(max(depth.values()) + 1)]

    def describe(self, names: list[str]) -> dict:
        return {"end": names[self.end], "edges": [[names[s], names[d]] for s, d in self.edges]}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top_p_choice(scores: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Index sampled from softmax(scores) restricted to the smallest top set whose mass reaches `top_p`."""
    probs = _softmax(np.asarray(scores, dtype=np.float64))
    order = np.argsort(-probs, kind="stable")
    keep = min(len(order), int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1)
    top = order[:keep]
    return int(top[rng.choice(len(top), p=probs[top] / probs[top].sum())])


def decode(position: np.ndarray, n: int, top_p: float, rng: np.random.Generator) -> Graph:
    """A particle (n*n reals) to an in-tree; the particle is not modified."""
    a = np.array(position, dtype=np.float64).reshape(n, n)
    out_degree = a.sum(axis=1) - np.diag(a)
    end = top_p_choice(-out_degree, top_p, rng)
    placed, remaining, edges = [end], [v for v in range(n) if v != end], []
    while remaining:
        node = remaining[top_p_choice(out_degree[remaining], top_p, rng)]
        target = placed[top_p_choice(a[node, placed], top_p, rng)]
        edges.append((node, target))
        placed.append(node)
        remaining.remove(node)
    return Graph(n, end, tuple(sorted(edges)))


def node_prompt(question: str, previous: list[str], final: bool) -> str:
    if not previous:
        return question
    tail = " Make sure your response ends with a final answer in the format the question asks for." if final else ""
    return ("Answer the question below. Responses from other assistants are shown; use them if they help, but "
            f"they may be wrong or unhelpful, so feel free to ignore them.{tail}\n\n"
            f"{numbered(previous, 'Previous response')}\n\nQuestion:\n{question}")


def run_graphs(ctx: RunContext, graphs: list[Graph], examples: list[Example], tag: str,
               players: list[list[ModelHandle]] | None = None, replica: int = 0) -> list[list[dict[int, Response]]]:
    """Run every graph on every example: out[graph][example][node]. Node v of graph g is played by model
    players[g][v] (default: pool model v). One batched call per topological level, across all graphs and
    examples (identical calls share one generation)."""
    who = players or [list(ctx.models) for _ in graphs]
    out: list[list[dict[int, Response]]] = [[{} for _ in examples] for _ in graphs]
    levels = [g.levels() for g in graphs]
    for depth in range(max(len(lv) for lv in levels)):
        todo = [(gi, v, j) for gi, lv in enumerate(levels) if depth < len(lv) for v in lv[depth] for j in range(len(examples))]
        calls = [Call(who[gi][v], node_prompt(examples[j].prompt,
                                                      [out[gi][j][p].text for p in graphs[gi].predecessors(v)
                                                       if not out[gi][j][p].failed], v == graphs[gi].end),
                      replica=replica) for gi, v, j in todo]
        for (gi, v, j), r in zip(todo, ctx.generate(calls, tag=f"{tag} level {depth}")):
            out[gi][j][v] = r
    return out


def graph_scores(ctx: RunContext, graphs: list[Graph], examples: list[Example], tag: str,
                 players: list[list[ModelHandle]] | None = None, replica: int = 0) -> list[float]:
    """Mean dev score of each graph's end-node outputs (one batched scoring for all graphs)."""
    runs = run_graphs(ctx, graphs, examples, tag, players, replica)
    flat = ctx.score_many([ex for _ in graphs for ex in examples],
                          [runs[gi][j][g.end].text for gi, g in enumerate(graphs) for j in range(len(examples))])
    m = len(examples)
    return [float(np.mean([s.score for s in flat[gi * m:(gi + 1) * m]])) for gi in range(len(graphs))]


def jfk_scores(ctx: RunContext, graph: Graph, examples: list[Example], assignments: int,
               rng: np.random.Generator, models: list[ModelHandle] | None = None, tag: str = "jfk") -> dict:
    """The paper's JFK-score: `models` (default: the pool) assigned at random, with replacement, to the graph's
    positions `assignments` times; a model's score = sum_j cnt_ij f(X_j) / sum_j cnt_ij (None: never took part)."""
    models = list(models or ctx.models)
    n = graph.n
    players = [[int(x) for x in rng.integers(0, len(models), size=n)] for _ in range(assignments)]
    utility = graph_scores(ctx, [graph] * assignments, examples, tag, [[models[m] for m in row] for row in players])
    cnt = np.array([[row.count(i) for row in players] for i in range(len(models))], dtype=float)  # [model][assignment]
    score = [float(cnt[i] @ utility / cnt[i].sum()) if cnt[i].sum() else None for i in range(len(models))]
    return {"scores": score, "assignments": players, "utilities": utility}


def weight_pool_problem(ctx: RunContext) -> str | None:
    """Why the weight-step cannot run on this pool (None when it can)."""
    from moco.models import compat

    for h in ctx.models:
        if h.role_prompt:
            return f"model '{h.name}' has a role prompt, which merged weights cannot keep"
        if not ctx.pool.backend(h).capabilities.weights:
            return f"model '{h.name}' ({h.spec.kind}) exposes no weights"
    try:
        compat.check_same_architecture(compat.entries_for(ctx.models, ctx.pool.overrides), "text_heterogeneous_swarms")
    except ConfigError as e:
        return str(e)
    return None


def weight_step(ctx: RunContext, params: Params, graph: Graph, dev: list[Example]) -> tuple[list[ModelHandle], dict]:
    """PSO over the models' weights (coefficients over the experts, merged in memory), each particle's fitness
    its JFK-score on `graph`; returns the models that play the graph's nodes (each particle's best) and a log."""
    from moco.merging import Linear
    from moco.merging.search import DevSearch
    from moco.methods.weight._common import experts

    names = [m.name for m in ctx.models]
    ex = experts(ctx, prefer_lora=True)
    search = DevSearch(ctx, ex.template, "hswarm", dev=dev)
    n = len(names)
    settings = _swarm_settings(params, ctx.seed + 1)
    swarm = ParticleSwarm(np.eye(n), settings)  # particle i starts as expert i
    rng = np.random.default_rng([ctx.seed, 104729])
    log = []
    for it in range(params.weight_iterations):
        handles = [search.handle(Linear(ex.sources, [float(c) for c in x])) for x in swarm.positions]
        j = jfk_scores(ctx, graph, dev, params.jfk_assignments, rng, handles, tag=f"weight {it + 1} jfk")
        fitness = [s if s is not None else 0.0 for s in j["scores"]]  # a particle left out of every draw: 0
        log.append({"iteration": it + 1, "models": [h.name for h in handles], "jfk": j["scores"],
                    "utilities": j["utilities"],
                    "coefficients": [dict(zip(names, map(float, x))) for x in swarm.positions]})
        if not swarm.update(fitness):
            break
    final = [search.handle(Linear(ex.sources, [float(c) for c in x])) for x in swarm.pbest]
    return final, {"iterations": log, "models": [h.name for h in final],
                   "best_coefficients": [dict(zip(names, map(float, x))) for x in swarm.pbest],
                   "best_jfk": [float(v) for v in swarm.pbest_scores]}


def _swarm_settings(params: Params, seed: int) -> SwarmSettings:
    return SwarmSettings(inertia=params.inertia, cognitive=params.cognitive_coeff, social=params.social_coeff,
                         repel=params.repel_coeff, repel_term=params.repel_term,
                         weight_randomness=params.weight_randomness, step_length=params.step_length,
                         step_length_factor=params.step_length_factor,
                         minimum_step_length=params.minimum_step_length, patience=params.patience,
                         restart_patience=params.restart_patience, starting_velocity=params.starting_velocity_mode,
                         seed=seed)


@method("text_heterogeneous_swarms", params=Params, level="text", aliases=("heterogeneous_swarms", "hswarms"),
        min_models=2, paper="Feng et al. 2025, Heterogeneous Swarms: jointly optimizing model roles and weights "
        "for multi-LLM systems",
        summary="Models as nodes of a DAG, outputs flowing along its edges; the graph searched by particle swarm "
                "optimisation on dev score, then the models' weights by PSO on their JFK-scores")
def run(ctx: RunContext, params: Params) -> list[Output]:
    models, n = ctx.models, len(ctx.models)
    names = [m.name for m in models]
    if not ctx.dev:
        raise ValueError(f"task {ctx.task.name} has no dev split; the graph search needs one")
    dev = ctx.dev[:max(1, int(len(ctx.dev) * params.dev_ratio))]
    swarm = ParticleSwarm.random(params.population, n * n, _swarm_settings(params, ctx.seed))
    best: Graph | None = None
    best_score = -np.inf
    trajectory = []
    with ctx.phase("dev"):
        for it in range(params.max_iterations):
            positions = swarm.positions.round(4).tolist()
            graphs = [decode(swarm.positions[p], n, params.graph_top_p, np.random.default_rng([ctx.seed, it, p]))
                      for p in range(params.population)]
            scores = graph_scores(ctx, graphs, dev, tag=f"search {it + 1}")
            top = int(np.argmax(scores))
            if scores[top] > best_score:  # the swarm's global best is this very particle (same rule)
                best, best_score = graphs[top], scores[top]
            trajectory.append({"iteration": it + 1, "scores": scores, "graphs": [g.describe(names) for g in graphs],
                               "best_score": best_score, "positions": positions})
            if not swarm.update(scores):
                break
        assert best is not None
        jfk = jfk_scores(ctx, best, dev, params.jfk_assignments, np.random.default_rng([ctx.seed, 7919])) \
            if params.jfk_assignments else None
        problem = ("weight_step: false" if not params.weight_step else
                   "jfk_assignments: 0 (no fitness)" if not params.jfk_assignments else weight_pool_problem(ctx))
        players, weights = list(models), None
        if problem is None:
            players, weights = weight_step(ctx, params, best, dev)
        else:
            warn(ctx, f"text_heterogeneous_swarms: weight-step skipped ({problem}); only the graph is optimised")
        # the search's best is the maximum of many noisy evaluations: run the chosen system on dev once more
        rescored = graph_scores(ctx, [best], dev, tag="re-evaluate", players=[players], replica=1)[0]
    with ctx.phase("test"):
        runs = run_graphs(ctx, [best], ctx.test, tag="test", players=[players])[0]
    graph = best.describe(names)
    ctx.extra_metrics["swarm"] = {"graph": graph, "levels": [[names[v] for v in lv] for lv in best.levels()],
                                  "dev_score": rescored, "search_dev_score": best_score, "dev_examples": len(dev),
                                  "weight_step": weights if weights is not None else f"skipped: {problem}",
                                  "node_models": {names[v]: players[v].name for v in range(n)},
                                  "jfk": None if jfk is None else {
                                      "scores": dict(zip(names, jfk["scores"])), "utilities": jfk["utilities"],
                                      "assignments": [[names[m] for m in row] for row in jfk["assignments"]]},
                                  "iterations": len(trajectory),
                                  "restarts": [list(r) for r in swarm.restarts], "trajectory": trajectory}
    outputs = []
    for j in range(len(ctx.test)):
        nodes = {names[v]: {"output": runs[j][v].text, "saw": [names[p] for p in best.predecessors(v)],
                            "model": players[v].name} for v in range(n)}
        final = runs[j][best.end]
        outputs.append(Output(final.text, failed=final.failed, trace={"graph": graph, "nodes": nodes}))
    return outputs
