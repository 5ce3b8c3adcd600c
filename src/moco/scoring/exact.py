"""Exact match with number normalisation: '1,234', '$18', '18.0', '-3', '1/2' and '0.5' compare as numbers.

The answer span is the last \\boxed{} (balanced braces), else the last 'answer is ...' statement, else
'#### ...', else (for numeric golds only) the last number in the response. String answers compare after
lower-casing, trimming punctuation at the ends and collapsing spaces; normalisation never turns a non-empty
answer into an empty string (articles and inner punctuation are kept, so 'A' and '(A)' stay distinct from '').
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from moco.scoring.base import ScoreResult
from moco.scoring.extract import answer_span
from moco.tasks.base import Example

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def parse_number(s: str) -> float | None:
    """A number written the way models write it, or None. Units and currency around it are ignored."""
    t = s.strip()
    t = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", t)
    t = t.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    t = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"(\1)/(\2)", t)
    t = t.replace("−", "-").strip()
    m = re.fullmatch(r"\(?(-?[\d,]*\.?\d+)\)?\s*/\s*\(?(-?\d+)\)?", t)
    if m:
        try:
            num, den = float(m.group(1).replace(",", "")), float(m.group(2))
            return num / den if den else None
        except ValueError:
            return None
    t = re.sub(r"^[^\d\-.]+", "", t)  # leading words/units: "x = 5", "USD 5"
    t = re.sub(r"[^\d.,]+$", "", t) if re.match(r"^-?[\d.,]+", t) else t  # trailing units: "5 apples"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    try:
        v = float(t)
    except ValueError:
        try:
            v = float(Fraction(t))
        except (ValueError, ZeroDivisionError):
            return None
    return v if math.isfinite(v) else None


def normalize_text(s: str) -> str:
    t = re.sub(r"\\text\{([^}]*)\}", r"\1", s.strip())
    t = re.sub(r"\s+", " ", t.lower()).strip()
    stripped = t.strip(" .,;:!\"'`*")
    return stripped or t


class ExactMatchScorer:
    name = "exact_match"
    metric = "accuracy"

    def _span(self, example: Example, response: str) -> str | None:
        span = answer_span(response)
        if span is None and parse_number(str(example.answer)) is not None:
            nums = _NUM.findall(response)
            span = nums[-1] if nums else None
        return span

    def _key(self, span: str | None, gold: str) -> str | None:
        if span is None:
            return None
        if parse_number(gold) is not None:
            v = parse_number(span)
            if v is not None:
                return repr(round(v, 9))
        return normalize_text(span) or None

    def extract(self, example: Example, response: str) -> str | None:
        return self._key(self._span(example, response), str(example.answer))

    def score(self, example: Example, response: str) -> ScoreResult:
        key = self.extract(example, response)
        strict_key = self._key(answer_span(response), str(example.answer))
        gold = self._key(str(example.answer), str(example.answer))
        return ScoreResult(float(key is not None and key == gold), key,
                           strict=float(strict_key is not None and strict_key == gold))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        gold = self._key(str(example.answer), str(example.answer))
        ok = float(answer is not None and answer == gold)
        return ScoreResult(ok, answer, strict=ok)
