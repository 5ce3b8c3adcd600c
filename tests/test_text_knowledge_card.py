"""Knowledge card on scripted models: every model writes knowledge, the answerer sees all of it (or all but its own)."""
from __future__ import annotations

import pytest

from helpers import assert_dev_best, scripted_config
from moco.runner import run_experiment
from text_agents import agent, backends


def _knower(name):
    return lambda prompt: f"{name}-fact about {prompt.split('Question:')[1].split(':')[0].strip()}" \
        if "Relevant knowledge:" in prompt else None


@pytest.mark.parametrize("exclude_self", [False, True])
def test_answerer_sees_every_paragraph(exclude_self, tiny_task, cache, tmp_path):
    agents = {n: agent(n, n == "c", _knower(n)) for n in "abc"}
    cfg = scripted_config("text_knowledge_card", tiny_task, "abc", {"exclude_self": exclude_self})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends(agents))
    for b in agents.values():  # every model wrote one paragraph per test question
        assert len(b.received("Relevant knowledge:")) == 8
    finals = agents["c"].received("written by other assistants")  # c is the dev-best: it answers
    assert len(finals) == 8 and not agents["a"].received("written by other assistants")
    for j, call in enumerate(finals):
        q = f"Question {j + 4}"
        assert f"a-fact about {q}" in call.prompt and f"b-fact about {q}" in call.prompt
        assert (f"c-fact about {q}" in call.prompt) != exclude_self
    row = res.predictions[0]
    assert row["trace"]["answerer"] == "c"
    assert_dev_best(res.metrics, "c", 3)
    assert row["trace"]["answerer_saw"] == (["a", "b"] if exclude_self else ["a", "b", "c"])
    assert row["trace"]["knowledge"]["b"] == "b-fact about Question 4"
    assert res.metrics["score"] == 1.0
    assert res.metrics["phases"]["test"]["calls"] == 8 * 3 + 8 and res.metrics["phases"]["dev"]["calls"] == 12


def test_answerer_param_and_role(tiny_task, cache, tmp_path):
    agents = {n: agent(n, n == "c", _knower(n)) for n in "abc"}
    cfg = scripted_config("text_knowledge_card", tiny_task, "abc", {"answerer": "a"})
    res = run_experiment(cfg, tmp_path / "r1", cache=cache, backends=backends(agents))
    assert res.predictions[0]["trace"]["answerer"] == "a" and "dev" not in res.metrics["phases"]
    cfg = scripted_config("text_knowledge_card", tiny_task, "abc", roles={"answerer": "b"})
    res = run_experiment(cfg, tmp_path / "r2", cache=cache, backends=backends(agents))
    assert res.predictions[0]["trace"]["answerer"] == "b" and res.metrics["score"] == 0.0
