"""api_collm: Co-LLM — a learned deferral head decides, token by token, when the generator lets a mentor write.

Shen, Lang, Wang, Kim & Sontag, "Learning to Decode Collaboratively with Multiple Language Models" (ACL 2024).
The choice of writer at each token is a latent variable; a linear head on the generator's last hidden state
gives P(defer); it is learned by maximising the marginal likelihood of target responses, with weak
pseudo-labels to initialise it (`moco.training.deferral`).

Training (dev phase), on THIS task's dev split (the reference trains on MATH whatever the task):
1. Targets: each dev item's gold answer written as a response (when the task has gold answers), and the
   two models' own dev answers that the task scorer marks best (correct) — `targets`.
2. Both models score every target token (frozen, one forward per batch); the head is initialised on
   pseudo-labels (mentor right where the generator is wrong) and trained on the marginal likelihood.
   By default only the head is trained and the generator stays frozen: the paper fine-tunes the base model
   jointly, which `train_generator: lora` does through a LoRA adapter (then the adapted generator decodes).
   The head (and adapter) are cached by a digest of models, data and settings: re-runs do not retrain.

Threshold (dev phase, as the paper: η is chosen on validation data): with `deferral_threshold: null` (the
default) the dev split is decoded once per threshold of `threshold_grid` and the best mean dev score wins (ties:
the higher threshold, fewer mentor calls); metrics `dev_selection.deferral_threshold` list every threshold's
dev score with its interval. The dev items also trained the head: the choice is optimistic for small dev sets.
A number fixes the threshold (no search).

Decoding is greedy by default (the paper's and the authors' code); `do_sample: true` uses the run's sampling.

Inference (test phase), per example, all examples of a batch in lock-step with a KV cache per model:
at step t the generator computes P(defer); above threshold(t) the mentor writes the token (`defer`: the
mentor's token; `compose`: from (1−p)·p_gen + p·p_mentor), else the generator's token. The mentor is fed
the text it has not seen only when it is consulted. threshold(t) is constant, or decays linearly / by a
cosine from 1 to `deferral_threshold` over `threshold_warmup_steps` tokens. Generation stops at an
end-of-sequence token or after max_new_tokens.

The two models must share a tokenizer (token ids are exchanged): `moco validate` checks it from the tokenizer
files before any model loads. The trace lists every deferral (token position, P(defer), threshold, token).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from moco.cache import cache_dir
from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities, GenRequest, SamplingParams, with_role_prompt
from moco.models.pool import ModelHandle
from moco.models.stepper import Program, Seeds, Stepper, run_rows, sample
from moco.models.token_level import Member, Outcome, TokenLevelBackend, add_segment, outcomes, usage_of
from moco.models.token_model import TokenModel, TrainableTokenModel
from moco.tasks.base import Example
from moco.tasks.formats import MC_INSTRUCTION
from moco.training.adapters import training_placement
from moco.training.deferral import DeferralHead, DeferralSettings, digest_of, train_deferral_head


def _external_dataset(_v: Any) -> Any:
    raise ValueError("Co-LLM trains on the task's own dev split here; an external training dataset "
                     "(training_dataset_name / training_split) is not supported")


class Params(MethodParams):
    reference_keys = {"training_dataset_name": ("targets", _external_dataset),
                      "training_split": ("targets", _external_dataset)}

    generator: int | str = Field(0, description="the model that writes and learns when to defer (index or name)")
    mentor: int | str = Field(1, description="the model deferred to (index or name), frozen")
    deferral_threshold: float | None = Field(None, ge=0.0, le=1.0, description="defer where P(defer) exceeds it; "
                                             "None: chosen on dev from threshold_grid (the paper)")
    threshold_grid: list[float] = Field([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], min_length=1,
                                        description="thresholds tried on dev when deferral_threshold is None")
    do_sample: bool = Field(False, description="False: greedy decoding (the paper); True: the run's sampling")
    deferral_strategy: Literal["defer", "compose"] = Field("defer", description="defer: the mentor writes the "
                                                           "token; compose: mix both distributions by P(defer)")
    threshold_warmup_schedule: Literal["none", "linear", "cosine"] = Field(
        "none", description="threshold from 1 down to deferral_threshold over the first tokens")
    threshold_warmup_steps: int = Field(15, ge=1, description="tokens of the warmup schedule")
    targets: Literal["gold", "correct", "both"] = Field("both", description="training targets: gold answers "
                                                        "written as responses, the models' correct dev answers, or both")
    train_generator: Literal["frozen", "lora"] = Field("frozen", description="frozen: train the head only; "
                                                       "lora: also adapt the generator (paper: joint fine-tuning)")
    max_train_examples: int = Field(10000, ge=1, alias="training_num", description="cap on training targets")
    max_sequence_length: int = Field(2048, ge=16, description="prompt + target tokens kept per training sequence")
    init_epochs: int = Field(1, ge=0, description="pseudo-label initialisation passes")
    epochs: int = Field(2, ge=1, description="marginal-likelihood passes (reference: 2)")
    min_steps: int = Field(200, ge=1, description="at least this many head updates per phase (small dev sets)")
    learning_rate: float = Field(1e-3, gt=0, description="head learning rate")
    pos_weight: float = Field(8.0, gt=0, description="weight of the defer class in the initialisation loss")
    kv_cache: bool = Field(True, description="reuse each model's KV cache (False: recompute, same output)")


def threshold_at(step: int, target: float, schedule: str, warmup: int) -> float:
    """Deferral threshold at token `step` (0-based): constant, or from 1 down to `target` over `warmup` steps."""
    if schedule == "none" or step >= warmup:
        return target
    frac = step / warmup
    if schedule == "linear":
        return 1.0 - (1.0 - target) * frac
    return target + (1.0 - target) * 0.5 * (1.0 + math.cos(math.pi * frac))


def collm_program(row: int, gen: Stepper, mentor: Stepper, head: DeferralHead, *, sampling: SamplingParams,
                  seeds: Seeds, threshold: Any, strategy: str, budget: int, result: dict[str, Any]) -> Program:
    """Co-LLM decoding of one row; fills `result` with finish, deferrals and segments."""
    import torch

    deferrals: list[dict[str, Any]] = []
    segments: list[list[str]] = []
    result.update(finish="length", deferrals=deferrals, segments=segments)
    synced = gen.prompt_len[row]  # the mentor has seen gen.ids[row][:synced] after its own prompt
    eos = gen.eos_ids | mentor.eos_ids
    for step in range(budget):
        yield gen
        p = head.p_defer(gen.hidden[row])
        thr = threshold(step)
        writer = "generator"
        if p > thr:
            mentor.append(row, gen.ids[row][synced:])
            synced = len(gen.ids[row])
            yield mentor
            writer = "mentor"
            if strategy == "defer":
                tok = sample(mentor.logits[row], sampling, seeds[row])
            else:
                v = min(gen.logits.shape[1], mentor.logits.shape[1])
                mix = (1 - p) * torch.softmax(gen.logits[row, :v], -1) + p * torch.softmax(mentor.logits[row, :v], -1)
                tok = sample(torch.log(mix), sampling, seeds[row])
            mentor.wrote(row)
        else:
            tok = sample(gen.logits[row], sampling, seeds[row])
            gen.wrote(row)
        if tok in eos:
            if writer == "mentor":
                deferrals.append({"at": step, "p_defer": round(p, 4), "threshold": round(thr, 4), "token": None})
            result["finish"] = "stop"
            break
        start = len(gen.ids[row])
        gen.append(row, [tok])
        text = gen.text_of(row, start)
        if writer == "mentor":
            deferrals.append({"at": step, "p_defer": round(p, 4), "threshold": round(thr, 4), "token": text})
        add_segment(segments, writer, text)


def decode_collm(gen_backend: TokenModel, mentor_backend: TokenModel, head: DeferralHead, gen_reqs: list[GenRequest],
                 mentor_reqs: list[GenRequest], *, sampling: SamplingParams, threshold: float = 0.5,
                 strategy: str = "defer", schedule: str = "none", warmup: int = 15, kv_cache: bool = True,
                 names: tuple[str, str] = ("generator", "mentor")) -> list[Outcome]:
    """Co-LLM decoding of a batch (requests aligned per row); one Outcome per row."""
    gen = Stepper.from_requests(gen_backend, gen_reqs, name=names[0], kv_cache=kv_cache, hidden=True)
    mentor = Stepper.from_requests(mentor_backend, mentor_reqs, name=names[1], kv_cache=kv_cache)
    seeds = Seeds([r.seed for r in gen_reqs])
    results: list[dict[str, Any]] = [{} for _ in gen_reqs]

    def thr(step: int) -> float:
        return threshold_at(step, threshold, schedule, warmup)

    programs = {i: collm_program(i, gen, mentor, head, sampling=sampling, seeds=seeds, threshold=thr,
                                 strategy=strategy, budget=sampling.max_new_tokens, result=results[i])
                for i in range(len(gen_reqs))}
    run_rows(programs, [gen, mentor])
    outs = []
    for i, res in enumerate(results):
        trace = {"generator": names[0], "mentor": names[1], "deferrals": res["deferrals"],
                 "segments": res["segments"], "deferred_tokens": len(res["deferrals"]),
                 "tokens": len(gen.generated(i)), "strategy": strategy}
        outs.append(Outcome(gen.text_of(i, gen.prompt_len[i]).strip(), res["finish"], trace,
                            usage_of([(names[0], gen.usage[i]), (names[1], mentor.usage[i])])))
    return outs


# ---------------------------------------------------------------------- training data from the task's dev split
def gold_response(ex: Example) -> str | None:
    """The gold answer written the way the prompt asks for it (None for items without a gold answer)."""
    if ex.answer is None:
        return None
    ans = str(ex.answer)
    if ex.choices and ans in ex.choices:
        return f"The answer is ({ans})." if MC_INSTRUCTION in ex.prompt else f"{ex.choices[ans]}."
    if "\\boxed" in ex.prompt:
        return f"The answer is \\boxed{{{ans}}}."
    return ans


async def training_targets(ctx: RunContext, params: Params, gen, mentor) -> tuple[list[tuple[Example, str]], dict]:
    """(example, target response) pairs from the dev split, and counts of where they came from."""
    pairs: list[tuple[Example, str]] = []
    stats = {"gold": 0, "gold_rejected_by_scorer": 0, "correct_outputs": 0}
    if params.targets in ("gold", "both"):
        golds = [(ex, t) for ex in ctx.task.dev if (t := gold_response(ex)) is not None]
        checked = await ctx.score([ex for ex, _ in golds], [t for _, t in golds])  # one batch
        for (ex, text), res in zip(golds, checked):
            if res.score >= 1.0:
                pairs.append((ex, text))
                stats["gold"] += 1
            else:
                stats["gold_rejected_by_scorer"] += 1
    if params.targets in ("correct", "both"):
        answers = await ctx.answer_all(ctx.task.dev, tag="answer", models=[gen, mentor])
        cands = [(j, ex, a[j].text) for j, ex in enumerate(ctx.task.dev) for a in answers if not a[j].failed]
        got = await ctx.score([ex for _, ex, _ in cands], [t for _, _, t in cands])  # one batch
        by_item: dict[int, list[tuple[float, str]]] = {}
        for (j, _ex, text), res in zip(cands, got):
            by_item.setdefault(j, []).append((res.score, text))
        for j, ex in enumerate(ctx.task.dev):
            scored = by_item.get(j, [])
            best = max((s for s, _ in scored), default=0.0)
            for s, text in dict.fromkeys((s, t.strip()) for s, t in scored):
                if best > 0 and s == best and text and (ex, text) not in pairs:
                    pairs.append((ex, text))
                    stats["correct_outputs"] += 1
    return pairs[:params.max_train_examples], stats


async def train(ctx: RunContext, params: Params, gen: ModelHandle, mentor: ModelHandle, gen_be: TokenModel,
          mentor_be: TokenModel):
    """Train (or reuse) the head for this pair on the dev split; returns the head, the generator handle to
    decode with (the LoRA-adapted one when trained) and the training log."""
    import time

    if not isinstance(gen_be, TrainableTokenModel) or not isinstance(mentor_be, TrainableTokenModel):
        raise ConfigError("api_collm trains its deferral head on the models' hidden states; "
                          f"'{gen.name}' or '{mentor.name}' does not expose its torch module")
    pairs, stats = await training_targets(ctx, params, gen, mentor)
    if not pairs:
        raise ConfigError(f"api_collm: no training targets from the dev split of {ctx.task.name} "
                          f"(targets={params.targets}: no gold answers scored correct and no correct dev answers)")
    sampling = ctx.sampling(temperature=0.0)
    g_req = [GenRequest(with_role_prompt((("user", ex.prompt),), gen.role_prompt), sampling) for ex, _ in pairs]
    m_req = [GenRequest(with_role_prompt((("user", ex.prompt),), mentor.role_prompt), sampling) for ex, _ in pairs]
    tok = gen_be.tokenizer
    targets = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, t in pairs]
    gen_seqs = [(gen_be.encode(r), t) for r, t in zip(g_req, targets)]
    mentor_seqs = [(mentor_be.encode(r), t) for r, t in zip(m_req, targets)]
    settings = DeferralSettings(init_epochs=params.init_epochs, pos_weight=params.pos_weight, epochs=params.epochs,
                                learning_rate=params.learning_rate, lora=params.train_generator == "lora",
                                min_steps=params.min_steps,
                                max_length=params.max_sequence_length, seed=ctx.seed)
    identity = {"generator": gen_be.fingerprint, "mentor": mentor_be.fingerprint}
    out_dir = cache_dir() / "collm" / digest_of({"pair": identity, "task": ctx.task.name, "targets": targets})
    t0 = time.time()
    device, dtype = training_placement(ctx, gen)  # joint fine-tuning runs where the run places the generator
    result = train_deferral_head(gen_be.model, mentor_be.model, gen_seqs, mentor_seqs, out_dir, settings,
                                 identity=identity, generator_dir=ctx.local(gen).path if settings.lora else None,
                                 device=device, dtype=dtype)
    seconds = time.time() - t0 if not result.reused else result.log.get("seconds", 0.0)
    n_gen = sum(len(p) + len(t) for p, t in gen_seqs)
    n_men = sum(len(p) + len(t) for p, t in mentor_seqs)
    # the scoring forwards are this training's model calls
    for h, n in ((gen, n_gen), (mentor, n_men)):
        ctx.account(model=h.name, key=result.digest, tag="collm training", tokens_in=n,
                    latency=seconds * n / max(1, n_gen + n_men), cached=result.reused)
    head = DeferralHead.load(result.head_path)
    decoder = gen
    if result.adapter_dir is not None:
        decoder = ctx.add_model(f"{gen.name}+collm-lora",
                                gen.spec.model_copy(update={"adapter": str(result.adapter_dir), "name": None}))
    info = {"digest": result.digest, "path": str(result.out_dir), "reused": result.reused, "targets": stats,
            **{k: v for k, v in result.log.items() if k not in ("init_losses", "losses")},
            "first_loss": (result.log.get("losses") or [None])[0], "last_loss": (result.log.get("losses") or [None])[-1]}
    if ctx.artifacts_dir is not None:
        Path(ctx.artifacts_dir, "collm_head.json").write_text(json.dumps(info, indent=1))
    return head, decoder, info


@method("api_collm", params=Params, level="api", aliases=("collm", "co_llm"), min_models=2, max_models=2,
        needs=Capabilities(logits=True), same_tokenizer=True, trainable=True,
        paper="Shen et al. 2024, Learning to Decode Collaboratively with Multiple Language Models",
        summary="A deferral head trained on dev (marginal likelihood) picks, per token, generator or mentor (threshold chosen on dev)")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    gen, mentor = ctx.model(params.generator), ctx.model(params.mentor)
    if gen.index == mentor.index:
        raise ConfigError(f"api_collm: generator and mentor are the same model ('{gen.name}')")
    gen_be, mentor_be = ctx.local(gen).token_model("api_collm"), ctx.local(mentor).token_model("api_collm")
    if not ctx.task.dev:
        raise ConfigError(f"api_collm: the deferral head is trained on the dev split; task {ctx.task.name} has none")
    with ctx.phase("dev"):
        head, decoder, info = await train(ctx, params, gen, mentor, gen_be, mentor_be)
    dec_be = ctx.local(decoder).token_model("api_collm")
    sampling = ctx.sampling() if params.do_sample else ctx.sampling(temperature=0.0)

    members = [Member(decoder.name, dec_be, decoder.role_prompt), Member(mentor.name, mentor_be, mentor.role_prompt)]

    async def run_on(examples: list[Example], threshold: float, smp: SamplingParams, tag: str,
               replica: int = 0) -> list[Outcome]:
        def decode(reqs: list[list[GenRequest]], sp: SamplingParams) -> list[Outcome]:
            return decode_collm(dec_be, mentor_be, head, reqs[0], reqs[1], sampling=sp, threshold=threshold,
                                strategy=params.deferral_strategy, schedule=params.threshold_warmup_schedule,
                                warmup=params.threshold_warmup_steps, kv_cache=params.kv_cache,
                                names=(decoder.name, mentor.name))

        settings = {"head": info["digest"], "threshold": threshold, "strategy": params.deferral_strategy,
                    "schedule": params.threshold_warmup_schedule, "warmup": params.threshold_warmup_steps}
        handle = ctx.add_model("api_collm", TokenLevelBackend("api_collm", settings, members, decode))
        return outcomes(await ctx.generate([Call(handle, ex.prompt, smp, replica) for ex in examples], tag=tag))

    threshold = params.deferral_threshold
    if threshold is None:
        with ctx.phase("dev"):
            threshold = await choose_threshold(ctx, params, run_on)
    with ctx.phase("test"):
        outs = await run_on(ctx.task.test, threshold, sampling, "co-llm")
    deferred = sum(o.trace["deferred_tokens"] for o in outs)
    total = sum(o.trace["tokens"] for o in outs) or 1
    ctx.metrics["collm"] = {"head": info, "deferral_rate": deferred / total, "generator": decoder.name,
                                  "mentor": mentor.name, "threshold": threshold,
                                  "threshold_from": "fixed" if params.deferral_threshold is not None else "dev",
                                  "decoding": "sampled" if params.do_sample else "greedy"}
    return [Output(o.text, trace={**o.trace, "head": info["digest"], "threshold": threshold}) for o in outs]


async def choose_threshold(ctx: RunContext, params: Params, run_on: Any) -> float:
    """The deferral threshold with the best mean dev score over `threshold_grid` (ties: the higher one)."""
    from moco.selection import averaged, choose, dev_sampling

    grid = sorted(set(params.threshold_grid))
    smp = dev_sampling(ctx, **({} if params.do_sample else {"temperature": 0.0}))
    items, rates = [], {}
    for t in grid:
        rate: list[float] = []

        async def one_pass(r: int, t: float = t, rate: list[float] = rate) -> list[float]:
            outs = await run_on(ctx.task.dev, t, smp, f"threshold {t}", r)
            rate.append(sum(o.trace["deferred_tokens"] for o in outs) / max(1, sum(o.trace["tokens"] for o in outs)))
            return [s.score for s in await ctx.score(ctx.task.dev, [o.text for o in outs])]

        items.append(await averaged(ctx, one_pass))
        rates[str(t)] = round(sum(rate) / len(rate), 4)
    best = choose(ctx, "deferral_threshold", [str(t) for t in grid], items, key=lambda i: grid[i],
                  deferral_rates=rates)
    return grid[best]
