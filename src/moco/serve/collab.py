"""Any configured collaboration served as one model: requests are batched into method calls.

The config is an experiment config (`moco run` format). Its models load once; its task, when given,
supplies the dev split (for methods that select or train on dev) and the scorer (for methods that compare
answers); without a task the requests form a generation-only pseudo-task. Concurrent requests that arrive
within the batching window run as ONE call of the method on a batch of test items — so every model call
of the collaboration is batched across clients. Requests with different sampling settings (max_tokens,
temperature, top_p) run as separate method calls of the same batch, since a method decodes with one
setting. Each method call runs in a context of its own (`StageContext.derive`) on the batcher's one event
loop, so batches running at the same time merge their model calls (moco.scheduler) and never share state.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco import aio, scheduler
from moco.cache import ResponseCache
from moco.config import ExperimentConfig
from moco.errors import ConfigError, MocoError
from moco.gateway import Gateway
from moco.progress import Progress
from moco.serve.batcher import MicroBatcher, QueueFull, TimeLimitReached, past_deadline
from moco.serve.final_stage import StageRequest, stage_info
from moco.serve.limits import chars_problem, context_problem
from moco.serve.protocol import ApiError, ChatMessage, ChatRequest, completion
from moco.serve.served_task import example_of, options_in, sampling_key
from moco.serve.startup import WARM_UP_PROMPT, ServedContext, StartupMemo
from moco.tasks.base import Example
from moco.trace import CallRecorder

log = logging.getLogger(__name__)


@dataclass
class Pending:
    example: Example
    max_new_tokens: int
    temperature: float
    top_p: float
    stops: tuple[str, ...] = ()
    want: StageRequest | None = None  # a stream or log-probabilities of the last stage (final_stage.py)


@dataclass
class Done:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_size: int = 1
    error: str | None = None
    status: int = 500  # of the error: 400 when the request itself cannot run (too long for a model), 504 at the time limit
    finish: str = "stop"  # length: the call that wrote the answer reached max_tokens (final_stage.py)


def cut_at_stops(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class CollaborationService:
    """One configured method over one loaded pool, answering chat requests in micro-batches."""

    role = "collaboration"

    def __init__(self, cfg: ExperimentConfig, *, has_task: bool, name: str | None = None,
                 cache: ResponseCache, data_dir: str | None = None, window_ms: float = 5.0, max_batch: int = 32,
                 log_dir: Path | None = None, backends: dict[str, Any] | None = None, max_pending: int = 256):
        self.cfg = cfg
        from moco.serve import serve_plan

        self.plan = serve_plan(cfg, has_task, data_dir, backends)
        base, scorer = self.plan.task, self.plan.scorer
        self.base_task = base
        self.name = name or cfg.name or f"moco-{self.plan.method.name}"
        self.max_new_tokens_cap = cfg.decoding.max_new_tokens
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        artifacts = (log_dir / "artifacts") if log_dir else Path(tempfile.mkdtemp(prefix="moco-serve-"))
        artifacts.mkdir(parents=True, exist_ok=True)
        self.recorder = CallRecorder(log_dir / "calls.jsonl" if log_dir else None)
        self.memo = StartupMemo(cache, self.recorder)
        self.gateway = Gateway(self.plan.pool, self.memo, self.recorder, cfg.seed)
        self.ctx = ServedContext(pool=self.plan.pool, task=base, scorer=scorer, cache=self.memo,
                                 recorder=self.recorder, configured=cfg.decoding, seed=cfg.seed,
                                 artifacts_dir=artifacts, roles=self.plan.roles, gateway=self.gateway)
        self.batcher: MicroBatcher[Pending, Done] = MicroBatcher(self._handle, window_ms / 1000.0, max_batch,
                                                                 max_pending=max_pending, early=True)
        self.requests = 0
        self.starting = False  # True while warm_up runs (/health answers 503 "starting")

    # ------------------------------------------------------------------ start-up
    def warm_up(self, progress: Progress | None = None) -> str:
        """Run the method once on one warm-up item before serving (see `moco.serve.startup`): dev work and
        model loading happen here; a failure is a one-line refusal to start. Returns what it did, for stderr."""
        g = self.cfg.decoding
        prompt = self.base_task.dev[0].prompt if self.base_task.dev else WARM_UP_PROMPT
        ex = example_of([ChatMessage(role="user", content=prompt)], 0)
        own = self.base_task.dev[0].choices if self.base_task.dev else None  # the dev item's options (no gold)
        ex = dataclasses.replace(ex, choices=own) if own else self.with_options(ex)
        item = Pending(ex, g.max_new_tokens, g.temperature, g.top_p)
        t0, self.starting = time.time(), True
        if progress is not None:
            self.gateway.progress = progress
        try:
            done = aio.run(scheduler.current_participant(self._run_group([item])))[0]
        except MocoError as e:
            raise ConfigError(f"{self.plan.method.name} cannot serve: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - a method's bug refuses the start with its message
            log.info("the start-up run failed", exc_info=True)  # the traceback with --debug
            raise ConfigError(f"{self.plan.method.name} failed its start-up run: {type(e).__name__}: "
                              f"{_first_line(e)}") from None
        finally:
            self.memo.recording = self.starting = False
            self.gateway.progress = Progress()
        if done.error:
            raise ConfigError(f"{self.plan.method.name} failed its start-up run: {_first_line(done.error)}")
        ph = self.recorder.phases
        dev_calls = sum(s.calls for name, s in ph.items() if name != "test")
        return (f"start-up run done in {time.time() - t0:.1f}s ({dev_calls} dev-phase calls kept for every "
                f"request, {ph['test'].calls if 'test' in ph else 0} on the warm-up item)")

    # ------------------------------------------------------------------ requests
    def describe(self) -> dict[str, Any]:
        return {"method": self.plan.method.name, "models": [h.name for h in self.plan.pool.handles],
                "task": self.base_task.name, "roles": {r: h.name for r, h in self.plan.roles.items()},
                **stage_info(self.ctx)}

    def with_options(self, ex: Example) -> Example:
        """On a multiple-choice task, the request's listed options become the item's choices, so answers are
        read (and compared, voted on) by option as on the task's own items."""
        if self.base_task.task_type != "multiple_choice":
            return ex
        return dataclasses.replace(ex, choices=options_in(ex.prompt))

    def pending(self, req: ChatRequest) -> Pending:
        if req.messages[-1].role != "user":
            raise ApiError(400, "the last message must come from the user", param="messages")
        g = self.cfg.decoding
        n = req.max_new_tokens or g.max_new_tokens
        if n > self.max_new_tokens_cap:
            raise ApiError(400, f"max_tokens {n} exceeds this server's limit of {self.max_new_tokens_cap}",
                           param="max_tokens")
        temp = g.temperature if req.temperature is None else req.temperature
        top_p = g.top_p if req.top_p is None else req.top_p
        ex = self.with_options(example_of(req.messages, 0))
        too_long = chars_problem(ex.prompt)
        if too_long:
            raise ApiError(400, too_long, param="messages", code="context_length_exceeded")
        return Pending(ex, n, temp, top_p, req.stops)

    def set_time_limit(self, seconds: float | None) -> None:
        """Each request has `seconds` from its arrival; local decoding stops there (serve/batcher.py)."""
        self.batcher.time_limit_s = seconds

    async def complete(self, req: ChatRequest, want: StageRequest | None = None) -> dict[str, Any]:
        p = self.pending(req)
        p.want = want
        self.requests += 1
        try:
            fut = self.batcher.submit(p)
        except QueueFull as e:
            raise ApiError(429, f"the server is busy: {e}; retry later", kind="server_error",
                           code="server_busy") from None
        try:
            done: Done = await asyncio.wrap_future(fut)
        except TimeLimitReached as e:
            raise ApiError(504, str(e), kind="server_error", code="timeout") from None
        if done.error and done.status == 504:
            raise ApiError(504, done.error, kind="server_error", code="timeout")
        if done.error and done.status == 400:
            raise ApiError(400, done.error, param="messages", code="context_length_exceeded")
        if done.error and done.status == 422:
            raise ApiError(422, done.error, param="messages", code="options_missing")
        if done.error:
            raise ApiError(500, f"the collaboration failed: {done.error}", kind="server_error", code="moco_error")
        return completion(self.name, done.text, done.prompt_tokens, done.completion_tokens, done.finish,
                          extra={"method": self.plan.method.name, "batch_size": done.batch_size})

    # ------------------------------------------------------------------ the worker's loop
    async def _handle(self, items: list[Pending], ready: Callable[[int, Done], Any] = lambda i, d: None) -> list[Done]:
        """One batch (a participant of the worker loop's scheduler: its model calls merge with those of the
        batches running beside it). Its groups run shortest max_tokens first, and each group's answers go out
        as soon as it ends: a group merged into the backend batches of a longer one would wait for its end."""
        groups: dict[tuple, list[int]] = {}
        out: list[Done | None] = [None] * len(items)
        for i, p in enumerate(items):
            too_long = context_problem(self.plan.pool, p.example.prompt, p.max_new_tokens)
            if too_long:  # refused alone: its batch neighbours run
                out[i] = Done("", error=too_long, status=400)
                continue
            groups.setdefault(sampling_key(p.max_new_tokens, p.temperature, p.top_p), []).append(i)
        for key in sorted(groups, key=lambda k: k[0]):  # shortest max_tokens first: a long group cannot delay them
            idx = groups[key]
            for i, r in zip(idx, await self._run_isolated([items[i] for i in idx])):
                out[i] = r
                ready(i, r)
        return [o for o in out if o is not None]

    async def _run_isolated(self, group: list[Pending]) -> list[Done]:
        """Run a group; when it fails, run its requests one by one, so only a request that fails alone fails."""
        try:
            return await self._run_group(group)
        except Exception as e:  # noqa: BLE001 - a bug in a method fails its requests, not the server
            if past_deadline():  # stopped at the time limit: a re-run would stop at once
                return [_timed_out() for _ in group]
            if len(group) > 1:
                log.warning("a batch of %d failed (%s: %s): running its requests one by one", len(group),
                            type(e).__name__, e)
                return [d for p in group for d in await self._run_isolated([p])]
            if isinstance(e, MocoError):
                return [Done("", error=str(e))]
            log.exception("method %s failed", self.plan.method.name)
            return [Done("", error=f"{type(e).__name__}: {e}")]

    def context_for(self, items: list[Pending]) -> ServedContext:
        """The group's own context: its requests as the test items, its sampling; the rest shared (see derive)."""
        p0 = items[0]
        test = [dataclasses.replace(p.example, index=i) for i, p in enumerate(items)]
        decoding = self.cfg.decoding.model_copy(
            update={"max_new_tokens": p0.max_new_tokens, "temperature": p0.temperature, "top_p": p0.top_p})
        return self.ctx.derive(dataclasses.replace(self.base_task, test=test), decoding)

    async def _run_group(self, items: list[Pending]) -> list[Done]:
        ctx = self.context_for(items)
        outputs = await ctx.run_method(self.plan.method, self.plan.params, [p.want for p in items])
        if len(outputs) != len(items):
            raise RuntimeError(f"method returned {len(outputs)} outputs for {len(items)} requests")
        n = len(items)
        share_in, share_out = _split(ctx.tokens[0], n), _split(ctx.tokens[1], n)
        done = []
        for k, (p, o) in enumerate(zip(items, outputs)):
            if o.failed:
                done.append(_timed_out() if past_deadline() else Done("", error="a model call failed (see the server log)"))
                continue
            if not o.text.strip() and self.base_task.task_type == "multiple_choice" and not p.example.choices:
                done.append(Done("", error=f"no answer: this server's task '{self.base_task.name}' is multiple "
                                 "choice and the models' answers are read by option, but the request lists no "
                                 "options (write them as lines 'A) ...', 'B) ...')", status=422))
                continue
            text, stopped = cut_at_stops(o.text, p.stops)
            finish = "stop" if stopped or not ctx.finishes else ctx.finishes[k]
            done.append(Done(text, share_in[k], share_out[k], n, finish=finish))
        return done

    def close(self) -> None:
        self.batcher.close()
        self.recorder.close()


def _timed_out() -> Done:
    return Done("", error="no answer within this server's time limit: decoding stopped", status=504)


def _first_line(e: object) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _split(total: int, n: int) -> list[int]:
    """Tokens of a batch shared evenly among its requests (the first ones take the remainder)."""
    q, r = divmod(max(0, total), n)
    return [q + (1 if i < r else 0) for i in range(n)]
