"""What a caller sends to `generate` and gets back: a `Call` and its `Response`.

A module of its own (re-exported by `moco.context`) so that code which only asks models for text — scorers,
selection helpers — depends on these two types and on no run context, and no import cycle runs through
`moco.context`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moco.models.base import Message, SamplingParams


@dataclass
class Call:
    """One prompt for one model. `prompt` is a user message, or a list of (role, content) messages."""

    model: Any  # int | str | ModelHandle
    prompt: str | Sequence[Message]
    sampling: SamplingParams | None = None
    replica: int = 0  # i-th independent sample of the same prompt
    prefix: str = ""  # assistant text the answer must continue
    images: Sequence[str] = ()  # image references shown with the last user message (VLMs only)


@dataclass
class Response:
    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[float] | None = None
    finish_reason: str = "stop"  # stop (end of answer or stop string) | length (max_new_tokens reached) | error
    extra: dict[str, Any] | None = None  # what a composite backend (token-level method) returns beside the text: its trace

    @property
    def failed(self) -> bool:
        return self.error is not None
