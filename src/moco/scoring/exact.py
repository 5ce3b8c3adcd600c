"""Exact match for `exact_match` datasets without a more specific scorer: numeric golds compare as numbers
(see numeric.py), other golds as normalised short answers (see short_answer.py).

Accepts: the final decision of the response (the last `\\boxed{}` / JSON answer / "answer is ..." /
"#### ...", a later correction winning, see extract.py); for numeric golds also a conclusion sentence and,
with no decision at all, the value of the last sentence with a number. Refuses what those refuse: negations,
alternatives and ranges, retracted answers. Normalisation never turns a non-empty answer into "", so gold "A"
or "(A)" never matches an empty or punctuation-only response.
"""
from __future__ import annotations

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.numeric import NUMBER, NumericMatchScorer, number_key, parse_number
from moco.scoring.short_answer import normalize_answer, response_span
from moco.tasks.base import Example

_NUM = NUMBER  # kept for callers of the old private name
__all__ = ["ExactMatchScorer", "normalize_text", "parse_number"]
_NUMERIC = NumericMatchScorer()


def normalize_text(s: str) -> str:
    return normalize_answer(s)


class ExactMatchScorer(BaseScorer):
    """Numeric-aware exact match of the final stated answer."""

    name = "exact_match"
    metric = "accuracy"

    def _read(self, example: Example, response: str, flexible: bool) -> str | None:
        if parse_number(str(example.answer)) is not None:
            v = _NUMERIC._value(response, flexible, example.input)
            if v is not None:
                return number_key(v)
        span = response_span(response, flexible, example.input)
        return None if span is None else (normalize_answer(span) or None)

    def extract(self, example: Example, response: str) -> str | None:
        return self._read(example, response, True)

    def gold_key(self, example: Example) -> str | None:
        gold = str(example.answer)
        v = parse_number(gold)
        return number_key(v) if v is not None else (normalize_answer(gold) or None)

    def score(self, example: Example, response: str) -> ScoreResult:
        key = self._read(example, response, True)
        strict_key = self._read(example, response, False)
        gold = self.gold_key(example)
        return ScoreResult(float(key is not None and key == gold), key,
                           strict=float(strict_key is not None and strict_key == gold))
