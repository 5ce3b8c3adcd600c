"""Trained router: dev labels (ties broken by reward, judge or dev order), a LoRA router that learns them and is
the router used at test time."""
from __future__ import annotations

import json

import pytest

from helpers import letter_for, scripted_config
from moco.context import RunContext
from moco.methods.api.trained_router import Params, dev_labels, reward_model
from moco.models.scripted import ScriptedBackend
from moco.routing.outcomes import collect
from moco.runner import plan, run_experiment
from moco.trace import CallRecorder
from test_model_scorers import tiny_reward_model  # noqa: F401  (fixture)
from moco import aio


def _ctx(cfg, backends, cache) -> RunContext:
    # these tests label dev items only: a router base outside the pool spares the scripted models the plan's
    # check that the model to be trained can be trained
    p = plan(cfg.model_copy(update={"params": {**cfg.params, "router_base": "not-trained-here"}}), backends=backends)
    return RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                      decoding=p.config.decoding, roles=p.roles)


def ctx_params(cfg) -> Params:
    return Params.model_validate(cfg.params)


def _right_on(name: str, questions: set[int]) -> ScriptedBackend:
    """Right on the given question numbers, wrong elsewhere."""
    def reply(req) -> str:
        prompt = req.messages[-1][1]
        q = int(prompt.split("Question ")[1].split(":")[0])
        letter = letter_for(prompt)
        if q not in questions:
            letter = "ABCD"[("ABCD".index(letter) + 1) % 4]
        return f"{name} says: The answer is ({letter})"
    return ScriptedBackend(name, fn=reply)


def test_dev_labels_and_tie_breaks(tiny_task, cache):
    # dev = Question 0..3. a right on 0,1; b right on 1,2; both wrong on 3 -> ties on 1 and 3
    backends = {"scripted:a": _right_on("a", {0, 1}), "scripted:b": _right_on("b", {1, 2}),
                "scripted:rm": ScriptedBackend("rm", fn=lambda req: "9" if "b says" in req.messages[-1][1] else "4"),
                "scripted:judge": ScriptedBackend("judge", rules=[(r"Question 1:", "Response 2"), (r"Question 3:", "hmm")])}
    roles = {"reward": {"model": "scripted:rm"}, "judge": {"model": "scripted:judge"}}
    cfg = scripted_config("api_trained_router", tiny_task, "ab", roles=roles)
    ctx = _ctx(cfg, backends, cache)
    dev = aio.run(collect(ctx, ctx.task.dev))
    assert dev.scores == [[1, 1, 0, 0], [0, 1, 1, 0]]
    labels, why = aio.run(dev_labels(ctx, dev, "dev-order"))  # equal means: pool order, a first
    assert labels == [0, 0, 1, 0] and [w["by"] for w in why] == ["score", "dev-order", "score", "dev-order"]
    labels, why = aio.run(dev_labels(ctx, dev, "reward"))  # the reward model prefers b's answers (9 vs 4)
    assert labels == [0, 1, 1, 1] and why[1]["rewards"] == {"a": 4.0, "b": 9.0}
    assert len(backends["scripted:rm"].calls) == 4  # only the tied items' answers were rated
    assert backends["scripted:rm"].calls[0].messages[-1] == ("assistant", dev.answers[0][1].text)  # (question, answer)
    labels, why = aio.run(dev_labels(ctx, dev, "judge"))  # the judge picks response 2 (of the tied a, b) on item 1
    assert labels == [0, 1, 1, 0] and why[1]["by"] == "judge"
    assert why[3]["by"] == "dev-order" and "unreadable" in why[3]["note"]
    assert "Response 1:\na says" in backends["scripted:judge"].calls[0].prompt
    assert aio.run(dev_labels(ctx, dev, "auto"))[1][1]["by"] == "reward"  # auto: the reward role when bound


def test_reward_tie_break_uses_the_sequence_classifier(tiny_task, tiny_reward_model, cache):  # noqa: F811 (fixture)
    """tie_break reward loads the `reward` role as a sequence-classification reward model (the reference's
    Skywork) and labels each tied item with the answer it rewards most."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    backends = {"scripted:a": _right_on("a", {0, 1}), "scripted:b": _right_on("b", {1, 2})}
    # the reference's key names the reward model (no role bound)
    cfg = scripted_config("api_trained_router", tiny_task, "ab", {"reward_model_name": str(tiny_reward_model)})
    ctx = _ctx(cfg, backends, cache)
    dev = aio.run(collect(ctx, ctx.task.dev))
    rm_handle = reward_model(ctx, ctx_params(cfg))
    assert rm_handle.name == "reward-model" and ctx.role("reward") is None
    labels, why = aio.run(dev_labels(ctx, dev, "auto", reward=rm_handle))
    tok = AutoTokenizer.from_pretrained(tiny_reward_model)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()

    def reward(i: int, m: int) -> float:
        text = tok.apply_chat_template([{"role": "user", "content": dev.examples[i].input},
                                        {"role": "assistant", "content": dev.answers[m][i].text}], tokenize=False)
        with torch.no_grad():
            return rm(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()

    for i in (1, 3):  # the tied items
        want = {"a": reward(i, 0), "b": reward(i, 1)}
        assert why[i]["by"] == "reward" and why[i]["rewards"] == pytest.approx(want, abs=1e-4)
        assert labels[i] == (0 if want["a"] >= want["b"] else 1)
    assert labels[0] == 0 and labels[2] == 1 and why[0]["by"] == why[2]["by"] == "score"


def test_tie_break_role_missing_is_a_config_error(tiny_task, cache):
    from moco.errors import ConfigError

    backends = {"scripted:a": _right_on("a", {0}), "scripted:b": _right_on("b", {0})}
    ctx = _ctx(scripted_config("api_trained_router", tiny_task, "ab"), backends, cache)
    with pytest.raises(ConfigError, match="needs a model bound to the role 'judge'"):
        aio.run(dev_labels(ctx, aio.run(collect(ctx, ctx.task.dev)), "judge"))


def test_router_is_trained_and_used_at_test(tiny_models, tiny_task, cache, tmp_path, one_thread):
    # a is right on dev questions 0 and 2, b on 1 and 3: the labels differ per item
    backends = {"scripted:a": _right_on("a", {0, 2, 4, 6, 8, 10}), "scripted:b": _right_on("b", {1, 3, 5, 7, 9, 11})}
    params = {"learning_rate": 1e-2, "max_steps": 60, "batch_size": 4, "grad_accum": 1, "lora_r": 8,
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
              "model_descriptions": ["guesses", "thinks"],
              "router_max_new_tokens": 7}  # tiny models never stop: "Model 2" is 7 characters
    cfg = scripted_config("trained_router", tiny_task, "ab", params, roles={"router": {"model": str(tiny_models[0])}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    m = res.metrics
    sft = [json.loads(x) for x in (res.run_dir / "artifacts" / "router_sft_data.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in sft] == ["Model 1", "Model 2", "Model 1", "Model 2"]
    assert [r["by"] for r in sft] == ["score"] * 4 and m["dev_label_share"] == {"a": 0.5, "b": 0.5}
    assert "Model 1: guesses" in sft[0]["prompt"] and "Question 0:" in sft[0]["prompt"]
    assert m["training"]["steps"] == 60 and m["training"]["last_loss"] < m["training"]["first_loss"] * 0.5
    assert not m["training"]["reused"]
    assert m["router"] == "trained-router" and "+lora:" in m["router_fingerprint"]
    # one of the 4 dev items (seeded) is held out of training; the router's agreement is reported on it apart
    held = [r for r in sft if r["split"] == "heldout"]
    assert len(held) == 1 and m["training"]["heldout"] == [held[0]["id"]] and m["training"]["examples"] == 3
    assert m["training"]["device"] == "cpu" and m["training"]["dtype"] == "float32"
    assert m["router_heldout_agreement"] in (0.0, 1.0)
    # the trained router names each training item's own best model (it learnt the per-item labels)
    assert m["router_train_agreement"] == 1.0
    # at test, each query goes where the trained router's output says, and only that model answers it
    outs = [r["trace"]["router_output"] for r in res.predictions]
    assert m["router_parse_failures"] == sum(o not in ("Model 1", "Model 2") for o in outs)
    routed = [r["trace"]["routed_to"] for r in res.predictions]
    assert all(r == {"Model 1": "a", "Model 2": "b"}[o] for o, r in zip(outs, routed) if o in ("Model 1", "Model 2"))
    for name in "ab":
        assert len(backends[f"scripted:{name}"].calls) == 4 + routed.count(name)  # dev + its routed test queries
    assert all(r["output"].startswith(f"{t} says") for r, t in zip(res.predictions, routed))
    # the untrained base writes no model number: the trained adapter, not the base, made these choices
    from moco.models.base import GenRequest, SamplingParams
    from moco.models.hf import HFBackend

    base = HFBackend(str(tiny_models[0]), fingerprint="base")
    reqs = [GenRequest((("user", r["prompt"]),), SamplingParams(8, 0.0)) for r in sft]
    assert not any(g.text.startswith("Model ") for g in base.generate(reqs))
    # a re-run into the same run directory reuses the adapter and every router call
    again = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert again.metrics["training"]["reused"] and again.metrics["total"]["generated_tokens"] == 0
    assert [r["output"] for r in again.predictions] == [r["output"] for r in res.predictions]
    # a new run directory trains again (seeded: the same weights, so the same fingerprint and cached router calls)
    fresh = run_experiment(cfg, tmp_path / "run2", cache=cache, backends=backends)
    assert not fresh.metrics["training"]["reused"] and fresh.metrics["total"]["generated_tokens"] == 0
    assert fresh.metrics["router_fingerprint"] == m["router_fingerprint"]


def test_heldout_items_are_seeded_and_never_all():
    from moco.methods.api.trained_router import heldout_items

    assert heldout_items(4, 0.25, 0) == heldout_items(4, 0.25, 0) and len(heldout_items(4, 0.25, 0)) == 1
    assert len(heldout_items(10, 0.2, 1)) == 2 and heldout_items(10, 0.2, 1) != heldout_items(10, 0.2, 2)
    assert heldout_items(2, 0.9, 0) != {0, 1} and heldout_items(1, 0.5, 0) == set() == heldout_items(8, 0.0, 0)
