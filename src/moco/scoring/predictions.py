"""`moco score`: score responses produced anywhere else against a task's gold answers.

Input: JSONL lines `{"id": ..., "response": ...}` (`output` or `text` are accepted for `response`; a run's own
predictions.jsonl works as is). Items are matched by id; datasets with duplicated ids (math, blend) need the
`index` field (the item's position in its split), which predictions.jsonl of a run carries. Output: the same
metrics block as a run (metrics.json) and one line per scored item (scores.jsonl).
Every line read and every record written goes through the typed schema (moco.records_schema: ResponseRecord
in, ScoredRecord and PredictionRecord out); a line that does not fit is a one-line error naming file, line and
field.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from moco.errors import ConfigError, DataError
from moco.records_schema import PredictionRecord, ResponseRecord, ScoredRecord, read_record, write_record
from moco.scoring.evaluate import prediction_row, score_items, summarize_results
from moco.tasks.base import Example, Task
from moco.tasks.user_data import read_rows


def read_predictions(path: Path) -> list[tuple[int, ResponseRecord]]:
    """(line number, typed response) for each line of a JSONL file."""
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"{path}: predictions must be a .jsonl file (one JSON object per line)")
    rows = []
    for n, row in enumerate(read_rows(path), 1):
        rows.append((n, read_record(ResponseRecord, row, f"{path}: line {n}", DataError)))
    if not rows:
        raise DataError(f"{path}: no predictions")
    return rows


def match(examples: list[Example], preds: list[tuple[int, ResponseRecord]],
          path: Path) -> list[tuple[Example, ResponseRecord]]:
    """Pair each response with its item: by `index` when given, else by id (which must be unique)."""
    by_id: dict[str, list[Example]] = {}
    for ex in examples:
        by_id.setdefault(ex.id, []).append(ex)
    by_index = {ex.index: ex for ex in examples}
    pairs, seen = [], Counter()
    for line, p in preds:
        if p.index is not None:
            ex = by_index.get(p.index)
            if ex is None:
                raise DataError(f"{path}: line {line}: no item with index {p.index} in this split")
            if p.id is not None and str(p.id) != ex.id:
                raise DataError(f"{path}: line {line}: index {p.index} is item {ex.id!r}, not {p.id!r}")
        else:
            cands = by_id.get(str(p.id))
            if not cands:
                raise DataError(f"{path}: line {line}: no item with id {p.id!r} in this split")
            if len(cands) > 1:
                raise DataError(f"{path}: line {line}: id {p.id!r} is duplicated in this dataset; "
                                "give the item's 'index' as well")
            ex = cands[0]
        seen[ex.uid] += 1
        if seen[ex.uid] > 1:
            raise DataError(f"{path}: line {line}: a second prediction for item {ex.id!r}")
        pairs.append((ex, p))
    return pairs


def score_predictions(task: Task, split: str, path: Path, scorer: Any, ctx: Any = None,
                      seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-item rows, metrics) for the predictions in `path` on `split` of `task`."""
    examples = task.split(split)
    if not examples:
        raise ConfigError(f"task {task.name} has no {split} split")
    pairs = match(examples, read_predictions(path), path)
    exs = [ex for ex, _ in pairs]
    texts = [p.answer for _, p in pairs]
    results = score_items(scorer, ctx, exs, texts)
    rows = [write_record(PredictionRecord, prediction_row(ex, t, r), stamp=False)
            for ex, t, r in zip(exs, texts, results)]
    metrics = {"task": task.name, "task_type": task.task_type, "split": split, "predictions": str(path),
               **summarize_results(scorer, exs, results, seed=seed),
               f"n_{split}": len(examples), "missing": len(examples) - len(pairs)}
    if ctx is not None:
        metrics["phases"] = {k: v.to_dict() for k, v in ctx.recorder.phases.items()}
    return rows, write_record(ScoredRecord, metrics)


def scoring_context(task: Task, scorer: Any, role_models: dict[str, str | None], out_dir: Path, seed: int = 0):
    """A run context for a model-based scorer outside a run (its role bound to a model given on the CLI)."""
    from moco.cache import ResponseCache
    from moco.config import DecodingSettings, ModelSpec
    from moco.context import RunContext
    from moco.models.pool import ModelPool
    from moco.trace import CallRecorder

    role = getattr(scorer, "role", None)
    if role is None:
        return None
    model = role_models.get(role)
    if not model:
        raise ConfigError(f"scorer '{scorer.name}' needs a model for the role '{role}': pass --{role} MODEL")
    pool = ModelPool([])
    handle = pool.add_extra(role, ModelSpec(model=model))
    pool.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(pool=pool, task=task, scorer=scorer, cache=ResponseCache(), recorder=CallRecorder(out_dir / "calls.jsonl"),
                      decoding=DecodingSettings(), seed=seed, roles={role: handle})
