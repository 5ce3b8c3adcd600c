"""text_multiagent_feedback: cross-feedback among models (Feng et al. 2024, "Don't Hallucinate, Abstain").

1. Every model answers the question independently (round 0).
2. For `rounds` rounds:
   a. every model (receiver) gets feedback on its current answer from `feedback_count` other models, drawn
      by a seeded sample per (round, example, receiver); all feedback calls of the round are one batched call;
   b. every model refines its answer given the feedback it received (one batched call).
3. A summarizer (the `summarizer` role, else the dev-best model) writes the final answer from the last
   answers; or, with `final: vote`, the plurality of the final answers wins.

The reference implementation's key `round` counts the first answer (`round: 3` = 2 feedback rounds), and it
reloads every model once per receiver; here a round costs two batched calls. The paper uses the feedback to
decide abstention; like the reference, this method uses it to refine the answers instead.
"""
from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from moco.context import Call, Output, Response, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import conclude, from_total_rounds, per_model, pick_model, require_votable


class Params(MethodParams):
    reference_keys = {"round": ("rounds", from_total_rounds)}

    rounds: int = Field(2, ge=0, le=20, description="feedback-and-refine rounds after the first answers "
                        "(reference key `round` = rounds + 1)")
    feedback_count: int = Field(3, ge=1, le=64, description="models giving feedback to each model per round "
                                "(capped at the number of other models)")
    final: Literal["summarizer", "vote"] = Field("summarizer", description="how the final answer is made")
    summarizer: int | str | None = Field(None, description="model (index or name) that summarizes; "
                                         "default: the `summarizer` role, else the dev-best model")


def feedback_prompt(question: str, answer: str) -> str:
    return (f"You are part of a team of assistants solving a question together. A teammate answered it.\n\n"
            f"Question:\n{question}\n\nTeammate's answer:\n{answer}\n\n"
            "Give constructive feedback on this answer: is it correct? Point out mistakes or missing steps "
            "and say how to fix them. Be brief.")


def refine_prompt(question: str, own: str, feedback: list[str]) -> str:
    shown = "\n\n".join(f"- Feedback: {f.strip()}" for f in feedback) or "(no feedback received)"
    return (f"Question:\n{question}\n\nYour previous answer:\n{own}\n\nFeedback from your teammates:\n{shown}\n\n"
            "Use the feedback where it is right and ignore it where it is wrong, then give your refined answer. "
            "Keep the answer format the question asks for.")


def givers(seed: int, round_: int, example: int, receiver: int, others: list[int], k: int) -> list[int]:
    """The models that give feedback to `receiver`: a seeded sample, independent of batch order."""
    rng = random.Random(f"feedback:{seed}:{round_}:{example}:{receiver}")
    return sorted(rng.sample(others, min(k, len(others))))


@method("text_multiagent_feedback", params=Params, level="text", aliases=("multiagent_feedback", "feedback"),
        min_models=2, roles={"summarizer": "writes the final answer (default: dev-best model)"},
        paper="Feng et al. 2024, Don't Hallucinate, Abstain: multi-LLM collaboration (cross-feedback)",
        summary="Models answer, give each other feedback and refine on it for `rounds` rounds; a summarizer concludes")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test, n = ctx.models, ctx.task.test, len(ctx.task.test)
    summarizer = await pick_model(ctx, params.summarizer, "summarizer") if params.final == "summarizer" else None
    if summarizer is None:
        require_votable(ctx, "text_multiagent_feedback")
    with ctx.phase("test"):
        current: list[list[Response]] = await ctx.answer_all(test)
        log = [[[{"output": current[m.index][j].text, "feedback": []}] for m in models] for j in range(n)]
        for r in range(1, params.rounds + 1):
            # (a) feedback: (giver, receiver, example) triples, one batched call for the whole round
            triples = []
            for j in range(n):
                for m in models:
                    if current[m.index][j].failed:
                        continue
                    others = [o.index for o in models if o.index != m.index]
                    for g in givers(ctx.seed, r, j, m.index, others, params.feedback_count):
                        triples.append((g, m.index, j))
            fb = await ctx.generate([Call(models[g], feedback_prompt(test[j].prompt, current[i][j].text))
                               for g, i, j in triples], tag=f"feedback {r}")
            received: dict[tuple[int, int], list[tuple[str, str]]] = {}
            for (g, i, j), resp in zip(triples, fb):
                if not resp.failed:
                    received.setdefault((i, j), []).append((models[g].name, resp.text))
            # (b) every model refines on the feedback it received
            calls = [Call(m, refine_prompt(ex.prompt, current[m.index][j].text,
                                           [t for _, t in received.get((m.index, j), [])]))
                     for m in models for j, ex in enumerate(test)]
            current = per_model(await ctx.generate(calls, tag=f"refine {r}"), n)
            for m in models:
                for j in range(n):
                    log[j][m.index].append({"output": current[m.index][j].text,
                                            "feedback": [{"from": g, "text": t} for g, t in received.get((m.index, j), [])]})
        outputs = await conclude(ctx, models, current, summarizer)
        for j, o in enumerate(outputs):
            o.trace = {**_trace(models, log[j], summarizer.name if summarizer else None), **o.trace}
    return outputs


def _trace(models, log_row, summarizer: str | None) -> dict:
    """rounds[r][model] = {output, feedback: [{from, text}]}: what each model wrote in round r, and the feedback
    (and from whom) it refined on."""
    return {"rounds": [{m.name: log_row[i][r] for i, m in enumerate(models)} for r in range(len(log_row[0]))],
            "summarizer": summarizer}
