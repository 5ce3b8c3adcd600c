"""Read run directories and sweep directories into `Entry` rows that every analysis works on.

An entry is one *use* of one run: which analysis it serves, the pool label, the method label, the task and
its domain, plus analysis-specific fields (n_models, unique/copies, without, variant, strategy...). A sweep
directory lists its cells' uses in index.json (incompatible cells included, with the reason); a bare run
directory becomes one Table-1 entry whose pool is named after its models. A sweep with `seeds` has one
entry per seed (its use carries `seed`); `seed_groups` / `setting_key` and moco.analysis.seeds put them back
together. Every file is read through the typed schema of moco.records_schema.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moco.errors import ConfigError
from moco.records_schema import IndexRecord, MetricsRecord, PredictionRecord, read_record


@dataclass
class Run:
    dir: Path
    metrics: dict[str, Any]  # metrics.json as written (methods' own extra metrics included)
    config: dict[str, Any]
    record: MetricsRecord | None = None  # the same, typed (moco.records_schema)
    _predictions: list[PredictionRecord] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.record is None:
            self.record = read_record(MetricsRecord, self.metrics, f"{self.dir}/metrics.json")

    @property
    def score(self) -> float:
        if self.record.score is None:
            raise ConfigError(f"{self.dir}: the run has no score (generation-only task)")
        return float(self.record.score)

    @property
    def ci(self) -> tuple[float, float] | None:
        ci = self.record.ci95
        return (float(ci[0]), float(ci[1])) if ci else None

    @property
    def models(self) -> list[str]:
        return list(self.record.models)

    def predictions(self) -> list[PredictionRecord]:
        """predictions.jsonl, each line parsed as a moco.records_schema.PredictionRecord."""
        if self._predictions is None:
            f = self.dir / "predictions.jsonl"
            if not f.exists():
                raise ConfigError(f"{self.dir} has no predictions.jsonl")
            rows = []
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise ConfigError(f"{f}:{i} is not valid JSON: {e}") from None
                    rows.append(read_record(PredictionRecord, row, f"{f}:{i}"))
            self._predictions = rows
        return self._predictions


@dataclass
class Entry:
    use: dict[str, Any]
    status: str  # finished | incompatible | failed | pending
    run: Run | None = None
    reason: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.use[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.use.get(key, default)

    @property
    def ok(self) -> bool:
        return self.status == "finished" and self.run is not None


@dataclass
class Collection:
    entries: list[Entry]
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # index.json of each sweep read

    def where(self, analysis: str | None = None, **match: Any) -> list[Entry]:
        return [e for e in self.entries if (analysis is None or e.get("analysis") == analysis)
                and all(e.get(k) == v for k, v in match.items())]

    def runs(self) -> list[Run]:
        seen: dict[Path, Run] = {}
        for e in self.entries:
            if e.ok:
                seen.setdefault(e.run.dir.resolve(), e.run)
        return list(seen.values())


SEED_KEYS = ("seed", "multi_seed")


def seed_groups(entries: list[Entry]) -> list[Entry]:
    """The entries of one setting, one per seed (a setting listed twice for one seed counts once)."""
    return list({int(e.get("seed", 0) or 0): e for e in entries}.values())


def setting_key(e: Entry) -> str:
    """What identifies a setting across seeds: its use without the seed."""
    return json.dumps({k: v for k, v in e.use.items() if k not in SEED_KEYS}, sort_keys=True, default=str)


def item_scores(run: Run) -> dict[int, tuple[str, PredictionRecord]]:
    """index -> (item id, prediction) of a run's test items."""
    return {p.index: (str(p.id), p) for p in run.predictions()}


def domain_of(task: str) -> str:
    from moco.tasks.registry import CATALOG, builtin_tasks

    if task in CATALOG:
        return CATALOG[task][0]
    b = builtin_tasks()
    return b[task].domain if task in b else "general"


def load_run(path: Path) -> Run:
    path = Path(path)
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except OSError:
        raise ConfigError(f"{path} is not a finished run directory (no metrics.json)") from None
    except ValueError as e:
        raise ConfigError(f"{path}/metrics.json is not valid JSON: {e}") from None
    cfg: dict[str, Any] = {}
    if (path / "config.yaml").exists():
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    for key in ("method", "task", "score"):
        if key not in metrics:
            raise ConfigError(f"{path}/metrics.json has no '{key}'")
    return Run(path, metrics, cfg, read_record(MetricsRecord, metrics, f"{path}/metrics.json"))


def bare_entry(run: Run) -> Entry:
    pool = "+".join(run.models) or "pool"
    m = run.record
    failed = m.score is None and not m.generation_only  # model calls failed: no score
    return Entry({"analysis": "table", "pool": pool, "base_pool": pool, "label": m.method, "method": m.method,
                  "task": m.task, "domain": domain_of(m.task)}, "failed" if failed else "finished", run,
                 m.score_note if failed else None)


def load_sweep_dir(root: Path) -> tuple[list[Entry], dict[str, Any]]:
    try:
        index = json.loads((root / "index.json").read_text())
    except ValueError as e:
        raise ConfigError(f"{root}/index.json is not valid JSON: {e}") from None
    rec = read_record(IndexRecord, index, f"{root}/index.json")
    entries = []
    for cell in rec.cells:
        run = None
        status = cell.status
        if status == "finished":
            if cell.dir is None:
                raise ConfigError(f"{root}/index.json: a finished cell has no 'dir'")
            if (root / cell.dir / "metrics.json").exists():
                run = load_run(root / cell.dir)  # a record that does not parse is an error, not "pending"
            else:
                status = "pending"
        for use in cell.uses:
            entries.append(Entry(dict(use), status, run, cell.reason))
    index["root"] = str(root)
    return entries, index


def load(paths: list[str | Path]) -> Collection:
    """Sweep directories (index.json), run directories (metrics.json), or folders holding run directories."""
    entries: list[Entry] = []
    sweeps: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"not found: {p}")
        if (p / "index.json").exists():
            e, idx = load_sweep_dir(p)
            entries += e
            sweeps.append(idx)
        elif (p / "metrics.json").exists():
            entries.append(bare_entry(load_run(p)))
        else:
            found = sorted({m.parent for m in p.rglob("metrics.json")})
            if not found:
                raise ConfigError(f"{p} holds no run directory (no metrics.json) and no sweep (no index.json)")
            entries += [bare_entry(load_run(d)) for d in found]
    return Collection(entries, sweeps)
