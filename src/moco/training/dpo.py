"""LoRA DPO (direct preference optimisation) on (prompt messages, chosen, rejected) triples, with trl.

Defaults follow the reference implementation's DPO helper (notes §2.2): LoRA r=64, alpha=16, dropout 0.1 on
the attention projections, lr 1e-6, one epoch, batch 1 x 16 accumulation, trl's default beta 0.1. When
`init_adapter` is given (the next iteration of an iterative method), training continues from that adapter and
the reference policy is that adapter frozen (trl copies it into a "ref" adapter) — the same as merging it
first, which the reference does, without writing merged weights. The result is one adapter on the base.
Reuse and atomic saving as in `moco.training.sft`.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moco.models.base import Message
from moco.training.adapters import (load_lora_model, load_tokenizer, lora_kwargs, reusable_log, save_adapter,
                                    training_digest, trl_cpu_args)

Preference = tuple[list[Message], str, str]  # (prompt messages, chosen completion, rejected completion)


@dataclass
class DPOSettings:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    learning_rate: float = 1e-6
    beta: float = 0.1  # strength of the pull towards the reference policy
    batch_size: int = 1
    grad_accum: int = 16
    max_length: int = 1024  # prompt + completion tokens
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    seed: int = 0


@dataclass
class DPOResult:
    adapter_dir: Path
    steps: int
    losses: list[float]
    margins: list[float]  # chosen minus rejected implicit reward, per logged step
    seconds: float
    reused: bool


def train_lora_dpo(base_dir: str | Path, data: list[Preference], out_dir: str | Path,
                   settings: DPOSettings | None = None, device: str = "cpu",
                   init_adapter: str | Path | None = None) -> DPOResult:
    """Train a LoRA adapter to prefer `chosen` over `rejected` and save it to `out_dir`."""
    import datasets
    import torch
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    s = settings or DPOSettings()
    out = Path(out_dir)
    rows = [([list(m) for m in msgs], c, r) for msgs, c, r in data]
    digest = training_digest(base_dir, rows, s, init_adapter, trainer="dpo")
    log = reusable_log(out, digest)
    if log is not None:
        return DPOResult(out, log["steps"], log["losses"], log["margins"], log["seconds"], reused=True)
    if not data:
        raise ValueError("no preference pairs to train on")
    t0 = time.time()
    torch.manual_seed(s.seed)
    tok = load_tokenizer(base_dir)
    model = load_lora_model(base_dir, init_adapter, lora_kwargs(s), device)
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_list([{"prompt": [{"role": r, "content": c} for r, c in msgs],
                             "chosen": [{"role": "assistant", "content": ch}],
                             "rejected": [{"role": "assistant", "content": rj}]} for msgs, ch, rj in rows])
    args = DPOConfig(output_dir=str(out.with_name(out.name + ".work")), num_train_epochs=s.epochs,
                     max_steps=s.max_steps or -1, learning_rate=s.learning_rate, beta=s.beta,
                     per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
                     max_length=s.max_length, warmup_steps=s.warmup_ratio, lr_scheduler_type=s.lr_scheduler,
                     seed=s.seed, **trl_cpu_args(device))
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    losses = [float(h["loss"]) for h in history]
    margins = [float(h.get("rewards/margins", 0.0)) for h in history]
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # the frozen copy trl made of the starting adapter
    secs = time.time() - t0
    steps = int(trainer.state.global_step)
    save_adapter(model, tok, out, digest, {"steps": steps, "losses": losses, "margins": margins, "seconds": secs,
                                           "pairs": len(rows), "settings": asdict(s),
                                           "init_adapter": str(init_adapter or "")})
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return DPOResult(out, steps, losses, margins, secs, reused=False)
