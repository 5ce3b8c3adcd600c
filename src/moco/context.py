"""RunContext: what a collaboration method may use, and nothing else.

Models by index or role, the task's data, `generate` (and its shorthands `ask`, `answer_all`), batch `score`,
the decoding settings, a seeded `rng`, `phase` accounting, an `artifacts_dir` and `metrics` for method-specific
figures. Generation itself (request keys, seeds, response cache, call records, merged batches) is
`moco.gateway.Gateway` over `moco.scheduler`; dev-based selection is `moco.selection`. Methods are
`async def run(ctx, params)` and await `ctx.generate`, so calls from all rounds, roles and sweep cells merge.
"""
from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco.cache import ResponseCache
from moco.calls import Call, Response
from moco.config import DecodingSettings, ModelSpec
from moco.gateway import Gateway
from moco.models.base import SamplingParams
from moco.models.pool import LocalModel, ModelHandle, ModelPool
from moco.progress import Progress
from moco.scoring.base import BoundModels, Scorer, ScoreResult, score_with
from moco.tasks.base import Example, Task
from moco.trace import CallRecorder

# what methods import from here (Call and Response live in moco.calls and are re-exported)
__all__ = ["Call", "Output", "Response", "RunContext"]

ModelRef = "int | str | ModelHandle"


@dataclass
class Output:
    """A method's final answer for one test example. `answer` skips extraction (e.g. a voted answer)."""

    text: str
    answer: str | None = None
    use_answer: bool = False
    trace: dict[str, Any] | None = None
    failed: bool = False


class RunContext:
    """Public members: models, model, role, local, task, generate, ask, answer_all, score, scorer, decoding,
    sampling, rng, seed, phase, artifacts_dir, metrics, add_model, account."""

    def __init__(self, *, pool: ModelPool, task: Task, scorer: Scorer, cache: ResponseCache,
                 recorder: CallRecorder, decoding: DecodingSettings, seed: int = 0,
                 artifacts_dir: Path | None = None, progress: Progress | None = None,
                 roles: dict[str, ModelHandle] | None = None, gateway: Gateway | None = None):
        self._gw = gateway or Gateway(pool, cache, recorder, seed, progress or Progress())
        self.task = task
        self.scorer = scorer
        self.decoding = decoding
        self.seed = seed
        self.rng = random.Random(seed)
        self.artifacts_dir = artifacts_dir
        self._roles = roles or {}
        self.metrics: dict[str, Any] = {}  # method-specific figures merged into metrics.json
        if hasattr(scorer, "bind"):  # model-based scorers (judge, reward): this run's generation and roles only
            scorer.bind(self.generate, BoundModels(self.role, self.sampling, self.local, self.add_model))

    # ------------------------------------------------------------------ models and data
    @property
    def models(self) -> list[ModelHandle]:
        return self._gw.pool.handles

    def model(self, ref: Any) -> ModelHandle:
        return self._gw.pool.handle(ref)

    def role(self, name: str) -> ModelHandle | None:
        """The model bound to a role in the config (`roles:`), or None when unbound."""
        return self._roles.get(name)

    def add_model(self, name: str, model: "ModelSpec | Any") -> ModelHandle:
        """Make a model usable by `generate` that is not in the collaborating pool: a spec (e.g. a trained
        adapter) or an already-built backend (weights merged in memory, a token-level method's composite).
        A backend's `fingerprint` must identify what it computes: cached responses are keyed on it."""
        if isinstance(model, ModelSpec):
            return self._gw.pool.add_extra(name, model)
        return self._gw.pool.register_backend(name, model)

    def local(self, ref: Any) -> LocalModel:
        """A model's in-process side (weights, logits, fingerprint, device, files): see LocalModel."""
        return LocalModel(self._gw.pool.handle(ref), self._gw.pool)

    def account(self, *, model: str, key: str, tag: str, tokens_in: int, latency: float, tokens_out: int = 0,
                cached: bool = False, finish: str = "stop", error: str | None = None, batch: int | None = None) -> None:
        """Record model work that is not generation (training, a loss over dev data, a remote exchange) in
        calls.jsonl and the phase totals, so the run's cost includes it."""
        self._gw.recorder.record(model=model, key=key, tag=tag, tokens_in=tokens_in, tokens_out=tokens_out,
                                 latency=latency, cached=cached, finish=finish, error=error, batch=batch)

    def sampling(self, **overrides: Any) -> SamplingParams:
        g = self.decoding
        base: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_p": g.top_p}
        base.update(overrides)
        return SamplingParams(**base)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Account calls and wall time to `name` (dev, test or score) inside the block."""
        rec = self._gw.recorder
        token = rec.enter(name)
        t0 = time.time()
        try:
            yield
        finally:
            rec.stats(name).wall_s += time.time() - t0
            rec.leave(token)

    # ------------------------------------------------------------------ generation
    async def generate(self, calls: Sequence[Call], tag: str = "") -> list[Response]:
        """Run many calls at once; responses come back in the order of `calls`."""
        return await self._gw.generate(calls, self.sampling(), tag)

    async def ask(self, model: Any, prompts: Sequence[str], tag: str = "", sampling: SamplingParams | None = None,
                  replica: int = 0) -> list[Response]:
        """One model, many prompts."""
        return await self.generate([Call(model, p, sampling, replica) for p in prompts], tag=tag)

    async def answer_all(self, examples: Sequence[Example], tag: str = "answer",
                         models: Sequence[ModelHandle] | None = None) -> list[list[Response]]:
        """Every model answers every example's prompt, in one batched call: out[model_index][example_index]."""
        ms = list(models) if models is not None else self.models
        calls = [Call(m, ex.prompt, images=ex.images) for m in ms for ex in examples]
        flat = await self.generate(calls, tag=tag)
        n = len(examples)
        return [flat[i * n:(i + 1) * n] for i in range(len(ms))]

    # ------------------------------------------------------------------ scoring
    async def score(self, examples: Sequence[Example], texts: Sequence[str]) -> list[ScoreResult]:
        """Score many responses at once (a judge or reward model is called in one batch, phase "score")."""
        with self.phase("score"):
            return await score_with(self.scorer, examples, texts)
