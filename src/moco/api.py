"""The Python API: `moco.run`, `moco.compare`, `moco.score` for notebooks and scripts.

The same pipeline as the CLI (plan -> pool -> method -> score), with typed results instead of dicts. A run
either writes its run directory (as `moco run` does) or, with `in_memory=True`, leaves nothing on disk.
Models a run loads are released when it ends (`keep_models=True` keeps them resident for the next run), so
two runs in one kernel do not share state unless asked.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moco.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from moco.config import ExperimentConfig

    ConfigLike = ExperimentConfig | Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class Cost:
    """What the method spent (the scorer's own model calls are not included, as in metrics.json)."""

    calls: int
    tokens_in: int
    tokens_out: int
    compute_s: float
    wall_s: float

    @classmethod
    def from_metrics(cls, m: Mapping[str, Any]) -> Cost:
        t = m.get("total") or {}
        return cls(int(t.get("calls", 0)), int(t.get("tokens_in", 0)), int(t.get("tokens_out", 0)),
                   float(t.get("compute_s", 0.0)), float(m.get("wall_s", 0.0)))


@dataclass(frozen=True)
class RunResult:
    """One run: its score with the bootstrap interval, per-item predictions, cost and the full metrics."""

    method: str
    task: str
    metric: str | None
    score: float | None  # None for a generation-only task (no gold answers)
    interval: tuple[float, float] | None  # 95% bootstrap CI
    n: int
    predictions: list[dict[str, Any]] = field(repr=False)
    cost: Cost = field(default_factory=lambda: Cost(0, 0, 0, 0.0, 0.0))
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)
    run_dir: Path | None = None  # None for an in-memory run

    @classmethod
    def from_run(cls, metrics: dict[str, Any], predictions: list[dict[str, Any]], run_dir: Path | None) -> RunResult:
        ci = metrics.get("ci95")
        return cls(metrics["method"], metrics["task"], metrics.get("metric"), metrics.get("score"),
                   tuple(ci) if ci else None, int(metrics.get("n", len(predictions))), predictions,
                   Cost.from_metrics(metrics), metrics, run_dir)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per test item (id, output, extracted answer, gold, score ...); the trace stays out."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in p.items() if k != "trace"} for p in self.predictions])


@dataclass(frozen=True)
class Comparison:
    """Several runs side by side (same process, same response cache)."""

    results: dict[str, RunResult]

    def __getitem__(self, label: str) -> RunResult:
        return self.results[label]

    def to_pandas(self) -> pandas.DataFrame:
        """One row per run: label, method, task, score, interval, n and cost."""
        import pandas as pd

        return pd.DataFrame([{"label": k, "method": r.method, "task": r.task, "metric": r.metric, "score": r.score,
                              "ci_low": r.interval[0] if r.interval else None,
                              "ci_high": r.interval[1] if r.interval else None, "n": r.n, "calls": r.cost.calls,
                              "tokens_out": r.cost.tokens_out, "compute_s": r.cost.compute_s}
                             for k, r in self.results.items()])


@dataclass(frozen=True)
class ScoreResult:
    """Responses produced elsewhere, scored as a run would score them."""

    task: str
    metric: str | None
    score: float | None
    interval: tuple[float, float] | None
    n: int
    rows: list[dict[str, Any]] = field(repr=False)
    metrics: dict[str, Any] = field(repr=False)

    def to_pandas(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)


def _overrides(kw: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword overrides: `decoding__temperature=0` is the dotted key `decoding.temperature`."""
    return {k.replace("__", "."): v for k, v in kw.items()}


@contextmanager
def _released(keep_models: bool) -> Iterator[None]:
    """Unload, at the end, every model this block made resident (pool backends, encoders, reward models)."""
    from moco.models import encoder
    from moco.models.pool import RESIDENT
    from moco.scoring import reward_model

    before = set(RESIDENT.backends), set(encoder._LOADED), set(reward_model._LOADED)
    try:
        yield
    finally:
        if not keep_models:
            with RESIDENT.lock:
                for key in [k for k in RESIDENT.backends if k not in before[0]]:
                    RESIDENT.backends.pop(key).close()
                    RESIDENT.sizes.pop(key, None)
            for cache, old in ((encoder._LOADED, before[1]), (reward_model._LOADED, before[2])):
                for key in [k for k in cache if k not in old]:
                    closer = getattr(cache.pop(key), "close", None)
                    if closer is not None:
                        closer()


def run(config: ConfigLike, *, limit: int | None = None, seed: int | None = None,
        set: Mapping[str, Any] | None = None, out: str | Path | None = None, in_memory: bool = False,
        data_dir: str | None = None, cache: Any = None, backends: Mapping[str, Any] | None = None,
        keep_models: bool = False, **overrides: Any) -> RunResult:
    """Run one experiment. `config` is a path, a dict or an ExperimentConfig; overrides are checked like the
    file: `limit`, `seed`, `set={"decoding.temperature": 0}` or keywords (`decoding__temperature=0`).
    `in_memory=True` writes no run directory; `cache=False` reads and writes no response cache."""
    from moco.cache import NullCache
    from moco.overrides import config_with_overrides
    from moco.runner import run_experiment

    if in_memory and out is not None:
        raise ConfigError("give either out= (a run directory) or in_memory=True, not both")
    cfg = config_with_overrides(config, {**_overrides(overrides), **dict(set or {})}, limit=limit, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix="moco-run-")) if in_memory else None
    try:
        with _released(keep_models):
            res = run_experiment(cfg, tmp / "run" if tmp else out, data_dir=data_dir,
                                 cache=NullCache() if cache is False else cache, backends=dict(backends or {}))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return RunResult.from_run(res.metrics, res.predictions, None if in_memory else res.run_dir)


def compare(configs: Sequence[ConfigLike] | Mapping[str, ConfigLike], **common: Any) -> Comparison:
    """Run several configs with the same overrides (`limit`, `seed`, `in_memory`, ...); labels are the dict's
    keys, else the method names (numbered when one repeats)."""
    items = list(configs.items()) if isinstance(configs, Mapping) else [(None, c) for c in configs]
    results: dict[str, RunResult] = {}
    for label, cfg in items:
        r = run(cfg, **common)
        key = label or r.method
        if key in results:
            key = f"{key}#{sum(k.split('#')[0] == key for k in results) + 1}"
        results[key] = r
    return Comparison(results)


def score(task: str, predictions: Sequence[str] | Sequence[Mapping[str, Any]] | str | Path, *, split: str = "test",
          scorer: str | None = None, judge: str | None = None, reward: str | None = None,
          data_dir: str | None = None, seed: int = 0) -> ScoreResult:
    """Score responses produced elsewhere: a JSONL path ({"id"/"index", "response"} per line), a list of such
    dicts, or a list of strings in the split's item order."""
    import json

    from moco.config import TaskSettings
    from moco.scoring import scorer_for
    from moco.score_context import scoring_context
    from moco.scoring.predictions import score_predictions
    from moco.tasks.registry import load_task

    if split not in ("test", "dev"):
        raise ConfigError(f"split must be test or dev, got '{split}'")
    t = load_task(TaskSettings(name=task), data_dir)
    sc = scorer_for("generation", t.name) if t.generation_only else scorer_for(t.task_type, t.name, scorer)
    with tempfile.TemporaryDirectory(prefix="moco-score-") as d:
        path = Path(predictions) if isinstance(predictions, (str, Path)) else Path(d) / "predictions.jsonl"
        if not isinstance(predictions, (str, Path)):
            rows = [{"index": i, "response": p} if isinstance(p, str) else dict(p) for i, p in enumerate(predictions)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        ctx = scoring_context(t, sc, {"judge": judge, "reward": reward}, Path(d) / "scores", seed)
        rows, metrics = score_predictions(t, split, path, sc, ctx, seed=seed)
    ci = metrics.get("ci95")
    return ScoreResult(t.name, metrics.get("metric"), metrics.get("score"), tuple(ci) if ci else None,
                       int(metrics.get("n", len(rows))), rows, metrics)


def release_models() -> None:
    """Unload every resident model of this process (what `keep_models=True` kept)."""
    from moco.models import encoder
    from moco.models.pool import unload_all
    from moco.scoring import reward_model

    unload_all()
    encoder._LOADED.clear()
    reward_model._LOADED.clear()
