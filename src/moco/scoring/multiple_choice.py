"""Multiple choice: the chosen option letter, with strict and flexible extraction reported side by side.

Accepts: the option letter ("The answer is (C)", "Answer: C", "\\boxed{C}", "C) Madrid", "C") or the option's
text ("The capital of Spain is Madrid."). Gold: the option letter.

Strict: an explicit statement ("The answer is (C)", "Answer: C", "\\boxed{C}") or a response that is just
the letter ("C", "(C)", "C) text"). The last explicit statement wins.
Flexible (used when strict finds nothing): exactly one distinct option marker like "(C)" or "C)" in the
text, or exactly one option's text quoted in the response.
Nothing is preferred by position: a response that names several options without deciding is unparsed
(score 0), so listing every letter never scores.
"""
from __future__ import annotations

import re

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import last_boxed
from moco.tasks.base import Example


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", s.lower())).strip()


class MultipleChoiceScorer(BaseScorer):
    """The chosen option letter (strict: stated; flexible: the one option marked or quoted) equals the gold."""

    name = "multiple_choice"
    metric = "accuracy"

    def strict(self, example: Example, response: str) -> str | None:
        letters = set(example.choices or {})
        text = response.strip()
        boxed = last_boxed(text)
        if boxed:
            m = re.fullmatch(r"\(?\s*(?:\\text\{)?([A-Z])\}?\s*\)?", boxed.strip())
            if m and m.group(1) in letters:
                return m.group(1)
        stated = re.findall(
            r"answer\s*(?:is|:|=|would\s+be|should\s+be)?\s*:?\s*(?:option\s*)?[\(\[\*]*([A-Za-z])(?![A-Za-z])", text, re.I
        )
        for cand in reversed(stated):
            # a bare lower-case letter after "answer is" is usually the article "a"; only trust capitals here
            if cand in letters:
                return cand
        m = re.match(r"^\s*(?:option\s*)?[\(\[]?([A-Z])[\)\]]?(?:[\.\):]|\s*$)", text, re.I)
        if m and m.group(1).upper() in letters and len(self._markers(text, letters)) <= 1:
            first = m.group(1)
            if first.isupper() or re.match(r"^\s*[\(\[]", text):
                return first.upper()
        return None

    @staticmethod
    def _markers(text: str, letters: set[str]) -> set[str]:
        """Distinct option markers like '(C)' or 'C)' in the text: more than one means options are listed."""
        return {m for m in re.findall(r"(?:^|[\s\(\[])\(?([A-Z])\)(?=[\s.,:;]|$)", text) if m in letters}

    def flexible(self, example: Example, response: str) -> str | None:
        letters = set(example.choices or {})
        marked = self._markers(response, letters)
        if len(marked) == 1:
            return marked.pop()
        if marked:
            return None
        hay = f" {_norm(response)} "
        found = {k for k, v in (example.choices or {}).items() if _norm(v) and f" {_norm(v)} " in hay}
        # drop options whose text is contained in another matched option's text ("Paris" vs "Paris, Texas")
        found = {k for k in found if not any(
            k != o and f" {_norm(example.choices[k])} " in f" {_norm(example.choices[o])} " for o in found)}
        return found.pop() if len(found) == 1 else None

    def extract(self, example: Example, response: str) -> str | None:
        return self.strict(example, response) or self.flexible(example, response)

    def score(self, example: Example, response: str) -> ScoreResult:
        s = self.strict(example, response)
        ans = s or self.flexible(example, response)
        return ScoreResult(float(ans is not None and ans == example.answer), ans,
                           strict=float(s is not None and s == example.answer))

    def gold_key(self, example: Example) -> str | None:
        return None if example.answer is None else str(example.answer)
