"""Cascade on scripted models with known token probabilities: per-model thresholds, who answered what."""
from __future__ import annotations

import json
import re

import pytest

from helpers import ConfidentBackend, scripted_config
from moco.models.scripted import ScriptedBackend
from moco.routing.thresholds import calibrate, quantile, stop_level
from moco.runner import run_experiment


def _q_from(call) -> int:
    return int(re.search(r"Question (\d+):", call.prompt).group(1))


def conf_a(q: int) -> float:
    return 0.9 if q % 2 == 0 else 0.3


def conf_b(q: int) -> float:
    return {0: 0.8, 1: 0.95, 2: 0.9, 3: 0.7}[q % 4]


def _backends():
    return {"scripted:a": ConfidentBackend("a", True, conf_a), "scripted:b": ConfidentBackend("b", True, conf_b),
            "scripted:c": ConfidentBackend("c", True, lambda q: 0.99)}


def test_thresholds_per_model_and_who_answered(tiny_task, cache, tmp_path):
    backends = _backends()
    res = run_experiment(scripted_config("api_cascade", tiny_task, "abc"), tmp_path / "run", cache=cache,
                         backends=backends)
    m = res.metrics
    # dev items are Question 0..3: a's confidences 0.9, 0.3, 0.9, 0.3 -> median 0.6; b's 0.8, 0.95, 0.9, 0.7 -> 0.85
    assert m["thresholds"] == {"a": pytest.approx(0.6), "b": pytest.approx(0.85)}
    # the reference's bug (every level uses model 0's threshold 0.6) would let b accept Question 7 and 11 (0.7)
    by = {r["id"]: r["trace"]["answered_by"] for r in res.predictions}
    assert by == {"q4": "a", "q5": "b", "q6": "a", "q7": "c", "q8": "a", "q9": "b", "q10": "a", "q11": "c"}
    assert m["answered_share"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert m["reached_share"] == {"a": 1.0, "b": 0.5, "c": 0.25}
    assert m["calls_per_query"] == 1.75
    row7 = next(r for r in res.predictions if r["id"] == "q7")["trace"]["levels"]
    assert [(v["model"], v["decision"]) for v in row7] == [("a", "defer"), ("b", "defer"), ("c", "accept")]
    assert row7[1]["confidence"] == pytest.approx(0.7) and row7[1]["threshold"] == pytest.approx(0.85)
    # only deferred items reach later models; dev calibration asks every model but the last
    test_calls = lambda b: [c for c in b.calls if _q_from(c) >= 4]  # noqa: E731
    assert len(test_calls(backends["scripted:a"])) == 8
    assert len(test_calls(backends["scripted:b"])) == 4 and len(test_calls(backends["scripted:c"])) == 2
    assert len(backends["scripted:c"].calls) == 2  # c never answered dev: the last level needs no threshold
    assert m["phases"]["dev"]["calls"] == 8 and m["phases"]["test"]["calls"] == 14
    assert m["score"] == 1.0


def test_costs_order_and_fixed_thresholds(tiny_task, cache, tmp_path):
    backends = _backends()
    cfg = scripted_config("cascade", tiny_task, "abc", {"costs": [2.0, 1.0, 5.0], "thresholds": [0.9, 0.5]})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert res.metrics["cascade_order"] == ["b", "a", "c"]
    assert res.metrics["thresholds"] == {"b": 0.9, "a": 0.5}
    assert "dev" not in res.metrics["phases"]
    by = [r["trace"]["answered_by"] for r in res.predictions]
    # b accepts q%4 in (1, 2) (0.95, 0.9); a accepts the even rest; c gets q%4 == 3
    assert by == ["a", "b", "b", "c", "a", "b", "b", "c"]


def test_just_ask_mode_defers_on_the_word(tiny_task, cache, tmp_path):
    backends = {"scripted:a": ConfidentBackend("a", False, conf_a, unsure_word=True),
                "scripted:c": ConfidentBackend("c", True, lambda q: 0.99, unsure_word=True)}
    res = run_experiment(scripted_config("api_cascade", tiny_task, "ac", {"mode": "just_ask"}), tmp_path / "run",
                         cache=cache, backends=backends)
    by = [r["trace"]["answered_by"] for r in res.predictions]
    assert by == ["a", "c"] * 4  # a says "unconfident" on odd questions
    assert "dev" not in res.metrics["phases"] and res.metrics["thresholds"] == {}
    asked = backends["scripted:a"].calls
    assert all("unconfident" in c.prompt for c in asked)
    assert all("unconfident" not in c.prompt for c in backends["scripted:c"].calls)  # last level: plain question
    assert res.metrics["answered_share"] == {"a": 0.5, "c": 0.5}


def test_logit_mode_needs_logprobs(tiny_task, cache, tmp_path):
    from moco.errors import ConfigError

    backends = {"scripted:a": ScriptedBackend("a", default="x"), "scripted:b": ScriptedBackend("b", default="y")}
    # refused by the plan, before any model is asked (moco validate says the same): only the last level may lack them
    with pytest.raises(ConfigError, match="model 'a' .* has no per-token log-probabilities"):
        run_experiment(scripted_config("api_cascade", tiny_task, "ab"), tmp_path / "run", cache=cache, backends=backends)


def test_threshold_rules():
    assert quantile([0.1, 0.4, 0.3, 0.2], 0.5) == pytest.approx(0.25)
    assert quantile([1.0], 0.9) == 1.0
    assert calibrate([[0.9, 0.3, None], [0.1, 0.2, 0.3]], 0.5) == [pytest.approx(0.6), pytest.approx(0.2)]
    assert stop_level([0.5, 0.9, None], [0.6, 0.8]) == 1
    assert stop_level([None, 0.1, 0.0], [0.6, 0.8]) == 2
    assert stop_level([0.6, 0.0, 0.0], [0.6, 0.8]) == 0


def test_cascade_on_tiny_hf_models_calibrates_each_model(tiny_models, tiny_task, cache, tmp_path):
    from moco.config import parse_config

    cfg = parse_config({"method": "api_cascade", "task": {"name": str(tiny_task)}, "models": [str(m) for m in tiny_models],
                        "decoding": {"max_new_tokens": 5, "temperature": 0.7}, "seed": 2})
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    names = res.metrics["cascade_order"]
    th = res.metrics["thresholds"]
    assert list(th) == names[:2] and th[names[0]] != th[names[1]]
    for r in res.predictions:
        levels = r["trace"]["levels"]
        for v in levels[:-1]:
            assert v["decision"] == "defer" and v["confidence"] < th[v["model"]]
        if len(levels) < 3:
            assert levels[-1]["confidence"] >= th[levels[-1]["model"]]
        assert 0 < levels[0]["confidence"] <= 1
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    assert sum(c["phase"] == "dev" for c in calls) == 2 * 4
