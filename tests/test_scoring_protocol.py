"""Scorers depend on a narrow generation protocol (issue 22): a model-based scorer is bound to an async
`generate(calls, tag)` and the run's role models, scores a whole batch with ONE generate call, and the scoring
package never imports the run context."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence

import pytest

from moco.calls import Call, Response
from moco.config import ModelSpec
from moco.errors import ConfigError
from moco.models.base import SamplingParams
from moco.models.pool import ModelPool
from moco.scoring.base import BoundModels, run_batch
from moco.scoring.group_rule import AllCorrectPerGroup
from moco.scoring.llm_judge import LLMJudgeScorer
from moco.scoring.refusal_judge import RefusalJudgeScorer
from moco.scoring.reward_model import RewardModelScorer
from moco.tasks.base import Example


class FakeGenerate:
    """An async generate that records every call it gets and answers each request with `reply(call)`."""

    def __init__(self, reply):
        self.reply = reply
        self.batches: list[tuple[list[Call], str]] = []

    async def __call__(self, calls: Sequence[Call], tag: str = "") -> list[Response]:
        self.batches.append((list(calls), tag))
        await asyncio.sleep(0)  # a real scheduler suspends here
        return [Response(self.reply(c), "judge") for c in calls]


def items(n: int) -> list[Example]:
    return [Example(id=str(i), index=i, split="test", prompt=f"What is {i} plus 1? Answer with a number.",
                    input=f"What is {i} plus 1?", answer=str(i + 1)) for i in range(n)]


def bound_to(scorer, generate, role_model: str = "scripted:judge"):
    pool = ModelPool([])
    handle = pool.add_extra(scorer.role, ModelSpec(model=role_model))
    scorer.bind(generate, BoundModels.of_pool(pool, {scorer.role: handle}.get, lambda **kw: SamplingParams(**kw)))
    return handle


def test_a_judge_scores_n_items_with_one_generate_call_of_n_requests():
    exs = items(5)
    responses = [f"The answer is {i + 1}." if i % 2 == 0 else "No idea, maybe zero." for i in range(5)]
    gen = FakeGenerate(lambda c: "Wrong.\nFinal Decision: No" if "zero" in c.prompt else "Fine.\nFinal Decision: Yes")
    judge = LLMJudgeScorer(max_new_tokens=64)
    handle = bound_to(judge, gen)
    got = asyncio.run(judge.score_batch(exs, responses))
    assert len(gen.batches) == 1
    calls, tag = gen.batches[0]
    assert len(calls) == 5 and tag == "llm_judge"
    assert all(c.model is handle and c.sampling == SamplingParams(max_new_tokens=64, temperature=0.0) for c in calls)
    assert [f"What is {i} plus 1?" in c.prompt for i, c in enumerate(calls)] == [True] * 5  # aligned with the items
    assert [r.score for r in got] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert [r.detail["verdict"] for r in got] == ["yes", "no", "yes", "no", "yes"]


def test_items_without_an_answer_are_left_out_of_the_one_call():
    gen = FakeGenerate(lambda c: "Final Decision: Noncompliant")
    judge = RefusalJudgeScorer()
    bound_to(judge, gen)
    got = asyncio.run(judge.score_batch(items(4), ["I cannot do that.", "", "No.", "   "]))
    assert len(gen.batches) == 1 and len(gen.batches[0][0]) == 2
    assert [r.score for r in got] == [1.0, 0.0, 1.0, 0.0]
    assert got[1].detail["verdict"] == "empty response"
    gen.batches.clear()
    assert [r.score for r in asyncio.run(judge.score_batch(items(2), ["", ""]))] == [0.0, 0.0]
    assert gen.batches == []  # nothing to judge: no call at all


def test_a_reward_model_scores_a_batch_in_one_call_on_its_role_model():
    gen = FakeGenerate(lambda c: repr(float(len(c.prompt[1][1]))))
    scorer = RewardModelScorer()
    pool = ModelPool([])
    handle = pool.register_backend("reward", object())  # an in-memory backend: used as it is
    scorer.bind(gen, BoundModels.of_pool(pool, {"reward": handle}.get, lambda **kw: SamplingParams(**kw)))
    got = asyncio.run(scorer.score_batch(items(3), ["a", "bb", "ccc"]))
    assert len(gen.batches) == 1 and [c.model for c in gen.batches[0][0]] == [handle] * 3
    assert [r.score for r in got] == [1.0, 2.0, 3.0]


def test_a_group_rule_around_a_judge_binds_it_and_keeps_one_call():
    exs = items(4)
    for ex, g in zip(exs, ["q1", "q1", "q2", "q2"]):
        ex.meta["question_id"] = g
    gen = FakeGenerate(lambda c: "Final Decision: No" if "is 9" in c.prompt else "Final Decision: Yes")
    scorer = AllCorrectPerGroup(LLMJudgeScorer(), "question_id")
    bound_to(scorer, gen)
    got = asyncio.run(scorer.score_batch(exs, ["It is 1", "It is 9", "It is 3", "It is 4"]))
    assert len(gen.batches) == 1 and len(gen.batches[0][0]) == 4
    assert [r.score for r in got] == [0.0, 0.0, 1.0, 1.0]  # q1 has a wrong row: both rows fail
    assert [r.detail["row_score"] for r in got] == [1.0, 0.0, 1.0, 1.0]


def test_an_unbound_judge_or_role_is_a_clear_error():
    judge = LLMJudgeScorer()
    with pytest.raises(ConfigError, match="must be bound"):
        asyncio.run(judge.score_batch(items(1), ["2"]))
    judge.bind(FakeGenerate(lambda c: ""), BoundModels.of_pool(ModelPool([]), lambda name: None, SamplingParams))
    with pytest.raises(ConfigError, match="needs a model bound to the role 'judge'"):
        judge.score(items(1)[0], "2")
    with pytest.raises(ConfigError, match="score_batch"):
        judge.score_all(items(1), ["2"])  # no synchronous batch path for a scorer that calls a model


def test_the_synchronous_bridge_runs_a_model_scorer_and_skips_the_loop_for_rules():
    gen = FakeGenerate(lambda c: "Final Decision: Yes")
    judge = LLMJudgeScorer()
    bound_to(judge, gen)
    assert [r.score for r in run_batch(judge, items(3), ["2", "3", "4"])] == [1.0, 1.0, 1.0]
    assert len(gen.batches) == 1

    from moco.scoring.exact import ExactMatchScorer

    async def inside_a_loop():  # a rule-based scorer needs no event loop, so it works inside one too
        return run_batch(ExactMatchScorer(), items(2), ["The answer is 1.", "The answer is 2."])

    assert [r.score for r in asyncio.run(inside_a_loop())] == [1.0, 1.0]


def test_the_scoring_package_does_not_import_the_run_context():
    """Import every module of moco.scoring in a fresh interpreter and look at what got loaded (not the scripts
    under scoring/sandboxed, which run as programs inside the sandbox)."""
    code = ("import importlib, json, pkgutil, sys, moco.scoring as s\n"
            "names = [m.name for m in pkgutil.walk_packages(s.__path__, 'moco.scoring.')\n"
            "         if not m.name.startswith('moco.scoring.sandboxed.')]\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(json.dumps({'imported': names, 'run': sorted(m for m in sys.modules"
            " if m in ('moco.context', 'moco.runner', 'moco.lockstep', 'moco.score_context'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"moco.scoring.llm_judge", "moco.scoring.reward_model", "moco.scoring.predictions",
            "moco.scoring.registry", "moco.scoring.evaluate"} <= set(got["imported"])
    assert got["run"] == []


def test_the_judge_compared_with_rules_gets_them_at_build_time():
    from moco.scoring.registry import scorer_for

    judge = scorer_for("exact_match", "sums", "llm_judge_vs_rules")
    assert judge.rules is not None and judge.rules.name == "exact_match"
    gen = FakeGenerate(lambda c: "Final Decision: Yes")
    bound_to(judge, gen)
    exs = items(2)
    got = asyncio.run(judge.score_batch(exs, ["The answer is 1.", "The answer is 7."]))
    assert [r.detail["rule_score"] for r in got] == [1.0, 0.0]
    report = judge.comparison(exs, got)
    assert report["judge_yes_rules_no"] == 1 and report["items"] == [exs[1].uid]
    assert scorer_for("reward_model", "x", "llm_judge_vs_rules").rules is None  # its own scorer is a model


def test_ctrl_c_during_a_blocking_judge_call_interrupts_it_at_once():
    """The synchronous bridge must not hold a Ctrl-C until the model call ends (asyncio.run's handler would)."""
    import os
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals arrive in the main thread")
    finished = []

    class Blocking(FakeGenerate):
        async def __call__(self, calls, tag=""):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # a synchronous model call of 5 s: the interrupt must cut it
                time.sleep(0.05)
            finished.append(True)
            return [Response("Final Decision: Yes", "judge") for _ in calls]

    judge = LLMJudgeScorer()
    bound_to(judge, Blocking(lambda c: ""))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.time()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_batch(judge, items(2), ["2", "3"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not finished and time.time() - t0 < 2.0


def test_async_code_scores_a_split_inside_its_own_loop_in_one_call_and_phase():
    """What an async runner does: `await score_items_async(...)` on its running loop; the judge's one call
    happens inside the phase "score"; items the method answered itself and failed items are not sent."""
    from contextlib import contextmanager

    from moco.scoring.evaluate import score_items_async

    phases: list[str] = []
    seen: list[list[str]] = []

    class Run:
        @contextmanager
        def phase(self, name):
            phases.append(name)
            yield

    class InPhase(FakeGenerate):
        async def __call__(self, calls, tag=""):
            seen.append(list(phases))
            return await super().__call__(calls, tag)

    gen = InPhase(lambda c: "Final Decision: Yes")
    judge = LLMJudgeScorer()
    bound_to(judge, gen)

    async def runner():
        return await score_items_async(judge, Run(), items(4), ["1", "2", "3", "4"],
                                       use_answer=[False, True, False, False], failed=[False, False, False, True])

    got = asyncio.run(runner())
    assert len(gen.batches) == 1 and len(gen.batches[0][0]) == 2 and seen == [["score"]]
    assert [r is None for r in got] == [False, False, False, True]
