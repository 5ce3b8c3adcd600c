"""The paper's Table 1: per model pool, one column per domain plus the average; one row per method.

- "Best single" is, per task, the best test score of any single model of the pool (single_model reports each
  model's test score: an oracle choice, the strictest baseline), macro-averaged over the tasks of a domain.
- A method's domain value is the mean over the domain's tasks it ran on. "/" means it ran on none (reasons in
  the footnotes: too few models, objective-only method on an open task, missing capability...); "*" means some
  of the domain's tasks were excluded (as the paper marks objective-only methods on safety).
- A value is an improvement when it beats the best single model on the same tasks.
- avg is the macro-average over the domains the method has; a domain whose values leave [0, 1] (reward
  scores) is min-max normalised over the pool's rows first, as the paper does for instruction following.
- The share of (method, pool, domain) settings where collaboration beats the best single model is the
  paper's 61.0% figure; single_model rows are not collaboration and are not counted.
- A cell whose run failed (model calls failed, see failures.py) shows "failed (reason)" and its setting is left
  out of that share; a run that finished under a failure tolerance says over how many items its score is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from moco.analysis.records import Collection, Entry

BASELINE = "single_model"
BEST = "Best single"
EPS = 1e-9


@dataclass
class Value:
    value: float | None = None
    partial: bool = False  # some tasks of the domain excluded
    improved: bool = False
    rank: int = 0  # 1 best, 2 second among method rows of the column
    ref: float | None = None  # the best single model on the same tasks (what `improved` compares with)
    unfinished: list[str] = field(default_factory=list)  # "pending" / "failed": not a reason it cannot run
    failures: list[str] = field(default_factory=list)  # why cells failed (shown as "failed (reason)")
    over: tuple[int, int, int] | None = None  # (items scored, items, failed items) over the cell's runs
    reasons: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass
class Table1:
    pools: list[str]
    columns: dict[str, list[str]]  # pool -> domains (+ "avg")
    rows: list[str]  # BEST first, then method labels
    values: dict[tuple[str, str, str], Value]  # (row, pool, column)
    reasons: list[str]  # footnote texts, numbered from 1
    baselines: set[str] = field(default_factory=set)  # rows that are single_model (not ranked, not counted)
    improved: int = 0
    comparable: int = 0
    task_improved: int = 0
    task_comparable: int = 0

    @property
    def share(self) -> float | None:
        return self.improved / self.comparable if self.comparable else None

    @property
    def task_share(self) -> float | None:
        return self.task_improved / self.task_comparable if self.task_comparable else None

    def get(self, row: str, pool: str, col: str) -> Value:
        return self.values.get((row, pool, col), Value())

    def footnote(self, reason: str) -> int:
        return self.reasons.index(reason) + 1


def best_single(entries: list[Entry]) -> dict[tuple[str, str], float]:
    """(pool, task) -> best single model's test score, from single_model runs."""
    out: dict[tuple[str, str], float] = {}
    for e in entries:
        if e.ok and e["method"] == BASELINE:
            m = e.run.metrics
            v = m.get("best_single_test")
            if v is None:
                v = m["score"]
            out[(e["pool"], e["task"])] = max(out.get((e["pool"], e["task"]), -math.inf), float(v))
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def build(col: Collection, analysis: str = "table") -> Table1:
    entries = col.where(analysis)
    pools = list(dict.fromkeys(e["pool"] for e in entries))
    rows = [BEST] + list(dict.fromkeys(e["label"] for e in entries))
    best = best_single(entries)
    values: dict[tuple[str, str, str], Value] = {}
    reasons: list[str] = []
    columns: dict[str, list[str]] = {}
    t = Table1(pools, columns, rows, values, reasons, {e["label"] for e in entries if e["method"] == BASELINE})
    for pool in pools:
        pe = [e for e in entries if e["pool"] == pool]
        domains = list(dict.fromkeys(e["domain"] for e in pe))
        columns[pool] = domains + ["avg"]
        tasks_of = {d: list(dict.fromkeys(e["task"] for e in pe if e["domain"] == d)) for d in domains}
        for d in domains:
            bs = [best[(pool, tk)] for tk in tasks_of[d] if (pool, tk) in best]
            values[(BEST, pool, d)] = Value(_mean(bs), partial=0 < len(bs) < len(tasks_of[d]),
                                            tasks=[tk for tk in tasks_of[d] if (pool, tk) in best])
            for label in rows[1:]:
                v = Value()
                scores: list[float] = []
                for tk in tasks_of[d]:
                    hits = [e for e in pe if e["label"] == label and e["task"] == tk]
                    if not hits:
                        continue
                    e = hits[0]
                    if e.ok:
                        scores.append(e.run.score)
                        v.tasks.append(tk)
                        _count_failed(v, e.run.metrics)
                    elif e.status != "incompatible":
                        v.unfinished.append(e.status)
                        if e.status == "failed":
                            v.failures.append(e.reason or "")
                    else:
                        reason = e.reason or e.status
                        v.reasons.append(reason)
                        if reason not in reasons:
                            reasons.append(reason)
                v.value = _mean(scores)
                v.partial = v.value is not None and bool(v.reasons or v.unfinished)
                if v.value is not None and not v.failures and all((pool, tk) in best for tk in v.tasks):
                    v.ref = _mean([best[(pool, tk)] for tk in v.tasks])
                    v.improved = v.value > v.ref + EPS
                    if label not in t.baselines:
                        t.comparable += 1
                        t.improved += int(v.improved)
                values[(label, pool, d)] = v
            for label in rows[1:]:  # per-task share
                for tk in tasks_of[d]:
                    e = next((e for e in pe if e["label"] == label and e["task"] == tk), None)
                    if e is not None and e.ok and label not in t.baselines and (pool, tk) in best:
                        t.task_comparable += 1
                        t.task_improved += int(e.run.score > best[(pool, tk)] + EPS)
        _averages(t, pool, domains)
        _ranks(t, pool)
    return t


def _count_failed(v: Value, metrics: dict) -> None:
    """Items scored / items / failed items of the cell's runs (a run that finished under a failure tolerance
    scores fewer items than its task has; the cell then says so)."""
    k, n, f = v.over or (0, 0, 0)
    v.over = (k + int(metrics.get("n") or 0), n + int(metrics.get("n_test") or 0), f + int(metrics.get("failed") or 0))


def _averages(t: Table1, pool: str, domains: list[str]) -> None:
    norm: dict[str, tuple[float, float]] = {}
    for d in domains:
        vals = [t.values[(r, pool, d)].value for r in t.rows if (r, pool, d) in t.values
                and t.values[(r, pool, d)].value is not None]
        if vals and (min(vals) < 0 or max(vals) > 1):
            norm[d] = (min(vals), max(vals))

    def n(d: str, x: float) -> float:
        if d not in norm:
            return x
        lo, hi = norm[d]
        return (x - lo) / (hi - lo) if hi > lo else 0.0

    for r in t.rows:
        have = [d for d in domains if (r, pool, d) in t.values and t.values[(r, pool, d)].value is not None]
        v = Value()
        if have:
            v.value = _mean([n(d, t.values[(r, pool, d)].value) for d in have])
            v.partial = len(have) < len(domains) or any(t.values[(r, pool, d)].partial for d in have)
            if r != BEST:
                ref = [t.values[(r, pool, d)].ref for d in have]
                if all(x is not None for x in ref):
                    v.improved = v.value > _mean([n(d, x) for d, x in zip(have, ref)]) + EPS
        else:
            v.reasons = sorted({x for d in domains for x in t.values.get((r, pool, d), Value()).reasons})
        t.values[(r, pool, "avg")] = v


def _ranks(t: Table1, pool: str) -> None:
    for col in t.columns[pool]:
        ranked = [r for r in t.rows[1:] if r not in t.baselines]
        vals = sorted({t.values[(r, pool, col)].value for r in ranked
                       if (r, pool, col) in t.values and t.values[(r, pool, col)].value is not None}, reverse=True)
        for r in ranked:
            v = t.values.get((r, pool, col))
            if v and v.value is not None and vals:
                v.rank = 1 if v.value == vals[0] else 2 if len(vals) > 1 and v.value == vals[1] else 0


# ----------------------------------------------------------------------------------------------- rendering
def cell_text(t: Table1, v: Value, markdown: bool = True) -> str:
    if v.value is None:
        if v.failures:  # a failed cell says why (a re-run of `moco compare` retries it)
            why = v.failures[0].replace("|", "/")
            return f"failed ({why[:80]}{'…' if len(why) > 80 else ''})"
        if not v.reasons:
            return sorted(set(v.unfinished))[0] if v.unfinished else ""
        return "/" + "".join(f"^{t.footnote(r)}" for r in sorted(set(v.reasons), key=t.footnote)[:3]) if markdown \
            else "/"
    s = f"{v.value:.3f}" + ("*" if v.partial else "")
    if v.failures:
        s += f" (+{len(v.failures)} failed)"
    if v.over and v.over[2]:
        s += f" (over {v.over[0]} of {v.over[1]} items, {v.over[2]} failed)"
    if markdown:
        if v.improved:
            s += " ↑"
        if v.rank == 1:
            s = f"**{s}**"
        elif v.rank == 2:
            s = f"_{s}_"
    return s


def to_markdown(t: Table1) -> str:
    cols = [(p, c) for p in t.pools for c in t.columns[p]]
    head = "| method | " + " | ".join(f"{p} · {c}" for p, c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in t.rows:
        cells = [cell_text(t, t.get(r, p, c)) for p, c in cols]
        if any(cells):
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("↑ beats the best single model on the same tasks; **best** and _second_ per column; "
                 "\\* some tasks of the domain excluded; / cannot run on this setting:")
    for i, r in enumerate(t.reasons, 1):
        lines.append(f"{i}. {r}")
    lines.append("")
    lines.append(share_line(t))
    return "\n".join(lines) + "\n"


def share_line(t: Table1) -> str:
    if not t.comparable:
        return "collaboration vs best single model: no comparable setting (single_model runs are needed)"
    s = (f"collaboration beats the best single model in {t.improved} of {t.comparable} (method, pool, domain) "
         f"settings = {100 * t.share:.1f}%")
    if t.task_comparable:
        s += f"; per task: {t.task_improved} of {t.task_comparable} = {100 * t.task_share:.1f}%"
    return s
