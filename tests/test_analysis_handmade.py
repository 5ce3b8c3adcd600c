"""Every analysis on hand-made run directories whose answers can be counted by hand."""
from __future__ import annotations

import json
import math
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from moco.analysis import load
from moco.analysis import cost, emergence, studies, table1
from moco.analysis.report import write
from moco.errors import ConfigError


def make_run(root: Path, name: str, method: str, task: str, item_scores: list[float], *, models=("a", "b"),
             per_model: dict[str, list[float]] | None = None, ids: list[str] | None = None, extra: dict | None = None,
             config: dict | None = None) -> Path:
    """A run directory with metrics.json, predictions.jsonl and config.yaml, as the runner writes them."""
    d = root / name
    d.mkdir(parents=True)
    ids = ids or [f"q{i}" for i in range(len(item_scores))]
    rows = []
    for i, s in enumerate(item_scores):
        trace = {}
        if per_model:
            trace["scores"] = {m: per_model[m][i] for m in per_model}
        rows.append({"id": ids[i], "index": i, "gold": "A", "output": "x", "score": s, "trace": trace})
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    score = sum(item_scores) / len(item_scores)
    metrics = {"method": method, "task": task, "task_type": "multiple_choice", "metric": "accuracy", "score": score,
               "ci95": [max(0, score - 0.1), min(1, score + 0.1)], "n": len(item_scores), "unparsed": 0,
               "failed": 0, "n_test": len(item_scores), "models": list(models), "wall_s": 2.0,
               "total": {"calls": 10, "tokens_in": 100, "tokens_out": 50, "generated_tokens": 50, "compute_s": 1.0,
                         "cache_hits": 0, "failed": 0},
               "phases": {"test": {"wall_s": 1.5, "per_model": {m: {"calls": 5, "tokens_in": 50, "tokens_out": 25}
                                                                for m in models}}}}
    if per_model:
        metrics["per_model_test"] = {m: sum(v) / len(v) for m, v in per_model.items()}
        metrics["best_single_test"] = max(metrics["per_model_test"].values())
    metrics.update(extra or {})
    (d / "metrics.json").write_text(json.dumps(metrics))
    cfg = config or {"method": method, "task": {"name": task},
                     "models": [{"model": f"scripted:{m}"} for m in models], "params": {}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    return d


def make_sweep(root: Path, cells: list[dict]) -> Path:
    """A sweep directory: index.json listing cells (dir, status, reason, uses)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.json").write_text(json.dumps({"name": "hand", "cells": cells, "sharing": {}}))
    return root


def use(analysis, pool, label, task, domain, method=None, **extra):
    return {"analysis": analysis, "pool": pool, "label": label, "method": method or label, "task": task,
            "domain": domain, **extra}


# ------------------------------------------------------------------------------------------- emergence
def test_emergence_share_counted_by_hand(tmp_path):
    # 10 items; models a and b solve items 0-3 between them, nobody solves items 4-9 (6 "impossible" items)
    a = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    b = [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    make_run(tmp_path, "single", "single_model", "t", a, per_model={"a": a, "b": b})
    # the system solves impossible items 4 and 5, and loses item 0 (solved by a)
    make_run(tmp_path, "vote", "text_majority_vote", "t", [0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    col = load([tmp_path / "single", tmp_path / "vote"])
    rows = emergence.emergence(col)
    assert len(rows) == 1
    r = rows[0]
    assert (r.n, r.impossible, r.rescued, r.lost) == (10, 6, 2, 1)
    assert r.share == pytest.approx(2 / 6)
    dom = emergence.by_domain(rows + [emergence.EmergenceRow(r.pool, "t2", r.domain, r.label, 5, 4, 1, 0)])
    assert dom[0].impossible == 10 and dom[0].rescued == 3 and dom[0].share == pytest.approx(0.3)


def test_emergence_refuses_runs_on_different_test_sets(tmp_path):
    make_run(tmp_path, "single", "single_model", "t", [0, 0], per_model={"a": [0, 0], "b": [0, 0]})
    make_run(tmp_path, "vote", "text_majority_vote", "t", [1, 1], ids=["q0", "other"])
    with pytest.raises(ConfigError, match="different test sets"):
        emergence.emergence(load([tmp_path / "single", tmp_path / "vote"]))


def test_emergence_rescores_old_single_model_runs_from_answers(tmp_path):
    """single_model runs made before per-item scores: each model's answer text is scored again."""
    from moco.tasks.registry import resolve_task

    task = resolve_task("moco_demo").loader()
    exs = task.test[:4]
    d = make_run(tmp_path, "single", "single_model", "moco_demo", [0, 0, 0, 0], ids=[e.id for e in exs],
                 config={"method": "single_model", "task": {"name": "moco_demo", "test_limit": 4}, "models": ["x"]})
    rows = []
    for j, ex in enumerate(exs):
        right = ex.choices[ex.answer]
        wrong = next(v for k, v in ex.choices.items() if k != ex.answer)
        # model a answers item 0 right, b answers item 1 right; items 2 and 3 nobody
        answers = {"a": right if j == 0 else wrong, "b": right if j == 1 else wrong}
        rows.append({"id": ex.id, "index": ex.index, "gold": ex.answer, "score": 0.0, "trace": {"answers": answers}})
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_run(tmp_path, "refine", "text_multiagent_refine", "moco_demo", [0, 0, 1, 0], ids=[e.id for e in exs])
    r = emergence.emergence(load([tmp_path / "single", tmp_path / "refine"]))[0]
    assert (r.impossible, r.rescued, r.lost) == (2, 1, 2)


# ------------------------------------------------------------------------------------------- Table 1
def _table_fixture(tmp_path: Path) -> Path:
    return make_sweep(tmp_path, _table_cells(tmp_path))


def _table_cells(tmp_path: Path) -> list[dict]:
    runs = tmp_path / "runs"
    # pool p1: math tasks m1, m2 (domain math), qa task q1 (domain qa)
    per = {"m1": ([1, 1, 0, 0], [1, 0, 0, 0]), "m2": ([1, 0, 0, 0], [0, 0, 0, 0]), "q1": ([1, 1, 1, 0], [0, 0, 0, 0])}
    cells = []
    for task, (a, b) in per.items():
        dom = "math" if task.startswith("m") else "qa"
        make_run(runs, f"single-{task}", "single_model", task, a, per_model={"a": a, "b": b})
        cells.append({"status": "finished", "dir": f"runs/single-{task}",
                      "uses": [use("table", "p1", "single_model", task, dom)]})
    # vote: m1 0.75 (best single 0.5: improved), m2 0.0 (best 0.25), q1 incompatible
    make_run(runs, "vote-m1", "text_majority_vote", "m1", [1, 1, 1, 0])
    make_run(runs, "vote-m2", "text_majority_vote", "m2", [0, 0, 0, 0])
    cells += [{"status": "finished", "dir": "runs/vote-m1", "uses": [use("table", "p1", "vote", "m1", "math",
                                                                           "text_majority_vote")]},
              {"status": "finished", "dir": "runs/vote-m2", "uses": [use("table", "p1", "vote", "m2", "math",
                                                                           "text_majority_vote")]},
              {"status": "incompatible", "reason": "needs a task with definite answers",
               "uses": [use("table", "p1", "vote", "q1", "qa", "text_majority_vote")]}]
    # refine: m1 0.5 (= best single, not an improvement), m2 0.5 (improved), q1 1.0 (improved)
    for task, s in {"m1": [1, 1, 0, 0], "m2": [1, 1, 0, 0], "q1": [1, 1, 1, 1]}.items():
        make_run(runs, f"refine-{task}", "text_multiagent_refine", task, s)
        cells.append({"status": "finished", "dir": f"runs/refine-{task}",
                      "uses": [use("table", "p1", "refine", task, "math" if task.startswith("m") else "qa",
                                   "text_multiagent_refine")]})
    # pool p2 has one model: collaboration cannot run
    make_run(runs, "single-p2", "single_model", "m1", [0, 1, 0, 0], per_model={"a": [0, 1, 0, 0]})
    cells += [{"status": "finished", "dir": "runs/single-p2", "uses": [use("table", "p2", "single_model", "m1", "math")]},
              {"status": "incompatible", "reason": "method text_majority_vote needs at least 2 models",
               "uses": [use("table", "p2", "vote", "m1", "math", "text_majority_vote")]}]
    return cells


def test_table1_values_marks_slashes_and_share(tmp_path):
    t = table1.build(load([_table_fixture(tmp_path)]))
    assert t.pools == ["p1", "p2"] and t.columns["p1"] == ["math", "qa", "avg"]
    # best single per task: m1 .5, m2 .25, q1 .75 -> math (.5+.25)/2
    assert t.get("Best single", "p1", "math").value == pytest.approx(0.375)
    assert t.get("Best single", "p1", "qa").value == pytest.approx(0.75)
    v = t.get("vote", "p1", "math")
    assert v.value == pytest.approx(0.375) and not v.improved and not v.partial  # (.75 + 0)/2 vs .375
    q = t.get("vote", "p1", "qa")
    assert q.value is None and q.reasons == ["needs a task with definite answers"]
    avg = t.get("vote", "p1", "avg")
    assert avg.partial and avg.value == pytest.approx(0.375)  # only the math domain...
    assert not avg.improved  # ...compared with the best single model on the same tasks (also .375)
    r = t.get("refine", "p1", "math")
    # on four items a point improvement is not evidence: (↑), not ↑
    assert r.value == pytest.approx(0.5) and r.point and not r.improved and r.rank == 1
    assert r.test.diff == pytest.approx(0.125) and r.p_adj == pytest.approx(1.0)
    assert t.get("refine", "p1", "qa").point and not t.get("refine", "p1", "qa").improved
    # q1: refine solves all 4, the best single model (a) 3: one discordant pair, McNemar p = 1
    q1 = t.get("refine", "p1", "qa").test
    assert q1.test == "mcnemar" and (q1.mcnemar.better, q1.mcnemar.worse) == (1, 0) and q1.p == 1.0
    assert t.get("refine", "p1", "avg").value == pytest.approx(0.75) and t.get("refine", "p1", "avg").point
    assert t.get("vote", "p2", "math").value is None
    # settings: vote/p1/math (no), refine/p1/math (point), refine/p1/qa (point) -> 2 of 3, none significant
    assert (t.point_improved, t.improved, t.comparable) == (2, 0, 3)
    # per task: vote m1 yes, vote m2 no, refine m1 no (equal), m2 yes, q1 yes -> 3 of 5
    assert (t.task_point_improved, t.task_improved, t.task_comparable) == (3, 0, 5)
    md = table1.to_markdown(t)
    assert "/^1" in md and "1. needs a task with definite answers" in md and "66.7%" in md and "(↑)" in md
    assert "single_model" in md and "**0.500 (↑)**" in md and " ↑" not in md.split("\n\n")[0]
    assert "significantly in 0 = 0.0%" in md


def test_table1_marks_only_significant_improvements_and_averages_seeds(tmp_path):
    runs = tmp_path / "runs"
    a = [1] * 10 + [0] * 30  # the best single model: 10 of 40
    b = [0] * 5 + [1] * 5 + [0] * 30
    cells = []
    for seed in (0, 1):
        make_run(runs, f"single{seed}", "single_model", "m", a, per_model={"a": a, "b": b})
        cells.append({"status": "finished", "dir": f"runs/single{seed}",
                      "uses": [use("table", "p", "single_model", "m", "math", seed=seed, multi_seed=True)]})
        # strong: 30 of 40 on seed 0, 28 on seed 1 (every item a solves, plus 20 or 18 more)
        strong = a[:10] + [1] * (20 - 2 * seed) + [0] * (10 + 2 * seed)
        # weak: one item more than a, on one seed only
        weak = a[:10] + [1 - seed] + [0] * 29
        for lab, sc in (("strong", strong), ("weak", weak)):
            make_run(runs, f"{lab}{seed}", "text_multiagent_refine", "m", sc)
            cells.append({"status": "finished", "dir": f"runs/{lab}{seed}",
                          "uses": [use("table", "p", lab, "m", "math", "text_multiagent_refine", seed=seed,
                                       multi_seed=True)]})
    t = table1.build(load([make_sweep(tmp_path, cells)]))
    s = t.get("strong", "p", "math")
    assert s.value == pytest.approx((30 + 28) / 80) and s.std == pytest.approx(0.05 / 2 ** 0.5 * 1)
    assert s.per_seed == {0: 0.75, 1: 0.7} and s.improved and s.test.test == "bootstrap"  # seed means: not 0/1
    w = t.get("weak", "p", "math")
    assert w.value == pytest.approx(10.5 / 40) and w.point and not w.improved
    assert t.get("Best single", "p", "math").value == pytest.approx(0.25)
    assert (t.point_improved, t.improved) == (2, 1)
    md = table1.to_markdown(t)
    assert "0.725 ± 0.035 ↑" in md and "0.263 ± 0.018 (↑)" in md and "mean ± std over seeds 0, 1" in md
    rows = table1.test_rows(t)
    assert [r[2] for r in rows] == ["strong", "weak"] and rows[0][-1] == "↑ significant"
    # one domain: the avg cell is the same numbers, it shares the domain's test (not a second one in the family)
    assert t.get("strong", "p", "avg").improved and t.get("strong", "p", "avg").p_adj == s.p_adj
    # any two rows on request: strong vs weak, items averaged over seeds
    r = table1.compare_rows(load([tmp_path]), "strong", "weak", "p")
    assert r.diff == pytest.approx(s.value - w.value) and r.p < 0.001
    assert table1.compare_rows(load([tmp_path]), "Best single", "weak", "p").diff == pytest.approx(-0.0125)
    secs = write(load([tmp_path]), tmp_path / "r.html", pairs=[("strong", "weak")])
    pairs = next(x for x in secs if x.title == "Requested paired comparisons").tables[0].rows
    assert pairs == [["p", "strong", "weak", "40", f"{r.diff:+.3f}", r.ci.text(), "bootstrap", f"{r.p:.4f}"]]
    with pytest.raises(ConfigError, match="no row 'nope'"):
        write(load([tmp_path]), tmp_path / "r.html", pairs=[("strong", "nope")])


def test_table1_normalises_domains_outside_0_1_for_the_average(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "s", "single_model", "rm", [2.0, 4.0], per_model={"a": [2.0, 4.0]})
    make_run(runs, "m", "text_multiagent_refine", "rm", [6.0, 8.0])
    make_run(runs, "s2", "single_model", "acc", [1, 0], per_model={"a": [1, 0]})
    make_run(runs, "m2", "text_multiagent_refine", "acc", [0, 0])
    cells = [{"status": "finished", "dir": f"runs/{d}", "uses": [use("table", "p", lab, tk, dom, meth)]}
             for d, lab, tk, dom, meth in [("s", "single_model", "rm", "IF", "single_model"),
                                           ("m", "refine", "rm", "IF", "text_multiagent_refine"),
                                           ("s2", "single_model", "acc", "qa", "single_model"),
                                           ("m2", "refine", "acc", "qa", "text_multiagent_refine")]]
    t = table1.build(load([make_sweep(tmp_path, cells)]))
    # IF: best single 3, single_model 3, refine 7 -> min-max over rows: 0, 0, 1; qa: .5, .5, 0
    assert t.get("refine", "p", "avg").value == pytest.approx((1 + 0) / 2)
    assert t.get("Best single", "p", "avg").value == pytest.approx((0 + 0.5) / 2)


# ------------------------------------------------------------------------------------------- studies
def test_leave_one_out_reproduces_paper_table2_statistics(tmp_path):
    paper = {"mmlu-redux": [0.572, 0.581, 0.589, 0.593, 0.598], "gsm8k": [0.729, 0.759, 0.822, 0.828, 0.872],
             "bbh": [0.539, 0.561, 0.565, 0.588, 0.598]}
    cells = []
    for task, scores in paper.items():
        for i, s in enumerate(scores):
            n_right = round(s * 1000)
            make_run(tmp_path / "runs", f"{task}-{i}", "text_multiagent_refine", task, [1] * n_right + [0] * (1000 - n_right))
            cells.append({"status": "finished", "dir": f"runs/{task}-{i}",
                          "uses": [use("leave_one_out", f"p w/o m{i + 1}", "debate", task, "x",
                                       "text_multiagent_refine", without=f"m{i + 1}", without_index=i)]})
    rows = {r["task"]: r for r in studies.leave_one_out(load([make_sweep(tmp_path, cells)]))}
    assert round(rows["mmlu-redux"]["mean"], 3) == 0.587 and round(rows["mmlu-redux"]["std"], 3) == 0.010
    assert round(rows["gsm8k"]["mean"], 3) == 0.802 and round(rows["gsm8k"]["std"], 3) == 0.057
    assert round(rows["bbh"]["mean"], 3) == 0.570 and round(rows["bbh"]["std"], 3) == 0.023
    assert [w for w, _ in rows["bbh"]["without"]] == ["m1", "m2", "m3", "m4", "m5"]


def _study_cells(tmp_path: Path) -> list[dict]:
    runs = tmp_path / "runs"
    cells = []

    def add(name, method, task, scores, u, per_model=None):
        make_run(runs, name, method, task, scores, per_model=per_model)
        cells.append({"status": "finished", "dir": f"runs/{name}", "uses": [u]})

    add("clean", "text_majority_vote", "t", [1, 1, 1, 0], use("adversarial", "p", "vote", "t", "d", "text_majority_vote",
                                                              variant="clean", replaced="c", kind="liar"))
    add("bad", "text_majority_vote", "t", [1, 0, 0, 0], use("adversarial", "p adv:c", "vote", "t", "d",
                                                            "text_majority_vote", variant="attacked", replaced="c",
                                                            kind="liar"))
    add("sel-single", "single_model", "t", [1, 0, 0, 0],
        use("selection", "p", "single_model", "t", "d", strategy="none"), per_model={"a": [1, 0, 0, 0], "b": [0, 0, 0, 0]})
    for r, s in enumerate([[1, 0, 0, 0], [1, 1, 1, 0]]):
        add(f"rand{r}", "text_majority_vote", "t", s, use("selection", f"p random#{r}", "vote", "t", "d",
                                                          "text_majority_vote", strategy="random", repeat=r,
                                                          chosen=["a", "b"]))
    add("prompt", "text_majority_vote", "t", [1, 1, 0, 0], use("selection", "p prompt", "vote", "t", "d",
                                                               "text_majority_vote", strategy="prompt", chosen=["b", "c"]))
    for n, s in [(2, [1, 0, 0, 0]), (4, [1, 1, 0, 0])]:
        add(f"sc{n}", "text_majority_vote", "t", s, use("scaling", f"p[:{n}]", "vote", "t", "d", "text_majority_vote",
                                                        n_models=n))
    add("dv", "text_majority_vote", "t", [1, 1, 1, 1], use("diversity", "p 2x4", "vote", "t", "d", "text_majority_vote",
                                                           unique=2, copies=4))
    cells.append({"status": "incompatible", "reason": "pool too small",
                  "uses": [use("scaling", "p[:8]", "vote", "t", "d", "text_majority_vote", n_models=8)]})
    for i, s in enumerate([[1, 1, 0, 0], [1, 0, 0, 0]]):
        add(f"loo{i}", "text_majority_vote", "t", s, use("leave_one_out", f"p w/o m{i}", "vote", "t", "d",
                                                         "text_majority_vote", without=f"m{i}", without_index=i))
    return cells


def test_robustness_selection_scaling_and_diversity_rows(tmp_path):
    col = load([make_sweep(tmp_path, _study_cells(tmp_path))])
    rob = studies.robustness(col)[0]
    assert (rob["clean"], rob["attacked"], rob["drop"]) == (0.75, 0.25, 0.5)
    assert rob["relative_drop"] == pytest.approx(2 / 3)
    sel = studies.selection(col)[0]
    assert sel["no_collaboration"] == 0.25 and sel["prompt"] == 0.5
    assert sel["random"] == pytest.approx(0.5) and sel["random_std"] == pytest.approx(math.sqrt(0.125))
    assert sel["prompt_chosen"] == [["b", "c"]]
    sc = studies.scaling(col)
    assert [(r["n_models"], r["score"], r["status"]) for r in sc] == [(2, 0.25, "finished"), (4, 0.5, "finished"),
                                                                        (8, None, "incompatible")]
    assert studies.diversity(col)[0]["setting"] == "2x4"


# ------------------------------------------------------------------------------------------- cost
def _write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def test_parameter_count_from_safetensors_header_and_flops(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    _write_safetensors(folder / "model-00001.safetensors", {"a": [10, 20], "b": [5]})
    _write_safetensors(folder / "model-00002.safetensors", {"c": [3, 3, 3]})
    (folder / "config.json").write_text("{}")
    assert cost.folder_params(folder) == 200 + 5 + 27
    d = make_run(tmp_path, "r", "text_multiagent_refine", "t", [1, 0], models=("x", "y"),
                 config={"method": "text_multiagent_refine", "task": {"name": "t"}, "params": {"rounds": 2},
                         "decoding": {"max_new_tokens": 10},
                         "models": [{"model": str(folder), "name": "x"}, {"model": "scripted:y", "name": "y"}]})
    col = load([d])
    c = cost.costs(col)[0]
    assert c.flops is None and c.unknown_size == ["y"]  # a scripted model has no size...
    c = cost.costs(col, {"y": 1000})[0]  # ...unless the sweep gives it (param_counts)
    assert c.flops == 2 * 232 * (50 + 25) + 2 * 1000 * (50 + 25)
    # Table 4: refine = 2·n·r·D·m·max(k) with n=2, r=2, D=2 test items, m=10
    assert c.paper_inference == "2nrDm·max(kᵢ)" and c.paper_estimate == 2 * 2 * 2 * 2 * 10 * 1000
    assert c.phase_wall == {"test": 1.5} and c.calls == 10 and c.tokens_out == 50


@pytest.mark.parametrize("name, paper", [("text_multiagent_refine", "Multiagent Refine"),
                                         ("text_majority_vote", "Majority Vote"), ("logit_logit_fusion", "Logit Fusion"),
                                         ("logit_fusion", "Logit Fusion"), ("api_graph_routing", "Graph Router"),
                                         ("api_trained_router", "LLM Router"), ("weight_expo", "Weight Expo"),
                                         ("text_llm_blender", "LLM Blender"), ("api_collm", "Co-LLM"),
                                         ("weight_greedy_soup", "Greedy Soup"), ("text_agglm", "AggLM")])
def test_every_paper_method_name_maps_to_its_table4_row(name, paper):
    assert cost.complexity_for(name).paper_name == paper


# ------------------------------------------------------------------------------------------- report
class _Checker(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.external, self.tags = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith(("#", "data:")):
                self.external.append(v)
        if tag not in self.VOID and not tag.endswith("/"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def check_html(text: str) -> _Checker:
    c = _Checker()
    c.feed(text)
    c.close()
    return c


def test_report_is_one_well_formed_offline_html_file_with_every_section(tmp_path):
    root = make_sweep(tmp_path, _table_cells(tmp_path) + _study_cells(tmp_path))
    out = tmp_path / "out" / "report.html"
    secs = write(load([root]), out, tmp_path / "out" / "report.md", paths=[str(root)])
    titles = [s.title.split(" (")[0].split(":")[0] for s in secs]
    assert titles == ["Comparison", "Scores per task, with 95% bootstrap intervals", "Collaborative emergence",
                      "Scaling the number of models", "Model diversity", "Model selection",
                      "Sensitivity to model choice", "Robustness to a malicious member", "Cost against quality",
                      "Cells that did not run"]
    text = out.read_text()
    c = check_html(text)
    assert not c.errors and not c.stack, (c.errors, c.stack)
    assert not c.external, c.external  # nothing to fetch: readable offline
    assert {"svg", "table", "figure"} <= c.tags and text.count("<svg") >= 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| method | p1 · math |" in md and "![" in md
    # the paired tests with their p-values, and every interval (or why there is none)
    assert "p adjusted (holm)" in text and "(↑) not significant" in text and "mcnemar (1:0 discordant)" in text
    assert "95% CI (paired)" in text and "(all scores equal)" in text and 'class="up-ns' in text
    # every score, difference and ratio printed has its interval or the reason it has none (one seed here)
    from test_report_intervals import check_every_number_has_an_interval

    assert sum(check_every_number_has_an_interval(t) for s in secs for t in s.tables) >= 60  # 65 printed today
    pngs = list((tmp_path / "out" / "report_files").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_report_template_escapes_what_runs_contain(tmp_path):
    make_run(tmp_path, "s", "single_model", "t<i>", [1, 0], per_model={"a": [1, 0]})
    make_run(tmp_path, "m", "<script>alert(1)</script>", "t<i>", [1, 1])
    out = tmp_path / "r.html"
    write(load([tmp_path / "s", tmp_path / "m"]), out, title="A & B")
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<title>A &amp; B</title>" in text
    c = check_html(text)
    assert not c.errors and not c.stack


def test_table1_without_per_item_predictions_shows_the_point_estimate_untested(tmp_path):
    root = _table_fixture(tmp_path)
    (root / "runs" / "refine-m1" / "predictions.jsonl").unlink()
    t = table1.build(load([root]))
    r = t.get("refine", "p1", "math")
    assert r.value == pytest.approx(0.5) and r.point and r.test is None and not r.improved
    assert t.get("refine", "p1", "qa").test is not None  # the other cells are still tested
    assert ["p1", "math", "refine", "", "", "none", "", "", "no paired items"] in table1.test_rows(t)


def test_table1_mcnemar_and_holm_figures_by_hand(tmp_path):
    """One task, ten items, 0/1 scores, one seed. The best single model 'a' solves items 0-3. Method X solves
    0-2 and 5-9: 5 items a misses, 1 (item 3) a solves -> McNemar exact p = 2 * P(Bin(6, 1/2) <= 1)
    = 2 * 7/64 = 0.21875. Method Y solves 0-9: 6 discordant pairs, all for Y -> p = 2 * (1/2)^6 = 0.03125.
    Holm over the two tested cells: 0.03125 * 2 = 0.0625, then max(0.0625, 0.21875 * 1) = 0.21875. At
    alpha 0.05 neither is significant after correction, though Y's raw p is below 0.05: both are (↑)."""
    runs = tmp_path / "runs"
    a = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    b = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    x = [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]
    y = [1] * 10
    make_run(runs, "single", "single_model", "m", a, per_model={"a": a, "b": b})
    make_run(runs, "x", "X", "m", x)
    make_run(runs, "y", "Y", "m", y)
    cells = [{"status": "finished", "dir": f"runs/{d}", "uses": [use("table", "p", lab, "m", "math", meth)]}
             for d, lab, meth in (("single", "single_model", "single_model"), ("x", "X", "X"), ("y", "Y", "Y"))]
    t = table1.build(load([make_sweep(tmp_path, cells)]))
    vx, vy = t.get("X", "p", "math"), t.get("Y", "p", "math")
    assert (vx.test.mcnemar.better, vx.test.mcnemar.worse) == (5, 1) and vx.test.p == pytest.approx(0.21875)
    assert (vy.test.mcnemar.better, vy.test.mcnemar.worse) == (6, 0) and vy.test.p == pytest.approx(0.03125)
    assert vy.p_adj == pytest.approx(0.0625) and vx.p_adj == pytest.approx(0.21875)
    assert vx.point and vy.point and not vx.improved and not vy.improved
    assert vx.test.diff == pytest.approx(0.8 - 0.4) and vy.test.diff == pytest.approx(0.6)
    assert t.get("Best single", "p", "math").value == pytest.approx(0.4) and (t.point_improved, t.improved) == (2, 0)
    t_bh = table1.build(load([tmp_path]), correction="bh")  # BH: 0.03125 * 2 / 1 = 0.0625, 0.21875 * 2 / 2
    assert t_bh.get("Y", "p", "math").p_adj == pytest.approx(0.0625)
    assert t_bh.get("X", "p", "math").p_adj == pytest.approx(0.21875)


def test_table1_avg_of_a_row_with_no_value_says_why(tmp_path):
    """A row whose every domain cell is pending (or failed) shows it in avg too, not an empty cell."""
    make_run(tmp_path / "runs", "single", "single_model", "m", [1, 0], per_model={"a": [1, 0]})
    cells = [{"status": "finished", "dir": "runs/single", "uses": [use("table", "p", "single_model", "m", "math")]},
             {"status": "pending", "uses": [use("table", "p", "debate", "m", "math", "text_multiagent_refine")]},
             {"status": "failed", "reason": "CallsFailed: 2 failed calls",
              "uses": [use("table", "p", "vote", "m", "math", "text_majority_vote")]}]
    t = table1.build(load([make_sweep(tmp_path, cells)]))
    assert [table1.cell_text(t, t.get("debate", "p", c)) for c in ("math", "avg")] == ["pending", "pending"]
    assert table1.cell_text(t, t.get("vote", "p", "avg")) == "failed (CallsFailed: 2 failed calls)"
