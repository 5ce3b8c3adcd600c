"""AggLM on tiny Llamas: dev solution sets split into hard (majority wrong) and easy (majority right), GRPO of
the aggregator with rewards from the task scorer matched by position (duplicate ids keep their own gold), the
trained aggregator combining every model's answer at test time, and reuse on resume.
Solvers are steered (tests/steered.py): s1 is right unless the item number is a multiple of 3, s2 is right on
even items, s3 is always wrong. The aggregator is a plain tiny model: its gibberish sometimes ends in the
right digit, which is the verifiable reward GRPO climbs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moco.config import parse_config
from moco.runner import run_experiment
from moco.tasks.moco_json import load_moco_json
from moco.testing import build_tiny_llama
from moco.training.adapters import adapter_delta
from steered import assert_phase_costs, forget, install, real_part, regenerate, user_text  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
GOLD = [3, 8, 1, 6, 0, 7, 2, 9, 4, 5, 1, 6]


def steer(backend, req, real: str) -> str:
    if not backend.base_name.startswith("s"):
        return real  # the aggregator is not steered
    prompt = user_text(req)
    i = int(re.search(r"Item (\d+):", prompt).group(1))
    right = {"s1": i % 3 != 0, "s2": i % 2 == 0, "s3": False}[backend.base_name]
    return f"[{real}] \\boxed{{{GOLD[i] if right else (GOLD[i] + 1) % 10}}}"


@pytest.fixture
def digits_task(tmp_path):
    rows = [{"id": "dup" if i in (2, 5) else f"d{i}", "input": f"Item {i}: which digit is it?", "output": str(GOLD[i])}
            for i in range(12)]
    p = tmp_path / "digits.json"
    p.write_text(json.dumps({"name": "digits", "task_type": "exact_match", "dev": rows[:8], "test": rows[8:]}))
    return p


@pytest.fixture(scope="module")
def pool_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("agglm")
    return [build_tiny_llama(root / n, seed=i) for i, n in enumerate(["s1", "s2", "s3", "agg"])]


def test_agglm_hard_easy_grpo_by_position_and_trained_aggregator(pool_dirs, digits_task, cache, tmp_path, monkeypatch):
    cls = install(monkeypatch, steer)
    raw = {"method": "text_agglm", "task": {"name": str(digits_task)},
           "models": [{"model": str(p), "name": p.name} for p in pool_dirs[:3]],
           "roles": {"aggregator": {"model": str(pool_dirs[3])}},
           "params": {"sample_size": 1, "max_steps": 8, "train_batch_size": 8, "learning_rate": 3e-2, "lora_r": 8,
                      "grpo_max_completion_length": 24},
           "decoding": {"max_new_tokens": 12, "temperature": 0.0}}
    try:
        res = run_experiment(parse_config(raw), tmp_path / "run", cache=cache)
        info = res.metrics["agglm"]
        # items 0,1,3,5,6,7: the majority is wrong (hard); items 2,4: right (easy); all hard + as many easy
        assert (info["hard"], info["easy"], info["trained_on"]) == (6, 2, {"hard": 6, "easy": 2})
        assert info["used_aggregator"] == "aggregator/agglm"
        art = res.run_dir / "artifacts" / "agglm"
        rows = json.loads(next(art.glob("train_sets-*.json")).read_text())
        by_uid = {r["uid"]: r for r in rows}
        assert by_uid["dev:0"]["hard"] and by_uid["dev:0"]["answers"] == ["4.0", "3.0", "4.0"]
        assert by_uid["dev:0"]["majority"] == "4.0" and not by_uid["dev:2"]["hard"]
        assert (by_uid["dev:2"]["gold"], by_uid["dev:5"]["gold"]) == ("1", "7")  # both have id 'dup'
        # every GRPO reward is the scorer against the gold of the row's own problem
        task = load_moco_json(digits_task)
        from moco.scoring import scorer_for

        scorer = scorer_for("exact_match")
        adapter = res.metrics["training"]["adapters"][0]["adapter"]
        log = json.loads((Path(adapter) / "training_log.json").read_text())
        dev = {e.uid: e for e in task.dev}
        for sm in log["samples"]:
            assert sm["reward"] == scorer.score(dev[rows[sm["row"]]["uid"]], sm["text"]).score
        assert any(sm["reward"] == 1.0 for sm in log["samples"]) and log["steps"] == 8
        assert adapter_delta(adapter) > 0
        # test: every model answers, the trained aggregator sees all three answers
        tr = res.predictions[0]["trace"]
        assert tr["aggregator"] == "aggregator/agglm" and set(tr["solutions"]) == {"s1", "s2", "s3"}
        calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
        assert {c["model"] for c in calls if c["phase"] == "test"} == {"s1", "s2", "s3", "aggregator/agglm"}
        assert_phase_costs(res.metrics)
        trained = next(b for b in cls.instances if b.adapter == adapter)
        req, real = trained.seen[0]
        assert "----- Solution 3 -----" in user_text(req)
        assert real in [p["output"] for p in res.predictions]
        assert regenerate(trained.source, trained.adapter, req) == real != regenerate(trained.source, None, req)
        assert real_part(tr["solutions"]["s1"]) != ""
        again = run_experiment(parse_config(raw), tmp_path / "run", cache=cache)
        assert again.metrics["training"]["reused"] == 1 and again.predictions == res.predictions
    finally:
        forget(cls)


def test_adapter_key_depends_on_task_models_and_settings():
    from types import SimpleNamespace

    from moco.methods.text.agglm import Params, _key
    from moco.tasks.base import Example

    def ctx(task="a", fps=("m1", "m2")):
        dev = [Example("same-id", i, "dev", "p", "p", str(i)) for i in range(2)]
        fp = dict(zip(["x", "y", "agg"], [*fps, "agg"]))
        return SimpleNamespace(task=SimpleNamespace(name=task, task_type="exact_match", dev=dev), seed=0,
                               local=lambda h: SimpleNamespace(fingerprint=fp[h.name]))

    hs = [SimpleNamespace(name=n) for n in ("x", "y")]
    agg = SimpleNamespace(name="agg")
    k = _key(ctx(), agg, Params(), hs)
    assert k == _key(ctx(), agg, Params(), hs)
    assert k != _key(ctx(task="b"), agg, Params(), hs)  # the reference keyed on model names only
    assert k != _key(ctx(fps=("m1", "m3")), agg, Params(), hs)
    assert k != _key(ctx(), agg, Params(sample_size=3), hs)
