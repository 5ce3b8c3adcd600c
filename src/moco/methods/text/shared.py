"""Building blocks shared by text-level methods: who plays a role, per-model slices of a batched call,
what a model sees (so training data matches inference), and gold completions in the task's answer format."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from moco.config import ModelSpec
from moco.context import Output, Response, RunContext
from moco.errors import ConfigError
from moco.methods.text.majority_vote import plurality
from moco.models.pool import ModelHandle, check_spec
from moco.tasks import formats
from moco.tasks.base import Example
from moco.selection import dev_best

T = TypeVar("T")
log = logging.getLogger("moco.methods")


def warn(ctx: RunContext, text: str) -> None:
    """A one-line warning on the console and in metrics (`warnings`), so a reader of the numbers sees it too."""
    log.warning("%s", text)
    ctx.metrics.setdefault("warnings", []).append(text)


def candidate_of(ctx: RunContext, handle: ModelHandle) -> ModelHandle | None:
    """The pool model `handle` is (same model and adapter), or None when it is not one of the candidates."""
    key = (handle.spec.model, handle.spec.adapter)
    return next((m for m in ctx.models if m is handle or (m.spec.model, m.spec.adapter) == key), None)


def from_total_rounds(v: Any) -> Any:
    """Reference round counts include the first, independent answer: `round: 3` = 2 revision rounds."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError("round must be >= 1 (it counts the first, independent answer)")
        return v - 1
    return v


async def pick_model(ctx: RunContext, ref: int | str | None, role: str, device: str | None = None) -> ModelHandle:
    """The model for `role`: `ref` if given (a pool index or name; any other string is loaded as a model id,
    e.g. the reference's `ranker_model_name`, on `device` if given), else the model bound to the role in the
    config, else the model with the best dev score."""
    if ref is not None:
        try:
            handle = ctx.model(ref)
        except ConfigError:
            if not isinstance(ref, str):
                raise
            spec = ModelSpec(model=ref, device=device)
            check_spec(spec)
            return ctx.add_model(ref, spec)
    else:
        handle = ctx.role(role) or await dev_best(ctx)
    if device is not None and handle.spec.device != device:
        raise ConfigError(f"{role}: a device applies only to a model given by id, not to '{handle.name}' "
                          "(pool models are placed by hardware.gpu_ids or their own `device`)")
    return handle


def per_model(flat: Sequence[T], n_examples: int) -> list[list[T]]:
    """Cut a flat model-major result list into out[model][example]."""
    return [list(flat[i:i + n_examples]) for i in range(0, len(flat), n_examples)]


def gold_completion(ex: Example) -> str | None:
    """The gold answer written the way the task's prompt asks for it (None when the task has no gold).
    Multiple choice: "The answer is (X)." when options are shown, else the option's text; exact match:
    \\boxed{gold}; other tasks: the reference output."""
    if ex.answer is None:
        return None
    if ex.choices:
        text = ex.choices.get(ex.answer, "")
        if formats.MC_INSTRUCTION in ex.prompt:
            return f"The answer is ({ex.answer}) {text}".rstrip() + "."
        return f"{text}."
    if formats.EXACT_INSTRUCTION in ex.prompt or formats.SHORT_INSTRUCTION in ex.prompt:
        return f"\\boxed{{{ex.answer}}}"
    return str(ex.answer)


def numbered(texts: Sequence[str], label: str) -> str:
    """'<label> 1:\\n...\\n\\n<label> 2:\\n...' — how several responses are shown to one model."""
    return "\n\n".join(f"{label} {i}:\n{t.strip()}" for i, t in enumerate(texts, 1))



def require_votable(ctx: RunContext, method: str) -> None:
    """A vote over extracted answers needs a task with definite answers: say so before any model call."""
    if not ctx.task.objective:
        raise ConfigError(f"params ({method}): final 'vote' needs a task with definite answers; "
                          f"'{ctx.task.name}' is {ctx.task.task_type}")


def summary_prompt(question: str, answers: list[str]) -> str:
    shown = "\n\n".join(f"- Agent answer: {a}" for a in answers)
    return (f"Question:\n{question}\n\nAnswers from a team of agents:\n{shown}\n\n"
            "Write one final answer to the question, using the best reasoning in the answers above. "
            "Keep the answer format the question asks for.")


async def conclude(ctx: RunContext, models: Sequence[ModelHandle], last: Sequence[Sequence[Response]],
             summarizer: ModelHandle | None) -> list[Output]:
    """Final outputs from the models' last answers (last[model][example]): the summarizer's answer over those
    that did not fail (one batched call), or, without a summarizer, the plurality of their extracted answers
    (ties: pool order; trace: the votes)."""
    test = ctx.task.test
    if summarizer is not None:
        finals = await ctx.ask(summarizer, [summary_prompt(ex.prompt, [last[i][j].text for i in range(len(models))
                                                                 if not last[i][j].failed])
                                      for j, ex in enumerate(test)], tag="summary")
        return [Output(f.text, failed=f.failed, trace={}) for f in finals]
    outputs = []
    for j, ex in enumerate(test):
        votes = [ctx.scorer.extract(ex, last[i][j].text) for i in range(len(models))]
        winner, _ = plurality(votes, "model-order", list(range(len(models))), ctx.rng)
        text = next((last[i][j].text for i, v in enumerate(votes) if v == winner and winner), "")
        outputs.append(Output(text, answer=winner, use_answer=True, failed=all(last[i][j].failed for i in range(len(models))),
                              trace={"votes": {m.name: v for m, v in zip(models, votes)}}))
    return outputs
