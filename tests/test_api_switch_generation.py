"""api_switch_generation: patches continue the assistant turn; a given, random or dev-trained selector picks writers."""
from __future__ import annotations

import json

import pytest

from helpers import letter_for
from moco.config import parse_config
from moco.context import RunContext
from moco.methods.api.switch_generation import FINAL_CUE, parse_choice
from moco.models.scripted import ScriptedBackend


def test_parse_choice():
    assert parse_choice(" 1", 3) == 1
    assert parse_choice(" (2) because", 3) == 2
    assert parse_choice(": I pick model 0", 3) == 0
    assert parse_choice(" 7", 3) is None  # not a model
    assert parse_choice(" 19T", 3) is None
    assert parse_choice(" none of them", 3) is None


def _good(req) -> str:
    return f"The answer is ({letter_for(req.messages[-1][1])}) indeed so true"


def _bad(req) -> str:
    return "hmm let me think about this more"


def _backends(**extra):
    b = {"scripted:good": ScriptedBackend("good", fn=_good), "scripted:bad": ScriptedBackend("bad", fn=_bad)}
    b.update(extra)
    return b


def _config(task, params, **extra):
    raw = {"method": "switch_generation", "task": {"name": str(task)}, "models": ["scripted:bad", "scripted:good"],
           "params": {"patch_size": 6, **params}, "decoding": {"max_new_tokens": 12, "temperature": 0.0}}
    raw.update(extra)
    return parse_config(raw)


@pytest.fixture
def count_generate(monkeypatch):
    """Tags of every ctx.generate invocation (one per batched call)."""
    tags: list[str] = []
    real = RunContext.generate

    def counting(self, calls, tag=""):
        tags.append(tag)
        return real(self, calls, tag)

    monkeypatch.setattr(RunContext, "generate", counting)
    return tags


def test_trained_selector_learns_from_dev_rollouts_and_writes_the_test_answers(tiny_models, tiny_task, tmp_path,
                                                                              cache, count_generate):
    """Rollouts label 'good' wherever the models' rollouts differ; the LoRA-trained tiny selector learns to name
    it and is the selector called at test time; every round is one batched call per role."""
    from safetensors.torch import load_file

    from moco.runner import run_experiment

    backends = _backends()
    cfg = _config(tiny_task, {"training_instances": 6, "rollouts_per_instance": 4, "sft_epochs": 30,
                              "sft_learning_rate": 1e-2},
                  roles={"selector_base": {"model": str(tiny_models[0])}})
    res = run_experiment(cfg, out=tmp_path / "r", cache=cache, backends=backends)
    info = res.metrics["switch_generation"]
    log = [json.loads(x) for x in (tmp_path / "r" / "artifacts" / "selector_training.jsonl").read_text().splitlines()]
    for row in log:  # label = the first writer whose rollouts scored best; ties skipped
        best = max(row["utility"].values())
        if row["label"] is None:
            assert len(set(row["utility"].values())) == 1
        else:
            assert row["utility"][["bad", "good"][row["label"]]] == best
    assert info["training"]["labels"] == {"good": info["training"]["examples"]} and info["training"]["examples"] >= 2
    assert info["training"]["last_loss"] < info["training"]["first_loss"]
    adapter = load_file(f"{info['training']['adapter']}/adapter_model.safetensors")
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in adapter.items())
    calls = [json.loads(x) for x in (tmp_path / "r" / "calls.jsonl").read_text().splitlines()]
    test_selector = [c for c in calls if c["phase"] == "test" and c["tag"].startswith("select")]
    assert test_selector and {c["model"] for c in test_selector} == {"switch-selector"}
    picks = [r for p in res.predictions for r in p["trace"]["rounds"] if not r.get("parse_failed")]
    assert sum(r["model"] == 1 for r in picks) > len(picks) / 2  # the trained selector mostly names "good"
    assert res.metrics["score"] == 1.0
    assert info["parse_failures"] == sum(r.get("parse_failed", False) for p in res.predictions for r in p["trace"]["rounds"])
    # test phase: per round one selector call and one patch call for all examples
    assert count_generate[-4:] == ["select round 0", "switch round 0", "select round 1", "switch round 1"]
    sft = [c for c in calls if c["tag"] == "selector sft"]
    assert len(sft) == 1 and sft[0]["model"] == "switch-selector" and sft[0]["tokens_in"] > 0
    # a re-run trains nothing and decodes nothing: the adapter is reused and every call is a cache hit
    asked = {name: len(b.calls) for name, b in backends.items()}
    again = run_experiment(cfg, out=tmp_path / "r2", cache=cache, backends=backends)
    assert {name: len(b.calls) for name, b in backends.items()} == asked
    assert again.metrics["switch_generation"]["training"]["reused"] is True
    assert [p["output"] for p in again.predictions] == [p["output"] for p in res.predictions]
    assert [p["trace"] for p in again.predictions] == [p["trace"] for p in res.predictions]
    assert all(json.loads(x)["cache_hit"] for x in (tmp_path / "r2" / "calls.jsonl").read_text().splitlines())


def test_given_selector_and_prefix_continuation(tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    seen_prefixes: list[str] = []

    def good(req):
        seen_prefixes.append(req.assistant_prefix)
        return _good(req)

    sel = ScriptedBackend("sel", fn=lambda req: " 1")
    backends = _backends(**{"scripted:good": ScriptedBackend("good", fn=good), "scripted:sel": sel})
    cfg = _config(tiny_task, {"selector": "sel", "final_answer_cue": True},
                  models=["scripted:bad", "scripted:good", "scripted:sel"])
    res = run_experiment(cfg, out=tmp_path / "r", cache=cache, backends=backends)
    assert res.metrics["switch_generation"]["mode"] == "given"
    assert all(s["model"] in ("good", None) for p in res.predictions for s in p["trace"]["segments"])
    assert all(c.messages[-1][1].endswith("Answer with the model number.") for c in sel.calls)
    first_round = [p for p in seen_prefixes if not p]
    second = [p for p in seen_prefixes if p]
    assert len(first_round) == len(second) == 8 and all(p.endswith(FINAL_CUE) for p in second)
    assert all(p.startswith("The answer is (") for p in second)


def test_unparseable_selector_replies_are_recorded_and_fall_back_to_seeded_random(tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    backends = _backends(**{"scripted:sel": ScriptedBackend("sel", fn=lambda req: " I think the first one")})
    cfg = _config(tiny_task, {"selector": "sel"}, models=["scripted:bad", "scripted:good", "scripted:sel"])
    a = run_experiment(cfg, out=tmp_path / "a", cache=cache, backends=backends)
    info = a.metrics["switch_generation"]
    assert info["parse_failures"] == info["selector_calls"] > 0
    assert all(r["parse_failed"] for p in a.predictions for r in p["trace"]["rounds"])
    asked = {name: len(b.calls) for name, b in backends.items()}
    b = run_experiment(cfg, out=tmp_path / "b", cache=cache, backends=backends)
    assert [p["trace"]["rounds"] for p in b.predictions] == [p["trace"]["rounds"] for p in a.predictions]
    # every segment and selector reply is an ordinary call: the re-run reads them all from the cache, and
    # calls.jsonl holds one record per call under the model that wrote it
    assert {name: len(b.calls) for name, b in backends.items()} == asked
    assert [p["output"] for p in b.predictions] == [p["output"] for p in a.predictions]
    first, again = ([json.loads(x) for x in (tmp_path / d / "calls.jsonl").read_text().splitlines()] for d in "ab")
    assert {c["model"] for c in first} == {"bad", "good", "sel"} and not any(c["cache_hit"] for c in first)
    assert sum(c["tag"].startswith("select") for c in first) == info["selector_calls"]
    assert {c["model"] for c in first if c["tag"].startswith("select")} == {"sel"}
    assert all(c["cache_hit"] for c in again)
    assert sorted((c["model"], c["key"], c["tag"]) for c in again) == sorted((c["model"], c["key"], c["tag"]) for c in first)


def test_an_answer_that_ends_stops_switching_unless_wait(tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    short = ScriptedBackend("short", fn=lambda req: "Done.")  # fewer words than the patch: the answer ended
    backends = _backends(**{"scripted:short": short})
    cfg = _config(tiny_task, {"selector_mode": "random"}, models=["scripted:short", "scripted:good"])
    res = run_experiment(cfg, out=tmp_path / "a", cache=cache, backends=backends)
    for p in res.predictions:
        writers = [s["model"] for s in p["trace"]["segments"]]
        assert "short" not in writers[:-1]  # nothing is written after the short model ended the answer
    cfg = _config(tiny_task, {"selector_mode": "random", "wait_on_stop": True}, models=["scripted:short", "scripted:good"])
    waited = run_experiment(cfg, out=tmp_path / "b", cache=cache, backends=backends)
    texts = [p["output"] for p in waited.predictions if p["trace"]["segments"][0]["model"] == "short"]
    assert texts and all(t.startswith("Done. Wait,") for t in texts)
