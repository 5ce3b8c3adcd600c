"""SPARTA on three tiny Llamas: pairing by rating, judges outside the pair, parse failures recorded (not 5/5),
reputation-weighted scores, the normal-CDF rating update, preferences, DPO of every model continuing its
adapter, dev selection over every iteration's models, and the selected trained model answering the test set.
Answers are steered (tests/steered.py): x is always right, y right on even questions, z always wrong; as a
judge z gives no readable score on odd questions; otherwise judges give 8 to a right answer, 3 to a wrong one."""
from __future__ import annotations

import json
import math
import re

import pytest

from helpers import letter_for
from moco.config import parse_config
from moco.errors import ConfigError
from moco.methods.text.sparta import JUDGE_PREFIX, Params, Ratings, parse_score
from moco.runner import plan, run_experiment
from moco.testing import build_tiny_llama, mc_dataset
from moco.training.adapters import adapter_delta
from steered import assert_phase_costs, forget, install, real_part, regenerate, user_text  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
NEXT = {"A": "B", "B": "C", "C": "D", "D": "A"}


def steer(backend, req, real: str) -> str:
    prompt = user_text(req)
    who = backend.base_name
    if "[Instruction]" in prompt:
        assert req.assistant_prefix == JUDGE_PREFIX
        if who == "z" and int(re.search(r"Question (\d+):", prompt).group(1)) % 2:
            return "hmm, hard to say"
        response = prompt.split("[Response]", 1)[1]
        said = re.search(r"The answer is \(([A-D])\)", response)
        ok = said is not None and said.group(1) == letter_for(prompt)
        return "8}" if ok else "3}"
    right = letter_for(prompt)
    number = int(re.search(r"Question (\d+):", prompt).group(1))
    good = who == "x" or (who == "y" and number % 2 == 0)
    return f"[{real}] The answer is ({right if good else NEXT[right]})"


@pytest.fixture
def task6(tmp_path):
    p = tmp_path / "mc6.json"
    p.write_text(json.dumps(mc_dataset(n_dev=12, n_test=4)))  # 6 combat instructions, 6 selection items
    return p


@pytest.fixture(scope="module")
def fighters(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparta")
    return [build_tiny_llama(root / n, seed=i) for i, n in enumerate("xyz")]


def _config(fighters, task, **params):
    return parse_config({
        "method": "text_sparta", "task": {"name": str(task)}, "models": [{"model": str(p), "name": p.name} for p in fighters],
        "params": {"num_iterations": 2, "num_opponents": 1, "random_match_prob": 0.0, "dpo_max_steps": 4,
                   "dpo_learning_rate": 3e-2, "dpo_batch_size": 2, "dpo_grad_accum": 1, "lora_r": 4, **params},
        "decoding": {"max_new_tokens": 6, "temperature": 0.0}})


def test_sparta_combat_judging_reputation_dpo_and_selection(fighters, task6, cache, tmp_path, monkeypatch):
    cls = install(monkeypatch, steer)
    try:
        res = run_experiment(_config(fighters, task6), tmp_path / "run", cache=cache)
        art = res.run_dir / "artifacts" / "sparta"
        sp = res.metrics["sparta"]
        it1 = json.loads((art / "iteration_1" / "judged_pairs.json").read_text())
        assert len(it1) == 6  # one pair per dev instruction
        for pr in it1:
            assert sorted(pr["judges"] + pr["models"]) == ["x", "y", "z"]  # the judge is the model outside the pair
            if pr["judges"] == ["z"] and pr["instruction"] % 2:  # no score: failures recorded, pair undecided
                assert pr["outcome"] == "undecided" and pr["parse_failures"] == ["z", "z"] and pr["scores"] is None
            else:
                judge = pr["judges"][0]
                assert pr["parse_failures"] == [] and pr["outcome"] in ("decided", "tie")
                right = ["ABCD"[pr["instruction"] % 4] in r[-3:] for r in pr["responses"]]
                assert pr["judge_scores"][judge] == [8.0 if ok else 3.0 for ok in right]
        # first loop: models shuffled, each takes one instruction; the opponent is the closest-rated model
        assert sorted(pr["models"][0] for pr in it1[:3]) == sorted(pr["models"][0] for pr in it1[3:]) == ["x", "y", "z"]
        first_decided = next(pr for pr in it1 if pr["outcome"] == "decided")
        # equal ratings: Phi term 0 -> epsilon; K = 10 before any pair; sigma 0.5; rule of the notes
        expected = 10 * first_decided["diff"] * math.tanh(0.5) * 0.01 / 20
        assert first_decided["rating_deltas"] == pytest.approx([expected, -expected])
        r1 = sp["iterations"][0]
        assert r1["ratings_after"]["score"]["x"] >= 100.0 >= r1["ratings_after"]["score"]["z"]
        it2 = json.loads((art / "iteration_2" / "judged_pairs.json").read_text())
        before2 = sp["iterations"][1]["ratings_before"]["score"]
        for pr in it2:  # matching by rating works in iteration 2 too (names, not adapter paths, are the keys)
            first, opp = pr["models"]
            others = [n for n in "xyz" if n != first]
            assert abs(before2[opp] - before2[first]) == min(abs(before2[o] - before2[first]) for o in others)
            assert pr["answered_by"] == [f"{first}/sparta@1", f"{opp}/sparta@1"]
        prefs = json.loads((art / "iteration_1" / "preference_pairs.json").read_text())
        assert len(prefs) == r1["decided"] > 0 and all(p["chosen_model"] != p["rejected_model"] for p in prefs)
        for p in prefs:  # the judges preferred the right answer
            gold = "ABCD"[p["instruction"] % 4]
            assert p["chosen"].endswith(f"({gold})") and not p["rejected"].endswith(f"({gold})")
        assert r1["parse_failures"] == 2 * r1["undecided"]
        # every model trained in every iteration, iteration 2 continuing iteration 1's adapter
        runs = {r["label"]: r for r in res.metrics["training"]["adapters"]}
        assert set(runs) == {f"{n}/sparta@{i}" for n in "xyz" for i in (1, 2)}
        assert runs["y/sparta@2"]["continued_from"] == runs["y/sparta@1"]["adapter"]
        assert all(adapter_delta(r["adapter"]) > 0 for r in runs.values())
        # selection on the held-out half of dev (never a combat instruction): every iteration's models and the
        # base models answered it; x's are always right, the earliest trained one wins the tie with base x
        assert sp["instruction_items"] == [f"dev:{i}" for i in range(6)]
        assert sp["selection_items"] == [f"dev:{i}" for i in range(6, 12)]
        assert {pr["instruction"] for pr in it1 + it2} <= set(range(6))
        assert set(sp["dev_scores"]) == set(runs) | {"x", "y", "z"} and sp["base_models_in_selection"]
        assert sp["dev_scores"]["x/sparta@1"] == sp["dev_scores"]["x"] == 1.0 and sp["dev_scores"]["z/sparta@2"] == 0.0
        assert sp["dev_scores"]["y"] == 0.5  # y is right on even questions: 6, 8, 10
        assert sp["selected"] == "x/sparta@1" and res.metrics["score"] == 1.0
        sel = res.metrics["dev_selection"]["final_model"]  # the choice with every candidate's dev score
        assert sel["chosen"] == "x/sparta@1" and sel["margin"] == 0.0 and len(sel["candidates"]) == 9
        assert {r["candidate"]: r["dev_score"] for r in sel["candidates"]} == sp["dev_scores"]
        calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
        # who judged whom, from the call log: each model judged both responses of every pair it was not in, with
        # the weights of its iteration (base models in iteration 1, their iteration-1 adapters in iteration 2)
        from collections import Counter

        for it, pairs, suffix in ((1, it1, ""), (2, it2, "/sparta@1")):
            judged = Counter(c["model"] for c in calls if c["tag"] == f"iteration {it} judging")
            expected = {f"{n}{suffix}": 2 * sum(n in pr["judges"] for pr in pairs) for n in "xyz"}
            assert judged == Counter(expected) and sum(judged.values()) == 2 * len(pairs)
        assert {c["model"] for c in calls if c["phase"] == "test"} == {"x/sparta@1"}
        assert_phase_costs(res.metrics)
        trained = next(b for b in cls.instances if b.adapter == runs["x/sparta@1"]["adapter"])
        req, real = next((q, t) for q, t in trained.seen if "Question 12:" in user_text(q) and not q.assistant_prefix)
        assert real == real_part(res.predictions[0]["output"])
        assert regenerate(trained.source, trained.adapter, req) == real != regenerate(trained.source, None, req)
        # resuming the same run reuses every adapter and every answer, and selects the same model
        again = run_experiment(_config(fighters, task6), tmp_path / "run", cache=cache)
        assert again.metrics["training"]["reused"] == 6 and again.metrics["sparta"]["selected"] == "x/sparta@1"
        assert again.metrics["phases"]["dev"]["cache_hits"] == again.metrics["phases"]["dev"]["calls"]
        assert again.predictions == res.predictions
    finally:
        forget(cls)


def test_final_selection_lets_a_hurt_model_lose_and_keeps_instructions_apart():
    """The final choice includes the base models: when DPO made every trained model worse on the selection items,
    the base model that was better wins; on a tie the trained model is kept. The selection items are the last
    ones of dev and never combat instructions; selection_share 0 is the reference's overlap."""
    from types import SimpleNamespace

    from moco.methods.text.sparta import split_dev
    from moco.selection import choose

    ctx = SimpleNamespace(seed=0, metrics={}, decoding=SimpleNamespace(dev_decoding="sampled", dev_repeats=1))
    names = ["x/sparta@1", "y/sparta@1", "x/sparta@2", "y/sparta@2", "x", "y"]
    hurt = {"x/sparta@1": [1, 0, 0, 1], "y/sparta@1": [1, 0, 0, 0], "x/sparta@2": [0, 1, 0, 1],
            "y/sparta@2": [0, 0, 1, 0], "x": [1, 1, 1, 0], "y": [1, 0, 1, 0]}
    assert names[choose(ctx, "final_model", names, [hurt[n] for n in names])] == "x"
    sel = ctx.metrics["dev_selection"]["final_model"]
    assert (sel["chosen"], sel["chosen_dev_score"], sel["margin"]) == ("x", 0.75, 0.25)
    assert [r["candidate"] for r in sel["candidates"]] == names and sel["candidates"][4]["ci95"] is not None
    tie = {**hurt, "x/sparta@2": [1, 1, 0, 1]}
    assert names[choose(ctx, "final_model", names, [tie[n] for n in names])] == "x/sparta@2"  # tie: the trained one
    dev = list(range(10))
    assert split_dev(dev, 0.5, 500) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert split_dev(dev, 0.25, 3) == ([0, 1, 2], [7, 8, 9])
    assert split_dev(dev, 0.0, 4) == ([0, 1, 2, 3], dev)  # the reference: the same prompts select


def test_sparta_needs_three_models(fighters, tiny_task):
    with pytest.raises(ConfigError, match="at least 3 models"):
        plan(_config(fighters[:2], tiny_task))


def test_judge_score_parsing():
    assert parse_score('{"score": 7}') == 7.0
    assert parse_score(JUDGE_PREFIX + '9.5, "why": "ok"}') == 9.5
    assert parse_score("Score: 8") == 8.0 and parse_score("I would rate it 6 out of 10.") == 6.0
    assert parse_score("4/10") == 4.0 and parse_score(" 3 ") == 3.0
    for bad in ('{"score": 0}', "11", "great answer", "", '{"score": "high"}'):
        assert parse_score(bad) is None


def test_rating_update_rule():
    p = Params()
    r = Ratings.start(["a", "b"], p)
    dw, dl = r.update("a", "b", 2.0)
    assert dw == pytest.approx(10 * 2.0 * math.tanh(0.5) * 0.01 / 20) and dl == pytest.approx(-dw)
    assert r.deviation["a"] == p.min_deviation  # one delta: no spread yet, the floor applies
    r.score.update(a=120.0, b=100.0)
    r.deviation.update(a=0.5, b=0.5)
    dw2, _ = r.update("a", "b", 2.0)
    k = max(p.min_k, p.initial_k * p.decay_rate ** (1 / p.decay_steps))
    z = 20 / math.sqrt(0.5)
    phi = abs(0.5 * (1 + math.erf(z / math.sqrt(2))) - 0.5 * (1 + math.erf(-z / math.sqrt(2))))
    assert dw2 == pytest.approx(k * 2.0 * math.tanh(0.5) * phi / 20)
    r.score["b"] = 10.0
    r.update("a", "b", 9.0)
    assert r.score["b"] == 10.0  # the floor
    frozen = Ratings.start(["a", "b"], Params(freeze_ratings=True))
    assert frozen.update("a", "b", 5.0) == (0.0, 0.0) and frozen.score == {"a": 100.0, "b": 100.0}


def test_pairs_are_decided_in_order_with_the_judges_current_ratings():
    from moco.methods.text.sparta import decide

    r = Ratings.start(["a", "b", "c", "d"], Params())
    first = {"models": ["a", "b"], "judge_scores": {"c": [6.0, 4.0], "d": [3.0, 6.0]}}
    decide(first, r)  # equal weights: 4.5 vs 5.0, b wins
    assert first["winner"] == "b" and first["scores"] == [4.5, 5.0] and first["diff"] == 0.5
    r.score["c"] = 200.0  # c gained reputation in an earlier duel: its verdict now counts twice as much as d's
    second = {"models": ["a", "b"], "judge_scores": {"c": [6.0, 4.0], "d": [3.0, 6.0]}}
    decide(second, r)
    assert second["judge_weights"] == {"c": 200.0, "d": 100.0}
    assert second["winner"] == "a" and second["scores"] == pytest.approx([5.0, 14 / 3])
    nobody = {"models": ["a", "b"], "judge_scores": {}}  # every judge failed to give a score
    decide(nobody, r)
    assert nobody["outcome"] == "undecided" and nobody["winner"] is None
