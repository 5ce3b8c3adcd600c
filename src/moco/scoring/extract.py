"""Answer-span extraction shared by scorers: balanced \\boxed{}, 'the answer is ...', '#### ...'."""
from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|box|fbox)\s*\{")
_STATEMENT = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=|would\s+be|should\s+be)\s*:?\s*(.+)", re.I
)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces kept (\\boxed{\\frac{1}{2}} -> \\frac{1}{2})."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def last_statement(text: str) -> str | None:
    """The text after the last 'answer is' / 'Answer:' on its line, without trailing punctuation."""
    hits = [m.group(1) for m in _STATEMENT.finditer(text)]
    if not hits:
        m = None
        for m in re.finditer(r"^####\s*(.+)$", text, re.M):
            pass
        return m.group(1).strip() if m else None
    span = hits[-1].split("\n")[0].strip()
    span = re.sub(r"[\s.;,!]+$", "", span)
    return span or None


def answer_span(text: str) -> str | None:
    """Boxed answer first (it is the instruction we give), then an explicit statement."""
    return last_boxed(text) or last_statement(text)
