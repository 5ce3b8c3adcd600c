"""LLM judge of answer equivalence (free-form math/science answers; any task with a gold answer).

A model bound to the config role `judge` (for example TIGER-Lab/general-verifier, or any instruction model)
sees the question, the reference answer and the student's final answer, and is asked to decide equivalence
without re-solving the problem, ending with "Final Decision: Yes" or "Final Decision: No". Calls go through
`ctx.generate` in the phase "score" (batched, cached, traced), greedy.

Accepts: any response; the student's answer is its final `\\boxed{}` / stated answer (see extract.py), else
the whole response (truncated to `max_answer_chars`). An empty response scores 0 without a judge call. A
verdict without a "Final Decision" line scores 0 and is counted in `detail["verdict"] = "unparsed"`.

When to use it: for free-form answers no rule can compare (an explanation, a proof, an answer in words
where the gold is a formula), for datasets without a rule-based scorer, or to audit one. The rule-based
scorers are deterministic, free and measured on the corpus of tests/scorer_corpus.py; a judge is another
model's opinion, with its own errors and cost. `llm_judge_vs_rules` (off by default: choose it with
`task.scorer: llm_judge_vs_rules`) scores with the judge and also with the dataset's own rule-based scorer
(given to it as `rules` when the scorer is built for a task), and reports where they disagree:
`detail["rule_score"]` per item, and `judge_vs_rules` in metrics.json (how many items, which way, the first
item ids) so a reader can look at the answers behind the disagreement.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from moco.scoring.base import ModelScorer, Scorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.scoring.short_answer import aliases
from moco.tasks.base import Example

JUDGE_PROMPT = """You are grading a student's final answer against a reference answer.

Question:
{question}

Reference answer:
{reference}

Student's final answer:
{answer}

Decide only whether the student's final answer means the same as the reference answer: equal values written \
differently (fractions, decimals, units, order of a set, wording of the same fact) count as equivalent; a \
different value, an incomplete answer, or several conflicting answers do not. Do not solve the problem again.
Explain briefly, then end with exactly one line: "Final Decision: Yes" or "Final Decision: No"."""

_DECISION = re.compile(r"final\s+decision\s*[:\-]?\s*\**\s*(yes|no)\b", re.I)


def parse_decision(text: str) -> bool | None:
    """The last 'Final Decision: Yes/No' in a judge's reply (None when there is none)."""
    hits = _DECISION.findall(text)
    return None if not hits else hits[-1].lower() == "yes"


def question_text(example: Example) -> str:
    if example.choices:
        opts = "\n".join(f"{k}) {v}" for k, v in example.choices.items())
        return f"{example.input.rstrip()}\n{opts}"
    return example.input.rstrip()


def reference_text(example: Example) -> str:
    if example.choices and example.answer in example.choices:
        return f"{example.answer}) {example.choices[example.answer]}"
    golds = aliases(example.answer)
    return " / ".join(golds) if golds else str(example.answer)


class LLMJudgeScorer(ModelScorer):
    """Equivalence of the final answer and the reference, decided by the model bound to the role `judge`."""

    name = "llm_judge"
    metric = "accuracy"
    role = "judge"
    needs_gold = True

    def __init__(self, max_new_tokens: int = 512, max_answer_chars: int = 2000, compare_rules: bool = False):
        self.max_new_tokens = max_new_tokens
        self.max_answer_chars = max_answer_chars
        self.compare_rules = compare_rules
        self.rules: Scorer | None = None  # the task's rule-based scorer, set by `scorer_for` when comparing

    def extract(self, example: Example, response: str) -> str | None:
        span = answer_span(response)
        text = (span if span is not None else response).strip()
        return text[-self.max_answer_chars:] or None

    def prompt(self, example: Example, answer: str) -> str:
        return JUDGE_PROMPT.format(question=question_text(example), reference=reference_text(example), answer=answer)

    async def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        answers = [self.extract(ex, r) for ex, r in zip(examples, responses)]
        todo = {i: self.prompt(examples[i], a) for i, a in enumerate(answers) if a is not None}
        verdicts = await self.ask(todo, parse_decision, self.max_new_tokens)
        out = []
        for i, ans in enumerate(answers):
            if ans is None:
                out.append(ScoreResult(0.0, None, strict=0.0, detail={"verdict": "no answer"}))
                continue
            ok, raw = verdicts[i]
            label = "unparsed" if ok is None else ("yes" if ok else "no")
            out.append(ScoreResult(float(bool(ok)), ans, strict=float(bool(ok)), detail={"verdict": label, "judge": raw}))
        if self.compare_rules and self.rules is not None:
            for ex, text, res in zip(examples, responses, out):
                r = self.rules.score(ex, text)
                res.detail = {**res.detail, "rule_score": r.score, "rule_extracted": r.extracted}
        return out

    def comparison(self, examples: Sequence[Example], results: Sequence[ScoreResult]) -> dict[str, Any] | None:
        """Where the judge and the rule-based scorer disagree on these scored items (None: no comparison)."""
        if not self.compare_rules or self.rules is None:
            return None
        pairs = [(ex, res) for ex, res in zip(examples, results) if "rule_score" in res.detail]
        judge_only = [ex.uid for ex, res in pairs if res.score == 1.0 and res.detail["rule_score"] != 1.0]
        rules_only = [ex.uid for ex, res in pairs if res.score != 1.0 and res.detail["rule_score"] == 1.0]
        return {"rule_scorer": self.rules.name, "n": len(pairs), "disagree": len(judge_only) + len(rules_only),
                "judge_yes_rules_no": len(judge_only), "judge_no_rules_yes": len(rules_only),
                "items": (judge_only + rules_only)[:50]}


class LLMJudgeVersusRules(LLMJudgeScorer):
    """The LLM judge's score, with the dataset's rule-based scorer run beside it and disagreements reported."""

    name = "llm_judge_vs_rules"

    def __init__(self, max_new_tokens: int = 512, max_answer_chars: int = 2000):
        super().__init__(max_new_tokens, max_answer_chars, compare_rules=True)

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
