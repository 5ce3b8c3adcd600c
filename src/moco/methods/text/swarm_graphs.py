"""The graphs of Heterogeneous Swarms (Feng et al. 2025): a continuous adjacency matrix decoded to a DAG of
models (the paper's G-decode), and the batched run of many such multi-LLM systems on many examples.

Decoding (an in-tree towards one end node; the particle is never modified):
1. the end node is chosen from a softmax over the negated out-degrees (row sums, diagonal excluded);
2. until every node is placed: a remaining node is chosen from a softmax over the out-degrees, and linked to
   one placed node chosen from a softmax over its row restricted to the placed nodes.
Each choice is top-p sampling with threshold `top_p`; 0 keeps only the most likely choice (the authors' code
calls G-decode with threshold 0, so a particle always decodes to the same graph).

Running a system (a graph and the model playing each node): nodes in topological levels; a source answers the
question, any other node answers seeing its predecessors' outputs; the end node's output is the answer. Every
level is one batched call across all systems, examples and replicas.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moco.context import Call, Response, RunContext
from moco.methods.text.shared import numbered
from moco.models.base import SamplingParams
from moco.models.pool import ModelHandle
from moco.tasks.base import Example


@dataclass(frozen=True)
class Graph:
    """An in-tree over node indices: `edges` (src, dst) means src's output is shown to dst."""

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

    def describe(self, names: Sequence[str]) -> dict:
        return {"end": names[self.end], "edges": [[names[s], names[d]] for s, d in self.edges]}


@dataclass(frozen=True)
class System:
    """A multi-LLM system: a graph and the model that plays each of its nodes (node v: players[v])."""

    graph: Graph
    players: tuple[ModelHandle, ...]

    @property
    def key(self) -> tuple:
        return self.graph, tuple(p.name for p in self.players)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def top_p_choice(scores: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Index sampled from softmax(scores) restricted to the smallest top set whose mass reaches `top_p`
    (top_p = 0: the most likely index, no sampling)."""
    probs = _softmax(np.asarray(scores, dtype=np.float64))
    order = np.argsort(-probs, kind="stable")
    keep = min(len(order), int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1)
    top = order[:keep]
    return int(top[rng.choice(len(top), p=probs[top] / probs[top].sum())]) if keep > 1 else int(top[0])


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


async def run_systems(ctx: RunContext, systems: Sequence[System], examples: Sequence[Example], tag: str,
                replicas: Sequence[int] = (0,), sampling: SamplingParams | None = None
                ) -> list[list[list[dict[int, Response]]]]:
    """Every system on every example, once per replica: out[system][replica][example][node]. One batched call
    per topological level across all of them (identical calls share one generation)."""
    reps = list(replicas)
    out: list[list[list[dict[int, Response]]]] = [[[{} for _ in examples] for _ in reps] for _ in systems]
    levels = [s.graph.levels() for s in systems]
    for depth in range(max(len(lv) for lv in levels)):
        todo = [(si, ri, v, j) for si, lv in enumerate(levels) if depth < len(lv) for v in lv[depth]
                for ri in range(len(reps)) for j in range(len(examples))]
        calls = []
        for si, ri, v, j in todo:
            g = systems[si].graph
            seen = [out[si][ri][j][p].text for p in g.predecessors(v) if not out[si][ri][j][p].failed]
            calls.append(Call(systems[si].players[v], node_prompt(examples[j].prompt, seen, v == g.end),
                              sampling, replica=reps[ri]))
        for (si, ri, v, j), r in zip(todo, await ctx.generate(calls, tag=f"{tag} level {depth}")):
            out[si][ri][j][v] = r
    return out
