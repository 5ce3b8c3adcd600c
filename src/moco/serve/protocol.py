"""The OpenAI wire format (chat completions and legacy completions): strict request validation with clear 4xx
errors, response builders.

Requests are validated strictly: a malformed body (bad syntax, nesting too deep for the parser, a lone
surrogate that is not Unicode), a wrong type (no coercion: `"max_tokens": "10"` and `"stream": "yes"` are
refused, pydantic's strict mode), an unknown field or an unsupported feature (n > 1, tools, echo) is a
400 naming the field. A few OpenAI fields that do not change what a
collaboration computes (penalties, `user`, `store`, ...) are accepted and ignored.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

IGNORED_FIELDS = frozenset({"frequency_penalty", "presence_penalty", "user", "logit_bias", "store",
                            "service_tier", "parallel_tool_calls", "reasoning_effort"})
UNSUPPORTED_FIELDS = {"tools": "tools are not supported", "tool_choice": "tools are not supported",
                      "functions": "functions are not supported", "function_call": "functions are not supported",
                      "response_format": "response_format is not supported", "audio": "audio is not supported",
                      "modalities": "only text output is supported", "prediction": "prediction is not supported"}
COMPLETION_UNSUPPORTED = {"echo": "echo is not supported: a collaboration writes new text, it does not score the prompt",
                          "suffix": "suffix is not supported"}


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


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding against side channels: nothing to hide here


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
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

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


class CompletionRequest(BaseModel):
    """A legacy /v1/completions body: each prompt is sent to the collaboration as one user message."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def as_chat(self, prompt: str) -> ChatRequest:
        """One prompt as the chat request the collaboration answers (validated like any chat request)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "stop": self.stop, "seed": self.seed}
        return _validated(ChatRequest, {k: v for k, v in body.items() if v is not None})


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Decode and validate a chat-completions body, or raise ApiError(400) naming the problem."""
    req = _validated(ChatRequest, _refuse(_decode(raw), UNSUPPORTED_FIELDS))
    if req.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_parameter")
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return req


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Decode and validate a legacy completions body, or raise ApiError(400) naming the problem."""
    data = _refuse(_decode(raw), COMPLETION_UNSUPPORTED)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and any(not isinstance(p, str) for p in prompt):
        raise ApiError(400, "prompt must be a string or a list of strings (token ids are not supported)",
                       param="prompt", code="unsupported_parameter")
    req = _validated(CompletionRequest, data)
    if req.n != 1 or (req.best_of or 1) != 1:
        raise ApiError(400, "only n=1 and best_of=1 are supported", param="n", code="unsupported_parameter")
    if len(req.prompts) > 64:
        raise ApiError(400, "at most 64 prompts per request", param="prompt")
    return req


def _decode(raw: bytes) -> dict[str, Any]:
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
    return data


def _refuse(data: dict[str, Any], unsupported: dict[str, str]) -> dict[str, Any]:
    """400 for a field asking for what this server cannot do; drop the fields it ignores."""
    for key, why in unsupported.items():
        if data.get(key) not in (None, False, [], {}, ""):
            raise ApiError(400, why, param=key, code="unsupported_parameter")
    return {k: v for k, v in data.items() if k not in IGNORED_FIELDS and k not in unsupported}


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        req = model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc or None) from None
    extra = sorted(req.model_extra or {})
    if extra:
        raise ApiError(400, f"unknown field '{extra[0]}'", param=extra[0], code="unknown_parameter")
    return req


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


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


def usage_chunk(cid: str, model: str, obj: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the usage of all answers."""
    pin = sum(b["usage"]["prompt_tokens"] for b in bodies)
    pout = sum(b["usage"]["completion_tokens"] for b in bodies)
    return {"id": cid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": {"prompt_tokens": pin, "completion_tokens": pout, "total_tokens": pin + pout}}


def sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def text_completion(model: str, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int,
                    cid: str | None = None) -> dict[str, Any]:
    """A legacy completions body; each choice is {"text", "index", "logprobs", "finish_reason"}."""
    return {"id": cid or new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


def text_chunk(cid: str, model: str, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}


def chat_logprobs(tokens: list[Any]) -> dict[str, Any]:
    """Chat `choices[0].logprobs` from streaming.TokenLogprob rows."""
    def entry(token: str, lp: float) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, b) for a, b in t.top]}
                        for t in tokens], "refusal": None}


def completion_logprobs(tokens: list[Any], k: int) -> dict[str, Any]:
    """Legacy `choices[i].logprobs`: tokens, their log-probabilities, the top k per position, text offsets."""
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens] if k else None, "text_offset": offsets}
