"""The paper's analyses over sweep entries: scaling the number of models (Figure 2), model diversity
(Figure 3), leave-one-out sensitivity (Table 2), a malicious member (robustness), model selection (Figure 5).

Each function returns plain rows (dicts) that the report renders as tables and plots.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from moco.analysis.records import Collection, Entry
from moco.analysis.table1 import BASELINE, best_single


def _score(e: Entry) -> float | None:
    return e.run.score if e.ok else None


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1), as the paper's Table 2 reports."""
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _curve(col: Collection, analysis: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per collaborative entry of `analysis` with its `fields`, score, CI and the best single model
    of the same pool."""
    entries = col.where(analysis)
    best = best_single(entries)
    rows = []
    for e in entries:
        if e["method"] == BASELINE:
            continue
        rows.append({"task": e["task"], "domain": e["domain"], "label": e["label"], **{f: e[f] for f in fields},
                     "score": _score(e), "ci": e.run.ci if e.ok else None,
                     "best_single": best.get((e["pool"], e["task"])), "status": e.status, "reason": e.reason})
    return rows


def scaling(col: Collection) -> list[dict[str, Any]]:
    """One row per (task, method, n models): score, CI and the best single model of those n."""
    return sorted(_curve(col, "scaling", ("n_models",)), key=lambda r: (r["task"], r["label"], r["n_models"]))


def diversity(col: Collection) -> list[dict[str, Any]]:
    """One row per (task, method, a unique × b copies)."""
    rows = _curve(col, "diversity", ("unique", "copies"))
    for r in rows:
        r["setting"] = f"{r['unique']}x{r['copies']}"
    return sorted(rows, key=lambda r: (r["task"], r["label"], r["unique"]))


def leave_one_out(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): the score without each model, their mean and standard deviation."""
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in col.where("leave_one_out"):
        groups[(e["label"], e["task"])].append(e)
    rows = []
    for (label, task), es in groups.items():
        es = sorted(es, key=lambda e: e.get("without_index", 0))
        scores = [e.run.score for e in es if e.ok]
        m, s = mean_std(scores)
        rows.append({"label": label, "task": task, "domain": es[0]["domain"],
                     "without": [(e["without"], _score(e)) for e in es], "mean": m, "std": s,
                     "missing": [f"w/o {e['without']}: {e.reason or e.status}" for e in es if not e.ok]})
    return rows


def robustness(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): clean score, score with the adversary, and the drop (clean - attacked)."""
    pairs: dict[tuple[str, str], dict[str, Entry]] = defaultdict(dict)
    for e in col.where("adversarial"):
        pairs[(e["label"], e["task"])][e["variant"]] = e
    rows = []
    for (label, task), v in pairs.items():
        clean, bad = v.get("clean"), v.get("attacked")
        c = _score(clean) if clean else None
        a = _score(bad) if bad else None
        any_e = clean or bad
        rows.append({"label": label, "task": task, "domain": any_e["domain"], "replaced": any_e["replaced"],
                     "kind": any_e["kind"], "clean": c, "attacked": a,
                     "drop": (c - a) if c is not None and a is not None else None,
                     "relative_drop": ((c - a) / c) if c and a is not None else None,
                     "reason": "; ".join(x.reason for x in v.values() if x.reason) or None})
    return sorted(rows, key=lambda r: (r["task"], r["label"]))


def selection(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): score with the prompt-chosen, embedding-chosen and random subsets (mean and
    std over repeats), and the no-collaboration baseline (best single model of all candidates)."""
    entries = col.where("selection")
    best = {k[1]: v for k, v in best_single(entries).items()}
    by: dict[tuple[str, str], dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        if e["method"] == BASELINE:
            continue
        by[(e["label"], e["task"])][e["strategy"]].append(e)
    rows = []
    for (label, task), strategies in by.items():
        row: dict[str, Any] = {"label": label, "task": task, "no_collaboration": best.get(task)}
        for strategy, es in strategies.items():
            scores = [e.run.score for e in es if e.ok]
            m, s = mean_std(scores)
            row[strategy] = m
            row[f"{strategy}_std"] = s
            row[f"{strategy}_chosen"] = [e.get("chosen") for e in es]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["label"]))
