"""LLM-Blender: who the ranker compared (both orders), how verdicts parse, what the fuser saw, and that the
dev-trained ranker/fuser adapters are trained, used at test time, and reused on resume."""
from __future__ import annotations

import json
import re

import pytest

from helpers import letter_for, scripted_config
from moco.methods.text.llm_blender import parse_preference, rank
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from text_agents import agent
from moco import aio


def judge(style: str) -> ScriptedBackend:
    """'fair': prefers the candidate with the right letter, replying 'Candidate X' (the reference parsed every
    such reply as A); 'biased': always answers A."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        if prompt.startswith("Combine the candidate answers"):  # used as the fuser too
            return f"judge-{style} fused: The answer is ({letter_for(prompt)})"
        if style == "biased":
            return "A"
        right = f"({letter_for(prompt)})"
        a = re.search(r"Candidate A:\n(.*?)\n\nCandidate B:", prompt, re.S).group(1)
        return "Candidate A is better." if right in a else "The better one is Candidate B."

    return ScriptedBackend(f"judge-{style}", fn=reply)


def fuser() -> ScriptedBackend:
    def reply(req) -> str:
        prompt = req.messages[-1][1]
        shown = re.findall(r"Candidate \d+:\n(\w+):r0 The answer is \((\w)\)", prompt)
        return f"fused[{','.join(a for a, _ in shown)}] The answer is ({shown[0][1]})"
    return ScriptedBackend("fuser", fn=reply)


def _cfg(tiny_task, style, params=None):
    return scripted_config("text_llm_blender", tiny_task, "abc", {"top_k": 2, **(params or {})},
                           roles={"ranker": {"model": f"scripted:judge-{style}"}, "fuser": {"model": "scripted:fuser"}})


def _backends(style):
    return {"scripted:a": agent("a", False), "scripted:b": agent("b", True), "scripted:c": agent("c", False),
            f"scripted:judge-{style}": judge(style), "scripted:fuser": fuser()}


def test_ranker_compares_every_pair_in_both_orders_and_fuser_gets_top_k(tiny_task, cache, tmp_path):
    bk = _backends("fair")
    res = run_experiment(_cfg(tiny_task, "fair"), tmp_path / "run", cache=cache, backends=bk)
    asked = bk["scripted:judge-fair"].calls
    assert len(asked) == 8 * 6  # 3 candidates: 3 pairs x 2 orders per question
    for j in range(8):
        order = {tuple(re.findall(r"Candidate [AB]:\n(\w):r0", c.prompt)) for c in asked if f"Question {j + 4}:" in c.prompt}
        assert order == {(x, y) for x in "abc" for y in "abc" if x != y}
    tr = res.predictions[0]["trace"]
    assert len(tr["comparisons"]) == 6 and all(c["verdict"] is not None for c in tr["comparisons"])
    # "The better one is Candidate B" parses as B (the reference read the 'A' of 'Candidate' first)
    assert {(c["A"], c["B"]): c["winner"] for c in tr["comparisons"]}[("a", "b")] == "b"
    assert tr["wins"]["b"] == 4.0 and tr["fused"][0] == "b" and len(tr["fused"]) == 2
    fused_prompts = bk["scripted:fuser"].calls
    assert len(fused_prompts) == 8 and all(c.reply.startswith("fused[b,") for c in fused_prompts)
    assert res.metrics["score"] == 1.0 and res.metrics["ranker_parsed"] == 1.0
    # b wins both its orders (2 of them as A); between the two wrong ones the judge says B both times
    assert res.metrics["ranker_first_position_wins"] == pytest.approx(2 / 6)
    assert "dev" not in res.metrics["phases"]  # ranker and fuser bound by roles: no dev-best selection
    assert res.metrics["phases"]["test"]["calls"] == 8 * (3 + 6 + 1)


def test_both_orders_cancel_a_position_biased_ranker(tiny_task, cache, tmp_path):
    bk = _backends("biased")
    res = run_experiment(_cfg(tiny_task, "biased"), tmp_path / "run", cache=cache, backends=bk)
    tr = res.predictions[0]["trace"]
    assert tr["wins"] == {"a": 2.0, "b": 2.0, "c": 2.0}  # each candidate was A in 2 of its 4 comparisons
    assert tr["fused"] == ["a", "b"]  # equal wins: pool order
    assert res.metrics["ranker_first_position_wins"] == 1.0


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B", "B"), ("**B**", "B"), ("(A)", "A"), ("B.", "B"), ("B\nbecause it is right", "B"),
    ("Candidate B", "B"), ("Candidate B is better.", "B"), ("Answer: B", "B"), ("The answer is A", "A"),
    ("A better answer is B", "B"), ("B is better than A", "B"), ("I prefer candidate A.", "A"),
    ("A is the better one", "A"), ("Response (B) is more accurate", "B"),
    ("Candidate A is worse than Candidate B", None), ("Both are good.", None), ("", None), ("ABBA", None),
])
def test_parse_preference(reply, verdict):
    assert parse_preference(reply) == verdict


def test_rank_counts_half_points_for_undecided():
    order, wins = rank(3, [(0, 1, "A"), (1, 0, None), (2, 0, "B"), (0, 2, "A")])
    assert wins == [3.5, 0.5, 0.0] and order == [0, 1, 2]


def test_dev_trained_ranker_and_fuser_are_used_at_test_time(tiny_task, tiny_models, cache, tmp_path):
    params = {"top_k": 2, "train_ranker_on_dev": True, "train_fuser_on_dev": True, "sft_max_steps": 2,
              "sft_max_length": 96,
              "ranker_sft_learning_rate": 1e-2, "fuser_sft_learning_rate": 1e-2, "ranker_sft_batch_size": 4,
              "ranker_sft_gradient_accumulation_steps": 1, "fuser_sft_gradient_accumulation_steps": 1, "lora_r": 4,
              "ranker_max_new_tokens": 4, "fuser_max_new_tokens": 6}
    roles = {"ranker": {"model": str(tiny_models[0])}, "fuser": {"model": str(tiny_models[1])}}
    bk = {"scripted:a": agent("a", True), "scripted:b": agent("b", False), "scripted:c": agent("c", False)}
    cfg = scripted_config("text_llm_blender", tiny_task, "abc", params, roles=roles)
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    tr = res.metrics["training"]
    # dev: a is right, b and c wrong -> pairs (a,b),(b,a),(a,c),(c,a) on 4 dev questions; 4 fuser examples
    assert tr["ranker"]["examples"] == 16 and tr["fuser"]["examples"] == 4
    assert tr["ranker"]["steps"] == 2 and not tr["ranker"]["reused"]
    for role in ("ranker", "fuser"):
        adapter = res.run_dir / "artifacts" / f"{role}_lora"
        assert (adapter / "adapter_config.json").exists()
        from safetensors.torch import load_file

        weights = load_file(str(adapter / "adapter_model.safetensors"))
        lora_b = [t for name, t in weights.items() if "lora_B" in name]
        assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b)  # B starts at zero: training moved it
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    assert {c["model"] for c in calls if c["tag"] == "rank pairs"} == {"ranker+ranker-lora"}
    assert {c["model"] for c in calls if c["tag"] == "fuse"} == {"fuser+fuser-lora"}
    assert res.predictions[0]["trace"]["ranker"] == "ranker+ranker-lora"
    # dev: 3 candidates x 4 items, then the trained ranker ranks the dev candidates for the fuser's data
    assert res.metrics["phases"]["dev"]["wall_s"] > 0 and res.metrics["phases"]["dev"]["calls"] == 3 * 4 + 6 * 4
    assert {c["model"] for c in calls if c["tag"].startswith("rank dev pairs")} == {"ranker+ranker-lora"}
    assert tr["fuser"]["candidate_order"] == "ranked by ranker+ranker-lora" and len(tr["fuser"]["orders"]) == 4
    # the same run resumed: the adapters are reused, not retrained
    again = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    assert again.metrics["training"]["ranker"]["reused"] and again.metrics["training"]["fuser"]["reused"]
    assert [p["output"] for p in again.predictions] == [p["output"] for p in res.predictions]


def test_reference_keys_and_a_ranker_given_by_model_id(tiny_task, cache, tmp_path):
    from moco.errors import ConfigError
    from moco.methods.registry import get_method

    p = get_method("text_llm_blender").parse_params({"ranker_model_name": "org/ranker", "ranker_gpu_id": 1,
                                                     "ranker_max_response_length": 16, "fuser_model_name": "a"})
    assert (p.ranker, p.ranker_device, p.ranker_max_new_tokens, p.fuser) == ("org/ranker", "cuda:1", 16, "a")
    bk = _backends("fair")
    # a ranker outside the pool, named by model id (as the reference's ranker_model_name); the fuser a pool model
    cfg = scripted_config("text_llm_blender", tiny_task, "abc", {"ranker": "scripted:judge-fair", "fuser": "b"})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    assert res.predictions[0]["trace"]["ranker"] == "scripted:judge-fair" and len(bk["scripted:judge-fair"].calls) == 48
    assert res.predictions[0]["trace"]["fuser"] == "b"
    with pytest.raises(ConfigError, match="device applies only to a model given by id"):
        run_experiment(scripted_config("text_llm_blender", tiny_task, "abc", {"fuser": "b", "fuser_gpu_id": 0}),
                       tmp_path / "bad", cache=cache, backends=bk)


def test_ranker_and_fuser_default_to_a_non_candidate_and_warn_otherwise(tiny_task, cache, tmp_path):
    """A non-candidate bound to one role also fills the other (no dev-best selection, no warning); with nothing
    bound, the dev-best candidate b ranks and fuses its own answer, and the run says so (metrics, one line each)."""
    bk = _backends("fair")
    cfg = scripted_config("text_llm_blender", tiny_task, "abc", {"top_k": 2},
                          roles={"ranker": {"model": "scripted:judge-fair"}})
    res = run_experiment(cfg, tmp_path / "one", cache=cache, backends=bk)
    assert res.metrics["blender_roles"] == {"ranker": "ranker", "fuser": "ranker", "ranker_is_candidate": None,
                                            "fuser_is_candidate": None}
    assert "warnings" not in res.metrics and "dev" not in res.metrics["phases"]
    res = run_experiment(scripted_config("text_llm_blender", tiny_task, "abc", {"top_k": 2}), tmp_path / "none",
                         cache=cache, backends=_backends("fair"))
    roles = res.metrics["blender_roles"]
    assert roles["ranker"] == roles["fuser"] == roles["ranker_is_candidate"] == roles["fuser_is_candidate"] == "b"
    assert len(res.metrics["warnings"]) == 2
    assert "ranker 'b' is also candidate 'b': it ranks its own answer" in res.metrics["warnings"][0]
    assert "fuser 'b' is also candidate 'b': it fuses its own answer" in res.metrics["warnings"][1]
    sel = res.metrics["dev_selection"]["dev_best"]  # on which dev scores b won the ranker/fuser choice
    assert sel["chosen"] == "b" and [r["candidate"] for r in sel["candidates"]] == ["a", "b", "c"]
    assert sel["chosen_dev_score"] == max(r["dev_score"] for r in sel["candidates"])
    # a role bound to a pool model (here by name) is a candidate too: warned
    res = run_experiment(scripted_config("text_llm_blender", tiny_task, "abc", {"top_k": 2},
                                         roles={"ranker": "a", "fuser": {"model": "scripted:fuser"}}),
                         tmp_path / "pool", cache=cache, backends=_backends("fair"))
    assert res.metrics["blender_roles"]["ranker_is_candidate"] == "a" and len(res.metrics["warnings"]) == 1


def test_fuser_trains_on_candidates_in_the_rankers_order(tiny_task, cache):
    """The fuser's dev examples show the top-k in the order the ranker gives (as at test time), not by gold
    score: a ranker that prefers wrong answers puts a and c first although b is the right one."""
    from moco.methods.text.llm_blender import fuser_training_data
    from text_agents import scripted_context

    def perverse(req) -> str:
        a = re.search(r"Candidate A:\n(.*?)\n\nCandidate B:", req.messages[-1][1], re.S).group(1)
        return "A" if f"({letter_for(req.messages[-1][1])})" not in a else "B"

    bk = {**_backends("fair"), "scripted:perverse": ScriptedBackend("perverse", fn=perverse)}
    ctx = scripted_context(tiny_task, cache, bk, "abc", method="text_llm_blender",
                           roles={"ranker": {"model": "scripted:perverse"}})
    data, shown = aio.run(fuser_training_data(ctx, ctx.role("ranker"), ctx.models[0], 2))
    assert [s["order"] for s in shown] == [["a", "c"]] * 4  # by the ranker's wins: a (3) and c (3) beat b (0)
    for (msgs, target), ex in zip(data, ctx.task.dev):
        prompt = msgs[-1][1]
        assert re.findall(r"Candidate \d+:\n(\w):r0", prompt) == ["a", "c"]
        assert target == f"The answer is ({ex.answer}) option {ex.answer.lower()}{ex.index}."
    assert len(bk["scripted:perverse"].calls) == 4 * 6  # every dev pair, both orders
