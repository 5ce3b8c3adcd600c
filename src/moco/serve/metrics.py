"""`/metrics` of `moco serve` in the Prometheus text format (prometheus_client), one registry per app.

    moco_requests_total{route,status}         HTTP requests answered, by route template and status code
    moco_request_duration_seconds{route}      time from the request to the end of its response (streams included)
    moco_failures_total{route,reason}         requests that failed: status 5xx or 429 (reason = the code), or an
                                              error sent inside a stream that had started (reason = "stream")
    moco_tokens_total{direction}              tokens of the collaboration's model calls billed to requests
                                              (`usage`: in = prompt tokens, out = completion tokens)
    moco_batch_size                           requests per batch the micro-batcher formed (a histogram)
    moco_requests_in_flight                   requests waiting or running in the batcher
"""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self, batcher: Any | None = None):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("moco_requests", "HTTP requests answered, by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("moco_request_duration_seconds", "time to the end of the response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.failures = Counter("moco_failures", "failed requests, by route and reason (status code, or 'stream')",
                                ["route", "reason"], registry=r)
        self.tokens = Counter("moco_tokens", "tokens of the collaboration's model calls billed to requests",
                              ["direction"], registry=r)
        self.batch_size = Histogram("moco_batch_size", "requests per micro-batch", buckets=BATCH_BUCKETS, registry=r)
        if batcher is not None:
            Gauge("moco_requests_in_flight", "requests waiting or running in the batcher",
                  registry=r).set_function(lambda: batcher.pending)
            observe_batches(batcher, self.batch_size)

    def usage(self, body: dict[str, Any]) -> None:
        u = body.get("usage") or {}
        self.tokens.labels("in").inc(u.get("prompt_tokens", 0))
        self.tokens.labels("out").inc(u.get("completion_tokens", 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def observe_batches(batcher: Any, histogram: Histogram) -> None:
    """Count each batch the batcher hands to its handler (its `handler` attribute, wrapped)."""
    inner = batcher.handler

    def handler(items: list[Any], *rest: Any) -> list[Any]:  # rest: the batcher's early-answer callback
        histogram.observe(len(items))
        return inner(items, *rest)

    batcher.handler = handler


class MetricsMiddleware:
    """ASGI middleware: every response's route, status and duration (until its last byte, so a stream counts
    whole). The route is FastAPI's template (`/v1/models/{model_id:path}`), or "unrouted" (404, 413)."""

    def __init__(self, app: Any, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def watch(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unrouted"
            m = self.metrics
            m.requests.labels(route, str(status[0])).inc()
            m.latency.labels(route).observe(time.perf_counter() - t0)
            if status[0] >= 500 or status[0] == 429:
                m.failures.labels(route, str(status[0])).inc()
