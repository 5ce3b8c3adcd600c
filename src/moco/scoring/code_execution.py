"""Code execution (HumanEval, MBPP): the completion runs against the dataset's tests in the sandbox.

Accepts: a fenced code block (the last ```python block, else the last fenced block) or, without fences, the
whole response; either a complete function (helpers allowed, in any order) or only the body that continues
the prompt's function stub. The item's tests (a `check(candidate)` function, in `meta["test"]`) are called
with the entry point: `meta["entry_point"]` when the row has it, else the last function defined in the
prompt's code (HumanEval: helpers come first), else the function an `assert NAME(...)` in the prompt calls (MBPP). The prompt's
code (imports, helper functions, the stub) runs before the completion, so a completion that omits
`from typing import List` or a helper the tests use still runs as intended.

Score 1 iff the program runs to its end within the limits (see sandbox.py); the failure reason goes to
`detail`. Items run in parallel, one sandboxed subprocess each.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.sandbox import RunOutcome, SandboxLimits, run_many
from moco.tasks.base import Example

if TYPE_CHECKING:
    from moco.context import RunContext

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:from\s+\S+\s+import|import\s+\S|def\s|class\s|@|#)", re.M)


def extract_code(response: str) -> str:
    """The code in a response: the last python-tagged fenced block, else the last fenced block, else all."""
    blocks = _FENCE.findall(response)
    tagged = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if tagged:
        return tagged[-1].rstrip() + "\n"
    if blocks:
        return blocks[-1][1].rstrip() + "\n"
    return response.rstrip() + "\n" if response.strip() else ""


def prompt_code(text: str) -> str:
    """The code part of a prompt such as 'Complete the following code\\n\\n<code>' ('' when there is none)."""
    m = _CODE_START.search(text)
    if not m or not re.search(r"^def\s", text, re.M):
        return ""
    return text[m.start():].rstrip() + "\n"


def entry_point(example: Example) -> str | None:
    if example.meta.get("entry_point"):
        return str(example.meta["entry_point"])
    defs = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", prompt_code(example.input), re.M)
    if defs:  # HumanEval: the stub to complete is the last function of the prompt (helpers come first)
        return defs[-1]
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\(\s*|set\(\s*)?([A-Za-z_]\w*)\s*\(", example.input)
    if m and m.group(1) not in ("set", "math", "abs", "sorted", "len", "round", "isclose"):
        return m.group(1)  # MBPP: the function the example assert calls
    return None


def build_program(example: Example, response: str) -> str | None:
    """Prompt code + completion + tests + `check(entry_point)`; None when there is no code or no entry point."""
    code = extract_code(response)
    name = entry_point(example)
    tests = example.meta.get("test")
    if not code.strip() or not name or not tests:
        return None
    stub = prompt_code(example.input)
    if re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.M) or not stub:
        program = f"{stub}\n{code}" if stub else code
    else:  # a body that continues the stub
        program = stub + code
    return f"{program}\n\n{tests}\n\ncheck({name})\n"


class CodeExecutionScorer(BaseScorer):
    """Pass rate of the dataset's unit tests on the completion, run in a sandboxed subprocess."""

    name = "code_execution"
    metric = "pass@1"
    needs_gold = False

    def __init__(self, limits: SandboxLimits | None = None, workers: int | None = None):
        self.limits = limits or SandboxLimits()
        self.workers = workers

    def extract(self, example: Example, response: str) -> str | None:
        code = extract_code(response).strip()
        return code or None

    def _result(self, example: Example, response: str, outcome: RunOutcome | None) -> ScoreResult:
        code = self.extract(example, response)
        if outcome is None:
            why = "no code in the response" if code is None else "no entry point or tests for this item"
            return ScoreResult(0.0, code, strict=0.0, note=why, detail={"reason": why})
        ok = float(outcome.passed)
        return ScoreResult(ok, code, strict=ok, note=outcome.reason,
                           detail={"reason": outcome.reason, "seconds": outcome.seconds, "timed_out": outcome.timed_out})

    def score_batch(self, ctx: "RunContext | None", examples: Sequence[Example],
                    responses: Sequence[str]) -> list[ScoreResult]:
        programs = [build_program(ex, r) for ex, r in zip(examples, responses)]
        todo = [i for i, p in enumerate(programs) if p is not None]
        outcomes = dict(zip(todo, run_many([programs[i] for i in todo], self.limits, self.workers)))
        return [self._result(ex, r, outcomes.get(i)) for i, (ex, r) in enumerate(zip(examples, responses))]

    def score(self, example: Example, response: str) -> ScoreResult:
        return self.score_batch(None, [example], [response])[0]

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
