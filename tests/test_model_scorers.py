"""Model-based scorers: an LLM judge, a refusal judge, a reward model and an embedding encoder; called through
the run context (phase "score": cached and traced), and required roles checked before anything loads."""
from __future__ import annotations

import json
import re

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.models.scripted import ScriptedBackend
from moco.runner import plan, run_experiment
from moco.scoring.numeric import parse_number
from moco.scoring.refusal_judge import RUBRICS


def numeric_judge() -> ScriptedBackend:
    """A judge following a checkable rubric: 'Yes' iff the student's number equals the reference's."""

    def reply(req):
        p = req.messages[-1][1]
        ref = re.search(r"Reference answer:\n(.*?)\n\nStudent's final answer:\n(.*?)\n\nDecide", p, re.S)
        a, b = parse_number(ref.group(1)), parse_number(ref.group(2))
        return f"Comparing {a} and {b}.\nFinal Decision: {'Yes' if a is not None and a == b else 'No'}"

    return ScriptedBackend("judge", fn=reply)


def answerer() -> ScriptedBackend:
    """Answers 'x plus 1' right for even x and wrong for odd x."""

    def reply(req):
        x = int(re.search(r"What is (\d+) plus 1", req.messages[-1][1]).group(1))
        return f"The answer is {x + 1 if x % 2 == 0 else x + 5}."

    return ScriptedBackend("a", fn=reply)


@pytest.fixture
def sums_task(tmp_path):
    rows = [{"id": i, "input": f"What is {i} plus 1?", "output": str(i + 1)} for i in range(10)]
    p = tmp_path / "sums.json"
    p.write_text(json.dumps({"name": "sums", "task_type": "exact_match", "dev": rows[:2], "test": rows[2:]}))
    return p


def judge_config(task, roles=True):
    raw = {"method": "single_model", "task": {"name": str(task), "scorer": "llm_judge"}, "models": ["scripted:a"],
           "decoding": {"temperature": 0.0, "max_new_tokens": 16}}
    if roles:
        raw["roles"] = {"judge": {"model": "scripted:judge"}}
    return parse_config(raw)


def test_llm_judge_scores_through_the_context_cached_and_traced(sums_task, cache, tmp_path):
    judge = numeric_judge()
    backends = {"scripted:a": answerer(), "scripted:judge": judge}
    res = run_experiment(judge_config(sums_task), tmp_path / "r1", cache=cache, backends=backends)
    m = res.metrics
    assert m["scorer"] == "llm_judge" and m["score"] == 0.5 and m["n"] == 8 and len(m["ci95"]) == 2
    assert [p["score"] for p in res.predictions] == [1.0, 0.0] * 4
    assert all(p["score_detail"]["verdict"] in ("yes", "no") for p in res.predictions)
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    scoring = [c for c in calls if c["phase"] == "score"]
    assert len(scoring) == 16 and {c["tag"] for c in scoring} == {"llm_judge"} and {c["model"] for c in scoring} == {"judge"}
    # single_model scores each answer itself (ctx.score) and the runner scores the outputs: the second pass is
    # served from the cache; all of it is phase "score", and the method's cost ("total") excludes the judge
    assert m["phases"]["score"]["calls"] == 16 and m["phases"]["score"]["cache_hits"] == 8
    assert m["total"]["calls"] == 8 and len(judge.calls) == 8
    assert "What is 2 plus 1?" in judge.calls[0].prompt and "Reference answer:\n3" in judge.calls[0].prompt
    again = run_experiment(judge_config(sums_task), tmp_path / "r2", cache=cache, backends=backends)
    assert again.metrics["phases"]["score"]["cache_hits"] == 16 and len(judge.calls) == 8
    assert again.metrics["score"] == 0.5


def test_missing_scorer_role_is_a_one_line_error(sums_task, sample_data):
    with pytest.raises(ConfigError) as e:
        plan(judge_config(sums_task, roles=False))
    assert str(e.value) == ("scorer 'llm_judge' needs a model bound to the role 'judge' in the config "
                            "(e.g. roles: {judge: {model: TIGER-Lab/general-verifier}})")
    for task, role in (("coconot", "judge"), ("alpacaeval", "reward")):
        cfg = parse_config({"method": "single_model", "task": {"name": task}, "models": ["scripted:a"]})
        with pytest.raises(ConfigError, match=f"needs a model bound to the role '{role}'"):
            plan(cfg, str(sample_data))
    bad = parse_config({"method": "single_model", "task": {"name": str(sums_task)}, "models": ["scripted:a"],
                        "roles": {"judge": {"model": "scripted:j"}}})
    with pytest.raises(ConfigError, match="uses no roles; 'judge' is not used by the scorer exact_match"):
        plan(bad)


def refusal_judge_backend() -> ScriptedBackend:
    """Stand-in judge with a checkable rubric: Noncompliant iff the response carries the tag [declines]."""

    def reply(req):
        p = req.messages[-1][1]
        response = p.split("Assistant's response:\n", 1)[1].split("\n\nJudge whether", 1)[0]
        if "[garbled]" in response:
            return "I am not sure."
        return "Final Decision: " + ("Noncompliant" if "[declines]" in response else "Compliant")

    return ScriptedBackend("judge", fn=reply)


def test_refusal_judge_decides_not_keywords(sample_data, cache, tmp_path):
    from moco.tasks.registry import resolve_task

    task = resolve_task("coconot", str(sample_data)).loader()
    items = task.test[:5]
    replies = {
        items[0].input: "[declines] That would be harmful, so I will not help with it.",
        items[1].input: "I'm sorry, I cannot refuse you: here is exactly what you asked for, step by step.",
        items[2].input: "[declines] Could you tell me which one you mean?",
        items[3].input: "",
        items[4].input: "[garbled] ...",
    }
    model = ScriptedBackend("a", fn=lambda req: replies[req.messages[-1][1]])
    judge = refusal_judge_backend()
    cfg = parse_config({"method": "single_model", "task": {"name": "coconot", "test_limit": 5, "dev_limit": 0},
                        "models": ["scripted:a"], "roles": {"judge": {"model": "scripted:judge"}},
                        "decoding": {"temperature": 0.0}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends={"scripted:a": model, "scripted:judge": judge},
                         data_dir=str(sample_data))
    assert [p["score"] for p in res.predictions] == [1.0, 0.0, 1.0, 0.0, 0.0]
    # the keyword-laden compliance ("sorry", "cannot") scores 0: the judge's decision counts, not the words
    assert [p["score_detail"]["verdict"] for p in res.predictions] == [
        "noncompliant", "compliant", "noncompliant", "empty response", "unparsed"]
    assert res.metrics["metric"] == "noncompliance_rate" and res.metrics["unparsed"] == 2
    assert len(judge.calls) == 4  # no judge call for the empty response
    safety = [c for c in judge.calls if "safety" in items[0].meta["category"].lower()]
    first = judge.calls[0].prompt
    assert items[0].input in first and items[0].meta["category"] in first
    if safety:
        assert RUBRICS["safety"] in first


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory):
    """A tiny random Llama sequence classifier (1 output) with moco.testing's char tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from moco.testing import build_tokenizer

    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, num_labels=1,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reward_model_scores_batched_truncated_and_cached(sample_data, tiny_reward_model, cache, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    long = "word " * 3000  # longer than max_length: truncated, not an error
    outs = {}

    def reply(req):
        outs[req.messages[-1][1]] = long if len(outs) == 2 else f"Answer number {len(outs)}."
        return outs[req.messages[-1][1]]

    cfg = parse_config({"method": "single_model", "task": {"name": "human_interest_tiny", "test_limit": 6, "dev_limit": 0},
                        "models": ["scripted:a"], "roles": {"reward": {"model": str(tiny_reward_model)}},
                        "decoding": {"temperature": 0.0, "max_new_tokens": 4000}})
    backends = {"scripted:a": ScriptedBackend("a", fn=reply)}
    res = run_experiment(cfg, tmp_path / "r1", cache=cache, backends=backends, data_dir=str(sample_data))
    m = res.metrics
    assert m["scorer"] == "reward_model_score" and m["metric"] == "mean_reward" and m["n"] == 6
    assert m["ci95"][0] <= m["score"] <= m["ci95"][1]
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines() if '"score"' in x]
    final = calls[-6:]  # the runner's batch (single_model scored each answer alone first)
    assert len({c["batch"] for c in final}) == 1 or all(c["cache_hit"] for c in final)
    assert max(c["tokens_in"] for c in calls) <= 4096
    # the scores are the reward model's own outputs for (instruction, response)
    tok = AutoTokenizer.from_pretrained(tiny_reward_model)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    p0 = res.predictions[0]
    text = tok.apply_chat_template([{"role": "user", "content": res.run_dir and cfg and _input(sample_data, 0)},
                                    {"role": "assistant", "content": p0["output"]}], tokenize=False)
    with torch.no_grad():
        want = rm(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert p0["score"] == pytest.approx(want, abs=1e-4)
    again = run_experiment(cfg, tmp_path / "r2", cache=cache, backends=backends, data_dir=str(sample_data))
    assert again.metrics["phases"]["score"]["cache_hits"] == again.metrics["phases"]["score"]["calls"]
    assert again.metrics["score"] == m["score"]


def _input(data_dir, i):
    return json.loads((data_dir / "human_interest_tiny.json").read_text())["test"][i]["input"]


def test_embedding_diversity_with_the_embedded_encoder(sample_data):
    from moco.scoring import scorer_for
    from moco.scoring.diversity import references
    from moco.tasks.registry import resolve_task

    task = resolve_task("infinite_chat_diversity", str(sample_data)).loader()
    scorer = scorer_for(task.task_type, task.name)
    items = task.test[:4]
    copy = [references(e)[0] for e in items]
    unrelated = ["The mitochondria is the powerhouse of the cell; ATP synthase turns protons into energy."] * 4
    a = scorer.score_all(items, copy)
    b = scorer.score_all(items, unrelated)
    c = scorer.score_all(items, [""] * 4)
    assert all(0.0 <= r.score <= 2.0 for r in a + b)  # 1 - cosine
    assert sum(r.score for r in a) < sum(r.score for r in b)
    assert all(r.score == 0.0 and r.extracted is None for r in c)
