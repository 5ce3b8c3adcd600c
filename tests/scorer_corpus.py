"""A corpus of responses written the way 7B-70B chat models answer, applied to real items of every objective
dataset (tests/data/scorer_corpus/): 20 families, each a set of templates over the item's gold and a wrong
answer, in the forms its dataset needs (option letters and texts, numbers, LaTeX, labels, short phrases).

Each family has an expectation:
- "correct": a careful grader gives full credit (score 1; F1 1),
- "wrong": the response decides on a wrong answer (score 0),
- "unparsed": the response decides nothing a grader could accept (hedge, negation, listing, echo,
  truncation, retraction, refusal): score 0 and no extracted answer.

Used by tests/test_scorer_corpus.py (rates asserted) and benchmarks/scorer_corpus.py (the table).
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moco.scoring.numeric import parse_number
from moco.scoring.short_answer import aliases, options_in
from moco.tasks.base import Example
from moco.tasks.moco_json import load_moco_json

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "scorer_corpus"
DATASETS = sorted(p.stem for p in CORPUS_DIR.glob("*.json"))


@dataclass
class View:
    """What the families need of one item: ways to write its gold answer and one wrong answer."""

    kind: str  # mc | number | math | label | short | list | text
    gold: list[str]  # forms of the gold answer, the plainest first
    wrong: str  # one wrong answer, written plainly
    others: list[str] = field(default_factory=list)  # every alternative (options, labels) for the listing family
    gold_text: str = ""  # MC: the gold option's text
    wrong_text: str = ""
    equation: str | None = None  # "a + b = gold" when the gold is a whole number


@dataclass
class Case:
    dataset: str
    family: str
    expect: str  # correct | wrong | unparsed
    example: Example
    response: str


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _unique_text(ex: Example, letter: str) -> bool:
    t = ex.choices[letter].strip().lower()
    return bool(t) and len(t) < 120 and all(
        t not in o.strip().lower() and o.strip().lower() not in t for k, o in ex.choices.items() if k != letter)


def view_of(name: str, ex: Example, rng: random.Random) -> View:
    gold = ex.answer
    if ex.choices:
        letters = list(ex.choices)
        wrong = rng.choice([k for k in letters if k != gold])
        forms = [f"({gold})", gold, f"{gold}) {ex.choices[gold]}"]
        if _unique_text(ex, gold):
            forms.append(ex.choices[gold].strip().rstrip("."))
        return View("mc", forms, f"({wrong})", [f"({k})" for k in letters], ex.choices[gold], ex.choices[wrong])
    atype = str(ex.meta.get("answer_type", ""))
    if atype == "bool" or name in ("culturebench",):
        other = "False" if str(gold) == "True" else "True"
        return View("label", [str(gold), str(gold).lower(), str(gold).upper()], other, ["True", "False"])
    if atype == "option":
        letter = str(gold).strip("()")
        wrong = "b" if letter != "b" else "c"
        return View("mc", [f"({letter})", letter, f"({letter.upper()})"], f"({wrong})", [f"({k})" for k in "abcd"])
    if atype.startswith("list"):
        return View("list", [str(gold), str(gold).replace(", ", ",")], "[9, 9, 9]", [])
    if name == "pubmedqa":
        other = "no" if gold != "no" else "yes"
        return View("label", [gold, gold.capitalize(), gold.upper()], other, ["yes", "no", "maybe"])
    if name == "sciriff":
        labels = ["Background", "Uses", "CompareOrContrast", "Motivation", "Extends", "FutureWork"]
        other = "Uses" if gold != "Uses" else "Background"
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", gold)
        return View("label", [gold, gold.lower(), spaced], other, labels)
    if name == "bbh":
        opts = options_in(ex.input)
        if re.fullmatch(r"[A-R]", str(gold)) and opts:
            wrong = rng.choice([k for k in opts if k != gold])
            forms = [f"({gold})", f"({gold}) {opts[gold]}"]
            if all(opts[gold].lower() not in o.lower() and o.lower() not in opts[gold].lower()
                   for k, o in opts.items() if k != gold):
                forms.append(opts[gold])
            return View("mc", forms, f"({wrong})", [f"({k})" for k in opts], opts[gold], opts[wrong])
        low = str(gold).lower()
        for pair in (("yes", "no"), ("true", "false"), ("valid", "invalid")):
            if low in pair:
                other = pair[1 - pair.index(low)]
                return View("label", [str(gold), low, low.capitalize()], other if str(gold)[0].islower() else other.capitalize(),
                            list(pair))
        if parse_number(str(gold)) is not None:
            v = parse_number(str(gold))
            return _number_view(str(gold), v, money=False)
        return View("text", [str(gold)], "] ) }" if "}" in str(gold) or ")" in str(gold) else "zebra apple", [])
    if name in ("gsm8k", "tablemwp_free_text"):
        v = parse_number(str(gold))
        return _number_view(str(gold), v, money=name == "gsm8k" or "." in str(gold))
    if atype in ("integer", "float"):
        return _number_view(str(gold), float(gold), money=False)
    if name == "math":
        g = str(gold).strip()
        v = parse_number(g) if re.fullmatch(r"-?[\d.]+", g) else None
        wrong = "-\\frac{13}{7}"
        view = View("math", [g, f"${g}$"], wrong, [])
        if v is not None and float(v).is_integer() and v >= 4:
            a = int(v) // 2
            view.equation = f"{a} + {int(v) - a} = {g}"
        return view
    if name in ("popqa", "wikidyk"):
        al = aliases(gold)
        return View("short", [al[0]] + al[1:2], "Zanzibar Quintet", [])
    raise ValueError(f"no view for {name}")


def _number_view(g: str, v: float, money: bool) -> View:
    forms = [g]
    if money and "/" not in g:
        forms.append(f"${g}")
    if float(v).is_integer() and abs(v) >= 1000:
        n = f"{int(v):,}"
        forms += [n, n.replace(",", "\\,"), n.replace(",", "{,}")]
    elif float(v).is_integer() and "/" not in g:
        forms.append(f"{int(v)}.00" if money else f"{int(v)}.0")
    wrong = _fmt(v + 7) if "/" not in g else "3/11"
    view = View("number", forms, wrong, [])
    if float(v).is_integer() and v >= 4:
        a = int(v) // 2
        view.equation = f"{a} + {int(v) - a} = {g}"
    return view


# --------------------------------------------------------------------------- the families
def _boxed(f: str, v: View) -> str:
    return f"\\boxed{{{f}}}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def reasoning(v: View) -> str:
    """A few neutral sentences of working that name the wrong answer on the way."""
    if v.kind == "mc":
        return (f"Let's think step by step.\n\nFirst, consider {v.wrong}: {v.wrong_text or 'this option'} does not "
                f"match the question, because the key detail points elsewhere.\n\nNext, "
                f"{v.gold[0]} {v.gold_text} fits every condition in the question.")
    if v.kind in ("number", "math"):
        return (f"Let's solve this step by step.\n\nFirst, we set up the quantities from the problem. A quick guess "
                f"of {v.wrong} does not satisfy the conditions, so we compute carefully.\n\nCombining the parts "
                f"gives the result below.")
    if v.kind == "label":
        return ("Let's look at the evidence step by step. The question asks for a judgement, and the text gives "
                "enough information to make one.")
    return "Let me recall what I know about this. The question asks for one specific name or phrase."


def f_stated(v: View) -> list[str]:
    g = v.gold
    return [f"The answer is {g[0]}.", f"Answer: {g[0]}", f"Final answer: {g[-1]}", f"The correct answer is {g[0]}.",
            f"So the final answer is {g[min(1, len(g) - 1)]}."]


def f_boxed(v: View) -> list[str]:
    g = v.gold
    out = [_boxed(g[0], v), f"$\\boxed{{{g[-1]}}}$", f"Therefore, the final answer is $\\boxed{{{g[0]}}}$.",
           f"\\[\n\\boxed{{{g[min(1, len(g) - 1)]}}}\n\\]"]
    if v.kind in ("mc", "label", "short"):
        out.append(f"$\\boxed{{\\text{{{g[0]}}}}}$")
    return out


def f_markdown(v: View) -> list[str]:
    g = v.gold
    return [f"**{g[0]}**", f"**Answer:** {g[0]}", f"### Final Answer\n**{g[-1]}**", f"The answer is **{g[0]}**.",
            f"*Answer: {g[min(1, len(g) - 1)]}*"]


def f_json_tags(v: View) -> list[str]:
    g = json.dumps(v.gold[0])[1:-1]
    return [f'{{"answer": "{g}"}}', f'```json\n{{"answer": "{g}", "confidence": 0.9}}\n```',
            f"<answer>{v.gold[0]}</answer>", f"<answer>\n{v.gold[-1]}\n</answer>"]


def f_reasoning_then_answer(v: View) -> list[str]:
    r = reasoning(v)
    g = v.gold
    return [f"{r}\n\nTherefore, the answer is {g[0]}.", f"{r}\n\nSo the answer is {g[-1]}.",
            f"{r}\n\nFinal answer: {g[0]}", f"{r}\n\nThe final answer is $\\boxed{{{g[0]}}}$."]


def f_lowercase_casual(v: View) -> list[str]:
    g = v.gold[0]
    if v.kind == "mc":
        letter = g.strip("()").lower()
        return [f"answer: {letter}", f"the answer is ({letter})", f"i'd say {letter}.", f"Answer: {letter}"]
    if v.kind == "label":
        return [f"{v.gold[1]}", f"answer: {v.gold[1]}", f"{v.gold[2]}", f"the answer is {v.gold[1]}"]
    return [f"the answer is {g}", f"answer: {g}", f"it's {g}."]


def f_assertion(v: View) -> list[str]:
    g = v.gold[0]
    if v.kind == "mc":
        letter = g.strip("()")
        return [f"{letter} is correct.", f"Option {letter} is the best answer.", f"I'd choose {letter}.",
                f"I'll go with {g}.", f"{g} is the correct answer because it fits every condition.",
                f"Looking at the choices, {letter} is the right one."]
    if v.kind in ("number", "math"):
        return [f"So the total comes to {g}.", f"Therefore, the required value is {g}.", f"Thus, the result is {g}."]
    if v.kind == "label":
        cap = _cap(v.gold[0])
        return [f"{cap}, because the evidence in the text supports this conclusion.",
                f"{cap}. The text gives enough information to decide.", f"I would say {v.gold[0]}.",
                f"**{cap}**\n\nThe evidence points this way."]
    if v.kind == "short":
        return [f"It was {g}.", f"It is {g}.", f"The answer is {g}, as far as I know."]
    return [f"So the answer is {g}.", f"The result is {g}."]


def f_verbose_forms(v: View) -> list[str]:
    if v.kind == "mc":
        letter = v.gold[0].strip("()")
        out = [f"{v.gold[0]} {v.gold_text}".strip(), f"The answer is {letter}) {v.gold_text}".strip(),
               f"The answer is {v.gold[0]}: {v.gold_text}".strip()]
        if len(v.gold) > 3 or (v.gold_text and v.gold[-1] == v.gold_text):
            out.append(f"The answer is {v.gold[-1]}.")
        return out
    if v.kind in ("number",):
        return [f"The answer is {f}." for f in v.gold] + [f"\\boxed{{{f}}}" for f in v.gold]
    if v.kind == "label":
        return [f"Answer: {_cap(v.gold[0])} - the evidence supports it.", f"The answer is \"{v.gold[0]}\"."]
    if v.kind == "short":
        return [f"The answer is \"{v.gold[0]}\".", f"\\boxed{{{v.gold[-1]}}}"]
    return [f"The answer is {f}." for f in v.gold]


def f_correction_to_gold(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    return [f"The answer is {w}... wait, no. Actually, it's {g}.",
            f"Initially I thought {w}, but that's wrong. The correct answer is {g}.",
            f"\\boxed{{{w}}}\n\nWait, I made a mistake. The answer is \\boxed{{{g}}}."]


def f_decided_then_discussed(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    if v.kind == "mc":
        return [f"The answer is {g}.\n\n{w} is wrong because it does not match the question.",
                f"Answer: {g}\n\nExplanation: {w} {v.wrong_text} is a common distractor, but it ignores a key detail."]
    return [f"The answer is {g}.\n\nNote that {w} would be a common mistake here.",
            f"\\boxed{{{g}}}\n\nA careless reading might give {w} instead."]


def f_equation_or_contrast(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    out = [f"The answer is {g}, not {w}."]
    if v.equation:
        out += [f"The answer is {v.equation}.", f"Adding the two parts: {v.equation}.\n\n\\boxed{{{g}}}"]
    return out


def f_negation(v: View) -> list[str]:
    g = v.gold[0]
    out = [f"The answer is not {g}.", f"It is definitely not {g}."]
    if v.kind == "mc":
        out.append(f"{g.strip('()')} is incorrect.")
    return out


def f_hedge(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    return [f"The answer is either {g} or {w}.", f"{g} or {w}, I'm not sure which.", f"It's between {g} and {w}.",
            f"The answer could be {g} or {w}."]


def f_list_all(v: View) -> list[str]:
    if v.others:
        alts = v.others
        return [", ".join(alts), " ".join(alts), f"The answer could be {', '.join(alts[:-1])} or {alts[-1]}."]
    return [f"It could be {v.wrong}, {v.gold[0]}, or something else.", f"Possible answers: {v.gold[0]}, {v.wrong}."]


def f_prompt_echo(v: View, ex: Example) -> list[str]:
    out = [ex.prompt, f"{ex.prompt}\n\nAnswer:"]
    if ex.choices:
        first = next(iter(ex.choices))
        out.append(f"{ex.prompt}\n\nAnswer:\n\n{first}) {ex.choices[first]}")
    return out


def f_truncated(v: View) -> list[str]:
    g = v.gold[0]
    if v.kind == "mc":
        return [f"Let's analyze each option.\n\n{g} {v.gold_text}: This option",
                f"Let's analyze each option.\n\n{g} {v.gold_text}: This is the option that matches the first part of the question.",
                f"To answer this, we need to compare {g} with the"]
    if v.kind in ("number", "math"):
        return [f"Let's solve this step by step.\n\nFirst, we note that {g} is the value of the first part, and then we",
                f"Step 1: {g}\nStep 2: we subtract the"]
    if v.kind == "label":
        return ["Let's look at the evidence. The study compares two groups and the key result is that the",
                "To decide, we need to weigh the results reported in the"]
    return [f"Let me think. The first name that comes to mind is not {g}, and the other candidate is the",
            "I need to recall the details of this. It was released in the"]


def f_correction_away(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    return [f"The answer is {g}... wait, no. Actually, it's {w}.",
            f"\\boxed{{{g}}}\n\nHmm, that's wrong. The correct answer is {w}.",
            f"{_cap(g) if v.kind == 'label' else g} at first glance. Wait, no: the answer is {w}."]


def f_retracted(v: View) -> list[str]:
    g = v.gold[0]
    return [f"The answer is {g}. Wait, that's not right.", f"\\boxed{{{g}}}\n\nActually, no, I made a mistake here.",
            f"Answer: {g}\n\nHmm, wait, no. Let me reconsider the"]


def f_gold_then_distractor(v: View) -> list[str]:
    g, w = v.gold[0], v.wrong
    return [f"{_cap(g)} is tempting, but the answer is {w}.",
            f"One might think the answer is {g}, but the correct answer is {w}.",
            f"\\boxed{{{g}}} would be the naive result. The correct answer is \\boxed{{{w}}}."]


def f_refusal(v: View) -> list[str]:
    return ["I cannot determine the answer from the information given.", "I don't know.",
            "I'm sorry, but I can't answer this question.", ""]


FAMILIES: dict[str, tuple[str, Callable]] = {
    "stated": ("correct", f_stated),
    "boxed": ("correct", f_boxed),
    "markdown": ("correct", f_markdown),
    "json_or_tags": ("correct", f_json_tags),
    "reasoning_then_answer": ("correct", f_reasoning_then_answer),
    "lowercase_casual": ("correct", f_lowercase_casual),
    "assertion": ("correct", f_assertion),
    "verbose_forms": ("correct", f_verbose_forms),
    "correction_to_gold": ("correct", f_correction_to_gold),
    "decided_then_discussed": ("correct", f_decided_then_discussed),
    "equation_or_contrast": ("correct", f_equation_or_contrast),
    "negation": ("unparsed", f_negation),
    "hedge": ("unparsed", f_hedge),
    "list_all": ("unparsed", f_list_all),
    "prompt_echo": ("unparsed", f_prompt_echo),
    "truncated": ("unparsed", f_truncated),
    "retracted": ("unparsed", f_retracted),
    "refusal": ("unparsed", f_refusal),
    "correction_away": ("wrong", f_correction_away),
    "gold_then_distractor": ("wrong", f_gold_then_distractor),
}


def load_items(name: str):
    path = CORPUS_DIR / f"{name}.json"
    return load_moco_json(path, name=name)


def cases(name: str) -> list[Case]:
    task = load_items(name)
    out = []
    for ex in task.test:
        rng = random.Random(f"{name}:{ex.index}")
        v = view_of(name, ex, rng)
        for fam, (expect, fn) in FAMILIES.items():
            texts = fn(v, ex) if fn is f_prompt_echo else fn(v)
            out += [Case(name, fam, expect, ex, t) for t in texts]
    return out


def judged(scorer, case: Case) -> bool:
    """Whether the scorer treated the case the way a careful grader does."""
    r = scorer.score(case.example, case.response)
    if case.expect == "correct":
        return r.score == 1.0
    if case.expect == "wrong":
        return r.score == 0.0
    return r.score == 0.0 and r.extracted is None
