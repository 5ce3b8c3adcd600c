"""LoRA supervised fine-tuning with a plain PyTorch loop (peft; no trl needed).

Loss is on the completion tokens only. The adapter is written to `out_dir` with a `.complete` marker holding
the hash of the data and settings: calling again with the same inputs reuses it (a resumed run does not
train twice), different inputs retrain. No gradient checkpointing; fp32 on CPU (bf16 is ~3x slower there),
the run's precision on a GPU when the caller passes it (`training_placement`).
`init_adapter` continues training an existing adapter (base + that adapter is the starting model, and the
result is again one adapter on the base, of that adapter's LoRA shape), e.g. a later iteration of an
iterative method.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moco import faults
from moco.models.base import Message
from moco.training.adapters import (load_lora_model, load_tokenizer, lora_kwargs, reusable_log, save_adapter,
                                    training_digest)


@dataclass
class SFTSettings:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")
    warmup_ratio: float = 0.1
    seed: int = 0


@dataclass
class SFTResult:
    adapter_dir: Path
    steps: int
    losses: list[float]
    seconds: float
    reused: bool


def train_lora_sft(base_dir: str | Path, data: list[tuple[list[Message], str]], out_dir: str | Path,
                   settings: SFTSettings | None = None, device: str = "cpu",
                   init_adapter: str | Path | None = None, dtype: str = "float32") -> SFTResult:
    """Fine-tune a LoRA adapter on (messages, completion) pairs and save it to `out_dir`, with the base model
    on `device` in `dtype` (see `training_placement`)."""
    import torch

    s = settings or SFTSettings()
    out = Path(out_dir)
    digest = training_digest(base_dir, [([list(m) for m in msgs], c) for msgs, c in data], s, init_adapter,
                             **({"dtype": dtype} if dtype != "float32" else {}))
    log = reusable_log(out, digest)
    if log is not None:
        return SFTResult(out, log["steps"], log["losses"], log["seconds"], reused=True)
    if not data:
        raise ValueError("no training examples")
    t0 = time.time()
    torch.manual_seed(s.seed)
    tok = load_tokenizer(base_dir)
    model = load_lora_model(base_dir, init_adapter, lora_kwargs(s), device, dtype)
    rows = [_encode(tok, msgs, completion, s.max_length) for msgs, completion in data]
    rows = [r for r in rows if any(label != -100 for label in r[1])]
    if not rows:
        raise ValueError("every training example was truncated away; raise max_length")
    rng = random.Random(s.seed)
    steps_per_epoch = math.ceil(len(rows) / (s.batch_size * s.grad_accum))
    total = s.max_steps or steps_per_epoch * s.epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate)
    warm = max(1, int(total * s.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, i / total)))))
    model.train()
    losses: list[float] = []
    order: list[int] = []
    step = 0
    while step < total:
        opt.zero_grad()
        acc = 0.0
        for _ in range(s.grad_accum):
            if len(order) < s.batch_size:
                more = list(range(len(rows)))
                rng.shuffle(more)
                order += more
            batch = [rows[i] for i in order[: s.batch_size]]
            order = order[s.batch_size:]
            ids, labels, mask = _collate(batch, tok.pad_token_id, device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / s.grad_accum
            loss.backward()
            acc += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(acc)
        step += 1
        faults.hit("train.step")
    secs = time.time() - t0
    save_adapter(model, tok, out, digest, {"steps": step, "losses": losses, "seconds": secs, "examples": len(rows),
                                           "settings": asdict(s), "init_adapter": str(init_adapter or "")})
    return SFTResult(out, step, losses, secs, reused=False)


def _encode(tok, messages: list[Message], completion: str, max_length: int) -> tuple[list[int], list[int]]:
    msgs = [{"role": r, "content": c} for r, c in messages]
    if getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    else:
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in msgs) + "Assistant:"
        p_ids = tok(prompt)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p_ids + c_ids)[-max_length:]
    labels = ([-100] * len(p_ids) + c_ids)[-max_length:]
    return ids, labels


def _collate(batch, pad_id: int, device: str):
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
    return ids, labels, mask
