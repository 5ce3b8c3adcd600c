"""Collaborative emergence (paper Figure 4): of the test items that no single model of the pool solves, the
share the collaborative system solves.

Per-item scores of every single model come from single_model's predictions (trace["scores"]; older runs
without them are re-scored from trace["answers"]), the system's from the method's predictions. Items are
matched by their position in the test split and must have the same ids in both runs. An item counts as
solved when its score reaches `threshold` (any value in (0, 1] is the same for accuracy). With seeds, each
seed's method run is paired with the same seed's single_model run, and rows stay per seed; `over_seeds` adds
one row per setting pooled over seeds (Σ rescued / Σ impossible, ± the std of the per-seed shares), whose
interval resamples items (each item with all its seeds, as a ratio: items repeat across seeds).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from moco.analysis.records import Collection, Run
from moco.errors import ConfigError
from moco.records_schema import PredictionRecord
from moco.scoring.stats import TOO_FEW, Interval, mean_ci, mean_std, ratio_ci

BASELINE = "single_model"


@dataclass
class EmergenceRow:
    pool: str
    task: str
    domain: str
    label: str
    n: int  # items compared
    impossible: int  # items no single model solves
    rescued: int  # of those, items the method solves
    lost: int = 0  # items some single model solves but the method does not
    seed: int | str = 0  # "all": pooled over seeds (over_seeds)
    # (task, item index) -> (no single model solves it, the system solves it)
    outcomes: dict[tuple[str, int], tuple[bool, bool]] = field(default_factory=dict, repr=False)
    std: float | None = None  # over seeds (pooled rows)
    ci: Interval | None = None  # pooled rows: the item-resampled ratio interval

    @property
    def share(self) -> float | None:
        return self.rescued / self.impossible if self.impossible else None

    def share_ci(self) -> Interval:
        """BCa interval of the share: the mean of a 0/1 outcome over the 'impossible' items."""
        if self.ci is not None:
            return self.ci
        return mean_ci([1.0] * self.rescued + [0.0] * (self.impossible - self.rescued))


def single_item_scores(run: Run) -> dict[int, tuple[str, dict[str, float]]]:
    """index -> (id, {model: score}) from a single_model run."""
    preds = run.predictions()
    out: dict[int, tuple[str, dict[str, float]]] = {}
    need_rescore = [p for p in preds if p.gold is not None and "scores" not in (p.trace or {})]
    rescored = _rescore(run, need_rescore) if need_rescore else {}
    for p in preds:
        tr = p.trace or {}
        if "scores" in tr:
            out[p.index] = (str(p.id), {k: float(v) for k, v in tr["scores"].items()})
        elif p.index in rescored:
            out[p.index] = (str(p.id), rescored[p.index])
    return out


def _rescore(run: Run, preds: list[PredictionRecord]) -> dict[int, dict[str, float]]:
    """Score each model's answer text again with the task's scorer (runs made before per-item scores)."""
    from moco.scoring import scorer_for
    from moco.tasks.registry import resolve_task

    task_cfg = run.config.get("task") or {}
    name = task_cfg.get("name") if isinstance(task_cfg, dict) else task_cfg
    if not name:
        raise ConfigError(f"{run.dir}: single_model predictions lack per-model scores and the config names no task")
    task = resolve_task(name, task_cfg.get("data_dir") if isinstance(task_cfg, dict) else None).loader()
    scorer = scorer_for(run.record.task_type or task.task_type, task.name)
    by_index = {ex.index: ex for ex in task.test}
    out = {}
    for p in preds:
        ex = by_index.get(p.index)
        answers = (p.trace or {}).get("answers")
        if ex is None or not answers:
            continue
        out[p.index] = {m: scorer.score(ex, text or "").score for m, text in answers.items()}
    return out


def outcomes(single: Run, system: Run, threshold: float = 0.5) -> dict[int, tuple[bool, bool, bool]]:
    """index -> (no single model solves it, some single model does, the system solves it) per compared item."""
    per_model = single_item_scores(single)
    out = {}
    for p in system.predictions():
        if p.score is None:
            continue
        idx = p.index
        if idx not in per_model:
            continue
        sid, scores = per_model[idx]
        if p.id is not None and str(p.id) != sid:
            raise ConfigError(f"item {idx} is '{p.id}' in {system.dir} but '{sid}' in {single.dir}: "
                              "the runs used different test sets")
        any_single = any(s >= threshold for s in scores.values())
        out[idx] = (not any_single, any_single, p.score >= threshold)
    return out


def compare(single: Run, system: Run, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(items compared, impossible for every single model, rescued by the system, lost by the system)."""
    o = outcomes(single, system, threshold).values()
    return (len(o), sum(imp for imp, _, _ in o), sum(imp and sol for imp, _, sol in o),
            sum(some and not sol for _, some, sol in o))


def emergence(col: Collection, analysis: str = "table", threshold: float = 0.5) -> list[EmergenceRow]:
    entries = [e for e in col.where(analysis) if e.ok]
    singles = {(e["pool"], e["task"], e.get("seed", 0)): e.run for e in entries if e["method"] == BASELINE}
    rows = []
    for e in entries:
        key = (e["pool"], e["task"], e.get("seed", 0))
        if e["method"] == BASELINE or key not in singles:
            continue
        o = outcomes(singles[key], e.run, threshold)
        rows.append(EmergenceRow(e["pool"], e["task"], e["domain"], e["label"], len(o),
                                 sum(imp for imp, _, _ in o.values()), sum(imp and sol for imp, _, sol in o.values()),
                                 sum(some and not sol for _, some, sol in o.values()), e.get("seed", 0),
                                 {(e["task"], i): (imp, sol) for i, (imp, _, sol) in o.items()}))
    return rows


def by_domain(rows: list[EmergenceRow]) -> list[EmergenceRow]:
    """Pooled over the tasks of each domain (per seed): rescued / impossible summed over tasks."""
    acc: dict[tuple[str, str, str, int], EmergenceRow] = {}
    for r in rows:
        k = (r.pool, r.domain, r.label, r.seed)
        a = acc.setdefault(k, EmergenceRow(r.pool, "*", r.domain, r.label, 0, 0, 0, 0, r.seed))
        a.n += r.n
        a.impossible += r.impossible
        a.rescued += r.rescued
        a.lost += r.lost
        a.outcomes.update(r.outcomes)
    return list(acc.values())


def over_seeds(rows: list[EmergenceRow]) -> list[EmergenceRow]:
    """One row per (pool, task or domain, method) with several seeds: counts summed over seeds, share =
    Σ rescued / Σ impossible, std of the per-seed shares, and the interval of that ratio with items resampled
    (each item carrying its counts over seeds)."""
    groups: dict[tuple[str, str, str, str], list[EmergenceRow]] = defaultdict(list)
    for r in rows:
        groups[(r.pool, r.task, r.domain, r.label)].append(r)
    out = []
    for (pool, task, domain, label), rs in groups.items():
        if len(rs) < 2:
            continue
        a = EmergenceRow(pool, task, domain, label, sum(r.n for r in rs), sum(r.impossible for r in rs),
                         sum(r.rescued for r in rs), sum(r.lost for r in rs), "all")
        a.std = mean_std([r.share for r in rs if r.share is not None])[1]
        per_item: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        for r in rs:
            for k, (imp, sol) in r.outcomes.items():
                per_item[k][0] += int(imp and sol)
                per_item[k][1] += int(imp)
        counts = [v for v in per_item.values() if v[1]]
        a.ci = ratio_ci([v[0] for v in counts], [v[1] for v in counts]) if counts else Interval(None, None, TOO_FEW)
        out.append(a)
    return out
