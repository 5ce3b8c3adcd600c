"""Numeric answers (GSM8K, TableMWP free text): numbers compared as numbers.

Gold: a number ("1,234", "0.5", "3/10"). The response's final decision is found as in `extract`: the last
`\\boxed{}`, JSON answer, "#### x" or "The answer is x" (a later one wins, so a correction after a box
counts), else a conclusion ("Therefore, the total is $112."); with flexible extraction and no decision at all,
the numbers of the last sentence that has one (an equation's result: "6*14 + 2*14 = 112").

Accepts in the stated answer: the value of an equation ("7 + 3 = 10" -> 10), thousands separators ("1,234",
LaTeX `45\\,000`, `45{,}000`, `1,\\!000`), currency and units ("$18.00", "5 apples", `\\text{ cm}`),
percent signs, fractions (`3/10`, `\\frac{3}{10}`), scientific notation, unicode minus, the sentence's own
full stop ("is 3.18." -> 3.18), and a trailing reason ("18 dollars because ..." -> 18).
Refuses (unparsed): a negation ("not 10"), alternatives and ranges ("either 10 or 20", "between 10 and 20",
"10-20", "10 to 20") unless every value is the same, a retracted answer with no new one, and a response cut
off mid-sentence with no decision. Two numbers are equal when they agree to a relative 1e-6.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import HEDGE, clean, decisions, echoes_prompt, final_decision, negated
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


_VALUE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?!\w)|"
                    r"(?<![\w.])-?\.\d+(?!\w)")
_CLAUSE = re.compile(r",?\s+(?:not|rather\s+than|instead\s+of)\s.*$|(?:,\s*|\s+)(?:because|since|as\s+(?:the|he|she|they|we|it)|which|given|so\s+that|where|"
                     r"when|if|after|before|from\s+the|based\s+on|this\s+is|that\s+is)\b.*$|\s[—–]\s.*$|;.*$", re.I)
_ALTERNATIVE = re.compile(r"\b(?:or|either|between|and|to|through|until|nor)\b|[–/,-]|±|\\pm", re.I)


def plain_math(span: str) -> str:
    """LaTeX and unicode forms of numbers made plain: thousands separators, fractions, units in \\text{}."""
    t = span.replace("−", "-").replace("–", "-") if re.search(r"\d\s*[−–]\s*\d", span) is None else span.replace("−", "-")
    t = re.sub(r"(\d)\s*(?:\\,|\{,\}|,\\!|\\!|\\ |\\;|~|\u202f|\u2009)\s*(?=\d{3}\b)", r"\1", t)
    t = re.sub(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}", r" \1 ", t)
    t = re.sub(r"\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}", r"\1/\2", t)
    t = re.sub(r"\\[dt]?frac(\d)(\d)", r"\1/\2", t)
    t = re.sub(r"\s*\\(?:times|cdot)\s*10\^\{?(-?\d+)\}?", r"e\1", t)
    t = re.sub(r"\\(?:left|right|displaystyle|quad|qquad)|\\[$%]|\$", " ", t)
    t = t.replace("{", " ").replace("}", " ")
    return t


def value_in_span(span: str) -> float | None:
    """The number a stated answer gives: the result of an equation, else its one value. None for a negation,
    for alternatives or a range of different values, or when it holds no number."""
    if negated(span):
        return None
    t = plain_math(span)
    parts = re.split(r"=|≈|\\approx|\\simeq|\\equiv|≃", t)
    t = parts[-1] if len(parts) > 1 and _VALUE.search(parts[-1]) else t
    t = _CLAUSE.sub("", t)
    t = re.sub(r"\((?:[^()]*[A-Za-z][^()]*)\)", " ", t)  # "(rounded)", "(in dollars)"
    if re.match(r"\s*(?:not|n't|never)\b", t, re.I):
        return None
    nums = [m for m in _VALUE.finditer(t)]
    if not nums:
        return None
    values = [parse_number(m.group(0)) for m in nums]
    if any(v is None for v in values):
        return None
    if len({number_key(v) for v in values}) > 1:  # type: ignore[arg-type]
        between = t[nums[0].end():nums[-1].start()]
        if _ALTERNATIVE.search(between) or re.search(r"\b(?:either|between|from)\b", t[:nums[0].start()], re.I):
            return None
    if re.search(r"\b(?:between|either)\b", t[:nums[0].start()], re.I):
        return None
    return values[0]


def last_sentence_value(text: str) -> float | None:
    """Flexible fallback without any decision: the value of the last sentence that has a number (None when
    the response is cut off mid-sentence)."""
    t = text.rstrip()
    if not t or not re.search(r"[.!?)\]}$0-9%*]\s*$", t) and len(t.split()) > 3:
        return None
    sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n+", t) if _VALUE.search(plain_math(s))]
    if not sentences:
        return None
    last = sentences[-1]
    first = _VALUE.search(plain_math(last))
    if HEDGE.search(last) or re.search(r"\b(?:not|n't|never|no|possible|possibly|perhaps|maybe|guess)\b", last, re.I):
        return None
    nums = _VALUE.findall(re.split(r"=|≈", plain_math(last))[-1])
    if len({number_key(v) for n in nums if (v := parse_number(n)) is not None}) > 1 and "," in last and "=" not in last:
        return None  # "295, 288, or something else": a list of values
    return value_in_span(last) if first else None


class NumericMatchScorer(BaseScorer):
    """The stated (strict) or last (flexible) number of the response equals the numeric gold."""

    name = "numeric_match"
    metric = "accuracy"

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    def _value(self, response: str, flexible: bool, question: str = "") -> float | None:
        text = clean(response)
        found = decisions(text)
        d = final_decision(text, found, strong_only=not flexible)
        if d is not None:
            if d.hedged:
                return None
            v = value_in_span(d.span)
            if v is not None or d.strong or _VALUE.search(plain_math(d.span)):
                return v  # a stated answer that hedges or negates is no answer
        elif found or not flexible:  # the decision was retracted, or (strict) there is only a conclusion
            return None
        if not flexible or (question and echoes_prompt(question, text)):
            return None
        return last_sentence_value(text)

    def extract(self, example: Example, response: str) -> str | None:
        v = self._value(response, True, example.input)
        return None if v is None else number_key(v)

    def gold_key(self, example: Example) -> str | None:
        v = parse_number(str(example.answer))
        return None if v is None else number_key(v)

    def _ok(self, example: Example, v: float | None) -> float:
        g = parse_number(str(example.answer))
        return float(v is not None and g is not None and same_number(v, g, self.rel_tol))

    def score(self, example: Example, response: str) -> ScoreResult:
        v = self._value(response, True, example.input)
        return ScoreResult(self._ok(example, v), None if v is None else number_key(v),
                           strict=self._ok(example, self._value(response, flexible=False)))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        ok = self._ok(example, None if answer is None else parse_number(answer))
        return ScoreResult(ok, answer, strict=ok)
