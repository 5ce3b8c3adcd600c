"""A deterministic backend for tests and dry runs: replies come from rules, and every request is recorded.

Tests use the record to show an algorithm's steps (which model saw which answers in which round).
"""
from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moco.models import time_limit
from moco.models.base import Capabilities, GenRequest, GenResult, Message, chunk_plan

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

Rule = tuple[str, "str | list[str]"]


@dataclass
class ScriptedCall:
    """One request as the scripted model received it."""

    messages: tuple[Message, ...]
    prompt: str
    reply: str
    seed: int
    images: tuple[str, ...] = ()


class ScriptedBackend:
    """Replies by the first matching regex rule (searched in the last user message), else `default`.

    A reply may be a list: one element is chosen with the request seed (sampling), or the first when greedy.
    `fn` overrides rules: any callable (request) -> str. `images=True` makes it accept image requests
    (a stand-in for a vision-language model: tests read which images each call carried).
    `seconds_per_token` > 0 paces a batch like a decoding loop (one word per row per step, a step takes that
    long, a row leaves when its reply is out) and honours the server's time limit between steps.
    """

    def __init__(
        self,
        name: str = "scripted",
        rules: list[Rule] | None = None,
        default: str | list[str] = "",
        fn: Callable[[GenRequest], str] | None = None,
        batch_size: int = 16,
        images: bool = False,
        seconds_per_token: float = 0.0,
    ):
        self.name = name
        self.capabilities = Capabilities(chat=True, seeded=True, images=images)
        self.rules = [(re.compile(p, re.S), r) for p, r in (rules or [])]
        self.default = default
        self.fn = fn
        self.batch_size = batch_size
        self.seconds_per_token = seconds_per_token
        self.calls: list[ScriptedCall] = []
        self._lock = threading.Lock()
        script_id = repr((rules, default, getattr(fn, "__qualname__", None)))
        self.fingerprint = f"scripted:{name}:{hashlib.sha256(script_id.encode()).hexdigest()[:12]}"

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return chunk_plan(len(requests), self.batch_size)

    def _reply(self, req: GenRequest) -> str:
        if self.fn is not None:
            return self.fn(req)
        user = next((c for r, c in reversed(req.messages) if r == "user"), "")
        for pattern, reply in self.rules:
            if pattern.search(user):
                return self._pick(reply, req)
        return self._pick(self.default, req)

    @staticmethod
    def _pick(reply: str | list[str], req: GenRequest) -> str:
        if isinstance(reply, str):
            return reply
        if req.sampling.greedy:
            return reply[0]
        return random.Random(req.seed).choice(reply)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        out = []
        for req in requests:
            text = self._reply(req)
            words = text.split()
            if len(words) > req.sampling.max_new_tokens:
                text, finish = " ".join(words[: req.sampling.max_new_tokens]), "length"
            else:
                finish = "stop"
            prompt = "\n".join(c for _, c in req.messages)
            with self._lock:
                self.calls.append(ScriptedCall(req.messages, prompt, text, req.seed, req.images))
            out.append(GenResult(text, len(prompt.split()), len(text.split()), finish))
        if self.seconds_per_token > 0:
            self._pace(out)
        return out

    def _pace(self, out: list[GenResult]) -> None:
        """Take as long as decoding would; rows still 'decoding' at the time limit stop with its error."""
        alive = [i for i, r in enumerate(out) if r.tokens_out > 0]
        step = 0
        while alive:
            if time_limit.passed():
                for i in alive:
                    out[i] = GenResult("", out[i].tokens_in, step, time_limit.FINISH, error=time_limit.ERROR)
                return
            time.sleep(self.seconds_per_token)
            step += 1
            alive = [i for i in alive if out[i].tokens_out > step]

    def received(self, containing: str | None = None) -> list[ScriptedCall]:
        """The calls whose prompt contains `containing` (all calls when None)."""
        return [c for c in self.calls if containing is None or containing in c.prompt]

    def close(self) -> None:
        return None


def from_spec(name: str, script: dict[str, Any] | None, batch_size: int = 16) -> ScriptedBackend:
    """Build a scripted backend from a config entry: `script: {rules: [{match, reply}], default,
    seconds_per_token}`; it batches like an HF backend with `hardware.batch_size` (so batching and
    resumption can be tested) and, paced, takes as long as a slow model would."""
    script = script or {}
    rules = [(r["match"], r["reply"]) for r in script.get("rules", [])]
    builtin = name.split(":", 1)[1] if ":" in name else ""
    if builtin == "echo":
        return ScriptedBackend(name, fn=lambda req: next((c for r, c in reversed(req.messages) if r == "user"), ""),
                               batch_size=batch_size)
    return ScriptedBackend(name, rules=rules, default=script.get("default", ""), batch_size=batch_size,
                           seconds_per_token=float(script.get("seconds_per_token") or 0.0))


def load(spec: "ModelSpec", ctx: "PoolContext") -> ScriptedBackend:
    """The backend registry's factory (models/backends.py)."""
    return from_spec(spec.model, spec.script.model_dump() if spec.script else None,
                     batch_size=ctx.hardware.batch_size)
