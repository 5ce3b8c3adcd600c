"""Exact match for `exact_match` datasets without a more specific scorer: numeric golds compare as numbers
(see numeric.py), other golds as normalised short answers (see short_answer.py).

Accepts: the last `\\boxed{}` (balanced braces), else the last "answer is ..." statement, else "#### ...",
else (numeric golds only) the last number in the response. Normalisation never turns a non-empty answer
into "", so gold "A" or "(A)" never matches an empty or punctuation-only response.
"""
from __future__ import annotations

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.scoring.numeric import NUMBER, number_key, parse_number
from moco.scoring.short_answer import normalize_answer
from moco.tasks.base import Example

_NUM = NUMBER  # kept for callers of the old private name
__all__ = ["ExactMatchScorer", "normalize_text", "parse_number"]


def normalize_text(s: str) -> str:
    return normalize_answer(s)


class ExactMatchScorer(BaseScorer):
    """Numeric-aware exact match of the boxed / stated answer."""

    name = "exact_match"
    metric = "accuracy"

    def _span(self, example: Example, response: str) -> str | None:
        span = answer_span(response)
        if span is None and parse_number(str(example.answer)) is not None:
            nums = NUMBER.findall(response)
            span = nums[-1] if nums else None
        return span

    def _key(self, span: str | None, gold: str) -> str | None:
        if span is None:
            return None
        if parse_number(gold) is not None:
            v = parse_number(span)
            if v is not None:
                return number_key(v)
        return normalize_answer(span) or None

    def extract(self, example: Example, response: str) -> str | None:
        return self._key(self._span(example, response), str(example.answer))

    def gold_key(self, example: Example) -> str | None:
        return self._key(str(example.answer), str(example.answer))

    def score(self, example: Example, response: str) -> ScoreResult:
        key = self.extract(example, response)
        strict_key = self._key(answer_span(response), str(example.answer))
        gold = self.gold_key(example)
        return ScoreResult(float(key is not None and key == gold), key,
                           strict=float(strict_key is not None and strict_key == gold))
