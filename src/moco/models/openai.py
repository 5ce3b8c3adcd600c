"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama, OpenAI).

Async httpx with bounded concurrency per server (models served by one server, e.g. LoRA adapters of one
vLLM, share its limit; `RunContext.generate` queries different servers at the same time, see `remote`),
retries with exponential backoff on timeouts, connection errors, 429 and 5xx, and a timeout on every call. A call that still fails is returned as a failed result (recorded,
never scored as correct). Tests swap the transport (`httpx.MockTransport`): no live server needed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
from typing import Any

import httpx

from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult, SamplingParams, chunk_plan
from moco.models.images import data_url

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
log = logging.getLogger(__name__)
_SLOTS: dict[str, tuple[int, threading.BoundedSemaphore]] = {}  # base_url -> in-flight limit of the server
_SLOTS_LOCK = threading.Lock()


def endpoint_slots(base_url: str, concurrency: int) -> threading.BoundedSemaphore:
    """The process-wide request slots of one server; the first model that reaches it sets their number."""
    with _SLOTS_LOCK:
        if base_url not in _SLOTS:
            _SLOTS[base_url] = (concurrency, threading.BoundedSemaphore(concurrency))
        elif _SLOTS[base_url][0] != concurrency:
            log.warning("endpoint %s: concurrency %d ignored, its models share the first value %d",
                        base_url, concurrency, _SLOTS[base_url][0])
        return _SLOTS[base_url][1]


class OpenAIBackend:
    """Chat completions against `base_url` (e.g. http://127.0.0.1:8000/v1) for one served model name."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        seeded: bool = False,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.extra_body = extra_body or {}
        self.transport = transport
        self.fingerprint = f"openai:{self.base_url}:{model}"
        # images: sent as image_url parts; the served model must be a vision-language model
        self.capabilities = Capabilities(chat=True, logprobs=True, seeded=seeded, images=True)
        self.retries_done = 0
        self.remote = True  # waits on a server: RunContext.generate overlaps it with other backends
        # one server = one base_url (with an injected transport, e.g. a test's mock server: that transport)
        self.slots = endpoint_slots(self.base_url if transport is None else f"{self.base_url}#{id(transport)}",
                                    self.concurrency)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout_s,
                                 transport=self.transport)

    # --------------------------------------------------------------- public
    def check(self) -> httpx.Response:
        """Fail fast with one line when the endpoint cannot be reached or does not serve `model` (before any
        work starts); returns the answer to GET /models."""

        async def probe():
            async with self._client() as c:
                return await c.get("/models", timeout=min(10.0, self.timeout_s))

        try:
            r = _run(probe())
        except httpx.HTTPError as e:
            raise ModelError(f"endpoint {self.base_url} unreachable: {type(e).__name__}: {e}") from None
        if r.status_code in (401, 403):
            raise ModelError(f"endpoint {self.base_url} refused the API key (HTTP {r.status_code})")
        if r.status_code >= 400 and r.status_code != 404:
            raise ModelError(f"endpoint {self.base_url} answered HTTP {r.status_code} to /models")
        self.check_served(r)
        return r

    def check_served(self, models: httpx.Response) -> None:
        """Refuse a served-model name the server rejects. A name missing from GET /models is not enough: llama.cpp
        answers under any name and lists only its own, Ollama accepts "name" for "name:latest". So an unlisted
        name costs one greedy 1-token request, and only a 4xx answer to it (vLLM, SGLang, OpenAI: 404 "model
        does not exist") refuses the model; without this a misspelt name runs the whole experiment as failed calls."""
        served = _served_ids(models)
        if not served or self.model in served:
            return
        probe = self.generate([GenRequest((("user", "Hi"),), SamplingParams(max_new_tokens=1, temperature=0.0))])[0]
        if probe.failed and (probe.error or "").startswith("HTTP 4"):
            raise ModelError(f"endpoint {self.base_url} does not serve model '{self.model}' (it lists: "
                             f"{', '.join(served[:10])}): {probe.error[:160]}")

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return chunk_plan(len(requests), self.concurrency * 4)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return _run(self._generate_all(requests))

    def close(self) -> None:
        return None

    # --------------------------------------------------------------- internals
    async def _generate_all(self, requests: list[GenRequest]) -> list[GenResult]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

            async def one(req: GenRequest) -> GenResult:
                async with sem:
                    while not self.slots.acquire(blocking=False):  # the server's slots, shared across threads
                        await asyncio.sleep(0.002)
                    try:
                        return await self._one(client, req)
                    finally:
                        self.slots.release()

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def _body(self, req: GenRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": r, "content": c} for r, c in req.messages]
        if req.images:  # OpenAI vision format: image_url parts on the last user message, local files inlined
            last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
            parts: list[dict[str, Any]] = [{"type": "text", "text": messages[last]["content"]}]
            parts += [{"type": "image_url", "image_url": {"url": data_url(ref)}} for ref in req.images]
            messages[last] = {"role": messages[last]["role"], "content": parts}
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": req.sampling.max_new_tokens,
            "temperature": req.sampling.temperature,
        }
        if not req.sampling.greedy:
            body["top_p"] = req.sampling.top_p
            body["seed"] = req.seed % (2**31)
        if req.sampling.stop:
            body["stop"] = list(req.sampling.stop)
        if req.sampling.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 1
        if req.assistant_prefix:  # vLLM/SGLang continuation of a partial assistant turn
            messages.append({"role": "assistant", "content": req.assistant_prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra_body)
        return body

    async def _one(self, client: httpx.AsyncClient, req: GenRequest) -> GenResult:
        body = self._body(req)
        t0 = time.time()
        last = ""
        rng = random.Random(req.seed)
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries_done += 1
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * (1 + 0.25 * rng.random()))
            try:  # httpx times each read; wait_for bounds the whole call (a server may trickle bytes forever)
                r = await asyncio.wait_for(client.post("/chat/completions", json=body), self.timeout_s)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                last = f"timeout after {self.timeout_s:g}s"
                continue
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code >= 400:
                return _failed(f"HTTP {r.status_code}: {r.text[:200]}", t0)
            try:
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                if not isinstance(text, str):
                    raise TypeError("content is not a string")
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed response ({type(e).__name__}): {r.text[:120]!r}"
                continue
            usage = data.get("usage") or {}
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
            lp, top = _logprobs(choice) if req.sampling.logprobs else (None, None)
            return GenResult(
                text if req.assistant_prefix else text.strip(),
                tokens_in=int(usage.get("prompt_tokens") or 0),
                tokens_out=int(usage.get("completion_tokens") or len(text.split())),
                finish_reason=finish,
                latency_s=time.time() - t0,
                token_logprobs=lp,
                top_logprobs=top,
            )
        return _failed(f"failed after {self.max_retries + 1} attempts: {last}", t0)


def _served_ids(models: httpx.Response) -> list[str]:
    """Model ids listed in an OpenAI-style GET /models answer ([] when there is no such list)."""
    if models.status_code != 200:
        return []
    try:
        data = models.json().get("data")
    except (ValueError, AttributeError):
        return []
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else []


def _logprobs(choice: dict) -> tuple[list[float] | None, list[float] | None]:
    """Per-token log-probabilities from an OpenAI `logprobs.content` list (None when the server sent none)."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None, None
    chosen = [float(t.get("logprob", 0.0)) for t in content]
    top = [max([float(x.get("logprob", -1e9)) for x in t.get("top_logprobs") or []] or [float(t.get("logprob", 0.0))])
           for t in content]
    return chosen, top


def _failed(msg: str, t0: float) -> GenResult:
    return GenResult("", finish_reason="error", error=msg, latency_s=time.time() - t0)


def _run(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop (e.g. a server)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()
