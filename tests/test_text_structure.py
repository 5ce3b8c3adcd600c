"""Structured interaction on scripted models: in each round every model saw exactly its in-neighbours' answers."""
from __future__ import annotations

import re

import pytest

from helpers import scripted_config
from moco.errors import ConfigError
from moco.methods.text.structure import adjacency
from moco.runner import run_experiment
from text_agents import agent, backends

NAMES = "abcd"


def _neighbours_seen(prompt: str) -> list[str]:
    return sorted(re.findall(r"Assistant \d+: (\w):r\d+", prompt))


@pytest.mark.parametrize("structure, matrix, expected", [
    ("star", None, {"a": "bcd", "b": "a", "c": "a", "d": "a"}),
    ("chain", None, {"a": "b", "b": "ac", "c": "bd", "d": "c"}),
    ("tree", None, {"a": "bc", "b": "ad", "c": "a", "d": "b"}),
    ("circle", None, {"a": "bd", "b": "ac", "c": "bd", "d": "ac"}),
    ("complete", None, {"a": "bcd", "b": "acd", "c": "abd", "d": "abc"}),
    ("custom", [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]], {"a": "", "b": "a", "c": "bd", "d": ""}),
])
def test_each_model_sees_its_in_neighbours(structure, matrix, expected, tiny_task, cache, tmp_path):
    agents = {n: agent(n, n == "b") for n in NAMES}
    params = {"structure": structure, "rounds": 2, **({"matrix": matrix} if matrix else {})}
    res = run_experiment(scripted_config("text_structure", tiny_task, NAMES, params), tmp_path / "run",
                         cache=cache, backends=backends(agents))
    for n, b in agents.items():
        for r in (1, 2):
            calls = b.received(f"Your previous answer:\n{n}:r{r - 1}")
            if not expected[n]:  # no in-neighbours: no update call, the first answer stays
                assert not calls
                continue
            assert len(calls) == 8
            for c in calls:
                assert _neighbours_seen(c.prompt) == sorted(expected[n])
                for o in expected[n]:  # the neighbour's previous-round answer (r0 if it never updates)
                    assert f": {o}:r{r - 1 if expected[o] else 0} " in c.prompt
    tr = res.predictions[0]["trace"]
    assert {n: "".join(tr["rounds"][1][n]["saw"]) for n in NAMES} == expected
    last = {n: tr["rounds"][2][n]["output"].split()[0] for n in NAMES}
    assert last == {n: f"{n}:r2" if expected[n] else f"{n}:r0" for n in NAMES}
    # the final answer is the dev-best model's (b) last answer, as in the reference
    assert tr["final_model"] == "b" and res.predictions[0]["output"] == tr["rounds"][2]["b"]["output"]
    assert res.metrics["score"] == 1.0
    edges = {tuple(e) for e in res.metrics["graph"]}
    assert edges == {(s, t) for t in NAMES for s in expected[t]}


def test_star_is_a_star_not_a_wheel():
    m = adjacency("star", 5)
    assert sum(map(sum, m)) == 2 * 4 and all(m[0][k] and m[k][0] for k in range(1, 5))
    assert not any(m[i][j] for i in range(1, 5) for j in range(1, 5))
    assert adjacency("star", 2) == [[0, 1], [1, 0]] and adjacency("circle", 2) == [[0, 1], [1, 0]]
    assert adjacency("tree", 5) == adjacency("custom", 5, [[0, 1, 1, 0, 0], [1, 0, 0, 1, 1], [1, 0, 0, 0, 0],
                                                           [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]])


def test_reference_keys_vote_and_bad_matrices(tiny_task, cache, tmp_path):
    agents = {n: agent(n, n != "c") for n in "abc"}
    params = {"num_rounds": 2, "structure_type": "other", "structure_matrix": [[0, 1, 1], [1, 0, 1], [1, 1, 0]],
              "final": "vote"}
    res = run_experiment(scripted_config("text_structure", tiny_task, "abc", params), tmp_path / "run",
                         cache=cache, backends=backends(agents))
    tr = res.predictions[0]["trace"]
    assert len(tr["rounds"]) == 2 and tr["final"] == "vote" and res.metrics["score"] == 1.0
    assert "dev" not in res.metrics["phases"]
    with pytest.raises(ConfigError, match="2x2 but the pool has 3"):
        run_experiment(scripted_config("text_structure", tiny_task, "abc", {"structure": "custom",
                                                                            "matrix": [[0, 1], [1, 0]]}),
                       tmp_path / "bad", cache=cache, backends=backends(agents))
    with pytest.raises(ConfigError, match="zero diagonal"):
        run_experiment(scripted_config("text_structure", tiny_task, "ab", {"structure": "custom",
                                                                           "matrix": [[1, 1], [1, 0]]}),
                       tmp_path / "bad2", cache=cache, backends=backends(agents))
    with pytest.raises(ConfigError, match="structure"):
        run_experiment(scripted_config("text_structure", tiny_task, "ab"), tmp_path / "bad3", cache=cache,
                       backends=backends(agents))


def test_summarizer_final(tiny_task, cache, tmp_path):
    agents = {n: agent(n, n == "a") for n in "abc"}
    res = run_experiment(scripted_config("text_structure", tiny_task, "abc", {"structure": "chain", "rounds": 1,
                                                                              "final": "summarizer"},
                                         roles={"final": "c"}), tmp_path / "run", cache=cache, backends=backends(agents))
    summaries = agents["c"].received("Answers from a team of agents")
    assert len(summaries) == 8 and all(f"{n}:r1" in s.prompt for s in summaries for n in "abc")
    assert res.predictions[0]["trace"]["final_model"] == "c" and res.metrics["score"] == 0.0
