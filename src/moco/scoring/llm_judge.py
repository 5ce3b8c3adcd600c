"""LLM judge of answer equivalence (free-form math/science answers; any task with a gold answer).

A model bound to the config role `judge` (for example TIGER-Lab/general-verifier, or any instruction model)
sees the question, the reference answer and the student's final answer, and is asked to decide equivalence
without re-solving the problem, ending with "Final Decision: Yes" or "Final Decision: No". Calls go through
`ctx.generate` in the phase "score" (batched, cached, traced), greedy.

Accepts: any response; the student's answer is its `\\boxed{}` / stated answer, else the whole response
(truncated to `max_answer_chars`). An empty response scores 0 without a judge call. A verdict without a
"Final Decision" line scores 0 and is counted in `detail["verdict"] = "unparsed"`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from moco.scoring.base import ModelScorer, ScoreResult
from moco.scoring.extract import answer_span
from moco.scoring.short_answer import aliases
from moco.tasks.base import Example

if TYPE_CHECKING:
    from moco.context import RunContext

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

    def __init__(self, max_new_tokens: int = 512, max_answer_chars: int = 2000):
        self.max_new_tokens = max_new_tokens
        self.max_answer_chars = max_answer_chars

    def extract(self, example: Example, response: str) -> str | None:
        span = answer_span(response)
        text = (span if span is not None else response).strip()
        return text[-self.max_answer_chars:] or None

    def prompt(self, example: Example, answer: str) -> str:
        return JUDGE_PROMPT.format(question=question_text(example), reference=reference_text(example), answer=answer)

    def score_batch(self, ctx: "RunContext | None", examples: Sequence[Example],
                    responses: Sequence[str]) -> list[ScoreResult]:
        answers = [self.extract(ex, r) for ex, r in zip(examples, responses)]
        todo = {i: self.prompt(examples[i], a) for i, a in enumerate(answers) if a is not None}
        verdicts = self.ask(self.require(ctx), todo, parse_decision, self.max_new_tokens) if todo else {}
        out = []
        for i, ans in enumerate(answers):
            if ans is None:
                out.append(ScoreResult(0.0, None, strict=0.0, detail={"verdict": "no answer"}))
                continue
            ok, raw = verdicts[i]
            label = "unparsed" if ok is None else ("yes" if ok else "no")
            out.append(ScoreResult(float(bool(ok)), ans, strict=float(bool(ok)), detail={"verdict": label, "judge": raw}))
        return out

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
