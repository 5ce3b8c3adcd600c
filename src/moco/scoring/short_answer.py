"""Short-answer QA: exact match and token F1 (BBH, PopQA, WikiDYK, SciRIFF-style labels...).

The answer span is the response's final decision (extract.py): the last `\\boxed{...}`, JSON answer,
"The answer is ...", "Answer: ...", "####", "### Final Answer" heading, or a correction after a retraction
("\\boxed{Paris}. Wait, no. Actually, it's Toulon." -> "Toulon"); a retracted answer with no new one is
unparsed. From a stated sentence the answer part is kept: "It was X." -> "X", "The answer is X, as far as I
know." -> "X", "X, not Y" -> "X". Flexibly, with no decision, a response of one short sentence: "The capital
of Var is Toulon." and "Toulon is the capital of Var." -> "Toulon" (the side that does not restate the
question), "The sorted list is: a b c" -> "a b c". Refused (unparsed): "not X", "X or Y", "either/between",
"I don't know", an echo of the question. Gold: a string, or a list of aliases (a JSON list, a Python list, or
a string holding one of those, as PopQA stores them; aliases that contain commas are kept whole).

Normalisation (lower case, punctuation and the articles a/an/the removed, spaces collapsed) never turns a
non-empty answer into "": a step that would empty it is skipped. So gold "A" stays "a" (the reference's
article stripping made it "" and let empty responses score on BBH), "-3" and "0.5" keep their sign and point,
and punctuation-only answers such as Dyck brackets ") ]" are compared as written (`\\boxed{} ]}` is read as
"} ]").
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
from moco.scoring.extract import clean, decisions, echoes_prompt, final_decision, negated
from moco.scoring.numeric import parse_number, value_in_span
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


_LEAD = re.compile(r"^(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:I\s+(?:think|believe)\s+)?(?:it|this|that|he|she|they|the\s+answer)"
                   r"\s*(?:'s|'re|\s+is|\s+was|\s+were|\s+are|\s+would\s+be|\s+must\s+be|\s+should\s+be)\s+"
                   r"(?:called\s+|named\s+|known\s+as\s+)?", re.I)
_SHORT_WORDS = 12


_FILLER = re.compile(r",?\s+(?:as\s+far\s+as\s+I\s+(?:know|can\s+tell|recall)|I\s+(?:think|believe)|if\s+I\s+recall\s+correctly|"
                     r"(?:and\s+)?not\s+.*|rather\s+than\s+.*|instead\s+of\s+.*)$|,\s+(?:which|who|because|since)\s+.*$",
                     re.I | re.S)
_REFUSE = re.compile(r"^\s*(?:either|between|one\s+of)\b|\s(?:or|and/or)\s|\b(?:not\s+sure|unsure|I\s+don'?t\s+know)\b", re.I)


def short_span(span: str, boxed: bool = False) -> str | None:
    """The answer part of a stated answer: "It was Toulon." -> "Toulon"; quotes, LaTeX text, the sentence's
    full stop and a trailing aside (", as far as I know", ", not Marseille") removed."""
    s = _strip_latex_text(span).strip().strip("$").strip()
    if boxed:  # a box holds exactly the answer
        return s or None
    s = _LEAD.sub("", s)
    if negated(s):
        return s  # "It is definitely not Toulon": kept whole so the scorer refuses it
    s = _FILLER.sub("", s)
    s = re.sub(r"^[\"'“‘]+|[\"'”’]+$", "", re.sub(r"[\s.;!]+$", "", s)).strip()
    s = re.sub(r"^[\"'“‘]+|[\"'”’]+$", "", s).strip()
    return s or None


def response_span(response: str, flexible: bool = True, question: str = "") -> str | None:
    """The answer span: the final boxed / stated answer (a later correction wins; see `extract`); flexibly,
    with no decision, a response of one short sentence ("It was Toulon.", "The capital of Var is Toulon.":
    the part after its verb)."""
    text = clean(response)
    found = decisions(text)
    d = final_decision(text, found, strong_only=not flexible)
    if d is not None:
        return short_span(d.stated, boxed=d.kind in ("boxed", "json")) if d.stated is not None else None
    if found or not flexible or (question and echoes_prompt(question, text)):
        return None
    t = text.strip()
    labelled = re.fullmatch(r"((?:the\s+)?(?:sorted|final|closing|completed?|correct|alphabetical)?\s*(?:list|words|sequence|"
                            r"order|sorted|output|result|answer))(?::|\s+(?:is|would\s+be)\s*:?)[ \t]*([^\n]+)", t, re.I)
    # "Sorted list: abner ...", "The result is abner ...": any length
    if labelled and not re.search(r"\b(?:or|either|not)\b", labelled.group(2)):
        return short_span(labelled.group(2))
    if not t or "\n" in t or len(t.split()) > _SHORT_WORDS or len(re.findall(r"[.!?](?:\s|$)", t)) > 1:
        return None
    if re.search(r"\b(?:or|either|not\s+sure|unsure|don'?t\s+know|no\s+idea|cannot|can'?t)\b", t, re.I):
        return None
    colon = re.search(r"\b(?:is|are|was|were)\s*:\s*(\S.*)$", t)  # "The sorted list is: abner amity"
    s = short_span(colon.group(1) if colon else t)
    if s and not colon and not _LEAD.match(t):
        m = re.search(r"\s(?:is|was|are|were)\s+(?:called\s+|named\s+)?(.+)$", s)
        if m and len(s.split()) > 3:
            # "The capital of Var is Toulon." / "Toulon is the capital of Var.": the side that does not
            # restate the question is the answer
            before, after = s[:m.start()], m.group(1)
            q = set(tokens(question))
            s = before if q and len(set(tokens(before)) & q) < len(set(tokens(after)) & q) else after
    return s


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


def options_in(text: str) -> dict[str, str]:
    """The options a BBH-style question lists ("(A) text" lines), letter -> text."""
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s*\(([A-R])\)\s*(.+)$", text, re.M)}


_LABEL_GOLDS = [("yes", "no"), ("true", "false"), ("valid", "invalid")]


class ShortAnswerExactMatch(BaseScorer):
    """Exact match of a short answer after normalisation (any alias of the gold may match).

    BBH golds are read by kind: an option letter through the question's own options (`multiple_choice`:
    the letter in any markup, the option's text in a box, "(A) (B)" is a hedge), Yes/No, True/False and
    valid/invalid through `label_match`, numbers as numbers (the value of an equation), and anything else
    (Dyck closers "} ]", sorted words) as the normalised final answer."""

    name = "short_answer_exact_match"
    metric = "exact_match"

    def _key(self, example: Example, span: str | None) -> str | None:
        if span is None:
            return None
        golds = aliases(example.answer) if example.answer is not None else []
        if normalize_answer(span) not in {normalize_answer(g) for g in golds} and (negated(span) or _REFUSE.search(span)):
            return None  # "not Toulon", "Toulon or Marseille" (unless the gold itself reads so: "Not My Responsibility")
        if any(re.fullmatch(r"\(?[A-Z]\)?", g.strip()) for g in golds):  # BBH-style option golds: "(A) text" -> "a"
            letter = _option_letter(span)
            if letter:
                return letter.lower()
        key = normalize_answer(span)
        return key or None

    def _read(self, example: Example, response: str, flexible: bool) -> str | None:
        golds = aliases(example.answer) if example.answer is not None else []
        gold = golds[0].strip() if len(golds) == 1 else ""
        if re.fullmatch(r"\(?[A-R]\)?", gold):
            opts = options_in(example.input)
            if len(opts) < 2:  # a row whose option list is cut short: every letter is still an option
                opts = {k: opts.get(k, "") for k in "ABCDEFGHIJKLMNOPQR"}
            if opts:
                from moco.scoring.multiple_choice import OptionReader

                letter = OptionReader(opts).read(response, strict=not flexible)
                return letter.lower() if letter else None
        for pair in _LABEL_GOLDS:
            if gold.lower() in pair:
                from moco.scoring.labels import LabelMatchScorer

                lab = LabelMatchScorer(list(pair))
                got = lab.flexible(response, example.input) if flexible else lab.strict(response)
                return got.lower() if got else None
        span = response_span(response, flexible, example.input)
        if gold and parse_number(gold) is not None and span is not None:
            v = value_in_span(span)
            return None if v is None else normalize_answer(_plain_number(v))
        return self._key(example, span)

    def extract(self, example: Example, response: str) -> str | None:
        return self._read(example, response, True)

    def gold_keys(self, example: Example) -> set[str]:
        keys = {k for g in aliases(example.answer) if (k := normalize_answer(g))}
        return keys | {normalize_answer(_plain_number(v)) for g in aliases(example.answer)
                       if re.fullmatch(r"-?[\d,.]+", g.strip()) and (v := parse_number(g)) is not None}

    def gold_key(self, example: Example) -> str | None:
        keys = sorted(self.gold_keys(example))
        return keys[0] if keys else None

    def score(self, example: Example, response: str) -> ScoreResult:
        golds = self.gold_keys(example)
        key = self._read(example, response, True)
        strict = self._read(example, response, False)
        return ScoreResult(float(key is not None and key in golds), key, strict=float(strict is not None and strict in golds))

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        ok = float(answer is not None and answer in self.gold_keys(example))
        return ScoreResult(ok, answer, strict=ok)


def _plain_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(f"{v:.9g}"))


class TokenF1Scorer(ShortAnswerExactMatch):
    """Token F1 of the answer span against the gold, the maximum over its aliases; exact match in `detail`."""

    name = "token_f1"
    metric = "f1"

    def extract(self, example: Example, response: str) -> str | None:
        return self._key(example, response_span(response, True, example.input))

    def _f1(self, example: Example, span: str | None) -> float:
        if span is None:
            return 0.0
        return max((token_f1(span, g) for g in aliases(example.answer)), default=0.0)

    def score(self, example: Example, response: str) -> ScoreResult:
        span = response_span(response, True, example.input)
        strict_span = response_span(response, flexible=False)
        key = self._key(example, span)
        strict_key = self._key(example, strict_span)
        return ScoreResult(self._f1(example, span) if key else 0.0, key,
                           strict=self._f1(example, strict_span) if strict_key else 0.0,
                           detail={"exact_match": float(key is not None and key in self.gold_keys(example))})

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        f1 = self._f1(example, answer) if answer else 0.0
        return ScoreResult(f1, answer, strict=f1)
