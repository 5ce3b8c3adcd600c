"""The last stage of a served collaboration: the one model call that writes a request's answer.

A method's answer is, for most methods, the text of one model call: refine's summarizer, MoA's aggregator,
CoLM's refinement by the output client, the chosen model of single_model. That call is what a client can
watch being written (streaming) and the only call whose log-probabilities describe the answer. Methods do
not declare it, so the server learns it from the method's own runs: after every method call, the stage
whose calls' texts ARE the outputs — identified by (phase, tag, model), one call per request, the latest
such stage — is the final stage. A start-up probe (one short request) teaches it before the first client.

A request that wants its last stage (a stream, or log-probabilities) is batched with the others as usual:
every stage before the last runs batched, and in the last stage the call that writes its answer is decoded
alone, piece by piece (`streaming.decode_one`), cached and traced like any other call. The last stage's calls
to the answer's model are matched to the requests by position (methods ask in the order of their items);
the other calls of that stage (the other requests', the other CoLM clients' refinements) run batched. When a
run turns out to end differently (an answer is not its watched call's text), the request says so instead of
pretending.
"""
from __future__ import annotations

import copy
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moco.config import DecodingSettings
from moco.context import Call, Output, Response, RunContext
from moco.models.base import GenRequest, GenResult
from moco.models.pool import ModelHandle
from moco.selection import share_dev_answers
from moco.serve.protocol import parse_chat_request
from moco.serve.streaming import TokenLogprob, decode_one, supports_logprobs
from moco.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalStage:
    """Which call writes the answer: the call to `model` tagged `tag` in phase `phase`."""

    phase: str
    tag: str
    model: str
    logprobs: bool = False  # that model's backend reports token log-probabilities

    def describe(self) -> str:
        return f"'{self.model}' ({self.tag or 'untagged'} call, phase {self.phase})"


@dataclass
class StageRequest:
    """What one request wants from its last stage, and what it got. `on_piece` is called from the worker
    thread with each new piece of the answer; `top_logprobs` (0-20) asks for log-probabilities."""

    on_piece: Callable[[str], None] | None = None
    top_logprobs: int | None = None
    watched: bool = False  # the final stage's call ran (decoded alone) for this request
    streamed: str = ""  # the text sent to on_piece
    logprobs: list[TokenLogprob] | None = None
    output: str | None = None  # the method's answer (its text before the request's stop strings)

    def piece(self, text: str) -> None:
        self.streamed += text
        if self.on_piece is not None:
            self.on_piece(text)


@dataclass
class _Seen:
    """One call of a method run, as the learner sees it."""

    phase: str
    tag: str
    model: str
    text: str
    order: int
    finish: str


@dataclass
class StageLearner:
    """What the server learned about the final stage, shared by every batch's context."""

    final: FinalStage | None = None
    runs_learned: int = 0  # runs whose answers the final stage wrote
    unstable: bool = False  # a run's answers came from another call: nothing streams any more
    runs: int = 0  # method runs so far (the start-up run included): each one was a chance to learn


class StageContext(RunContext):
    """A RunContext that learns which call writes the answer and can watch that call for one request. A server
    answers each batch in a context of its own (`derive`): they share the models, gateway, scorer, roles,
    artifacts, dev answers and what was learned (`learner`); the test items, decoding and metrics are the batch's."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.learner = StageLearner()
        self._own_state()

    def _own_state(self) -> None:
        """What each context keeps for itself (a derived one starts afresh)."""
        self.finishes: list[str] = []  # of the last run: each answer's finish reason (stop | length), when known
        self.tokens = [0, 0]  # prompt and completion tokens of this context's calls (cached ones included)
        self._seen: list[_Seen] = []
        self._order = 0
        self._wants: list[StageRequest | None] = []
        self._in_run = False

    def derive(self, task: Task, decoding: DecodingSettings) -> StageContext:
        """A context for one batch: its own test items, decoding, metrics, rng and run state; everything else
        (and the dev answers of moco.selection) shared with this one. The scorer stays bound to this context."""
        if task.dev is not self.task.dev:
            raise ValueError("a derived context keeps the dev split (its dev answers are shared)")
        child = copy.copy(self)
        child.task, child.decoding, child.metrics = task, decoding, {}
        child.rng = random.Random(self.seed)
        child._own_state()
        share_dev_answers(child, self)
        return child

    @property
    def final(self) -> FinalStage | None:
        return self.learner.final

    @property
    def unstable(self) -> bool:
        return self.learner.unstable

    @property
    def runs(self) -> int:
        return self.learner.runs

    @property
    def runs_learned(self) -> int:
        return self.learner.runs_learned

    # ------------------------------------------------------------------ running a method
    async def run_method(self, method: Any, params: Any, wants: Sequence[StageRequest | None] = ()) -> list[Output]:
        """`method.run` on this context's task (its test items are the requests); learns the final stage from
        the outputs. `wants[k]` is what request k wants from its last stage (None: nothing)."""
        wants = list(wants) or [None] * len(self.task.test)
        if len(wants) != len(self.task.test):
            raise ValueError(f"{len(wants)} stage requests for {len(self.task.test)} items")
        self._seen, self._order, self._wants, self.finishes, self._in_run = [], 0, wants, [], True
        try:
            outputs = await method.run(self, params)
        finally:
            self._wants, self._in_run = [], False
            self.learner.runs += 1
        self._learn(outputs)
        for want, o in zip(wants, outputs):
            if want is not None:
                want.output = None if o.failed else o.text
        return outputs

    async def generate(self, calls: Sequence[Call], tag: str = "") -> list[Response]:
        calls = list(calls)
        handles = [self.model(c.model) for c in calls]
        targets = self._targets(handles, tag)
        watched = {i: await self._watch(calls[i], tag, want) for i, want in targets}
        if not watched:
            out = await super().generate(calls, tag)
        else:  # the answers' calls first (clients are waiting for them), then the rest of the stage, batched
            rest_at = [i for i in range(len(calls)) if i not in watched]
            rest = iter(await super().generate([calls[i] for i in rest_at], tag) if rest_at else [])
            out = [watched[i] if i in watched else next(rest) for i in range(len(calls))]
        self._order += 1
        self.tokens[0] += sum(r.tokens_in for r in out)
        self.tokens[1] += sum(r.tokens_out for r in out)
        phase = self._gw.recorder.phase
        if self._in_run:  # not the calls a shared scorer makes through the service's own context
            self._seen.extend(_Seen(phase, tag, h.name, r.text, self._order, r.finish_reason)
                              for h, r in zip(handles, out) if not r.failed)
        return out

    # ------------------------------------------------------------------ the watched call
    def _targets(self, handles: list[ModelHandle], tag: str) -> list[tuple[int, StageRequest]]:
        """(position in the calls, its request's want) of the calls to watch in this generate."""
        final, wants = self.final, self._wants
        if final is None or not any(w is not None and not w.watched for w in wants):
            return []
        if (self._gw.recorder.phase, tag) != (final.phase, final.tag):
            return []
        at = [i for i, h in enumerate(handles) if h.name == final.model]
        if len(at) != len(wants):  # not one call per request: which call answers which request is unknown
            return []
        return [(i, w) for i, w in zip(at, wants) if w is not None and not w.watched]

    async def _watch(self, call: Call, tag: str, want: StageRequest) -> Response:
        """Decode an answer's call alone, streaming it; keyed, cached and recorded by the gateway like every call."""
        want.watched = True

        def decode(backend: Any, req: GenRequest) -> GenResult:
            res, want.logprobs = decode_one(backend, req, want.piece, want.top_logprobs)
            return res

        r = await self._gw.generate_alone(call, self.sampling(), decode, tag, cached=want.top_logprobs is None)
        if r.cached and not r.failed and r.text:
            want.piece(r.text)
        return r

    # ------------------------------------------------------------------ learning
    def _learn(self, outputs: list[Output]) -> None:
        """The latest stage whose calls' texts are exactly the outputs (one call per request) is the final one.
        A run whose answers did not come from the learned stage (a method that picks a different model per
        request: a vote, a router) turns streaming off for good: answers are then sent whole."""
        if not outputs or any(o.failed for o in outputs) or self.learner.unstable:
            return
        want = Counter(o.text for o in outputs)
        stages: dict[tuple[str, str, str], list[_Seen]] = {}
        for s in self._seen:
            stages.setdefault((s.phase, s.tag, s.model), []).append(s)
        found = {key: max(x.order for x in seen) for key, seen in stages.items()
                 if len(seen) == len(outputs) and Counter(x.text for x in seen) == want}
        lr = self.learner
        if lr.final is not None:
            key = (lr.final.phase, lr.final.tag, lr.final.model)
            if key in found:
                lr.runs_learned += 1
                self._finishes(outputs, stages[key])
                return
            lr.final, lr.unstable = None, True
            log.warning("a run's answers were not written by the learned final stage: this method's answer is not "
                        "always the same call; answers are sent whole from now on")
            return
        if found:
            phase, tag, model = max(found, key=lambda k: found[k])
            backend = self.local(model).backend
            lr.final = FinalStage(phase, tag, model, supports_logprobs(backend))
            lr.runs_learned = 1
            self._finishes(outputs, stages[(phase, tag, model)])
            log.info("final stage: %s", lr.final.describe())

    def _finishes(self, outputs: list[Output], calls: list[_Seen]) -> None:
        """Each answer's finish reason: that of the call that wrote it."""
        by_text: dict[str, list[str]] = {}
        for c in calls:
            by_text.setdefault(c.text, []).append(c.finish)
        self.finishes = [by_text[o.text].pop(0) for o in outputs]


def learn_final_stage(service: Any, prompt: str = "Say hello.", max_new_tokens: int = 16) -> FinalStage | None:
    """One short probe request through the service's batch handler, so the final stage is known before the
    first client streams. Call it before serving. A method that cannot answer it is logged; its answers are
    then sent whole. After `moco serve`'s start-up run the method has already run once: no second run."""
    ctx = getattr(service, "ctx", None)
    if not isinstance(ctx, StageContext) or ctx.final is not None or ctx.runs:
        return getattr(ctx, "final", None)
    body = {"model": service.name, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": min(max_new_tokens, service.max_new_tokens_cap)}
    try:
        # before the port opens the batcher's worker is idle: the probe runs here, outside the request counts
        done = service.batcher.run_now([service.pending(parse_chat_request(json.dumps(body).encode()))])[0]
        if done.error:
            log.warning("the start-up probe failed (%s): answers will be sent whole", done.error)
    except Exception as e:  # noqa: BLE001 - streaming falls back to whole answers; serving goes on
        log.warning("the start-up probe failed (%s: %s): answers will be sent whole", type(e).__name__, e)
    return ctx.final


def stage_info(ctx: StageContext) -> dict[str, Any]:
    """What /v1/moco/info says about streaming and log-probabilities."""
    final = ctx.final
    if final is None:
        why = ("the method's answers came from different calls in different runs" if ctx.unstable else
               "no run has shown one model call writing the answer")
        return {"streaming": "one chunk", "final_stage": None, "logprobs": False, "why_whole": why}
    return {"streaming": "tokens", "final_stage": {"phase": final.phase, "tag": final.tag, "model": final.model,
                                                   "runs": ctx.runs_learned}, "logprobs": final.logprobs}
