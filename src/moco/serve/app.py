"""The HTTP face of `moco serve`: OpenAI-compatible routes, bearer-token auth, body size limit, errors.

Routes: GET /health (no auth), GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions,
GET /v1/moco/info (what is served, batching statistics). Every error is OpenAI-shaped JSON:
{"error": {"message", "type", "param", "code"}}.
"""
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moco.serve.protocol import ApiError, chunk, new_id, parse_chat_request, sse

DEFAULT_MAX_BODY = 4 * 2**20


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, declared (Content-Length) or streamed."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._error())
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._error())

    def _error(self) -> dict:
        return ApiError(413, f"request body larger than {self.max_bytes} bytes", code="body_too_large").body()


async def _send_json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def create_app(service: Any, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY):
    """An ASGI app serving `service` (a CollaborationService or a ColmServer) as one OpenAI model."""
    app = FastAPI(title="MoCo", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    def check_auth(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <token>')",
                           code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
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
    async def health():
        return {"status": "ok", "model": service.name, "role": service.role}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str, request: Request):
        check_auth(request)
        if model_id != service.name:
            raise ApiError(404, f"model '{model_id}' not found (this server serves '{service.name}')",
                           param="model", code="model_not_found")
        return model_card()

    @app.get("/v1/moco/info")
    async def info(request: Request):
        check_auth(request)
        extra = service.stats() if hasattr(service, "stats") else {}
        return {"model": service.name, **service.describe(), "batching": service.batcher.stats.to_dict(), **extra}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_auth(request)
        req = parse_chat_request(await request.body())
        if req.model != service.name:
            raise ApiError(404, f"model '{req.model}' not found (this server serves '{service.name}')",
                           param="model", code="model_not_found")
        if not req.stream:
            return JSONResponse(await service.complete(req))
        if getattr(service, "can_stream_tokens", lambda: False)():
            pending = service.pending(req)  # a bad request fails here, before the stream starts
            return StreamingResponse(_token_stream(service, pending), media_type="text/event-stream")
        body = await service.complete(req)  # the whole answer, then sent as one chunk
        return StreamingResponse(_one_chunk(body), media_type="text/event-stream")

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
