"""LoRA GRPO (group relative policy optimisation) with a verifiable reward, with trl.

For each prompt the policy samples a group of `num_generations` completions; each completion's reward comes
from `reward(rows, completions)` (e.g. the task scorer against the gold answer of that row), and the update
raises the likelihood of completions above their group's mean. Rows are passed by their position in
`prompts`, never by a dataset id, so duplicate ids cannot fetch the wrong gold answer.

Defaults follow the reference implementation's AggLM trainer (notes §3.9): lr 1e-4, weight decay 1e-5,
cosine schedule, warmup 0.1, group size = per-device batch = 4, temperature 1.0, LoRA r=64/alpha=16/dropout
0.1 on the attention projections; trl's defaults for the loss (DAPO-style token normalisation, as the AggLM
paper uses) and beta=0 (no reference model). Reuse and atomic saving as in `moco.training.sft`; the reward
is identified in the reuse digest by `reward_id`, which the caller derives from what the reward depends on.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moco.models.base import Message
from moco.training.adapters import (load_lora_model, load_tokenizer, lora_kwargs, reusable_log, save_adapter,
                                    training_digest, trl_cpu_args)

RewardFn = Callable[[list[int], list[str]], list[float]]  # (row positions, completion texts) -> rewards


@dataclass
class GRPOSettings:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    num_generations: int = 4  # group size: completions sampled per prompt
    batch_size: int = 4  # completions per device step (a multiple of num_generations)
    grad_accum: int = 1
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0  # KL pull towards the starting policy (0: no reference model)
    loss_type: str = "dapo"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = 0


@dataclass
class GRPOResult:
    adapter_dir: Path
    steps: int
    rewards: list[float]  # mean reward of the sampled completions, per step
    losses: list[float]
    samples: list[dict[str, Any]]  # every scored completion: step, row, reward, text (shortened)
    seconds: float
    reused: bool


def train_lora_grpo(base_dir: str | Path, prompts: Sequence[list[Message]], reward: RewardFn, reward_id: str,
                    out_dir: str | Path, settings: GRPOSettings | None = None, device: str = "cpu",
                    init_adapter: str | Path | None = None) -> GRPOResult:
    """Train a LoRA adapter with GRPO on `prompts`, rewarding completions with `reward`; save it to `out_dir`."""
    import datasets
    import torch
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    s = settings or GRPOSettings()
    if s.batch_size % s.num_generations:
        raise ValueError(f"batch_size {s.batch_size} must be a multiple of num_generations {s.num_generations}")
    out = Path(out_dir)
    rows = [[list(m) for m in msgs] for msgs in prompts]
    digest = training_digest(base_dir, rows, s, init_adapter, trainer="grpo", reward=reward_id)
    log = reusable_log(out, digest)
    if log is not None:
        return GRPOResult(out, log["steps"], log["rewards"], log["losses"], log["samples"], log["seconds"], True)
    if not rows:
        raise ValueError("no prompts to train on")
    t0 = time.time()
    torch.manual_seed(s.seed)
    datasets.disable_progress_bars()
    tok = load_tokenizer(base_dir, padding_side="left")
    model = load_lora_model(base_dir, init_adapter, lora_kwargs(s), device)
    samples: list[dict[str, Any]] = []

    def reward_func(prompts, completions, row, trainer_state=None, **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        values = [float(v) for v in reward(list(row), texts)]
        step = trainer_state.global_step if trainer_state is not None else 0
        samples.extend({"step": step, "row": r, "reward": v, "text": t[:300]} for r, t, v in zip(row, texts, values))
        return values

    ds = datasets.Dataset.from_list([{"prompt": [{"role": r, "content": c} for r, c in msgs], "row": i}
                                     for i, msgs in enumerate(rows)])
    args = GRPOConfig(output_dir=str(out.with_name(out.name + ".work")), num_train_epochs=s.epochs,
                      max_steps=s.max_steps or -1, learning_rate=s.learning_rate, weight_decay=s.weight_decay,
                      lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_ratio,
                      per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
                      num_generations=s.num_generations, max_completion_length=s.max_completion_length,
                      temperature=s.temperature, top_p=s.top_p, beta=s.beta, loss_type=s.loss_type, seed=s.seed,
                      **trl_cpu_args(device))
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=args, train_dataset=ds, processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    history = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [float(h["reward"]) for h in history]
    losses = [float(h.get("loss", 0.0)) for h in history]
    steps = int(trainer.state.global_step)
    secs = time.time() - t0
    save_adapter(trainer.model, tok, out, digest, {"steps": steps, "rewards": rewards, "losses": losses,
                                                   "samples": samples, "seconds": secs, "prompts": len(rows),
                                                   "settings": asdict(s), "reward_id": reward_id,
                                                   "init_adapter": str(init_adapter or "")})
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return GRPOResult(out, steps, rewards, losses, samples, secs, reused=False)
