"""The paper's Table 1: per model pool, one column per domain plus the average; one row per method.

- "Best single" is, per task, the single model of the pool with the best test score (mean over seeds; an
  oracle choice, the strictest baseline), macro-averaged over the tasks of a domain.
- A method's domain value is the mean over the domain's tasks it ran on (each task's score the mean over
  seeds); with several seeds the cell also shows ± the standard deviation over seeds of the domain value.
  "/" means it ran on none (reasons in the footnotes); "*" means some of the domain's tasks (or seeds) are
  missing.
- ↑ means the method beats the best single model on the same tasks *and* a paired test on the same items
  says so at level `alpha` after a multiple-comparison correction over every tested cell of the table
  (Holm by default). A point improvement the test does not confirm is shown as (↑); ↓ is a significant loss.
  The paired test (moco.scoring.stats.paired_test): each item's score is its mean over seeds (method and
  baseline alike), items are resampled within each task (so a domain keeps its macro-average weights), and
  the p-value is McNemar's exact test when the cell is one task with 0/1 scores, else the paired bootstrap.
- avg is the macro-average over the domains the method has; a domain whose values leave [0, 1] (reward
  scores) is min-max normalised over the pool's rows first, as the paper does. Such an average is not tested
  (the normalisation depends on every row) and can only be a point improvement.
- The share of (method, pool, domain) settings where collaboration beats the best single model (the paper's
  61.0% figure) is reported both ways: point estimate, and significant after correction. single_model rows are
  not collaboration and are not counted.
- A cell whose run failed (model calls failed, see failures.py) shows "failed (reason)" and its setting is left
  out of that share; a run that finished under a failure tolerance says over how many items its score is.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from moco.analysis.records import Collection, Entry, item_scores, seed_groups
from moco.errors import ConfigError
from moco.records_schema import MetricsRecord
from moco.scoring.stats import Interval, PairedResult, adjust, mean_std, paired_test, strata_mean_ci

BASELINE = "single_model"
BEST = "Best single"
EPS = 1e-9
ALPHA = 0.05
CORRECTION = "holm"


@dataclass
class Value:
    value: float | None = None
    std: float | None = None  # over seeds (None with one seed)
    per_seed: dict[int, float] = field(default_factory=dict)
    partial: bool = False  # some tasks (or seeds) of the domain missing
    point: bool = False  # beats the best single model on the point estimate
    improved: bool = False  # ...and the paired test confirms it (after correction)
    worse: bool = False  # significantly below the best single model
    rank: int = 0  # 1 best, 2 second among method rows of the column
    ref: float | None = None  # the best single model on the same tasks (what `improved` compares with)
    test: PairedResult | None = None
    p_adj: float | None = None
    same_as: tuple[str, str, str] | None = None  # an avg over one domain: that domain's cell and its test
    ci: Interval | None = None  # 95% BCa interval of the value (items' seed-means resampled within each task)
    unfinished: list[str] = field(default_factory=list)  # "pending" / "failed": not a reason it cannot run
    failures: list[str] = field(default_factory=list)  # why cells failed (shown as "failed (reason)")
    over: tuple[int, int, int] | None = None  # (items scored, items, failed items) over the cell's runs
    reasons: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass
class Baseline:
    """The best single model of one (pool, task): which model, its score (mean over seeds), its per-seed
    scores, and its per-item scores (mean over seeds) by item index."""
    model: str | None
    score: float
    per_seed: dict[int, float]
    items: dict[int, tuple[str, float]]


@dataclass
class Table1:
    pools: list[str]
    columns: dict[str, list[str]]  # pool -> domains (+ "avg")
    rows: list[str]  # BEST first, then method labels
    values: dict[tuple[str, str, str], Value]  # (row, pool, column)
    reasons: list[str]  # footnote texts, numbered from 1
    baselines: set[str] = field(default_factory=set)  # rows that are single_model (not ranked, not counted)
    alpha: float = ALPHA
    correction: str = CORRECTION
    seeds: list[int] = field(default_factory=list)
    improved: int = 0  # significant
    point_improved: int = 0
    comparable: int = 0
    task_improved: int = 0
    task_point_improved: int = 0
    task_comparable: int = 0
    tests: list[tuple[str, str, str]] = field(default_factory=list)  # tested cells, in order

    @property
    def share(self) -> float | None:
        return self.improved / self.comparable if self.comparable else None

    @property
    def point_share(self) -> float | None:
        return self.point_improved / self.comparable if self.comparable else None

    @property
    def task_share(self) -> float | None:
        return self.task_improved / self.task_comparable if self.task_comparable else None

    def get(self, row: str, pool: str, col: str) -> Value:
        return self.values.get((row, pool, col), Value())

    def footnote(self, reason: str) -> int:
        return self.reasons.index(reason) + 1


def _seed(e: Entry) -> int:
    return int(e.get("seed", 0) or 0)


def _per_item(entries: list[Entry], pick) -> dict[int, tuple[str, float]]:
    """index -> (id, mean over the entries' seeds of pick(prediction)); items every seed scored."""
    acc: dict[int, list[float]] = defaultdict(list)
    ids: dict[int, str] = {}
    for e in entries:
        for idx, (iid, p) in item_scores(e.run).items():
            v = pick(p)
            if v is None:
                continue
            if idx in ids and ids[idx] != iid:
                raise ConfigError(f"item {idx} is '{iid}' in {e.run.dir} but '{ids[idx]}' in another seed's run")
            ids[idx] = iid
            acc[idx].append(float(v))
    return {i: (ids[i], sum(v) / len(v)) for i, v in acc.items() if len(v) == len(entries)}


def baselines(entries: list[Entry]) -> dict[tuple[str, str], Baseline]:
    """(pool, task) -> the best single model, from single_model runs (all seeds)."""
    by: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if e.ok and e["method"] == BASELINE:
            by[(e["pool"], e["task"])].append(e)
    out = {}
    for key, es in by.items():
        es = list({_seed(e): e for e in es}.values())  # one run per seed
        has_items = all((e.run.dir / "predictions.jsonl").exists() for e in es)
        per_model: dict[str, list[float]] = defaultdict(list)
        for e in es:
            for m, v in (e.run.record.per_model_test or {}).items():
                per_model[m].append(float(v))
        full = {m: v for m, v in per_model.items() if len(v) == len(es)}
        if full:
            best = max(full, key=lambda m: (sum(full[m]) / len(full[m]), m))
            per_seed = {_seed(e): float(e.run.record.per_model_test[best]) for e in es}
            items = _per_item(es, lambda p, b=best: ((p.trace or {}).get("scores") or {}).get(b)) \
                if has_items else {}
        else:  # older runs without per-model scores: the run's own output
            best = None
            per_seed = {_seed(e): float(e.run.record.best_single_test if e.run.record.best_single_test is not None
                                        else e.run.score) for e in es}
            items = _per_item(es, lambda p: p.score) if has_items else {}
        out[key] = Baseline(best, sum(per_seed.values()) / len(per_seed), per_seed, items)
    return out


def best_single(entries: list[Entry]) -> dict[tuple[str, str], float]:
    """(pool, task) -> best single model's test score (mean over seeds)."""
    return {k: b.score for k, b in baselines(entries).items()}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _paired(cells: list[tuple[list[Entry], Baseline]], weights: list[float] | None = None) -> PairedResult | None:
    """Paired test of a method against the best single model over some tasks: strata = tasks. None when a run
    has no per-item predictions (the cell then shows its point estimate only, marked (↑) at best)."""
    ms, bs = [], []
    if any(not (e.run.dir / "predictions.jsonl").exists() for es, _ in cells for e in es):
        return None
    for es, base in cells:
        mine = _per_item(es, lambda p: p.score)
        common = sorted(set(mine) & set(base.items))
        for i in common:
            if mine[i][0] != base.items[i][0]:
                raise ConfigError(f"item {i} is '{mine[i][0]}' in {es[0].run.dir} but '{base.items[i][0]}' in the "
                                  "single_model run: the runs used different test sets")
        if not common:
            return None
        ms.append([mine[i][1] for i in common])
        bs.append([base.items[i][1] for i in common])
    return paired_test(ms, bs, weights=weights)


def build(col: Collection, analysis: str = "table", alpha: float = ALPHA, correction: str = CORRECTION) -> Table1:
    entries = col.where(analysis)
    pools = list(dict.fromkeys(e["pool"] for e in entries))
    rows = [BEST] + list(dict.fromkeys(e["label"] for e in entries))
    base = baselines(entries)
    values: dict[tuple[str, str, str], Value] = {}
    reasons: list[str] = []
    columns: dict[str, list[str]] = {}
    t = Table1(pools, columns, rows, values, reasons, {e["label"] for e in entries if e["method"] == BASELINE},
               alpha=alpha, correction=correction, seeds=sorted({_seed(e) for e in entries}))
    task_tests: list[PairedResult] = []
    runs_of: dict[tuple[str, str, str], list[Entry]] = {}
    for pool in pools:
        pe = [e for e in entries if e["pool"] == pool]
        domains = list(dict.fromkeys(e["domain"] for e in pe))
        columns[pool] = domains + ["avg"]
        tasks_of = {d: list(dict.fromkeys(e["task"] for e in pe if e["domain"] == d)) for d in domains}
        for d in domains:
            have = [tk for tk in tasks_of[d] if (pool, tk) in base]
            values[(BEST, pool, d)] = _seeded(Value(partial=0 < len(have) < len(tasks_of[d]), tasks=have),
                                              [base[(pool, tk)].per_seed for tk in have])
            if have:
                values[(BEST, pool, d)].ci = _value_ci(BEST, pool, have, runs_of, base)
            for label in rows[1:]:
                v = Value()
                per_task: list[dict[int, float]] = []
                for tk in tasks_of[d]:
                    group = seed_groups([e for e in pe if e["label"] == label and e["task"] == tk])
                    if not group:
                        continue
                    ok = [e for e in group if e.ok]
                    bad = [e for e in group if not e.ok]
                    if ok:
                        runs_of[(label, pool, tk)] = ok
                        per_task.append({_seed(e): e.run.score for e in ok})
                        v.tasks.append(tk)
                        for e in ok:
                            _count_failed(v, e.run.record)
                        v.unfinished += [e.status for e in bad if e.status != "incompatible"]
                        v.failures += [e.reason or "" for e in bad if e.status == "failed"]
                    elif any(e.status != "incompatible" for e in bad):
                        v.unfinished += [e.status for e in bad]
                        v.failures += [e.reason or "" for e in bad if e.status == "failed"]
                    else:
                        reason = bad[0].reason or bad[0].status
                        v.reasons.append(reason)
                        if reason not in reasons:
                            reasons.append(reason)
                _seeded(v, per_task)
                v.partial = v.value is not None and bool(v.reasons or v.unfinished)
                if v.value is not None:
                    v.ci = _value_ci(label, pool, v.tasks, runs_of, base)
                if v.value is not None and not v.failures and all((pool, tk) in base for tk in v.tasks):
                    v.ref = _mean([base[(pool, tk)].score for tk in v.tasks])
                    v.point = v.value > v.ref + EPS
                    if label not in t.baselines:
                        v.test = _paired([(runs_of[(label, pool, tk)], base[(pool, tk)]) for tk in v.tasks])
                        t.tests.append((label, pool, d))
                        t.comparable += 1
                        t.point_improved += int(v.point)
                        for tk in v.tasks:  # per task
                            t.task_comparable += 1
                            ok = runs_of[(label, pool, tk)]
                            t.task_point_improved += int(_mean([e.run.score for e in ok]) > base[(pool, tk)].score + EPS)
                            task_tests.append(_paired([(ok, base[(pool, tk)])]))
                values[(label, pool, d)] = v
        _averages(t, pool, domains, runs_of, base, tasks_of)
        _ranks(t, pool)
    _significance(t, task_tests)
    return t


def _value_ci(label: str, pool: str, tasks: list[str], runs_of: dict, base: dict[tuple[str, str], Baseline],
              weights: list[float] | None = None) -> Interval:
    """The interval of a cell's value: its tasks' items (each the mean over seeds) resampled within each task,
    the statistic the macro-average over tasks (or the `weights`-weighted one)."""
    groups = []
    for tk in tasks:
        if label == BEST:
            items = base[(pool, tk)].items
        elif any(not (e.run.dir / "predictions.jsonl").exists() for e in runs_of[(label, pool, tk)]):
            items = {}
        else:
            items = _per_item(runs_of[(label, pool, tk)], lambda p: p.score)
        if not items:
            return Interval(None, None, "no per-item predictions")
        groups.append([x for _, x in items.values()])
    return strata_mean_ci(groups, weights=weights)


def _count_failed(v: Value, m: MetricsRecord) -> None:
    """Items scored / items / failed items of the cell's runs (a run that finished under a failure tolerance
    scores fewer items than its task has; the cell then says so)."""
    k, n, f = v.over or (0, 0, 0)
    v.over = (k + m.n, n + (m.n_test or 0), f + int(m.failed or 0))


def _seeded(v: Value, per_task: list[dict[int, float]]) -> Value:
    """value = mean over tasks of each task's mean over seeds; std over the seeds every task has."""
    if not per_task:
        return v
    v.value = _mean([sum(s.values()) / len(s) for s in per_task])
    common = set.intersection(*(set(s) for s in per_task))
    v.per_seed = {sd: sum(s[sd] for s in per_task) / len(per_task) for sd in sorted(common)}
    v.std = mean_std(list(v.per_seed.values()))[1]
    if len(common) < max(len(s) for s in per_task):
        v.partial = True
    return v


def _significance(t: Table1, task_tests: list[PairedResult | None]) -> None:
    """Adjust the p-values of every tested cell together (one family per table) and mark ↑ / ↓."""
    tested = [(k, t.values[k].test) for k in t.tests if t.values[k].test is not None and t.values[k].test.p is not None]
    adj = adjust([r.p for _, r in tested], t.correction) if tested else []
    for (k, r), p in zip(tested, adj):
        v = t.values[k]
        v.p_adj = p
        v.improved = v.point and r.diff > 0 and p <= t.alpha
        v.worse = r.diff < 0 and v.value is not None and v.ref is not None and v.value < v.ref - EPS and p <= t.alpha
        if k[2] != "avg":
            t.improved += int(v.improved)
    for v in t.values.values():
        if v.same_as is not None:
            src = t.values[v.same_as]
            v.p_adj, v.improved, v.worse = src.p_adj, src.improved, src.worse
    ps = [r.p for r in task_tests if r is not None and r.p is not None]
    ok = [r for r in task_tests if r is not None and r.p is not None]
    t.task_improved = sum(int(r.diff > EPS and p <= t.alpha) for r, p in zip(ok, adjust(ps, t.correction) if ps else []))


def _averages(t: Table1, pool: str, domains: list[str], runs_of: dict, base: dict[tuple[str, str], Baseline],
              tasks_of: dict[str, list[str]]) -> None:
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
            dv = [t.values[(r, pool, d)] for d in have]
            v.value = _mean([n(d, x.value) for d, x in zip(have, dv)])
            v.partial = len(have) < len(domains) or any(x.partial for x in dv)
            seeds = set.intersection(*(set(x.per_seed) for x in dv))
            v.per_seed = {s: _mean([n(d, x.per_seed[s]) for d, x in zip(have, dv)]) for s in sorted(seeds)}
            v.std = mean_std(list(v.per_seed.values()))[1]
            if any(d in norm for d in have):
                v.ci = Interval(None, None, "domains min-max normalised over the rows")
            else:
                tasks = [tk for x in dv for tk in x.tasks]
                v.ci = _value_ci(r, pool, tasks, runs_of, base,
                                 [1 / (len(have) * len(x.tasks)) for x in dv for _ in x.tasks])
            if r != BEST:
                ref = [x.ref for x in dv]
                if all(x is not None for x in ref):
                    v.ref = _mean([n(d, x) for d, x in zip(have, ref)])
                    v.point = v.value > v.ref + EPS
                    if r not in t.baselines and len(have) == 1 and not norm:
                        v.same_as = (r, pool, have[0])  # the same numbers: not a second test in the family
                        v.test = dv[0].test
                    elif r not in t.baselines and not any(d in norm for d in have):
                        cells, weights = [], []
                        for _d, x in zip(have, dv):
                            for tk in x.tasks:
                                cells.append((runs_of[(r, pool, tk)], base[(pool, tk)]))
                                weights.append(1 / (len(have) * len(x.tasks)))
                        v.test = _paired(cells, weights)
                        t.tests.append((r, pool, "avg"))
        else:  # no domain has a value: the avg says why (cannot run, pending, failed) like its domains
            dv = [t.values.get((r, pool, d), Value()) for d in domains]
            v.reasons = sorted({why for x in dv for why in x.reasons})
            v.unfinished = sorted({u for x in dv for u in x.unfinished})
            v.failures = list(dict.fromkeys(f for x in dv for f in x.failures))
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


def compare_rows(col: Collection, row_a: str, row_b: str, pool: str, tasks: list[str] | None = None,
                 analysis: str = "table") -> PairedResult | None:
    """Paired test of any two rows on the tasks both ran (a vs b, items averaged over seeds)."""
    entries = col.where(analysis, pool=pool)
    if row_b == BEST:
        row_a, row_b, flip = row_b, row_a, True
    else:
        flip = False
    base = baselines(entries) if row_a == BEST else {}
    ms, bs = [], []
    for tk in tasks or list(dict.fromkeys(e["task"] for e in entries)):
        b_runs = [e for e in seed_groups([e for e in entries if e["label"] == row_b and e["task"] == tk]) if e.ok]
        if row_a == BEST:
            if (pool, tk) not in base:
                continue
            a_items = base[(pool, tk)].items
        else:
            a_runs = [e for e in seed_groups([e for e in entries if e["label"] == row_a and e["task"] == tk]) if e.ok]
            if not a_runs:
                continue
            a_items = _per_item(a_runs, lambda p: p.score)
        if not b_runs:
            continue
        b_items = _per_item(b_runs, lambda p: p.score)
        common = sorted(set(a_items) & set(b_items))
        if common:
            ms.append([a_items[i][1] for i in common])
            bs.append([b_items[i][1] for i in common])
    if not ms:
        return None
    return paired_test(bs, ms) if flip else paired_test(ms, bs)


# ----------------------------------------------------------------------------------------------- rendering
def mark(v: Value) -> str:
    return " ↑" if v.improved else " (↑)" if v.point else " ↓" if v.worse else ""


def cell_text(t: Table1, v: Value, markdown: bool = True) -> str:
    if v.value is None:
        if v.failures:  # a failed cell says why (a re-run of `moco compare` retries it)
            why = v.failures[0].replace("|", "/")
            return f"failed ({why[:80]}{'…' if len(why) > 80 else ''})"
        if not v.reasons:
            return sorted(set(v.unfinished))[0] if v.unfinished else ""
        return "/" + "".join(f"^{t.footnote(r)}" for r in sorted(set(v.reasons), key=t.footnote)[:3]) if markdown \
            else "/"
    s = f"{v.value:.3f}" + (f" ± {v.std:.3f}" if v.std is not None else "") + ("*" if v.partial else "")
    if v.failures:
        s += f" (+{len(v.failures)} failed)"
    if v.over and v.over[2]:
        s += f" (over {v.over[0]} of {v.over[1]} items, {v.over[2]} failed)"
    s += mark(v)
    if markdown:
        if v.rank == 1:
            s = f"**{s}**"
        elif v.rank == 2:
            s = f"_{s}_"
    return s


def legend(t: Table1) -> str:
    seeds = (f"mean ± std over seeds {', '.join(map(str, t.seeds))}; " if len(t.seeds) > 1 else "")
    corr = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no"}[t.correction]
    return (f"{seeds}↑ beats the best single model on the same tasks and a paired test on the same items confirms "
            f"it (α = {t.alpha:g}, {corr} correction over the {len(t.tests)} tested cells); (↑) a point improvement "
            f"the test does not confirm; ↓ significantly worse; **best** and _second_ per column; \\* some tasks or "
            f"seeds missing; / cannot run on this setting:")


def value_rows(t: Table1) -> list[list[str]]:
    """One row per value of the table: pool, column, method, value, ± std over seeds, per-seed values, 95% CI
    (or why there is none), the tasks it averages."""
    out = []
    for p in t.pools:
        for r in t.rows:
            for c in t.columns[p]:
                v = t.values.get((r, p, c))
                if v is None or v.value is None:
                    continue
                out.append([p, c, r, f"{v.value:.3f}", "" if v.std is None else f"{v.std:.3f}",
                            ", ".join(f"{sd}: {x:.3f}" for sd, x in v.per_seed.items()) if len(v.per_seed) > 1 else "",
                            v.ci.text() if v.ci is not None else "(not computed)",
                            ", ".join(v.tasks) if c != "avg" else "all domains"])
    return out


VALUE_HEADERS = ["pool", "column", "method", "value", "± std over seeds", "per seed", "95% CI", "tasks"]


TEST_HEADERS = ["pool", "column", "method", "Δ vs best single", "95% CI of Δ", "test", "p", "p adjusted", "verdict"]


def to_markdown(t: Table1, intervals: bool = True) -> str:
    """Table 1 as markdown, its legend, footnotes and share; with `intervals`, every value's 95% interval
    and the paired tests (Δ, its interval, p, adjusted p) below it."""
    cols = [(p, c) for p in t.pools for c in t.columns[p]]
    head = "| method | " + " | ".join(f"{p} · {c}" for p, c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in t.rows:
        cells = [cell_text(t, t.get(r, p, c)) for p, c in cols]
        if any(cells):
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(legend(t))
    for i, r in enumerate(t.reasons, 1):
        lines.append(f"{i}. {r}")
    lines.append("")
    lines.append(share_line(t))
    if intervals:
        lines += ["", "Every value with its 95% BCa interval (items' seed-means, resampled within each task):", "",
                  "| " + " | ".join(VALUE_HEADERS) + " |", "|" + "---|" * len(VALUE_HEADERS)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in value_rows(t)]
        lines += ["", f"Paired tests against the best single model (p adjusted: {t.correction}, α = {t.alpha:g}):", "",
                  "| " + " | ".join(TEST_HEADERS) + " |", "|" + "---|" * len(TEST_HEADERS)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in test_rows(t)]
    return "\n".join(lines) + "\n"


def share_line(t: Table1) -> str:
    if not t.comparable:
        return "collaboration vs best single model: no comparable setting (single_model runs are needed)"
    s = (f"collaboration beats the best single model in {t.point_improved} of {t.comparable} (method, pool, domain) "
         f"settings on the point estimate = {100 * t.point_share:.1f}%, significantly in {t.improved} = "
         f"{100 * t.share:.1f}%")
    if t.task_comparable:
        s += (f"; per task: {t.task_point_improved} of {t.task_comparable} = "
              f"{100 * t.task_point_improved / t.task_comparable:.1f}% (point), {t.task_improved} = "
              f"{100 * t.task_share:.1f}% (significant)")
    # no interval: these are counts over the table's own settings (a census of what was run), not an estimate
    # from a sample of settings; each setting's own uncertainty is in its paired test
    return s + " (shares of this table's settings: no interval; each setting's paired test is listed)"


def test_rows(t: Table1) -> list[list[str]]:
    """One row per tested cell: pool, column, method, difference, 95% CI, test, p, adjusted p, verdict."""
    out = []
    for k in t.tests:
        v = t.values[k]
        r = v.test
        if r is None:
            out.append([k[1], k[2], k[0], "", "", "none", "", "", "no paired items"])
            continue
        test = r.test + (f" ({r.mcnemar.better}:{r.mcnemar.worse} discordant)" if r.test == "mcnemar" else "")
        verdict = "↑ significant" if v.improved else "↓ significant" if v.worse else \
            "(↑) not significant" if v.point else "no improvement"
        out.append([k[1], k[2], k[0], f"{r.diff:+.3f}", r.ci.text(), test,
                    "" if r.p is None else f"{r.p:.4f}", "" if v.p_adj is None else f"{v.p_adj:.4f}",
                    verdict + (f"; {r.note}" if r.note else "")])
    return out
