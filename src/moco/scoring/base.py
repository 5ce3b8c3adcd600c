"""The scorer protocol: extract a canonical answer (for votes), score it against the gold.

Every scorer has `extract`, `score` and `score_answer` (one item, no model). Scorers that need a model (an LLM
judge, a reward model) or the whole batch (a group rule, parallel code execution) also have
`score_batch(ctx, examples, responses)`: the runner calls it once per split, inside the phase "score", so every
model call goes through `ctx.generate` (batched, cached, traced). `role` names the config role such a scorer
needs ("judge", "reward"); `score` on such a scorer works only once it is bound to a run (`bind(ctx)`).
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from moco import faults
from moco.calls import Call, Response
from moco.errors import ConfigError
from moco.models.base import SamplingParams
from moco.tasks.base import Example


class ScoringContext(Protocol):
    """What a scorer may use of a run (a `RunContext` is one): the models bound to roles, their sampling, the
    batched `generate`, and the phase the calls are accounted to. Declared here so that scoring does not
    import the run context (no import cycle)."""

    def role(self, name: str) -> Any: ...

    def sampling(self, **overrides: Any) -> SamplingParams: ...

    def generate(self, calls: Sequence[Call], tag: str = "") -> list[Response]: ...

    def phase(self, name: str) -> AbstractContextManager[None]: ...


@dataclass
class ScoreResult:
    """`extracted` is the canonical answer (None when nothing could be parsed: scored 0, counted unparsed)."""

    score: float
    extracted: str | None
    strict: float | None = None  # score under strict extraction only, where the scorer has one
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # scorer-specific facts (judge verdict, test output...)

    @property
    def parsed(self) -> bool:
        return self.extracted is not None


class Scorer(Protocol):
    name: str
    metric: str

    def extract(self, example: Example, response: str) -> str | None:
        """Canonical answer key: equal keys mean the same answer (majority vote relies on it)."""
        ...

    def score(self, example: Example, response: str) -> ScoreResult: ...

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        """Score an already-extracted canonical answer."""
        ...


class BaseScorer:
    """Defaults shared by the scorers: per-item `score_batch`, `score_answer` by comparing keys, no role."""

    name = "base"
    metric = "accuracy"
    role: str | None = None  # config role of the model this scorer calls, if any
    needs_gold = True  # False: the item is scored without a reference answer (judges, reward, diversity)

    def extract(self, example: Example, response: str) -> str | None:
        raise NotImplementedError

    def score(self, example: Example, response: str) -> ScoreResult:
        raise NotImplementedError

    def gold_key(self, example: Example) -> str | None:
        return None if example.answer is None else self.extract(example, str(example.answer))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        ok = float(answer is not None and answer == self.gold_key(example))
        return ScoreResult(ok, answer, strict=ok)

    def score_batch(self, ctx: "ScoringContext | None", examples: Sequence[Example],
                    responses: Sequence[str]) -> list[ScoreResult]:
        return [self.score(ex, r) for ex, r in zip(examples, responses)]

    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else self.name


class ModelScorer(BaseScorer):
    """A scorer that calls a model bound to `role`; one-item `score` needs the run it is bound to."""

    role = "judge"
    needs_gold = False
    _ctx: "ScoringContext | None" = None

    def bind(self, ctx: "ScoringContext") -> None:
        self._ctx = ctx

    def require(self, ctx: "ScoringContext | None") -> "ScoringContext":
        ctx = ctx or self._ctx
        if ctx is None:
            raise ConfigError(f"scorer {self.name} calls a model (role '{self.role}'); it needs a run context")
        if ctx.role(self.role) is None:
            raise ConfigError(missing_role_message(self.name, self.role))
        return ctx

    def ask(self, ctx: "ScoringContext", prompts: dict[int, str], parse: Any,
            max_new_tokens: int) -> dict[int, tuple[Any, str]]:
        """Send prompts (item index -> prompt) to the role's model in one greedy batch through `ctx.generate`;
        returns item index -> (parsed verdict or None, the reply's tail or the call's error)."""
        if not prompts:
            return {}
        model = ctx.role(self.role)
        sampling = ctx.sampling(temperature=0.0, max_new_tokens=max_new_tokens)
        idx = list(prompts)
        replies = ctx.generate([Call(model, prompts[i], sampling) for i in idx], tag=self.name)
        return {i: (None if r.failed else parse(r.text), r.error or r.text[-300:]) for i, r in zip(idx, replies)}

    def score(self, example: Example, response: str) -> ScoreResult:
        """One item through the bound run (accounted to the phase "score"); prefer `ctx.score_many`."""
        ctx = self.require(None)
        with ctx.phase("score"):
            return self.score_batch(ctx, [example], [response])[0]


def missing_role_message(scorer: str, role: str) -> str:
    example = {"judge": "roles: {judge: {model: TIGER-Lab/general-verifier}}",
               "reward": "roles: {reward: {model: Skywork/Skywork-Reward-Llama-3.1-8B-v0.2}}"}.get(role, f"roles: {{{role}: ...}}")
    return f"scorer '{scorer}' needs a model bound to the role '{role}' in the config (e.g. {example})"


def score_many(scorer: Any, ctx: "ScoringContext | None", examples: Sequence[Example],
               responses: Sequence[str]) -> list[ScoreResult]:
    """Score a batch with any scorer: its `score_batch` when it has one, else item by item."""
    faults.hit("score.batch")
    if hasattr(scorer, "score_batch"):
        return list(scorer.score_batch(ctx, examples, responses))
    return [scorer.score(ex, r) for ex, r in zip(examples, responses)]
