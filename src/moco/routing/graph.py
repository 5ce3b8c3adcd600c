"""GraphRouter's graph and network (Feng et al. 2024): task, query and model nodes; outcome edges; edge scoring.

The graph: one node per task (a task of the dataset, or each value of a meta field such as `domain`), one per
query, one per model. Every query is linked to its task. A query whose outcomes are known (a dev query) is
linked to every model by an outcome edge carrying [performance, cost, scenario reward]. A query whose outcomes
are unknown — a test query, or a training query hidden for this step — is linked to its task only.

Training hides a random share of the training queries' outcome edges at each step and learns to predict, from
what remains, which model gives those queries the best scenario reward (BCE on every hidden query-model pair;
every model tied at the best reward is a positive). This is exactly the situation of a test query, which enters
the graph with no outcome edge: the reference instead fed test queries fabricated "every model solves it at
cost 1" edges. Nodes: Linear projections of the sentence embeddings of the task description, the query and the
model description, plus a learned embedding per model; two GeneralConv layers (mean aggregation, edge features
through a small MLP) with batch norm; a query-model pair is scored by an MLP on the two node states.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

EDGE_DIM = 4  # [is_outcome, performance, cost, reward]


@dataclass
class GraphInputs:
    """Everything the router knows. Rows of `perf`/`cost` are known queries (dev); `unknown` queries have none."""

    task_emb: torch.Tensor  # [T, d]
    model_emb: torch.Tensor  # [M, d]
    known_emb: torch.Tensor  # [Qk, d]
    known_task: list[int]  # task index of each known query
    perf: torch.Tensor  # [Qk, M] performance (task score) of each model on each known query
    cost: torch.Tensor  # [Qk, M] normalized cost in [0, 1]
    reward: torch.Tensor  # [Qk, M] scenario reward
    unknown_emb: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    unknown_task: list[int] = field(default_factory=list)


@dataclass
class Graph:
    """`copies` disjoint instances of one node set (a batch of masks). Node order: every copy's tasks, then
    every copy's queries (known first, then unknown), then every copy's models."""

    x_task: torch.Tensor
    x_query: torch.Tensor
    x_model: torch.Tensor
    model_ids: torch.Tensor
    edge_index: torch.Tensor  # [2, E] (both directions of every link)
    edge_attr: torch.Tensor  # [E, EDGE_DIM]
    n_tasks: int
    n_queries: int
    n_models: int
    copies: int

    @property
    def query_offset(self) -> int:
        return self.copies * self.n_tasks

    @property
    def model_offset(self) -> int:
        return self.copies * (self.n_tasks + self.n_queries)

    def query_node(self, k: torch.Tensor | int, query: torch.Tensor | int):
        return self.query_offset + k * self.n_queries + query

    def model_node(self, k: torch.Tensor | int, model: torch.Tensor | int):
        return self.model_offset + k * self.n_models + model

    def outcome_edges_of(self, query: int, k: int = 0) -> int:
        """How many outcome edges touch a query node of copy k (0 for a query whose outcomes are unknown)."""
        q = self.query_node(k, query)
        return int(((self.edge_index[0] == q) & (self.edge_attr[:, 0] > 0)).sum())


def build_graph(inp: GraphInputs, visible: list[list[int]], include_unknown: bool) -> Graph:
    """One copy of the graph per entry of `visible`: every known query is a node, with outcome edges only if it
    is in that copy's visible list; with `include_unknown`, the unknown queries too (task links only)."""
    k_n, n_t, n_m = len(visible), inp.task_emb.shape[0], inp.model_emb.shape[0]
    x_q, tasks = inp.known_emb, list(inp.known_task)
    if include_unknown and inp.unknown_emb.numel():
        x_q, tasks = torch.cat([x_q, inp.unknown_emb]), tasks + list(inp.unknown_task)
    n_q = x_q.shape[0]
    g = Graph(inp.task_emb.repeat(k_n, 1), x_q.repeat(k_n, 1), inp.model_emb.repeat(k_n, 1),
              torch.arange(n_m).repeat(k_n), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, EDGE_DIM),
              n_t, n_q, n_m, k_n)
    ks = torch.arange(k_n).repeat_interleave(n_q)
    local = torch.arange(n_q).repeat(k_n)
    src = [ks * n_t + torch.tensor(tasks, dtype=torch.long).repeat(k_n)]
    dst = [g.query_node(ks, local)]
    attr = [torch.zeros(len(local), EDGE_DIM)]
    for k, vis in enumerate(visible):
        if not vis:
            continue
        v = torch.tensor(vis, dtype=torch.long)
        qv, mv = v.repeat_interleave(n_m), torch.arange(n_m).repeat(len(vis))
        src.append(g.query_node(k, qv))
        dst.append(g.model_node(k, mv))
        attr.append(torch.stack([torch.ones(len(qv)), inp.perf[qv, mv], inp.cost[qv, mv], inp.reward[qv, mv]], dim=1))
    s, d, a = torch.cat(src), torch.cat(dst), torch.cat(attr).float()
    g.edge_index = torch.stack([torch.cat([s, d]), torch.cat([d, s])])
    g.edge_attr = torch.cat([a, a])
    return g


class GraphRouterNet(nn.Module):
    def __init__(self, emb_dim: int, n_models: int, hidden: int = 8):
        from torch_geometric.nn import GeneralConv

        super().__init__()
        h = 2 * hidden
        self.task_in = nn.Linear(emb_dim, h)
        self.query_in = nn.Linear(emb_dim, h)
        self.model_in = nn.Linear(emb_dim, h)
        self.model_id = nn.Embedding(n_models, h)
        self.edge_mlp = nn.Sequential(nn.Linear(EDGE_DIM, h), nn.ReLU())
        self.convs = nn.ModuleList([GeneralConv(h, h, in_edge_channels=h, aggr="mean") for _ in range(2)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(h) for _ in range(2)])
        self.score = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 1))

    def forward(self, g: Graph, k: torch.Tensor, query: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
        """Logits of (query, model) pairs of the given copies."""
        x = torch.cat([self.task_in(g.x_task), self.query_in(g.x_query),
                       self.model_in(g.x_model) + self.model_id(g.model_ids)])
        e = self.edge_mlp(g.edge_attr)
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x, g.edge_index, e))) + x
        hq, hm = x[g.query_node(k, query)], x[g.model_node(k, model)]
        return self.score(torch.cat([hq, hm], dim=-1)).squeeze(-1)


def best_targets(reward: torch.Tensor) -> torch.Tensor:
    """1 for every model tied at the best reward of its query, else 0."""
    return (reward >= reward.max(dim=1, keepdim=True).values - 1e-9).float()


@dataclass
class TrainReport:
    epochs: int
    best_epoch: int
    val_reward: float | None
    first_loss: float
    last_loss: float
    seconds: float
    val_queries: int
    train_queries: int


def _pairs(queries: list[list[int]], n_models: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(copy, query, model) index tensors of every model for the queries of each copy."""
    ks = torch.cat([torch.full((len(qs) * n_models,), k, dtype=torch.long) for k, qs in enumerate(queries)])
    query = torch.cat([torch.tensor(qs, dtype=torch.long).repeat_interleave(n_models) for qs in queries])
    model = torch.cat([torch.arange(n_models).repeat(len(qs)) for qs in queries])
    return ks, query, model


def predict(net: GraphRouterNet, inp: GraphInputs, visible: list[int], queries: list[int],
            include_unknown: bool) -> torch.Tensor:
    """Scores [len(queries), M]; queries are node-local indices (known queries first, then unknown ones)."""
    n_m = inp.model_emb.shape[0]
    g = build_graph(inp, [visible], include_unknown)
    net.eval()
    with torch.no_grad():
        return net(g, *_pairs([queries], n_m)).reshape(len(queries), n_m)


def train(inp: GraphInputs, train_q: list[int], val_q: list[int], *, hidden: int, epochs: int, lr: float,
          weight_decay: float, masks_per_epoch: int, mask_rate: float, seed: int) -> tuple[GraphRouterNet, TrainReport]:
    """Fit on `train_q` with query-level edge masking (all masks of an epoch are one batched graph); keep the
    epoch with the best mean reward on `val_q` (in the graph without outcome edges, as test queries will be)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a graph of a few hundred nodes: threads only add synchronisation (8x slower on busy cores)
    try:
        return _train(inp, train_q, val_q, hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay,
                      masks_per_epoch=masks_per_epoch, mask_rate=mask_rate, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _train(inp: GraphInputs, train_q: list[int], val_q: list[int], *, hidden: int, epochs: int, lr: float,
           weight_decay: float, masks_per_epoch: int, mask_rate: float, seed: int) -> tuple[GraphRouterNet, TrainReport]:
    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_m = inp.model_emb.shape[0]
    net = GraphRouterNet(inp.model_emb.shape[1], n_m, hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    target = best_targets(inp.reward)
    loss_fn = nn.BCEWithLogitsLoss()
    n_hide = min(len(train_q), max(1, round(mask_rate * len(train_q))))
    best: tuple[tuple[float, float], int, dict | None] = ((float("-inf"), 0.0), -1, None)
    first = last = float("nan")
    for epoch in range(epochs):
        hidden_sets, shown_sets = [], []
        for _ in range(masks_per_epoch):
            perm = torch.randperm(len(train_q), generator=gen).tolist()
            hidden_sets.append(sorted(train_q[i] for i in perm[:n_hide]))
            shown_sets.append(sorted(train_q[i] for i in perm[n_hide:]))
        g = build_graph(inp, shown_sets, include_unknown=False)
        ks, query, model = _pairs(hidden_sets, n_m)
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(g, ks, query, model), target[query, model])
        loss.backward()
        opt.step()
        last = float(loss.detach())
        first = last if epoch == 0 else first
        if val_q:
            logits = predict(net, inp, train_q, val_q, include_unknown=False)
            val_reward = float(inp.reward[val_q].gather(1, logits.argmax(dim=1)[:, None]).mean())
            val_loss = float(loss_fn(logits.reshape(-1), target[val_q].reshape(-1)))
            if (val_reward, -val_loss) > best[0]:  # equal reward: the lower validation loss
                best = ((val_reward, -val_loss), epoch, copy.deepcopy(net.state_dict()))
    if best[2] is not None:
        net.load_state_dict(best[2])
    report = TrainReport(epochs, best[1] if val_q else epochs - 1, best[0][0] if val_q else None, first, last,
                         round(time.time() - t0, 2), len(val_q), len(train_q))
    return net, report
