"""The HTTP face of `moco serve`: OpenAI-compatible routes, bearer-token auth (a FastAPI dependency), body
size limit, a time limit per request, errors.

Routes: GET /health (no auth), GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions,
GET /v1/moco/info (what is served, batching statistics). Every error is OpenAI-shaped JSON:
{"error": {"message", "type", "param", "code"}}.
"""
import asyncio
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from moco.serve.batcher import QueueFull
from moco.serve.protocol import ApiError, ChatRequest, chunk, new_id, parse_chat_request, sse

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
               request_timeout_s: float = DEFAULT_TIMEOUT_S):
    """An ASGI app serving `service` (a CollaborationService or a ColmServer) as one OpenAI model.
    Every /v1 route needs the token (a router-wide dependency); /health does not. A request that has no
    answer within `request_timeout_s` gets 504 (and is dropped if its batch has not started)."""
    app = FastAPI(title="MoCo", docs_url=None, redoc_url=None, openapi_url=None)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_auth(token))])
    created = int(time.time())

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

    @app.get("/health")
    async def health():  # 503 while start-up work runs (when the port is open by then), 200 once ready
        if getattr(service, "starting", False):
            return JSONResponse({"status": "starting", "model": service.name}, status_code=503)
        return {"status": "ready", "model": service.name, "role": service.role}

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @v1.get("/models/{model_id:path}")
    async def one_model(model_id: str):
        if model_id != service.name:
            raise ApiError(404, f"model '{model_id}' not found (this server serves '{service.name}')",
                           param="model", code="model_not_found")
        return model_card()

    @v1.get("/moco/info")
    async def info():
        extra = service.stats() if hasattr(service, "stats") else {}
        return {"model": service.name, **service.describe(), "batching": service.batcher.stats.to_dict(), **extra}

    async def answer(req: ChatRequest) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(service.complete(req), request_timeout_s)
        except QueueFull as e:
            raise ApiError(429, f"the server is busy: {e}; retry later", kind="server_error",
                           code="server_busy") from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within this server's time limit of {request_timeout_s:g} s",
                           kind="server_error", code="timeout") from None

    @v1.post("/chat/completions")
    async def chat(request: Request):
        req = parse_chat_request(await request.body())
        if req.model != service.name:
            raise ApiError(404, f"model '{req.model}' not found (this server serves '{service.name}')",
                           param="model", code="model_not_found")
        if not req.stream:
            return JSONResponse(await answer(req))
        if getattr(service, "can_stream_tokens", lambda: False)():
            pending = await run_in_threadpool(service.pending, req)  # a bad request fails here, before the stream
            await run_in_threadpool(service.check_context, pending)
            return StreamingResponse(_token_stream(service, pending), media_type="text/event-stream")
        body = await answer(req)  # the whole answer, then sent as one chunk
        return StreamingResponse(_one_chunk(body), media_type="text/event-stream")

    app.include_router(v1)
    return BodyLimit(app, max_body_bytes)


def _one_chunk(body: dict[str, Any]) -> Iterator[str]:
    cid, model = body["id"], body["model"]
    yield sse(chunk(cid, model, {"role": "assistant", "content": body["choices"][0]["message"]["content"]}))
    yield sse(chunk(cid, model, {}, body["choices"][0]["finish_reason"]))
    yield sse("[DONE]")


def _token_stream(service: Any, p) -> Iterator[str]:
    """Server-sent events for a single model's answer, piece by piece (runs in a worker thread)."""
    from moco.serve.streaming import cut_stream

    cid, model = new_id(), service.name
    yield sse(chunk(cid, model, {"role": "assistant", "content": ""}))
    try:
        for piece in cut_stream(service.stream_tokens(p), p.stops):
            yield sse(chunk(cid, model, {"content": piece}))
    except Exception as e:  # noqa: BLE001 - the status is sent already: report in the stream
        yield sse({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})
        return
    yield sse(chunk(cid, model, {}, "stop"))
    yield sse("[DONE]")
