"""Where a response states its final decision: shared by every rule-based scorer.

A careful grader reads the whole response and takes the answer it ends on. So do we:

- `clean` drops markup that does not change the answer: bold/italic/code marks, `<answer>` tags (read as
  "Answer:"), markdown headings.
- `decisions` finds every place that states an answer, in reading order: `\\boxed{}` (balanced braces, and
  Dyck-language answers such as `\\boxed{) } ]}` whose closing brackets include `}`), a JSON `"answer": ...`
  field, "#### x", "(final/correct/...) answer is/:/= x", "the required value is x" and other conclusions
  ("Therefore, x = 3"), each cut at the end of its sentence (a decimal point does not end a sentence).
- `final_span` takes the last strong decision (boxed, JSON, ####, "answer is"), else the last conclusion;
  when a retraction ("wait, no", "that's wrong", "I made a mistake") follows it and no new decision does,
  there is no answer: a correction that changes the answer wins, a retracted answer without one counts as
  unparsed.
- `refusing` tells a span that negates ("not 10") or hedges ("either 10 or 20", "between 10 and 20").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_BOX = re.compile(r"\\(?:boxed|box|fbox)\s*\{")
_STATEMENT = re.compile(
    r"(?:\b(?:final|correct|right|true|actual|best|my|short|the)\s+)?\b(?:answers?|(?<=final\s)result)\b"
    r"(?:\s+(?:to|for|of)\s+(?:this|the|that|your)\s+(?:question|problem|task|query)\b)?"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|remains|becomes|stays|here\s+is)\b"
    r"(?:\s*(?:therefore|thus|then|indeed|clearly|simply|just)\b)?\s*:?|\s*[:=])\s*", re.I)
_HEADING = re.compile(r"^[ \t]*(?:final\s+answer|answer|result)[ \t]*:?[ \t]*$", re.I | re.M)
_HASHES = re.compile(r"^\s*####\s*", re.M)
_JSON = re.compile(r"[\"']answer[\"']\s*:\s*(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^,}\n]+))", re.I)
_CONCLUSION = re.compile(
    r"(?:^|(?<=[.!?:\n]))\s*(?:therefore|thus|hence|so|in\s+total|in\s+conclusion|overall|finally|altogether|"
    r"this\s+means|which\s+means|that\s+means|the\s+(?:final|required|desired|requested)\s+(?:value|result|amount))"
    r"\b[^.!?\n]{0,120}?(?:\bis\b|\bare\b|\bequals\b|\bcomes\s+to\b|\bwill\s+be\b|\bwould\s+be\b|\bwas\b|"
    r"\bgives\b|\bget\b|\bhas\b|\bhave\b|=|≈|\\approx)\s*:?\s*", re.I)
_CORRECTION = re.compile(
    r"\b(?:actually|instead|rather|correction|no)\s*[,:]?\s*(?:I\s+think\s+|I\s+believe\s+)?(?:it(?:'s|\s+is|\s+was|\s+should\s+be|"
    r"\s+must\s+be)|the\s+(?:correct|right|real|actual)\s+\w+\s+(?:is|was))\b\s*:?\s*", re.I)
RETRACTION = re.compile(
    r"\b(?:wait|hold\s+on|hmm+|oops|no)\s*[,.!]*\s*(?:no|wait|that'?s\s+(?:not\s+right|wrong|incorrect))\b|"
    r"\bactually\s*,?\s*no\b|"
    r"\bI\s+(?:made|think\s+I\s+made)\s+(?:a|an)\s+(?:mistake|error)\b|\bscratch\s+that\b|"
    r"\bI\s+was\s+wrong\b|\blet\s+me\s+correct\b|\bon\s+second\s+thought\b|\bcorrection\s*:",
    re.I)
# "that's wrong" retracts the decision right before it (only interjections between); further on it is about
# something else ("(A) says Paris, but that is wrong")
_NEAR_RETRACTION = re.compile(r"\bthat(?:'s|\s+is)\s+(?:wrong|incorrect|not\s+right|a\s+mistake)\b", re.I)
_NEAR = 40


def clean(text: str) -> str:
    """The response without markup that never changes an answer (bold, italics, code marks, answer tags)."""
    t = str(text).replace("\r\n", "\n").replace("\r", "\n")
    t = re.sub(r"<\s*answer\s*>", "\nAnswer: ", t, flags=re.I)
    t = re.sub(r"<\s*/\s*answer\s*>", "\n", t, flags=re.I)
    t = re.sub(r"\*\*|__|`", "", t)
    t = re.sub(r"(?<![\w*\\])\*(?=\S)|(?<=[^\s\\])\*(?![\w*])", "", t)  # *italic*, but not 2*3
    t = re.sub(r"^\s{0,3}#{1,3}\s+", "", t, flags=re.M)  # headings; '####' (GSM8K's answer line) is kept
    return t


def sentence_end(text: str, start: int) -> int:
    """End of the sentence that starts at `start`: a newline, or . ! ? ; followed by a space or the end.
    A point between digits (3.18) or after a lone option letter (C. Madrid) does not end it."""
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            return i
        if ch in ".!?;" and (i + 1 == n or text[i + 1] in " \n\t\"')"):
            if ch == "." and i > 0 and text[i - 1].isdigit() and i + 1 < n and text[i + 1].isdigit():
                i += 1
                continue
            return i
        i += 1
    return n


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every \\boxed{...}; content with nested braces kept."""
    out = []
    for m in _BOX.finditer(text):
        start = m.end()
        depth, i = 1, start
        while i < len(text) and depth:
            if text[i] == "{":  # \{ \} (a set's braces) nest like the others
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth:
            continue
        content = text[start:i - 1]
        eol = text.find("\n", i)
        rest = text[i:eol if eol >= 0 else len(text)]
        # a Dyck answer "} ]" closes the box early: \boxed{} ]} -> the closers up to the last brace on the line
        if re.fullmatch(r"[\s()\[\]{}<>]*\}[\s$.]*", rest) and re.fullmatch(r"[\s()\[\]{}<>]*", content):
            last = i + rest.rfind("}")
            content, i = text[start:last], last + 1
        out.append((m.start(), i, content.strip()))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces kept (\\boxed{\\frac{1}{2}} -> \\frac{1}{2})."""
    boxes = _box_spans(text)
    return boxes[-1][2] if boxes else None


@dataclass
class Decision:
    """One place where a response states an answer: `span` is the stated answer, `strong` is False for a
    conclusion sentence ("So the total is 18")."""

    start: int
    end: int
    span: str
    strong: bool = True
    kind: str = "statement"
    hedged: bool = False  # "Possible answers: ...", "The answer could be ...": offered, not decided

    @property
    def stated(self) -> str | None:
        """The stated answer, or None when the statement only offers it."""
        return None if self.hedged else self.span


def _trim(span: str) -> str:
    span = span.strip()
    span = re.sub(r"^\$+\s*|\s*\$+$", "", span) if span.count("$") % 2 == 0 or span.startswith("$") else span
    return re.sub(r"[\s.;,!:]+$", "", span).strip()


PLACEHOLDERS = frozenset({"answer", "your answer", "final answer", "x", "...", "…", "letter", "number", "anything"})
_OFFERED = re.compile(r"\b(?:could|might|may|possibl[ey]|perhaps|either|candidates?|options?\s+are|guess(?:es)?)\b", re.I)


def _placeholder(span: str) -> bool:
    """\\boxed{ANSWER}, "(X)": the prompt's own answer template, not an answer."""
    s = re.sub(r"[\s()\[\]{}$*\\]|text", "", span).lower()
    return s in PLACEHOLDERS or span.strip() in ("(X)", "X")


def decisions(text: str) -> list[Decision]:
    """Every stated answer of a cleaned response, in reading order (the prompt's own answer template, such
    as \\boxed{ANSWER}, is not one)."""
    found = _decisions(text)
    for d in found:
        if d.kind in ("statement", "conclusion"):
            sent = max(text.rfind("\n", 0, d.start), text.rfind(". ", 0, d.start), -1) + 1
            head = text[sent:d.start] + text[d.start:d.end][:max(0, len(text[d.start:d.end]) - len(d.span))][:60]
            d.hedged = _OFFERED.search(head) is not None
    return [d for d in found if not _placeholder(d.span)]


def _decisions(text: str) -> list[Decision]:
    found: list[Decision] = []
    boxes = _box_spans(text)
    for s, e, content in boxes:
        found.append(Decision(s, e, content, True, "boxed"))

    def in_box(pos: int) -> bool:
        return any(s <= pos < e for s, e, _ in boxes)

    def box_after(a: int, b: int) -> bool:
        return any(a <= s < b for s, _, _ in boxes)

    for m in _JSON.finditer(text):
        val = next(g for g in m.groups() if g is not None)
        found.append(Decision(m.start(), m.end(), val.strip(), True, "json"))
    for m in _HASHES.finditer(text):
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        found.append(Decision(m.start(), end, _trim(text[m.end():end]), True, "hashes"))
    for m in _HEADING.finditer(text):  # "### Final Answer\n**14**": the line after the heading
        nxt = re.match(r"\s*([^\n]+)", text[m.end():])
        if nxt and not in_box(m.start()) and not box_after(m.start(), m.end() + nxt.end()):
            span = _trim(nxt.group(1))
            if span:
                found.append(Decision(m.start(), m.end() + nxt.end(), span, True, "heading"))
    for m in _STATEMENT.finditer(text):
        if in_box(m.start()) or any(d.start <= m.start() < d.end for d in found if d.kind == "heading"):
            continue
        start = m.end()
        if start < len(text) and text[start] == "\n":  # "Answer:\n\n42"
            nxt = re.match(r"\n\s*", text[start:])
            start += nxt.end() if nxt else 0
        end = sentence_end(text, start)
        if box_after(m.start(), max(end, start + 1)):  # "The final answer is $\boxed{18}$": the box decides
            continue
        span = _trim(text[start:end])
        if span:
            found.append(Decision(m.start(), end, span, True, "statement"))
    def sentence_after(m: re.Match, strong: bool, kind: str) -> None:
        """The rest of the sentence after a trigger, unless a box or an earlier decision covers it."""
        end = sentence_end(text, m.end())
        at = m.start() if kind == "correction" else m.end()
        if box_after(m.start(), max(end, m.end() + 1)) or any(d.start <= at < d.end for d in found):
            return
        span = _trim(text[m.end():end])
        if span:
            found.append(Decision(m.start(), end, span, strong, kind))

    for m in _CORRECTION.finditer(text):  # "... wait, no. Actually it's Toulon."
        if not in_box(m.start()) and (RETRACTION.search(text, 0, m.end()) or _NEAR_RETRACTION.search(text, 0, m.end())
                                      or re.match(r"actually", m.group(0), re.I)):
            sentence_after(m, True, "correction")
    for m in _CONCLUSION.finditer(text):
        if not in_box(m.start()):
            sentence_after(m, False, "conclusion")
    found.sort(key=lambda d: (d.start, -d.end))
    return found


def retracted_after(text: str, pos: int) -> bool:
    """A retraction ("wait, no", "that's wrong") after `pos`."""
    if RETRACTION.search(text, pos) is not None:
        return True
    near = _NEAR_RETRACTION.search(text, pos, pos + _NEAR)
    return near is not None and re.fullmatch(r"[\s.,!;:…-]*(?:(?:hmm+|oh|oops|no|wait|but|actually|hold\s+on)[\s.,!;:…-]*)*",
                                             text[pos:near.start()], re.I) is not None


def final_decision(text: str, found: list[Decision] | None = None, strong_only: bool = False) -> Decision | None:
    """The decision the response ends on: the last strong one, else the last conclusion; None when it is
    retracted afterwards without a new decision. A correction ("Actually, it's X") after a retraction is
    a strong decision of its own, so it wins."""
    found = decisions(text) if found is None else found
    strong = [d for d in found if d.strong and (not strong_only or d.kind != "correction")]
    pool = strong or ([] if strong_only else found)
    if not pool:
        return None
    d = pool[-1]
    if retracted_after(text, d.end):
        return None
    return d


def final_span(text: str, strong_only: bool = False) -> str | None:
    d = final_decision(clean(text), strong_only=strong_only)
    return d.stated if d else None


NEGATION = re.compile(r"^\s*(?:(?:definitely|certainly|surely|clearly|probably|obviously|absolutely)\s+)?"
                      r"(?:not|isn'?t|is\s+not|never|no\s+longer|neither)\b", re.I)
HEDGE = re.compile(r"\b(?:either|between|or|somewhere|unclear|not\s+sure|unsure|cannot\s+(?:be\s+)?determined?|"
                   r"depends|could\s+be|might\s+be)\b|\d\s*(?:–|to|and)\s*-?\$?\d", re.I)


def echoes_prompt(question: str, text: str) -> bool:
    """The response repeats the question itself (its first 80 characters): a model that echoed the prompt.
    Its numbers and words are the question's, so no fallback may read an answer from them."""
    q = " ".join(str(question).split())[:80]
    return len(q) >= 20 and q in " ".join(text.split())


def negated(span: str) -> bool:
    """'not 10', "isn't (C)": the span denies instead of stating."""
    return NEGATION.match(span) is not None


def answer_span(text: str) -> str | None:
    """The final stated answer of a response (see `final_decision`); None when it states none."""
    return final_span(text)


def last_statement(text: str) -> str | None:
    """The last strong statement ('answer is ...', '####', boxed), kept for callers of the first version."""
    return final_span(text, strong_only=True)
