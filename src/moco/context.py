"""RunContext: everything a method may use — models by index or role, examples, scorer, and `generate`.

`generate` takes a whole batch of calls (any mix of models), serves what it can from the response cache,
groups the rest by loaded backend (so pseudo-experts sharing weights share forward passes), runs them in
length-sorted batches, writes each finished batch to the cache and to calls.jsonl, and returns responses
aligned with the calls. Methods never loop over single prompts against a backend.
"""
from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from moco import faults, lockstep
from moco.cache import ResponseCache, request_key, seed_from_key
from moco.calls import Call, Response
from moco.config import ENGINE_KEYS, DecodingSettings, ModelSpec
from moco.errors import BackendDown, ModelError
from moco.failures import Failures, account
from moco.models.base import GenRequest, GenResult, Message, SamplingParams, with_role_prompt
from moco.models.pool import ModelHandle, ModelPool
from moco.progress import Progress
from moco.scoring.base import Scorer, ScoreResult
from moco.tasks.base import Example, Task
from moco.trace import CallRecorder

ModelRef = "int | str | ModelHandle"


@dataclass
class Output:
    """A method's final answer for one test example. `answer` skips extraction (e.g. a voted answer)."""

    text: str
    answer: str | None = None
    use_answer: bool = False
    trace: dict[str, Any] | None = None
    failed: bool = False


def _widest(prepared: list[tuple[str, GenRequest]], positions: list[int]) -> GenRequest:
    """Of identical calls, the one asking for log-probabilities if any (its result serves them all)."""
    return next((prepared[p][1] for p in positions if prepared[p][1].sampling.logprobs), prepared[positions[0]][1])


class RunContext:
    overlap_remote = True  # remote backends of one generate call run concurrently (False: one after the other)

    def __init__(self, *, pool: ModelPool, task: Task, scorer: Scorer, cache: ResponseCache,
                 recorder: CallRecorder, decoding: DecodingSettings, seed: int = 0,
                 artifacts_dir: Path | None = None, progress: Progress | None = None,
                 roles: dict[str, ModelHandle] | None = None):
        self.pool = pool
        self.task = task
        self.scorer = scorer
        self.cache = cache
        self.recorder = recorder
        self.decoding = decoding
        self.seed = seed
        self.rng = random.Random(seed)
        self.artifacts_dir = artifacts_dir
        self.progress = progress or Progress()
        self.roles = roles or {}
        self._dev_scores: dict[int, list[ScoreResult]] = {}
        self._dev_answers: dict[int, list[Response]] = {}
        self._dev_item_scores: dict[int, list[float]] = {}
        self.extra_metrics: dict[str, Any] = {}  # method-specific figures merged into metrics.json
        self._batch_id = 0
        self._results_lock = threading.Lock()
        if hasattr(scorer, "bind"):  # model-based scorers (judge, reward) call their role through this context
            scorer.bind(self)

    # ------------------------------------------------------------------ models and data
    @property
    def models(self) -> list[ModelHandle]:
        return self.pool.handles

    @property
    def dev(self) -> list[Example]:
        return self.task.dev

    @property
    def test(self) -> list[Example]:
        return self.task.test

    def model(self, ref: Any) -> ModelHandle:
        return self.pool.handle(ref)

    def add_model(self, name: str, spec: "ModelSpec") -> ModelHandle:
        """Make a model usable by `generate` that is not in the collaborating pool (e.g. a trained adapter)."""
        return self.pool.add_extra(name, spec)

    def add_backend(self, name: str, backend: Any) -> ModelHandle:
        """Use an already-built backend (e.g. a model whose weights were merged in memory) under `name`.
        Its `fingerprint` must identify its weights: cached responses are keyed on it."""
        return self.pool.register_backend(name, backend)

    def model_path(self, ref: Any) -> str:
        """The local folder of a Hugging Face model (embedded models are converted first), e.g. to train it."""
        return self.pool.source_path(self.pool.handle(ref))

    def role(self, name: str) -> ModelHandle | None:
        """The model bound to a role in the config (`roles:`), or None when unbound."""
        return self.roles.get(name)

    @property
    def generation(self) -> SimpleNamespace:
        """Read-only former view (decoding + the pool's engine resources) for methods not yet moved to
        `decoding` / the pool; to be removed."""
        hw = self.pool.hardware
        return SimpleNamespace(**self.decoding.model_dump(), **{k: getattr(hw, k) for k in ENGINE_KEYS})

    def sampling(self, **overrides: Any) -> SamplingParams:
        g = self.decoding
        base = {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_p": g.top_p}
        base.update(overrides)
        return SamplingParams(**base)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Account calls and wall time to `name` (dev or test) inside the block."""
        prev = self.recorder.phase
        self.recorder.phase = name
        t0 = time.time()
        try:
            yield
        finally:
            self.recorder.stats(name).wall_s += time.time() - t0
            self.recorder.phase = prev

    # ------------------------------------------------------------------ generation
    def _request(self, handle: ModelHandle, call: Call) -> tuple[str, GenRequest]:
        msgs: list[Message] = [("user", call.prompt)] if isinstance(call.prompt, str) else [tuple(m) for m in call.prompt]
        sampling = call.sampling or self.sampling()
        req = GenRequest(with_role_prompt(msgs, handle.role_prompt), sampling, 0, call.prefix, tuple(call.images))
        key = request_key(self.pool.fingerprint(handle), req, self.seed, call.replica + handle.replica_offset)
        return key, GenRequest(req.messages, sampling, seed_from_key(key), call.prefix, req.images)

    def request(self, call: Call) -> tuple[str, GenRequest]:
        """The cache key and the exact request (role prompt added, per-request seed) that `generate` would send;
        token-level methods that drive a backend's model directly build their prompts and seeds with it."""
        return self._request(self.pool.handle(call.model), call)

    def generate(self, calls: Sequence[Call], tag: str = "") -> list[Response]:
        """Run many calls at once; responses come back in the order of `calls`."""
        handles = [self.pool.handle(c.model) for c in calls]
        prepared = [self._request(h, c) for h, c in zip(handles, calls)]
        where: dict[str, list[int]] = {}  # key -> positions in `calls` (identical calls run once)
        for pos, (key, _req) in enumerate(prepared):
            where.setdefault(key, []).append(pos)
        done: dict[str, tuple[GenResult, bool]] = {}
        for key, hit in self.cache.get_many(list(where)).items():
            if hit.extra is None and any(prepared[p][1].sampling.logprobs for p in where[key]):
                continue  # cached without log-probabilities: recompute (same seed, same text) and store them
            done[key] = (hit.to_result(), True)
            self._record(key, where[key], handles, done[key], tag, None, prepared)
        bar = self.progress.task(f"{self.recorder.phase} {tag}".strip(), len(where)) if where else None
        self.progress.advance(bar, len(done))
        by_backend: dict[str, list[str]] = {}
        for key, positions in where.items():  # plan over all requests of a backend, cached ones included
            by_backend.setdefault(handles[positions[0]].backend_key, []).append(key)
        jobs = [keys for keys in by_backend.values() if any(k not in done for k in keys)]

        def run(keys: list[str]) -> None:
            self._run_backend(keys, {k: (handles[where[k][0]], _widest(prepared, where[k])) for k in keys},
                              done, bar, lambda k, res, b: self._record(k, where[k], handles, res, tag, b, prepared))

        remote = [j for j in jobs if self.pool.is_remote(handles[where[j[0]][0]])]
        together = lockstep.current()
        if together is not None and jobs:  # other experiments' calls join these batches (moco compare)
            together.submit([self._job(keys, handles, where, prepared, done, bar, tag) for keys in jobs])
        elif remote and len(jobs) > 1 and self.overlap_remote:  # remote engines work while local models decode
            lockstep.overlapped([functools.partial(run, j) for j in remote],
                                [functools.partial(run, j) for j in jobs if j not in remote])
        else:
            for j in jobs:
                run(j)
        self.progress.done(bar)
        self._stop_if_down([handles[where[j[0]][0]] for j in jobs])
        out: list[Response] = []
        for h, (key, _req) in zip(handles, prepared):
            res, cached = done[key]
            out.append(Response(res.text, h.name, res.tokens_in, res.tokens_out, cached, res.error,
                                res.token_logprobs, res.top_logprobs, res.finish_reason, res.extra))
        return out

    def _record(self, key: str, positions: list[int], handles: list[ModelHandle], item: tuple[GenResult, bool],
                tag: str, batch: int | None, prepared: list[tuple[str, GenRequest]]) -> None:
        res, cached = item
        usage = (res.extra or {}).get("usage")
        for n, pos in enumerate(positions):  # identical calls of one generate are decoded once: the others are hits
            if usage:  # a composite backend (token-level method): one record per model it drove
                self._record_usage(usage, key, tag, res, cached or n > 0, batch)
                continue
            prompt = "\n".join(c for _r, c in prepared[pos][1].messages) if res.error is not None else None
            self.recorder.record(model=handles[pos].name, key=key, tag=tag, tokens_in=res.tokens_in,
                                 tokens_out=res.tokens_out, latency=res.latency_s, cached=cached or n > 0,
                                 finish=res.finish_reason, error=res.error, batch=batch, reused=res.tokens_reused,
                                 prompt=prompt)

    def _record_usage(self, usage: dict[str, list[int]], key: str, tag: str, res: GenResult, cached: bool,
                      batch: int | None) -> None:
        """Split a composite call's record over the models it drove (their tokens; latency shared by tokens)."""
        total = sum(a + b for a, b in usage.values()) or 1
        for name, (tin, tout) in usage.items():
            self.recorder.record(model=name, key=key, tag=tag, tokens_in=tin, tokens_out=tout,
                                 latency=res.latency_s * (tin + tout) / total, cached=cached,
                                 finish=res.finish_reason, error=res.error, batch=batch, reused=0, prompt=None)

    def _stop_if_down(self, handles: Sequence[ModelHandle]) -> None:
        """Stop the run with one line when a backend of this call went down (its answered calls are cached)."""
        for h in {h.name: h for h in handles}.values():
            if not self.pool.is_remote(h):  # only served models go down; asking for a local one could reload it
                continue
            why = getattr(self.pool.backend(h), "down", None)
            if why:
                calls = self.recorder.failures
                first = next((c.error for c in calls if not c.error.startswith("backend down")), None)
                raise BackendDown(f"model '{h.name}' is down: {why}; {len(calls)} model calls failed"
                                  + (f", first: {first[:200]}" if first else "") + ". Answered calls are cached: "
                                  "re-run the same command when the server is back")

    def failures(self, output_failed: Sequence[bool] = (), max_failed: float = 0) -> Failures:
        """The failed calls so far, traced to the dev and test items they belonged to (see failures.py)."""
        f = account(self.recorder.failures, self.task, list(output_failed), max_failed)
        if self.recorder.failures_untraced:  # beyond what the recorder keeps: each counts as a failed test item
            f.unattributed["test"] = f.unattributed.get("test", 0) + self.recorder.failures_untraced
            f.untraced_calls = self.recorder.failures_untraced
        return f

    def _run_backend(self, keys: list[str], unique: dict, done: dict, bar: Any, on_result) -> None:
        """Batches are planned over every request of the call, cached or not, and a batch is cached whole;
        so a resumed run forms the same batches and recomputes exactly what an uninterrupted run would."""
        handle = unique[keys[0]][0]
        backend = self.pool.backend(handle)
        reqs = [unique[k][1] for k in keys]
        self._check_images(handle, reqs)
        for batch in backend.plan_batches(reqs):
            missing = [i for i in batch if keys[i] not in done]
            if not missing:
                continue
            if getattr(backend, "down", None):  # a dead server: the rest would fail at once; generate() stops
                break
            results = backend.generate([reqs[i] for i in missing])
            faults.hit("generate.batch")
            self._deliver(handle, [(keys[i], r, False) for i, r in zip(missing, results)], done, bar, on_result)

    def _check_images(self, handle: ModelHandle, reqs: Sequence[GenRequest]) -> None:
        if any(r.images for r in reqs) and not self.pool.backend(handle).capabilities.images:
            raise ModelError(f"model '{handle.name}' cannot read images (it is not a vision-language model)")

    def _deliver(self, handle: ModelHandle, rows: list[tuple[str, GenResult, bool]], done: dict, bar: Any,
                 on_result, merged: int | None = None) -> None:
        """Cache a finished batch whole and record it. A row marked shared was decoded in the same merged batch
        for another experiment (lockstep): it is recorded like a cache hit, so no token is counted twice.
        Rows of a merged batch carry its number (the same in every experiment of the lockstep)."""
        with self._results_lock:  # backends of one call may run in threads (remote engines)
            if merged is None:
                self._batch_id += 1
            batch = self._batch_id if merged is None else merged
            fp = self.pool.fingerprint(handle)
            self.cache.put_many([(k, fp, r) for k, r, _shared in rows])
            for k, r, shared in rows:
                done[k] = (r, shared)
                on_result(k, done[k], None if shared else batch)
            self.progress.advance(bar, len(rows))

    def _job(self, keys: list[str], handles: list[ModelHandle], where: dict[str, list[int]],
             prepared: list[tuple[str, GenRequest]], done: dict, bar: Any, tag: str) -> lockstep.Job:
        """The requests of one backend, for a merged lockstep batch."""
        handle = handles[where[keys[0]][0]]
        reqs = {k: _widest(prepared, where[k]) for k in keys}
        self._check_images(handle, list(reqs.values()))
        on_result = lambda k, res, b: self._record(k, where[k], handles, res, tag, b, prepared)  # noqa: E731
        return lockstep.Job(self, handle, keys, reqs, done,
                            lambda rows, merged: self._deliver(handle, rows, done, bar, on_result, merged))

    def ask(self, model: Any, prompts: Sequence[str], tag: str = "", sampling: SamplingParams | None = None,
            replica: int = 0) -> list[Response]:
        """One model, many prompts."""
        return self.generate([Call(model, p, sampling, replica) for p in prompts], tag=tag)

    def answer_all(self, examples: Sequence[Example], tag: str = "answer",
                   models: Sequence[ModelHandle] | None = None) -> list[list[Response]]:
        """Every model answers every example's prompt, in one batched call: out[model_index][example_index]."""
        ms = list(models) if models is not None else self.models
        calls = [Call(m, ex.prompt, images=ex.images) for m in ms for ex in examples]
        flat = self.generate(calls, tag=tag)
        n = len(examples)
        return [flat[i * n:(i + 1) * n] for i in range(len(ms))]

    # ------------------------------------------------------------------ scoring and dev selection
    def score(self, example: Example, text: str) -> ScoreResult:
        return self.scorer.score(example, text)

    def score_many(self, examples: Sequence[Example], texts: Sequence[str]) -> list[ScoreResult]:
        """Score many responses at once (a judge or reward model is called in one batch, phase "score")."""
        from moco.scoring.base import score_many

        with self.phase("score"):
            return score_many(self.scorer, self, examples, texts)

    def dev_scores(self) -> list[float]:
        """Mean dev score of every model (generated once per run and cached; ties keep pool order). Dev answers
        follow the shared dev-selection settings (`moco.selection`: greedy, or the mean of `dev_repeats`
        samples per item)."""
        return [sum(s) / max(1, len(s)) for s in self.dev_item_scores()]

    def dev_item_scores(self) -> list[list[float]]:
        """Per-item dev scores of every model, out[model_index][example_index] (means over `dev_repeats`)."""
        from moco.selection import dev_repeats, dev_sampling

        missing = [m for m in self.models if m.index not in self._dev_scores]
        if missing:
            if not self.dev:
                raise ValueError(f"task {self.task.name} has no dev split; dev-based selection is impossible")
            sampling, reps, n = dev_sampling(self), dev_repeats(self), len(self.dev)
            with self.phase("dev"):
                flat = self.generate([Call(m, ex.prompt, sampling, replica=r, images=ex.images)
                                      for r in range(reps) for m in missing for ex in self.dev], tag="answer")
            for k, m in enumerate(missing):
                passes = [flat[(r * len(missing) + k) * n:(r * len(missing) + k + 1) * n] for r in range(reps)]
                scored = [self.score_many(self.dev, [x.text for x in outs]) for outs in passes]
                self._dev_answers[m.index] = passes[0]
                self._dev_scores[m.index] = scored[0]
                self._dev_item_scores[m.index] = [sum(p[i].score for p in scored) / reps for i in range(n)]
        return [self._dev_item_scores[m.index] for m in self.models]

    def dev_answers(self) -> tuple[list[list[Response]], list[list[float]]]:
        """The dev answers `dev_scores()` scored, and their per-item scores: out[model_index][example_index].
        Methods that train on dev candidates reuse them instead of asking (and paying) again."""
        self.dev_item_scores()
        return ([self._dev_answers[m.index] for m in self.models],
                [[s.score for s in self._dev_scores[m.index]] for m in self.models])

    def dev_best(self) -> ModelHandle:
        """The model with the best mean dev score (first in pool order on ties); the choice and every model's
        dev score with its interval are recorded in metrics (`dev_selection.dev_best`)."""
        from moco.selection import choose

        return self.models[choose(self, "dev_best", [m.name for m in self.models], self.dev_item_scores())]
