"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama, OpenAI).

Why the `openai` SDK plus tenacity: `AsyncOpenAI` is the maintained client for these servers (URL building,
auth, typed errors that carry the response, one pooled connection set per backend); its own retry loop is
switched off (`max_retries=0`) because it hides each attempt, and MoCo must see every attempt to tell a dead
server (stop the run within seconds) from a busy one (back off, honour `Retry-After`). tenacity expresses that
policy (what to retry, when to stop, how long to wait) without a hand-written loop.

- All calls of the process run on one persistent event loop in a background thread (`_run`), so a backend's
  client and connections live across batches instead of a new event loop per batch.
- Concurrency is bounded per server (models served by one server, e.g. LoRA adapters of one vLLM, share it;
  `RunContext.generate` queries different servers at the same time, see `remote`).
- Transient errors (429, 5xx, timeouts, resets, malformed answers) are retried with exponential backoff and
  jitter, or after the server's `Retry-After` when it is longer; a 4xx is not retried.
- A dead server: after `DOWN_AFTER` consecutive connection-level failures (refused, reset, timeout) the server's
  health endpoint (GET /models) is probed; if it does not answer either, the server is marked down and every
  call to it fails at once (`down` says why; `RunContext` stops the run with one line).
- Token counts come from the server's `usage` (0 when it sends none, with a warning), never from the text.
A call that still fails is returned as a failed result: recorded, never scored. Tests swap the transport
(`httpx.MockTransport`) or run real loopback servers.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult, SamplingParams, chunk_plan
from moco.models.images import data_url

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DOWN_AFTER = 3  # consecutive connection-level failures of one server before its health is probed
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is capped (the call fails after its retries instead of hanging)
HEALTH_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ one event loop per process
_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    """The process's HTTP event loop, running forever in a daemon thread (made again after a fork)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP[0] != os.getpid() or _LOOP[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True, name="moco-http").start()
            _LOOP = (os.getpid(), loop)
            _SERVERS.clear()  # their semaphores belonged to the old loop
        return _LOOP[1]


def _run(coro):
    """Run a coroutine on the HTTP loop and wait for it (from any thread, also one running its own loop)."""
    fut = asyncio.run_coroutine_threadsafe(coro, _loop())
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


# ------------------------------------------------------------------------------ per-server state
@dataclass
class _Server:
    """One server (base URL): its request slots, shared by every model it serves, and its health."""

    url: str
    concurrency: int
    failures: int = 0  # consecutive connection-level failures
    down: str | None = None  # why the server is considered dead (None: alive)
    _slots: asyncio.Semaphore | None = None
    _probe: asyncio.Future | None = field(default=None, repr=False)

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # made on the HTTP loop, where it is used
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots


_SERVERS: dict[str, _Server] = {}


def _server(key: str, concurrency: int) -> _Server:
    """The process-wide state of one server; the first model that reaches it sets its concurrency."""
    _loop()  # a fork drops the old servers first
    with _LOOP_LOCK:
        s = _SERVERS.get(key)
        if s is None:
            s = _SERVERS[key] = _Server(key, concurrency)
        elif s.concurrency != concurrency:
            log.warning("endpoint %s: concurrency %d ignored, its models share the first value %d",
                        key, concurrency, s.concurrency)
        return s


class _Retry(Exception):
    """A transient failure: try again (after `retry_after` seconds when the server asked for it)."""

    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class _GiveUp(Exception):
    """A failure that retrying cannot fix (a 4xx answer, or the server is down)."""


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, or `Retry-After` as seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_tz(value)
        return None if when is None else max(0.0, email.utils.mktime_tz(when) - time.time())


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
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
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
        self._server_key = self.base_url if transport is None else f"{self.base_url}#{id(transport)}"
        self._server()  # registers the server (and warns on a second concurrency)
        self._api_client: tuple[int, openai.AsyncOpenAI] | None = None
        self._backoff = wait_exponential_jitter(initial=backoff_s, max=30.0, jitter=backoff_s / 4)
        self._no_usage_warned = False

    def _server(self) -> _Server:
        return _server(self._server_key, self.concurrency)

    @property
    def down(self) -> str | None:
        """Why this backend's server is considered dead, or None."""
        return self._server().down

    def _client(self) -> httpx.AsyncClient:
        """A plain httpx client with this backend's URL, auth and transport (for non-chat protocols)."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout_s,
                                 transport=self.transport)

    def _api(self) -> openai.AsyncOpenAI:
        """This backend's SDK client: made once (per process), used on the HTTP loop for every batch."""
        if self._api_client is None or self._api_client[0] != os.getpid():
            http = httpx.AsyncClient(transport=self.transport, timeout=self.timeout_s) if self.transport else None
            self._api_client = (os.getpid(), openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key or "none", max_retries=0, timeout=self.timeout_s,
                http_client=http))
        return self._api_client[1]

    def _options(self, **extra: Any) -> dict[str, Any]:
        """Per-request SDK options: no Authorization header at all when there is no key (local servers)."""
        return {**({} if self.api_key else {"headers": {"Authorization": openai.Omit()}}), **extra}

    # --------------------------------------------------------------- public
    def check(self) -> httpx.Response:
        """Fail fast with one line when the endpoint cannot be reached or does not serve `model` (before any
        work starts); returns the answer to GET /models."""
        try:
            r = _run(self._get_models(min(10.0, self.timeout_s)))
        except openai.APIConnectionError as e:
            raise ModelError(f"endpoint {self.base_url} unreachable: {_describe(e.__cause__ or e)}") from None
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
        api, self._api_client = self._api_client, None
        if api is not None and api[0] == os.getpid():
            try:
                _run(api[1].close())
            except Exception:  # noqa: BLE001 - closing a client of a server that is gone
                pass

    # --------------------------------------------------------------- internals
    async def _get_models(self, timeout: float) -> httpx.Response:
        """GET /models: the answer whatever its status (an HTTP error is an answer); connection errors raise."""
        try:
            return await self._api().get("/models", cast_to=httpx.Response, options=self._options(timeout=timeout))
        except openai.APIStatusError as e:
            return e.response

    async def _alive(self) -> bool:
        """Does the server answer its health endpoint at all (any HTTP status counts)?"""
        try:
            await asyncio.wait_for(self._get_models(HEALTH_TIMEOUT_S), HEALTH_TIMEOUT_S + 1)
            return True
        except (TimeoutError, openai.APIConnectionError, httpx.HTTPError):
            return False

    async def _generate_all(self, requests: list[GenRequest]) -> list[GenResult]:
        srv = self._server()
        if srv.down is not None and await self._alive():  # back up (e.g. restarted between two cells of a sweep)
            log.warning("endpoint %s answers again", self.base_url)
            srv.down, srv.failures = None, 0
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

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

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when that is longer (capped)."""
        wait = self._backoff(state)
        err = state.outcome.exception() if state.outcome else None
        asked = getattr(err, "retry_after", None)
        return max(wait, min(asked, MAX_RETRY_AFTER_S)) if asked is not None else wait

    def _retried(self, _state: RetryCallState) -> None:
        self.retries_done += 1

    async def _one(self, req: GenRequest) -> GenResult:
        t0 = time.time()
        srv = self._server()
        if srv.down is not None:
            return _failed(f"backend down: {srv.down}", t0)
        body = self._body(req)
        async with srv.slots:
            try:
                async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                                                   retry=retry_if_exception_type(_Retry), before_sleep=self._retried,
                                                   reraise=True):
                    with attempt:
                        return await self._attempt(body, req, t0)
            except _Retry as e:
                return _failed(f"failed after {self.max_retries + 1} attempts: {e}", t0)
            except _GiveUp as e:
                return _failed(str(e), t0)
        raise AssertionError("unreachable: tenacity either returned or raised")

    async def _attempt(self, body: dict[str, Any], req: GenRequest, t0: float) -> GenResult:
        srv = self._server()
        if srv.down is not None:  # went down while this call waited for a slot or a retry
            raise _GiveUp(f"backend down: {srv.down}")
        try:  # the SDK times each read; wait_for bounds the whole call (a server may trickle bytes forever)
            r = await asyncio.wait_for(self._api().post("/chat/completions", body=body, cast_to=httpx.Response,
                                                        options=self._options()), self.timeout_s)
        except (TimeoutError, openai.APITimeoutError):
            raise await self._lost(f"timeout after {self.timeout_s:g}s") from None
        except openai.APIConnectionError as e:
            raise await self._lost(_describe(e.__cause__ or e)) from None
        except openai.APIStatusError as e:
            srv.failures = 0  # it answered: alive
            if e.status_code in RETRY_STATUS:
                raise _Retry(f"HTTP {e.status_code}", retry_after(e.response.headers)) from None
            raise _GiveUp(f"HTTP {e.status_code}: {e.response.text[:200]}") from None
        srv.failures = 0
        return self._result(r, req, t0)

    async def _lost(self, msg: str) -> Exception:
        """Account a connection-level failure; after DOWN_AFTER in a row, probe the server's health and mark it
        down when that does not answer either. Returns the exception for the attempt to raise."""
        srv = self._server()
        srv.failures += 1
        if srv.down is None and srv.failures >= DOWN_AFTER:
            if srv._probe is None or srv._probe.done():  # concurrent failures share one probe
                srv._probe = asyncio.ensure_future(self._alive())
            alive = await asyncio.shield(srv._probe)
            if not alive and srv.down is None:
                srv.down = (f"{self.base_url} stopped answering ({srv.failures} connection failures in a row, "
                            f"last: {msg}; GET /models does not answer either)")
                log.info("endpoint down: %s", srv.down)  # the run stops with this reason (one line)
        return _GiveUp(f"backend down: {srv.down}") if srv.down is not None else _Retry(msg)

    def _result(self, r: httpx.Response, req: GenRequest, t0: float) -> GenResult:
        try:
            data = r.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Retry(f"malformed response ({type(e).__name__}): {r.text[:120]!r}") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        if not usage and not self._no_usage_warned:
            self._no_usage_warned = True
            log.warning("endpoint %s sends no `usage`: token counts of model %s are 0", self.base_url, self.model)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        lp, top = _logprobs(choice) if req.sampling.logprobs else (None, None)
        return GenResult(
            text if req.assistant_prefix else text.strip(),
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            finish_reason=finish,
            latency_s=time.time() - t0,
            token_logprobs=lp,
            top_logprobs=top,
        )


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


def _describe(err: BaseException) -> str:
    """'ConnectError: [Errno 111] Connection refused', or the bare type when the error says nothing more."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _failed(msg: str, t0: float) -> GenResult:
    return GenResult("", finish_reason="error", error=msg, latency_s=time.time() - t0)


def load(spec: "ModelSpec", ctx: "PoolContext") -> OpenAIBackend:
    """The backend registry's factory (models/backends.py): the endpoint is asked which models it serves."""
    ep = spec.endpoint
    assert ep is not None  # ModelSpec requires an endpoint for this kind
    b = OpenAIBackend(ep.base_url, ep.model or spec.model, api_key_env=ep.api_key_env, concurrency=ep.concurrency,
                      timeout_s=ep.timeout_s, max_retries=ep.max_retries, seeded=ep.seeded)
    b.check()
    return b
