"""client_server_colm_client: one CoLM client process — its models answer locally, a remote server guides.

Start a server (`moco serve --role colm-server CONFIG`), then run this method in each client process
(`moco run client.yaml`). Every model of this process's pool is one client, named by its model name:

1. it answers each question locally (its model never leaves this process; images stay here too);
2. it sends the answer to the server (`server_url`), which waits for all `clients` of that question,
   aggregates them (server-model synthesis, or concatenation for VLMs) and returns the guidance;
3. it revises its own answer locally with the guidance; `rounds` repeats 2-3.

Clients meet in sessions named `<session>:<example id>:<index>`: processes running the same task with the
same `session` collaborate on the same questions. Use a new `session` for each collaborative run (a
finished session is closed on the server). The run is scored like any other: metrics `colm_client` hold
each local client's score alone and refined per round and the score of the guidance it received.
"""
from __future__ import annotations

import hashlib

from pydantic import Field, field_validator

from moco.context import Call, Output, Response, RunContext
from moco.errors import ModelError
from moco.methods.client_server.colm_common import concat_prompt, mean_score, refine_prompt, rounded
from moco.methods.registry import MethodParams, method
from moco.serve.colm_client import ColmClient, Exchange, Reply


class Params(MethodParams):
    server_url: str = Field(description="the colm-server's base URL, e.g. http://127.0.0.1:8000/v1")
    server_model: str = Field("colm-server", description="the model name the server serves")
    clients: int = Field(ge=1, le=256, description="how many clients (over all processes) answer each question")
    rounds: int = Field(1, ge=1, le=10, description="exchange + revision rounds")
    session: str | None = Field(None, description="collaboration id shared by the clients (default: <task>-<seed>)")
    api_key_env: str | None = Field("MOCO_SERVE_TOKEN", description="environment variable holding the server token")
    timeout_s: float = Field(600.0, gt=0, description="how long one exchange may wait for the other clients")
    concurrency: int = Field(64, ge=1, le=4096, description="exchanges in flight at once")

    @field_validator("server_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, got '{v}'")
        return v


@method("client_server_colm_client", params=Params, level="client_server", aliases=("colm_client",),
        min_models=1, paper="Huang, Huang & Zhang 2026, CoLM: Collaborative Large Models via a Client-Server Paradigm",
        summary="CoLM client process: answer locally, exchange with a remote colm-server, revise locally")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test = ctx.models, ctx.task.test
    remote = ColmClient(params.server_url, params.server_model, api_key_env=params.api_key_env,
                        timeout_s=params.timeout_s, concurrency=params.concurrency)
    prefix = params.session or f"{ctx.task.name}-{ctx.seed}"
    with ctx.phase("test"):
        remote.check()
        first = await ctx.answer_all(test, tag="colm client answer")  # first[model][example]
        history = [[[first[m.index][j]] for j in range(len(test))] for m in models]
        guidance: list[list[list[Reply]]] = [[[] for _ in test] for _ in models]
        failures = 0
        for r in range(1, params.rounds + 1):
            items = [Exchange(f"{prefix}:{ex.id}:{ex.index}", r, m.name, ex.prompt, history[m.index][j][-1].text,
                              params.clients, m.description) for j, ex in enumerate(test) for m in models]
            replies = remote.exchange(items)
            if all(rep.failed for rep in replies):
                raise ModelError(f"every exchange with the colm-server failed, e.g.: {replies[0].error}")
            calls, where = [], []
            for k, (x, rep) in enumerate(zip(items, replies)):
                j, mi = divmod(k, len(models))
                m = models[mi]
                _record(ctx, params.server_model, x, rep, r)
                guidance[m.index][j].append(rep)
                if rep.failed:
                    failures += 1
                    continue
                ex = test[j]
                prompt = (concat_prompt(ex.prompt, rep.text) if rep.info.get("aggregation") == "concat"
                          else refine_prompt(ex.prompt, x.answer, rep.text))
                calls.append(Call(m, prompt, images=ex.images))
                where.append((m.index, j))
            new = dict(zip(where, await ctx.generate(calls, tag=f"colm refine r{r}")))
            for m in models:
                for j in range(len(test)):
                    history[m.index][j].append(new.get((m.index, j), history[m.index][j][-1]))
    await _report(ctx, models, test, history, guidance, params.rounds, failures)
    out_model = models[0]
    return [Output(history[out_model.index][j][-1].text, failed=history[out_model.index][j][-1].failed,
                   trace=_trace(models, history, guidance, j)) for j in range(len(test))]


def _record(ctx: RunContext, server: str, x: Exchange, rep: Reply, r: int) -> None:
    key = hashlib.sha256(f"{x.session}|{x.round}|{x.client}".encode()).hexdigest()
    ctx.account(model=f"remote:{server}", key=key, tag=f"colm exchange r{r}", tokens_in=rep.tokens_in,
                        tokens_out=rep.tokens_out, latency=rep.latency_s, cached=False,
                        finish="error" if rep.failed else "stop", error=rep.error, batch=None)


async def _report(ctx: RunContext, models, test, history, guidance, rounds: int, failures: int) -> None:
    clients = {}
    for m in models:
        hist = history[m.index]
        clients[m.name] = {
            "per_round": [rounded(await mean_score(ctx, [(ex, hist[j][r].text) for j, ex in enumerate(test)]))
                          for r in range(rounds + 1)],
            "guidance_per_round": [rounded(await mean_score(ctx, [(ex, guidance[m.index][j][r].text)
                                                            for j, ex in enumerate(test)
                                                            if not guidance[m.index][j][r].failed]))
                                   for r in range(rounds)],
        }
    partial = sum(bool(g.info.get("partial")) for row in guidance for per in row for g in per)
    ctx.metrics["colm_client"] = {"clients": clients, "exchange_failures": failures, "partial_sessions": partial}


def _trace(models, history: list[list[list[Response]]], guidance: list[list[list[Reply]]], j: int) -> dict:
    """Per local client: its answer alone, and per round the guidance it received and its revision."""
    return {m.name: {"alone": history[m.index][j][0].text,
                     "rounds": [{"guidance": g.text, "error": g.error, "partial": bool(g.info.get("partial")),
                                 "own_answer_used": g.info.get("own_answer_used"),
                                 "revised": history[m.index][j][r + 1].text}
                                for r, g in enumerate(guidance[m.index][j])]}
            for m in models}
