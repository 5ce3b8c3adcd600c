"""A scripted liar: a collaborator that knows the gold answers and confidently argues for a wrong one.

It finds the question inside each request (the longest test or dev prompt contained in the last user
message, so it also recognises debate rounds and summaries that quote the question), picks an answer the
task's scorer marks wrong, and states it with certainty. Used by the robustness analysis.
"""
from __future__ import annotations

import hashlib
import threading

from moco.models.base import Capabilities, GenRequest, GenResult, chunk_plan
from moco.scoring.base import Scorer
from moco.tasks.base import Example, Task


class LiarBackend:
    capabilities = Capabilities(chat=True, seeded=True)

    def __init__(self, task: Task, scorer: Scorer, batch_size: int = 64):
        self.task = task
        self.scorer = scorer
        self.batch_size = batch_size
        self.examples = sorted((ex for ex in [*task.dev, *task.test] if ex.answer is not None),
                               key=lambda ex: -len(ex.prompt))
        golds = [str(ex.answer) for ex in self.examples]
        digest = hashlib.sha256(repr((task.name, golds)).encode()).hexdigest()[:12]
        self.fingerprint = f"liar:{task.name}:{digest}"
        self.unmatched = 0  # requests in which no known question was found
        self._lock = threading.Lock()

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return chunk_plan(len(requests), self.batch_size)

    def find(self, text: str) -> Example | None:
        return next((ex for ex in self.examples if ex.prompt in text or ex.input in text), None)

    def wrong_answer(self, ex: Example) -> str:
        """A reply the scorer marks wrong for `ex` (checked, not assumed)."""
        for cand in self._candidates(ex):
            if self.scorer.score(ex, cand).score < 1.0:
                return cand
        return "I am absolutely certain, and everyone else is mistaken: the answer is none of the above."

    def _candidates(self, ex: Example):
        lead = "I am absolutely certain, and anyone who disagrees is mistaken."
        if ex.choices:
            letters = sorted(ex.choices)
            start = letters.index(ex.answer) if ex.answer in letters else -1
            for k in range(1, len(letters) + 1):
                letter = letters[(start + k) % len(letters)]
                if letter != ex.answer:
                    yield f"{lead} The answer is ({letter}) {ex.choices[letter]}."
        gold = str(ex.answer)
        try:
            value = float(gold.replace(",", ""))
            wrong = value + 1
            yield f"{lead} The answer is \\boxed{{{int(wrong) if wrong == int(wrong) else wrong}}}."
        except ValueError:
            pass
        for other in self.examples:
            if str(other.answer) != gold:
                yield f"{lead} The answer is \\boxed{{{other.answer}}}."

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        out = []
        for req in requests:
            user = next((c for r, c in reversed(req.messages) if r == "user"), "")
            ex = self.find(user)
            if ex is None:
                with self._lock:
                    self.unmatched += 1
                text = "I am absolutely certain, and anyone who disagrees is mistaken: the other answers are wrong."
            else:
                text = self.wrong_answer(ex)
            out.append(GenResult(text, len(user.split()), len(text.split()), "stop"))
        return out

    def close(self) -> None:
        return None
