"""Token-level collaboration as a backend: a method's decoding of several token models, called like one model.

Nudging, Co-LLM and MentorCollab interleave their models token by token (`moco.models.stepper`). Wrapped in
a `TokenLevelBackend` and registered with `ctx.add_model`, such a method is asked through `ctx.generate`
like any model, so the response cache, per-request seeds, batching, progress and call records are the core's:

* the backend's `fingerprint` names the method, its settings and its members' fingerprints and role prompts,
  so a cached answer is reused exactly when the same decoding would run again (a killed run resumes, a re-run
  decodes nothing it already has);
* `plan_batches` forms length-sorted batches of the lead member's batch size (its engine setting);
* each result carries `extra = {"trace": ..., "usage": {model: [tokens_in, tokens_out]}}`: the trace goes
  into the predictions, and the core records one call per member model from `usage`.

Each member reads the prompt with its own role prompt; member k > 0 samples with a seed derived from the
request's (the per-request seed, which the core derives from the cache key), so rows are reproducible
whatever their batch.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from moco.models.base import (
    Capabilities,
    GenRequest,
    GenResult,
    SamplingParams,
    chunk_plan,
    with_role_prompt,
)
from moco.models.stepper import RowUsage
from moco.models.token_model import TokenModel


@dataclass
class Outcome:
    """One example decoded by a token-level method."""

    text: str
    finish: str = "stop"  # stop (end of answer) | length (token budget reached)
    trace: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, list[int]] = field(default_factory=dict)  # model name -> [tokens_in, tokens_out]


def usage_of(pairs: Sequence[tuple[str, RowUsage]]) -> dict[str, list[int]]:
    """Per-model [tokens_in, tokens_out] of one row (models sharing a name are summed)."""
    out: dict[str, list[int]] = {}
    for name, u in pairs:
        cur = out.setdefault(name, [0, 0])
        cur[0] += u.tokens_in
        cur[1] += u.tokens_out
    return out


def add_segment(segments: list[list[str]], writer: str, text: str) -> None:
    """Append text to the trace's [writer, text] segments, merging consecutive text of the same writer."""
    if not text:
        return
    if segments and segments[-1][0] == writer:
        segments[-1][1] += text
    else:
        segments.append([writer, text])


@dataclass
class Member:
    """One model a token-level method drives: its name (in traces and call records), the model, its role prompt."""

    name: str
    model: TokenModel
    role_prompt: str | None = None


Decode = Callable[[list[list[GenRequest]], SamplingParams], list[Outcome]]
"""(requests[member][row], sampling) -> one Outcome per row: the method's decoding of one batch."""


def member_seed(seed: int, member: int) -> int:
    """Member 0 samples with the request's seed, the others with seeds derived from it."""
    if member == 0:
        return seed
    return int(hashlib.sha256(f"{seed}:{member}".encode()).hexdigest()[:15], 16)


class TokenLevelBackend:
    """A token-level method over its member models, as one backend (see the module docstring)."""

    def __init__(self, method: str, settings: dict[str, Any], members: list[Member], decode: Decode):
        self.method = method
        self.members = members
        self.decode = decode
        ident = {"method": method, "settings": settings,
                 "members": [[m.name, m.model.fingerprint, m.role_prompt or ""] for m in members]}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.fingerprint = f"token-level:{method}:{digest}"
        self.capabilities = Capabilities(chat=True, seeded=True)
        self.batch_size = max(1, members[0].model.batch_size)

    def member_requests(self, requests: Sequence[GenRequest]) -> list[list[GenRequest]]:
        """requests[member][row]: each member reads the prompt with its own role prompt and seed."""
        return [[replace(r, messages=with_role_prompt(r.messages, m.role_prompt), seed=member_seed(r.seed, k))
                 for r in requests] for k, m in enumerate(self.members)]

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        """Longest prompts (in the lead member's tokens) first, in batches of the lead member's batch size."""
        lead = self.members[0]
        lengths = [len(lead.model.encode(r)) for r in self.member_requests(requests)[0]]
        return chunk_plan(len(requests), self.batch_size, sorted(range(len(requests)), key=lambda i: (-lengths[i], i)))

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        from moco.models.hf import generate_grouped

        return generate_grouped(requests, self._decode)

    def _decode(self, requests: list[GenRequest], sampling: SamplingParams) -> list[GenResult]:
        outs = self.decode(self.member_requests(requests), sampling)
        return [GenResult(o.text, sum(u[0] for u in o.usage.values()), sum(u[1] for u in o.usage.values()), o.finish,
                          extra={"trace": o.trace, "usage": o.usage}) for o in outs]

    def close(self) -> None:  # the members belong to the pool
        pass


def outcomes(responses: Sequence[Any]) -> list[Outcome]:
    """The Outcomes of `ctx.generate` responses from a TokenLevelBackend (trace and usage from their extra)."""
    return [Outcome(r.text, r.finish_reason, (r.extra or {}).get("trace", {}), (r.extra or {}).get("usage", {}))
            for r in responses]
