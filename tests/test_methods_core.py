"""single_model, majority vote and multi-agent refine on scripted models: the algorithm shows in the trace."""
from __future__ import annotations

import json

import pytest

from helpers import assert_dev_best, debater, scripted_config
from moco.methods.text.majority_vote import plurality
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from moco import aio


def _backends(**spec):
    return {f"scripted:{n}": debater(n, ok) for n, ok in spec.items()}


def test_refine_who_saw_what_in_which_round(tiny_task, cache, tmp_path):
    backends = _backends(a=False, b=True, c=False)
    cfg = scripted_config("text_multiagent_refine", tiny_task, "abc", {"rounds": 2})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    n_test, n_dev = 8, 4
    for name, b in backends.items():
        own = name.split(":")[1]
        others = [o for o in "abc" if o != own]
        rounds = {k: [c for c in b.calls if f"Your previous answer:\n{own}:r{k - 1}" in c.prompt] for k in (1, 2)}
        for k, calls in rounds.items():
            assert len(calls) == n_test, (own, k)
            for c in calls:  # round k shows the other models' round k-1 answers, never its own twice
                for o in others:
                    assert f"- Agent answer: {o}:r{k - 1}" in c.prompt
                assert f"- Agent answer: {own}:" not in c.prompt
        first = [c for c in b.calls if "Your previous answer" not in c.prompt and "team of agents" not in c.prompt]
        assert len(first) == n_test + n_dev  # round 0 on test + dev answers for selecting the summarizer
    # the summarizer is the dev-best model (b answers correctly), it sees every model's final-round answer
    summaries = backends["scripted:b"].received("Answers from a team of agents")
    assert len(summaries) == n_test
    assert all(f"- Agent answer: {o}:r2" in c.prompt for c in summaries for o in "abc")
    assert not backends["scripted:a"].received("Answers from a team of agents")
    rows = res.predictions
    assert rows[0]["trace"]["summarizer"] == "b"
    tr = rows[0]["trace"]["rounds"]
    assert len(tr) == 3
    assert tr[0]["a"]["saw"] == [] and tr[1]["a"]["saw"] == ["b", "c"] and tr[2]["c"]["saw"] == ["a", "b"]
    assert tr[2]["a"]["output"].startswith("a:r2")
    assert res.metrics["score"] == 1.0  # b summarizes and b is always right
    assert_dev_best(res.metrics, "b", 3)
    assert res.metrics["phases"]["dev"]["calls"] == 3 * n_dev
    assert res.metrics["phases"]["test"]["calls"] == 3 * n_test * 3 + n_test


def test_refine_reference_round_key_and_vote_final(tiny_task, cache, tmp_path):
    backends = _backends(a=True, b=True, c=False)
    cfg = scripted_config("text_multiagent_refine", tiny_task, "abc", {"round": 1, "final": "vote"})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert len(res.predictions[0]["trace"]["rounds"]) == 1  # round: 1 = only the independent answers
    assert all("Your previous answer" not in c.prompt for b in backends.values() for c in b.calls)
    assert res.metrics["phases"].get("dev") is None  # a vote needs no summarizer selection
    assert res.metrics["score"] == 1.0  # two right answers outvote one wrong


def test_refine_summarizer_role_binding(tiny_task, cache, tmp_path):
    backends = _backends(a=False, b=True, c=False)
    cfg = scripted_config("text_multiagent_refine", tiny_task, "abc", {"rounds": 1}, roles={"summarizer": "c"})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert len(backends["scripted:c"].received("Answers from a team of agents")) == 8
    assert res.predictions[0]["trace"]["summarizer"] == "c"
    assert "dev" not in res.metrics["phases"]


def test_majority_vote_counts_canonical_answers(tiny_task, cache, tmp_path):
    backends = _backends(a=True, b=True, c=False)
    cfg = scripted_config("text_majority_vote", tiny_task, "abc")
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert res.metrics["score"] == 1.0
    row = res.predictions[1]
    assert row["trace"]["votes"] == {"a": "B", "b": "B", "c": "C"}
    assert row["extracted"] == "B" and row["trace"]["tied"] == []


@pytest.mark.parametrize("tie, expected", [("model-order", "B"), ("dev-based", "C")])
def test_majority_vote_tie_breaks(tie, expected, tiny_task, cache, tmp_path):
    # a is wrong (votes C for item 1), b is right (B), c is silent: one vote each for B and C
    backends = _backends(a=False, b=True)
    backends["scripted:c"] = ScriptedBackend("c", default="I am not sure.")
    order = "bac" if tie == "model-order" else "bac"
    cfg = scripted_config("text_majority_vote", tiny_task, order, {"tie": tie})
    if tie == "dev-based":  # make the wrong model the dev-best: its tied answer must win
        backends["scripted:a"] = debater("a", True)
        backends["scripted:b"] = debater("b", False)
        expected = "B"
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    row = res.predictions[1]
    assert sorted(row["trace"]["tied"]) == ["B", "C"]
    assert row["extracted"] == expected
    if tie == "dev-based":  # the ranking that broke the tie, every model's dev score with its interval
        sel = res.metrics["dev_selection"]["tie_break"]
        assert sel["chosen"] == "a" and sel["order"] == ["a", "b", "c"]
        assert {r["candidate"]: r["dev_score"] for r in sel["candidates"]} == {"b": 0.0, "a": 1.0, "c": 0.0}
    else:
        assert "dev_selection" not in res.metrics


def test_plurality_rules():
    import random

    assert plurality(["A", "B", "A"], "model-order", [0, 1, 2], random.Random(0)) == ("A", ["A"])
    assert plurality([None, None, "C"], "model-order", [0, 1, 2], random.Random(0)) == ("C", ["C"])
    assert plurality([None, None], "model-order", [0, 1], random.Random(0)) == (None, [])
    assert plurality(["A", "B"], "dev-based", [1, 0], random.Random(0))[0] == "B"
    picks = {plurality(["A", "B"], "random", [0, 1], random.Random(s))[0] for s in range(20)}
    assert picks == {"A", "B"}
    assert plurality(["A", "B"], "random", [0, 1], random.Random(7)) == plurality(["A", "B"], "random", [0, 1], random.Random(7))


def test_single_model_reports_every_model_and_picks_dev_best(tiny_task, cache, tmp_path):
    backends = _backends(a=False, b=True, c=False)
    cfg = scripted_config("single_model", tiny_task, "abc")
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    m = res.metrics
    assert m["per_model_test"] == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert m["chosen_model"] == "b" and m["score"] == 1.0 and m["best_single_test"] == 1.0
    assert_dev_best(m, "b", 3)
    pm = m["phases"]["test"]["per_model"]
    assert pm["a"]["calls"] == pm["b"]["calls"] == 8


def test_shared_first_answers_come_from_the_cache(tiny_task, cache, tmp_path):
    backends = _backends(a=False, b=True, c=False)
    run_experiment(scripted_config("single_model", tiny_task, "abc"), tmp_path / "r1", cache=cache, backends=backends)
    calls_before = sum(len(b.calls) for b in backends.values())
    res = run_experiment(scripted_config("text_majority_vote", tiny_task, "abc"), tmp_path / "r2", cache=cache,
                         backends=backends)
    assert sum(len(b.calls) for b in backends.values()) == calls_before  # every answer reused
    assert res.metrics["total"]["cache_hits"] == res.metrics["total"]["calls"] == 3 * 8 + 3 * 4
    lines = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    assert len(lines) == 36 and all(x["cache_hit"] for x in lines)


def test_in_memory_backend_registered_as_a_model(tiny_task, cache, tmp_path):
    from moco.context import Call, RunContext
    from moco.runner import plan
    from moco.trace import CallRecorder

    p = plan(scripted_config("single_model", tiny_task, "a"), backends=_backends(a=True))
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                     decoding=p.config.decoding)
    h1 = ctx.add_model("candidate", ScriptedBackend("cand1", default="one"))
    assert aio.run(ctx.generate([Call(h1, "hi")]))[0].text == "one"
    h2 = ctx.add_model("candidate", ScriptedBackend("cand2", default="two"))  # new weights, new fingerprint
    assert aio.run(ctx.generate([Call(h2, "hi")]))[0].text == "two"


def test_refine_history_context_continues_each_models_conversation(tiny_task, cache, tmp_path):
    """context: history (Du et al.): round k's prompt is round k-1's conversation plus the model's answer and
    the others' answers, so every round extends the last one (and its KV can be reused)."""

    def conversational(name: str) -> ScriptedBackend:
        def reply(req) -> str:
            k = sum(role == "assistant" for role, _ in req.messages)
            return f"{name}:r{k} The answer is (A)"

        return ScriptedBackend(name, fn=reply)

    backends = {f"scripted:{n}": conversational(n) for n in "abc"}
    cfg = scripted_config("text_multiagent_refine", tiny_task, "abc", {"rounds": 2, "context": "history", "final": "vote"})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)

    def turns(call) -> list[tuple[str, str]]:
        return [m for m in call.messages if m[0] != "system"]

    for n in "abc":
        b = backends[f"scripted:{n}"]
        by_round = {k: [turns(c) for c in b.calls if sum(r == "assistant" for r, _ in c.messages) == k] for k in (0, 1, 2)}
        assert len(by_round[1]) == len(by_round[2]) == 8
        questions = {t[0][1] for t in by_round[0]}
        for t in by_round[2]:
            assert [r for r, _ in t] == ["user", "assistant", "user", "assistant", "user"]
            assert t[0][1] in questions and t[1][1] == f"{n}:r0 The answer is (A)" and t[3][1] == f"{n}:r1 The answer is (A)"
            for o in "abc".replace(n, ""):
                assert f"- Agent answer: {o}:r0" in t[2][1] and f"- Agent answer: {o}:r1" in t[4][1]
            assert f"{n}:" not in t[2][1] + t[4][1]  # never its own answer among the others'
        assert sorted(map(tuple, by_round[1])) == sorted(tuple(t[:3]) for t in by_round[2])  # round 2 extends round 1
    assert res.predictions[0]["trace"]["rounds"][2]["a"]["output"] == "a:r2 The answer is (A)"
