"""`moco serve` does its dev work before the port opens, so the first request is as fast as the rest.

The method runs once at start-up on one warm-up item (the first dev item's prompt, else a fixed greeting):
models load, dev selection, training and search happen, and a method that cannot serve fails here — a one-line
refusal instead of a server that answers 500. What that run computed outside the test phase (dev answers,
their scores, rollouts) is kept in memory (`StartupMemo`) and reused by every later batch, even with
`--no-cache`, so the collaboration served is the one chosen at start; dev-phase calls use the config's
sampling whatever a request asks (`ServedContext`), so their cache keys do not change per request.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from moco.cache import CachedResponse, ResponseCache, _extra
from moco.config import DecodingSettings
from moco.serve.final_stage import StageContext
from moco.models.base import SamplingParams

WARM_UP_PROMPT = "Hello! Please introduce yourself in one sentence."


class StartupMemo(ResponseCache):
    """The configured cache, in front of which the start-up run's non-test answers stay in memory (frozen once
    start-up ends: later batches read them, nothing new is kept, so memory does not grow)."""

    def __init__(self, store: ResponseCache, recorder: Any):
        self.store = store
        self.recorder = recorder
        self.memo: dict[str, CachedResponse] = {}
        self.recording = True
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        hits = {k: self.memo[k] for k in keys if k in self.memo}
        rest = [k for k in keys if k not in hits]
        if rest:
            hits.update(self.store.get_many(rest))
        return hits

    def put_many(self, items: list[tuple[str, str, Any]]) -> None:
        if self.recording and self.recorder.phase != "test":
            with self._lock:
                for key, _fp, r in items:
                    if not r.failed:
                        extra = _extra(r)
                        self.memo[key] = CachedResponse(r.text, r.tokens_in, r.tokens_out, r.finish_reason,
                                                        r.latency_s, json.loads(extra) if extra else None)
        self.store.put_many(items)

    def __len__(self) -> int:
        return len(self.memo)

    def close(self) -> None:
        self.store.close()


class ServedContext(StageContext):
    """A run context whose calls outside the test phase (dev work) sample with the config's settings, not the
    current request's (a request's max_tokens/temperature apply to the answer it gets)."""

    def __init__(self, *, configured: DecodingSettings, **kw: Any):
        super().__init__(decoding=configured, **kw)
        self.configured = configured

    def sampling(self, **overrides: Any) -> SamplingParams:
        if self._gw.recorder.phase == "test":
            return super().sampling(**overrides)
        current, self.decoding = self.decoding, self.configured
        try:
            return super().sampling(**overrides)
        finally:
            self.decoding = current
