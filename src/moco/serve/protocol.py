"""The OpenAI chat-completions wire format: request validation with clear 4xx errors, response builders.

Requests are validated strictly: a malformed body (bad syntax, nesting too deep for the parser, a lone
surrogate that is not Unicode), a wrong type (no coercion: `"max_tokens": "10"` and `"stream": "yes"` are
refused, pydantic's strict mode), an unknown field or an unsupported feature (n > 1, tools, logprobs) is a
400 naming the field. A few OpenAI fields that do not change what a
collaboration computes (penalties, `user`, `stream_options`, ...) are accepted and ignored.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

IGNORED_FIELDS = frozenset({"frequency_penalty", "presence_penalty", "user", "stream_options", "logit_bias", "store",
                            "service_tier", "parallel_tool_calls", "reasoning_effort"})
UNSUPPORTED_FIELDS = {"tools": "tools are not supported", "tool_choice": "tools are not supported",
                      "functions": "functions are not supported", "function_call": "functions are not supported",
                      "logprobs": "logprobs are not supported", "top_logprobs": "logprobs are not supported",
                      "response_format": "response_format is not supported", "audio": "audio is not supported",
                      "modalities": "only text output is supported", "prediction": "prediction is not supported"}


class ApiError(Exception):
    """An error answered to the client in OpenAI's format."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ImageURL(_Strict):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def images(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [p.image_url.url for p in self.content if p.type == "image_url" and p.image_url]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        if isinstance(v, list) and (len(v) > 4 or any(not s for s in v)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Decode and validate a chat-completions body, or raise ApiError(400) naming the problem."""
    try:
        data = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:  # "\ud800" is valid JSON but no Unicode text: it would fail later, in a tokenizer or a cache key
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"request body holds a lone surrogate ({e.object[e.start:e.end]!a}): not valid "
                       "Unicode text") from None
    except (RecursionError, ValueError):
        raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
    for key, why in UNSUPPORTED_FIELDS.items():
        if data.get(key) not in (None, False, [], {}):
            raise ApiError(400, why, param=key, code="unsupported_parameter")
    data = {k: v for k, v in data.items() if k not in IGNORED_FIELDS and k not in UNSUPPORTED_FIELDS}
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc or None) from None
    extra = sorted(req.model_extra or {})
    if extra:
        raise ApiError(400, f"unknown field '{extra[0]}'", param=extra[0], code="unknown_parameter")
    if req.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_parameter")
    return req


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(model: str, text: str, prompt_tokens: int, completion_tokens: int, finish: str = "stop",
               extra: dict[str, Any] | None = None, cid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid or new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    if extra:
        body["moco"] = extra
    return body


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"
