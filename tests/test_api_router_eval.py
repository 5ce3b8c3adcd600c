"""Offline router evaluation: every model answers once, sweeps cost no model call, points are right by hand."""
from __future__ import annotations

import pytest

from helpers import ConfidentBackend, scripted_config
from moco.routing.offline import Point, Route, Table, apgr, oracle_pick, point, sweep
from moco.runner import run_experiment


def conf_a(q: int) -> float:
    return 0.9 if q % 2 == 0 else 0.3


def conf_b(q: int) -> float:
    return {0: 0.8, 1: 0.95, 2: 0.9, 3: 0.7}[q % 4]


def _backends():
    # a (cheap): right on even questions, sure there; b: right when q % 4 == 1 or 2; c (expensive): always right
    return {"scripted:a": ConfidentBackend("a", lambda q: q % 2 == 0, conf_a),
            "scripted:b": ConfidentBackend("b", lambda q: q % 4 in (1, 2), conf_b),
            "scripted:c": ConfidentBackend("c", True, lambda q: 0.99)}


def _pt(points, router, split, setting=None, param=None):
    return next(p for p in points if p["router"] == router and p["split"] == split
                and (setting is None or p["setting"] == setting) and (param is None or p["param"] == param))


def test_sweep_points_selection_and_free_resweeps(tiny_task, cache, tmp_path):
    backends = _backends()
    cascade = run_experiment(scripted_config("api_cascade", tiny_task, "abc"), tmp_path / "cascade", cache=cache,
                             backends=backends)
    cfg = scripted_config("router_eval", tiny_task, "abc", {"decisions": [str(cascade.run_dir)]})
    res = run_experiment(cfg, tmp_path / "eval", cache=cache, backends=backends)
    m = res.metrics
    pts = m["router_eval"]
    # every model answered every dev (4) and test (8) query once; the cascade's calls came from the cache
    assert m["phases"]["dev"]["calls"] == 12 and m["phases"]["test"]["calls"] == 24
    assert m["phases"]["dev"]["cache_hits"] == 8 and m["phases"]["test"]["cache_hits"] == 14
    # single models on test (Question 4..11): a right on even (0.5), b on q%4 in {1,2} (0.5), c always
    assert [_pt(pts, "single", "test", n)["quality"] for n in "abc"] == [0.5, 0.5, 1.0]
    assert _pt(pts, "single", "test", "c")["strong_share"] == 1.0 and _pt(pts, "single", "test", "a")["cost"] == 1.0
    # oracle: a on even, b on q%4 == 1, c on q%4 == 3 -> quality 1, cost (4*1 + 2*2 + 2*3) / 8
    o = _pt(pts, "oracle", "test")
    assert (o["quality"], o["strong_share"], o["cost"], o["calls"]) == (1.0, 0.25, 1.75, 1.0)
    # random mix at p = 0.3: 0.7 * 0.5 + 0.3 * 1.0
    assert _pt(pts, "random", "test", param=0.3)["quality"] == pytest.approx(0.65)
    # cascade at p = 0.5 is the api_cascade run: thresholds 0.6 / 0.85, a answers even, b q5 q9, c q7 q11
    c5 = _pt(pts, "cascade", "test", param=0.5)
    assert "thresholds=[0.6, 0.85]" in c5["setting"]
    assert (c5["quality"], c5["strong_share"], c5["calls"]) == (1.0, 0.25, 1.75)
    assert c5["cost"] == pytest.approx((4 * 1 + 2 * 3 + 2 * 6) / 8)
    # p = 0: every threshold is the minimum dev confidence: a answers everything
    c0 = _pt(pts, "cascade", "test", param=0.0)
    assert (c0["quality"], c0["strong_share"]) == (0.5, 0.0)
    # the cascade run's recorded routes, re-scored offline, give that run's score and calls
    d = _pt(pts, "decisions", "test")
    assert d["quality"] == cascade.metrics["score"] == 1.0 and d["calls"] == cascade.metrics["calls_per_query"]
    # the run's own answers: the best dev cascade within the budget
    sel = m["selected"]
    assert sel["dev_quality"] == 1.0 and sel["dev_strong_share"] <= 0.5 and sel["test_quality"] == 1.0
    assert m["score"] == 1.0 and m["route_share"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert m["apgr"]["test"]["cascade"] > m["apgr"]["test"]["random"] == pytest.approx(0.5)
    for f in ("router_eval.csv", "router_eval.md", "router_eval.png"):
        assert (res.run_dir / "artifacts" / f).stat().st_size > 0
    assert "| oracle | best per query | 1.000 | 0.250 | 1.750 | 1.00 |" in (res.run_dir / "artifacts" / "router_eval.md").read_text()
    # a new sweep (other grid, other costs) makes no model call
    before = sum(len(b.calls) for b in backends.values())
    again = run_experiment(scripted_config("router_eval", tiny_task, "abc", {"percentages": [0.25, 0.75],
                                                                            "costs": [1, 1, 10], "plot": False}),
                           tmp_path / "eval2", cache=cache, backends=backends)
    assert sum(len(b.calls) for b in backends.values()) == before
    assert again.metrics["total"]["generated_tokens"] == 0
    assert _pt(again.metrics["router_eval"], "single", "test", "c")["cost"] == 10.0


def test_point_and_apgr_by_hand():
    t = Table(["w", "s"], ["1", "2", "3", "4"], [[1, 0, 0, 1], [1, 1, 1, 0]], [[None] * 4] * 2)
    p = point(t, Route([[0], [0, 1], [1], [0]], [0, 1, 1, 0]), [1.0, 4.0], "x", "y", "test")
    assert (p.quality, p.strong_share, p.cost, p.calls) == (1.0, 0.5, (1 + 5 + 4 + 1) / 4, 1.25)
    pts = [Point("r", "", "test", 0.5, 0.5, 0, 1)]
    # the straight line from (0, q_cheap=0) to (1, q_strong=1) through (0.5, 0.5): PGR area 0.5
    assert apgr(pts, "r", "test", 0.0, 1.0) == pytest.approx(0.5)
    assert apgr([Point("r", "", "test", 1.0, 0.2, 0, 1)], "r", "test", 0.0, 1.0) == pytest.approx(0.9)
    assert apgr(pts, "r", "test", 0.5, 0.5) is None


def test_oracle_takes_the_best_reward_even_below_zero():
    # reward-model scores: every answer scores below zero, the expensive model's least so
    cheap_rewards, strong_rewards = [-2.0, -0.5, -1.0], [-0.3, -0.9, -1.0]
    t = Table(["cheap", "strong"], ["1", "2", "3"], [cheap_rewards, strong_rewards], [[0.9, 0.5, 0.7]] * 2)
    pts = sweep(t, t, [1.0, 3.0], [0.5])
    o = _pt([p.__dict__ for p in pts], "oracle", "test")
    # query 1: strong is best (-0.3 > -2); query 2: cheap (-0.5); query 3: a tie, the cheaper one
    assert [oracle_pick(t, [0, 1], i) for i in range(3)] == [1, 0, 0]
    assert o["quality"] == pytest.approx((-0.3 - 0.5 - 1.0) / 3) and o["strong_share"] == pytest.approx(1 / 3)
    # 0/1 scores: the cheapest right model, else (all wrong) the cheapest
    b = Table(["a", "b"], ["1", "2", "3"], [[0, 1, 0], [1, 1, 0]], [[None] * 3] * 2)
    assert [oracle_pick(b, [0, 1], i) for i in range(3)] == [1, 0, 0]
