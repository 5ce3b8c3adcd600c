"""Blackboard (BBMAS) on scripted agents: every agent is its own model; who chose which action, what each saw on
the board, termination (by the agents or the iteration cap, which still concludes), and the vote."""
from __future__ import annotations

import re

import pytest

from helpers import letter_for, scripted_config
from moco.methods.text.bbmas import ACTIONS, parse_action, parse_vote
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from text_agents import record_generate, wrong


def bb_agent(name: str, plan: list[str], correct: bool, vote_for: str | None = None) -> ScriptedBackend:
    """Chooses plan[k] when it has k entries on the board (the last action repeats); 'garbage' is no action."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        letter = letter_for(prompt)
        letter = letter if correct else wrong(letter)
        if "Conclusions proposed by the agents" in prompt:
            authors = re.findall(r"Conclusion #(\d+):\n(\w) concludes", prompt)
            by = dict((a, k) for k, a in authors)
            k = by.get(vote_for or name) or by.get(name) or "1"  # its favourite if shown, else its own, else #1
            return f"Conclusion #1 looks odd. Therefore, I vote for Conclusion #{k}"
        mine = len(re.findall(rf"Entry #\d+ \({name},", prompt))
        action = plan[min(mine, len(plan) - 1)]
        if "choose your next action" in prompt:
            return "hmm, no idea" if action == "garbage" else f"{name} analyses. {ACTIONS[action][0]}"
        m = re.search(r"(Write the complete final solution|Propose a high-level|Carry out one|Critique the|Verify the)", prompt)
        if m.group(1) == "Write the complete final solution":
            return f"Summary so far. FINAL: {name} concludes The answer is ({letter})"
        return f"{name} did {action}"

    return ScriptedBackend(name, fn=reply)


def _run(agents, params, tiny_task, cache, tmp_path):
    bk = {f"scripted:{a.name}": a for a in agents}
    cfg = scripted_config("text_bbmas", tiny_task, [a.name for a in agents], params)
    return run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk), bk


def test_agents_act_on_the_board_and_terminate(tiny_task, cache, tmp_path, monkeypatch):
    spy = record_generate(monkeypatch)
    agents = [bb_agent("a", ["strategy", "verify"], False), bb_agent("b", ["execute"], False),
              bb_agent("c", ["critique", "terminate"], True)]
    res, bk = _run(agents, {"max_num_agents_to_act": 3, "termination": "iteration"}, tiny_task, cache, tmp_path)
    tr = res.predictions[0]["trace"]
    assert [(e["id"], e["iteration"], e["author"], e["action"]) for e in tr["entries"]] == [
        (1, 1, "a", "strategy"), (2, 1, "b", "execute"), (3, 1, "c", "critique"),
        (4, 2, "a", "verify"), (5, 2, "b", "execute"), (6, 2, "c", "terminate")]
    assert tr["ended_by"] == "agents" and tr["iterations"] == 2
    assert tr["conclusions"] == [{"author": "c", "text": "c concludes The answer is (A)"}]
    assert tr["votes"] == {} and res.predictions[0]["output"] == "c concludes The answer is (A)"
    # in iteration 2 every agent saw the three iteration-1 entries (and nothing of iteration 2)
    for b in bk.values():
        second = [c for c in b.calls if "--- Iteration 1 ---" in c.prompt and "Question 4:" in c.prompt]
        assert len(second) == 2  # select + act
        for c in second:
            assert "Entry #1 (a, strategy): a did strategy" in c.prompt and "Entry #3 (c, critique)" in c.prompt
            assert "Entry #4" not in c.prompt
    # all blackboards advance together: one batched call per step, every agent a different model
    assert [(t, len(m)) for t, m in spy] == [("iteration 1 select", 24), ("iteration 1 act", 24),
                                             ("iteration 2 select", 24), ("iteration 2 act", 24)]
    assert sorted(set(spy[0][1])) == ["a", "b", "c"]
    assert res.metrics["score"] == 1.0 and "dev" not in res.metrics["phases"]
    assert res.metrics["phases"]["test"]["calls"] == 8 * 2 * 3 * 2
    assert res.metrics["blackboard"]["actions"] == {"strategy": 8, "execute": 16, "critique": 8, "verify": 8,
                                                    "terminate": 8}


def test_default_termination_needs_a_majority_and_everyone_votes(tiny_task, cache, tmp_path):
    """Every agent wants to terminate at once. With the defaults (one agent drawn per iteration), the reference
    rule ends iteration 1 on the first agent's conclusion and nobody votes; the paper's consensus rule keeps
    the board open until a majority (2 of 3) different agents have concluded, then all three vote."""
    agents = [bb_agent(n, ["terminate"], n == "b", vote_for="b") for n in "abc"]
    ref, _ = _run(agents, {"termination": "iteration"}, tiny_task, cache, tmp_path / "ref")
    res, bk = _run(agents, {}, tiny_task, cache, tmp_path / "paper")
    assert res.metrics["blackboard"]["termination"] == "consensus" and res.metrics["blackboard"]["agents_to_stop"] == 2
    for old, row in zip(ref.predictions, res.predictions):
        assert old["trace"]["iterations"] == 1 and len(old["trace"]["conclusions"]) == 1 and old["trace"]["votes"] == {}
        tr = row["trace"]
        authors = [c["author"] for c in tr["conclusions"]]
        assert tr["ended_by"] == "consensus" and tr["iterations"] >= 2 and len(set(authors)) == len(authors) == 2
        drawn = [s["agent"] for s in tr["selections"]]
        assert sorted(set(drawn)) == sorted(authors) and len(set(drawn[:-1])) == 1  # closed by the 2nd agent
        assert set(tr["votes"]) == {"a", "b", "c"}  # every agent votes, authors or not
        if "b" in authors:  # all vote for b's (right) conclusion
            assert row["output"] == tr["conclusions"][authors.index("b")]["text"]
    assert len(bk["scripted:c"].received("Conclusions proposed by the agents")) == 8


def test_iteration_cap_still_concludes_and_agents_vote(tiny_task, cache, tmp_path):
    agents = [bb_agent("a", ["strategy"], False, vote_for="b"), bb_agent("b", ["execute"], True),
              bb_agent("c", ["critique"], False)]
    res, bk = _run(agents, {"max_num_agents_to_act": 3, "max_iterations": 2}, tiny_task, cache, tmp_path)
    tr = res.predictions[0]["trace"]
    assert tr["ended_by"] == "iteration cap" and len(tr["entries"]) == 6
    assert [c["author"] for c in tr["conclusions"]] == ["a", "b", "c"]  # every agent concluded
    assert tr["votes"] == {"a": 2, "b": 2, "c": 3} and tr["winner"] == 2  # the last "Conclusion #k" counts
    assert res.predictions[0]["output"] == "b concludes The answer is (A)" and res.metrics["score"] == 1.0
    assert res.metrics["blackboard"]["ended_by_cap"] == 1.0
    for b in bk.values():  # each agent voted once per question, seeing all three conclusions
        votes = b.received("Conclusions proposed by the agents")
        assert len(votes) == 8 and all("Conclusion #3:\nc concludes" in v.prompt for v in votes)


def test_unrecognised_choices_are_retried_then_lost(tiny_task, cache, tmp_path):
    agents = [bb_agent("a", ["garbage"], False), bb_agent("b", ["terminate"], True)]
    res, bk = _run(agents, {"max_num_agents_to_act": 2, "max_num_retries": 2, "termination": "iteration"},
                   tiny_task, cache, tmp_path)
    tr = res.predictions[0]["trace"]
    assert [s["action"] for s in tr["selections"]] == ["invalid", "terminate"]
    assert [e["author"] for e in tr["entries"]] == ["b"]
    assert len(bk["scripted:a"].received("choose your next action")) == 8 * 3  # 1 + 2 retries per turn
    assert len({c.seed for c in bk["scripted:a"].received("Question 4:")}) == 3  # retries are fresh samples
    assert res.metrics["blackboard"]["selection_retries"] == 8 * 2 and res.metrics["score"] == 1.0


def test_an_unchanged_board_gets_fresh_choices_each_iteration(tiny_task, cache, tmp_path):
    """Lost turns leave the board as it was: the next iteration's choice is a new sample, not the cached reply
    to the same prompt (which would replay the same invalid choice until the cap)."""
    agents = [bb_agent("a", ["garbage"], True), bb_agent("b", ["garbage"], True)]
    res, bk = _run(agents, {"max_num_agents_to_act": 2, "max_num_retries": 1, "max_iterations": 3},
                   tiny_task, cache, tmp_path)
    for name in "ab":
        asked = [c for c in bk[f"scripted:{name}"].received("choose your next action") if "Question 4:" in c.prompt]
        assert len(asked) == 3 * 2 and len({c.prompt for c in asked}) == 1  # the same board every time...
        assert len({c.seed for c in asked}) == 6  # ...and still six different samples
    assert res.predictions[0]["trace"]["ended_by"] == "iteration cap"


def test_one_seeded_agent_per_turn_and_idle_agents_get_a_turn(tiny_task, cache, tmp_path):
    agents = [bb_agent(n, ["execute"], True) for n in "abc"]
    params = {"max_iterations": 4, "agent_idle_threshold": 2}
    res, _ = _run(agents, params, tiny_task, cache, tmp_path / "1")
    again, _ = _run(agents, params, tiny_task, cache, tmp_path / "2")
    for row, row2 in zip(res.predictions, again.predictions):
        sel = row["trace"]["selections"]
        assert sel == row2["trace"]["selections"]  # seeded draws
        by_it = {}
        for s in sel:
            by_it.setdefault(s["iteration"], []).append(s["agent"])
        for it, acting in by_it.items():
            idle_long = [n for n in "abc" if it > 2 and all(n not in by_it[i] for i in range(it - 2, it))]
            assert set(idle_long) <= set(acting) and len(acting) >= 1
        assert row["trace"]["ended_by"] == "iteration cap" and len(row["trace"]["conclusions"]) == 3
    sizes = [len([s for s in row["trace"]["selections"] if s["iteration"] == it]) for row in res.predictions
             for it in range(1, 5)]
    assert set(sizes) == {1, 2} or set(sizes) == {1, 2, 3}  # one drawn agent, plus agents idle for 2 iterations
    firsts = {row["trace"]["selections"][0]["agent"] for row in res.predictions}
    assert len(firsts) > 1  # different questions draw different agents


@pytest.mark.parametrize("text, action", [
    ("Let me think. I choose to verify a result.", "verify"), ("I choose to terminate and finalize the solution.", "terminate"),
    ("I will critique entry 2.", "critique"), ("Next: execute the plan", "execute"), ("I propose a strategy", "strategy"),
    ("I choose to propose a solving strategy. I choose to execute a solution step.", None), ("ok", None),
    ("verify then terminate", None),
])
def test_parse_action(text, action):
    assert parse_action(text) == action


def test_parse_vote():
    assert parse_vote("Conclusion #1 is wrong. Therefore, I vote for Conclusion #3", 3) == 3
    assert parse_vote("I vote for conclusion 2.", 3) == 2
    assert parse_vote("Therefore, I vote for Conclusion #7", 3) is None and parse_vote("none", 2) is None
