"""The backend protocol: what a method may ask of a model, and what each backend declares it can do."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = tuple[str, str]
"""A chat message as (role, content); a tuple so requests are hashable and cache keys are stable."""


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. temperature == 0 means greedy (then the seed does not matter)."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # also return per-token log-probabilities (GenResult.token_logprobs / top_logprobs)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self) -> dict[str, Any]:
        """What changes the generated text. `logprobs` does not: a call with log-probabilities is the same
        call as one without (same cache entry, same sampling seed), so routers and cascades reuse plain answers."""
        d: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "temperature": float(self.temperature), "stop": list(self.stop)}
        if not self.greedy:
            d["top_p"] = float(self.top_p)
        return d


@dataclass(frozen=True)
class GenRequest:
    """One prompt for one model. `assistant_prefix` is text the answer must continue (a partial response).
    `images` are image references (path, URL or data URI, see models/images.py) shown with the last user
    message; only backends with `Capabilities.images` accept them."""

    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    assistant_prefix: str = ""
    images: tuple[str, ...] = ()


@dataclass
class GenResult:
    """The model's continuation; `error` is set (and text empty) when the call failed after retries."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"  # stop | length | error
    latency_s: float = 0.0
    error: str | None = None
    token_logprobs: list[float] | None = None  # log p(generated token) under the model (temperature 1)
    top_logprobs: list[float] | None = None  # log p of the most likely token at each step
    extra: dict[str, Any] | None = None  # JSON-able details a token-level method stores with its cached outcome (its trace)
    tokens_reused: int = 0  # prompt tokens whose KV was reused (models/prefix_cache.py) instead of computed

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; methods declare what they need and validation checks it before loading."""

    chat: bool = True
    logprobs: bool = False  # per-token log-probabilities of generated tokens
    logits: bool = False  # full next-token distributions, log-likelihood of given text
    weights: bool = False  # parameters can be read and replaced in memory
    lora: bool = False  # LoRA adapters can be attached and trained
    seeded: bool = False  # sampling is reproducible per request seed
    images: bool = False

    def missing(self, needed: "Capabilities") -> list[str]:
        return [k for k, v in needed.__dict__.items() if v and not getattr(self, k)]


@runtime_checkable
class Backend(Protocol):
    """A loaded model. `generate` takes a batch and returns results aligned with it."""

    fingerprint: str
    capabilities: Capabilities

    def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        """Split requests (by index) into the batches `generate` should receive; deterministic."""
        ...

    def close(self) -> None: ...


def with_role_prompt(messages: "tuple[Message, ...] | list[Message]", role_prompt: str | None) -> tuple[Message, ...]:
    """The messages as a pseudo-expert sees them: its role prompt as (or before) the system message."""
    msgs: list[Message] = [(role, content) for role, content in messages]
    if role_prompt:
        if msgs and msgs[0][0] == "system":
            msgs[0] = ("system", f"{role_prompt}\n\n{msgs[0][1]}")
        else:
            msgs.insert(0, ("system", role_prompt))
    return tuple(msgs)


def chunk_plan(n: int, batch_size: int, order: list[int] | None = None) -> list[list[int]]:
    """Fixed-size batches over `order` (default 0..n-1)."""
    idx = list(range(n)) if order is None else order
    bs = max(1, batch_size)
    return [idx[i : i + bs] for i in range(0, len(idx), bs)]
