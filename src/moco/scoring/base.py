"""The scorer protocol: extract a canonical answer (for votes), score it against the gold, a whole batch at once.

Every scorer has `extract`, `score` and `score_answer` (one item, rule-based, no model), `score_all` (a batch,
rule-based: a group rule, parallel code execution, one encoder pass) and `async score_batch(examples,
responses)`, the one entry point of a run: a rule-based scorer maps it to `score_all`, a model-based scorer
(an LLM judge, a reward model) makes ONE batched `generate` call for the whole batch.

A model-based scorer never sees the run: it is bound (`bind(generate, models)`) to a `Generate` (the run's
batched, cached, traced generation: `async (calls, tag) -> responses`) and a `RoleModels` (the model bound to
its config `role`, the run's decoding defaults). Async code scores with `await score_with(scorer, examples,
responses)`; `run_batch` (and `moco.aio.run`) are the synchronous bridges for code that is not async yet (`moco score`,
`RunContext.score_many`), and go away once their callers await.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from moco import aio, faults
from moco.calls import Call, Response
from moco.errors import ConfigError
from moco.models.base import SamplingParams
from moco.tasks.base import Example

if TYPE_CHECKING:
    from moco.models.pool import LocalModel, ModelHandle, ModelPool

T = TypeVar("T")

Generate = Callable[[Sequence[Call], str], Awaitable[list[Response]]]
"""The generation a scorer may use: `await generate(calls, tag)` -> one response per call, in order."""


class RoleModels(Protocol):
    """What a model-based scorer needs of a run besides `generate`: the model bound to a config role (None when
    unbound), the run's decoding defaults with overrides (so a judge call keys the cache as before), and, for a
    scorer that serves a role's weights with its own backend (a reward head), the model's in-process side and a
    way to register that backend as a model of the run. A run context is one."""

    def role(self, name: str) -> "ModelHandle | None": ...

    def sampling(self, **overrides: Any) -> SamplingParams: ...

    def local(self, ref: Any) -> "LocalModel": ...

    def add_model(self, name: str, model: Any) -> "ModelHandle": ...


@dataclass(frozen=True)
class BoundModels:
    """A `RoleModels` made of parts (what a run hands its scorer instead of itself)."""

    role: Callable[[str], "ModelHandle | None"]
    sampling: Callable[..., SamplingParams]
    local: Callable[[Any], "LocalModel"]
    add_model: Callable[[str, Any], "ModelHandle"]

    @classmethod
    def of_pool(cls, pool: "ModelPool", role: Callable[[str], "ModelHandle | None"],
                sampling: Callable[..., SamplingParams]) -> "BoundModels":
        """Role models over a pool (a server or a test without a run context)."""
        from moco.models.pool import LocalModel

        return cls(role, sampling, lambda ref: LocalModel(pool.handle(ref), pool), pool.register_backend)


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

    async def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        """A whole batch (a model-based scorer: one batched `generate` call)."""
        ...


class BaseScorer:
    """Defaults shared by the scorers: per-item `score_all` and `score_batch`, `score_answer` by comparing keys,
    no role."""

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

    def score_all(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        """A batch without a model (rule-based): item by item unless the scorer needs the batch."""
        return [self.score(ex, r) for ex, r in zip(examples, responses)]

    async def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        """The whole batch, as a run scores it (a model-based scorer: one batched `generate` call)."""
        return self.score_all(examples, responses)

    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else self.name


class ModelScorer(BaseScorer):
    """A scorer that calls the model bound to `role`, through the `Generate` it is bound to (never a run)."""

    role = "judge"
    needs_gold = False
    _generate: Generate | None = None
    _models: RoleModels | None = None

    def bind(self, generate: Generate, models: RoleModels) -> None:
        """Use `generate` for every model call, and `models` to find the role's model."""
        self._generate, self._models = generate, models

    def bound(self) -> tuple[Generate, RoleModels, "ModelHandle"]:
        """The generation, the run's models and the role's model; a clear error when unbound."""
        if self._generate is None or self._models is None:
            raise ConfigError(f"scorer {self.name} calls a model (role '{self.role}'); it must be bound to a "
                              "run's generation first (bind)")
        handle = self._models.role(self.role)
        if handle is None:
            raise ConfigError(missing_role_message(self.name, self.role))
        return self._generate, self._models, handle

    async def ask(self, prompts: dict[int, str], parse: Callable[[str], Any],
                  max_new_tokens: int) -> dict[int, tuple[Any, str]]:
        """Send prompts (item index -> prompt) to the role's model in ONE greedy batched `generate` call;
        returns item index -> (parsed verdict or None, the reply's tail or the call's error)."""
        if not prompts:
            return {}
        generate, models, handle = self.bound()
        sampling = models.sampling(temperature=0.0, max_new_tokens=max_new_tokens)
        idx = list(prompts)
        replies = await generate([Call(handle, prompts[i], sampling) for i in idx], self.name)
        return {i: (None if r.failed else parse(r.text), r.error or r.text[-300:]) for i, r in zip(idx, replies)}

    def score_all(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        raise ConfigError(f"scorer {self.name} calls a model (role '{self.role}'): score with `score_batch`")

    def score(self, example: Example, response: str) -> ScoreResult:
        """One item: a batch of one through the bound generation (prefer scoring whole batches)."""
        return run_batch(self, [example], [response])[0]


def missing_role_message(scorer: str, role: str) -> str:
    example = {"judge": "roles: {judge: {model: TIGER-Lab/general-verifier}}",
               "reward": "roles: {reward: {model: Skywork/Skywork-Reward-Llama-3.1-8B-v0.2}}"}.get(role, f"roles: {{{role}: ...}}")
    return f"scorer '{scorer}' needs a model bound to the role '{role}' in the config (e.g. {example})"


async def score_with(scorer: Any, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
    """Score a batch with any scorer, from async code: its `score_batch` when it has one, else item by item."""
    faults.hit("score.batch")
    if not examples:
        return []
    if hasattr(scorer, "score_batch"):
        return list(await scorer.score_batch(examples, responses))
    return [scorer.score(ex, r) for ex, r in zip(examples, responses)]


def run_batch(scorer: Any, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
    """`score_with` from synchronous code (no event loop running in this thread); a rule-based scorer runs
    without an event loop. Transitional: async callers await `score_with` (or `scorer.score_batch`)."""
    if getattr(scorer, "role", None) is None and hasattr(scorer, "score_all"):
        faults.hit("score.batch")
        return list(scorer.score_all(examples, responses)) if examples else []  # no model: no event loop needed
    return aio.run(score_with(scorer, examples, responses))
