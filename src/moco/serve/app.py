"""The HTTP face of `moco serve`: OpenAI-compatible routes, bearer-token auth (a FastAPI dependency), body
size limit, a time limit per request, errors, Prometheus metrics.

Routes: GET /health (no auth), GET /metrics (Prometheus text format), GET /v1/models, GET /v1/models/{id},
POST /v1/chat/completions, POST /v1/completions (legacy: a prompt or a list of prompts), GET /v1/moco/info
(what is served, batching statistics, the final stage). Every error is OpenAI-shaped JSON:
{"error": {"message", "type", "param", "code"}}.

Streaming and log-probabilities come from the collaboration's last stage (final_stage.py): the one model call
that writes the answer is decoded alone, token by token, while the stages before it run batched.
"""
import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moco.serve.batcher import QueueFull
from moco.serve.limits import backstop_s
from moco.serve.final_stage import StageContext, StageRequest, learn_final_stage
from moco.serve.live import LiveAnswer
from moco.serve.metrics import MetricsMiddleware, ServeMetrics
from moco.serve.protocol import (ApiError, ChatRequest, chat_logprobs, chunk, completion_logprobs, new_id,
                                 parse_chat_request, parse_completion_request, sse, text_chunk, text_completion,
                                 usage_chunk)
from moco.serve.streaming import logprobs_within

DEFAULT_MAX_BODY = 4 * 2**20
DEFAULT_TIMEOUT_S = 600.0


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, however sent (declared Content-Length or chunked).

    The body is read here, up to the limit, before the app sees the request; past the limit the client gets
    413 at once and the rest is never read. (Raising from inside the app would reach FastAPI's error layer
    first, which answers 500.) A chat body is small, so buffering it costs nothing."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._error())
        parts: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return None
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await _send_json(send, 413, self._error())
            parts.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(parts)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _error(self) -> dict:
        return ApiError(413, f"request body larger than {self.max_bytes} bytes", code="body_too_large").body()


async def _send_json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def bearer_auth(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency: with a token set, every route that depends on it needs
    'Authorization: Bearer <token>' (compared in constant time); without one it lets everything through."""

    def require_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <token>')",
                           code="invalid_api_key")

    return require_token


def create_app(service: Any, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
               request_timeout_s: float = DEFAULT_TIMEOUT_S, probe: bool = True):
    """An ASGI app serving `service` (a CollaborationService or a ColmServer) as one OpenAI model.
    Every /v1 route and /metrics need the token (a dependency); /health does not. A request that has no
    answer within `request_timeout_s` gets 504: local decoding stops at that limit (the worker is freed,
    batch neighbours keep their answers); a backend that cannot be stopped is cut off a little later. With
    `probe`, one short request runs through the collaboration first, so its final stage is known (streaming)."""
    if hasattr(service, "set_time_limit"):
        service.set_time_limit(request_timeout_s)
    app = FastAPI(title="MoCo", docs_url=None, redoc_url=None, openapi_url=None)
    auth = Depends(bearer_auth(token))
    v1 = APIRouter(prefix="/v1", dependencies=[auth])
    created = int(time.time())
    ctx = getattr(service, "ctx", None)
    watching = isinstance(ctx, StageContext)  # the service can watch its last stage (a collaboration)
    if probe and watching:
        learn_final_stage(service)
    metrics = ServeMetrics(getattr(service, "batcher", None))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {401: {"WWW-Authenticate": "Bearer"}, 429: {"Retry-After": "1"}}.get(exc.status)
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = "not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(ApiError(exc.status_code, msg).body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(ApiError(400, str(exc.errors()[0].get("msg", "invalid request"))).body(), status_code=400)

    def model_card() -> dict[str, Any]:
        return {"id": service.name, "object": "model", "created": created, "owned_by": "moco"}

    def check_model(model: str) -> None:
        if model != service.name:
            raise ApiError(404, f"model '{model}' not found (this server serves '{service.name}')",
                           param="model", code="model_not_found")

    def check_logprobs(stream: bool) -> None:
        """400 unless the answer is one model's generation on a backend with log-probabilities."""
        final = ctx.final if watching else None
        if final is None:
            raise ApiError(400, "logprobs are not available: this server's answer is not the text of one model call "
                           "(see final_stage in /v1/moco/info)", param="logprobs", code="unsupported_parameter")
        if not final.logprobs:
            raise ApiError(400, f"logprobs are not available: the answer is written by '{final.model}', whose "
                           "backend gives no token log-probabilities (local transformers models do)",
                           param="logprobs", code="unsupported_parameter")
        if stream:
            raise ApiError(400, "logprobs are not supported with stream: ask without stream", param="logprobs",
                           code="unsupported_parameter")

    @app.get("/health")
    async def health():  # 503 while start-up work runs (when the port is open by then), 200 once ready
        if getattr(service, "starting", False):
            return JSONResponse({"status": "starting", "model": service.name}, status_code=503)
        return {"status": "ready", "model": service.name, "role": service.role}

    @app.get("/metrics", dependencies=[auth])
    async def prometheus():
        raw, content_type = metrics.render()
        return Response(raw, media_type=content_type)

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @v1.get("/models/{model_id:path}")
    async def one_model(model_id: str):
        check_model(model_id)
        return model_card()

    @v1.get("/moco/info")
    async def info():
        extra = service.stats() if hasattr(service, "stats") else {}
        return {"model": service.name, **service.describe(), "batching": service.batcher.stats.to_dict(), **extra}

    async def answer(req: ChatRequest, want: StageRequest | None = None) -> dict[str, Any]:
        try:
            run = service.complete(req, want) if want is not None else service.complete(req)
            body = await asyncio.wait_for(run, backstop_s(request_timeout_s))
        except QueueFull as e:
            raise ApiError(429, f"the server is busy: {e}; retry later", kind="server_error",
                           code="server_busy") from None
        except TimeoutError:
            raise ApiError(504, f"no answer within this server's time limit of {request_timeout_s:g} s",
                           kind="server_error", code="timeout") from None
        metrics.usage(body)
        return body

    async def with_logprobs(req: ChatRequest, top: int) -> tuple[dict[str, Any], list[Any]]:
        want = StageRequest(top_logprobs=top)
        body = await answer(req, want)
        if want.logprobs is None:
            raise ApiError(500, "the collaboration's last stage did not run for this request: no log-probabilities",
                           kind="server_error", code="no_logprobs")
        return body, logprobs_within(want.logprobs, body["choices"][0]["message"]["content"])

    def live(req: ChatRequest) -> LiveAnswer:
        return LiveAnswer(lambda want: answer(req, want), watching, req.stops)

    async def streamed(route: str, events: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except ApiError as e:  # the status is sent already: report in the stream
            metrics.failures.labels(route, "stream").inc()
            yield sse(e.body())

    @v1.post("/chat/completions")
    async def chat(request: Request):
        req = parse_chat_request(await request.body())
        check_model(req.model)
        if req.logprobs:
            check_logprobs(req.stream)
            body, lps = await with_logprobs(req, req.top_logprobs or 0)
            body["choices"][0]["logprobs"] = chat_logprobs(lps)
            return JSONResponse(body)
        if not req.stream:
            return JSONResponse(await answer(req))
        one = live(req)
        await one.started()
        return StreamingResponse(streamed("/v1/chat/completions", _chat_events(one, service.name, req.include_usage)),
                                 media_type="text/event-stream")

    @v1.post("/completions")
    async def completions(request: Request):
        req = parse_completion_request(await request.body())
        check_model(req.model)
        chats = [req.as_chat(p) for p in req.prompts]
        if req.logprobs is not None:
            check_logprobs(req.stream)
        if not req.stream:
            if req.logprobs is not None:
                got = await asyncio.gather(*(with_logprobs(c, req.logprobs) for c in chats))
                bodies = [b for b, _ in got]
                lps = [completion_logprobs(lp, req.logprobs) for _, lp in got]
            else:
                bodies, lps = list(await asyncio.gather(*(answer(c) for c in chats))), [None] * len(chats)
            choices = [{"text": b["choices"][0]["message"]["content"], "index": i, "logprobs": lp,
                        "finish_reason": b["choices"][0]["finish_reason"]} for i, (b, lp) in enumerate(zip(bodies, lps))]
            return JSONResponse(text_completion(service.name, choices, sum(b["usage"]["prompt_tokens"] for b in bodies),
                                                sum(b["usage"]["completion_tokens"] for b in bodies)))
        lives = [live(c) for c in chats]
        await lives[0].started()
        return StreamingResponse(streamed("/v1/completions", _text_events(lives, service.name, req.include_usage)),
                                 media_type="text/event-stream")

    app.include_router(v1)
    return MetricsMiddleware(BodyLimit(app, max_body_bytes), metrics)


async def _chat_events(one: LiveAnswer, model: str, usage: bool) -> AsyncIterator[str]:
    cid = new_id()
    yield sse(chunk(cid, model, {"role": "assistant", "content": ""}))
    async for piece in one.pieces():
        yield sse(chunk(cid, model, {"content": piece}))
    yield sse(chunk(cid, model, {}, one.body["choices"][0]["finish_reason"]))
    if usage:
        yield sse(usage_chunk(cid, model, "chat.completion.chunk", [one.body]))
    yield sse("[DONE]")


async def _text_events(lives: list[LiveAnswer], model: str, usage: bool) -> AsyncIterator[str]:
    """The prompts' answers one after the other (each chunk names its prompt's `index`)."""
    cid = new_id("cmpl")
    for i, one in enumerate(lives):
        async for piece in one.pieces():
            yield sse(text_chunk(cid, model, i, piece))
        yield sse(text_chunk(cid, model, i, "", one.body["choices"][0]["finish_reason"]))
    if usage:
        yield sse(usage_chunk(cid, model, "text_completion", [one.body for one in lives]))
    yield sse("[DONE]")
