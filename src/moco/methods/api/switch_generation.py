"""api_switch_generation: models take turns writing patches of a response; a selector LM picks who writes next.

Feng et al. 2025, "Don't Throw Away Your Pretrained Model" (Switch Generation). A response is written in
rounds of `patch_size` tokens. Before each round a selector LM reads the question and the segments so far
(each wrapped as `<model k begins> ... <model k ends>`) and names the model (0..N-1) that writes the next
segment; that model continues the assistant turn (the text so far is its assistant prefix). All examples'
patches of a round are one batched `ctx.generate` call (grouped per model), and so are the selector calls.
An example is finished when a model ends the answer (end-of-sequence) or after max_new_tokens.
The method is a program of ordinary `ctx.generate` calls, not a composite backend: a segment is one model's
ordinary continuation of an assistant prefix (any kind of model, served ones included — no logits are
combined), so every segment and selector reply is cached, seeded, batched and recorded under the model that
wrote it, and a later round reuses the earlier rounds' prompt KV (models/prefix_cache.py).

The selector is
* given: a pool model or another model (`selector`, or the role `selector`), used as it is;
* trained (default when none is given): LoRA SFT of `selector_base` (role `selector_base`, default the first
  model) on dev rollouts, as in the paper. For each training instance (a dev item and a decision round c in
  0..R-2 of the R = max_new_tokens / patch_size rounds, seeded), a context of c patches is written by random
  switching; then `rollouts_per_instance` rollouts continue it, the first
  continuation segment by each model in turn and the rest by random switching; each rollout is scored by
  the task's scorer (a reward-model scorer when the task is scored by one). The label is the model whose
  rollouts scored best on average (instances where all models tie teach nothing and are skipped; the
  reference takes the first index then). The SFT example is (selector prompt on the context, "model j").
* random: uniform seeded choice (the paper's random-switching baseline).

Selector replies are parsed from "The answer is model" + its continuation: the first integer, if it names a
model; otherwise the choice is a seeded random one and the failure is recorded (trace and metrics).

Differences from the reference: a patch that ends early ends the example (the reference counts characters
and inserts `<end>` markers); `wait_on_stop` (reference `wait_flag`) instead appends " Wait," and lets the
next model continue; rollouts are balanced over the first continuation model; decision rounds start at 0
(the reference draws c in [1, R-3], which leaves no decision at all for short answers).
"""
from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from moco.cache import cache_dir
from moco.config import ModelSpec
from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.pool import ModelHandle
from moco.tasks.base import Example
from moco.training.adapters import training_digest, training_placement
from moco.training.sft import SFTSettings, train_lora_sft

ANSWER_PREFIX = "The answer is model"
FINAL_CUE = " The final answer is"


def _reward_model(_v: Any) -> Any:
    raise ValueError("switch generation scores rollouts with the task's scorer; to use a reward model, run a task "
                     "scored by one (role `reward`)")


class Params(MethodParams):
    reference_keys = {"reward_model_name": ("rollouts_per_instance", _reward_model),
                      "reward_model_gpu_id": ("rollouts_per_instance", _reward_model)}

    patch_size: int = Field(25, ge=1, le=4096, description="tokens per segment (reference: 25)")
    selector: int | str | None = Field(None, alias="selector_model_name", description="a given selector: pool "
                                       "model (index/name) or any model (Hub id, folder); default: role `selector`")
    selector_mode: Literal["auto", "given", "trained", "random"] = Field(
        "auto", description="auto: the given selector if any, else train one; random: uniform switching")
    selector_base: int | str | None = Field(None, alias="selector_base_model", description="model LoRA-trained as "
                                            "the selector (default: role `selector_base`, else the first model)")
    training_instances: int = Field(500, ge=1, alias="training_instance_num",
                                    description="selector training instances (contexts) drawn from dev")
    rollouts_per_instance: int = Field(16, ge=1, alias="rollout_per_instance",
                                       description="rollouts that label one instance")
    skip_ties: bool = Field(True, description="drop instances where every model's rollouts score the same")
    sft_epochs: int = Field(5, ge=1, description="selector SFT epochs (reference: 5)")
    sft_learning_rate: float = Field(2e-4, gt=0, description="selector LoRA learning rate")
    sft_lora_r: int = Field(8, ge=1, description="selector LoRA rank")
    final_answer_cue: bool = Field(False, alias="objective_flag",
                                   description="append ' The final answer is' before the last segment")
    wait_on_stop: bool = Field(False, alias="wait_flag", description="when a model ends the answer before the "
                               "last round, append ' Wait,' and let the next model continue")


# ---------------------------------------------------------------------- prompts and parsing
def selector_prompt(question: str, segments: list[tuple[int, str]], n_models: int) -> str:
    shown = "".join(f"<model {k} begins>{text}<model {k} ends>\n" for k, text in segments) or "(nothing yet)\n"
    return (f"{question}\n\nSeveral models take turns writing the response to the question above, one segment at "
            f"a time. The response so far:\n{shown}\nWhich model (0 to {n_models - 1}) should write the next "
            f"segment? Answer with the model number.")


def parse_choice(reply: str, n_models: int) -> int | None:
    """The model index in the selector's continuation of 'The answer is model' (None if there is none)."""
    m = re.match(r"\s*[\(\[#]?\s*(\d+)", reply)
    if m is None:
        m = re.search(r"model\s*#?\s*(\d+)", reply, re.I)
    if m is None:
        return None
    k = int(m.group(1))
    return k if 0 <= k < n_models else None


# ---------------------------------------------------------------------- switch generation (batched rounds)
def new_state(ex: Example, *, segments: list[tuple[int, str]] | None = None, used: int = 0, replica: int = 0,
              limit: int, round0: int = 0, first: int | None = None) -> dict[str, Any]:
    """One response being written: its segments [(model index or -1 for inserted text, text)], token count,
    how many more rounds it may take (`limit`), rounds already written (`round0`), and an imposed first writer."""
    segs = list(segments or [])
    return {"example": ex, "segments": segs, "text": "".join(t for _, t in segs), "used": used, "done": False,
            "rounds": [], "replica": replica, "limit": limit, "round0": round0, "first": first}


async def switch_generate(ctx: RunContext, states: list[dict[str, Any]], *, models: list[ModelHandle], total_rounds: int,
                    patch: int, budget: int, choose: Any, params: Params, tag: str = "") -> list[dict[str, Any]]:
    """Advance every state round by round: `choose(active_states, r)` names each writer, then all patches of the
    round are one `ctx.generate` call (each continuing its state's text as the assistant prefix)."""
    for r in range(max((s["limit"] for s in states), default=0)):
        active = [s for s in states if not s["done"] and s["used"] < budget and r < s["limit"]]
        if not active:
            break
        picks = choose(active, r)
        if inspect.isawaitable(picks):  # a selector model is asked (a generate call); a seeded pick is not
            picks = await picks
        calls = []
        for s, k in zip(active, picks):
            if params.final_answer_cue and s["round0"] + r == total_rounds - 1 and total_rounds > 1:
                s["text"] += FINAL_CUE
                s["segments"].append((-1, FINAL_CUE))
            n = min(patch, budget - s["used"])
            calls.append(Call(models[k], s["example"].prompt, ctx.sampling(max_new_tokens=n), replica=s["replica"],
                              prefix=s["text"]))
        for s, k, resp in zip(active, picks, await ctx.generate(calls, tag=f"{tag} round {r}".strip())):
            s["text"] += resp.text
            s["segments"].append((k, resp.text))
            s["used"] += resp.tokens_out
            if resp.failed:
                s["done"], s["failed"] = True, resp.error
            elif resp.finish_reason == "stop":
                if params.wait_on_stop and s["round0"] + r < total_rounds - 1:
                    s["text"] += " Wait,"
                    s["segments"].append((-1, " Wait,"))
                else:
                    s["done"] = True
    return states


class Selector:
    """Chooses the next writer for a batch of states: a selector LM (one batched call per round) or random.
    A state with an imposed `first` writer gets it in its first round (training rollouts)."""

    def __init__(self, ctx: RunContext, handle: ModelHandle | None, n_models: int, tag: str = "select"):
        self.ctx, self.handle, self.n, self.tag = ctx, handle, n_models, tag
        self.parse_failures = 0
        self.calls = 0

    async def __call__(self, states: list[dict[str, Any]], r: int) -> list[int]:
        picks: list[int | None] = [s["first"] if r == 0 and s["first"] is not None else None for s in states]
        ask = [i for i, p in enumerate(picks) if p is None]
        if self.handle is None:
            for i in ask:
                picks[i] = self.ctx.rng.randrange(self.n)
                states[i]["rounds"].append({"round": r, "model": picks[i], "by": "random"})
            return [int(p) for p in picks]
        calls = [Call(self.handle, selector_prompt(states[i]["example"].prompt,
                                                   [x for x in states[i]["segments"] if x[0] >= 0], self.n),
                      self.ctx.sampling(temperature=0.0, max_new_tokens=4), prefix=ANSWER_PREFIX) for i in ask]
        replies = await self.ctx.generate(calls, tag=f"{self.tag} round {r}") if calls else []
        self.calls += len(calls)
        for i, resp in zip(ask, replies):
            k = None if resp.failed else parse_choice(resp.text, self.n)
            entry: dict[str, Any] = {"round": r, "selector_reply": resp.text}
            if k is None:
                self.parse_failures += 1
                k = self.ctx.rng.randrange(self.n)
                entry["parse_failed"] = True
            entry["model"] = k
            states[i]["rounds"].append(entry)
            picks[i] = k
        return [int(p) for p in picks]


def _model_ref(ctx: RunContext, ref: int | str, name: str) -> ModelHandle:
    """A pool model by index/name, or any other model spec string added as an extra model."""
    if isinstance(ref, int) or any(h.name == ref for h in ctx.models):
        return ctx.model(ref)
    return ctx.add_model(name, ModelSpec(model=str(ref)))


# ---------------------------------------------------------------------- selector training
async def selector_training_data(ctx: RunContext, params: Params, models: list[ModelHandle], rounds: int,
                           budget: int) -> tuple[list[tuple[list[tuple[str, str]], str]], list[dict[str, Any]]]:
    """Dev rollouts -> (selector messages, "The answer is model j") pairs, and one log row per instance."""
    n = len(models)
    contexts = list(range(rounds - 1)) or [0]  # decision rounds 0..R-2 (see the module docstring)
    rng = ctx.rng
    instances = [(rng.choice(ctx.task.dev), rng.choice(contexts)) for _ in range(params.training_instances)]
    random_pick = Selector(ctx, None, n)
    # 1. each instance's context: c patches written by random switching (all instances advance together)
    heads = [new_state(ex, limit=c, replica=i) for i, (ex, c) in enumerate(instances)]  # independent samples
    await switch_generate(ctx, heads, models=models, total_rounds=rounds, patch=params.patch_size, budget=budget,
                    choose=random_pick, params=params, tag="selector context")
    # 2. rollouts: each model writes the first continuation segment of an equal share of them
    rollouts, owner = [], []
    for i, ((ex, c), h) in enumerate(zip(instances, heads)):
        if h["done"] or h["used"] >= budget:
            continue  # the answer ended inside the context: no decision to learn
        for k in range(params.rollouts_per_instance):
            replica = len(instances) + i * params.rollouts_per_instance + k
            rollouts.append(new_state(ex, segments=h["segments"], used=h["used"], replica=replica, limit=rounds - c,
                                      round0=c, first=k % n))
            owner.append(i)
    await switch_generate(ctx, rollouts, models=models, total_rounds=rounds, patch=params.patch_size, budget=budget,
                    choose=random_pick, params=params, tag="selector rollouts")
    # 3. utility of each first writer = mean task score of its rollouts; label = the best (ties skipped)
    scores: dict[int, dict[int, list[float]]] = {}
    got = await ctx.score([s["example"] for s in rollouts], [s["text"] for s in rollouts])  # one batch
    for i, s, res in zip(owner, rollouts, got):
        scores.setdefault(i, {}).setdefault(s["first"], []).append(res.score)
    data, log = [], []
    for i, per_model in sorted(scores.items()):
        ex, c = instances[i]
        util = {k: sum(v) / len(v) for k, v in per_model.items()}
        best = max(util.values())
        winners = [k for k in sorted(util) if util[k] == best]
        tie = len(winners) == len(util)
        label = None if tie and params.skip_ties else winners[0]
        ctx_segments = [x for x in heads[i]["segments"] if x[0] >= 0]
        log.append({"example": ex.id, "context_patches": c, "context": heads[i]["text"],
                    "utility": {models[k].name: u for k, u in util.items()}, "label": label})
        if label is not None:
            data.append(([("user", selector_prompt(ex.prompt, ctx_segments, n))], f"{ANSWER_PREFIX} {label}"))
    return data, log


async def train_selector(ctx: RunContext, params: Params, models: list[ModelHandle], rounds: int,
                   budget: int) -> tuple[ModelHandle, dict[str, Any]]:
    """Label dev rollouts, LoRA-train the selector base on them, and return the trained selector."""
    import time

    if not ctx.task.dev:
        raise ConfigError(f"api_switch_generation: training the selector needs a dev split; task {ctx.task.name} "
                          "has none (give a selector, or selector_mode: random)")
    base = (_model_ref(ctx, params.selector_base, "selector-base") if params.selector_base is not None
            else ctx.role("selector_base") or ctx.models[0])
    data, log = await selector_training_data(ctx, params, models, rounds, budget)
    if ctx.artifacts_dir is not None:
        Path(ctx.artifacts_dir, "selector_training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if not data:
        raise ConfigError(f"api_switch_generation: no informative selector training instance: of "
                          f"{params.training_instances}, {params.training_instances - len(log)} ended inside their "
                          f"context and {len(log)} had all models' rollouts scoring the same; raise "
                          "training_instances or rollouts_per_instance")
    settings = SFTSettings(epochs=params.sft_epochs, learning_rate=params.sft_learning_rate, lora_r=params.sft_lora_r,
                           lora_alpha=2 * params.sft_lora_r, seed=ctx.seed)
    base_dir = ctx.local(base).path
    ident = training_digest(base_dir, data, settings)[:20]  # the adapter's folder: what determines its weights
    t0 = time.time()
    res = train_lora_sft(base_dir, data, cache_dir() / "switch_selector" / ident, settings,
                         device=training_placement(ctx, base)[0])  # fp32 where the run places the base
    spec = base.spec.model_copy(update={"adapter": str(res.adapter_dir), "role_prompt": None, "name": None,
                                        "description": None})
    selector = ctx.add_model("switch-selector", spec)
    tokens = _count_tokens(base_dir, [m[0][1] + c for m, c in data])
    ctx.account(model=selector.name, key=ident, tag="selector sft", tokens_in=tokens * settings.epochs,
                latency=res.seconds if res.reused else time.time() - t0, cached=res.reused)
    labels = [c.rsplit(" ", 1)[1] for _, c in data]
    info = {"base": base.name, "adapter": str(res.adapter_dir), "reused": res.reused, "examples": len(data),
            "instances": len(log), "skipped_ties": sum(r["label"] is None for r in log), "steps": res.steps,
            "first_loss": res.losses[0] if res.losses else None, "last_loss": res.losses[-1] if res.losses else None,
            "labels": {models[int(k)].name: labels.count(k) for k in sorted(set(labels))}}
    return selector, info


def _count_tokens(model_dir: str, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


@method("api_switch_generation", params=Params, level="api", aliases=("switch_generation", "switch"),
        min_models=2, trainable=True,
        roles={"selector": "picks the next writer (default: trained on dev rollouts)",
               "selector_base": "the model LoRA-trained as the selector (default: the first model)"},
        paper="Feng et al. 2025, Don't Throw Away Your Pretrained Model (Switch Generation)",
        summary="Models take turns writing patches of the answer; a given or dev-trained selector LM picks each turn")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models = ctx.models
    budget = ctx.sampling().max_new_tokens
    rounds = math.ceil(budget / params.patch_size)
    mode = params.selector_mode
    given = params.selector if params.selector is not None else ctx.role("selector")
    if mode == "auto":
        mode = "given" if given is not None else "trained"
    info: dict[str, Any] = {"mode": mode}
    selector: ModelHandle | None = None
    if mode == "given":
        if given is None:
            raise ConfigError("api_switch_generation: selector_mode given needs `selector` or the role `selector`")
        selector = given if isinstance(given, ModelHandle) else _model_ref(ctx, given, "switch-selector")
    elif mode == "trained":
        with ctx.phase("dev"):
            selector, training = await train_selector(ctx, params, models, rounds, budget)
        info["training"] = training
    pick = Selector(ctx, selector, len(models))
    with ctx.phase("test"):
        states = await switch_generate(ctx, [new_state(ex, limit=rounds) for ex in ctx.task.test], models=models,
                                 total_rounds=rounds, patch=params.patch_size, budget=budget, choose=pick,
                                 params=params, tag="switch")
    written = [k for s in states for k, _ in s["segments"] if k >= 0]
    info.update(selector=selector.name if selector else "random", parse_failures=pick.parse_failures,
                selector_calls=pick.calls, rounds=rounds,
                segment_share={m.name: written.count(m.index) / max(1, len(written)) for m in models})
    ctx.metrics["switch_generation"] = info
    outputs = []
    for s in states:
        segs = [{"model": models[k].name if k >= 0 else None, "text": t} for k, t in s["segments"]]
        outputs.append(Output(s["text"].strip(), failed="failed" in s,
                              trace={"selector": info["selector"], "segments": segs, "rounds": s["rounds"]}))
    return outputs
