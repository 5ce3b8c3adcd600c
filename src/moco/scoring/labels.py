"""Closed label sets (PubMedQA yes/no/maybe, CultureBench True/False, SciRIFF citation intents).

Accepts: strict, a boxed or stated answer that is (or starts with) one label: "\\boxed{yes}", "The answer is
False.", "Answer: Background"; flexible, a response that mentions exactly one distinct label as a word
("It is true that ..."). Case and surrounding punctuation are ignored. A response that names several labels
without stating one ("yes or no", "True/False") is unparsed and scores 0, whatever the gold.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.tasks.base import Example


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


class LabelMatchScorer(BaseScorer):
    """The one label the response states or names equals the gold label."""

    name = "label_match"
    metric = "accuracy"

    def __init__(self, labels: Sequence[str]):
        if len(labels) < 2:
            raise ValueError("a label set needs at least two labels")
        self.labels = {_norm(lab): lab for lab in labels}
        # longest first so "CompareOrContrast" is not read as a shorter label it contains
        self._ordered = sorted(self.labels, key=len, reverse=True)

    def _label_at_start(self, span: str) -> str | None:
        s = _norm(span)
        for lab in self._ordered:
            if s == lab or s.startswith(lab + " "):
                return self.labels[lab]
        return None

    def _mentioned(self, text: str) -> set[str]:
        s = f" {_norm(text)} "
        found = {lab for lab in self._ordered if f" {lab} " in s}
        return {self.labels[lab] for lab in found if not any(lab != o and lab in o for o in found)}

    def strict(self, response: str) -> str | None:
        span = answer_span(response)
        if span is not None:
            return self._label_at_start(span)
        return self._label_at_start(response) if len(response.split()) <= 3 else None

    def flexible(self, response: str) -> str | None:
        found = self._mentioned(response)
        return found.pop() if len(found) == 1 else None

    def extract(self, example: Example, response: str) -> str | None:
        return self.strict(response) or self.flexible(response)

    def gold_key(self, example: Example) -> str | None:
        return self.labels.get(_norm(str(example.answer)))

    def score(self, example: Example, response: str) -> ScoreResult:
        gold = self.gold_key(example)
        s = self.strict(response)
        ans = s or self.flexible(response)
        return ScoreResult(float(ans is not None and ans == gold), ans, strict=float(s is not None and s == gold))
