"""The CoLM server role over HTTP: it gathers the answers that client processes send, and returns guidance.

A client (its own process and model, see methods/client_server/client_server_colm_client.py) posts an
OpenAI chat completion whose messages are the question (user) and its own answer (assistant), with
`metadata` naming the collaboration:

    colm_session   id shared by the clients answering the same question (required)
    colm_client    the client's name, unique within the session (required)
    colm_expected  how many clients take part (default: the server's --expect)
    colm_round     1, 2, ... (default 1)
    colm_description  the client's specialisation (for top-k selection)

The request is held until every expected client of (session, round) has posted (or the gather timeout
passes: then the answers received so far are used, flagged `partial`). Then:

- `method: client_server_colm` (LLMs): the server model synthesises the answers — of the top-k clients
  by relevance (`params.top_k`, default half of them, as the in-process method) — into one answer, the
  guidance. The server model is chosen as in the in-process method: the `server` role, else the only model,
  else the dev-best model on the config's task (a config with several models, no `server` role and no task
  with a dev split is refused);
- `method: client_server_colm_vlm` (VLMs): no model; the guidance is every answer concatenated in one
  structured block (the client puts it, with its image, into its refinement prompt).

Every waiting client receives the same guidance as the assistant message. Sessions that complete together
are synthesised in one batched model call. At most `max_pending` client requests wait at once (`--max-queue`):
beyond, a request gets 429 with Retry-After, unless it is the last answer a session waits for (it frees that
session's waiting clients, so it is always taken). Synthesis stops at the server's time limit (504). Only text crosses the network: the clients' models, and their
images, stay with the clients.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moco import aio
from moco.cache import ResponseCache
from moco.config import ExperimentConfig
from moco.context import Call, RunContext
from moco.errors import ConfigError, MocoError
from moco.methods.client_server.colm_common import (answers_block, choose_server, contributors_k, relevance,
                                                     server_prompt, top_k)
from moco.methods.registry import get_method
from moco.models import time_limit
from moco.runner import plan
from moco.serve.batcher import MicroBatcher
from moco.serve.protocol import ApiError, ChatRequest, completion
from moco.serve.served_task import SERVED
from moco.tasks.base import Task
from moco.trace import CallRecorder

log = logging.getLogger(__name__)
AGGREGATIONS = {"client_server_colm": "synthesize", "client_server_colm_vlm": "concat"}
SESSION_TTL_S = 900.0


@dataclass
class Session:
    question: str
    expected: int
    created: float
    future: asyncio.Future
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)  # client -> (answer, description)
    closed: bool = False
    partial: bool = False


@dataclass
class Snapshot:
    question: str
    clients: list[str]  # sorted names
    answers: list[str]
    descriptions: list[str]


@dataclass
class Guidance:
    text: str
    used: list[str]
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0


def _meta_int(meta: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = meta.get(key)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, f"metadata.{key} must be an integer, got {raw!r}", param=f"metadata.{key}") from None
    if not lo <= v <= hi:
        raise ApiError(400, f"metadata.{key} must be between {lo} and {hi}", param=f"metadata.{key}")
    return v


class ColmServer:
    role = "colm-server"

    def __init__(self, cfg: ExperimentConfig, *, name: str | None = None, cache: ResponseCache,
                 window_ms: float = 5.0, max_batch: int = 64, gather_timeout_s: float = 120.0,
                 default_expected: int = 1, log_dir: Path | None = None, backends: dict[str, Any] | None = None,
                 max_pending: int = 256):
        info = get_method(cfg.method)
        if info.name not in AGGREGATIONS:
            raise ConfigError(f"--role colm-server serves method client_server_colm (the server model synthesises) "
                              f"or client_server_colm_vlm (answers concatenated), not {info.name}")
        self.aggregation = AGGREGATIONS[info.name]
        self.params = info.parse_params(cfg.params)
        self.name = name or cfg.name or "colm-server"
        self.gather_timeout_s = gather_timeout_s
        self.default_expected = default_expected
        self.max_pending = max_pending
        self.waiting = 0  # client requests held until their session's guidance is ready
        self.sessions: dict[tuple[str, int], Session] = {}
        self.completed = 0
        self.ctx: RunContext | None = None
        self.server = None
        self.server_chosen_by = ""
        if self.aggregation == "synthesize":
            task = Task("colm-server", "generation", [], [], generation_only=True)
            p = plan(cfg, None, backends, task=task, needs=False)  # the server choice is checked below
            scorer = p.scorer
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
            self.recorder = CallRecorder(log_dir / "calls.jsonl" if log_dir else None)
            self.ctx = RunContext(pool=p.pool, task=task, scorer=scorer, cache=cache, recorder=self.recorder,
                                  decoding=cfg.decoding, seed=cfg.seed, roles=p.roles,
                                  artifacts_dir=Path(tempfile.mkdtemp(prefix="moco-colm-")))
            self.server, self.server_chosen_by = self._choose_server(cfg, p, backends, cache)
            self.selector = p.roles.get("selector") or self.server
        self.batcher: MicroBatcher[Snapshot, Guidance] = MicroBatcher(self._synthesise, window_ms / 1000.0, max_batch)

    def _choose_server(self, cfg: ExperimentConfig, p: Any, backends: dict[str, Any] | None,
                       cache: ResponseCache) -> tuple[Any, str]:
        """The in-process method's rule (colm_common.choose_server); the dev-best needs the config's task."""
        if "server" in p.roles or len(p.pool.handles) == 1:
            return aio.run(choose_server(self.ctx))
        why = (f"--role colm-server: {len(p.pool.handles)} models and no `server` role, so the server is the "
               "dev-best model as in the in-process method; give the config a task with a dev split, or bind "
               "roles.server")
        if cfg.task.name == SERVED:  # no `task:` in the file: nothing to pick the dev-best model on
            raise ConfigError(f"{why} (the config has no task)")
        try:
            dev_plan = plan(cfg, None, backends)
        except MocoError as e:
            raise ConfigError(f"{why} ({e})") from e
        if not dev_plan.task.dev:
            raise ConfigError(f"{why} (task {dev_plan.task.name} has no dev split)")
        dev_ctx = RunContext(pool=p.pool, task=dev_plan.task, scorer=dev_plan.scorer, cache=cache,
                             recorder=self.recorder, decoding=cfg.decoding, seed=cfg.seed, roles=p.roles)
        return aio.run(choose_server(dev_ctx))

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": "colm-server", "aggregation": self.aggregation,
                             "gather_timeout_s": self.gather_timeout_s}
        if self.server is not None:
            d.update(server=self.server.name, server_chosen_by=self.server_chosen_by,
                     top_k=getattr(self.params, "top_k", None),
                     selection=getattr(self.params, "selection", None))
        return d

    def stats(self) -> dict[str, Any]:
        return {"sessions_open": sum(not s.closed for s in self.sessions.values()), "sessions_completed": self.completed,
                "requests_waiting": self.waiting, "max_queue": self.max_pending}

    def set_time_limit(self, seconds: float | None) -> None:
        """The server model's synthesis stops at this limit from the session's close (serve/batcher.py)."""
        self.batcher.time_limit_s = seconds

    # ------------------------------------------------------------------ gathering (event loop thread)
    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        meta = req.metadata or {}
        for key in ("colm_session", "colm_client"):
            if not meta.get(key):
                raise ApiError(400, f"metadata.{key} is required: this server gathers CoLM client answers "
                               "(messages: the question, then your answer)", param=f"metadata.{key}")
        expected = _meta_int(meta, "colm_expected", self.default_expected, 1, 256)
        rnd = _meta_int(meta, "colm_round", 1, 1, 100)
        question, answer = _question_and_answer(req)
        client = meta["colm_client"]
        self._expire()
        key = (meta["colm_session"], rnd)
        loop = asyncio.get_running_loop()
        s = self.sessions.get(key)
        if s is None:
            self._admit(completes=expected == 1)
            s = Session(question, expected, time.time(), loop.create_future())
            self.sessions[key] = s
            loop.call_later(self.gather_timeout_s, self._on_timeout, key, s)
        elif s.closed:
            raise ApiError(409, f"session {key[0]!r} round {rnd} is already aggregated", code="session_closed")
        elif s.question != question:
            raise ApiError(409, f"session {key[0]!r} round {rnd} is about a different question", code="session_conflict")
        elif s.expected != expected:
            raise ApiError(409, f"session {key[0]!r} expects {s.expected} clients, not {expected}",
                           code="session_conflict")
        if client in s.answers:
            raise ApiError(409, f"client {client!r} already answered session {key[0]!r} round {rnd}",
                           code="duplicate_client")
        elif s.answers:
            self._admit(completes=len(s.answers) + 1 >= s.expected)
        s.answers[client] = (answer, meta.get("colm_description", ""))
        if len(s.answers) >= s.expected:
            self._close(s)
        self.waiting += 1
        try:
            g: Guidance = await asyncio.shield(s.future)
        finally:
            self.waiting -= 1
        if g.error and (time_limit.ERROR in g.error or "TimeLimitReached" in g.error):
            raise ApiError(504, f"no guidance within this server's time limit ({g.error})", kind="server_error",
                           code="timeout")
        if g.error:
            raise ApiError(502, f"the server model failed: {g.error}", kind="server_error")
        mine = client in g.used
        n = max(1, len(s.answers))
        return completion(self.name, g.text, g.tokens_in // n, g.tokens_out // n, extra={
            "aggregation": self.aggregation, "round": rnd, "clients": len(s.answers), "used": len(g.used),
            "own_answer_used": mine, "partial": s.partial})

    def _admit(self, completes: bool) -> None:
        """429 when `max_pending` requests wait already, unless this one completes its session."""
        if self.waiting >= self.max_pending and not completes:
            raise ApiError(429, f"the server is busy: {self.waiting} client requests are waiting (the limit is "
                           f"{self.max_pending}); retry later", kind="server_error", code="server_busy")

    def _close(self, s: Session) -> None:
        s.closed = True
        names = sorted(s.answers)
        snap = Snapshot(s.question, names, [s.answers[c][0] for c in names], [s.answers[c][1] or c for c in names])
        cf = self.batcher.submit(snap)
        loop = s.future.get_loop()

        def deliver(f: concurrent.futures.Future) -> None:
            def settle() -> None:
                if s.future.done():
                    return
                if f.exception() is not None:
                    s.future.set_result(Guidance("", [], error=f"{type(f.exception()).__name__}: {f.exception()}"))
                else:
                    s.future.set_result(f.result())
                self.completed += 1

            loop.call_soon_threadsafe(settle)

        cf.add_done_callback(deliver)

    def _on_timeout(self, key: tuple[str, int], s: Session) -> None:
        if not s.closed and self.sessions.get(key) is s:
            log.warning("session %s round %d: %d of %d clients after %.0fs; aggregating what arrived",
                        key[0], key[1], len(s.answers), s.expected, self.gather_timeout_s)
            s.partial = True
            self._close(s)

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, s in self.sessions.items() if s.closed and now - s.created > SESSION_TTL_S]:
            del self.sessions[key]

    # ------------------------------------------------------------------ aggregation (worker thread)
    async def _synthesise(self, snaps: list[Snapshot]) -> list[Guidance]:
        """One batch of closed sessions, on the batcher's loop (a scheduler participant: batches running at the
        same time merge their server-model calls). The context is only read here, never changed."""
        if self.aggregation == "concat":
            return [Guidance(answers_block(s.answers), list(s.clients)) for s in snaps]
        ctx = self.ctx
        chosen = [list(range(len(s.clients))) for s in snaps]
        ks = [contributors_k(self.params.top_k, len(s.clients)) for s in snaps]
        ranked = [j for j, s in enumerate(snaps) if len(s.clients) > ks[j]]
        if ranked:
            scores, _ = await relevance(ctx, [snaps[j].question for j in ranked], [snaps[j].descriptions for j in ranked],
                                  self.params.selection, self.selector, self.params.encoder)
            for j, sc in zip(ranked, scores):
                chosen[j] = top_k(sc, ks[j])
        calls = [Call(self.server, server_prompt(s.question, [s.answers[i] for i in c])) for s, c in zip(snaps, chosen)]
        with ctx.phase("test"):
            resps = await ctx.generate(calls, tag="colm server")
        return [Guidance(r.text, [s.clients[i] for i in c], r.error, r.tokens_in, r.tokens_out)
                for s, c, r in zip(snaps, chosen, resps)]

    def close(self) -> None:
        self.batcher.close()


def _question_and_answer(req: ChatRequest) -> tuple[str, str]:
    """The first user message is the question, the last assistant message the client's own answer."""
    users = [m for m in req.messages if m.role == "user"]
    answers = [m for m in req.messages if m.role == "assistant"]
    if not users or not answers or req.messages.index(answers[-1]) < req.messages.index(users[0]):
        raise ApiError(400, "messages must hold the question (user) followed by your answer (assistant)",
                       param="messages")
    return users[0].text(), answers[-1].text()
