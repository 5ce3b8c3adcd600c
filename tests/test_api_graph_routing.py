"""GraphRouter on scripted models: the scenario changes the routes, test queries enter the graph with no
outcome edge, training is seeded."""
from __future__ import annotations

import json

import pytest

from helpers import letter_for, scripted_config
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment

GEO = ["Which country has the most volcanoes?", "Which river flows through Cairo?", "Which desert is the largest?",
       "Which mountain range separates France and Spain?", "Which ocean borders Portugal?"]


def _row(i: int) -> dict:
    if i % 2 == 0:
        q, dom = f"Question {i}: geography. {GEO[(i // 2) % len(GEO)]}", "geography"
    else:
        q, dom = f"Question {i}: arithmetic. What is {i} + {2 * i} times {i % 7}?", "arithmetic"
    return {"id": f"q{i}", "question": q, "choices": {k: f"option {k.lower()}" for k in "ABCD"},
            "answer": "ABCD"[i % 4], "domain": dom}


@pytest.fixture
def two_domain_task(tmp_path):
    rows = [_row(i) for i in range(28)]
    p = tmp_path / "two_domains.json"
    p.write_text(json.dumps({"name": "two_domains", "task_type": "multiple_choice", "dev": rows[:20], "test": rows[20:]}))
    return p


def _backends():
    def cheap(req) -> str:  # short answers, right on geography only
        prompt = req.messages[-1][1]
        letter = letter_for(prompt)
        if "arithmetic" in prompt:
            letter = "ABCD"[("ABCD".index(letter) + 1) % 4]
        return f"({letter})"

    def pricey(req) -> str:  # always right, four times as many words
        return "After careful step by step thought, the answer is (" + letter_for(req.messages[-1][1]) + ")"

    return {"scripted:cheap": ScriptedBackend("cheap", fn=cheap), "scripted:pricey": ScriptedBackend("pricey", fn=pricey)}


PARAMS = {"epochs": 150, "learning_rate": 1e-2, "masks_per_epoch": 8, "task_key": "domain",
          "model_descriptions": ["a small fast model", "a large careful model"]}


@pytest.mark.parametrize("scenario, task_key, expected", [
    ("balance", "domain", ["cheap", "pricey"] * 4),  # cheap where it is right (cheaper), pricey where cheap is wrong
    pytest.param("balance", None, ["cheap", "pricey"] * 4,  # one task node: the query embeddings alone carry the domain
                 marks=pytest.mark.slow),
    ("Cost First", "domain", ["cheap"] * 8),  # reference spelling; 0.2 perf - 0.8 cost: cheap even where wrong
])
def test_scenario_changes_routes(scenario, task_key, expected, two_domain_task, cache, tmp_path):
    backends = _backends()
    cfg = scripted_config("graph_router", two_domain_task, ["cheap", "pricey"],
                          {**PARAMS, "scenario": scenario, "task_key": task_key})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    routed = [r["trace"]["routed_to"] for r in res.predictions]
    assert routed == expected
    m = res.metrics
    # dev: 20 queries x 2 models outcome edges; test queries join the graph with none
    assert m["graph"] == {"task_nodes": 2 if task_key else 1, "dev_queries": 20, "test_queries": 8, "model_nodes": 2,
                          "dev_outcome_edges": 40, "test_outcome_edges": 0}
    assert m["dev_mean_cost"]["pricey"] == 1.0 and m["dev_mean_cost"]["cheap"] < 0.2
    assert m["route_share"] == {"cheap": expected.count("cheap") / 8, "pricey": expected.count("pricey") / 8}
    assert m["training"]["train_queries"] == 16 and m["training"]["val_queries"] == 4
    assert (res.run_dir / "artifacts" / "graph_router.pt").exists()
    # models answered only what was routed to them at test (plus the dev set)
    for name in ("cheap", "pricey"):
        assert len(backends[f"scripted:{name}"].calls) == 20 + routed.count(name)
    assert res.metrics["score"] == (1.0 if scenario == "balance" else 0.5)


def test_training_is_seeded(two_domain_task, cache, tmp_path):
    runs = [run_experiment(scripted_config("graph_router", two_domain_task, ["cheap", "pricey"], {**PARAMS, "epochs": 10}),
                           tmp_path / f"run{i}", cache=cache, backends=_backends()) for i in range(2)]
    assert [r["trace"]["scores"] for r in runs[0].predictions] == [r["trace"]["scores"] for r in runs[1].predictions]


def test_graph_structure_hides_whole_queries_and_gives_test_queries_no_outcome():
    """The graph itself: every query is linked to its task; visible known queries carry one outcome edge per model
    ([1, performance, cost, reward], both directions); hidden and unknown (test) queries carry none."""
    import torch

    from moco.routing.graph import GraphInputs, build_graph

    perf = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cost = torch.tensor([[0.1, 1.0], [0.2, 0.9], [0.1, 1.0]])
    inp = GraphInputs(task_emb=torch.randn(2, 4), model_emb=torch.randn(2, 4), known_emb=torch.randn(3, 4),
                      known_task=[0, 1, 0], perf=perf, cost=cost, reward=perf - cost,
                      unknown_emb=torch.randn(2, 4), unknown_task=[1, 0])
    g = build_graph(inp, [[0, 2], [1]], include_unknown=True)  # two copies (masks): query 1 hidden, then 0 and 2
    assert (g.copies, g.n_queries, g.n_models) == (2, 5, 2)
    assert [g.outcome_edges_of(q, 0) for q in range(5)] == [2, 0, 2, 0, 0]  # one per model (leaving the query)
    assert [g.outcome_edges_of(q, 1) for q in range(5)] == [0, 2, 0, 0, 0]
    # an outcome edge carries the real outcome of that (query, model) pair
    q, m = g.query_node(0, 2), g.model_node(0, 1)
    e = ((g.edge_index[0] == q) & (g.edge_index[1] == m)).nonzero().flatten()
    assert len(e) == 1 and g.edge_attr[e[0]].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    # every query (the test queries 3 and 4 too) is linked to its own task, in its own copy only
    for k in range(2):
        for qi, t in enumerate([0, 1, 0, 1, 0]):
            links = (g.edge_index[0] == k * 2 + t) & (g.edge_index[1] == g.query_node(k, qi))
            assert int(links.sum()) == 1 and float(g.edge_attr[links][0].abs().sum()) == 0.0
    # copies never touch: no edge joins nodes of different masks
    copy_of = torch.cat([torch.arange(2).repeat_interleave(2), torch.arange(2).repeat_interleave(5),
                         torch.arange(2).repeat_interleave(2)])
    assert bool((copy_of[g.edge_index[0]] == copy_of[g.edge_index[1]]).all())


def test_graph_router_warns_when_model_nodes_read_ids(two_domain_task, cache, tmp_path, caplog):
    """Without descriptions the model nodes embed the model ids: the run says so (one line, and in metrics)."""
    params = {k: v for k, v in PARAMS.items() if k != "model_descriptions"}
    with caplog.at_level("WARNING"):
        res = run_experiment(scripted_config("graph_router", two_domain_task, ["cheap", "pricey"],
                                             {**params, "epochs": 2}), tmp_path / "run", cache=cache,
                             backends=_backends())
    assert res.metrics["description_fallbacks"] == {"cheap": "model id", "pricey": "model id"}
    warned = [r.getMessage() for r in caplog.records if "without a description" in r.getMessage()]
    assert len(warned) == 1 and "cheap -> its model id" in warned[0]
