"""Score a split's responses and summarise them: shared by `moco run` and `moco score`, so both write the
same metrics (mean, 95% bootstrap interval, items scored / unparsed / failed, strict score, group summary)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from moco import aio
from moco.scoring.base import ScoreResult, score_with
from moco.scoring.stats import summarize
from moco.tasks.base import Example


class Phases(Protocol):
    """What scoring uses of a run: the phase its model calls are accounted to (a `RunContext` is one)."""

    def phase(self, name: str) -> AbstractContextManager[None]: ...


def is_generation_only(scorer: Any) -> bool:
    return getattr(scorer, "name", "") == "generation_only"


async def score_items_async(scorer: Any, ctx: Phases | None, examples: Sequence[Example], texts: Sequence[str],
                            answers: Sequence[str | None] | None = None, use_answer: Sequence[bool] | None = None,
                            failed: Sequence[bool] | None = None) -> list[ScoreResult | None]:
    """One result per example (None for generation-only tasks). Items whose method already extracted the
    answer (`use_answer`) are scored with `score_answer`; the rest go to the scorer as one batch (a judge: one
    batched call through the generation it is bound to), inside the phase "score" when a run is given. A
    failed output is not scored (None): a failure is not a wrong answer, so it is left out of the score and
    counted as failed."""
    n = len(examples)
    if is_generation_only(scorer):
        return [None] * n
    use_answer = list(use_answer or [False] * n)
    answers = list(answers or [None] * n)
    failed = list(failed or [False] * n)
    results: list[ScoreResult | None] = [None] * n
    batch = [i for i in range(n) if not use_answer[i] and not failed[i]]
    for i in range(n):
        if use_answer[i] and not failed[i]:
            results[i] = scorer.score_answer(examples[i], answers[i])
    if batch:
        exs, txts = [examples[i] for i in batch], [texts[i] for i in batch]
        with ctx.phase("score") if ctx is not None else nullcontext():
            got = await score_with(scorer, exs, txts)
        for i, r in zip(batch, got):
            results[i] = r
    return results


def score_items(scorer: Any, ctx: Phases | None, examples: Sequence[Example], texts: Sequence[str],
                answers: Sequence[str | None] | None = None, use_answer: Sequence[bool] | None = None,
                failed: Sequence[bool] | None = None) -> list[ScoreResult | None]:
    """`score_items_async` from synchronous code (transitional: no event loop may be running in this thread)."""
    return aio.run(score_items_async(scorer, ctx, examples, texts, answers, use_answer, failed))


def summarize_results(scorer: Any, examples: Sequence[Example], results: Sequence[ScoreResult | None],
                      failed: Sequence[bool] | None = None, seed: int = 0) -> dict[str, Any]:
    """The score block of metrics.json."""
    failed = list(failed or [False] * len(examples))
    head = {"scorer": getattr(scorer, "name", "?"), "metric": getattr(scorer, "metric", "?")}
    if is_generation_only(scorer):
        return {**head, "generation_only": True, "score": None, "ci95": None, "n": 0, "n_responses": len(examples),
                "unparsed": 0, "failed": sum(failed), "strict_score": None,
                "note": "no gold answers: responses written to predictions.jsonl, not scored"}
    scored = [(ex, r, f) for ex, r, f in zip(examples, results, failed) if r is not None and not f]
    scores = [r.score for _, r, _ in scored]
    unparsed = sum(1 for _, r, f in scored if r.extracted is None and not f)
    out = {**head, **summarize(scores, unparsed, sum(failed), seed=seed)}
    strict = [r.strict for _, r, _ in scored if r.strict is not None]
    out["strict_score"] = (sum(strict) / len(strict)) if strict else None
    if hasattr(scorer, "group_summary") and scored:
        out["groups"] = scorer.group_summary([s[0] for s in scored], [s[1] for s in scored], seed=seed)
    if hasattr(scorer, "comparison") and scored:  # llm_judge_vs_rules: where the judge and the rules disagree
        report = scorer.comparison([s[0] for s in scored], [s[1] for s in scored])
        if report is not None:
            out["judge_vs_rules"] = report
    if out["score"] is not None and isinstance(out["score"], float) and math.isnan(out["score"]):
        out["score"] = None
    return out


def prediction_row(ex: Example, text: str, result: ScoreResult | None, failed: bool = False) -> dict[str, Any]:
    """One line of predictions.jsonl / scores.jsonl."""
    row: dict[str, Any] = {"id": ex.id, "index": ex.index, "prompt": ex.prompt, "gold": ex.answer,
                           "output": text, "failed": failed}
    if result is not None:
        row.update(extracted=result.extracted, score=result.score, strict_score=result.strict)
        if result.detail:
            row["score_detail"] = result.detail
    return row


def _texts_by_model(part: Any) -> dict[str, str]:
    """{model: text} from a trace entry written as {model: text} or {model: {"output"/"text": text}}."""
    out: dict[str, str] = {}
    if not isinstance(part, dict):
        return out
    for name, v in part.items():
        if isinstance(v, str):
            out[str(name)] = v
        elif isinstance(v, dict) and isinstance(v.get("output", v.get("text")), str):
            out[str(name)] = v.get("output", v.get("text"))
    return out


def unparsed_breakdown(scorer: Any, examples: Sequence[Example], traces: Sequence[dict | None]) -> dict[str, Any] | None:
    """How many intermediate answers the scorer cannot read, per model and per round, from the methods' traces
    (`rounds`: [{model: output}], `answers` / `candidates`: {model: output}). A debate whose rounds or
    summaries are unparsable says so here. None when no trace has per-model outputs, or the scorer calls a
    model (a judge would be called again for every intermediate answer)."""
    if is_generation_only(scorer) or getattr(scorer, "role", None) or not hasattr(scorer, "extract"):
        return None
    per_model: dict[str, list[int]] = {}
    per_round: dict[int, dict[str, list[int]]] = {}

    def count(bucket: dict[str, list[int]], name: str, ex: Example, text: str) -> None:
        n_u = bucket.setdefault(name, [0, 0])
        n_u[0] += 1
        try:
            n_u[1] += scorer.extract(ex, text) is None
        except Exception:  # a scorer that cannot read this text at all: unparsed
            n_u[1] += 1

    for ex, trace in zip(examples, traces):
        if not isinstance(trace, dict):
            continue
        rounds = trace.get("rounds")
        if isinstance(rounds, list) and rounds and all(isinstance(r, dict) for r in rounds):
            for r, part in enumerate(rounds):
                for name, text in _texts_by_model(part).items():
                    count(per_round.setdefault(r, {}), name, ex, text)
                    if r == len(rounds) - 1:
                        count(per_model, name, ex, text)
        for key in ("answers", "candidates"):
            for name, text in _texts_by_model(trace.get(key)).items():
                count(per_model, name, ex, text)
    if not per_model and not per_round:
        return None
    out: dict[str, Any] = {"per_model": {m: {"n": n, "unparsed": u} for m, (n, u) in per_model.items()}}
    if per_round:
        out["per_round"] = [{"round": r, "n": sum(n for n, _ in b.values()), "unparsed": sum(u for _, u in b.values()),
                             "per_model": {m: u for m, (_, u) in b.items()}} for r, b in sorted(per_round.items())]
    return out
