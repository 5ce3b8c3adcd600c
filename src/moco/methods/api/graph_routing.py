"""api_graph_routing: GraphRouter (Feng et al. 2024) — a GNN over task, query and model nodes picks the model.

1. Every model answers the dev set (plain answering calls, shared through the cache); each answer's task score
   is its performance (scores outside [0, 1], e.g. rewards, are min-max scaled over the dev set), its output tokens times the model's price (`costs`) its cost, normalized to [0, 1] over
   the dev set. The scenario sets the reward of an answer: performance_first = perf, balance = 0.5 perf -
   0.5 cost, cost_first = 0.2 perf - 0.8 cost. (The reference's cost is constant, so its scenario changed
   nothing.)
2. Node features are sentence embeddings (the embedded all-MiniLM-L6-v2 by default) of the task description
   (one task node, or one per value of the meta field `task_key`, e.g. `domain`), of each query (question and
   options) and of each model's description; model nodes also get a learned embedding.
3. The GNN (`moco.routing.graph`) is trained on the dev outcome edges by hiding a random share of the training
   queries' edges and predicting which model gives those queries the best reward; the epoch with the best mean
   reward on held-out dev queries is kept. Seeded.
4. Test: each test query joins the trained graph linked to its task node only — no outcome edge, since no
   outcome of a test query is known (the reference fed fabricated "every model solves it at cost 1" edges).
   The model with the highest predicted score answers, with the plain answering call.
"""
from __future__ import annotations

import random
import threading
from typing import Any, Literal

from pydantic import Field, field_validator

from moco.context import Output, RunContext
from moco.errors import ConfigError, ModelError
from moco.methods.registry import MethodParams, method
from moco.models import builtin
from moco.routing.choice import model_descriptions, query_text
from moco.routing.outcomes import collect, routed_outputs

SCENARIOS = {"performance_first": (1.0, 0.0), "balance": (0.5, 0.5), "cost_first": (0.2, 0.8)}
_ENCODERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _encoder_name(v: Any) -> Any:
    if isinstance(v, str) and v.lower().rstrip("/").endswith("all-minilm-l6-v2"):
        return "all-minilm-l6-v2"
    return v


def _val_fraction(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) >= 2 and all(isinstance(x, (int, float)) for x in v[:2]):
        return v[1] / (v[0] + v[1]) if v[0] + v[1] > 0 else 0.0
    return v


class Params(MethodParams):
    reference_keys = {"embedding_model_name": ("encoder", _encoder_name), "train_epochs": ("epochs", int),
                      "split_ratio": ("val_fraction", _val_fraction)}

    scenario: Literal["performance_first", "balance", "cost_first"] = Field(
        "performance_first", description="reward = perf (performance_first), 0.5 perf - 0.5 cost (balance), "
        "0.2 perf - 0.8 cost (cost_first); reference names 'Performance First', 'Balance', 'Cost First' accepted")
    costs: list[float] | None = Field(None, description="price per output token of each model (pool order); "
                                      "default 1 for all: cost = the length of each dev answer")
    model_descriptions: list[str] | None = Field(None, description="one per model; default: config descriptions")
    task_description: str | None = Field(None, description="default: the task's description, else its name")
    task_key: str | None = Field(None, description="meta field naming each query's task (one task node per value), "
                                 "e.g. 'domain'; default: one task node")
    encoder: str = Field("all-minilm-l6-v2", description="sentence encoder: the embedded all-minilm-l6-v2 or a "
                         "local sentence-transformers folder (reference key embedding_model_name)")
    hidden_features: int = Field(8, ge=1, le=1024, description="hidden size (node states are 2x this), reference 8")
    epochs: int = Field(500, ge=1, le=100000, description="training epochs (reference train_epochs 500)")
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate (reference 1e-4)")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="AdamW weight decay (reference 1e-4)")
    masks_per_epoch: int = Field(32, ge=1, le=4096, description="random edge masks per epoch, batched "
                                 "(the reference reuses its generation batch_size, 32)")
    train_mask_rate: float = Field(0.5, gt=0.0, le=1.0, description="share of training queries whose outcome "
                                   "edges are hidden and predicted in each mask")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="dev queries held out to pick the best epoch "
                                "(none when fewer than 5 dev queries); reference split_ratio [train, val, test] "
                                "gives val / (train + val)")
    in_edges: int = Field(3, ge=3, le=3, description="reference key, accepted for its configs: its edge feature "
                          "count, which must be 3 there (edges here carry outcome flag, performance, cost, reward)")

    @field_validator("scenario", mode="before")
    @classmethod
    def _scenario(cls, v: Any) -> Any:
        if isinstance(v, str):
            key = v.strip().lower().replace(" ", "_").replace("-", "_")
            return key if key in SCENARIOS else v
        return v


def encode(encoder: str, texts: list[str]):
    """Normalized sentence embeddings (a float tensor [len(texts), d]); the encoder loads once per process."""
    import torch

    path = str(builtin.ensure_converted(encoder)) if builtin.is_embedded(encoder) else encoder
    with _LOCK:
        if path not in _ENCODERS:
            try:
                from sentence_transformers import SentenceTransformer

                _ENCODERS[path] = SentenceTransformer(path, device="cpu")
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load sentence encoder '{encoder}': {str(e).splitlines()[0]}") from None
        model = _ENCODERS[path]
    return torch.tensor(model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))


@method("api_graph_routing", params=Params, level="api", aliases=("graph_routing", "graph_router", "graphrouter"),
        min_models=2, trainable=True, paper="Feng et al. 2024, GraphRouter: a graph-based router for LLM selections",
        summary="A GNN over task, query and model nodes, trained on dev outcomes (performance, cost), routes queries")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    import torch

    from moco.routing import graph as G

    models = ctx.models
    n_m = len(models)
    descriptions = model_descriptions(models, params.model_descriptions, ctx)
    prices = params.costs or [1.0] * n_m
    if len(prices) != n_m:
        raise ConfigError(f"params: costs has {len(prices)} entries for {n_m} models")
    if not ctx.task.dev:
        raise ConfigError(f"task {ctx.task.name} has no dev split: the graph router learns from dev outcomes")
    w_perf, w_cost = SCENARIOS[params.scenario]
    base = params.task_description or ctx.task.description or ctx.task.name

    def task_of(ex) -> str:
        return str(ex.meta.get(params.task_key, "unknown")) if params.task_key else ""

    task_values = sorted({task_of(ex) for ex in [*ctx.task.dev, *ctx.task.test]})
    task_texts = [f"{base} ({params.task_key}: {v})" if params.task_key else base for v in task_values]
    with ctx.phase("dev"):
        dev = await collect(ctx, ctx.task.dev)
        perf = torch.tensor(dev.scores, dtype=torch.float32).T  # [Q, M]
        if perf.numel() and (perf.min() < 0 or perf.max() > 1):  # e.g. reward-model scores: onto cost's [0, 1] scale
            perf = (perf - perf.min()) / (perf.max() - perf.min()).clamp(min=1e-9)
        raw = torch.tensor([[r.tokens_out * prices[m] for r in dev.answers[m]] for m in range(n_m)],
                           dtype=torch.float32).T
        cost = raw / raw.max().clamp(min=1e-9)
        inp = G.GraphInputs(task_emb=encode(params.encoder, task_texts), model_emb=encode(params.encoder, descriptions),
                            known_emb=encode(params.encoder, [query_text(ex) for ex in ctx.task.dev]),
                            known_task=[task_values.index(task_of(ex)) for ex in ctx.task.dev],
                            perf=perf, cost=cost, reward=w_perf * perf - w_cost * cost)
        order = list(range(len(ctx.task.dev)))
        random.Random(ctx.seed).shuffle(order)
        n_val = round(params.val_fraction * len(order)) if len(order) >= 5 else 0
        val_q, train_q = sorted(order[:n_val]), sorted(order[n_val:])
        net, report = G.train(inp, train_q, val_q, hidden=params.hidden_features, epochs=params.epochs,
                              lr=params.learning_rate, weight_decay=params.weight_decay,
                              masks_per_epoch=params.masks_per_epoch, mask_rate=params.train_mask_rate, seed=ctx.seed)
        if ctx.artifacts_dir is not None:
            torch.save(net.state_dict(), ctx.artifacts_dir / "graph_router.pt")
    with ctx.phase("test"):
        inp.unknown_emb = encode(params.encoder, [query_text(ex) for ex in ctx.task.test])
        inp.unknown_task = [task_values.index(task_of(ex)) for ex in ctx.task.test]
        known = list(range(len(ctx.task.dev)))
        test_nodes = [len(ctx.task.dev) + j for j in range(len(ctx.task.test))]
        graph = G.build_graph(inp, [known], include_unknown=True)
        scores = torch.sigmoid(G.predict(net, inp, known, test_nodes, include_unknown=True))
    picks = scores.argmax(dim=1).tolist()
    best = G.best_targets(inp.reward)
    ctx.metrics.update(
        scenario=params.scenario, reward_weights={"performance": w_perf, "cost": -w_cost},
        graph={"task_nodes": len(task_values), "dev_queries": len(ctx.task.dev), "test_queries": len(ctx.task.test),
               "model_nodes": n_m, "dev_outcome_edges": sum(graph.outcome_edges_of(q) for q in known),
               "test_outcome_edges": sum(graph.outcome_edges_of(q) for q in test_nodes)},
        training=report.__dict__,
        dev_mean_cost={m.name: round(float(cost[:, i].mean()), 4) for i, m in enumerate(models)},
        dev_best_reward_share={m.name: round(float(best[:, i].mean()), 4) for i, m in enumerate(models)})
    traces = [{"scores": {m.name: round(float(s), 4) for m, s in zip(models, row)},
               "task": task_values[t] if params.task_key else None,
               "why": f"highest predicted {params.scenario} reward"}
              for row, t in zip(scores.tolist(), inp.unknown_task)]
    return await routed_outputs(ctx, [models[p] for p in picks], traces)
