"""Multiagent finetuning on three tiny Llamas: the debate, the consensus, the per-agent generation/critic
datasets (DC-/DC+), LoRA SFT that changes the weights, the continued adapter of iteration 2, and the trained
agents answering at test time. Answers are steered (tests/steered.py): agent a is right, b is wrong first and
then adopts the first other answer it sees, c is always wrong and never moves."""
from __future__ import annotations

import json
import re

import pytest

from helpers import letter_for
from moco.config import parse_config
from moco.methods.text.multiagent_finetuning import CRITIC_MARK
from moco.runner import run_experiment
from moco.testing import build_tiny_llama
from moco.training.adapters import adapter_delta
from steered import assert_phase_costs, forget, install, real_part, regenerate, user_text  # noqa: F401
from moco import aio

pytestmark = pytest.mark.usefixtures("one_thread")

NEXT = {"A": "B", "B": "C", "C": "D", "D": "A"}


def steer(backend, req, real: str) -> str:
    prompt = user_text(req)
    right = letter_for(prompt)
    who = backend.base_name
    if who == "agent_b" and CRITIC_MARK in prompt:
        letter = re.search(r"The answer is \(([A-D])\)", prompt.split(CRITIC_MARK, 1)[1]).group(1)
    else:
        letter = right if who == "agent_a" else NEXT[right]
    return f"[{real}] The answer is ({letter})"


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    root = tmp_path_factory.mktemp("maft")
    return [build_tiny_llama(root / f"agent_{n}", seed=i) for i, n in enumerate("abc")]


def test_multiagent_finetuning_steps_training_and_test_time_agents(agents, tiny_task, cache, tmp_path, monkeypatch):
    cls = install(monkeypatch, steer)
    raw = {"method": "text_multiagent_finetuning", "task": {"name": str(tiny_task)},
           "models": [{"model": str(p), "name": p.name[-1]} for p in agents],
           "params": {"iterations": 2, "rounds": 2, "w": 0.5, "summary": "concatenate", "sft_max_steps": 3, "sft_learning_rate": 1e-2,
                      "sft_batch_size": 4, "sft_grad_accum": 1, "lora_r": 4},
           "decoding": {"max_new_tokens": 6, "temperature": 0.0}}
    try:
        res = run_experiment(parse_config(raw), tmp_path / "run", cache=cache)
        m = res.metrics
        it1, it2 = m["multiagent_finetuning"]
        dev_uids = [f"dev:{i}" for i in range(4)]
        gold = {f"dev:{i}": "ABCD"[i % 4] for i in range(4)}
        assert it1["debaters"] == [["a", "b", "c"], ["a", "b", "c"]]
        assert it1["consensus"] == gold  # a and b (who adopted a's answer) outvote c
        a, b, c = (it1["agents"][k] for k in "abc")
        assert a["gen"] == dev_uids and a["dc_plus"] == dev_uids and a["dc_minus"] == []
        assert b["gen"] == [] and b["dc_minus"] == dev_uids and b["dc_plus"] == []
        assert len(a["critic"]) == 2 and len(b["critic"]) == 2  # max(1, 4*w) drawn from the non-empty set
        assert c == {"gen": [], "dc_minus": [], "dc_plus": [], "critic": [], "gen_model": "c (kept: no data)",
                     "critic_model": "c (kept: no data)"}
        assert b["gen_model"] == "b (kept: no data)" and b["critic_model"] == "b/critic@1"
        # the critic data is the prompt b saw at inference (others' answers) and b's own corrected answer
        art = res.run_dir / "artifacts" / "multiagent_finetuning"
        rows = [json.loads(x) for x in (art / "iteration_1" / "critic_data_agent_1.jsonl").read_text().splitlines()]
        b_base = next(x for x in cls.instances if x.base_name == "agent_b" and x.adapter is None)
        critic_requests = [q.messages for q, _ in b_base.seen if CRITIC_MARK in user_text(q)]
        for row in rows:
            prompt = row["messages"][-1][1]
            assert CRITIC_MARK in prompt and row["completion"].endswith(f"({gold[row['uid']]})")
            assert prompt.count("] The answer is (") == 3  # its own previous answer and a's and c's
            assert tuple(tuple(m) for m in row["messages"]) in critic_requests  # trained on what it saw
        # iteration 2 debates with the trained models and continues their adapters
        assert it2["debaters"] == [["a/gen@1", "b", "c"], ["a/critic@1", "b/critic@1", "c"]]
        runs = {r["label"]: r for r in m["training"]["adapters"]}
        assert set(runs) == {"a/gen@1", "a/critic@1", "b/critic@1", "a/gen@2", "a/critic@2", "b/critic@2"}
        assert runs["a/gen@2"]["continued_from"] == runs["a/gen@1"]["adapter"]
        for r in runs.values():
            assert adapter_delta(r["adapter"]) > 0 and r["steps"] == 3
        assert abs(adapter_delta(runs["a/gen@2"]["adapter"]) - adapter_delta(runs["a/gen@1"]["adapter"])) > 1e-6
        # test time: the fine-tuned agents debate and vote
        tr = res.predictions[0]["trace"]
        assert [tr["rounds"][0][k]["model"] for k in "abc"] == ["a/gen@2", "b", "c"]
        assert [tr["rounds"][1][k]["model"] for k in "abc"] == ["a/critic@2", "b/critic@2", "c"]
        assert tr["rounds"][1]["b"]["saw"] == ["a/gen@2", "c"]
        assert m["score"] == 1.0
        assert_phase_costs(m)
        test_models = {json.loads(x)["model"] for x in (res.run_dir / "calls.jsonl").read_text().splitlines()
                       if json.loads(x)["phase"] == "test"}
        assert test_models == {"a/gen@2", "b", "c", "a/critic@2", "b/critic@2"}
        # the bracketed text of a test answer is what the trained adapter writes, not what the base writes
        trained = next(x for x in cls.instances if x.adapter == runs["a/gen@2"]["adapter"])
        req, real = next((q, t) for q, t in trained.seen if "Question 4:" in user_text(q))
        assert real == real_part(tr["rounds"][0]["a"]["output"])
        assert regenerate(trained.source, trained.adapter, req) == real
        assert regenerate(trained.source, None, req) != real
        # resuming the same run reuses every adapter and every answer
        again = run_experiment(parse_config(raw), tmp_path / "run", cache=cache)
        assert again.metrics["training"]["reused"] == 6 and again.metrics["score"] == 1.0
        assert again.metrics["phases"]["dev"]["cache_hits"] == again.metrics["phases"]["dev"]["calls"]
    finally:
        forget(cls)


def test_dataset_split_and_mix():
    """DC- holds agents corrected to the consensus, DC+ those right from the start; w mixes them."""
    import random

    from moco.methods.text.multiagent_finetuning import Debate, build_datasets
    from moco.scoring.multiple_choice import MultipleChoiceScorer
    from moco.tasks.base import Example

    exs = [Example(f"q{j}", j, "dev", f"Q{j}", f"Q{j}", "A", {k: k for k in "ABCD"}) for j in range(6)]
    # agent 0 right throughout; agent 1 wrong first then right; agent 2 wrong throughout
    texts = [[[f"The answer is ({x})" for x in "ABB"], [f"The answer is ({x})" for x in "AAB"]] for _ in exs]
    prompts = [[[[("user", f"r{r}a{i}")] for i in range(3)] for r in range(2)] for _ in exs]
    d = Debate(texts, prompts, [], [["g0", "g1", "g2"], ["c0", "c1", "c2"]],
               votes=[["A", "A", "B"]] * 6, consensus=["A"] * 6)

    class Ctx:
        scorer = MultipleChoiceScorer()

    data = build_datasets(Ctx(), d, exs, 3, 0.25, random.Random(0))
    assert [len(x["gen"]) for x in data] == [6, 0, 0]
    assert [(len(x["dc_minus"]), len(x["dc_plus"])) for x in data] == [(0, 6), (6, 0), (0, 0)]
    # max(1, floor(6 * 0.25)) = 1 from DC-, max(1, floor(6 * 0.75)) = 4 from DC+
    assert [len(x["critic"]) for x in data] == [4, 1, 0]
    assert data[1]["critic"][0][0] == [("user", "r1a1")] and data[0]["gen"][0][0] == [("user", "r0a0")]


def _scripted_ctx(tiny_task, cache, names):
    """A run context over scripted agents (the debate and its tie-break need no training)."""
    from text_agents import agent, backends, scripted_context

    def summary(p):
        if "Summarize the different answers" in p:
            return "SUMMARY: the others say " + ",".join(re.findall(r"\(([A-D])\)", p))
        return None
    bk = backends({n: agent(n, correct=(n == "x"), extra=summary) for n in names})
    return scripted_context(tiny_task, cache, bk, names), bk


@pytest.mark.parametrize("mode", ["dev-based", "lexicographic", "random"])
def test_consensus_ties_break_by_dev_score_not_by_letter(tiny_task, cache, mode):
    """Two agents that never move: x always right, y always wrong, so every item is a 1-1 tie. The paper-faithful
    default takes the answer of the agent with the better dev score (x: 1.0, y: 0.0) and the consensus is the
    gold letter everywhere; the reference's lexicographic rule takes "A" whenever A is tied (item 3, gold D,
    y says A); a seeded random draw is reproducible."""
    from moco.methods.text.multiagent_finetuning import TieBreak, debate

    ctx, _ = _scripted_ctx(tiny_task, cache, ["x", "y"])
    test = list(ctx.task.test)
    tie = TieBreak(ctx, mode)
    d = aio.run(debate(ctx, ctx.models, ctx.models, test, 2, tag="t", tie=tie))
    gold = [ex.answer for ex in test]
    assert all(sorted(t) == sorted([g, "ABCD"[("ABCD".index(g) + 1) % 4]]) for t, g in zip(d.tied, gold))
    if mode == "dev-based":
        assert tie.dev_scores == {"x": 1.0, "y": 0.0}  # computed once, at the first tie
        sel = ctx.metrics["dev_selection"]["tie_break"]  # recorded with every agent's dev interval
        assert sel["order"] == ["x", "y"] and sel["margin"] == 1.0
        assert d.consensus == gold
    elif mode == "lexicographic":
        assert tie.dev_scores is None
        assert d.consensus == [min(t) for t in d.tied] and d.consensus[3] == "A" != gold[3]
    else:
        again = aio.run(debate(ctx, ctx.models, ctx.models, test, 2, tag="t", tie=TieBreak(ctx, mode)))
        assert d.consensus == again.consensus and tie.dev_scores is None
        assert all(c in t for c, t in zip(d.consensus, d.tied))
        assert d.consensus != gold and d.consensus != [min(t) for t in d.tied]  # seeded, neither rule above


def test_critic_sees_an_llm_summary_of_the_others(tiny_task, cache):
    """summary=llm (the paper's): before each critic round every agent's summarizer (here the `summarizer` role
    model s) reads the other agents' previous answers only, and the critic's prompt holds that summary instead
    of the raw answers; without a role each agent's own pool model summarizes."""
    from moco.methods.text.multiagent_finetuning import CRITIC_MARK, SUMMARY_MARK, TieBreak, debate

    ctx, bk = _scripted_ctx(tiny_task, cache, ["x", "y", "z", "s"])
    test, agents, s = list(ctx.task.test)[:2], ctx.models[:3], ctx.models[3]
    d = aio.run(debate(ctx, agents, agents, test, 2, tag="t", tie=TieBreak(ctx, "dev-based"), summarizers=[s] * 3))
    asked = [c.messages[-1][1] for c in bk["scripted:s"].calls]
    assert len(asked) == 6  # 3 agents x 2 items, one batched call
    for j, ex in enumerate(test):
        for i, name in enumerate("xyz"):
            summ = d.summaries[j][1][i]
            assert summ["by"] == "s" and summ["of"] == [o for o in "xyz" if o != name]
            shown = next(a for a in asked if a.startswith(f"Question:\n{ex.prompt}") and f"{name}:r0" not in a)
            assert all(f"{o}:r0" in shown for o in summ["of"])  # the summarizer saw the others' answers only
            critic = d.prompts[j][1][i][-1][1]
            assert SUMMARY_MARK in critic and summ["text"] in critic and CRITIC_MARK not in critic
            assert f"{name}:r0" in critic and not any(f"{o}:r0" in critic for o in summ["of"])
    assert d.summaries[0][0] == [None] * 3  # round 0 answers alone
    # no role: each agent's own pool model writes its summary (what run() passes)
    d2 = aio.run(debate(ctx, agents, agents, test, 2, tag="t2", summarizers=list(agents)))
    assert [x["by"] for x in d2.summaries[0][1]] == ["x", "y", "z"]
