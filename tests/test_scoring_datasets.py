"""Every shipped dataset: its gold answer written the way a model writes it scores 100%, an empty response 0%,
and a response listing every option letter 0%. Scored with the scorer the registry picks for the dataset."""
from __future__ import annotations

import random
import re

import pytest

from moco.scoring import scorer_for
from moco.scoring.base import run_batch
from moco.scoring.code_execution import entry_point
from moco.scoring.numeric import parse_number
from moco.scoring.sandbox import find_bwrap
from moco.scoring.short_answer import aliases
from moco.tasks.registry import resolve_task

MC = ["agieval", "agieval_tiny", "arc_challenge", "mmlu_redux", "gpqa_diamond", "gpqa_main", "gpqa_extended", "blend",
      "truthfulqa", "tablemwp_multiple_choice", "medmcqa", "medqa", "culturalbench_hard", "kaleidoscope", "sciencemeter"]
EXACT = ["gsm8k", "tablemwp_free_text", "math", "theoremqa", "bbh", "sciriff", "culturebench", "pubmedqa", "wikidyk", "popqa"]
MODEL_SCORED = ["coconot", "alpacaeval", "human_interest", "human_interest_tiny", "infinite_chat_diversity"]
CODE = ["humaneval", "mbpp"]


def load(name, data_dir):
    return resolve_task(name, str(data_dir)).loader()


def subset(items, n, seed=0):
    return items if len(items) <= n else random.Random(seed).sample(items, n)


def test_every_shipped_dataset_has_a_test_here(data_dir):
    shipped = {p.stem for p in data_dir.glob("*.json")}
    assert shipped == set(MC + EXACT + MODEL_SCORED + CODE)


def written_like_a_model(name: str, ex) -> str:
    gold = ex.answer
    if ex.choices:
        return f"Let me look at each option. {ex.choices[gold][:20]} fits best.\nThe answer is ({gold})."
    if name in ("gsm8k", "tablemwp_free_text"):
        v = parse_number(gold)
        if "/" in gold:
            n, d = gold.split("/")
            return f"We divide the two amounts.\n\\boxed{{\\frac{{{n}}}{{{d}}}}}"
        text = f"{v:,.2f}" if "." in gold else f"{int(v):,}"
        return f"Adding everything up gives the total.\n#### {text}"
    if name == "math":
        return f"Simplifying step by step, we get\n$$x = {gold}$$\nso the final answer is $\\boxed{{{gold}}}$."
    if name == "theoremqa":
        t = ex.meta["answer_type"]
        if t == "bool":
            return f"Checking the condition, the claim holds: {gold.lower()}. The answer is {gold}."
        if t == "option":
            return f"Comparing the candidates, the answer is {gold}."
        return f"Using the theorem we compute the value.\nTherefore, the answer is \\boxed{{{gold}}}."
    if name == "bbh":
        return f"Let's think step by step. ... So the answer is {'(' + gold + ')' if re.fullmatch('[A-R]', gold) else gold}."
    if name in ("culturebench", "pubmedqa", "sciriff"):
        return f"Based on the text, the answer is {gold}."
    if name == "popqa":
        return f"The answer is \\boxed{{{aliases(gold)[-1]}}}"
    if name == "wikidyk":
        return f"It is {gold}.\n\\boxed{{{gold}}}"
    raise AssertionError(name)


def all_letters(ex) -> str:
    return " ".join(f"({k})" for k in ex.choices) if ex.choices else "(A) (B) (C) (D)"


@pytest.mark.parametrize("name", MC + EXACT)
def test_gold_as_a_model_writes_it_scores_100_and_empty_scores_0(name, data_dir):
    task = load(name, data_dir)
    scorer = scorer_for(task.task_type, task.name)
    items = task.dev + task.test
    if name == "math":  # math-verify is slower: a fixed sample plus every item whose gold has braces
        items = subset(items, 250) + [e for e in items if "{" in str(e.answer)][:120]
    responses = [written_like_a_model(name, ex) for ex in items]
    results = run_batch(scorer, items, responses)
    bad = [(ex.id, ex.answer, r.extracted) for ex, r in zip(items, results) if r.score != 1.0]
    assert not bad, f"{len(bad)}/{len(items)} gold answers not scored correct, e.g. {bad[:5]}"
    empty = run_batch(scorer, items, [""] * len(items))
    assert all(r.score == 0.0 and r.extracted is None for r in empty)
    listing = run_batch(scorer, items, [all_letters(ex) for ex in items])
    if scorer.metric == "f1":  # token F1 gives partial credit to a gold that contains a letter ("Plan B")
        assert all(r.detail["exact_match"] == 0.0 for r in listing)
        assert sum(r.score for r in listing) / len(items) < 0.01
    else:
        assert sum(r.score for r in listing) == 0.0


@pytest.mark.parametrize("name", MC)
def test_mc_strict_extraction_finds_the_stated_letter(name, data_dir):
    task = load(name, data_dir)
    scorer = scorer_for(task.task_type, task.name)
    items = task.dev + task.test
    res = run_batch(scorer, items, [f"The answer is ({ex.answer})" for ex in items])
    assert all(r.strict == 1.0 for r in res)


@pytest.mark.skipif(bool(find_bwrap()[1]), reason=f"code runs only in an OS sandbox: {find_bwrap()[1]}")
def test_humaneval_canonical_solutions_pass_every_item(data_dir, human_eval_problems):
    task = load("humaneval", data_dir)
    scorer = scorer_for(task.task_type, task.name)
    items = task.dev + task.test
    full = [f"Here is the function:\n```python\n{human_eval_problems[ex.id]['prompt']}"
            f"{human_eval_problems[ex.id]['canonical_solution']}```" for ex in items]
    body = [human_eval_problems[ex.id]["canonical_solution"] for ex in items[:20]]  # completion of the stub
    res = scorer.score_all(items + items[:20], full + body)
    failed = [(ex.id, r.note) for ex, r in zip(items + items[:20], res) if r.score != 1.0]
    assert not failed, failed[:5]
    empty = scorer.score_all(items[:5], ["", "", "", "", ""])
    assert all(r.score == 0.0 and r.extracted is None for r in empty)
    letters = scorer.score_all(items[:3], ["(A) (B) (C) (D)"] * 3)
    assert all(r.score == 0.0 for r in letters)


MBPP_SOLUTIONS = {  # written by hand from the task descriptions of test items 872 and 114
    "check_subset": "def check_subset(a, b):\n    return all(x in a for x in b)\n",
    "assign_freq": "from collections import Counter\n\ndef assign_freq(test_list):\n"
                   "    c = Counter(test_list)\n    return str([(*k, v) for k, v in c.items()])\n",
}


@pytest.mark.skipif(bool(find_bwrap()[1]), reason=f"code runs only in an OS sandbox: {find_bwrap()[1]}")
def test_mbpp_handwritten_solutions_pass(data_dir):
    task = load("mbpp", data_dir)
    scorer = scorer_for(task.task_type, task.name)
    items = [ex for ex in task.test if ex.id in ("872", "114")]
    assert len(items) == len(MBPP_SOLUTIONS)
    sols = [f"```python\n{MBPP_SOLUTIONS[entry_point(ex)]}```" for ex in items]
    res = scorer.score_all(items, sols)
    assert [r.score for r in res] == [1.0] * len(items), [r.note for r in res]
    wrong = scorer.score_all(items, ["```python\ndef check_subset(a, b):\n    return False\n```"] * len(items))
    assert [r.score for r in wrong] == [0.0] * len(items)
