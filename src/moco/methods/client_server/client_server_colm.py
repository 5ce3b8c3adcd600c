"""client_server_colm: CoLM for language models (Huang, Huang & Zhang, AAAI 2026) — clients and a server.

Every model of the pool is a client with a specialisation (`description`, else its role prompt). Per query:

1. Client selection: rank the clients by the relevance of their specialisation to the query — a 0-10 rating
   by a strong model (the `selector` role, default the server), as in the paper, or cosine similarity of
   sentence embeddings (`selection: embedding`, the embedded all-MiniLM) — and keep the top-k as
   contributors (default: half the clients, rounded up; the paper gives no k; `top_k: all` = no selection).
2. The clients answer independently (M_i(q)); the contributors' answers go to the server, anonymously.
3. The server model synthesises them into one answer a = M_s(q, {M_i(q)}): the server output. The server is
   the model bound to the `server` role (the paper's GPT-4o, apart from its clients), else the dev-best
   client — then a warning (console and metrics `warnings`) says that a client doubles as server.
4. Every client receives a as guidance and revises its own answer (`refine: selected`: only contributors).
5. Rounds 2..R repeat 3-4 on the contributors' revised answers.

The run's output (its headline score) is what the paper reports as CoLM: a client's refined answers —
`output: client` (default) takes the first pool client that is not the server, or name one; metrics
`colm.headline` say whose answers they are. The server output, which the paper reports as a separate
upper-bound row, is `output: server`. One run gives the paper's Table 2 rows (metrics `colm.table`): each
client alone (round 0), each client refined (last round) and the server output, plus per-round scores
(Figure 4). Ablations are options of the
same run: `only` (collaborate with only model X), `ablate_only_each` (Table 3: each client as the only
contributor), `ablate_client_counts` (Figure 3: the top-k for several k). All variants share the first
answers and each step of all variants is one batched `ctx.generate` call. Mixture-of-Agents on the same
models is a separate method (see examples/colm_paper_table.py for the side-by-side table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from moco.context import Call, Output, Response, RunContext
from moco.errors import ConfigError
from moco.methods.client_server.colm_common import (choose_server, contributors_k, mean_score, refine_prompt,
                                                     relevance, rounded, server_prompt, top_k)
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import candidate_of, warn


class Params(MethodParams):
    top_k: int | Literal["half", "all"] = Field("half", description="contributors per query: the k clients most "
                                                 "relevant to it (paper: top-k, k not given); half = half the "
                                                 "clients, rounded up; all = no selection")
    selection: Literal["llm", "embedding"] = Field("llm", description="relevance of a client to a query: a 0-10 "
                                                   "rating by the selector model (the paper, with GPT-4o), or "
                                                   "sentence-embedding similarity")
    encoder: str = Field("all-minilm-l6-v2", description="sentence encoder for selection: embedding")
    rounds: int = Field(1, ge=1, le=10, description="server synthesis + client revision rounds")
    refine: Literal["all", "selected"] = Field("all", description="which clients revise with the guidance "
                                               "(paper: every client)")
    output: str | int = Field("client", description="the run's output: 'client' (the refined answers of the first "
                              "pool client that is not the server: CoLM as the paper reports it), a client (name "
                              "or index), or 'server' (the server output: the paper's separate upper-bound row)")
    only: list[str | int] | None = Field(None, description="contributors are only these clients (the paper's "
                                         "'only model X'); overrides top_k")
    ablate_only_each: bool = Field(False, description="also run the collaboration with each client as the only "
                                   "contributor (Table 3)")
    ablate_client_counts: list[int] = Field(default_factory=list, description="also run it with the top-k "
                                            "contributors for each k listed (Figure 3)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if any(k < 1 for k in self.ablate_client_counts):
            raise ValueError("ablate_client_counts must be >= 1")
        if isinstance(self.top_k, int) and self.top_k < 1:
            raise ValueError("top_k must be >= 1, 'half' or 'all'")
        if self.output != "server" and self.refine != "all":
            raise ValueError("a client output needs refine: all (otherwise it does not revise on every query)")
        return self


@dataclass
class Variant:
    """One collaboration setting over the whole test set (the main run or an ablation)."""

    label: str
    contributors: list[list[int]]  # per example: client indices whose answers reach the server
    refiners: list[list[int]]  # per example: clients that revise with the guidance
    answers: list[dict[int, list[Response]]] = field(default_factory=list)  # [example][client][round 0..R]
    server: list[list[Response]] = field(default_factory=list)  # [round 1..R][example]

    def latest(self, j: int, c: int) -> Response:
        return self.answers[j][c][-1]

    def revised(self, r: int, j: int) -> list[int]:
        """Clients that revised example j in round r (1-based); none when the server's guidance failed."""
        return [] if self.server[r - 1][j].failed else self.refiners[j]


@method("client_server_colm", params=Params, level="client_server", aliases=("colm", "client_server"),
        min_models=1, roles={"server": "synthesises the clients' answers into guidance (default: the dev-best "
                                       "client, with a warning)",
                             "selector": "rates client relevance for selection: llm (default: the server)"},
        paper="Huang, Huang & Zhang 2026, CoLM: Collaborative Large Models via a Client-Server Paradigm",
        summary="Top-k relevant clients answer, a server synthesises guidance, every client revises; rounds; "
                "the output is a client's refined answers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    clients = ctx.models
    test = ctx.task.test
    only = [ctx.model(r).index for r in params.only] if params.only else None
    if only and any(i < 0 for i in only):
        raise ConfigError("only: name clients of the pool, not roles")
    server, why = await choose_server(ctx)
    doubles = candidate_of(ctx, server)
    if doubles is not None:
        warn(ctx, f"client_server_colm: client '{doubles.name}' doubles as the server ({why}); bind a separate "
                  "model to the 'server' role for the paper's setting (a server apart from its clients)")
    if params.output == "server":
        output_client, headline = None, {"output": "server", "why": "output: server (the paper's upper-bound row)"}
    elif params.output == "client":
        output_client = next((c for c in clients if c is not doubles), clients[0])
        headline = {"output": "client", "client": output_client.name,
                    "why": "the first pool client that is not the server" if output_client is not doubles
                    else "the only client (it is also the server)"}
    else:
        output_client = ctx.model(params.output)
        if output_client.index < 0:
            raise ConfigError("output: name a client of the pool, 'client' or 'server'")
        headline = {"output": "client", "client": output_client.name, "why": "output: given"}
    k = contributors_k(params.top_k, len(clients))
    with ctx.phase("test"):
        need_rank = (k < len(clients) and only is None) or bool(params.ablate_client_counts)
        unparsed = 0
        if need_rank:
            descriptions = [c.description for c in clients]
            scores, unparsed = await relevance(ctx, [ex.input for ex in test], [descriptions] * len(test),
                                         params.selection, ctx.role("selector") or server, params.encoder)
        else:
            scores = [[0.0] * len(clients) for _ in test]
        ranking = [top_k(s, None) for s in scores]
        variants = _variants(params, clients, ranking, only, k)
        first = await _first_answers(ctx, test, clients, variants)
        for v in variants:
            v.answers = [{c: [first[j][c]] for c in {*v.contributors[j], *v.refiners[j]}} for j in range(len(test))]
        for r in range(1, params.rounds + 1):
            await _server_step(ctx, server, test, variants, r)
            await _refine_step(ctx, test, variants, r)
    main = variants[0]
    await _report(ctx, params, clients, server.name, test, variants, unparsed, need_rank)
    ctx.metrics["colm"].update(headline=headline, server_chosen_by=why, top_k=k,
                                     server_is_client=doubles.name if doubles is not None else None)
    outputs = []
    for j, _ex in enumerate(test):
        if output_client is None:
            final = main.server[-1][j]
        else:
            final = main.latest(j, output_client.index)
        outputs.append(Output(final.text, failed=final.failed,
                              trace=_trace(clients, server.name, main, j, scores[j] if need_rank else None)))
    return outputs


def _variants(params: Params, clients, ranking: list[list[int]], only: list[int] | None, k: int) -> list[Variant]:
    everyone = [c.index for c in clients]

    def make(label: str, contrib: list[list[int]]) -> Variant:
        refiners = [everyone if params.refine == "all" else list(c) for c in contrib]
        return Variant(label, contrib, refiners)

    main = [list(only) for _ in ranking] if only else [r[:k] for r in ranking]
    out = [make("main", main)]
    if params.ablate_only_each:
        out += [make(f"only {c.name}", [[c.index] for _ in ranking]) for c in clients]
    out += [make(f"top-{k}", [r[:k] for r in ranking]) for k in params.ablate_client_counts]
    return out


async def _first_answers(ctx: RunContext, test, clients, variants: list[Variant]) -> list[dict[int, Response]]:
    """Round 0: every client that any variant needs answers each query independently (one batched call)."""
    needed = [sorted({c for v in variants for c in (*v.contributors[j], *v.refiners[j])}) for j in range(len(test))]
    calls = [Call(clients[c], ex.prompt, images=ex.images) for j, ex in enumerate(test) for c in needed[j]]
    flat = iter(await ctx.generate(calls, tag="colm client answer"))
    return [{c: next(flat) for c in needed[j]} for j in range(len(test))]


async def _server_step(ctx: RunContext, server, test, variants: list[Variant], r: int) -> None:
    calls = []
    for v in variants:
        for j, ex in enumerate(test):
            seen = [v.latest(j, c).text for c in v.contributors[j] if not v.latest(j, c).failed]
            calls.append(Call(server, server_prompt(ex.prompt, seen), images=ex.images))
    flat = iter(await ctx.generate(calls, tag=f"colm server r{r}"))
    for v in variants:
        v.server.append([next(flat) for _ in test])


async def _refine_step(ctx: RunContext, test, variants: list[Variant], r: int) -> None:
    """Every refiner revises its latest answer with its variant's round-r guidance (one batched call)."""
    calls, where = [], []
    for vi, v in enumerate(variants):
        for j, ex in enumerate(test):
            for c in v.revised(r, j):
                calls.append(Call(ctx.models[c], refine_prompt(ex.prompt, v.latest(j, c).text, v.server[r - 1][j].text),
                                  images=ex.images))
                where.append((vi, j, c))
    new = dict(zip(where, await ctx.generate(calls, tag=f"colm refine r{r}")))
    for vi, v in enumerate(variants):
        for j in range(len(test)):
            for c, hist in v.answers[j].items():  # clients that did not revise keep their answer
                hist.append(new.get((vi, j, c), hist[-1]))


async def _report(ctx: RunContext, params: Params, clients, server: str, test, variants: list[Variant], unparsed: int,
            ranked: bool) -> None:
    """The paper's rows: each client alone, each client refined, the server output; per round; ablations."""
    main = variants[0]
    per_round: dict[str, list[float | None]] = {"server output": [rounded(await _server_score(ctx, test, main, r))
                                                                  for r in range(params.rounds)]}
    table = []
    for c in clients:
        rows_j = [j for j in range(len(test)) if c.index in main.refiners[j]]
        curve = [rounded(await _client_score(ctx, test, main, c.index, r, rows_j)) for r in range(params.rounds + 1)]
        per_round[c.name] = curve
        table.append({"system": c.name, "setting": "alone", "score": curve[0], "n": len(rows_j)})
        table.append({"system": f"{c.name}*", "setting": "refined", "score": curve[-1], "n": len(rows_j)})
    table.append({"system": "server output", "setting": f"server {server}", "score": per_round["server output"][-1],
                  "n": len(test)})
    info = {"server": server, "selection": params.selection if ranked else "none", "top_k": params.top_k,
            "rounds": params.rounds, "refine": params.refine, "table": table, "per_round": per_round,
            "contributions": {c.name: sum(c.index in main.contributors[j] for j in range(len(test))) for c in clients}}
    if params.selection == "llm" and ranked:
        info["selection_unparsed"] = unparsed
    ablations = {}
    for v in variants[1:]:
        ablations[v.label] = {
            "server output": rounded(await _server_score(ctx, test, v, params.rounds - 1)),
            **{f"{c.name}*": rounded(await _client_score(ctx, test, v, c.index, params.rounds,
                                                   [j for j in range(len(test)) if c.index in v.refiners[j]]))
               for c in clients},
        }
    if ablations:
        info["ablations"] = ablations
    ctx.metrics["colm"] = info


async def _server_score(ctx: RunContext, test, v: Variant, r: int) -> float | None:
    """Score of the server output of round r+1."""
    return await mean_score(ctx, [(ex, v.server[r][j].text) for j, ex in enumerate(test)])


async def _client_score(ctx: RunContext, test, v: Variant, c: int, r: int, rows: list[int]) -> float | None:
    """Score of client c's answers after round r (0 = alone) on the examples `rows`."""
    return await mean_score(ctx, [(test[j], v.answers[j][c][r].text) for j in rows])


def _trace(clients, server: str, v: Variant, j: int, scores) -> dict:
    """Who was selected, what every client wrote alone, and per round: the server output, whose answers the
    server saw, and each client's revision."""
    names = {c.index: c.name for c in clients}
    tr = {
        "server": server,
        "selected": [names[c] for c in v.contributors[j]],
        "alone": {names[c]: hist[0].text for c, hist in sorted(v.answers[j].items())},
        "rounds": [{"server": v.server[r - 1][j].text, "saw": [names[c] for c in v.contributors[j]],
                    "refined": {names[c]: v.answers[j][c][r].text for c in v.revised(r, j)}}
                   for r in range(1, len(v.server) + 1)],
    }
    if scores is not None:
        tr["relevance"] = {names[i]: round(s, 4) for i, s in enumerate(scores)}
    return tr
