"""The paper's analyses over sweep entries: scaling the number of models (Figure 2), model diversity
(Figure 3), leave-one-out sensitivity (Table 2), a malicious member (robustness), model selection (Figure 5).

Each function returns plain rows (dicts) that the report renders as tables and plots. With several seeds a
setting's score is its mean over seeds and its interval the bootstrap over items of each item's seed-mean
(moco.analysis.seeds); differences and ratios (robustness) get paired intervals over the same items.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from moco.analysis.records import Collection
from moco.analysis.seeds import Setting, settings
from moco.analysis.table1 import BASELINE, Baseline, baselines
from moco.scoring.stats import Interval, mean_ci, mean_std, paired_stat_ci, paired_test, ratio_ci

__all__ = ["diversity", "leave_one_out", "mean_std", "robustness", "scaling", "selection"]


def _status(st: Setting) -> str:
    return "finished" if st.ok else st.entry.status


def baseline_summary(b: Baseline | None) -> dict[str, Any]:
    """The best single model's score (mean over seeds), std over seeds and interval over its items' seed-means."""
    if b is None:
        return {"best_single": None, "best_single_std": None, "best_single_ci": None}
    return {"best_single": b.score, "best_single_std": mean_std(list(b.per_seed.values()))[1],
            "best_single_ci": mean_ci([x for _, x in b.items.values()]) if b.items else
            Interval(None, None, "no per-item scores")}


def _curve(col: Collection, analysis: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per collaborative entry of `analysis` with its `fields`, score, CI and the best single model
    of the same pool (with its own std over seeds and interval)."""
    entries = col.where(analysis)
    best = baselines(entries)
    rows = []
    for st in settings([e for e in entries if e["method"] != BASELINE]):
        e = st.entry
        rows.append({"task": e["task"], "domain": e["domain"], "label": e["label"], **{f: e[f] for f in fields},
                     "score": st.score, "std": st.std, "ci": st.ci() if st.ok else None,
                     **baseline_summary(best.get((e["pool"], e["task"]))), "status": _status(st), "reason": e.reason})
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
        ok = [st for st in sts if st.ok]
        m, s = mean_std([st.score for st in ok])
        mean_ci_, std_ci = _spread_cis(ok)
        rows.append({"label": label, "task": task, "domain": sts[0].entry["domain"],
                     "without": [(st.entry["without"], st.score) for st in sts],
                     "seed_std": {st.entry["without"]: st.std for st in ok},
                     "ci": {st.entry["without"]: st.ci() for st in ok}, "mean": m, "std": s,
                     "mean_ci": mean_ci_, "std_ci": std_ci,
                     "missing": [f"w/o {st.entry['without']}: {st.entry.reason or st.entry.status}"
                                 for st in sts if not st.ok]})
    return rows


def _spread_cis(sts: list[Setting]) -> tuple[Interval, Interval]:
    """Intervals of the mean and of the standard deviation over leave-one-out pools: the items (each one's
    score averaged over seeds) resampled together across the pools, which all ran the same test items."""
    if len(sts) < 2:
        iv = Interval(None, None, "fewer than two pools")
        return iv, iv
    cols = [st.item_means() for st in sts]
    common = sorted(set.intersection(*(set(c) for c in cols)))
    if not common:
        iv = Interval(None, None, "no common items")
        return iv, iv
    table = [[c[i] for i in common] for c in cols]
    return (paired_stat_ci(table, lambda means: np.mean(means, axis=-1)),
            paired_stat_ci(table, lambda means: np.std(means, axis=-1, ddof=1)))


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
        drops = [clean.per_seed[sd] - bad.per_seed[sd] for sd in clean.per_seed if sd in bad.per_seed] \
            if c is not None and a is not None else []
        rows.append({"label": label, "task": task, "domain": any_e["domain"], "replaced": any_e["replaced"],
                     "kind": any_e["kind"], "clean": c, "attacked": a,
                     "clean_std": clean.std if clean and clean.ok else None,
                     "attacked_std": bad.std if bad and bad.ok else None, "drop_std": mean_std(drops)[1],
                     "clean_ci": clean.ci() if clean and clean.ok else None,
                     "attacked_ci": bad.ci() if bad and bad.ok else None,
                     "drop": (c - a) if c is not None and a is not None else None, "drop_ci": drop_ci,
                     "relative_drop": ((c - a) / c) if c and a is not None else None, "relative_drop_ci": rel_ci,
                     "reason": "; ".join(x.entry.reason for x in v.values() if x.entry.reason) or None})
    return sorted(rows, key=lambda r: (r["task"], r["label"]))


def _repeats_ci(sts: list[Setting]) -> Interval | None:
    """One subset: its own interval. Several (random repeats): the interval of their mean, over the items
    every repeat scored, each item's score averaged over repeats (and seeds)."""
    if not sts:
        return None
    if len(sts) == 1:
        return sts[0].ci()
    cols = [st.item_means() for st in sts]
    common = sorted(set.intersection(*(set(c) for c in cols)))
    return mean_ci([sum(c[i] for c in cols) / len(cols) for i in common])


def selection(col: Collection) -> list[dict[str, Any]]:
    """Per (method, task): score with the prompt-chosen, embedding-chosen and random subsets (mean and
    std over repeats), and the no-collaboration baseline (best single model of all candidates)."""
    entries = col.where("selection")
    best = {k[1]: v for k, v in baselines(entries).items()}
    by: dict[tuple[str, str], dict[str, list[Setting]]] = defaultdict(lambda: defaultdict(list))
    for st in settings([e for e in entries if e["method"] != BASELINE]):
        by[(st.entry["label"], st.entry["task"])][st.entry["strategy"]].append(st)
    rows = []
    for (label, task), strategies in by.items():
        b = baseline_summary(best.get(task))
        row: dict[str, Any] = {"label": label, "task": task, "no_collaboration": b["best_single"],
                               "no_collaboration_std": b["best_single_std"], "no_collaboration_ci": b["best_single_ci"]}
        for strategy, sts in strategies.items():
            ok = [st for st in sts if st.ok]
            m, s = mean_std([st.score for st in ok])  # over repeats (each repeat: mean over seeds)
            row[strategy] = m
            row[f"{strategy}_std"] = s if len(ok) > 1 else (ok[0].std if ok else None)
            row[f"{strategy}_ci"] = _repeats_ci(ok)
            row[f"{strategy}_chosen"] = [st.entry.get("chosen") for st in sts]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["label"]))
