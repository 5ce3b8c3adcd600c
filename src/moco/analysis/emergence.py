"""Collaborative emergence (paper Figure 4): of the test items that no single model of the pool solves, the
share the collaborative system solves.

Per-item scores of every single model come from single_model's predictions (trace["scores"]; older runs
without them are re-scored from trace["answers"]), the system's from the method's predictions. Items are
matched by their position in the test split and must have the same ids in both runs. An item counts as
solved when its score reaches `threshold` (any value in (0, 1] is the same for accuracy). With seeds, each
seed's method run is paired with the same seed's single_model run, and rows stay per seed (the interval of
a share is over its items, which repeat across seeds, so seeds are not pooled).
"""
from __future__ import annotations

from dataclasses import dataclass

from moco.analysis.records import Collection, Run
from moco.errors import ConfigError
from moco.scoring.stats import Interval, mean_ci

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
    seed: int = 0

    @property
    def share(self) -> float | None:
        return self.rescued / self.impossible if self.impossible else None

    def share_ci(self) -> Interval:
        """BCa interval of the share: the mean of a 0/1 outcome over the 'impossible' items."""
        return mean_ci([1.0] * self.rescued + [0.0] * (self.impossible - self.rescued))


def single_item_scores(run: Run) -> dict[int, tuple[str, dict[str, float]]]:
    """index -> (id, {model: score}) from a single_model run."""
    preds = run.predictions()
    out: dict[int, tuple[str, dict[str, float]]] = {}
    need_rescore = [p for p in preds if p.get("gold") is not None and "scores" not in (p.get("trace") or {})]
    rescored = _rescore(run, need_rescore) if need_rescore else {}
    for p in preds:
        tr = p.get("trace") or {}
        if "scores" in tr:
            out[int(p["index"])] = (str(p.get("id")), {k: float(v) for k, v in tr["scores"].items()})
        elif int(p["index"]) in rescored:
            out[int(p["index"])] = (str(p.get("id")), rescored[int(p["index"])])
    return out


def _rescore(run: Run, preds: list[dict]) -> dict[int, dict[str, float]]:
    """Score each model's answer text again with the task's scorer (runs made before per-item scores)."""
    from moco.scoring import scorer_for
    from moco.tasks.registry import resolve_task

    task_cfg = run.config.get("task") or {}
    name = task_cfg.get("name") if isinstance(task_cfg, dict) else task_cfg
    if not name:
        raise ConfigError(f"{run.dir}: single_model predictions lack per-model scores and the config names no task")
    task = resolve_task(name, task_cfg.get("data_dir") if isinstance(task_cfg, dict) else None).loader()
    scorer = scorer_for(run.metrics.get("task_type") or task.task_type, task.name)
    by_index = {ex.index: ex for ex in task.test}
    out = {}
    for p in preds:
        ex = by_index.get(int(p["index"]))
        answers = (p.get("trace") or {}).get("answers")
        if ex is None or not answers:
            continue
        out[int(p["index"])] = {m: scorer.score(ex, text or "").score for m, text in answers.items()}
    return out


def compare(single: Run, system: Run, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(items compared, impossible for every single model, rescued by the system, lost by the system)."""
    per_model = single_item_scores(single)
    n = impossible = rescued = lost = 0
    for p in system.predictions():
        if p.get("score") is None:
            continue
        idx = int(p["index"])
        if idx not in per_model:
            continue
        sid, scores = per_model[idx]
        if p.get("id") is not None and str(p["id"]) != sid:
            raise ConfigError(f"item {idx} is '{p['id']}' in {system.dir} but '{sid}' in {single.dir}: "
                              "the runs used different test sets")
        n += 1
        any_single = any(s >= threshold for s in scores.values())
        solved = float(p["score"]) >= threshold
        if not any_single:
            impossible += 1
            rescued += int(solved)
        elif not solved:
            lost += 1
    return n, impossible, rescued, lost


def emergence(col: Collection, analysis: str = "table", threshold: float = 0.5) -> list[EmergenceRow]:
    entries = [e for e in col.where(analysis) if e.ok]
    singles = {(e["pool"], e["task"], e.get("seed", 0)): e.run for e in entries if e["method"] == BASELINE}
    rows = []
    for e in entries:
        key = (e["pool"], e["task"], e.get("seed", 0))
        if e["method"] == BASELINE or key not in singles:
            continue
        n, imp, res, lost = compare(singles[key], e.run, threshold)
        rows.append(EmergenceRow(e["pool"], e["task"], e["domain"], e["label"], n, imp, res, lost, e.get("seed", 0)))
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
    return list(acc.values())
