"""One scheduler per event loop: the requests of every task on the loop are decoded in merged batches.

Every `RunContext.generate` hands the requests its cache could not serve (per backend, a `Job`) to the
scheduler of the running loop and waits. Tasks registered as participants (a run's method, each cell of a
sweep, each batch a server is answering) are merged under the lockstep rule: the scheduler decodes when every
live participant is waiting for generation, so the leftover calls of each method (refinements, feedback,
aggregations no other cell shares) join full batches, and a request two participants ask for at the same
moment is decoded once. Submissions are ordered by participant, then by arrival, so the merged batches do
not depend on timing: a resumed or repeated run forms the same batches.

Local models decode on the loop's thread (one forward pass at a time: they need the CPU/GPU, and Ctrl-C
interrupts them as in synchronous code); backends marked `remote` (servers, Ray actors) run in worker threads
meanwhile, since they only wait on other processes. A participant that awaits something else (an HTTP call of
its own, a sleep) simply is not waiting for generation: the others wait for it, as the lockstep rule says.
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from moco import faults
from moco.models.base import GenRequest, GenResult

T = TypeVar("T")
Rows = list[tuple[str, GenResult, bool]]  # key, result, shared (decoded for another participant: like a hit)

_participant: contextvars.ContextVar[int | None] = contextvars.ContextVar("moco_participant", default=None)
_schedulers: dict[int, Scheduler] = {}  # id(loop) -> its scheduler


@dataclass(eq=False)
class Job:
    """One context's missing requests for one backend."""

    model: str  # what the backend computes (the weights' fingerprint): jobs of equal `model` share batches
    load: Callable[[], Any]  # the backend, loaded when its turn comes (a model under a memory budget loads once)
    remote: bool  # the backend waits on other processes (a server, Ray actors): it decodes in a worker thread
    keys: list[str]  # every request of this backend in the call, cached ones included (batches are planned over all)
    requests: dict[str, GenRequest]  # key -> request (the one asking for log-probabilities if any)
    done: dict[str, Any]  # key -> (result, cached) of the calling context: what is already answered
    deliver: Callable[[Rows, int], None]  # one finished batch: this job's rows, the merged batch number
    decode: Callable[[list[GenRequest]], list[GenResult]] | None = None  # set: decoded alone by it (a streamed answer)


@dataclass(eq=False)
class _Submission:
    order: tuple[int, int]  # (participant, arrival): the deterministic merge order
    jobs: list[Job]
    future: asyncio.Future[None]


@dataclass
class Scheduler:
    """The waiting requests of one loop's tasks, decoded when all live participants wait."""

    overlap_remote: ClassVar[bool] = True  # remote backends decode while local ones do (False: one after the other)

    batches: int = 0  # merged backend batches run (for tests and benchmarks)
    shared_rows: int = 0  # rows served to a second participant from a batch decoded for another
    _live: set[int] = field(default_factory=set)
    _pending: list[_Submission] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)
    _flushing: bool = False
    _check_scheduled: bool = False
    loop: asyncio.AbstractEventLoop | None = None

    async def participate(self, work: Awaitable[T]) -> T:
        """Run `work` as one participant: the scheduler waits for it before decoding a merged batch (work done
        inside a participant, e.g. a sweep cell's run, belongs to that participant)."""
        if _participant.get() is not None:
            return await work
        pid = next(self._ids)
        self._live.add(pid)
        token = _participant.set(pid)
        try:
            return await work
        finally:
            _participant.reset(token)
            self._live.discard(pid)
            self._schedule_check()

    async def gather(self, works: Sequence[Awaitable[T]], width: int | None = None) -> list[T | BaseException]:
        """Run the works as participants, at most `width` at a time (in order); each result or its exception."""
        sem = asyncio.Semaphore(width or max(1, len(works)))

        async def one(w: Awaitable[T]) -> T:
            async with sem:
                return await self.participate(w)

        return list(await asyncio.gather(*(one(w) for w in works), return_exceptions=True))

    async def submit(self, jobs: Sequence[Job]) -> None:
        """Wait until these jobs' requests are decoded (merged with the other participants')."""
        pid = _participant.get()
        me = -1 - next(self._ids) if pid is None else pid  # not a participant: nobody waits for it
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Submission((me, next(self._arrivals)), list(jobs), fut))
        self._schedule_check()
        await fut

    # ------------------------------------------------------------------ when to decode
    def _schedule_check(self) -> None:
        """Check on the next turn of the loop, so calls a participant makes together (asyncio.gather) merge."""
        if not self._check_scheduled:
            self._check_scheduled = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._check_scheduled = False
        if self._flushing or not self._pending:
            return
        waiting = {s.order[0] for s in self._pending}
        if self._live <= waiting:
            subs = sorted(self._pending, key=lambda s: s.order)
            self._pending = []
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush(subs))

    async def _flush(self, subs: list[_Submission]) -> None:
        errors: dict[int, BaseException] = {}
        try:
            groups: dict[str, list[tuple[int, Job]]] = {}  # grouped before any backend loads
            for n, s in enumerate(subs):
                for j in s.jobs:
                    groups.setdefault(f"alone:{id(j)}" if j.decode else j.model, []).append((n, j))
            remote = [g for g in groups.values() if any(j.remote for _n, j in g)]
            local = [g for g in groups.values() if not any(j.remote for _n, j in g)]
            if not self.overlap_remote:
                for g in remote:
                    await self._run_group(g, errors, remote=True)
                remote = []
            tasks = [asyncio.ensure_future(self._run_group(g, errors, remote=True)) for g in remote]
            if tasks:
                await asyncio.sleep(0)  # the remote work starts before the local decoding blocks the loop
            for g in local:
                await self._run_group(g, errors, remote=False)
            if tasks:
                await asyncio.gather(*tasks)
        except Exception as e:  # noqa: BLE001 - outside any backend: every waiting participant sees it
            for n in range(len(subs)):
                errors.setdefault(n, e)
        except BaseException as e:  # noqa: BLE001 - Ctrl-C while decoding: raised in every waiting participant
            for n in range(len(subs)):
                errors.setdefault(n, e)
        finally:
            self._flushing = False
            for n, s in enumerate(subs):
                if s.future.done():
                    continue
                if n in errors:
                    s.future.set_exception(errors[n])
                else:
                    s.future.set_result(None)
            self._schedule_check()

    async def _run_group(self, group: list[tuple[int, Job]], errors: dict[int, BaseException], *,
                         remote: bool) -> None:
        """Plan batches over every request of every job of this backend (cached ones included, so a resumed
        run plans the same batches) and decode each batch's missing rows once."""
        try:
            backend = group[0][1].load()
        except Exception as e:  # noqa: BLE001 - a model that cannot load fails the participants that asked it
            for n, _j in group:
                errors.setdefault(n, e)
            return
        reqs: dict[str, GenRequest] = {}
        for _n, j in group:
            for k in j.keys:
                if k not in reqs or (j.requests[k].sampling.logprobs and not reqs[k].sampling.logprobs):
                    reqs[k] = j.requests[k]
        keys = list(reqs)
        try:
            for batch in backend.plan_batches([reqs[k] for k in keys]):
                wanted = [keys[i] for i in batch]
                missing = [k for k in wanted if any(k in j.requests and k not in j.done for _n, j in group)]
                if not missing:
                    continue
                if getattr(backend, "down", None):  # a dead server: the rest would fail at once; generate stops
                    break
                todo = [reqs[k] for k in missing]
                run = group[0][1].decode or backend.generate  # a job with its own decoding is a group alone
                out = await asyncio.to_thread(run, todo) if remote else run(todo)
                results = dict(zip(missing, out))
                faults.hit("generate.batch")
                self.batches += 1
                owned: set[str] = set()
                for _n, j in group:
                    rows = [(k, results[k], k in owned) for k in missing if k in j.requests and k not in j.done]
                    for k, _r, shared in rows:
                        self.shared_rows += shared
                        owned.add(k)
                    if rows:
                        j.deliver(rows, self.batches)
        except Exception as e:  # noqa: BLE001 - every participant that asked this backend sees the error
            for n, _j in group:
                errors.setdefault(n, e)


async def current_participant(work: Awaitable[T]) -> T:
    """Run `work` as a participant of the running loop's scheduler (a run's method, a server's batch)."""
    return await current().participate(work)


def current() -> Scheduler:
    """The scheduler of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    sched = _schedulers.get(id(loop))
    if sched is None or sched.loop is not loop:  # a new loop may reuse a closed one's id
        for k in [k for k, s in _schedulers.items() if s.loop is None or s.loop.is_closed()]:
            del _schedulers[k]
        sched = _schedulers[id(loop)] = Scheduler(loop=loop)
    return sched
