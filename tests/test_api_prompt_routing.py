"""Prompt routing on scripted models: which model each query went to, and why (parse failures included)."""
from __future__ import annotations

import re

import pytest

from helpers import assert_dev_best, debater, scripted_config
from moco.errors import ConfigError
from moco.models.scripted import ScriptedBackend
from moco.routing.choice import parse_model_choice
from moco.runner import run_experiment

# test items are Question 4..11 of the tiny task; the router's reply depends on the question number
ROUTER_REPLIES = {4: "Model 2", 5: "I would pick model 1, since it knows geography.", 6: "10", 7: "model 3",
                  8: "2", 9: "Model 2, not model 3", 10: "no idea", 11: "1 or 3"}


def _router() -> ScriptedBackend:
    def reply(req) -> str:
        q = int(re.search(r"Question (\d+):", req.messages[-1][1]).group(1))
        return ROUTER_REPLIES[q]

    return ScriptedBackend("router", fn=reply)


@pytest.mark.parametrize("text, expected", [
    ("Model 2", 1), ("model #3.", 2), ("2", 1), ("Model 2, not model 3", 1), ("I choose model 1.", 0),
    ("10", None), ("model 10", None), ("1 or 3", None), ("", None), ("none of them", None),
    ("math-expert is best", 1), ("3.5", None), ("Model2", 1),
])
def test_parse_model_choice(text, expected):
    assert parse_model_choice(text, 3, ["geo-expert", "math-expert", "sci-expert"]).index == expected


def test_prompt_routing_decisions_and_fallback(tiny_task, cache, tmp_path):
    backends = {"scripted:a": debater("a", False), "scripted:b": debater("b", True),
                "scripted:c": debater("c", False), "scripted:router": _router()}
    descs = ["knows geography", "knows mathematics", "knows science"]
    cfg = scripted_config("prompt_routing", tiny_task, "abc", {"model_descriptions": descs},
                          roles={"router": {"model": "scripted:router"}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    rows = res.predictions
    routed = [r["trace"]["routed_to"] for r in rows]
    # failures ("10", "no idea", "1 or 3") go to the dev-best model: b answers every dev item right
    assert routed == ["b", "a", "b", "c", "b", "b", "b", "b"]
    assert [r["trace"]["parsed"] for r in rows] == [True, True, False, True, True, True, False, False]
    assert "out of range" in rows[2]["trace"]["why"] and "fallback: b" in rows[2]["trace"]["why"]
    assert "ambiguous" in rows[7]["trace"]["why"]
    m = res.metrics
    assert m["router_parse_failures"] == 3 and m["fallback_model"] == "b" and m["router"] == "router"
    assert m["route_share"] == {"a": 0.125, "b": 0.75, "c": 0.125}
    # the router saw each query and every numbered description, never the answer-format instruction
    seen = backends["scripted:router"].calls
    assert len(seen) == 8
    assert all(f"Model {i}: {d}" in c.prompt for c in seen for i, d in enumerate(descs, 1))
    assert all("Answer with" not in c.prompt and "option a" in c.prompt for c in seen)
    # each model answered only the test queries routed to it (plus the dev set, for the fallback)
    for name in "abc":
        test_calls = [c for c in backends[f"scripted:{name}"].calls if int(re.search(r"Question (\d+)", c.prompt).group(1)) >= 4]
        assert len(test_calls) == routed.count(name)
    assert m["phases"]["dev"]["calls"] == 3 * 4 and m["phases"]["test"]["calls"] == 8 + 8
    assert rows[0]["output"].startswith("b:r0")


def test_prompt_routing_defaults_router_to_dev_best_and_reuses_cached_answers(tiny_task, cache, tmp_path):
    backends = {"scripted:a": debater("a", False), "scripted:b": debater("b", True)}
    run_experiment(scripted_config("single_model", tiny_task, "ab"), tmp_path / "single", cache=cache, backends=backends)
    before = {k: len(b.calls) for k, b in backends.items()}
    res = run_experiment(scripted_config("api_prompt_routing", tiny_task, "ab"), tmp_path / "run", cache=cache,
                         backends=backends)
    # the dev-best model b is the router; its replies ("b:r0 The answer is (X)") name no model: all fall back
    assert res.metrics["router"] == "b" and res.metrics["router_parse_failures"] == 8
    # new calls: only b's 8 router prompts; dev answers and routed answers came from the cache
    assert len(backends["scripted:b"].calls) - before["scripted:b"] == 8
    assert len(backends["scripted:a"].calls) == before["scripted:a"]
    assert res.metrics["route_share"] == {"a": 0.0, "b": 1.0}
    assert_dev_best(res.metrics, "b", 2)  # the router choice, with both models' dev scores


def test_prompt_routing_rejects_wrong_description_count(tiny_task, cache, tmp_path):
    backends = {"scripted:a": debater("a", False), "scripted:b": debater("b", True)}
    cfg = scripted_config("api_prompt_routing", tiny_task, "ab", {"model_descriptions": ["only one"]})
    with pytest.raises(ConfigError, match="model_descriptions has 1 entries for 2 models"):
        run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)


def test_prompt_routing_warns_when_descriptions_fall_back(tiny_task, cache, tmp_path, caplog):
    backends = {"scripted:a": debater("a", False), "scripted:b": debater("b", True),
                "scripted:c": debater("c", False), "scripted:router": _router()}
    cfg = scripted_config("prompt_routing", tiny_task, "abc", roles={"router": {"model": "scripted:router"}})
    cfg = cfg.model_copy(update={"models": [
        cfg.models[0].model_copy(update={"description": "knows geography"}),
        cfg.models[1].model_copy(update={"role_prompt": "You are a careful mathematician."}),
        cfg.models[2]]})
    with caplog.at_level("WARNING"):
        res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    # b has only a role prompt and c nothing: the router read those instead, and the run says so
    assert res.metrics["description_fallbacks"] == {"b": "role prompt", "c": "model id"}
    warned = [r.getMessage() for r in caplog.records if "without a description" in r.getMessage()]
    assert len(warned) == 1 and "b -> its role prompt" in warned[0] and "c -> its model id" in warned[0]
    seen = backends["scripted:router"].calls[0].prompt
    assert "Model 2: You are a careful mathematician." in seen and "Model 3: scripted:c" in seen
    # with descriptions given, no fallback is recorded
    given = scripted_config("prompt_routing", tiny_task, "abc", {"model_descriptions": ["x", "y", "z"]},
                            roles={"router": {"model": "scripted:router"}})
    assert "description_fallbacks" not in run_experiment(given, tmp_path / "run2", cache=cache,
                                                         backends=backends).metrics
