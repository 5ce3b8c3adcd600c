"""Micro-batching: requests that arrive within a few milliseconds of each other run as one batch.

One worker thread owns the models. It waits for a first item, keeps collecting for `window_s` (or until
`max_batch` items), and hands the whole list to the handler — so 16 concurrent clients share forward
passes instead of queueing behind each other. Items that arrive while a batch runs form the next batch.

Limits: at most `max_pending` items wait or run at once (`submit` raises QueueFull beyond, the server's
429); with `time_limit_s`, an item has that long from `submit`: one whose time ran out while it waited fails
with TimeLimitReached before its batch runs, and a batch runs inside `time_limit.deadline(...)` (its latest
item's deadline), so local decoding stops there and frees the worker (models/time_limit.py); an item whose
caller gave up (its future cancelled) is dropped before its batch runs; and when a batch fails, each of its
items is run again alone, so one bad item fails only itself, never its batch neighbours.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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


class MicroBatcher(Generic[T, R]):
    """`submit(item)` returns a Future; `handler(items) -> results` runs in the worker, aligned with items.
    A handler exception on a batch re-runs its items one by one: only the item that fails alone fails.
    With `early=True` the handler is called as `handler(items, ready)` and may answer item i before the
    batch ends with `ready(i, result)` (a short request need not wait for a long one of its batch)."""

    def __init__(self, handler: Callable[[list[T]], list[R]], window_s: float = 0.005, max_batch: int = 32,
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
        self._q: queue.Queue[tuple[T, concurrent.futures.Future, float | None] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
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
        self._q.put((item, fut, None if limit is None else time.monotonic() + limit))
        return fut

    def _release(self, _fut: concurrent.futures.Future) -> None:
        with self._count_lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout=5)

    def _collect(self) -> list[tuple[T, concurrent.futures.Future, float | None]] | None:
        first = self._q.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._stop.set()
                break
            batch.append(nxt)
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
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
            t0 = time.monotonic()
            ends = [d for _, _, d in live if d is not None]
            try:
                with time_limit.deadline(max(ends) if ends else None):
                    self._run([(it, f) for it, f, _ in live])
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

    def _run(self, live: list[tuple[T, concurrent.futures.Future]]) -> None:
        live = [x for x in live if not x[1].done()]  # answered early by a batch that failed later
        if not live:
            return
        try:
            items = [it for it, _ in live]
            if self.early:
                results = self.handler(items, lambda i, r: live[i][1].done() or live[i][1].set_result(r))
            else:
                results = self.handler(items)
            if len(results) != len(live):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(live)} items")
        except Exception as e:  # noqa: BLE001 - isolate the item that fails
            if len(live) == 1 or time_limit.passed():  # past the deadline a re-run alone would stop at once
                for _, f in live:
                    f.set_exception(e)
                return
            log.warning("a batch of %d failed (%s: %s): running its items one by one", len(live), type(e).__name__, e)
            for pair in live:
                self._run([pair])
            return
        for (_, f), r in zip(live, results):
            if not f.done():
                f.set_result(r)
