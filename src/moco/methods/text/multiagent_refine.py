"""text_multiagent_refine: multi-agent debate (Du et al., 2023).

1. Every model answers the question independently (round 0).
2. For `rounds` rounds, every model sees the question, its own previous answer and the other models'
   previous answers (anonymous), and writes an updated answer. All models of a round are one batched call.
   `context: message` (the reference's form) puts all of it in one new prompt each round; `context: history`
   (the paper's form) continues each model's own conversation: question, its answer, the others' answers,
   its revised answer... so a round's prompt extends the last one and the model's KV of it is reused.
3. A summarizer (the `summarizer` role if bound, else the model with the best dev score) writes the final
   answer from the last round's answers; or, with `final: vote`, the plurality of the final answers wins.

The reference implementation's key `round` counts all rounds including the first (`round: 3` = 2 revisions).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import conclude, from_total_rounds, require_votable
from moco.models.base import Message
from moco.selection import dev_best


class Params(MethodParams):
    reference_keys = {"round": ("rounds", from_total_rounds)}

    rounds: int = Field(2, ge=0, le=20, description="revision rounds after the first answers "
                        "(reference key `round` = rounds + 1)")
    final: Literal["summarizer", "vote"] = Field("summarizer", description="how the final answer is made")
    summarizer: int | str | None = Field(None, description="model (index or name) that summarizes; "
                                         "default: the `summarizer` role, else the dev-best model")
    context: Literal["message", "history"] = Field(
        "message", description="message: each round one new prompt with question, own and others' answers "
        "(reference); history: each model's conversation grows round by round (Du et al.)")


REVISE = ("Use the other agents' answers as additional information: check them and your own answer, "
          "then give your updated answer. Keep the answer format the question asks for.")


def refine_prompt(question: str, own: str, others: list[str]) -> str:
    return f"Question:\n{question}\n\nYour previous answer:\n{own}\n\n{others_block(others)}\n\n{REVISE}"


def others_block(others: list[str]) -> str:
    shown = "\n\n".join(f"- Agent answer: {o}" for o in others) or "(no other answers)"
    return f"Answers from other agents:\n{shown}"


def debate_turn(history: list[Message], own: str, others: list[str]) -> list[Message]:
    """`context: history`: the model's conversation so far, its last answer, and the others' answers."""
    return [*history, ("assistant", own), ("user", f"{others_block(others)}\n\n{REVISE}")]


@method("text_multiagent_refine", params=Params, level="text", aliases=("multiagent_refine", "debate"),
        min_models=2, roles={"summarizer": "writes the final answer (default: dev-best model)"},
        paper="Du et al. 2023, Improving factuality and reasoning through multiagent debate",
        summary="Models answer, then revise for `rounds` rounds seeing the others' answers; a summarizer concludes")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    summarizer = None
    if params.final == "summarizer":
        summarizer = (ctx.model(params.summarizer) if params.summarizer is not None
                      else ctx.role("summarizer") or await dev_best(ctx))
    else:
        require_votable(ctx, "text_multiagent_refine")
    test = ctx.task.test
    with ctx.phase("test"):
        current = await ctx.answer_all(test)  # current[model][example]
        convo: list[list[list[Message]]] = [[[("user", ex.prompt)] for ex in test] for _ in models]
        history = [[{"output": current[m.index][j].text, "saw": []} for m in models] for j in range(len(test))]
        rounds_log: list[list[list[dict]]] = [[[h] for h in row] for row in history]
        for r in range(1, params.rounds + 1):
            calls, seen = [], []
            for m in models:
                for j, ex in enumerate(test):
                    others = [(o, current[o.index][j]) for o in models if o.index != m.index]
                    others = [(o, resp) for o, resp in others if not resp.failed]
                    own, texts = current[m.index][j].text, [resp.text for _, resp in others]
                    if params.context == "history":
                        convo[m.index][j] = debate_turn(convo[m.index][j], own, texts)
                        calls.append(Call(m, convo[m.index][j]))
                    else:
                        calls.append(Call(m, refine_prompt(ex.prompt, own, texts)))
                    seen.append([o.name for o, _ in others])
            flat = await ctx.generate(calls, tag=f"round {r}")
            n = len(test)
            current = [flat[i * n:(i + 1) * n] for i in range(len(models))]
            for i in range(len(models)):
                for j in range(n):
                    rounds_log[j][i].append({"output": current[i][j].text, "saw": seen[i * n + j]})
        outputs = await conclude(ctx, models, current, summarizer)
        for j, o in enumerate(outputs):
            o.trace = {**_trace(models, rounds_log[j], summarizer.name if summarizer else None, o.text),
                       **(o.trace or {})}
    return outputs


def _trace(models, log_row, summarizer: str | None, final: str) -> dict:
    """rounds[r][model] = {output, saw}: what each model wrote in round r and whose answers it saw."""
    n_rounds = len(log_row[0])
    return {
        "rounds": [{m.name: log_row[i][r] for i, m in enumerate(models)} for r in range(n_rounds)],
        "summarizer": summarizer,
        "final": final,
    }
