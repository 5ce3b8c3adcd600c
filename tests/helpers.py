"""Scripted collaborators for method tests: each reply says who wrote it and in which round."""
from __future__ import annotations

import math
import re

from moco.config import parse_config
from moco.models.base import Capabilities
from moco.models.scripted import ScriptedBackend


def letter_for(prompt: str) -> str:
    m = re.search(r"Question (\d+):", prompt)
    return "ABCD"[int(m.group(1)) % 4] if m else "A"


def debater(name: str, correct: bool) -> ScriptedBackend:
    """Round 0: '<name>:r0 The answer is (X)'; after seeing '<name>:rK' as its own answer it writes r(K+1).
    A correct debater picks the right letter for `Question i`, a wrong one the next letter."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        letter = letter_for(prompt)
        if not correct:
            letter = "ABCD"[("ABCD".index(letter) + 1) % 4]
        if prompt.startswith("Question:") and "Answers from a team of agents" in prompt:
            return f"{name}:summary The answer is ({letter})"
        m = re.search(rf"Your previous answer:\n{name}:r(\d+)", prompt)
        k = int(m.group(1)) + 1 if m else 0
        return f"{name}:r{k} The answer is ({letter})"

    return ScriptedBackend(name, fn=reply)


def scripted_config(method: str, task_path, names, params=None, **extra):
    raw = {"method": method, "task": {"name": str(task_path)}, "models": [f"scripted:{n}" for n in names],
           "params": params or {}, "decoding": {"max_new_tokens": 32, "temperature": 0.0}}
    raw.update(extra)
    return parse_config(raw)


class ConfidentBackend(ScriptedBackend):
    """Answers 'The answer is (X)', right when `correct` (a bool, or a function of the question number), with
    every token at probability conf(question number); log-probabilities only when asked for."""

    capabilities = Capabilities(chat=True, logprobs=True, seeded=True)

    def __init__(self, name: str, correct, conf, unsure_word: bool = False):
        def reply(req) -> str:
            letter = letter_for(req.messages[-1][1])
            if not (correct(self._q(req)) if callable(correct) else correct):
                letter = "ABCD"[("ABCD".index(letter) + 1) % 4]
            text = f"{name}: The answer is ({letter})"
            if unsure_word and "unconfident" in req.messages[-1][1] and conf(self._q(req)) < 0.5:
                text += " unconfident"
            return text

        super().__init__(name, fn=reply)
        self.capabilities = type(self).capabilities  # ScriptedBackend sets its own (without log-probabilities)
        self.conf = conf

    @staticmethod
    def _q(req) -> int:
        return int(re.search(r"Question (\d+):", req.messages[-1][1]).group(1))

    def generate(self, requests):
        out = super().generate(requests)
        for req, r in zip(requests, out):
            if req.sampling.logprobs:
                lp = math.log(self.conf(self._q(req)))
                r.token_logprobs = [lp] * r.tokens_out
                r.top_logprobs = [max(lp, math.log(0.5))] * r.tokens_out
        return out


def assert_dev_best(metrics: dict, chosen: str, n_models: int) -> None:
    """The dev-best choice is recorded (`dev_selection.dev_best`): the winner, on the best mean dev score, next to
    every model's dev score."""
    sel = metrics["dev_selection"]["dev_best"]
    assert sel["chosen"] == chosen and len(sel["candidates"]) == n_models
    scores = {r["candidate"]: r["dev_score"] for r in sel["candidates"]}
    assert scores[chosen] == max(scores.values()) == sel["chosen_dev_score"]
