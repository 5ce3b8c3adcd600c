"""api_trained_router: a router LM fine-tuned (LoRA) on which model did best on each dev item.

RouteLLM-style generative router (Ong et al. 2025) as the reference implementation builds it: an N-way
classifier written as text.

1. Every model answers the dev set (the plain answering calls: shared with other methods through the cache);
   the task scorer scores each answer.
2. Label of a dev item = the model with the best score. Ties (e.g. all right, or all wrong) are broken by
   `tie_break`: `reward` — the sequence-classification reward model bound to the `reward` role (the
   reference uses Skywork-Reward) scores each tied (question, answer) pair and the highest reward wins;
   `judge` — the LM bound to the `judge` role reads the tied answers and names the best; `dev-order` — the
   tied model with the best mean dev score (then pool order). `auto` uses the reward role if bound, else the
   judge role, else dev-order. An unreadable reward or verdict falls back to dev-order for that item and is
   counted.
3. SFT data: prompt = the query (and, with `use_descriptions`, the numbered model descriptions), completion =
   "Model k". A LoRA adapter is trained (`moco.training.train_lora_sft`) on `router_base`, else the `router`
   role's weights, else the dev-best model's (its base folder: an adapter of that model is not included), into
   the run's artifacts folder; a resumed run (same --out) reuses it. Training runs where the run places the
   router's base model (its device, hardware.gpu_ids, else the CPU) in the run's precision there.
   `heldout_fraction` of the dev items (seeded) are kept out of training: the router's agreement with their
   labels (`router_heldout_agreement`) says whether it learnt to route, not to repeat its training data
   (`router_train_agreement`, reported too).
4. Test: the adapter router (a new model `trained-router` = base + adapter, loaded through the pool) reads
   each query; its choice is parsed strictly (`moco.routing.choice`); an unreadable choice goes to the dev-best
   model (the reference picks at random) and is counted. The routed model answers with the plain call.

Defaults are the reference's (5 epochs, lr 1e-5, batch 1 x accumulation 32, LoRA r 64 / alpha 16 / dropout
0.1 on q,k,v,o); on a small dev set they move the router little, so examples raise the learning rate.
"""
from __future__ import annotations

import math
import random
import re
from typing import Literal

from pydantic import Field

from moco.config import ModelSpec
from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.pool import ModelHandle, check_spec
from moco.routing.choice import model_descriptions, parse_model_choice, query_text
from moco.routing.outcomes import Outcomes, collect, read_router, routed_outputs
from moco.rundir import write_jsonl
from moco.scoring.reward_model import reward_backend
from moco.training import SFTSettings, train_lora_sft
from moco.training.adapters import training_placement


class Params(MethodParams):
    reference_keys = {"router_base_model": ("router_base", str), "reward_model_name": ("reward_model", str),
                      "reward_model_gpu_id": ("reward_model_device", lambda v: f"cuda:{int(v)}")}

    model_descriptions: list[str] | None = Field(None, description="one description per model (pool order); "
                                                 "default: each model's config `description`")
    use_descriptions: bool = Field(True, description="show the model descriptions in the router prompt")
    router_base: str | None = Field(None, description="router base model (embedded name, local folder or Hub id; "
                                    "reference key router_base_model); default: the `router` role, else the dev-best")
    tie_break: Literal["auto", "reward", "judge", "dev-order"] = Field(
        "auto", description="how equally scored models are ranked for a dev label (auto: reward role, else "
        "judge role, else dev-order)")
    reward_model: str | None = Field(None, description="sequence-classification reward model for tie-breaks when no "
                                     "`reward` role is bound (reference key reward_model_name; its default, "
                                     "Skywork-Reward-Llama-3.1-8B-v0.2, is not assumed)")
    reward_model_device: str | None = Field(None, description="device of `reward_model` (reference key "
                                            "reward_model_gpu_id N -> cuda:N); default: the run's")
    reward_max_length: int = Field(4096, ge=16, le=131072, description="reward model input cap in tokens "
                                   "(left-truncated: the answer's end is kept)")
    epochs: int = Field(5, ge=1, le=1000, description="SFT epochs (reference 5)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(1e-5, gt=0, le=1.0, description="SFT learning rate (reference 1e-5)")
    batch_size: int = Field(1, ge=1, le=1024, description="SFT batch size (reference 1)")
    grad_accum: int = Field(32, ge=1, le=1024, description="gradient accumulation steps (reference 32)")
    lora_r: int = Field(64, ge=1, le=1024, description="LoRA rank (reference 64)")
    lora_alpha: int = Field(16, ge=1, le=4096, description="LoRA alpha (reference 16)")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout (reference 0.1)")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="LoRA target modules")
    max_length: int = Field(1024, ge=16, le=131072, description="SFT sequence length cap (tokens)")
    router_max_new_tokens: int = Field(8, ge=1, le=256, description="the router writes 'Model k'")
    router_temperature: float = Field(0.0, ge=0.0, le=5.0, description="router decoding (0: greedy, the "
                                      "argmax class; the reference samples)")
    check_on_dev: bool = Field(True, description="also route the dev set with the trained router and report "
                               "its agreement with the labels, on held-out and on training items")
    heldout_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="share of dev items (seeded, at least one "
                                    "when > 0 and dev has 2 items or more) not trained on; the router's agreement "
                                    "is reported on them")


def router_prompt(query: str, descriptions: list[str] | None, n: int) -> str:
    shown = ""
    if descriptions:
        shown = "Models:\n" + "\n".join(f"Model {i}: {d}" for i, d in enumerate(descriptions, 1)) + "\n\n"
    return (f"Choose the model that will answer this question best.\n\n{shown}Question:\n{query}\n\n"
            f"Reply with 'Model k' for one k from 1 to {n}.")


def judge_prompt(question: str, answers: list[str]) -> str:
    shown = "\n\n".join(f"Response {i}:\n{a}" for i, a in enumerate(answers, 1))
    return (f"Question:\n{question}\n\n{shown}\n\nWhich response answers the question best? "
            f"Reply with 'Response k' for one k from 1 to {len(answers)}.")


def _reward(text: str) -> float | None:
    """A reward model's score (its backend returns the scalar as text); None when it is not a finite number."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


async def dev_labels(ctx: RunContext, dev: Outcomes, tie_break: str, reward_max_length: int = 4096,
               reward: ModelHandle | None = None) -> tuple[list[int], list[dict]]:
    """Best model per dev item (pool position) and how each label was decided. `reward`: the reward model
    (default: the model bound to the `reward` role)."""
    order = dev.best_order()
    rank = {m: r for r, m in enumerate(order)}
    n_models = len(dev.models)
    tied: list[list[int]] = []
    for i in range(len(dev.examples)):
        top = max(dev.scores[m][i] for m in range(n_models))
        tied.append(sorted((m for m in range(n_models) if dev.scores[m][i] == top), key=lambda m: rank[m]))
    reward = reward or ctx.role("reward")
    mode = tie_break
    if mode == "auto":
        mode = "reward" if reward else "judge" if ctx.role("judge") else "dev-order"
    if (mode == "reward" and not reward) or (mode == "judge" and not ctx.role("judge")):
        raise ConfigError(f"params: tie_break '{mode}' needs a model bound to the role '{mode}' (roles: {{{mode}: ...}})"
                          + (" or params.reward_model" if mode == "reward" else ""))
    labels = [t[0] for t in tied]
    why = [{"tied": [dev.models[m].name for m in t], "by": "score" if len(t) == 1 else "dev-order"} for t in tied]
    need = [i for i, t in enumerate(tied) if len(t) > 1]
    if mode == "dev-order" or not need:
        return labels, why
    ex = dev.examples
    if mode == "reward":
        pairs = [(i, m) for i in need for m in tied[i]]
        rm = reward_backend(ctx, reward, batch_size=8, max_length=reward_max_length)
        rated = await ctx.generate([Call(rm, [("user", ex[i].input), ("assistant", dev.answers[m][i].text)],
                                   ctx.sampling(max_new_tokens=1, temperature=0.0)) for i, m in pairs], tag="reward")
        scores: dict[int, dict[int, float | None]] = {}
        for (i, m), r in zip(pairs, rated):
            scores.setdefault(i, {})[m] = None if r.failed else _reward(r.text)
        for i in need:
            known = {m: s for m, s in scores[i].items() if s is not None}
            if len(known) == len(tied[i]):
                labels[i] = max(tied[i], key=lambda m: (known[m], -rank[m]))
                why[i].update(by="reward", rewards={dev.models[m].name: s for m, s in known.items()})
            else:
                why[i].update(by="dev-order", note="unreadable reward")
    else:
        verdicts = await ctx.generate([Call(ctx.role("judge"), judge_prompt(ex[i].input, [dev.answers[m][i].text for m in tied[i]]),
                                      ctx.sampling(max_new_tokens=16, temperature=0.0)) for i in need], tag="judge")
        for i, r in zip(need, verdicts):
            c = parse_model_choice(re.sub(r"(?i)\bresponse\b", "model", r.text), len(tied[i])) if not r.failed else None
            if c is not None and c.ok:
                labels[i] = tied[i][c.index]
                why[i].update(by="judge", verdict=r.text)
            else:
                why[i].update(by="dev-order", note=f"unreadable judge verdict: {r.text!r}")
    return labels, why


def heldout_items(n: int, fraction: float, seed: int) -> set[int]:
    """The dev positions kept out of router training: round(fraction * n), at least one when fraction > 0
    and n >= 2 (never all: the router needs training data), chosen with the run's seed."""
    if fraction <= 0 or n < 2:
        return set()
    k = min(n - 1, max(1, round(fraction * n)))
    return set(random.Random(seed).sample(range(n), k))


def reward_model(ctx: RunContext, params: Params) -> ModelHandle | None:
    """The reward model of the tie-breaks: the `reward` role, else params.reward_model (the reference's key)."""
    if ctx.role("reward") or not params.reward_model:
        return ctx.role("reward")
    spec = ModelSpec(model=params.reward_model, device=params.reward_model_device)
    check_spec(spec)
    return ctx.add_model("reward-model", spec)


@method("api_trained_router", params=Params, level="api", aliases=("trained_router",), min_models=2,
        trainable=True,
        roles={"router": "base weights of the router that is LoRA-trained (default: the dev-best model)",
               "reward": "sequence-classification reward model that ranks tied dev answers for the labels (optional)",
               "judge": "picks the best of tied dev answers for the labels (optional)"},
        paper="Ong et al. 2025 (RouteLLM); MoCo (Feng et al. 2026) method #4, trained router",
        summary="LoRA-train a router LM on the best model per dev item; at test the routed model answers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    n = len(models)
    descriptions = model_descriptions(models, params.model_descriptions, ctx) if params.use_descriptions else None
    if ctx.artifacts_dir is None:
        raise ConfigError("api_trained_router needs a run directory for its adapter (artifacts_dir)")
    with ctx.phase("dev"):
        dev = await collect(ctx, ctx.task.dev)
        labels, why = await dev_labels(ctx, dev, params.tie_break, params.reward_max_length, reward_model(ctx, params))
        dev_best = models[dev.best_order()[0]]
        if params.router_base:
            check_spec(ModelSpec(model=params.router_base))  # a one-line error for a model that is not here
            base_handle: ModelHandle = ctx.add_model("router-base", ModelSpec(model=params.router_base))
        else:
            base_handle = ctx.role("router") or dev_best
        base_dir = ctx.local(base_handle).path
        data = [([("user", router_prompt(query_text(ex), descriptions, n))], f"Model {label + 1}")
                for ex, label in zip(ctx.task.dev, labels)]
        heldout = heldout_items(len(data), params.heldout_fraction, ctx.seed)
        train_idx = [i for i in range(len(data)) if i not in heldout]
        settings = SFTSettings(epochs=params.epochs, max_steps=params.max_steps, learning_rate=params.learning_rate,
                               batch_size=params.batch_size, grad_accum=params.grad_accum, max_length=params.max_length,
                               lora_r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                               target_modules=list(params.target_modules), seed=ctx.seed)
        write_jsonl(ctx.artifacts_dir / "router_sft_data.jsonl",
                    [{"id": ex.id, "prompt": msgs[0][1], "completion": c, "label": models[lab].name,
                      "split": "heldout" if i in heldout else "train", **w}
                     for i, (ex, (msgs, c), lab, w) in enumerate(zip(ctx.task.dev, data, labels, why))])
        device, dtype = training_placement(ctx, base_handle)
        trained = train_lora_sft(base_dir, [data[i] for i in train_idx], ctx.artifacts_dir / "router_lora", settings,
                                 device=device, dtype=dtype)
        router = ctx.add_model("trained-router", ModelSpec(model=base_dir, adapter=str(trained.adapter_dir)))
        sampling = ctx.sampling(max_new_tokens=params.router_max_new_tokens, temperature=params.router_temperature)
        if params.check_on_dev:
            on_dev = await ctx.generate([Call(router, msgs[0][1], sampling) for msgs, _ in data], tag="router on dev")
            agree = [parse_model_choice(r.text, n).index == label for r, label in zip(on_dev, labels)]

            def share(idx: list[int]) -> float | None:
                return round(sum(agree[i] for i in idx) / len(idx), 4) if idx else None
    ctx.metrics.update(
        router_base=base_handle.name, router_adapter=str(trained.adapter_dir),
        router_fingerprint=ctx.local(router).fingerprint,
        training={"examples": len(train_idx), "steps": trained.steps, "seconds": round(trained.seconds, 2),
                  "reused": trained.reused, "device": device, "dtype": dtype,
                  "heldout": [ctx.task.dev[i].id for i in sorted(heldout)], "first_loss": trained.losses[0] if trained.losses else None,
                  "last_loss": trained.losses[-1] if trained.losses else None},
        dev_label_share={m.name: round(labels.count(i) / max(1, len(labels)), 4) for i, m in enumerate(models)},
        dev_ties_broken_by={k: sum(w["by"] == k for w in why) for k in ("score", "reward", "judge", "dev-order")})
    if params.check_on_dev:
        ctx.metrics.update(router_heldout_agreement=share(sorted(heldout)),
                                 router_train_agreement=share(train_idx))
    with ctx.phase("test"):
        raw = await ctx.generate([Call(router, router_prompt(query_text(ex), descriptions, n), sampling) for ex in ctx.task.test],
                           tag="route")
    chosen, traces = await read_router(ctx, router, raw, fallback=lambda: _ready(dev_best))
    return await routed_outputs(ctx, chosen, traces)


async def _ready(handle: ModelHandle) -> ModelHandle:
    """An already-known fallback model, as the awaitable `read_router` asks for."""
    return handle
