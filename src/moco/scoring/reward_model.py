"""Reward-model score (AlpacaEval, Human Interest instructions): the scalar a sequence-classification reward
model gives the (instruction, response) pair. It is a reward, not a win rate: unbounded, model-specific,
comparable only between runs scored by the same reward model.

The model bound to the config role `reward` is any Hugging Face `AutoModelForSequenceClassification` with one
output (e.g. Skywork/Skywork-Reward-Llama-3.1-8B-v0.2 on a GPU). It is loaded once per process, scores in
length-sorted batches, truncates from the left to `max_length` tokens (the response end is kept), and is
called through the run's batched `generate` in the phase "score" (cached and traced like any model call): its backend
returns the reward as the text of the result.

Accepts: any response; the instruction is the row's `input`. An empty response is still scored (the reward
model judges it) but counted as unparsed.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from moco.calls import Call
from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult
from moco.scoring.base import ModelScorer, RoleModels, ScoreResult
from moco.tasks.base import Example

if TYPE_CHECKING:
    from moco.models.pool import ModelHandle

log = logging.getLogger(__name__)


class RewardModelBackend:
    """A sequence-classification reward model behind the Backend protocol: `generate` returns rewards as text."""

    capabilities = Capabilities(chat=True)
    is_reward_model = True

    def __init__(self, path: str, fingerprint: str, device: str = "cpu", batch_size: int = 8, max_length: int = 4096,
                 model: Any = None, tokenizer: Any = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model or AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
        if self.model.config.num_labels != 1:
            raise ModelError(f"reward model {path} has {self.model.config.num_labels} outputs; a reward model has 1")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.fingerprint = f"reward:{fingerprint}|maxlen={max_length}"
        self._lock = threading.Lock()

    def render(self, req: GenRequest) -> str:
        msgs = [{"role": r, "content": c} for r, c in req.messages]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        order = sorted(range(len(requests)), key=lambda i: -sum(len(c) for _, c in requests[i].messages))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import torch

        texts = [self.render(r) for r in requests]
        t0 = time.time()
        with self._lock, torch.no_grad():
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False).to(self.device)
            logits = self.model(**enc).logits[:, 0].float().cpu().tolist()
        n_in = enc["attention_mask"].sum(dim=1).tolist()
        dt = (time.time() - t0) / max(1, len(requests))
        return [GenResult(repr(float(v)), int(n), 0, "stop", dt) for v, n in zip(logits, n_in)]

    def close(self) -> None:
        self.model = None


_LOADED: dict[tuple, RewardModelBackend] = {}
_LOAD_LOCK = threading.Lock()


def reward_backend(models: RoleModels, role: "str | ModelHandle", batch_size: int, max_length: int) -> "ModelHandle":
    """A handle on the reward backend of the model bound to `role` (or of a model handle), loaded once per
    process. `models`: a run context, or a scorer's `RoleModels`."""
    handle = models.role(role) if isinstance(role, str) else role
    if handle is None:
        raise ModelError(f"no model is bound to the role '{role}'")
    local = models.local(handle)
    if local.preloaded is not None:  # an in-memory backend given to the run (tests, servers)
        return handle
    path, device = local.path, local.device
    key = (path, handle.spec.revision, device, max_length)
    with _LOAD_LOCK:
        if key not in _LOADED:
            fp = hashlib.sha256(local.fingerprint.encode()).hexdigest()[:16]
            log.info("loading reward model %s on %s", path, device)
            _LOADED[key] = RewardModelBackend(path, fp, device=device, batch_size=batch_size, max_length=max_length)
    return models.add_model(f"{handle.name}:reward", _LOADED[key])


class RewardModelScorer(ModelScorer):
    """Mean reward of the responses under the sequence-classification model bound to the role `reward`."""

    name = "reward_model_score"
    metric = "mean_reward"
    role = "reward"

    def __init__(self, batch_size: int = 8, max_length: int = 4096):
        self.batch_size = batch_size
        self.max_length = max_length

    def extract(self, example: Example, response: str) -> str | None:
        return response.strip() or None

    async def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        if not examples:
            return []
        generate, models, _ = self.bound()
        rm = reward_backend(models, self.role, self.batch_size, self.max_length)
        sampling = models.sampling(temperature=0.0, max_new_tokens=1)
        calls = [Call(rm, [("user", ex.input), ("assistant", r)], sampling) for ex, r in zip(examples, responses)]
        out = []
        for ex, r, resp in zip(examples, responses, await generate(calls, self.name)):
            if resp.failed:
                out.append(ScoreResult(0.0, None, note=resp.error or "", detail={"error": resp.error}))
                continue
            reward = float(resp.text)
            out.append(ScoreResult(reward, self.extract(ex, r), detail={"reward": reward}))
        return out

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
