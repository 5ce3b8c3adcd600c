"""Heterogeneous swarms: seeded graph decoding, level-batched execution, the role-step search whose best dev
system is exactly the one run on the test set, the weight-step alternating with it (JFK-score fitness), the
dev selection (whole dev set, `dev_repeats`, a fresh re-evaluation of the chosen system, intervals), and the
one-line notice when a pool cannot have a weight-step."""
from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from helpers import letter_for, scripted_config
from moco.methods.text.heterogeneous_swarms import Graph, decode, top_p_choice
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from text_agents import wrong, record_generate


def node(name: str) -> ScriptedBackend:
    """Question q is answered right by a if q % 4 == 0, by b if q % 4 < 2, by c if q % 4 < 3 but only when c sees
    b's response. So a graph ending at a scores 0.25, at b 0.5, at c 0.75 if b feeds c directly, else 0."""
    skill = {"a": 1, "b": 2, "c": 3}[name]

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        q = int(re.search(r"Question (\d+):", prompt).group(1))
        right = letter_for(prompt)
        seen = re.findall(r"Previous response \d+:\n(\w)\[[\w,]*\]", prompt)
        ok = q % 4 < skill and (name != "c" or "b" in seen)
        return f"{name}[{','.join(seen)}] The answer is ({right if ok else wrong(right)})"

    return ScriptedBackend(name, fn=reply)


def _is_in_tree(g: Graph) -> bool:
    outs = {s for s, _ in g.edges}
    if len(g.edges) != g.n - 1 or len(outs) != g.n - 1 or g.end in outs:
        return False
    nxt = dict(g.edges)
    for v in range(g.n):  # every node reaches the end node: acyclic, connected
        seen = set()
        while v != g.end:
            if v in seen:
                return False
            seen.add(v)
            v = nxt[v]
    return True


def test_decode_is_seeded_pure_and_gives_in_trees():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        for _ in range(30):
            pos = rng.uniform(-1, 1, n * n)
            before = pos.copy()
            g1 = decode(pos, n, 0.7, np.random.default_rng([1, 2, 3]))
            g2 = decode(pos, n, 0.7, np.random.default_rng([1, 2, 3]))
            assert g1 == g2 and _is_in_tree(g1)
            assert np.array_equal(pos, before)  # no in-place mutation of the particle
            lv = g1.levels()
            assert lv[-1] == [g1.end] and sorted(v for level in lv for v in level) == list(range(n))
    assert {top_p_choice(np.array([5.0, 0.0, 0.0]), 0.7, np.random.default_rng(s)) for s in range(20)} == {0}
    assert {top_p_choice(np.zeros(3), 1.0, np.random.default_rng(s)) for s in range(40)} == {0, 1, 2}
    pos = np.random.default_rng(3).uniform(-1, 1, 16)  # threshold 0 (the authors' code): no sampling at all
    assert len({decode(pos, 4, 0.0, np.random.default_rng(s)) for s in range(20)}) == 1


@pytest.fixture
def spy(monkeypatch):
    return record_generate(monkeypatch)


def expected_score(graph: dict) -> float:
    end, edges = graph["end"], graph["edges"]
    return {"a": 0.25, "b": 0.5}.get(end, 0.75 if ["b", "c"] in edges else 0.0)


def role_steps(sw: dict) -> list[dict]:
    return [s for s in sw["trajectory"] if s["step"] == "role"]


@pytest.mark.parametrize("seed", [0, 1])
def test_role_step_search_picks_the_best_dev_graph_and_runs_exactly_it(seed, tiny_task, cache, tmp_path, spy):
    bk = {f"scripted:{n}": node(n) for n in "abc"}
    cfg = scripted_config("text_heterogeneous_swarms", tiny_task, "abc",
                          {"population": 4, "max_iterations": 6, "graph_top_p": 0.7}, seed=seed)
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    sw = res.metrics["swarm"]
    traj = role_steps(sw)
    for it in traj:  # every particle's dev score is its decoded graph's score
        assert it["scores"] == [expected_score(g) for g in it["graphs"]] and it["models"] == list("abc")
    assert [t["best_score"] for t in traj] == [max(s for t in traj[:i + 1] for s in t["scores"]) for i in range(len(traj))]
    # the test graph is the first decoded graph that reached the best dev score (not a re-sample of its particle)
    best = max(s for t in traj for s in t["scores"])
    it, p = next((t["iteration"], p) for t in traj for p, s in enumerate(t["scores"]) if s == best)
    assert sw["chosen"] == f"role {it} particle {p + 1}" and sw["graph"] == traj[it - 1]["graphs"][p]
    assert sw["search_dev_score"] == best == 0.75
    assert sw["dev_score"] == 0.75  # the chosen graph re-run on dev (scripted nodes: the same score)
    assert sw["graph"]["end"] == "c" and ["b", "c"] in sw["graph"]["edges"]
    assert res.metrics["score"] == expected_score(sw["graph"])  # test questions follow the same pattern
    tr = res.predictions[0]["trace"]
    assert tr["graph"] == sw["graph"] and "b" in tr["nodes"]["c"]["saw"]
    assert res.predictions[0]["output"].startswith("c[")
    # the selection record: every distinct graph is a candidate; the winner's score, the runner-up's, intervals
    sel = res.metrics["dev_selection"]["heterogeneous_swarms"]
    distinct = {json.dumps(g, sort_keys=True) for t in traj for g in t["graphs"]}
    assert sel["evaluated"] == sw["candidates"] == len(distinct) and sel["chosen"] == sw["chosen"]
    assert sel["chosen_dev_score"] == 0.75 and sel["reevaluated"]["dev_score"] == 0.75
    assert sel["candidates"][0]["candidate"] == sw["chosen"] and all(c["items"] == 4 for c in sel["candidates"])
    assert all(c["ci95"] is not None or c["ci_note"] for c in sel["candidates"])
    # execution is batched per topological level: one generate per (step, level), all particles and examples
    test_calls = [(t, m) for t, m in spy if t.startswith("test level")]
    assert [t for t, _ in test_calls] == [f"test level {d}" for d in range(len(sw["levels"]))]
    for (_, called), level in zip(test_calls, sw["levels"]):
        assert sorted(called) == sorted(level * 8)
    assert sum(len(m) for t, m in spy if t.startswith("role 1 level")) == 4 * 3 * 4  # 4 graphs x 3 nodes x 4 items
    ph = res.metrics["phases"]
    assert ph["test"]["calls"] == 3 * 8
    assert ph["dev"]["calls"] == sum(len(m) for t, m in spy if t.startswith(("role", "re-evaluate", "jfk")))
    assert sum(len(m) for t, m in spy if t.startswith("re-evaluate")) == 3 * 4  # once more on dev: 3 nodes x 4


def test_same_seed_same_search_other_seed_other_path(tiny_task, cache, tmp_path):
    bk = {f"scripted:{n}": node(n) for n in "abc"}
    params = {"population": 3, "max_iterations": 2, "dev_ratio": 0.5}
    r1 = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc", params, seed=5),
                        tmp_path / "1", cache=cache, backends=bk)
    r2 = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc", params, seed=5),
                        tmp_path / "2", cache=cache, backends=bk)
    r3 = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc", params, seed=6),
                        tmp_path / "3", cache=cache, backends=bk)
    assert r1.metrics["swarm"]["trajectory"] == r2.metrics["swarm"]["trajectory"]
    assert r1.metrics["swarm"]["trajectory"] != r3.metrics["swarm"]["trajectory"]
    assert r1.metrics["swarm"]["dev_examples"] == 2


def test_defaults_whole_dev_jfk_credit_and_the_unavailable_weight_step(tiny_task, cache, tmp_path, spy):
    """Paper defaults: 10 graph particles on the whole dev set (4 items, not a 25% prefix); the chosen graph
    re-run on dev with fresh samples; JFK-score over 10 random model-to-position assignments of that graph,
    each utility the real score of that assignment, each model's score sum_j cnt_ij f_j / sum_j cnt_ij; and
    scripted models have no weights: one line says the weight-step is unavailable, and only role-steps run."""
    bk = {f"scripted:{n}": node(n) for n in "abc"}
    res = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc"), tmp_path / "run",
                         cache=cache, backends=bk)
    sw = res.metrics["swarm"]
    assert sw["dev_examples"] == 4 and sw["dev_score"] == expected_score(sw["graph"])
    assert len(role_steps(sw)[0]["scores"]) == 10 and sw["order"] == [f"role {i}" for i in range(1, sw["iterations"] + 1)]
    assert sw["iterations"] <= 20
    reeval = {c.seed for c in bk["scripted:c"].calls if "Question 0:" in c.prompt}
    assert len(reeval) >= 2  # search calls and the fresh re-evaluation samples differ
    jfk = sw["jfk"]
    assert jfk["on"] == "the chosen graph" and len(jfk["assignments"]) == len(jfk["utilities"]) == 10
    end = sw["graph"]["end"]
    preds = {s for s, d in sw["graph"]["edges"] if d == end}
    pos = {n: i for i, n in enumerate("abc")}
    for row, f in zip(jfk["assignments"], jfk["utilities"]):  # row[position] = the model playing it
        at_end = row[pos[end]]
        fed_by_b = any(row[pos[p]] == "b" for p in preds)
        assert f == {"a": 0.25, "b": 0.5}.get(at_end, 0.75 if fed_by_b else 0.0)
    for name in "abc":
        cnt = [row.count(name) for row in jfk["assignments"]]
        want = sum(c * f for c, f in zip(cnt, jfk["utilities"])) / sum(cnt) if sum(cnt) else None
        assert jfk["scores"][name] == pytest.approx(want)
    assert sum(len(m) for t, m in spy if t.startswith("jfk")) <= 10 * 3 * 4  # shared identical calls run once
    assert not any(t.startswith("weight") for t, _ in spy)
    assert sw["weight_step"] == "unavailable: model 'a' (scripted) exposes no weights"
    assert res.metrics["warnings"] == ["text_heterogeneous_swarms: weight-step unavailable (model 'a' (scripted) "
                                       "exposes no weights); only the roles (graph) are optimised"]


@pytest.mark.parametrize("models, params, why", [
    ([{"model": f"scripted:{n}", "name": n, "role_prompt": f"You are {n}."} for n in "abc"], {},
     "model 'a' has a role prompt, which merged weights cannot keep"),
    ([{"model": "scripted:a", "name": n} for n in "abc"], {}, "every model is scripted:a: the same weights, nothing to mix"),
    ("abc", {"jfk_assignments": 0}, "model 'a' (scripted) exposes no weights"),  # the pool's reason comes first
    ("abc", {"weight_step": False}, None),
])
def test_why_no_weight_step_is_said(models, params, why, tiny_task, cache, tmp_path, spy):
    bk = {f"scripted:{n}": node(n) for n in "abc"}
    extra = {"models": models} if isinstance(models, list) else {}
    res = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc",
                                         {"population": 2, "max_iterations": 1, **params}, **extra),
                         tmp_path / "run", cache=cache, backends=bk)
    sw = res.metrics["swarm"]
    assert sw["weight_step"] == (f"unavailable: {why}" if why else "off (weight_step: false)")
    assert res.metrics.get("warnings", []) == ([f"text_heterogeneous_swarms: weight-step unavailable ({why}); only "
                                                "the roles (graph) are optimised"] if why else [])
    assert sw["order"] == ["role 1"] and not any(t.startswith("weight") for t, _ in spy)
    assert (sw["jfk"] is None) == (params.get("jfk_assignments") == 0)  # credit on the chosen graph unless 0


def lucky(name: str) -> ScriptedBackend:
    """Right or wrong by the request's seed (a coin per sample): every system's dev score is noise, so the
    search's best is optimistic. Replies say `ok`/`no` so a test can count the right ones."""

    def reply(req) -> str:
        right = letter_for(req.messages[-1][1])
        ok = random.Random(req.seed).random() < 0.5
        return f"{name} {'ok' if ok else 'no'} The answer is ({right if ok else wrong(right)})"

    return ScriptedBackend(name, fn=reply)


def test_the_reported_dev_score_is_a_fresh_re_evaluation_of_the_chosen_system(tiny_task, cache, tmp_path, monkeypatch):
    from moco.context import RunContext

    texts: dict[str, list[str]] = {}
    orig = RunContext.generate

    async def generate(self, calls, tag=""):
        out = await orig(self, calls, tag)
        texts.setdefault(tag, []).extend(r.text for r in out)
        return out

    monkeypatch.setattr(RunContext, "generate", generate)
    bk = {f"scripted:{n}": lucky(n) for n in "abc"}
    res = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc",
                                         {"population": 4, "max_iterations": 3, "jfk_assignments": 0},
                                         decoding={"max_new_tokens": 32, "temperature": 0.7}),
                         tmp_path / "run", cache=cache, backends=bk)
    sw = res.metrics["swarm"]
    sel = res.metrics["dev_selection"]["heterogeneous_swarms"]
    every = [s for t in role_steps(sw) for s in t["scores"]]
    assert sw["search_dev_score"] == max(every) == sel["chosen_dev_score"]  # the maximum of 12 noisy evaluations
    last = max(t for t in texts if t.startswith("re-evaluate level"))
    fresh = texts[last]  # the last level holds only the end node: the 4 dev answers of the re-evaluation
    assert len(fresh) == 4 and sw["dev_score"] == sum(" ok " in t for t in fresh) / 4 == sel["reevaluated"]["dev_score"]
    assert sw["dev_score"] < sw["search_dev_score"]  # this seed: the winner's search score was luck
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    searched = {c["key"] for c in calls if c["tag"].startswith("role")}
    assert not searched & {c["key"] for c in calls if c["tag"].startswith("re-evaluate")}  # new samples


def test_dev_repeats_average_samples_per_item(tiny_task, cache, tmp_path, spy):
    bk = {f"scripted:{n}": lucky(n) for n in "abc"}
    res = run_experiment(scripted_config("text_heterogeneous_swarms", tiny_task, "abc",
                                         {"population": 2, "max_iterations": 1, "jfk_assignments": 0},
                                         decoding={"max_new_tokens": 32, "temperature": 0.7, "dev_repeats": 3}),
                         tmp_path / "run", cache=cache, backends=bk)
    sw = res.metrics["swarm"]
    sel = res.metrics["dev_selection"]["heterogeneous_swarms"]
    assert sw["dev_repeats"] == sel["repeats"] == 3 and all(c["items"] == 4 for c in sel["candidates"])
    assert sum(len(m) for t, m in spy if t.startswith("role 1 level")) == 2 * 3 * 4 * 3  # 3 samples per item
    assert sum(len(m) for t, m in spy if t.startswith("re-evaluate")) == 3 * 4 * 3
    assert all(abs(c["dev_score"] * 12 - round(c["dev_score"] * 12)) < 1e-4 for c in sel["candidates"])  # k/12


@pytest.fixture(scope="module")
def lora_experts(tiny_models, tmp_path_factory) -> list[dict]:
    """Two random (untrained, distinct) LoRA adapters of one tiny Llama: the authors' kind of pool."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("hswarm_lora")
    for i in range(2):
        torch.manual_seed(i)
        lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[0]), lora).save_pretrained(out / f"m{i}")
    return [{"model": str(tiny_models[0]), "adapter": str(out / f"m{i}"), "name": f"m{i}"} for i in range(2)]


@pytest.mark.parametrize("pool", ["lora", "full weights"])
def test_weight_step_alternates_with_the_role_step_and_moves_weights_by_jfk(pool, tiny_models, tiny_task, cache,
                                                                             tmp_path, request):
    """Two tiny Llamas of one architecture, or two LoRA adapters of one base: role 1, weight 1, role 2, weight 2.
    The weight-step's particles are the models (merged candidates, starting as the experts); each one's fitness
    is its JFK-score over random assignments of the role-step's best graph; the swarm moves their coefficients
    and the next role-step runs its graphs with the moved models; the chosen system's players answer the test."""
    models = ([{"model": str(p), "name": f"m{i}"} for i, p in enumerate(tiny_models[:2])] if pool == "full weights"
              else request.getfixturevalue("lora_experts"))
    cfg = scripted_config("text_heterogeneous_swarms", tiny_task, [], {"population": 2, "max_iterations": 2,
                          "jfk_assignments": 2, "patience": 5}, models=models,
                          decoding={"max_new_tokens": 3, "temperature": 0.0},
                          task={"name": str(tiny_task), "dev_limit": 1, "test_limit": 1})
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    sw = res.metrics["swarm"]
    assert "warnings" not in res.metrics and isinstance(sw["weight_step"], dict)
    assert sw["order"] == ["role 1", "weight 1", "role 2", "weight 2"]
    r1, w1, r2, w2 = sw["trajectory"]
    assert w1["coefficients"] == [{"m0": 1.0, "m1": 0.0}, {"m0": 0.0, "m1": 1.0}]  # particles start as the experts
    assert r1["models"] == w1["models"] and all(m.startswith("hswarm:") for m in w1["models"])
    assert w2["coefficients"] != w1["coefficients"] and r2["models"] == w2["models"] != w1["models"]  # moved
    for w, r in ((w1, r1), (w2, r2)):  # JFK on that round's best graph; fitness = each particle's JFK-score
        assert w["graph"] == r["graphs"][int(np.argmax(r["scores"]))] and len(w["utilities"]) == 2
        for i, model in enumerate(w["models"]):
            cnt = [row.count(model) for row in w["assignments"]]
            want = sum(c * f for c, f in zip(cnt, w["utilities"])) / sum(cnt) if sum(cnt) else None
            assert w["jfk"][i] == pytest.approx(want)
            assert w["fitness"][i] == pytest.approx(want if want is not None else min(w["utilities"]))
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    assert {c["model"] for c in calls if c["tag"].startswith("role 2")} <= set(w2["models"])
    assert {c["model"] for c in calls if c["tag"].startswith("weight 1 jfk")} <= set(w1["models"])
    chosen = set(sw["node_models"].values())
    assert {c["model"] for c in calls if c["phase"] == "test"} <= chosen
    assert {c["model"] for c in calls if c["tag"].startswith("re-evaluate")} <= chosen
    assert set(sw["weight_step"]["node_coefficients"]) == {"m0", "m1"}
    assert res.metrics["dev_selection"]["heterogeneous_swarms"]["evaluated"] == sw["candidates"] >= 2
