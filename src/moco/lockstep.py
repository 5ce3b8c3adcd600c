"""Run several experiments at once so their model calls share batches (what `moco compare` does with cells).

Each experiment runs in its own thread, but only one thread runs at a time: it holds the baton until it
asks for generation (`RunContext.generate`) or finishes. When every live experiment is waiting for
generation, their requests are merged: per backend, identical requests (same cache key) run once and the
rest is planned into full, length-sorted batches over all of them. So the leftover calls of each method
(the refinements, feedback, aggregations that no other cell shares) no longer run in small batches of
their own, and a request two cells ask for at the same moment is decoded once.

Because one thread runs at a time in a fixed order, the merged batches do not depend on thread timing, and
methods that drive a model directly (token-level steppers, weight merging, training) run alone as before.
"""
from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moco import faults
from moco.models.base import GenRequest, GenResult

_local = threading.local()


class Aborted(BaseException):
    """Raised in the other experiments when one of them was stopped by an exception that is not an error."""


@dataclass(eq=False)
class Job:
    """One RunContext's requests for one backend: what `_run_backend` would have run alone."""

    ctx: Any  # RunContext
    handle: Any  # ModelHandle
    keys: list[str]
    requests: dict[str, GenRequest]  # key -> request (the one asking for log-probabilities if any)
    done: dict[str, tuple[GenResult, bool]]
    deliver: Callable[[list[tuple[str, GenResult, bool]], int], None]  # per batch: this job's rows, batch number


@dataclass(eq=False)
class _Submission:
    worker: int
    jobs: list[Job]
    error: BaseException | None = None


@dataclass
class Lockstep:
    """A baton passed between experiment threads, and the merged generation when all of them wait."""

    batches: int = 0  # merged backend batches run (for tests and benchmarks)
    shared_rows: int = 0  # rows served to a second experiment from a batch run for another one
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _ready: deque = field(default_factory=deque)
    _pending: list[_Submission] = field(default_factory=list)
    _turn: int | None = None
    _abort: BaseException | None = None

    def map(self, fn: Callable[[Any], None], items: Iterable[Any], width: int) -> None:
        """Run fn(item) for every item, at most `width` at a time, merging their generation; re-raises the first
        exception that escaped fn (fn is expected to record its own errors)."""
        source = iter(items)

        def take() -> tuple[bool, Any]:  # only the thread holding the baton takes: no lock needed
            for item in source:
                return True, item
            return False, None

        threads = [threading.Thread(target=self._worker, args=(w, fn, take), daemon=True, name=f"moco-cell-{w}")
                   for w in range(max(1, width))]
        with self._cv:
            self._ready.extend(range(len(threads)))
            self._turn = self._ready.popleft()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short joins: Ctrl-C reaches the main thread
        except BaseException as e:  # Ctrl-C: the others stop at their next turn instead of running on
            with self._cv:
                self._abort = self._abort or e
                self._cv.notify_all()
            raise
        if self._abort is not None and not isinstance(self._abort, Aborted):
            raise self._abort

    def _worker(self, w: int, fn: Callable[[Any], None], take: Callable[[], tuple[bool, Any]]) -> None:
        _local.lockstep, _local.worker = self, w
        try:
            with self._cv:
                self._wait_turn(w)
            while True:
                more, item = take()  # under the baton: cells are handed out in order
                if not more:
                    break
                fn(item)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            with self._cv:
                if self._abort is None:
                    self._abort = e
        finally:
            with self._cv:
                self._release()

    def _wait_turn(self, w: int) -> None:
        self._cv.wait_for(lambda: self._turn == w or self._abort is not None)
        if self._abort is not None and self._turn != w:
            raise Aborted()

    def _release(self) -> None:
        """Give the baton to the next ready experiment; when none is ready, run what the waiting ones asked for.
        Called with the condition held."""
        while not self._ready and self._pending and self._abort is None:
            subs, self._pending = self._pending, []
            self._turn = -1  # nobody runs while the merged batches decode
            self._cv.release()
            try:
                self._flush(subs)
            except BaseException as e:  # noqa: BLE001 - a failure outside any backend: every waiting experiment
                for s in subs:          # sees it rather than all of them waiting for a baton nobody passes
                    s.error = s.error or e
            finally:
                self._cv.acquire()
            self._ready.extend(s.worker for s in subs)
        self._turn = self._ready.popleft() if self._ready and self._abort is None else None
        self._cv.notify_all()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Called by the experiment holding the baton: wait until these jobs ran (merged with the others')."""
        w = _local.worker
        sub = _Submission(w, list(jobs))
        with self._cv:
            self._pending.append(sub)
            self._release()
            self._wait_turn(w)
        if sub.error is not None:
            raise sub.error

    # ------------------------------------------------------------------ merged generation
    def _flush(self, subs: list[_Submission]) -> None:
        groups: dict[int, tuple[Any, list[tuple[_Submission, Job]]]] = {}
        for s in subs:
            for j in s.jobs:
                try:
                    backend = j.ctx.pool.backend(j.handle)
                except BaseException as e:  # noqa: BLE001 - a model that cannot load fails its experiment only
                    s.error = s.error or e
                    continue
                groups.setdefault(id(backend), (backend, []))[1].append((s, j))
        remote, local = [], []
        for g in groups.values():  # remote engines work while local models decode
            (remote if any(j.ctx.pool.is_remote(j.handle) for _s, j in g[1]) else local).append(g)
        deliver = threading.Lock()
        overlapped([functools.partial(self._run_group, b, g, deliver) for b, g in remote],
                   [functools.partial(self._run_group, b, g, deliver) for b, g in local])

    def _run_group(self, backend: Any, group: list[tuple[_Submission, Job]], deliver: threading.Lock) -> None:
        """Plan batches over every request of every job of this backend (cached ones included, so batches are
        planned the same way on a resumed run) and generate each batch's missing rows once."""
        reqs: dict[str, GenRequest] = {}
        for _s, j in group:
            for k in j.keys:
                if k not in reqs or (j.requests[k].sampling.logprobs and not reqs[k].sampling.logprobs):
                    reqs[k] = j.requests[k]
        keys = list(reqs)
        try:
            for batch in backend.plan_batches([reqs[k] for k in keys]):
                wanted = [keys[i] for i in batch]
                missing = [k for k in wanted if any(k in j.requests and k not in j.done for _s, j in group)]
                if not missing:
                    continue
                results = dict(zip(missing, backend.generate([reqs[k] for k in missing])))
                faults.hit("generate.batch")
                with deliver:
                    self.batches += 1
                    owned: set[str] = set()
                    for _s, j in group:
                        rows = []
                        for k in missing:
                            if k in j.requests and k not in j.done:
                                rows.append((k, results[k], k in owned))  # second asker: shared, like a cache hit
                                self.shared_rows += k in owned
                                owned.add(k)
                        if rows:
                            j.deliver(rows, self.batches)
        except BaseException as e:  # noqa: BLE001 - every experiment that asked this backend sees the error
            for s, _j in group:
                s.error = s.error or e


def overlapped(remote: list[Callable[[], None]], local: list[Callable[[], None]]) -> None:
    """Run the remote-engine work in threads while the local models' work runs here (remote engines wait on the
    network, local models need the CPU/GPU); re-raises the first error of the remote work."""
    if not remote:
        for fn in local:
            fn()
        return
    with concurrent.futures.ThreadPoolExecutor(len(remote), thread_name_prefix="moco-remote") as ex:
        futures = [ex.submit(fn) for fn in remote]
        for fn in local:
            fn()
        for f in futures:
            f.result()


def current() -> Lockstep | None:
    """The lockstep this thread's experiment runs in, if any."""
    return getattr(_local, "lockstep", None)
