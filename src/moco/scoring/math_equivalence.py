"""Mathematical equivalence (MATH, TheoremQA) with the maintained `math-verify` library (sympy underneath).

Reads the response's final decision (extract.py): the last `\\boxed{}` (nested braces kept), JSON answer,
"The answer is ...", "### Final Answer" heading, or a conclusion ("Therefore, the required value is 3.18.");
a later correction wins, a retracted answer with no new one is unparsed. With flexible extraction and no
decision at all, the last line of the response (not when it is cut off mid-sentence, negates or hedges).
The stated answer is prepared for math-verify: the value of an equation ("7 + 3 = 10" -> 10), LaTeX thousands
separators (`45\\,000`, `45{,}000`), the sentence's full stop, an aside (", not 20", ", which ...").
Refused (unparsed): negations ("The answer is not 15."), hedges ("either 10 or 20", "between 10 and 20", "could
be"), and "10 or 20" when the gold is a single value (a gold set "2, 3" accepts "x = 2 or x = 3").
Equivalent forms match: `\\frac{1}{2}` = `0.5` = `\\dfrac12`, `4\\sqrt{5}` = `\\sqrt{80}`, sets in any order
(`2, 3, \\frac12`), intervals and unions (`(-\\infty,-8)\\cup(-8,\\infty)`), matrices, `1,\\!000` = `1000`,
and symbolic expressions (`18x^3+8x^2` = `2x^2(9x+4)`); units in `\\text{}` are ignored.

Typed answers (TheoremQA rows carry `answer_type`): `bool` is read as a True/False label (labels.py: "**True**",
"The statement is false."; a yes/no answer to a yes/no question counts as True/False), `option` as a letter a-e (multiple_choice.py: "Option (c) is correct."),
`integer` and `float` as numbers (numeric.py; floats within a relative tolerance, TheoremQA's own evaluation
allows 4%), `list of ...` element by element in order.
"""
from __future__ import annotations

import logging
import math
import re
import threading
from typing import Any

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import clean, decisions, echoes_prompt, final_decision, negated
from moco.scoring.labels import LabelMatchScorer
from moco.scoring.multiple_choice import OptionReader
from moco.scoring.numeric import parse_number, value_in_span
from moco.tasks.base import Example

log = logging.getLogger(__name__)
_BOOL = LabelMatchScorer(["True", "False"])
_YES_NO = LabelMatchScorer(["yes", "no"])
_LEAD = re.compile(r"^(?:it|this|that|the\s+result)\s*(?:'s|\s+is|\s+was|\s+equals)\s+", re.I)
_OPTIONS = OptionReader({k: "" for k in "ABCDE"})
_HEDGE = re.compile(r"\b(?:either|between|somewhere|not\s+sure|unsure|could\s+be|might\s+be|"
                    r"cannot\s+be\s+determined|depends)\b", re.I)
_ALT = re.compile(r"\s(?:or|and/or)\s|\$\s*(?:,|or|and)\s*\$")


def prepare_span(span: str, gold: str) -> str | None:
    """A stated answer made ready for math-verify: the value of an equation ("7 + 3 = 10" -> "10"), LaTeX
    thousands separators removed (45\\,000, 45{,}000); None for a negation or a hedge ("either 10 or 20",
    "between 10 and 20", and "10 or 20" when the gold is one value)."""
    if negated(span) or _HEDGE.search(span):
        return None
    span = re.sub(r",?\s+(?:not|rather\s+than|instead\s+of)\s+.*$|,\s+(?:which|because|since|as)\s+.*$", "", span.strip(), flags=re.S)
    s = re.sub(r"(\d)\s*(?:\\,|\{,\}|\\!|\\ |~)\s*(?=\d{3}\b)", r"\1", span.strip())
    single_gold = not re.search(r",|\\cup|\bor\b|\\text\{\s*or|\\pm", gold)
    if single_gold and _ALT.search(s):
        return None
    if "=" not in gold and "=" in s and not re.search(r"\bor\b", s):
        lhs, rhs = s.rsplit("=", 1)
        if rhs.strip().strip("$ .") and re.search(r"[\d+\-*/^]|\\(?:frac|sqrt|cdot|times)", lhs):
            s = rhs
    s = re.sub(r"^\s*\$+|\$+\s*$", "", s.strip())
    if re.match(r"^(?:\\text\{)?\s*(?:not|never)\b", s, re.I):
        return None
    return s.strip().rstrip(".") or None


def _timeouts() -> dict[str, Any]:
    """math-verify times out with SIGALRM, which only works on the main thread."""
    main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if main else None}


def parse_math(text: str, anchored: bool = True) -> list:
    """math-verify's parse of `text`; `anchored` wraps it in \\boxed{} so nothing else is picked."""
    from math_verify import parse

    s = text.strip()
    if anchored:
        s = s.strip("$ ").rstrip(".")
        whole_text = re.fullmatch(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", s)
        if whole_text:  # \text{A,B}, \text{(C)}: the words are the answer
            s = whole_text.group(1)
        s = f"\\boxed{{{s}}}"
    try:
        return parse(s, **_timeouts())
    except Exception as e:  # math-verify raises on pathological input; that answer is just unparsed
        log.debug("math-verify could not parse %r: %s", text[:80], e)
        return []


def equivalent(gold: list, answer: list) -> bool:
    from math_verify import verify

    if not gold or not answer:
        return False
    main = threading.current_thread() is threading.main_thread()
    try:
        return bool(verify(gold, answer, timeout_seconds=5 if main else None))
    except Exception:
        return False


def _as_float(span: str) -> float | None:
    v = parse_number(span)
    if v is not None:
        return v
    for expr in parse_math(span)[:1]:
        try:
            f = float(expr.evalf()) if hasattr(expr, "evalf") else float(expr)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None
    return None


def _as_list(span: str) -> list[float] | None:
    s = span.strip().strip("$")
    s = re.sub(r"\\left|\\right", "", s).strip()
    if s[:1] in "[(" and s[-1:] in "])":
        s = s[1:-1]
    parts = [p for p in re.split(r",\s*", s) if p.strip()]
    vals = [_as_float(p) for p in parts]
    return None if not vals or any(v is None for v in vals) else vals  # type: ignore[return-value]


def _option(span: str) -> str | None:
    m = re.fullmatch(r"\s*\(?\s*(?:\\text\{)?\(?([a-eA-E])\)?\}?\s*\)?\s*[.]?\s*", span)
    return m.group(1).lower() if m else None


_WORD_ANSWER = re.compile(r"[a-z][a-z ]+[a-z]")


def string_key(s: str) -> str:
    """LaTeX written-form key for answers math-verify cannot parse: no spaces, sizing or text wrappers."""
    t = re.sub(r"\\(?:left|right|displaystyle|!|,|;|quad)", "", s)
    t = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", t).replace("\\dfrac", "\\frac")
    return re.sub(r"\s+", "", t).strip("$.").lower()


class MathEquivalenceScorer(BaseScorer):
    """The boxed / stated answer is mathematically equivalent to the gold (math-verify), typed where known."""

    name = "math_equivalence"
    metric = "accuracy"

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    # -------------------------------------------------------------- spans
    @staticmethod
    def _span(response: str, flexible: bool) -> tuple[str | None, bool]:
        """(the final stated answer, whether the response states any decision at all)."""
        text = clean(response)
        found = decisions(text)
        d = final_decision(text, found, strong_only=not flexible)
        return (d.stated if d else None), bool(found)

    def _typed(self, example: Example, response: str, span: str | None, flexible: bool) -> tuple[str | None, bool]:
        """(canonical key, correct) for rows with an answer_type; (None, False) when nothing parses."""
        atype = str(example.meta.get("answer_type", ""))
        gold = str(example.answer)
        if atype == "bool":
            ans = _BOOL.flexible(response, example.input) if flexible else _BOOL.strict(response)
            if ans is None:  # "Does aliasing occur?" answered "No, it does not." means False
                yn = _YES_NO.flexible(response, example.input) if flexible else _YES_NO.strict(response)
                ans = {"yes": "True", "no": "False"}.get(yn or "")
            return ans, ans is not None and ans == _BOOL.gold_key(example)
        if atype == "option":
            letter = _OPTIONS.read(response, strict=not flexible)
            if letter is None and span is not None:
                letter = (_option(span) or "").upper() or None
            ans = letter.lower() if letter else None
            return ans, ans is not None and ans == _option(gold)
        span = None if span is None else prepare_span(span, gold)
        if span is None:
            return None, False
        if atype.startswith("list"):
            got, want = _as_list(span), _as_list(gold)
            if got is None:
                return None, False
            ok = want is not None and len(got) == len(want) and all(
                math.isclose(a, b, rel_tol=self.rel_tol, abs_tol=1e-9) for a, b in zip(got, want))
            return repr([float(f"{v:.9g}") for v in got]), ok
        if atype in ("integer", "float"):
            v = value_in_span(span)
            v = _as_float(span) if v is None and not re.search(r"\b(?:or|and|to)\b", span) else v
            g = _as_float(gold)
            if v is None:
                return None, False
            tol = self.rel_tol if atype == "float" else 1e-9
            return repr(float(f"{v:.9g}")), g is not None and math.isclose(v, g, rel_tol=tol, abs_tol=1e-9)
        return None, False

    def _symbolic(self, example: Example, parsed: list, span: str | None = None) -> tuple[str | None, bool]:
        gold_text = str(example.answer)
        if span is not None and _WORD_ANSWER.fullmatch(string_key(gold_text)):  # "\\text{orange}", "odd"
            return string_key(span), string_key(span) == string_key(gold_text)
        if not parsed:
            if span is not None and string_key(span):  # math-verify cannot read it: compare as written
                return string_key(span), string_key(span) == string_key(str(example.answer))
            return None, False
        gold = parse_math(str(example.answer))
        ok = equivalent(gold, parsed) if gold else string_key(str(parsed[-1])) == string_key(str(example.answer))
        return str(parsed[0]), ok

    def _judge(self, example: Example, response: str, flexible: bool) -> tuple[str | None, bool]:
        span, decided = self._span(response, flexible)
        if example.meta.get("answer_type"):
            if span is None and flexible and not decided and not echoes_prompt(example.input, clean(response)):
                span = self._flexible_span(response)
            return self._typed(example, response, span, flexible)
        if span is not None:
            prepared = prepare_span(span, str(example.answer))
            if prepared is None:
                return None, False
            return self._symbolic(example, parse_math(prepared), prepared)
        if not flexible or decided or echoes_prompt(example.input, clean(response)):
            return None, False
        last = self._flexible_span(response)
        prepared = None if last is None else prepare_span(_LEAD.sub("", last).rstrip("."), str(example.answer))
        if prepared is None:
            return None, False
        anchored = parse_math(prepared)
        if anchored and len(prepared.split()) <= 3:  # "**6\frac{1}{6}\text{ feet}**", "it's 64."
            return self._symbolic(example, anchored, prepared)
        return self._symbolic(example, parse_math(last, anchored=False))

    @staticmethod
    def _flexible_span(response: str) -> str | None:
        """The last line of a response that states no decision, unless it is cut off mid-sentence."""
        text = clean(response).strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines:
            return None
        last = lines[-1]
        if len(last.split()) > 3 and not re.search(r"[.!?)\]}$0-9]\s*$", last):
            return None  # cut off mid-sentence
        if re.search(r"\b(?:not|never|possible|possibly|perhaps|maybe|could|might|either|or|between|know|sorry|unable|cannot)\b|n't\b",
                     last, re.I):
            return None  # a negation or alternatives, not an answer
        return last

    # -------------------------------------------------------------- protocol
    def extract(self, example: Example, response: str) -> str | None:
        return self._judge(example, response, flexible=True)[0]

    def score(self, example: Example, response: str) -> ScoreResult:
        key, ok = self._judge(example, response, flexible=True)
        _, strict_ok = self._judge(example, response, flexible=False)
        return ScoreResult(float(ok), key, strict=float(strict_ok))

    def gold_key(self, example: Example) -> str | None:
        return self.extract(example, f"\\boxed{{{example.answer}}}")

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        if answer is None:
            return ScoreResult(0.0, None, strict=0.0)
        ok = answer == self.gold_key(example) or self.score(example, f"\\boxed{{{answer}}}").score == 1.0
        return ScoreResult(float(ok), answer, strict=float(ok))
