"""Code execution (HumanEval, MBPP): the dataset's tests check the completion, which cannot touch them.

The solution is the code the response gives for the entry point (code_extraction.py: the block that defines
it among several, code after prose without fences, a `__main__` guard); a bare body continues the prompt's
stub. The prompt's code (imports, helpers, the stub) runs first in the solution's module, so a completion that
omits `from typing import List` or a helper still runs as intended. The entry point is `meta["entry_point"]`
when the row has it, else the last function of the prompt's code (HumanEval), else the function an
`assert NAME(...)` in the prompt calls (MBPP).

The solution runs in an OS sandbox (sandbox.py) and the tests in a separate checker process; the tests call
the solution's functions over a pipe and compare the plain values that come back (sandboxed/). Score 1 iff
every test passed within the limits; the failure reason goes to `detail`. Without an OS sandbox the scorer
refuses to be built (one line) unless the user opts in (`MOCO_UNSAFE_CODE_EXECUTION=1`).
"""
from __future__ import annotations

import ast
import logging
import re
from collections.abc import Sequence

from moco.errors import ConfigError
from moco.scoring.base import BaseScorer, ScoreResult
from moco.scoring.code_extraction import extract_solution
from moco.scoring.sandbox import CodeItem, RunOutcome, SandboxLimits, SandboxUnavailable, check_many, require_sandbox
from moco.tasks.base import Example

log = logging.getLogger(__name__)

_CODE_START = re.compile(r"^(?:from\s+\S+\s+import|import\s+\S|def\s|class\s|@|#)", re.M)


def extract_code(response: str, entry: str | None = None) -> str:
    """The solution's code in a response (see code_extraction.py)."""
    return extract_solution(response, entry)


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


def _valid(code: str) -> str:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return ""
    return code


def build_item(example: Example, response: str) -> CodeItem | None:
    """The solution module (prompt code + completion), the tests and the entry point; None when the response
    has no code or the item has no entry point or tests."""
    name = entry_point(example)
    code = extract_code(response, name)
    tests = example.meta.get("test")
    if not code.strip() or not name or not tests:
        return None
    stub = prompt_code(example.input)
    if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) or not stub:
        program = f"{stub}\n{code}" if stub else code
    else:  # a body that continues the stub
        program = stub + code
    return CodeItem(program, _valid(stub), str(tests), name)


class CodeExecutionScorer(BaseScorer):
    """Pass rate of the dataset's unit tests, run in a checker the sandboxed solution cannot touch."""

    name = "code_execution"
    metric = "pass@1"
    needs_gold = False

    def __init__(self, limits: SandboxLimits | None = None, workers: int | None = None,
                 unsafe_code_execution: bool = False):
        self.limits = limits or SandboxLimits()
        self.workers = workers
        self.unsafe = unsafe_code_execution
        try:
            require_sandbox(self.unsafe)
        except SandboxUnavailable as e:
            raise ConfigError(str(e)) from None

    def extract(self, example: Example, response: str) -> str | None:
        code = extract_code(response, entry_point(example)).strip()
        return code or None

    def _result(self, example: Example, response: str, outcome: RunOutcome | None) -> ScoreResult:
        code = self.extract(example, response)
        if outcome is None:
            why = "no code in the response" if code is None else "no entry point or tests for this item"
            return ScoreResult(0.0, code, strict=0.0, note=why, detail={"reason": why})
        ok = float(outcome.passed)
        detail = {"reason": outcome.reason, "seconds": outcome.seconds, "timed_out": outcome.timed_out}
        if outcome.fallback:
            detail["checked_beside_solution"] = True  # the tests could not run apart from the solution
        return ScoreResult(ok, code, strict=ok, note=outcome.reason, detail=detail)

    def score_all(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        items = [build_item(ex, r) for ex, r in zip(examples, responses)]
        todo = [i for i, it in enumerate(items) if it is not None]
        try:
            done = check_many([items[i] for i in todo], self.limits, self.workers, unsafe=self.unsafe)
        except SandboxUnavailable as e:
            raise ConfigError(str(e)) from None
        outcomes = dict(zip(todo, done))
        fallback = sum(o.fallback for o in done)
        if fallback:
            log.warning("code_execution: %d of %d items had tests that could not run apart from the solution "
                        "(checked beside it, in its sandbox)", fallback, len(done))
        return [self._result(ex, r, outcomes.get(i)) for i, (ex, r) in enumerate(zip(examples, responses))]

    def score(self, example: Example, response: str) -> ScoreResult:
        return self.score_all([example], [response])[0]

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
