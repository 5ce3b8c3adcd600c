"""Short-answer QA: exact match and token F1 (BBH, PopQA, WikiDYK, SciRIFF-style labels...).

Accepts: a response whose answer is in `\\boxed{...}`, after "The answer is" / "Answer:" / "####", or (flexible)
the whole response when it is one short line. Gold: a string, or a list of aliases (a JSON list, a Python list,
or a string holding one of those, as PopQA stores them; aliases that contain commas are kept whole).

Normalisation (lower case, punctuation and the articles a/an/the removed, spaces collapsed) never turns a
non-empty answer into "": a step that would empty it is skipped. So gold "A" stays "a" (the reference's
article stripping made it "" and let empty responses score on BBH), "-3" and "0.5" keep their sign and point,
and punctuation-only answers such as Dyck brackets ") ]" are compared as written.
"""
from __future__ import annotations

import ast
import json
import re
import string
import unicodedata
from collections import Counter
from typing import Any

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.tasks.base import Example

_PUNCT = set(string.punctuation) | {"“", "”", "‘", "’", "–", "—", "…", "«", "»"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _strip_latex_text(s: str) -> str:
    return re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)


def _drop_punct(s: str) -> str:
    """Remove punctuation, but keep signs and points that belong to numbers ('-3', '0.5', '1,000')."""
    out = []
    for i, ch in enumerate(s):
        if ch in _PUNCT:
            prev, nxt = s[i - 1] if i else "", s[i + 1] if i + 1 < len(s) else ""
            if ch in ".," and prev.isdigit() and nxt.isdigit():
                out.append("" if ch == "," else ch)
                continue
            if ch == "-" and nxt.isdigit() and (not prev or not prev.isalnum()):
                out.append(ch)
                continue
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize_answer(s: str) -> str:
    """Lower-case, strip punctuation and articles, collapse spaces; never empties a non-empty answer."""
    t = unicodedata.normalize("NFKC", _strip_latex_text(str(s))).lower()
    t = " ".join(t.split())
    if not t:
        return ""
    no_punct = " ".join(_drop_punct(t).split())
    t = no_punct or t
    no_articles = " ".join(_ARTICLES.sub(" ", t).split())
    return no_articles or t


def tokens(s: str) -> list[str]:
    return normalize_answer(s).split()


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD-style token F1 on normalised strings (both empty: 1; one empty: 0)."""
    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def aliases(gold: Any) -> list[str]:
    """The gold as a list of aliases: a list, or a string holding a JSON/Python list, or one string."""
    if isinstance(gold, (list, tuple)):
        return [str(a) for a in gold if str(a).strip()]
    s = str(gold).strip()
    if s.startswith("[") and s.endswith("]"):
        for parse in (json.loads, ast.literal_eval):
            try:
                val = parse(s)
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(val, list):
                return [str(a) for a in val if str(a).strip()]
    return [s] if s else []


def response_span(response: str, flexible: bool = True) -> str | None:
    """The answer span: boxed / stated answer; flexibly, the whole response when it is one short line."""
    span = answer_span(response)
    if span is not None or not flexible:
        return span
    text = response.strip()
    if text and "\n" not in text and len(text.split()) <= 12:
        return re.sub(r"[\s.;!]+$", "", text) or text
    return None


def _option_letter(span: str) -> str | None:
    """'(C)', 'C', 'C.' or '(C) option text' -> 'C'; None when the span names several options ('(A) (B)')."""
    s = span.strip()
    m = re.fullmatch(r"[\(\[]?([A-Z])[\)\]]?[.:]?", s)
    if m:
        return m.group(1)
    m = re.match(r"[\(\[]([A-Z])[\)\]]\s+\S", s)
    if m and len(set(re.findall(r"[\(\[]([A-Z])[\)\]]", s))) == 1:
        return m.group(1)
    return None


class ShortAnswerExactMatch(BaseScorer):
    """Exact match of a short answer after normalisation (any alias of the gold may match)."""

    name = "short_answer_exact_match"
    metric = "exact_match"

    def _key(self, example: Example, span: str | None) -> str | None:
        if span is None:
            return None
        golds = aliases(example.answer) if example.answer is not None else []
        if any(re.fullmatch(r"\(?[A-Z]\)?", g.strip()) for g in golds):  # BBH-style option golds: "(A) text" -> "a"
            letter = _option_letter(span)
            if letter:
                return letter.lower()
        key = normalize_answer(span)
        return key or None

    def extract(self, example: Example, response: str) -> str | None:
        return self._key(example, response_span(response))

    def gold_keys(self, example: Example) -> set[str]:
        return {k for g in aliases(example.answer) if (k := normalize_answer(g))}

    def gold_key(self, example: Example) -> str | None:
        keys = sorted(self.gold_keys(example))
        return keys[0] if keys else None

    def score(self, example: Example, response: str) -> ScoreResult:
        golds = self.gold_keys(example)
        key = self.extract(example, response)
        strict = self._key(example, response_span(response, flexible=False))
        return ScoreResult(float(key is not None and key in golds), key, strict=float(strict is not None and strict in golds))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        ok = float(answer is not None and answer in self.gold_keys(example))
        return ScoreResult(ok, answer, strict=ok)


class TokenF1Scorer(ShortAnswerExactMatch):
    """Token F1 of the answer span against the gold, the maximum over its aliases; exact match in `detail`."""

    name = "token_f1"
    metric = "f1"

    def _f1(self, example: Example, span: str | None) -> float:
        if span is None:
            return 0.0
        return max((token_f1(span, g) for g in aliases(example.answer)), default=0.0)

    def score(self, example: Example, response: str) -> ScoreResult:
        span = response_span(response)
        strict_span = response_span(response, flexible=False)
        key = self._key(example, span)
        return ScoreResult(self._f1(example, span) if key else 0.0, key,
                           strict=self._f1(example, strict_span) if strict_span else 0.0,
                           detail={"exact_match": float(key is not None and key in self.gold_keys(example))})

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        f1 = self._f1(example, answer) if answer else 0.0
        return ScoreResult(f1, answer, strict=f1)
