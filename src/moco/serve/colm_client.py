"""The client side of CoLM over HTTP: send my answers to a colm-server, get its guidance back.

Each exchange is an OpenAI chat completion — messages [question (user), my answer (assistant)] plus
`metadata` naming the session — so any OpenAI-compatible client library could speak it. All exchanges of
a round are sent at once (bounded by `concurrency`), in a fixed order, so clients that answer the same
questions fill the same sessions in the same order and never wait on each other in a cycle.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from moco.errors import ModelError
from moco.models.openai import OpenAIBackend, _run


@dataclass
class Exchange:
    session: str
    round: int
    client: str
    question: str
    answer: str
    expected: int
    description: str = ""


@dataclass
class Reply:
    text: str = ""
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # the server's `moco` field: aggregation, partial...

    @property
    def failed(self) -> bool:
        return self.error is not None


class ColmClient(OpenAIBackend):
    """Talks to one colm-server (`base_url` like http://127.0.0.1:8000/v1, served model name `model`);
    connection settings, auth and the reachability check are the OpenAI backend's."""

    def __init__(self, base_url: str, model: str = "colm-server", *, token: str | None = None,
                 api_key_env: str | None = None, timeout_s: float = 600.0, concurrency: int = 64,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, model, api_key=token, api_key_env=api_key_env, concurrency=concurrency,
                         timeout_s=timeout_s, max_retries=0, transport=transport)

    def check_served(self, models: httpx.Response) -> None:
        """Fail when the server does not list `model` (e.g. a collaboration server, not a colm-server); no probe
        request, unlike a chat endpoint."""
        served = [m.get("id") for m in models.json().get("data", [])] if models.status_code == 200 else []
        if self.model not in served:
            raise ModelError(f"colm-server {self.base_url} serves {served}, not '{self.model}'")

    def exchange(self, items: list[Exchange]) -> list[Reply]:
        """Send every item (answers of one round) and return the guidance for each, aligned."""
        return _run(self._all(items))

    async def _all(self, items: list[Exchange]) -> list[Reply]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

            async def one(x: Exchange) -> Reply:
                async with sem:
                    return await self._one(client, x)

            return list(await asyncio.gather(*(one(x) for x in items)))

    async def _one(self, client: httpx.AsyncClient, x: Exchange) -> Reply:
        body = {"model": self.model,
                "messages": [{"role": "user", "content": x.question}, {"role": "assistant", "content": x.answer}],
                "metadata": {"colm_session": x.session, "colm_round": str(x.round), "colm_client": x.client,
                             "colm_expected": str(x.expected), "colm_description": x.description[:500]}}
        t0 = time.time()
        try:
            r = await client.post("/chat/completions", json=body)
        except httpx.HTTPError as e:
            return Reply(error=f"{type(e).__name__}: {e}", latency_s=time.time() - t0)
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = r.text[:200]
            return Reply(error=f"HTTP {r.status_code}: {msg}", latency_s=time.time() - t0)
        data = r.json()
        usage = data.get("usage") or {}
        return Reply(data["choices"][0]["message"]["content"] or "", None, int(usage.get("prompt_tokens") or 0),
                     int(usage.get("completion_tokens") or 0), time.time() - t0, data.get("moco") or {})
