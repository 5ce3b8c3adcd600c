"""text_agglm: AggLM — an aggregator model trained with RL to combine the models' solutions (Zhao et al., 2025).

1. On dev, every model answers every problem `sample_size` times (one batched call); sample i of every model
   forms solution set i of the problem.
2. Each set is scored with the task scorer. A set is *hard* when the plurality of its extracted answers (ties:
   the earliest model's answer) is wrong, *easy* when it is right. Training keeps every hard set plus
   `easy_per_hard` times as many easy sets (seeded), so the aggregator learns both to recover a right minority
   answer and to keep a right majority.
3. The aggregator (`aggregator` param, else the `aggregator` role, else the dev-best model) is trained with LoRA
   GRPO on the aggregation prompts; the reward of a completion is the task scorer against the gold answer of
   the problem the set came from — looked up by position, never by dataset id, so duplicate ids cannot fetch
   another item's gold.
4. Test: every model answers once, and the trained aggregator answers the aggregation prompt.

The adapter is keyed on the task, the models' weights, the aggregator and the settings (the reference keys it
on model names only, so another task reuses the wrong adapter), and a resumed run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from moco.config import ModelSpec
from moco.context import Call, Output, RunContext
from moco.methods.registry import method
from moco.methods.text.majority_vote import plurality
from moco.methods.trained import LoraParams, chat, record_training, train_target, trained_model
from moco.models.pool import ModelHandle, check_spec
from moco.training import GRPOSettings, train_lora_grpo
from moco.selection import dev_best

log = logging.getLogger(__name__)


class Params(LoraParams):
    sample_size: int = Field(2, ge=1, le=64, description="dev answers per model per problem = solution sets per "
                             "problem (reference: 2)")
    easy_per_hard: float = Field(1.0, ge=0.0, description="easy sets kept per hard set (reference: as many easy "
                                 "as hard)")
    aggregator: int | str | None = Field(None, alias="agg_model", description="the aggregator: a pool model "
                                         "(index or name) or a model id/folder; default: the `aggregator` role, "
                                         "else the dev-best model")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="GRPO learning rate (reference: 1e-4)")
    weight_decay: float = Field(1e-5, ge=0.0, description="AdamW weight decay (reference: 1e-5)")
    lr_scheduler: str = Field("cosine", description="learning-rate schedule (reference: cosine)")
    max_epochs: int = Field(1, ge=1, le=100, description="passes over the training sets (reference: 1)")
    max_steps: int | None = Field(None, ge=1, description="cap on GRPO steps (overrides max_epochs)")
    train_batch_size: int = Field(4, ge=2, le=256, description="completions per step, also the GRPO group size "
                                  "(reference: 4)")
    grpo_temperature: float = Field(1.0, gt=0.0, le=5.0, description="sampling temperature of GRPO rollouts "
                                    "(reference: 1.0)")
    grpo_max_completion_length: int | None = Field(None, ge=1, description="rollout length; default: the run's "
                                                   "decoding.max_new_tokens (reference: max_response_length)")
    agglm_log_path: str | None = Field(None, description="reference key, no effect: the adapter goes in the run "
                                       "directory's artifacts")
    reuse_log: bool = Field(True, description="reuse a finished adapter of this run; False retrains")


def aggregation_prompt(problem: str, solutions: list[str]) -> str:
    shown = "\n\n".join(f"----- Solution {i} -----\n{s}\n----- End of solution {i} -----"
                        for i, s in enumerate(solutions, 1))
    return (f"Given the following problem:\n----- Problem -----\n{problem}\n----- End of problem -----\n\n"
            f"and these solution attempts:\n\n{shown}\n\n"
            "It is possible that any, all, or none of these solutions are correct or complete. Review them: "
            "keep what is right, correct mistakes, fill in gaps, and combine useful ideas into one complete "
            "solution. End with the final answer in the same format as the solutions.")


@dataclass
class SolutionSet:
    example: int  # position of the problem in the dev split
    sample: int
    texts: list[str]
    answers: list[str | None]
    majority: str | None
    hard: bool


async def _aggregator(ctx: RunContext, params: Params) -> ModelHandle:
    ref = params.aggregator
    if ref is None:
        return ctx.role("aggregator") or await dev_best(ctx)
    if isinstance(ref, int) or any(h.name == ref for h in ctx.models):
        return ctx.model(ref)
    spec = ModelSpec(model=ref)
    check_spec(spec)  # a one-line error for a name that is neither a pool model nor a loadable model
    return ctx.add_model("aggregator", spec)


def solution_sets(ctx: RunContext, samples: list[list[list[str]]]) -> list[SolutionSet]:
    """samples[m][i][j]: model m's i-th answer to dev problem j -> one scored set per (problem, sample)."""
    sets = []
    order = list(range(len(samples)))
    for j, ex in enumerate(ctx.task.dev):
        for i in range(len(samples[0])):
            texts = [samples[m][i][j] for m in order]
            answers = [ctx.scorer.extract(ex, t) for t in texts]
            majority, _ = plurality(answers, "model-order", order, ctx.rng)
            hard = majority is None or ctx.scorer.score_answer(ex, majority).score != 1.0
            sets.append(SolutionSet(j, i, texts, answers, majority, hard))
    return sets


def _key(ctx: RunContext, agg: ModelHandle, params: Params, models: list[ModelHandle]) -> str:
    blob = json.dumps({"task": ctx.task.name, "task_type": ctx.task.task_type, "dev": [e.uid for e in ctx.task.dev],
                       "models": [ctx.local(h).fingerprint for h in models], "aggregator": ctx.local(agg).fingerprint,
                       "params": params.model_dump(mode="json"), "seed": ctx.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@method("text_agglm", params=Params, level="text", aliases=("agglm",), min_models=2, objective_task_only=True,
        trainable=True, roles={"aggregator": "combines the solutions; trained with GRPO (default: dev-best model)"},
        paper="Zhao et al. 2025, The Majority is not always right: RL training for solution aggregation",
        summary="An aggregator trained with GRPO on dev (verifiable rewards, hard and easy sets balanced) "
                "combines the models' answers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = list(ctx.models)
    agg = await _aggregator(ctx, params)
    base_dir, init_adapter, device = train_target(ctx, agg)  # fails early if the aggregator cannot be trained
    rng = ctx.rng
    with ctx.phase("dev"):
        calls = [Call(m, ex.prompt, replica=i) for m in models for i in range(params.sample_size) for ex in ctx.task.dev]
        flat = await ctx.generate(calls, tag="dev samples")
        n, s = len(ctx.task.dev), params.sample_size
        samples = [[[flat[(mi * s + i) * n + j].text for j in range(n)] for i in range(s)] for mi in range(len(models))]
        sets = solution_sets(ctx, samples)
        hard = [x for x in sets if x.hard]
        easy = [x for x in sets if not x.hard]
        chosen = hard + rng.sample(easy, min(len(easy), round(len(hard) * params.easy_per_hard)))
        key = _key(ctx, agg, params, models)
        out = Path(ctx.artifacts_dir or ".") / "agglm" / f"aggregator-{key}"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"row": r, "uid": ctx.task.dev[x.example].uid, "sample": x.sample, "hard": x.hard, "answers": x.answers,
                 "majority": x.majority, "gold": ctx.task.dev[x.example].answer} for r, x in enumerate(chosen)]
        (out.parent / f"train_sets-{key}.json").write_text(json.dumps(rows, indent=1, default=str))
        info: dict[str, Any] = {"aggregator": agg.name, "sets": len(sets), "hard": len(hard), "easy": len(easy),
                                "trained_on": {"hard": sum(x.hard for x in chosen),
                                               "easy": sum(not x.hard for x in chosen)}}
        if chosen:
            examples = [ctx.task.dev[x.example] for x in chosen]  # by position: duplicate ids cannot mix golds

            def reward(row_ids: list[int], completions: list[str]) -> list[float]:
                return [ctx.scorer.score(examples[r], c).score for r, c in zip(row_ids, completions)]

            reward_id = hashlib.sha256(json.dumps([ctx.scorer.name, [(e.uid, str(e.answer)) for e in examples]])
                                       .encode()).hexdigest()
            settings = GRPOSettings(epochs=params.max_epochs, max_steps=params.max_steps,
                                    learning_rate=params.learning_rate, weight_decay=params.weight_decay,
                                    lr_scheduler=params.lr_scheduler, num_generations=params.train_batch_size,
                                    batch_size=params.train_batch_size,
                                    max_completion_length=params.grpo_max_completion_length or ctx.decoding.max_new_tokens,
                                    temperature=params.grpo_temperature, seed=ctx.seed,
                                    **params.lora_settings())
            if not params.reuse_log:
                shutil.rmtree(out, ignore_errors=True)
            prompts = [chat(agg, aggregation_prompt(ctx.task.dev[x.example].prompt, x.texts)) for x in chosen]
            res = train_lora_grpo(base_dir, prompts, reward, reward_id, out, settings, device=device,
                                  init_adapter=init_adapter)
            aggregator = trained_model(ctx, agg, res.adapter_dir, f"{agg.name}/agglm")
            info["training"] = record_training(ctx, aggregator.name, res, rewards_first=res.rewards[:3],
                                               rewards_last=res.rewards[-3:])
        else:
            aggregator = agg
            info["training"] = "skipped: no solution set to train on"
            log.warning("text_agglm: no hard or easy solution sets on dev; the aggregator is not trained")
    info["used_aggregator"] = aggregator.name
    ctx.metrics["agglm"] = info
    with ctx.phase("test"):
        answers = await ctx.answer_all(ctx.task.test)
        prompts = [aggregation_prompt(ex.prompt, [answers[mi][j].text for mi in range(len(models))])
                   for j, ex in enumerate(ctx.task.test)]
        finals = await ctx.ask(aggregator, prompts, tag="aggregate")
    return [Output(f.text, failed=f.failed, trace={"aggregator": aggregator.name,
                                                   "solutions": {m.name: answers[mi][j].text for mi, m in enumerate(models)}})
            for j, f in enumerate(finals)]
