"""text_structure: structured interaction — answer updates over a communication graph (Yu et al. 2025, NetSafe).

1. Every model answers independently (round 0).
2. For `rounds` rounds, every model with in-neighbours sees the question, its own previous answer and its
   1-hop in-neighbours' previous answers, and writes an updated answer (one batched call per round); a model
   without in-neighbours keeps its answer.
3. The final answer (`final`): `model` = the last answer of one model (the `final` role, or `final_model`,
   else the dev-best model — the reference implementation's rule); `vote` = plurality of the last answers
   (objective tasks); `summarizer` = that model writes a final answer from all last answers.

Graphs, as adjacency M with M[i][j] = 1 when model j sees model i: chain (i-i+1), tree (binary heap:
p-2p+1, p-2p+2), star (hub 0 - every other model: a true star, where the reference builds a wheel with a
self-loop at N=2), circle (ring), complete, or `custom` (the `matrix` given). Built-in graphs are undirected.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import conclude, from_total_rounds, per_model, pick_model, require_votable

Structure = Literal["chain", "tree", "star", "circle", "complete", "custom"]


def _structure(v: Any) -> Any:
    return "custom" if v == "other" else v


class Params(MethodParams):
    reference_keys = {"num_rounds": ("rounds", from_total_rounds), "structure_type": ("structure", _structure),
                      "structure_matrix": ("matrix", lambda v: v)}

    structure: Structure = Field(description="communication graph (reference key `structure_type`, 'other' = custom)")
    matrix: list[list[int]] | None = Field(None, description="custom graph: N x N of 0/1, row i column j = 1 when "
                                           "model j sees model i (reference key `structure_matrix`)")
    rounds: int = Field(2, ge=0, le=20, description="update rounds after the first answers "
                        "(reference key `num_rounds` = rounds + 1)")
    final: Literal["model", "vote", "summarizer"] = Field("model", description="how the final answer is made")
    final_model: int | str | None = Field(None, description="model whose last answer is final (or who summarizes); "
                                          "default: the `final` role, else the dev-best model")

    @field_validator("matrix")
    @classmethod
    def _square(cls, m: list[list[int]] | None) -> list[list[int]] | None:
        if m is None:
            return m
        if any(len(row) != len(m) for row in m):
            raise ValueError("matrix must be square (N x N)")
        if any(x not in (0, 1) for row in m for x in row):
            raise ValueError("matrix entries must be 0 or 1")
        if any(m[i][i] for i in range(len(m))):
            raise ValueError("matrix must have a zero diagonal (a model always sees its own answer)")
        return m


def adjacency(structure: str, n: int, matrix: list[list[int]] | None = None) -> list[list[int]]:
    """M[i][j] = 1 when model j sees model i's answer."""
    if structure == "custom":
        if matrix is None:
            raise ConfigError("params (text_structure): structure 'custom' needs `matrix`")
        if len(matrix) != n:
            raise ConfigError(f"params (text_structure): matrix is {len(matrix)}x{len(matrix)} but the pool has {n} models")
        return [list(row) for row in matrix]
    if matrix is not None:
        raise ConfigError(f"params (text_structure): `matrix` is only used with structure 'custom', not '{structure}'")
    edges: set[tuple[int, int]] = set()
    if structure == "chain":
        edges = {(i, i + 1) for i in range(n - 1)}
    elif structure == "tree":
        edges = {(p, c) for p in range(n) for c in (2 * p + 1, 2 * p + 2) if c < n}
    elif structure == "star":
        edges = {(0, k) for k in range(1, n)}
    elif structure == "circle":
        edges = {(i, (i + 1) % n) for i in range(n)} if n > 2 else {(0, 1)}
    elif structure == "complete":
        edges = {(i, j) for i in range(n) for j in range(i + 1, n)}
    m = [[0] * n for _ in range(n)]
    for i, j in edges:
        m[i][j] = m[j][i] = 1
    return m


def update_prompt(question: str, own: str, neighbours: list[str]) -> str:
    shown = "\n\n".join(f"Assistant {k}: {t}" for k, t in enumerate(neighbours, 1))
    return (f"Question:\n{question}\n\nYour previous answer:\n{own}\n\nAnswers from the assistants connected "
            f"to you:\n{shown}\n\nConsider their answers and your own, then give your updated answer. "
            "Keep the answer format the question asks for.")


@method("text_structure", params=Params, level="text", aliases=("structure", "structured_interaction"),
        min_models=2, roles={"final": "its last answer is final, or it summarizes (default: dev-best model)"},
        paper="Yu et al. 2025, NetSafe: exploring the topological safety of multi-agent networks",
        summary="Rounds of answer updates over a graph (chain, tree, star, circle, complete, custom): "
                "each model sees its 1-hop in-neighbours")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test, n = ctx.models, ctx.task.test, len(ctx.task.test)
    adj = adjacency(params.structure, len(models), params.matrix)
    if params.final == "vote":
        require_votable(ctx, "text_structure")
    chosen = await pick_model(ctx, params.final_model, "final") if params.final != "vote" else None
    if params.final == "model" and chosen.index < 0:
        raise ConfigError(f"params (text_structure): final 'model' takes a pool model's last answer; "
                          f"'{chosen.name}' is not in the pool (use final: summarizer)")
    sees = {m.index: [o for o in models if adj[o.index][m.index]] for m in models}
    with ctx.phase("test"):
        current = await ctx.answer_all(test)
        log = [[[{"output": current[m.index][j].text, "saw": []}] for m in models] for j in range(n)]
        for r in range(1, params.rounds + 1):
            active = [m for m in models if sees[m.index]]
            calls, seen = [], []
            for m in active:
                for j, ex in enumerate(test):
                    nb = [o for o in sees[m.index] if not current[o.index][j].failed]
                    calls.append(Call(m, update_prompt(ex.prompt, current[m.index][j].text,
                                                       [current[o.index][j].text for o in nb])))
                    seen.append([o.name for o in nb])
            updated = per_model(await ctx.generate(calls, tag=f"round {r}"), n) if calls else []
            current = list(current)
            for a, m in enumerate(active):
                current[m.index] = updated[a]
            for m in models:
                a = next((k for k, x in enumerate(active) if x.index == m.index), None)
                for j in range(n):
                    log[j][m.index].append({"output": current[m.index][j].text,
                                            "saw": seen[a * n + j] if a is not None else []})
        graph = [[models[i].name, models[j].name] for i in range(len(models)) for j in range(len(models)) if adj[i][j]]
        if params.final == "model":
            outputs = [Output(current[chosen.index][j].text, failed=current[chosen.index][j].failed, trace={})
                       for j in range(n)]
        else:
            outputs = await conclude(ctx, models, current, chosen if params.final == "summarizer" else None)
    ctx.metrics["graph"] = graph
    for j, o in enumerate(outputs):
        o.trace = {"graph": graph, "final": params.final, "final_model": chosen.name if chosen else None,
                   "rounds": [{m.name: log[j][m.index][r] for m in models} for r in range(params.rounds + 1)], **o.trace}
    return outputs
