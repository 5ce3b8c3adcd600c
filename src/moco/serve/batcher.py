"""Micro-batching: requests that arrive within a few milliseconds of each other run as one batch.

One worker thread owns the models and runs one event loop for its whole life. It waits for a first item,
keeps collecting for `window_s` (or until `max_batch` items), and hands the whole list to the handler — so 16
concurrent clients share forward passes instead of queueing behind each other. An async handler's batch
runs as a task on that loop, a participant of its scheduler (moco.scheduler): items that arrive while a
batch runs form the next batch, which starts at once, and the model calls of batches running together are
decoded in merged backend batches under the lockstep rule, as the cells of a sweep are. A plain (sync)
handler blocks the loop while it runs, so its batches run one after the other.

Limits: at most `max_pending` items wait or run at once (`submit` raises QueueFull beyond, the server's
429); with `time_limit_s`, an item has that long from `submit`: one whose time ran out while it waited fails
with TimeLimitReached before its batch runs, and each batch has its latest item's deadline (`past_deadline()`
inside the batch says whether it passed). Local decoding on the worker thread stops at the latest deadline of
the batches running at that moment (`time_limit.deadline`, models/time_limit.py), so no batch is stopped
before its own time and the worker is freed once every running batch's time is up; an item whose caller
gave up (its future cancelled) is dropped before its batch runs; and when a batch fails, each of its items
is run again alone, so one bad item fails only itself, never its batch neighbours.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from moco import aio, scheduler
from moco.models import time_limit

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0
    sizes: list[int] = field(default_factory=list)  # the last 1000 batch sizes

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest,
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
                "busy_s": round(self.busy_s, 3), "recent_sizes": self.sizes[-50:]}


class QueueFull(Exception):
    """More items are waiting or running than the batcher accepts."""


class TimeLimitReached(Exception):
    """The item's time limit passed before it had an answer."""


Entry = tuple[Any, concurrent.futures.Future, "float | None"]  # item, its future, its deadline
_batch_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("moco_batch_deadline", default=None)


def past_deadline() -> bool:
    """Inside a batch: whether its deadline (its latest item's) has passed. Outside one: whether the worker
    thread's decoding deadline has."""
    at = _batch_deadline.get()
    return time_limit.passed() if at is None else time.monotonic() >= at


class MicroBatcher(Generic[T, R]):
    """`submit(item)` returns a Future; `handler(items) -> results` runs in the worker, aligned with items (an
    `async def` handler is awaited on the worker's loop, its batches running concurrently). A handler
    exception on a batch re-runs its items one by one: only the item that fails alone fails. With
    `early=True` the handler is called as `handler(items, ready)` and may answer item i before the batch
    ends with `ready(i, result)` (a short request need not wait for a long one of its batch)."""

    def __init__(self, handler: Callable[..., Any], window_s: float = 0.005, max_batch: int = 32,
                 name: str = "moco-batcher", max_pending: int | None = None, time_limit_s: float | None = None,
                 early: bool = False):
        self.handler = handler
        self.window_s = max(0.0, window_s)
        self.max_batch = max(1, max_batch)
        self.max_pending = max_pending
        self.time_limit_s = time_limit_s
        self.early = early
        self.stats = BatchStats()
        self._pending = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._q: asyncio.Queue[Entry | None] = asyncio.Queue()
        self._running: dict[asyncio.Task, float | None] = {}  # batch task -> its deadline
        self._limit: contextlib.AbstractContextManager | None = None  # the worker thread's decoding deadline
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> concurrent.futures.Future:
        if self._stop.is_set():
            raise RuntimeError("the batcher is closed")
        with self._count_lock:
            if self.max_pending is not None and self._pending >= self.max_pending:
                raise QueueFull(f"{self._pending} requests are waiting or running (the limit is {self.max_pending})")
            self._pending += 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.add_done_callback(self._release)
        limit = self.time_limit_s
        self._loop.call_soon_threadsafe(self._q.put_nowait, (item, fut, None if limit is None else time.monotonic() + limit))
        return fut

    def run_now(self, items: list[T]) -> list[R]:
        """Call the handler on `items` in the calling thread, outside the queue and its limits (start-up work
        before the port opens, while the worker is idle). An async handler runs on a loop of its own."""
        out = self.handler(items)
        return aio.run(out) if inspect.isawaitable(out) else out

    def _release(self, _fut: concurrent.futures.Future) -> None:
        with self._count_lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(self._q.put_nowait, None)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ the worker thread
    def _work(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._set_limit(None)
            asyncio.set_event_loop(None)
            self._loop.close()

    async def _collect(self) -> list[Entry] | None:
        first = await self._q.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = await asyncio.wait_for(self._q.get(), left) if left > 0 else self._q.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if nxt is None:
                self._stop.set()
                break
            batch.append(nxt)
        return batch

    async def _serve(self) -> None:
        while not self._stop.is_set():
            batch = await self._collect()
            if batch is None:
                break
            live = [(it, f, d) for it, f, d in batch if f.set_running_or_notify_cancel()]
            now = time.monotonic()
            for _, f, d in live:
                if d is not None and d <= now:  # its time ran out in the queue: it never runs
                    f.set_exception(TimeLimitReached(f"no answer within the time limit of {self.time_limit_s:g} s"))
            live = [x for x in live if not x[1].done()]
            if not live:
                continue
            ends = [d for _, _, d in live if d is not None]
            at = max(ends) if len(ends) == len(live) else None
            task = self._loop.create_task(self._batch(live, at), context=contextvars.Context())
            self._running[task] = at
            self._set_limit(self._latest())
            task.add_done_callback(self._ended)
            await asyncio.sleep(0)  # the batch starts (a sync handler runs to its end) before the next is collected
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _batch(self, live: list[Entry], at: float | None) -> None:
        """One batch, as a participant of the loop's scheduler (it merges its model calls with the others')."""
        _batch_deadline.set(at)
        t0 = time.monotonic()
        try:
            await scheduler.current_participant(self._run([(it, f) for it, f, _ in live]))
        except BaseException as e:  # noqa: BLE001 - every waiter must learn of the failure
            log.exception("batch of %d failed", len(live))
            for _, f, _ in live:
                if not f.done():
                    f.set_exception(e)
        s = self.stats
        s.batches += 1
        s.items += len(live)
        s.largest = max(s.largest, len(live))
        s.busy_s += time.monotonic() - t0
        s.sizes = (s.sizes + [len(live)])[-1000:]

    def _ended(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        self._set_limit(self._latest())

    def _latest(self) -> float | None:
        """The decoding deadline of the worker thread: the latest of the running batches' (None: no limit)."""
        ends = list(self._running.values())
        return None if not ends or None in ends else max(e for e in ends if e is not None)

    def _set_limit(self, at: float | None) -> None:
        if self._limit is not None:
            self._limit.__exit__(None, None, None)
            self._limit = None
        if at is not None:
            self._limit = time_limit.deadline(at)
            self._limit.__enter__()

    async def _run(self, live: list[tuple[T, concurrent.futures.Future]]) -> None:
        live = [x for x in live if not x[1].done()]  # answered early by a batch that failed later
        if not live:
            return
        try:
            items = [it for it, _ in live]
            if self.early:
                results = self.handler(items, lambda i, r: live[i][1].done() or live[i][1].set_result(r))
            else:
                results = self.handler(items)
            if inspect.isawaitable(results):
                results = await results
            if len(results) != len(live):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(live)} items")
        except Exception as e:  # noqa: BLE001 - isolate the item that fails
            if len(live) == 1 or past_deadline():  # past the deadline a re-run alone would stop at once
                for _, f in live:
                    f.set_exception(e)
                return
            log.warning("a batch of %d failed (%s: %s): running its items one by one", len(live), type(e).__name__, e)
            for pair in live:
                await self._run([pair])
            return
        for (_, f), r in zip(live, results):
            if not f.done():
                f.set_result(r)
