"""Multiple choice: the option the response decides on, with strict and flexible extraction side by side.

Gold: the option letter. The response is read the way a careful grader reads it (markup removed first, see
`extract.clean`), and the **last decision** wins:

Accepted decisions (an option is named by its letter in any markup - `C`, `c`, `(C)`, `[C]`, `C)`, `C.`,
`**C**`, `\\text{(C)}` - by its letter and text "C) Madrid", or by its text "Madrid"):
- strict: `\\boxed{C}` / `\\boxed{\\text{(C)}}` / `\\boxed{Madrid}`, JSON `{"answer": "C"}`, "The answer is
  (C)", "Answer: c", "The correct option is C", "The answer is Madrid", or a response that is only the option.
- flexible (also): "C is correct", "Option C is the best answer", "C: Correct", "I'd choose C", "I'll go
  with (C)", "It's (C)", "So, C.", a line that is only the option after the reasoning; and, for a short
  response (two sentences at most) that states no decision, the one option it names by letter or text.

Refused (unparsed, score 0): a decision between options ("(C) or (A), I'm not sure", "either B or C"), a
negation ("The answer is not (C)", "C is incorrect" is not a decision), a list of options without a choice,
an echo of the prompt's option list (its "Answer:" followed by the listed options), a truncated analysis
with no decision, and a decision retracted afterwards without a new one ("(C)... wait, no."). A correction
("(C)... wait, no. Actually it's (A).") is a later decision, so it wins. No option is preferred by its
position: an undecided response never scores, whichever option is the gold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.extract import _JSON, _box_spans, clean, retracted_after, sentence_end
from moco.tasks.base import Example

_CONNECT = {"is", "was", "because", "since", "as", "which", "and", "with", "for", "here", "seems", "appears",
            "would", "should", "must", "best", "correct", "right", "option", "choice", "answer", "in", "from",
            "then", "therefore", "so", "given", "due", "based", "looks"}
# a letter marker: (C) [C] {C} C) C. C: C, or a bare C; group 1 is the letter
_MARK = r"(?:\\text\{\s*)?(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|\{\s*([A-Za-z])\s*\}|([A-Za-z])(?:\s*\))?)(?:\s*\})?"
_MARK_SCAN = re.compile(r"(?<![\w\\])(?:(?:option|choice|answer)\s+)?" + _MARK + r"(?![\w'’])", re.I)
_MARK_AT = re.compile(r"\s*" + _MARK)
_STATEMENT = re.compile(
    r"(?:\b(?:final|correct|right|true|best|my|the|most\s+(?:appropriate|likely|accurate|suitable))\s+)?"
    r"\b(?:answer|option|choice|letter|response|selection)s?\b"
    r"(?:\s+(?:to|for)\s+(?:this|the|that)\s+(?:question|problem)\b)?"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|here\s+is|remains)\b"
    r"(?:\s*(?:therefore|thus|then|indeed|clearly|definitely|likely|probably|simply)\b)?\s*:?|\s*[:=])\s*", re.I)
_CHOOSE = re.compile(
    r"\b(?:I(?:'d|'ll|\s+would|\s+will|\s+will\s+have\s+to|\s+have\s+to|\s+must)?\s+(?:choose|pick|select|go\s+with|"
    r"opt\s+for|say|answer(?:\s+with)?|vote\s+for)|(?:let'?s|we)\s+(?:choose|pick|select|go\s+with)|"
    r"(?:choose|select|pick)|my\s+(?:choice|pick|selection|vote)\s+(?:is|would\s+be|:)|go\s+with|"
    r"it(?:'s|\s+is|\s+must\s+be|\s+has\s+to\s+be|\s+should\s+be|\s+would\s+be)|"
    r"(?:so|therefore|thus|hence|finally|in\s+conclusion|conclusion)\s*[,:]?)"
    r"\s*:?\s*(?:(?:option|choice|letter)\s+)?", re.I)
_ASSERT = re.compile(
    r"\s*(?:[:\-–—]\s*(?:this\s+is\s+)?(?:the\s+)?(?:correct|right|true)\b(?!\s+(?:for|in|about|only|if))|"
    r"(?:is|seems|appears|looks|would\s+be|must\s+be|remains)\s+(?:to\s+be\s+)?(?:the\s+)?"
    r"(?:most\s+|only\s+|clearly\s+|definitely\s+|indeed\s+|therefore\s+)?"
    r"(?:correct|right|best|true|accurate|appropriate|likely|valid|suitable|answer|one)\b)", re.I)
_NEGATED_AFTER = re.compile(
    r"\s*(?:\)\s*)?(?:is|are|seems|appears|looks|would\s+be|can\s+be|must\s+be|does|do)?\s*"
    r"(?:(?:clearly|definitely|obviously|also|certainly|simply|likewise)\s+)?"
    r"(?:not|n't|incorrect|wrong|false|ruled\s+out|eliminated|excluded|implausible|unlikely)\b", re.I)
_NOT_BEFORE = re.compile(r"(?:\bnot|n't|\bexcept|\bexclude|\beliminate|\brule\s+out|\brather\s+than|\binstead\s+of|"
                         r"\bover|\bthan|\bunlike|\bagainst)\s*(?:option\s+|choice\s+)?$", re.I)
_ALT = re.compile(r"(?:\bor\b|\band\b|/|,|&|\bvs\.?|\bversus\b|\bbetween\b|\beither\b)\s*(?:option\s+|choice\s+)?$", re.I)
_LIST_LINE = re.compile(r"^\s*(?:[-*•]\s*)?(?:option\s+)?[\(\[]?([A-Z])[\)\].:]\s+\S")
_SHORT_WORDS = 50


_SYMBOLS = {"<": " lt ", ">": " gt ", "≤": " le ", "≥": " ge ", "=": " eq ", "+": " plus ", "−": " minus "}


def _norm(s: str) -> str:
    """Lower case, words only; comparison and sign symbols kept as words ("< 135" differs from "> 135")."""
    t = s.lower()
    for sym, word in _SYMBOLS.items():
        t = t.replace(sym, word)
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", t)).strip()


@dataclass
class _Ref:
    """An option decision at a place in the text; `letters` empty = names no option, >1 = a hedge."""

    start: int
    end: int
    letters: frozenset[str]
    strict: bool


class OptionReader:
    """Reads the decision of one response over one item's options."""

    def __init__(self, choices: dict[str, str]):
        self.choices = choices
        self.letters = set(choices)
        self.texts = {k: _norm(v) for k, v in choices.items() if _norm(v)}
        self._memo: tuple[str, list[_Ref]] | None = None  # the last text read and its decisions

    # ------------------------------------------------------------------ markers and texts
    def letter_at(self, text: str, pos: int) -> tuple[str, int] | None:
        """The option letter marked at `pos` (after spaces), and where the marker ends."""
        quote = re.match(r"\s*[\"“‘']", text[pos:])  # "The answer is \"C\"", 'C'
        m = _MARK_AT.match(text, pos + quote.end() if quote else pos)
        if not m:
            return None
        raw = next(g for g in m.groups() if g)
        end = m.end()
        closed = quote is not None and text[end:end + 1] in ("\"", "”", "’", "'")
        bracketed = closed or m.group(4) is None or text[m.start(4):end].rstrip().endswith(")")
        if closed:
            end += 1
        nxt = text[end:end + 1]
        if nxt and (nxt.isalnum() or nxt in "'’-_"):
            return None
        if raw.upper() not in self.letters:
            return None
        if not bracketed and (raw.islower() or raw in "AI"):
            # a bare lower-case letter or "A"/"I" followed by a word is an article/pronoun ("a city", "I think")
            w = re.match(r"\s+([A-Za-z']+)", text[end:])
            if w and w.group(1).lower() not in _CONNECT and text[end:end + 1] not in ".,;:!?":
                return None
        return raw.upper(), end

    def text_at(self, text: str, pos: int) -> tuple[str, int] | None:
        """The option whose text starts at `pos` (the longest such option; None if two options share it)."""
        rest = _norm(text[pos:pos + 400])
        best: list[tuple[int, str]] = []
        for k, v in self.texts.items():
            if rest == v or rest.startswith(v + " "):
                best.append((len(v), k))
        if not best:
            return None
        best.sort(reverse=True)
        if len(best) > 1 and best[0][0] == best[1][0] and self.texts[best[0][1]] == self.texts[best[1][1]]:
            return None
        k = best[0][1]
        return k, pos + _raw_len(text[pos:], self.texts[k])

    def ref_at(self, text: str, pos: int, span_end: int) -> frozenset[str] | None:
        """The option(s) a decision names from `pos` to `span_end`: a letter (+ its text) or an option text,
        plus any alternative offered after it ("C or A" -> {A, C}); None when it names none or negates."""
        head = text[pos:span_end]
        if re.match(r"\s*(?:not|n't|never|neither|none\s+of)\b", head, re.I) and self.text_at(text, pos) is None:
            return None  # "not (C)"; but "None of the above" may be an option's text
        got = self.letter_at(text, pos)
        if got is None:
            got = self.text_at(text, pos)
            if got is None:
                # "option C", "letter C", "the option (C)"
                m = re.match(r"\s*(?:the\s+)?(?:option|choice|letter)\s+", text[pos:span_end], re.I)
                if m:
                    got = self.letter_at(text, pos + m.end())
            if got is None:
                return None
        letter, end = got
        own = self.texts.get(letter)
        after = text[end:span_end]
        if own:  # skip the option's own text so "(D) Both A and B" is not read as a hedge
            m = re.match(r"\s*[:.\-–)]?\s*", after)
            s = m.end() if m else 0
            if _norm(after[s:]).startswith(own):
                end = end + s + _raw_len(after[s:], own)
                after = text[end:span_end]
        letters = {letter}
        for m in re.finditer(r"(?:\bor\b|\band\b|/|,|&)\s*(?:maybe\s+|perhaps\s+|possibly\s+)?(?:option\s+|choice\s+)?"
                             r"[\(\[\"“‘']?([A-Za-z])[\)\]\"”’']?(?![\w'])", after):
            if m.group(1).upper() in self.letters and (m.group(1).isupper() or after[m.start(1) - 1:m.start(1)] in "([")\
                    and not _NOT_BEFORE.search(after[:m.start()]) \
                    and not _NEGATED_AFTER.match(after, self._past_text(after, m.end(), m.group(1).upper())):
                letters.add(m.group(1).upper())
        for alt in self.mentions(after, strong_only=True):
            pre = after[:alt[0]]
            if _NOT_BEFORE.search(pre) or _NEGATED_AFTER.match(after, self._past_text(after, alt[1], alt[2])):
                continue  # "(C), and (A) is wrong"
            if not pre.strip(" ,;:") or _ALT.search(pre) or re.search(r"\b(?:or|either|maybe|perhaps|possibly)\b", pre, re.I):
                letters.add(alt[2])
        return frozenset(letters)

    def _past_text(self, text: str, pos: int, letter: str) -> int:
        """Where the option's own text ends, when it follows its letter at `pos` ("(B) Rome can be ruled out")."""
        own = self.texts.get(letter)
        skip = re.match(r"\s*[:.\-–)]?\s*", text[pos:])
        s = skip.end() if skip else 0
        if own and _norm(text[pos + s:pos + s + 400]).startswith(own):
            return pos + s + _raw_len(text[pos + s:], own)
        return pos

    def mentions(self, text: str, strong_only: bool = False) -> list[tuple[int, int, str]]:
        """(start, end, letter) of option markers: bracketed letters everywhere; with `strong_only` False
        also option texts."""
        out = []
        for m in re.finditer(r"(?<![\w\\])(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Z])\s*\]|(?<![(\[])\b([A-Z])\)|"
                             r"(?:option|choice)\s+([A-Za-z])\b)", text, re.I):
            raw = next(g for g in m.groups() if g)
            up = raw.upper()
            if up in self.letters and (raw.isupper() or m.group(1) or m.group(4)):
                out.append((m.start(), m.end(), up))
        for m in re.finditer(r"(?:(?<=\s)|(?<=^)|(?<=[,/&]))([A-Z])(?=\s*(?:$|[,/&.?!;]|\s+(?:or|and|nor)\b|\s+[A-Z](?!\w)))", text):
            if m.group(1) in self.letters and m.group(1) not in "AI":
                out.append((m.start(), m.end(), m.group(1)))
        if not strong_only:
            low = _norm(text)
            for k, v in self.texts.items():
                if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", low):
                    out.append((-1, -1, k))
        return sorted(out)

    # ------------------------------------------------------------------ decisions
    def listing_lines(self, text: str) -> set[int]:
        """Start offsets of lines that belong to a listing of options (two or more option lines in a row, in
        letter order): an echo of the prompt or an option-by-option analysis, not a decision."""
        lines, pos = [], 0
        for ln in text.split("\n"):
            lines.append((pos, ln))
            pos += len(ln) + 1
        marked = []
        for start, ln in lines:
            m = _LIST_LINE.match(ln)
            if m and m.group(1) in self.letters:
                marked.append((start, m.group(1)))
            elif ln.strip():
                marked.append((start, None))
        out: set[int] = set()
        run: list[tuple[int, str]] = []
        for start, letter in marked + [(-1, None)]:
            if letter and (not run or letter > run[-1][1]):
                run.append((start, letter))
                continue
            if len(run) >= 2:
                out.update(s for s, _ in run)
            run = [(start, letter)] if letter else []
        return out

    def echoes_options(self, text: str) -> bool:
        """The response repeats the prompt's whole option list ("A) Paris\nB) Rome\n...")."""
        seen = {m.group(1) for ln in text.split("\n") if (m := _LIST_LINE.match(ln))
                and self.texts.get(m.group(1), "\0") in _norm(ln)}
        return len(self.letters) >= 2 and self.letters <= seen

    def decisions(self, text: str) -> list[_Ref]:
        found: list[_Ref] = []
        listed = self.listing_lines(text)
        echoed = self.echoes_options(text)
        boxes = _box_spans(text)

        def covered(pos: int) -> bool:
            return any(s <= pos < e for s, e, _ in boxes)

        for s, e, content in boxes:
            inner = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", content).strip("$ ")
            ref = self.ref_at(inner, 0, len(inner))
            if ref is not None:
                found.append(_Ref(s, e, ref, True))
        for m in _JSON.finditer(text):
            val = next(g for g in m.groups() if g is not None)
            ref = self.ref_at(val, 0, len(val))
            if ref is not None:
                found.append(_Ref(m.start(), m.end(), ref, True))
        for m in _STATEMENT.finditer(text):
            if covered(m.start()):
                continue
            pos = m.end()
            if "\n" in text[m.start():pos] or text[pos:pos + 1] == "\n":
                skip = re.match(r"\s*", text[pos:])
                pos += skip.end() if skip else 0
                line_start = text.rfind("\n", 0, pos) + 1
                if line_start in listed or (echoed and _LIST_LINE.match(text[line_start:])):
                    continue  # "Answer:\n\nA) ...\nB) ..." echoes the option list
            end = self._span_end(text, pos)
            ref = self.ref_at(text, pos, end)
            if ref is None and not re.match(r"\s*(?:not|n't|never|neither|none)\b", text[pos:end], re.I):
                # "The answer is a city in Spain: Madrid." - the options the statement names
                named = {k for _, _, k in self.mentions(text[pos:end])}
                ref = frozenset(named) if named else None
            if ref is not None:
                found.append(_Ref(m.start(), end, ref, True))
        for m in _CHOOSE.finditer(text):
            sent = max(text.rfind("\n", 0, m.start()), text.rfind(". ", 0, m.start())) + 1
            if covered(m.start()) or re.search(r"\b(?:not|never)\b|n't\b", text[sent:m.start()], re.I):
                continue  # "I don't think it's C"
            end = self._span_end(text, m.end())
            got = self.letter_at(text, m.end())
            if got is None:
                continue
            ref = self.ref_at(text, m.end(), end)
            if ref is not None and self._ends_clause(text, got[1]):
                found.append(_Ref(m.start(), end, ref, False))
        for m in _MARK_SCAN.finditer(text):
            if covered(m.start()) or not m.group(0).strip():
                continue
            got = self.letter_at(text, m.start() + (len(m.group(0)) - len(m.group(0).lstrip())))
            if got is None:
                word = re.match(r"(?:option|choice|answer)\s+", text[m.start():], re.I)
                got = self.letter_at(text, m.start() + word.end()) if word else None
            if got is None:
                continue
            letter, end = got
            own = self.texts.get(letter)
            after = text[end:]
            skip = re.match(r"\s*[:.\-–)]?\s*", after)
            s = skip.end() if skip else 0
            if own and _norm(after[s:s + 400]).startswith(own):
                end += s + _raw_len(after[s:], own)
            a = _ASSERT.match(text, end)
            if a and not _NEGATED_AFTER.match(text, end):
                found.append(_Ref(m.start(), a.end(), frozenset({letter}), False))
        # a line that is only an option (letter, letter + text, or text), not part of a listing
        pos = 0
        for ln in text.split("\n"):
            start = pos
            pos += len(ln) + 1
            if not ln.strip() or start in listed or (echoed and _LIST_LINE.match(ln)):
                continue
            body = re.sub(r"^\s*(?:[-*•>]\s*)?|[\s.!]+$", "", ln)
            lead = len(ln) - len(ln.lstrip()) + (len(ln.lstrip()) - len(ln.lstrip().lstrip("-*•> ")))
            ref = self._only_option(body)
            if ref is not None and not re.match(r"\s*[:\-–—]", text[pos:]):  # "(A) Paris\n: This..." analyses A
                whole = text.strip() == ln.strip()
                found.append(_Ref(start + lead, start + len(ln), frozenset({ref}), whole))
        found.sort(key=lambda r: (r.start, -r.end))
        return found

    def _only_option(self, body: str) -> str | None:
        """The option a line consists of: "C", "(C)", "C) Madrid", "C. Madrid", "Madrid", "Option C"."""
        if not body or len(body) > 400:
            return None
        body = re.sub(r"^(?:option|choice)\s+", "", body, flags=re.I)
        got = self.letter_at(body, 0)
        if got is not None:
            letter, end = got
            rest = _norm(body[end:])
            if not rest or rest == self.texts.get(letter):
                return letter
            return None
        got = self.text_at(body, 0)
        if got is not None and not _norm(body[got[1]:]):
            return got[0]
        return None

    @staticmethod
    def _span_end(text: str, pos: int) -> int:
        end = sentence_end(text, pos)
        # "C. Madrid" - the point after a lone letter is the marker's, not the sentence's
        if re.fullmatch(r"\s*[A-Za-z]\.", text[pos:end + 1]) and end < len(text) and text[end] == ".":
            end = sentence_end(text, end + 1)
        return end

    @staticmethod
    def _ends_clause(text: str, end: int) -> bool:
        """After "I'd choose C" / "It's C": the letter ends the clause or is followed by its reason/text."""
        rest = text[end:end + 40]
        return bool(re.match(r"\s*(?:$|[.,;:!?)\]\n]|\s+(?:because|since|as|which|with|for|here|-|–|—)\b|\s*[-–—])", rest)) \
            or bool(re.match(r"\s+\S", rest))

    def fallback(self, text: str) -> frozenset[str] | None:
        """A short response that states no decision: the one option it names (letter marker or text). Not an
        analysis cut short ("Let's look at each option. (A) Paris: This is...") nor a truncated sentence."""
        words = len(text.split())
        if words > _SHORT_WORDS or len(re.findall(r"[.!?](?:\s|$)", text.strip())) > 2:
            return None
        if words > 8 and not re.search(r"[.!?)\]\"'»]\s*$", text):
            return None
        if re.search(r"\b(?:each|every|all)\s+(?:of\s+the\s+)?(?:option|choice|answer)s?\b|\banaly[sz]|"
                     r"\bstep\s+by\s+step\b|\blet'?s\b|\bconsider", text, re.I):
            return None
        if re.search(r"(?m)^\s*(?:[-*•]\s*)?[\(\[]?[A-Z][\)\].]\s*[^\n:]{0,80}:\s*\S", text):
            return None  # "(A) Paris: This is ..." is an analysis item, not a decision
        if re.search(r"\b(?:not|never|neither|nor|wrong|incorrect|unsure|either|or|maybe|perhaps|could|might|possibly)\b|"
                     r"n't\b", text, re.I):
            return None  # a negation or alternatives, not a decision
        marks = self.mentions(text)
        named = {k for s, _, k in marks if s >= 0}
        texts = {k for s, _, k in marks if s < 0}
        # an option text contained in another matched option's text ("Paris" in "Paris, Texas") is not named
        named |= {k for k in texts if not any(k != o and self.texts[k] != self.texts[o] and
                                              f" {self.texts[k]} " in f" {self.texts[o]} " for o in texts)}
        return frozenset(named) if named else None

    def read(self, response: str, strict: bool = False) -> str | None:
        """The decided option letter, or None (no decision, a hedge, a negation, a retracted decision)."""
        text = clean(response).strip()
        if not text:
            return None
        if self._memo is None or self._memo[0] != text:
            self._memo = (text, self.decisions(text))
        refs = [r for r in self._memo[1] if r.strict or not strict]
        if not refs:
            if strict:
                return None
            got = self.fallback(text)
            return next(iter(got)) if got is not None and len(got) == 1 else None
        last = refs[-1]
        if retracted_after(text, last.end):
            return None
        if len(last.letters) != 1:
            return None
        return next(iter(last.letters))


def _raw_len(raw: str, normed: str) -> int:
    """How many characters of `raw` make up the normalised text `normed` (at its start)."""
    words = normed.split()
    pos = 0
    for w in words:
        m = re.search(re.escape(w), raw[pos:], re.I)
        if not m:
            return pos
        pos += m.end()
    return pos


class MultipleChoiceScorer(BaseScorer):
    """The option the response decides on (strict: stated; flexible: any decision form) equals the gold."""

    name = "multiple_choice"
    metric = "accuracy"

    def strict(self, example: Example, response: str) -> str | None:
        return OptionReader(example.choices or {}).read(response, strict=True)

    def flexible(self, example: Example, response: str) -> str | None:
        return OptionReader(example.choices or {}).read(response)

    def extract(self, example: Example, response: str) -> str | None:
        return self.flexible(example, response)

    def score(self, example: Example, response: str) -> ScoreResult:
        reader = OptionReader(example.choices or {})
        s = reader.read(response, strict=True)
        ans = reader.read(response)
        return ScoreResult(float(ans is not None and ans == example.answer), ans,
                           strict=float(s is not None and s == example.answer))

    def gold_key(self, example: Example) -> str | None:
        return None if example.answer is None else str(example.answer)
