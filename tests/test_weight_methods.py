"""Weight-level methods on a tiny specialist zoo (LoRA adapters of a tiny Llama built by `build_zoo`).

Tiny random models score 0 on any dev set, so tests that check an algorithm's decisions replace the dev
fitness by a known function of the candidate's weights (the candidates are still generated through
ctx.generate, so the plumbing and cost accounting run for real). The saved model is compared with the merge
computed independently from the adapter files, and the test answers with the saved folder loaded afresh.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moco.config import parse_config
from moco.errors import ConfigError
from moco.merging import LoraAdapter
from moco.merging.search import DevSearch
from moco.methods.weight.model_swarms import start_velocities
from moco.models.base import GenRequest, SamplingParams
from moco.models.hf import HFBackend
from moco.runner import plan, run_experiment
from moco.search import ParticleSwarm, SwarmSettings

KEY = "model.layers.0.self_attn.q_proj.weight"
NAMES = ["math", "science", "safety"]


@pytest.fixture(scope="module")
def zoo(tiny_models, tmp_path_factory, sample_data):
    from moco.zoo import ZooSettings, build_zoo, with_steps

    out = tmp_path_factory.mktemp("zoo")
    s = with_steps(ZooSettings(base=str(tiny_models[0]), specialists=tuple(NAMES), max_examples=6),
                   max_steps=3, learning_rate=5e-2, max_length=96)
    built = build_zoo(out, s, str(sample_data))
    return {"base": tiny_models[0], "dirs": [b.path for b in built], "out": out}


def _cfg(method, zoo, task, params=None, **extra):
    models = [{"model": str(zoo["base"]), "adapter": str(d), "name": n} for d, n in zip(zoo["dirs"], NAMES)]
    raw = {"method": method, "task": {"name": str(task)}, "models": models, "params": params or {},
           "decoding": {"max_new_tokens": 4, "temperature": 0.0}}
    raw.update(extra)
    return parse_config(raw)


def _weights(zoo):
    """base q_proj and each specialist's full q_proj, computed from the adapter files by hand."""
    base = HFBackend(str(zoo["base"]), fingerprint="b").model.state_dict()[KEY]
    full = []
    for d in zoo["dirs"]:
        ad = LoraAdapter.load(d)
        a, b = ad.factors[KEY]
        full.append(base + ad.scaling * (b @ a))
    return base, full


def _fitness(monkeypatch, fn):
    real = DevSearch.score

    async def score(self, recipe, **note):
        d = recipe.digest()
        if d not in self.scores:
            await real(self, recipe, **note)  # generate the dev answers for real (plumbing, cost)
            self.scores[d] = fn(recipe)
            self.log[-1]["dev_score"] = self.scores[d]
        return self.scores[d]

    monkeypatch.setattr(DevSearch, "score", score)


def _ranking(monkeypatch, scores):
    import moco.selection

    async def fixed(ctx):
        return [[s] for s in scores]

    monkeypatch.setattr(moco.selection, "dev_item_scores", fixed)


def _saved(res):
    return HFBackend(str(res.run_dir / "artifacts" / "merged_model"), fingerprint="saved")


def _answers_match_saved_model(res):
    """The test answers are the saved model's greedy answers: the merged model is the one used at test time."""
    b = _saved(res)
    reqs = [GenRequest((("user", r["prompt"]),), SamplingParams(4, 0.0)) for r in res.predictions]
    assert [r.text for r in b.generate(reqs)] == [r["output"] for r in res.predictions]


def test_zoo_outputs_are_usable_model_lists(zoo, tiny_task):
    import json

    import yaml

    meta = json.loads((zoo["out"] / "zoo.json").read_text())
    assert [s["name"] for s in meta["specialists"]] == NAMES
    assert all(s["steps"] == 3 and s["examples"] == 6 for s in meta["specialists"])  # 6 dev rows per file in tests/data
    models = yaml.safe_load((zoo["out"] / "models.yaml").read_text())["models"]
    assert [m["name"] for m in models] == NAMES and all(m["adapter"] and m["description"] for m in models)
    p = plan(parse_config({"method": "weight_model_swarms", "task": str(tiny_task), "models": models}))
    assert any("share the base" in c and "3 LoRA adapter(s)" in c for c in p.checks)
    _, full = _weights(zoo)
    assert not torch.allclose(full[0], full[1])  # the specialists really differ


def test_greedy_soup_keeps_models_while_dev_does_not_drop(zoo, tiny_task, cache, tmp_path, monkeypatch):
    _ranking(monkeypatch, [0.2, 0.9, 0.5])  # order: science, safety, math
    _fitness(monkeypatch, lambda r: 0.95 if "math" not in r.summary() else 0.5)
    res = run_experiment(_cfg("weight_greedy_soup", zoo, tiny_task), tmp_path / "soup", cache=cache)
    steps = res.metrics["soup"]["steps"]
    assert [(s["model"], s["kept"]) for s in steps] == [("science", True), ("safety", True), ("math", False)]
    assert res.metrics["soup"]["ingredients"] == ["science", "safety"]
    assert res.metrics["search"]["candidates"] == 2
    assert res.metrics["dev_selection"]["dev_ranking"]["order"] == ["science", "safety", "math"]
    assert res.metrics["dev_selection"]["soup"]["evaluated"] == 2  # the kept soup among the scored candidates
    base, full = _weights(zoo)
    saved = _saved(res).model.state_dict()[KEY]
    assert torch.allclose(saved, (full[1] + full[2]) / 2, atol=1e-6)
    _answers_match_saved_model(res)
    # a candidate that only ties is kept too (>=)
    _fitness(monkeypatch, lambda r: 0.9)
    tie = run_experiment(_cfg("greedy_soup", zoo, tiny_task), tmp_path / "tie", cache=cache)
    assert tie.metrics["soup"]["ingredients"] == ["science", "safety", "math"]


def _ties_by_hand(base, full, density_mask=None):
    taus = torch.stack([f - base for f in full])
    if density_mask is not None:
        taus = taus * density_mask
    sign = torch.where(taus.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(taus) == sign) & (taus != 0)
    n = agree.sum(0).clamp(min=1)
    return base + (taus * agree).sum(0) / n


def test_dare_ties_uniform_against_hand_computation(zoo, tiny_task, cache, tmp_path):
    base, full = _weights(zoo)
    res = run_experiment(_cfg("weight_dare_ties", zoo, tiny_task, {"base_model": str(zoo["base"]), "density": 1.0}),
                         tmp_path / "d1", cache=cache)
    assert torch.allclose(_saved(res).model.state_dict()[KEY], _ties_by_hand(base, full), atol=1e-6)
    assert res.metrics["search"]["candidates"] == 0  # uniform weights: no dev search
    _answers_match_saved_model(res)
    half = run_experiment(_cfg("dare_ties", zoo, tiny_task, {"base_model": str(zoo["base"]), "density": 0.5}),
                          tmp_path / "d5", cache=cache)
    merged = _saved(half).model.state_dict()[KEY]
    untouched = torch.isclose(merged, base, atol=1e-7).float().mean().item()
    assert abs(untouched - 0.125) < 0.05  # an entry keeps the base only when all three DARE masks drop it
    assert not torch.allclose(merged, _ties_by_hand(base, full), atol=1e-4)
    # survivors are rescaled: agreeing kept entries average τ/0.5
    same_seed = run_experiment(_cfg("dare_ties", zoo, tiny_task, {"base_model": str(zoo["base"]), "density": 0.5}),
                               tmp_path / "d5b", cache=cache)
    assert torch.equal(_saved(same_seed).model.state_dict()[KEY], merged)  # seeded: the same merge again


def test_dare_ties_weight_search_uses_the_swarm(zoo, tiny_task, cache, tmp_path, monkeypatch):
    _fitness(monkeypatch, lambda r: r.weights[0])  # favour the math specialist
    params = {"base_model": str(zoo["base"]), "weights": "search", "population": 3, "max_iterations": 3,
              "density": 0.7}
    res = run_experiment(_cfg("weight_dare_ties", zoo, tiny_task, params), tmp_path / "ds", cache=cache)
    info = res.metrics["dare_ties"]
    assert res.metrics["search"]["candidates"] >= 3 and info["iterations"] >= 1
    w = info["weights"]
    assert abs(sum(w.values()) - 1) < 1e-9 and w["math"] == pytest.approx(info["best_dev"])
    assert w["math"] == max(e["dev_score"] for e in res.metrics["search"]["candidates_log"])
    sel = res.metrics["dev_selection"]["dare_ties"]  # the chosen weights among the evaluated candidates
    assert sel["evaluated"] == res.metrics["search"]["candidates"] and sel["chosen"] in [c["candidate"] for c in sel["candidates"]]


def test_dare_ties_validation(zoo, tiny_task, tmp_path):
    with pytest.raises(ConfigError, match="base_model.*missing required key"):
        plan(_cfg("weight_dare_ties", zoo, tiny_task))
    from moco.errors import ModelError
    from moco.testing import build_tiny_llama

    with pytest.raises(ModelError, match="not found"):
        plan(_cfg("weight_dare_ties", zoo, tiny_task, {"base_model": str(tmp_path / "nope")}))
    wide = build_tiny_llama(tmp_path / "wide", hidden=64)
    with pytest.raises(ConfigError, match="hidden_size"):
        plan(_cfg("weight_dare_ties", zoo, tiny_task, {"base_model": str(wide)}))
    ok = plan(_cfg("weight_dare_ties", zoo, tiny_task, {"base_model": str(zoo["base"]), "mode": "optimized"}))
    assert ok.params.weights == "search"  # the reference's key and value


def test_swarm_in_coefficient_space_is_the_weight_space_swarm():
    rng = np.random.default_rng(0)
    experts = rng.normal(size=(4, 50))
    target = rng.normal(size=50)
    settings = SwarmSettings(seed=3, starting_velocity="zero", restart_velocity="zero", restart_moves=True, patience=20,
                             restart_patience=2)
    coef = ParticleSwarm(np.eye(4), settings)
    coef.velocities = start_velocities(4, "random", 3)
    weight = ParticleSwarm(experts.copy(), settings)
    weight.velocities = coef.velocities @ experts
    for _ in range(12):
        assert np.allclose(coef.positions @ experts, weight.positions)
        assert np.allclose(coef.positions.sum(1), 1.0)  # always an affine combination of the experts
        f = lambda x: -float(np.linalg.norm(x - target))  # noqa: E731
        coef.update([f(c @ experts) for c in coef.positions])
        weight.update([f(x) for x in weight.positions])
    assert coef.restarts == weight.restarts and coef.restarts  # restarts happened, identically
    assert np.allclose(coef.gbest @ experts, weight.gbest)


def test_model_swarms_search_and_final_model(zoo, tiny_task, cache, tmp_path, monkeypatch):
    base, full = _weights(zoo)
    target = 0.5 * full[0] + 0.5 * full[2]
    _fitness(monkeypatch, lambda r: -float((r.tensor(KEY) - target).norm()))
    res = run_experiment(_cfg("weight_model_swarms", zoo, tiny_task, {"max_iterations": 6, "lora_space": "product"}),
                         tmp_path / "sw", cache=cache)
    sw = res.metrics["swarm"]
    assert sw["lora"] is True and sw["space"] == "product"  # base + low-rank deltas, not three full models
    first = sw["iterations"][0]
    assert [list(p.values()) for p in first["positions"]] == np.eye(3).tolist()  # particles start as the experts
    assert sw["global_best_dev"] > max(first["fitness"])  # the swarm found a better point than every expert
    c = sw["global_best"]
    assert sum(c.values()) == pytest.approx(1.0)
    saved = _saved(res).model.state_dict()[KEY]
    assert torch.allclose(saved, sum(c[n] * f for n, f in zip(NAMES, full)), atol=1e-5)
    assert -float((saved - target).norm()) == pytest.approx(sw["global_best_dev"], abs=1e-4)
    log = res.metrics["search"]
    assert len(sw["iterations"]) * 3 >= log["candidates"] >= 3 and log["merges"] >= log["candidates"]
    _answers_match_saved_model(res)


def test_model_swarms_default_searches_the_authors_lora_factor_space(zoo, tiny_task, cache, tmp_path, monkeypatch):
    """By default a particle over LoRA experts is its A and B tensors mixed separately (the authors' space):
    the final model is base + s·(Σ c B)(Σ c A), not the weighted sum of the experts' weights."""
    base, full = _weights(zoo)
    ads = [LoraAdapter.load(d) for d in zoo["dirs"]]
    target = 0.5 * full[0] + 0.5 * full[2]
    _fitness(monkeypatch, lambda r: -float((r.tensor(KEY) - target).norm()))
    cfg = _cfg("weight_model_swarms", zoo, tiny_task, {"max_iterations": 3})
    cfg = cfg.model_copy(update={"decoding": cfg.decoding.model_copy(update={"dev_repeats": 2,
                                                                                "temperature": 0.7})})
    res = run_experiment(cfg, tmp_path / "sw", cache=cache)
    sw = res.metrics["swarm"]
    assert sw["space"] == "factors" and len(sw["iterations"]) == 3
    # every candidate's dev answers: 2 samples per item; the choice is recorded with intervals
    n_cand = res.metrics["search"]["candidates"]
    assert res.metrics["phases"]["dev"]["calls"] == n_cand * 4 * 2
    sel = res.metrics["dev_selection"]["swarm"]
    assert sel["repeats"] == 2 and sel["evaluated"] == n_cand
    assert sel["chosen"] in [c["candidate"] for c in sel["candidates"]] and all(len(c["ci95"]) == 2 if c["ci95"] else c["ci_note"] for c in sel["candidates"])
    c = [sw["global_best"][n] for n in NAMES]
    a = sum(ci * ad.factors[KEY][0] for ci, ad in zip(c, ads))
    b = sum(ci * ad.factors[KEY][1] for ci, ad in zip(c, ads))
    saved = _saved(res).model.state_dict()[KEY]
    assert torch.allclose(saved, base + ads[0].scaling * (b @ a), atol=1e-5)
    assert not torch.allclose(saved, sum(ci * f for ci, f in zip(c, full)), atol=1e-5)  # not the product space
    assert -float((saved - target).norm()) == pytest.approx(sw["global_best_dev"], abs=1e-4)
    # the authors' code defaults, not the MoCo reference's
    p = __import__("moco.methods.weight.model_swarms", fromlist=["Params"]).Params()
    assert (p.inertia, p.cognitive, p.social, p.repel, p.step_length, p.patience, p.restart_patience,
            p.max_iterations) == (0.4, 0.3, 0.3, 0.3, 1.0, 10, 5, 200)


def test_lorahub_composes_factors_and_minimises_the_regularised_loss(zoo, tiny_task, cache, tmp_path, monkeypatch):
    goal = np.array([1.0, -0.5, 0.0])
    _fitness(monkeypatch, lambda r: max(0.0, 1 - float(np.linalg.norm(np.array(r.weights) - goal)) / 3))
    res = run_experiment(_cfg("weight_lorahub", zoo, tiny_task, {"budget": 15, "dev_samples": 2,
                                                                 "objective": "dev_score"}), tmp_path / "lh", cache=cache)
    info = res.metrics["lorahub"]
    losses = [s["loss"] for s in info["steps"]]
    assert len(losses) == 15 and info["loss"] == min(losses) < losses[0]  # w = 0 first; the search improved on it
    s0 = info["steps"][0]
    assert s0["weights"] == {n: 0.0 for n in NAMES} and s0["loss"] == pytest.approx(1 - (1 - np.linalg.norm(goal) / 3))
    assert res.metrics["search"]["dev_examples"] == 2
    w = [info["weights"][n] for n in NAMES]
    base = HFBackend(str(zoo["base"]), fingerprint="b").model.state_dict()[KEY]
    ads = [LoraAdapter.load(d) for d in zoo["dirs"]]
    a = sum(wi * ad.factors[KEY][0] for wi, ad in zip(w, ads))
    b = sum(wi * ad.factors[KEY][1] for wi, ad in zip(w, ads))
    assert torch.allclose(_saved(res).model.state_dict()[KEY], base + ads[0].scaling * (b @ a), atol=1e-5)
    _answers_match_saved_model(res)


def test_lorahub_default_minimises_the_few_shot_cross_entropy(zoo, tiny_task, cache, tmp_path):
    """The paper's objective: the gold answers' cross-entropy under each candidate (token mean, / examples as the
    authors' code) + 0.05·mean|w|, from w = 0; the optimizer's recommendation is the answer."""
    from moco.methods.text.shared import gold_completion
    from moco.tasks.registry import resolve_task

    res = run_experiment(_cfg("weight_lorahub", zoo, tiny_task, {"budget": 6}), tmp_path / "lh", cache=cache)
    info = res.metrics["lorahub"]
    assert info["objective"] == "cross_entropy" and len(info["steps"]) == 6
    dev = resolve_task(str(tiny_task), None).loader().dev
    assert sorted(info["examples"]) == sorted(ex.id for ex in dev)  # 5 asked, the tiny task has 4 dev items
    # step 0 is w = 0: the bare base model's loss, recomputed here by hand
    base = HFBackend(str(zoo["base"]), fingerprint="b")
    golds = [gold_completion(ex) for ex in dev]
    reqs = [GenRequest((("user", ex.prompt),), SamplingParams(4, 0.0)) for ex in dev]
    tokens = sum(len(base.tokenizer(g, add_special_tokens=False)["input_ids"]) for g in golds)
    s0 = info["steps"][0]
    assert s0["weights"] == {n: 0.0 for n in NAMES}
    assert s0["cross_entropy"] == pytest.approx(-sum(base.loglikelihood(reqs, golds)) / tokens / len(dev), rel=1e-4)
    assert len({round(s["cross_entropy"], 6) for s in info["steps"]}) > 1  # the loss depends on the weights
    for st in info["steps"]:
        assert st["loss"] == pytest.approx(st["cross_entropy"] + 0.05 * np.mean(np.abs(list(st["weights"].values()))))
    assert res.metrics["phases"]["dev"]["calls"] >= 6  # every loss evaluation is a recorded model call
    sel = res.metrics["dev_selection"]["lorahub"]  # the recommendation next to the lowest-loss candidates
    assert sel["chosen"].startswith("recommendation") and sel["evaluated"] == 6 and len(sel["candidates"]) == 7
    assert sel["chosen_dev_score"] == pytest.approx(-info["loss"], abs=1e-5)
    by_loss = sorted(info["steps"], key=lambda st: st["loss"])
    assert sel["candidates"][0]["dev_score"] == pytest.approx(-by_loss[0]["loss"], abs=1e-5)
    assert all(r["items"] == len(dev) for r in sel["candidates"])
    _answers_match_saved_model(res)


def test_lorahub_needs_adapters(tiny_models, tiny_task):
    cfg = parse_config({"method": "lorahub", "task": str(tiny_task), "models": [str(m) for m in tiny_models]})
    with pytest.raises(ConfigError, match="every model needs `adapter:`"):
        plan(cfg)


def test_expo_extrapolates_from_the_dev_ranking(zoo, tiny_task, cache, tmp_path, monkeypatch):
    _ranking(monkeypatch, [0.2, 0.9, 0.5])  # top = science, bottom = math
    base, full = _weights(zoo)
    res = run_experiment(_cfg("weight_expo", zoo, tiny_task, {"alpha": 0.3}), tmp_path / "ex", cache=cache)
    assert res.metrics["expo"]["top"] == ["science"] and res.metrics["expo"]["bottom"] == ["math"]
    assert torch.allclose(_saved(res).model.state_dict()[KEY], full[1] + 0.3 * (full[1] - full[0]), atol=1e-5)
    _answers_match_saved_model(res)
    _fitness(monkeypatch, lambda r: -abs(r.alpha - 0.2))
    found = run_experiment(_cfg("expo", zoo, tiny_task, {"alpha_mode": "optimized"}), tmp_path / "ex2", cache=cache)
    assert found.metrics["expo"]["alpha"] == 0.2 and found.metrics["search"]["candidates"] == 5
    sel = found.metrics["dev_selection"]["expo"]  # every α tried, with its dev items' interval
    assert sel["evaluated"] == 5 and len(sel["candidates"]) == 5 and "alpha" not in sel
    assert found.metrics["dev_selection"]["dev_ranking"]["order"] == ["science", "safety", "math"]
    assert torch.allclose(_saved(found).model.state_dict()[KEY], full[1] + 0.2 * (full[1] - full[0]), atol=1e-5)


def test_weight_methods_reject_role_prompts_and_overlapping_k(zoo, tiny_task):
    cfg = _cfg("weight_greedy_soup", zoo, tiny_task)
    cfg.models[0].role_prompt = "You are a poet."
    with pytest.raises(ConfigError, match="role_prompt"):
        plan(cfg)
    with pytest.raises(ConfigError, match="k=2 needs at least 4 models"):
        plan(_cfg("weight_expo", zoo, tiny_task, {"k": 2}))


@pytest.mark.parametrize("example", ["zoo_single_model", "logit_fusion_zoo", "logit_contrastive_zoo",
                                     "weight_greedy_soup_zoo", "weight_dare_ties_zoo", "weight_model_swarms_zoo",
                                     "weight_lorahub_zoo", "weight_expo_zoo"])
def test_zoo_examples_validate_on_a_tiny_zoo(example, zoo, data_dir):
    """The example configs (written for `moco zoo build --out zoo` on SmolLM2) with the tiny zoo swapped in."""
    from pathlib import Path

    from moco.config import read_config_file

    raw = read_config_file(Path(__file__).resolve().parent.parent / "examples" / f"{example}.yaml")
    names = {m["name"] for m in raw["models"]}
    assert names == {"math", "knowledge", "safety"}
    raw["models"] = [{"model": str(zoo["base"]), "adapter": str(d), "name": n} for d, n in zip(zoo["dirs"], NAMES)]
    if raw.get("params", {}).get("base_model"):
        raw["params"]["base_model"] = str(zoo["base"])
    p = plan(parse_config(raw), str(data_dir))
    assert p.task.name == "arc_challenge" and len(p.task.test) == 40
