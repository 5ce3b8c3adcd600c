"""Every text method of the house runs with the smallest pool it accepts and with a larger one: each model
takes part, every question gets an answer, and (all models being right) the collaboration stays right."""
from __future__ import annotations

import pytest

from helpers import scripted_config
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
    if method == "text_self_moa":  # one model (the dev-best: all tie, so the first) sampled once per pool member
        tr = res.predictions[0]["trace"]
        assert tr["proposer"] == "a" and len(tr["samples"]) == n_models
