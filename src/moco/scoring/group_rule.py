"""All-or-nothing groups (CultureBench): the rows sharing a group key (`question_id`) are the options of one
question, each judged True/False; a question counts only if every one of its rows is right.

Each row's score becomes 1 only if every row of its group in the scored set is right, so the item mean weights
questions by their number of rows, as the reference does; the question-level accuracy (each question once) is
reported beside it by `group_summary`. A group that is incomplete in the scored set (cut by a test limit, or
split between dev and test in the shipped file) is still scored on the rows present, and counted in
`incomplete_groups` so the number is not silently mixed.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.stats import summarize
from moco.tasks.base import Example


class AllCorrectPerGroup(BaseScorer):
    """Wraps a per-row scorer: a row scores 1 only if every row of its group is correct."""

    def __init__(self, inner: Any, key: str = "question_id"):
        self.inner = inner
        self.key = key
        self.name = f"{inner.name}+all_correct_per_{key}"
        self.metric = inner.metric
        self.role = getattr(inner, "role", None)
        self.needs_gold = getattr(inner, "needs_gold", True)

    def extract(self, example: Example, response: str) -> str | None:
        return self.inner.extract(example, response)

    def gold_key(self, example: Example) -> str | None:
        return self.inner.gold_key(example)

    def group_of(self, example: Example) -> str:
        return str(example.meta.get(self.key, example.uid))

    def apply(self, examples: Sequence[Example], results: list[ScoreResult]) -> list[ScoreResult]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(examples):
            groups[self.group_of(ex)].append(i)
        for members in groups.values():
            all_ok = all(results[i].score == 1.0 for i in members)
            all_strict = all(results[i].strict == 1.0 for i in members)
            for i in members:
                r = results[i]
                r.detail = {**r.detail, "row_score": r.score, "group": self.group_of(examples[i])}
                r.score = float(all_ok)
                r.strict = float(all_strict)
        return results

    def score_all(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        inner = getattr(self.inner, "score_all", None)
        return self.apply(examples, list(inner(examples, responses)) if inner else
                          [self.inner.score(ex, r) for ex, r in zip(examples, responses)])

    async def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        if not hasattr(self.inner, "score_batch"):
            return self.score_all(examples, responses)
        return self.apply(examples, list(await self.inner.score_batch(examples, responses)))

    def bind(self, generate: Any, models: Any) -> None:
        """Bind the wrapped scorer when it calls a model."""
        if hasattr(self.inner, "bind"):
            self.inner.bind(generate, models)

    def comparison(self, examples: Sequence[Example], results: Sequence[ScoreResult]) -> dict[str, Any] | None:
        compare = getattr(self.inner, "comparison", None)
        return compare(examples, results) if compare else None

    def score(self, example: Example, response: str) -> ScoreResult:
        """One row alone: its own correctness (a group rule needs the whole batch)."""
        return self.inner.score(example, response)

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.inner.score_answer(example, answer)

    def group_summary(self, examples: Sequence[Example], results: Sequence[ScoreResult], seed: int = 0) -> dict:
        """Question-level accuracy: each group once, with its bootstrap interval."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(examples):
            groups[self.group_of(ex)].append(i)
        scores = [float(all(results[i].score == 1.0 for i in m)) for m in groups.values()]
        incomplete = sum(1 for g, m in groups.items()
                         if examples[m[0]].meta.get("group_size") not in (None, len(m)))
        unparsed = sum(1 for m in groups.values() if any(results[i].extracted is None for i in m))
        return {"unit": f"groups of rows sharing {self.key}", **summarize(scores, unparsed, seed=seed),
                "incomplete_groups": incomplete}
