"""Micro-batching: requests that arrive within a few milliseconds of each other run as one batch.

One worker thread owns the models. It waits for a first item, keeps collecting for `window_s` (or until
`max_batch` items), and hands the whole list to the handler — so 16 concurrent clients share forward
passes instead of queueing behind each other. Items that arrive while a batch runs form the next batch.
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


class MicroBatcher(Generic[T, R]):
    """`submit(item)` returns a Future; `handler(items) -> results` runs in the worker, aligned with items.
    A handler exception fails every item of its batch."""

    def __init__(self, handler: Callable[[list[T]], list[R]], window_s: float = 0.005, max_batch: int = 32,
                 name: str = "moco-batcher"):
        self.handler = handler
        self.window_s = max(0.0, window_s)
        self.max_batch = max(1, max_batch)
        self.stats = BatchStats()
        self._q: queue.Queue[tuple[T, concurrent.futures.Future] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> concurrent.futures.Future:
        if self._stop.is_set():
            raise RuntimeError("the batcher is closed")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put((item, fut))
        return fut

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout=5)

    def _collect(self) -> list[tuple[T, concurrent.futures.Future]] | None:
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
            live = [(it, f) for it, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            t0 = time.monotonic()
            try:
                results = self.handler([it for it, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch handler returned {len(results)} results for {len(live)} items")
            except BaseException as e:  # noqa: BLE001 - every waiter must learn of the failure
                log.exception("batch of %d failed", len(live))
                for _, f in live:
                    f.set_exception(e)
            else:
                for (_, f), r in zip(live, results):
                    f.set_result(r)
            s = self.stats
            s.batches += 1
            s.items += len(live)
            s.largest = max(s.largest, len(live))
            s.busy_s += time.monotonic() - t0
            s.sizes = (s.sizes + [len(live)])[-1000:]
