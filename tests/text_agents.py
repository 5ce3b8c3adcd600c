"""Scripted collaborators for the text-level method tests: every reply names its author and what it answers,
so tests can read from the prompts each model received who saw what, in which round."""
from __future__ import annotations

import re
from collections.abc import Callable

from helpers import letter_for
from moco.models.scripted import ScriptedBackend


def wrong(letter: str) -> str:
    return "ABCD"[("ABCD".index(letter) + 1) % 4]


def agent(name: str, correct: bool, extra: Callable[[str], str | None] | None = None) -> ScriptedBackend:
    """Answers `<name>:<tag> The answer is (X)` (right or wrong letter for `Question i`); `extra(prompt)` may
    reply first (e.g. to feedback, ranking or blackboard prompts)."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        if extra is not None:
            out = extra(prompt)
            if out is not None:
                return out
        letter = letter_for(prompt)
        letter = letter if correct else wrong(letter)
        m = re.search(rf"Your previous answer:\n{name}:r(\d+)", prompt)
        tag = f"r{int(m.group(1)) + 1}" if m else "r0"
        return f"{name}:{tag} The answer is ({letter})"

    return ScriptedBackend(name, fn=reply)


def backends(agents: dict[str, ScriptedBackend]) -> dict[str, ScriptedBackend]:
    return {f"scripted:{n}": b for n, b in agents.items()}


def record_generate(monkeypatch) -> list[tuple[str, list[str]]]:
    """Spy on RunContext.generate: every batched call as (tag, [model name of each call])."""
    from moco.context import RunContext

    seen: list[tuple[str, list[str]]] = []
    orig = RunContext.generate

    def generate(self, calls, tag=""):
        seen.append((tag, [self.model(c.model).name for c in calls]))
        return orig(self, calls, tag)

    monkeypatch.setattr(RunContext, "generate", generate)
    return seen


def scripted_context(task_path, cache, bk: dict[str, ScriptedBackend], names, method: str = "single_model",
                     roles: dict | None = None):
    """A RunContext over scripted models (`bk` keyed 'scripted:<name>'), to drive one step of a method directly."""
    from moco.config import parse_config
    from moco.context import RunContext
    from moco.runner import plan
    from moco.trace import CallRecorder

    cfg = parse_config({"method": method, "task": {"name": str(task_path)},
                        "models": [f"scripted:{n}" for n in names], "roles": roles or {},
                        "decoding": {"max_new_tokens": 32}})
    p = plan(cfg, backends=bk)
    return RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                      decoding=p.config.decoding, roles=p.roles)
