"""Generation-only tasks (no gold answers): responses are written, nothing is scored.

Used for the user's own prompts without answers, and for `text_generation` rows. metrics.json then says
`"generation_only": true` and carries no score, instead of inventing one.
"""
from __future__ import annotations

from moco.scoring.base import BaseScorer, ScoreResult
from moco.tasks.base import Example


class GenerationOnly(BaseScorer):
    """No scoring: the run only writes the responses (predictions.jsonl) for scoring elsewhere."""

    name = "generation_only"
    metric = "none"
    needs_gold = False

    def extract(self, example: Example, response: str) -> str | None:
        return response.strip() or None

    def score(self, example: Example, response: str) -> ScoreResult:
        return ScoreResult(float("nan"), self.extract(example, response), note="generation only: not scored")

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return ScoreResult(float("nan"), answer, note="generation only: not scored")
