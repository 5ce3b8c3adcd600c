"""Every text method of the house runs with the smallest pool it accepts and with a larger one: each model
takes part, every question gets an answer, and (all models being right) the collaboration stays right;
and a model whose every call fails is left out of the others' prompts, and fails the run visibly (issue 25)."""
from __future__ import annotations

import json
import re

import pytest

from helpers import scripted_config
from moco.errors import CallsFailed
from moco.models.base import GenResult
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from text_agents import agent, backends

METHODS = [
    ("text_multiagent_refine", {"rounds": 1}),
    ("text_multiagent_feedback", {"rounds": 1, "feedback_count": 2}),
    ("text_llm_blender", {"top_k": 2}),
    ("text_knowledge_card", {}),
    ("text_majority_vote", {}),
    ("text_heterogeneous_swarms", {"population": 2, "max_iterations": 1}),
    ("text_structure", {"structure": "circle", "rounds": 1}),
    ("text_bbmas", {"max_iterations": 1, "max_num_retries": 0}),
    ("text_slm_mux", {"samples_per_model": 2}),
    ("text_mixture_of_agents", {"layers": 3}),
    ("text_self_moa", {}),
]


@pytest.mark.parametrize("n_models", [2, 5])
@pytest.mark.parametrize("method, params", METHODS, ids=[m for m, _ in METHODS])
def test_method_runs_with_any_pool_size(method, params, n_models, tiny_task, cache, tmp_path):
    names = "abcde"[:n_models]
    agents = {n: agent(n, True) for n in names}
    res = run_experiment(scripted_config(method, tiny_task, names, params), tmp_path / "run", cache=cache,
                         backends=backends(agents))
    assert len(res.predictions) == 8 and res.metrics["total"]["failed"] == 0
    assert res.metrics["score"] == 1.0
    assert [n for n, b in agents.items() if b.calls] == list(names)  # every model took part (dev or test)
    if method == "text_self_moa":  # one model (the dev-best: all tie, so the first) sampled as often as MoA's
        tr = res.predictions[0]["trace"]  # default 3 layers propose: twice per pool member
        assert tr["proposer"] == "a" and len(tr["samples"]) == 2 * n_models


class Broken(ScriptedBackend):
    """An endpoint whose every call fails after its retries (empty text, an error recorded)."""

    def generate(self, requests):
        super().generate(requests)
        return [GenResult("", finish_reason="error", error="HTTP 503") for _ in requests]


@pytest.mark.parametrize("method, params", METHODS, ids=[m for m, _ in METHODS])
def test_a_failing_model_fails_the_run_visibly(method, params, tiny_task, cache, tmp_path):
    """One model of three fails every call: the others carry on (no one is shown its empty output as an
    answer), but a collaboration that lost a member is not the method's: every item that lost c is failed,
    the failed calls are counted per stage and model, and the run ends without a score (issue 25)."""
    agents = {"a": agent("a", True), "b": agent("b", True), "c": Broken("c", default="x")}
    if method == "text_heterogeneous_swarms":  # graphs ending at c score 0 on dev: the search must avoid them
        params = {"population": 4, "max_iterations": 2}
    cfg = scripted_config(method, tiny_task, "abc", params, roles=_roles(method))
    if method == "text_self_moa":  # only the proposer (a) samples: c is never asked, nothing failed
        res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends(agents))
        assert not agents["c"].calls and res.metrics["score"] == 1.0 and "failures" not in res.metrics
        return
    with pytest.raises(CallsFailed, match=r"model 'c' \d+ failed calls.*HTTP 503"):
        run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends(agents))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    f = m["failures"]
    # every failed call is recorded (identical calls of one batch reach the backend once)
    assert f["failed_calls"] == m["total"]["failed"] + m["phases"].get("score", {}).get("failed", 0)
    assert f["failed_calls"] >= len(agents["c"].calls) > 0
    assert {model for row in f["by_stage"].values() for model in row} == {"c"} and m["score"] is None
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    test_calls = sum(n for stage, row in f["by_stage"].items() if stage.startswith("test") for n in row.values())
    if test_calls:  # c took part in the test items: each one lost a member
        assert all(p["failed"] and any("lost c" in w for w in p["failure"]) for p in preds)
    else:  # c failed only while the method chose on dev: the dev items are failed instead
        assert f["dev_items_failed"] > 0
    for b in ("a", "b"):  # an answer slot of c would show up as an empty labelled block
        assert not any(re.search(r"(Agent answer|Candidate [AB1-9]|Previous response \d|Assistant \d|"
                                 r"Knowledge \d|Conclusion #\d):\s*\n\n", c.prompt) for c in agents[b].calls)


def _roles(method: str) -> dict:
    """Roles bound to a working model where the dev-best could be the broken one only by a tie."""
    role = {"text_multiagent_refine": "summarizer", "text_multiagent_feedback": "summarizer",
            "text_llm_blender": "ranker", "text_knowledge_card": "answerer", "text_structure": "final",
            "text_mixture_of_agents": "aggregator", "text_self_moa": "proposer"}.get(method)
    roles = {role: "a"} if role else {}
    if method == "text_llm_blender":
        roles["fuser"] = "a"
    return roles
