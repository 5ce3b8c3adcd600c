"""Closed label sets (PubMedQA yes/no/maybe, CultureBench True/False, SciRIFF citation intents).

The label that answers, not every label word the explanation contains. Case, markup and punctuation are
ignored; a CamelCase label is also read as words ("CompareOrContrast" = "compare or contrast").

Accepts (the last decision wins, as in `extract`):
- strict: a boxed / JSON / stated answer that starts with a label ("\\boxed{yes}", "The answer is False.",
  "Answer: Background", "Final answer: maybe, because ..."), or a response that is only the label.
- flexible (also): a conclusion ("So the statement is true."), a sentence or line that starts with a label
  followed by punctuation ("Maybe, because ... no significant difference", "No. The study...", "**True**"),
  "I would say yes", "classified as Uses"; and, for a short response (twelve words at most) with none of
  those, the one label it names.
Refuses (unparsed, score 0): two labels offered as alternatives ("yes or no", "maybe or yes",
"True/False"), a negated label ("the answer is not yes"), a label word used as an ordinary word ("No
significant difference was found", "The authors use ..."), and a retracted answer with no new one.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import clean, decisions, echoes_prompt, negated, retracted_after
from moco.tasks.base import Example

_SAY = re.compile(r"\b(?:I(?:'d|\s+would|\s+will|'ll)?\s+(?:say|answer|choose|pick|select|go\s+with|classify\s+(?:it|this|the\s+\w+)\s+as)|"
                  r"(?:classified|categori[sz]ed|labell?ed)\s+as|(?:falls|fits)\s+(?:under|into)(?:\s+the)?|"
                  r"(?:intent|category|label|class|classification|verdict|decision|response|conclusion)\s*(?:is|:|would\s+be)|"
                  r"(?:statement|claim|answer|it|this|that)\s+(?:is|would\s+be|seems|appears\s+to\s+be)(?:\s+(?:therefore|thus|clearly|definitely))?)"
                  r"\s*:?\s*", re.I)


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def _norm_keep_punct(s: str) -> str:
    return " ".join(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", s).lower().split())


def _variants(label: str) -> set[str]:
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)
    return {_norm(label), _norm(words)} - {""}


class LabelMatchScorer(BaseScorer):
    """The one label the response decides on equals the gold label."""

    name = "label_match"
    metric = "accuracy"

    def __init__(self, labels: Sequence[str]):
        if len(labels) < 2:
            raise ValueError("a label set needs at least two labels")
        self.labels = {_norm(lab): lab for lab in labels}
        self.forms = {v: lab for lab in labels for v in _variants(lab)}
        # longest first so "CompareOrContrast" is not read as a shorter label it contains
        self._ordered = sorted(self.forms, key=len, reverse=True)

    # ------------------------------------------------------------------ reading spans
    def _label_at_start(self, span: str) -> tuple[str, str] | None:
        """The label a span starts with, and the written form it has there."""
        s = _norm(span)
        for form in self._ordered:
            if s == form or s.startswith(form + " "):
                return self.forms[form], form
        return None

    def _mentioned(self, text: str) -> set[str]:
        s = f" {_norm(text)} "
        found = {form for form in self._ordered if f" {form} " in s}
        found = {f for f in found if not any(f != o and f" {f} " in f" {o} " for o in found)}
        return {self.forms[f] for f in found}

    def _hedged(self, label: str, rest: str) -> bool:
        """Another label offered as an alternative right after the first: "yes or no", "True/False"."""
        m = re.match(r"\s*(?:,|/|\bor\b|\band/or\b|\bvs\.?|\bversus\b|\bnor\b|\band\b)\s*(?:possibly\s+|maybe\s+|perhaps\s+)?(.*)",
                     rest, re.I | re.S)
        if not m:
            return False
        other = self._label_at_start(m.group(1))
        if other is None or other[0] == label:
            return False
        if m.group(0).lstrip().startswith(","):  # "yes, no significant ..." is not "yes, no"
            after = m.group(1)
            for w in other[1].split():
                hit = re.search(re.escape(w), after, re.I)
                after = after[hit.end():] if hit else after
            return re.match(r"\s*(?:$|[,.;:!?/)\"'”]|\s(?:or|and|nor)\b)", after, re.I) is not None
        return True

    def read_span(self, span: str) -> str | None:
        """The label a stated answer gives; None for a negation, alternatives, or no label at the start."""
        if negated(span):
            return None
        body = re.sub(r"^[\s\"'“‘(\[{:]+", "", re.sub(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}", r"\1", span))
        got = self._label_at_start(body)
        if got is None:
            return None
        label, form = got
        rest = body
        for w in form.split():  # the raw text after the label's words
            m = re.search(re.escape(w), rest, re.I)
            rest = rest[m.end():] if m else rest
        if self._hedged(label, rest):
            return None
        return label

    def _decisions(self, text: str, strict: bool) -> list[tuple[int, int, str | None, bool]]:
        """(start, end, label or None for a refused one, strong) in reading order."""
        out = []
        for d in decisions(text):
            if d.kind == "conclusion" and strict:
                continue
            label = self.read_span(d.span)
            if label is None and d.kind == "conclusion" and not self._mentioned(d.span):
                continue  # a conclusion about something else
            if label is None and d.kind == "conclusion":
                label = self._say_after(d.span)
            out.append((d.start, d.end, label, d.strong and d.kind != "conclusion"))
        whole = text.strip()
        if self._label_at_start(whole) and _norm(whole) in self.forms:
            out.append((0, len(text), self.forms[_norm(whole)], True))
        if strict:
            return sorted(out)
        for m in _SAY.finditer(text):
            end = text.find("\n", m.end())
            end = len(text) if end < 0 else end
            span = text[m.end():end]
            label = self.read_span(span)
            if label is not None:
                out.append((m.start(), m.end() + 1, label, False))
        # a sentence or line that starts with a label followed by punctuation: "Maybe, because ...", "No."
        for m in re.finditer(r"(?:^|(?<=[.!?:\n]))[\s>*\-•\"'“(]*(\w[\w ]{0,30}?)\s*(?=[,.;:!—–\-)\"'”]|$|\n)", text, re.M):
            word = _norm(m.group(1))
            if word in self.forms:
                rest = text[m.end():m.end() + 40]
                if self._hedged(self.forms[word], rest):
                    out.append((m.start(), m.end(), None, False))
                else:
                    out.append((m.start(), m.end(), self.forms[word], False))
        return sorted(out)

    def _say_after(self, span: str) -> str | None:
        m = _SAY.search(span)
        return self.read_span(span[m.end():]) if m else None

    def _read(self, response: str, strict: bool) -> str | None:
        text = clean(response).strip()
        if not text:
            return None
        found = self._decisions(text, strict)
        strong = [d for d in found if d[3]]
        pool = strong or found
        if pool:
            start, end, label, _ = pool[-1]
            if retracted_after(text, end):
                return None
            return label
        if strict or len(text.split()) > 12 or re.search(r"\b(?:not|n't|neither|nor|unsure|not\s+sure)\b", text, re.I):
            return None
        named = self._mentioned(text)
        if len(named) != 1:  # no label, or several ("yes no maybe")
            return None
        if any(self._hedged(lab, text[m.end():]) for lab in named for m in re.finditer(re.escape(lab), text, re.I)):
            return None  # "yes or no", "True/False"
        named = {lab for lab in named if any(re.search(
            rf"(?:\b(?:is|be|was|are|say|says|answer{'|as|under' if len(f) > 5 else ''})\s+{re.escape(f)}\b|\b{re.escape(f)}\s*(?:[,.;:!?)]|$))",
            _norm_keep_punct(text)) for f in self._ordered if self.forms[f] == lab)}
        if len(named) != 1:
            return None
        only = next(iter(named))
        return None if any(self._hedged(only, text[m.end():]) for m in re.finditer(re.escape(only), text, re.I)) else only

    # ------------------------------------------------------------------ protocol
    def strict(self, response: str) -> str | None:
        return self._read(response, strict=True)

    def flexible(self, response: str, question: str = "") -> str | None:
        """Every decision form; only the stated ones when the response echoes the question (its label words
        are the prompt's, as in "Answer 'yes', 'no', or 'maybe'")."""
        return self._read(response, strict=bool(question) and echoes_prompt(question, clean(response)))

    def extract(self, example: Example, response: str) -> str | None:
        return self.flexible(response, example.input)

    def gold_key(self, example: Example) -> str | None:
        return self.forms.get(_norm(str(example.answer)))

    def score(self, example: Example, response: str) -> ScoreResult:
        gold = self.gold_key(example)
        s = self.strict(response)
        ans = self.flexible(response, example.input)
        return ScoreResult(float(ans is not None and ans == gold), ans, strict=float(s is not None and s == gold))
