"""Gateway: the one path every model call of a run takes.

`generate` takes a whole batch of calls (any mix of models): it builds each exact request (role prompt, chat
messages, a per-request seed derived from the cache key), serves what it can from the response cache, hands
the rest to the loop's scheduler (moco.scheduler: merged, length-sorted batches per backend, shared with the
other participants), writes each finished batch to the cache and to calls.jsonl, and returns responses
aligned with the calls. Cache keys, seeds, records and progress are made here and nowhere else; a composite
backend (a token-level method) gets all of it by being registered in the pool.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moco import scheduler
from moco.cache import ResponseCache, request_key, seed_from_key
from moco.calls import Call, Response
from moco.errors import BackendDown, ModelError
from moco.failures import Failures, account
from moco.models.base import GenRequest, GenResult, Message, SamplingParams, with_role_prompt
from moco.models.pool import ModelHandle, ModelPool
from moco.progress import Progress
from moco.tasks.base import Task
from moco.trace import CallRecorder

Done = dict[str, tuple[GenResult, bool]]  # key -> (result, served without decoding for this call)
log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Models, response cache, call records and progress of one run (what `RunContext.generate` stands on)."""

    pool: ModelPool
    cache: ResponseCache
    recorder: CallRecorder
    seed: int = 0
    progress: Progress = field(default_factory=Progress)

    def request(self, handle: ModelHandle, call: Call, default: SamplingParams) -> tuple[str, GenRequest]:
        """The cache key and the exact request `generate` sends for `call` (role prompt, per-request seed)."""
        msgs: list[Message] = [("user", call.prompt)] if isinstance(call.prompt, str) else [(r, c) for r, c in call.prompt]
        sampling = call.sampling or default
        req = GenRequest(with_role_prompt(msgs, handle.role_prompt), sampling, 0, call.prefix, tuple(call.images))
        key = request_key(self.pool.fingerprint(handle), req, self.seed, call.replica + handle.replica_offset)
        return key, GenRequest(req.messages, sampling, seed_from_key(key), call.prefix, req.images)

    async def generate(self, calls: Sequence[Call], default: SamplingParams, tag: str = "") -> list[Response]:
        """Run many calls at once; responses come back in the order of `calls`."""
        handles = [self.pool.handle(c.model) for c in calls]
        prepared = [self.request(h, c, default) for h, c in zip(handles, calls)]
        phase = self.recorder.phase
        where: dict[str, list[int]] = {}  # key -> positions in `calls` (identical calls run once)
        for pos, (key, _req) in enumerate(prepared):
            where.setdefault(key, []).append(pos)
        done: Done = {}
        for key, hit in self.cache.get_many(list(where)).items():
            if (hit.extra or {}).get("token_logprobs") is None and any(prepared[p][1].sampling.logprobs
                                                                        for p in where[key]):
                continue  # cached without log-probabilities: recompute (same seed, same text) and store them
            done[key] = (hit.to_result(), True)
            self._record(key, where[key], handles, done[key], tag, None, prepared, phase)
        bar = self.progress.task(f"{phase} {tag}".strip(), len(where)) if where else None
        self.progress.advance(bar, len(done))
        by_backend: dict[str, list[str]] = {}
        for key, positions in where.items():  # plan over all requests of a backend, cached ones included
            by_backend.setdefault(handles[positions[0]].backend_key, []).append(key)
        jobs = [self._job(keys, handles, where, prepared, done, bar, tag, phase)
                for keys in by_backend.values() if any(k not in done for k in keys)]
        if jobs:
            await scheduler.current().submit(jobs)
        self.progress.done(bar)
        self._stop_if_down([handles[where[j.keys[0]][0]] for j in jobs])
        return [_response(h, *done[key]) for h, (key, _req) in zip(handles, prepared)]

    def failures(self, task: Task, output_failed: Sequence[bool] = (), max_failed: float = 0) -> Failures:
        """The failed calls so far, traced to the dev and test items they belonged to (see failures.py)."""
        f = account(self.recorder.failures, task, list(output_failed), max_failed)
        if self.recorder.failures_untraced:  # beyond what the recorder keeps: each counts as a failed test item
            f.unattributed["test"] = f.unattributed.get("test", 0) + self.recorder.failures_untraced
            f.untraced_calls = self.recorder.failures_untraced
        return f

    async def generate_alone(self, call: Call, default: SamplingParams, decode: Callable[[Any, GenRequest], GenResult],
                             tag: str = "", cached: bool = True) -> Response:
        """One call decoded by itself with `decode(backend, request)` (a server streaming an answer as it is
        written): keyed, cached, recorded and counted like the calls of `generate`, and run by the scheduler as
        a job of its own. With `cached=False` it is decoded even when the cache holds it (the caller wants what
        only decoding gives: token log-probabilities). A failed decoding is a failed call, as a backend's."""
        handle = self.pool.handle(call.model)
        key, req = self.request(handle, call, default)
        prepared, where, phase = [(key, req)], {key: [0]}, self.recorder.phase
        done: Done = {}
        hit = self.cache.get_many([key]).get(key) if cached else None
        if hit is not None:
            done[key] = (hit.to_result(), True)
            self._record(key, [0], [handle], done[key], tag, None, prepared, phase)
        else:
            bar = self.progress.task(f"{phase} {tag}".strip(), 1)
            job = self._job([key], [handle], where, prepared, done, bar, tag, phase)
            job.decode = lambda reqs: [_decoded(decode, job.load(), handle.name, r) for r in reqs]
            await scheduler.current().submit([job])
            self.progress.done(bar)
            self._stop_if_down([handle])
        return _response(handle, *done[key])

    # ------------------------------------------------------------------ internals
    def _job(self, keys: list[str], handles: list[ModelHandle], where: dict[str, list[int]],
             prepared: list[tuple[str, GenRequest]], done: Done, bar: Any, tag: str, phase: str) -> scheduler.Job:
        """The requests of one backend, for the scheduler."""
        handle = handles[where[keys[0]][0]]
        reqs = {k: _widest(prepared, where[k]) for k in keys}
        if any(r.images for r in reqs.values()) and not self.pool.capabilities(handle).images:
            raise ModelError(f"model '{handle.name}' cannot read images (it is not a vision-language model)")
        fp = self.pool.fingerprint(handle)

        def deliver(rows: list[tuple[str, GenResult, bool]], batch: int) -> None:
            """Cache a finished batch whole and record it. A row marked shared was decoded in the same merged
            batch for another participant: it is recorded like a cache hit, so no token is counted twice."""
            self.cache.put_many([(k, fp, r) for k, r, _shared in rows])
            for k, r, shared in rows:
                done[k] = (r, shared)
                self._record(k, where[k], handles, done[k], tag, None if shared else batch, prepared, phase)
            self.progress.advance(bar, len(rows))

        return scheduler.Job(fp, lambda: self.pool.backend(handle), self.pool.is_remote(handle), keys, reqs, done,
                             deliver)

    def _record(self, key: str, positions: list[int], handles: list[ModelHandle], item: tuple[GenResult, bool],
                tag: str, batch: int | None, prepared: list[tuple[str, GenRequest]], phase: str) -> None:
        res, cached = item
        usage = (res.extra or {}).get("usage")
        for n, pos in enumerate(positions):  # identical calls of one generate are decoded once: the others are hits
            if usage:  # a composite backend (token-level method): one record per model it drove
                total = sum(a + b for a, b in usage.values()) or 1
                for name, (tin, tout) in usage.items():
                    self.recorder.record(model=name, key=key, tag=tag, tokens_in=tin, tokens_out=tout,
                                         latency=res.latency_s * (tin + tout) / total, cached=cached or n > 0,
                                         finish=res.finish_reason, error=res.error, batch=batch, phase=phase)
                continue
            prompt = "\n".join(c for _r, c in prepared[pos][1].messages) if res.error is not None else None
            self.recorder.record(model=handles[pos].name, key=key, tag=tag, tokens_in=res.tokens_in,
                                 tokens_out=res.tokens_out, latency=res.latency_s, cached=cached or n > 0,
                                 finish=res.finish_reason, error=res.error, batch=batch, reused=res.tokens_reused,
                                 prompt=prompt, phase=phase)

    def _stop_if_down(self, handles: Sequence[ModelHandle]) -> None:
        """Stop the run with one line when a backend of this call went down (its answered calls are cached)."""
        for h in {h.name: h for h in handles}.values():
            if not self.pool.is_remote(h):  # only served models go down; asking for a local one could reload it
                continue
            why = getattr(self.pool.backend(h), "down", None)
            if why:
                calls = self.recorder.failures
                first = next((c.error for c in calls if not c.error.startswith("backend down")), None)
                raise BackendDown(f"model '{h.name}' is down: {why}; {len(calls)} model calls failed"
                                  + (f", first: {first[:200]}" if first else "") + ". Answered calls are cached: "
                                  "re-run the same command when the server is back")


def _decoded(decode: Callable[[Any, GenRequest], GenResult], backend: Any, name: str, req: GenRequest) -> GenResult:
    try:
        return decode(backend, req)
    except Exception as e:  # noqa: BLE001 - the caller sees a failed call, as from a backend
        log.exception("the call to %s failed", name)
        return GenResult("", error=f"{type(e).__name__}: {e}", finish_reason="error")


def _response(handle: ModelHandle, res: GenResult, cached: bool) -> Response:
    return Response(res.text, handle.name, res.tokens_in, res.tokens_out, cached, res.error, res.token_logprobs,
                    res.top_logprobs, res.finish_reason, res.extra)


def _widest(prepared: list[tuple[str, GenRequest]], positions: list[int]) -> GenRequest:
    """Of identical calls, the one asking for log-probabilities if any (its result serves them all)."""
    return next((prepared[p][1] for p in positions if prepared[p][1].sampling.logprobs), prepared[positions[0]][1])
