"""Numeric answers (GSM8K, TableMWP free text): numbers compared as numbers.

Accepts: `\\boxed{1,234}`, "The answer is $1,234.00", "#### 1234", "x = -3", "50%", "3/10", `\\frac{3}{10}`,
"5 apples"; with flexible extraction, the last number in the response. Commas between digit groups, currency,
units, percent signs, LaTeX fractions and unicode minus are handled; signs and decimals are kept. Two numbers
are equal when they agree to a relative 1e-6 (so 0.333333 matches 1/3 only if written that precisely).
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.tasks.base import Example

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


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


def number_key(v: float) -> str:
    """Canonical key of a number: equal keys for numbers equal to 9 significant digits."""
    return repr(float(f"{v:.9g}"))


def same_number(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def last_number(text: str) -> str | None:
    nums = NUMBER.findall(text)
    return nums[-1] if nums else None


class NumericMatchScorer(BaseScorer):
    """The stated (strict) or last (flexible) number of the response equals the numeric gold."""

    name = "numeric_match"
    metric = "accuracy"

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    def _value(self, response: str, flexible: bool) -> float | None:
        span = answer_span(response)
        if span is not None:
            v = parse_number(span)
            if v is None:  # "The answer is 18 dollars because ..." -> the first number of the statement
                first = NUMBER.search(span)
                v = parse_number(first.group(0)) if first else None
            if v is not None:
                return v
        if not flexible:
            return None
        last = last_number(response)
        return parse_number(last) if last else None

    def extract(self, example: Example, response: str) -> str | None:
        v = self._value(response, flexible=True)
        return None if v is None else number_key(v)

    def gold_key(self, example: Example) -> str | None:
        v = parse_number(str(example.answer))
        return None if v is None else number_key(v)

    def _ok(self, example: Example, v: float | None) -> float:
        g = parse_number(str(example.answer))
        return float(v is not None and g is not None and same_number(v, g, self.rel_tol))

    def score(self, example: Example, response: str) -> ScoreResult:
        v = self._value(response, flexible=True)
        return ScoreResult(self._ok(example, v), None if v is None else number_key(v),
                           strict=self._ok(example, self._value(response, flexible=False)))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        ok = self._ok(example, None if answer is None else parse_number(answer))
        return ScoreResult(ok, answer, strict=ok)
