"""The paper's analyses over sweep entries: scaling the number of models (Figure 2), model diversity
(Figure 3), leave-one-out sensitivity (Table 2), a malicious member (robustness), model selection (Figure 5).

Each function returns plain rows (dicts) that the report renders as tables and plots. With several seeds a
setting's score is its mean over seeds and its interval the bootstrap over items of each item's seed-mean
(moco.analysis.seeds); differences and ratios (robustness) get paired intervals over the same items.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from moco.analysis.records import Collection
from moco.analysis.seeds import Setting, settings
from moco.analysis.table1 import BASELINE, best_single
from moco.scoring.stats import Interval, mean_std, paired_test, ratio_ci

__all__ = ["diversity", "leave_one_out", "mean_std", "robustness", "scaling", "selection"]


def _status(st: Setting) -> str:
    return "finished" if st.ok else st.entry.status


def _curve(col: Collection, analysis: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per collaborative entry of `analysis` with its `fields`, score, CI and the best single model
    of the same pool."""
    entries = col.where(analysis)
    best = best_single(entries)
    rows = []
    for st in settings([e for e in entries if e["method"] != BASELINE]):
        e = st.entry
        rows.append({"task": e["task"], "domain": e["domain"], "label": e["label"], **{f: e[f] for f in fields},
                     "score": st.score, "std": st.std, "ci": st.ci() if st.ok else None,
                     "best_single": best.get((e["pool"], e["task"])), "status": _status(st), "reason": e.reason})
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
    groups: dict[tuple[str, str], list[Setting]] = defaultdict(list)
    for st in settings(col.where("leave_one_out")):
        groups[(st.entry["label"], st.entry["task"])].append(st)
    rows = []
    for (label, task), sts in groups.items():
        sts = sorted(sts, key=lambda st: st.entry.get("without_index", 0))
        m, s = mean_std([st.score for st in sts if st.ok])
        rows.append({"label": label, "task": task, "domain": sts[0].entry["domain"],
                     "without": [(st.entry["without"], st.score) for st in sts],
                     "ci": {st.entry["without"]: st.ci() for st in sts if st.ok}, "mean": m, "std": s,
                     "missing": [f"w/o {st.entry['without']}: {st.entry.reason or st.entry.status}"
                                 for st in sts if not st.ok]})
    return rows


def robustness(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): clean score, score with the adversary, and the drop (clean - attacked)."""
    pairs: dict[tuple[str, str], dict[str, Setting]] = defaultdict(dict)
    for st in settings(col.where("adversarial")):
        pairs[(st.entry["label"], st.entry["task"])][st.entry["variant"]] = st
    rows = []
    for (label, task), v in pairs.items():
        clean, bad = v.get("clean"), v.get("attacked")
        c = clean.score if clean and clean.ok else None
        a = bad.score if bad and bad.ok else None
        any_e = (clean or bad).entry
        drop_ci = rel_ci = None
        if c is not None and a is not None:
            ci_, ai = clean.item_means(), bad.item_means()
            common = sorted(set(ci_) & set(ai))
            drop_ci = paired_test([[ci_[i] for i in common]], [[ai[i] for i in common]]).ci if common else \
                Interval(None, None, "no common items")
            rel_ci = ratio_ci([ci_[i] - ai[i] for i in common], [ci_[i] for i in common]) if common else drop_ci
        rows.append({"label": label, "task": task, "domain": any_e["domain"], "replaced": any_e["replaced"],
                     "kind": any_e["kind"], "clean": c, "attacked": a,
                     "clean_ci": clean.ci() if clean and clean.ok else None,
                     "attacked_ci": bad.ci() if bad and bad.ok else None,
                     "drop": (c - a) if c is not None and a is not None else None, "drop_ci": drop_ci,
                     "relative_drop": ((c - a) / c) if c and a is not None else None, "relative_drop_ci": rel_ci,
                     "reason": "; ".join(x.entry.reason for x in v.values() if x.entry.reason) or None})
    return sorted(rows, key=lambda r: (r["task"], r["label"]))


def selection(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): score with the prompt-chosen, embedding-chosen and random subsets (mean and
    std over repeats), and the no-collaboration baseline (best single model of all candidates)."""
    entries = col.where("selection")
    best = {k[1]: v for k, v in best_single(entries).items()}
    by: dict[tuple[str, str], dict[str, list[Setting]]] = defaultdict(lambda: defaultdict(list))
    for st in settings([e for e in entries if e["method"] != BASELINE]):
        by[(st.entry["label"], st.entry["task"])][st.entry["strategy"]].append(st)
    rows = []
    for (label, task), strategies in by.items():
        row: dict[str, Any] = {"label": label, "task": task, "no_collaboration": best.get(task)}
        for strategy, sts in strategies.items():
            m, s = mean_std([st.score for st in sts if st.ok])  # over repeats (each repeat: mean over seeds)
            row[strategy] = m
            row[f"{strategy}_std"] = s
            row[f"{strategy}_ci"] = sts[0].ci() if len(sts) == 1 and sts[0].ok else None
            row[f"{strategy}_chosen"] = [st.entry.get("chosen") for st in sts]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["label"]))
