"""Co-LLM's deferral head (Shen et al. 2024): learn, per token, whether the generator should defer to a mentor.

The head is a linear layer on the generator's last hidden state: z_t = w·h_t + b, P(defer at t) = σ(z_t).
It is trained on target sequences (prompt, response) by maximising the marginal likelihood of each target
token under the latent choice of writer, with the mentor frozen:

    loss_t = −log[ σ(−z_t)·p_gen(y_t | y_<t) + σ(z_t)·p_mentor(y_t | y_<t) ]

Like the paper, training starts from an initialisation with weak pseudo-labels: label 1 where the mentor's
argmax is the target token and the generator's is not; a class-weighted binary cross-entropy (`pos_weight`,
8 as in the reference) fits the head to them, then the marginal likelihood takes over.

The generator stays frozen by default: its hidden states and log-probabilities are computed once, and only
the head (577 parameters for SmolLM2) is trained — seconds on a CPU, and the generator's own behaviour is
unchanged. With `lora=True` the generator is trained jointly through a LoRA adapter, the parameter-efficient
form of the paper's joint fine-tuning of the base model (the reference fine-tunes the full model, and first
wastes a second full fine-tune on its pseudo-labels; neither is done here).

Results are written to `out_dir` with a `.complete` marker holding a digest of the models, data and settings:
the same inputs reuse them (a resumed or repeated run does not train again).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TokenSeq = tuple[list[int], list[int]]  # (prompt ids, target ids) in one model's tokens


@dataclass
class DeferralSettings:
    init_epochs: int = 1  # pseudo-label initialisation passes
    pos_weight: float = 8.0  # BCE weight of the positive (defer) class during initialisation
    epochs: int = 2  # marginal-likelihood passes (reference: 2)
    min_steps: int = 200  # at least this many head updates per phase (small dev sets give few per pass)
    learning_rate: float = 1e-3  # head learning rate
    batch_tokens: int = 256  # target tokens per head update (frozen generator)
    lora: bool = False  # also train the generator through a LoRA adapter
    lora_r: int = 8
    lora_alpha: int = 16
    lora_learning_rate: float = 2e-4
    batch_sequences: int = 4  # sequences per update when the generator is trained
    max_length: int = 2048  # prompt + target tokens kept (the end of the prompt is cut first)
    seed: int = 0


@dataclass
class DeferralResult:
    out_dir: Path
    head_path: Path
    adapter_dir: Path | None
    digest: str
    log: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


class DeferralHead:
    """z = w·h + b on the generator's last hidden state; σ(z) is the probability of deferring."""

    def __init__(self, hidden_size: int):
        import torch

        self.linear = torch.nn.Linear(hidden_size, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.fill_(-2.0)  # start by rarely deferring

    def logit(self, hidden):
        return self.linear(hidden.float()).squeeze(-1)

    def p_defer(self, hidden) -> float:
        import torch

        with torch.no_grad():
            return float(torch.sigmoid(self.logit(hidden)))

    def save(self, path: Path) -> None:
        import torch

        torch.save({"weight": self.linear.weight.detach().cpu(), "bias": self.linear.bias.detach().cpu()}, path)

    @classmethod
    def load(cls, path: Path) -> "DeferralHead":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        head = cls(state["weight"].shape[1])
        with torch.no_grad():
            head.linear.weight.copy_(state["weight"])
            head.linear.bias.copy_(state["bias"])
        return head


def marginal_nll(z, lp_gen, lp_mentor):
    """−log[σ(−z)·p_gen + σ(z)·p_mentor] per token, computed in log space."""
    import torch
    import torch.nn.functional as F

    return -torch.logaddexp(F.logsigmoid(-z) + lp_gen, F.logsigmoid(z) + lp_mentor)


def _clip(seq: TokenSeq, max_length: int) -> TokenSeq:
    prompt, target = seq
    target = target[:max_length - 1]
    keep = max(1, max_length - len(target))
    return prompt[-keep:], target


def right_padded(seqs: list[list[int]]):
    """Token ids and attention mask of right-padded sequences (pad id 0: masked, never predicted from)."""
    import torch

    width = max(map(len, seqs))
    x = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, f in enumerate(seqs):
        x[i, :len(f)] = torch.tensor(f)
        mask[i, :len(f)] = 1
    return x, mask


def token_stats(model, seqs: list[TokenSeq], *, hidden: bool, batch_size: int = 4) -> list[dict[str, Any]]:
    """Per sequence: log p(target token), whether it is the argmax, and (optionally) the hidden state that
    predicts it — one no-grad forward pass per batch of right-padded sequences."""
    import torch

    out: list[dict[str, Any]] = []
    dev = model.device
    with torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s:s + batch_size]
            x, mask = right_padded([p + t for p, t in chunk])
            res = model(input_ids=x.to(dev), attention_mask=mask.to(dev), output_hidden_states=hidden)
            logp = torch.log_softmax(res.logits.float(), -1)
            for i, (p, t) in enumerate(chunk):
                idx = torch.arange(len(p) - 1, len(p) + len(t) - 1, device=dev)
                tgt = torch.tensor(t, device=dev)
                rows = logp[i, idx]
                item = {"lp": rows.gather(1, tgt[:, None])[:, 0].cpu(), "top": (rows.argmax(-1) == tgt).cpu()}
                if hidden:
                    item["hidden"] = res.hidden_states[-1][i, idx].float().cpu()
                out.append(item)
    return out


def _batches(n: int, epochs: int, size: int, min_steps: int, rng):
    """Shuffled index batches: `epochs` passes, extended to at least `min_steps` batches (none if epochs == 0)."""
    import torch

    if epochs <= 0:
        return
    per_epoch = max(1, math.ceil(n / size))
    passes = max(epochs, math.ceil(min_steps / per_epoch))
    for _ in range(passes):
        yield from torch.randperm(n, generator=rng).split(size)


def digest_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def train_deferral_head(generator: Any, mentor: Any, gen_seqs: list[TokenSeq], mentor_seqs: list[TokenSeq],
                        out_dir: str | Path, settings: DeferralSettings | None = None, *,
                        identity: dict[str, Any] | None = None, generator_dir: str | None = None,
                        device: str = "cpu", dtype: str = "float32") -> DeferralResult:
    """Train the deferral head for (generator, mentor) — loaded models, used without gradients unless
    `settings.lora`, then a trainable copy of `generator_dir` gets a LoRA adapter on `device` in `dtype` (the
    run's placement of the generator) — on aligned sequences (same target tokens; prompts may differ)."""
    import torch

    s = settings or DeferralSettings()
    if len(gen_seqs) != len(mentor_seqs) or not gen_seqs:
        raise ValueError("need the same non-empty list of target sequences for both models")
    gen_seqs = [_clip(q, s.max_length) for q in gen_seqs]
    mentor_seqs = [_clip(q, s.max_length) for q in mentor_seqs]
    if any(a[1] != b[1] for a, b in zip(gen_seqs, mentor_seqs)):
        raise ValueError("generator and mentor targets differ: the models must share a tokenizer")
    digest = digest_of({"identity": identity or {}, "gen": gen_seqs, "mentor": mentor_seqs, "settings": asdict(s)})
    out = Path(out_dir)
    marker = out / ".complete"
    if marker.exists() and json.loads(marker.read_text()).get("digest") == digest:
        log: dict[str, Any] = json.loads((out / "training_log.json").read_text())
        adapter = out / "adapter" if (out / "adapter").exists() else None
        return DeferralResult(out, out / "head.pt", adapter, digest, log, reused=True)
    t0 = time.time()
    torch.manual_seed(s.seed)
    g_stats = token_stats(generator, gen_seqs, hidden=True)
    m_stats = token_stats(mentor, mentor_seqs, hidden=False)
    hidden = torch.cat([g["hidden"] for g in g_stats])
    lp_gen = torch.cat([g["lp"] for g in g_stats])
    lp_mentor = torch.cat([m["lp"] for m in m_stats])
    labels = (torch.cat([m["top"] for m in m_stats]) & ~torch.cat([g["top"] for g in g_stats])).float()
    head = DeferralHead(hidden.shape[1])
    log = {"tokens": int(len(lp_gen)), "sequences": len(gen_seqs),
           "pseudo_positive_rate": float(labels.mean()), "init_losses": [], "losses": []}
    gen_rng = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.Adam(head.linear.parameters(), lr=s.learning_rate)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(s.pos_weight))
    n = len(lp_gen)
    for idx in _batches(n, s.init_epochs, s.batch_tokens, s.min_steps, gen_rng):
        loss = bce(head.logit(hidden[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["init_losses"].append(float(loss.detach()))
    adapter_dir = None
    if not s.lora:
        for idx in _batches(n, s.epochs, s.batch_tokens, s.min_steps, gen_rng):
            loss = marginal_nll(head.logit(hidden[idx]), lp_gen[idx], lp_mentor[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            log["losses"].append(float(loss.detach()))
    else:
        if generator_dir is None:
            raise ValueError("lora training needs the generator's model folder")
        adapter_dir = _train_joint(generator_dir, head, gen_seqs, m_stats, s, log, out, device, dtype)
    with torch.no_grad():
        z = head.logit(hidden)
        log["marginal_nll_before"] = float(marginal_nll(torch.full_like(z, -2.0), lp_gen, lp_mentor).mean())
        log["marginal_nll_after_frozen_features"] = float(marginal_nll(z, lp_gen, lp_mentor).mean())
        log["train_defer_rate_at_0.5"] = float((torch.sigmoid(z) > 0.5).float().mean())
    log["seconds"] = time.time() - t0
    tmp = out.with_name(out.name + ".tmp")
    if adapter_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    head.save(tmp / "head.pt")
    (tmp / "training_log.json").write_text(json.dumps(log))
    (tmp / ".complete").write_text(json.dumps({"digest": digest}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return DeferralResult(out, out / "head.pt", out / "adapter" if adapter_dir else None, digest, log)


def _train_joint(generator_dir: str, head: DeferralHead, gen_seqs: list[TokenSeq], m_stats: list[dict],
                 s: DeferralSettings, log: dict, out: Path, device: str = "cpu", dtype: str = "float32") -> Path:
    """Generator (LoRA) and head trained together on the marginal likelihood, on `device`; the mentor's
    log-probs are fixed."""
    import torch

    from moco.training.adapters import load_lora_model

    model = load_lora_model(generator_dir, None, {"r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": 0.0,
                                                  "target_modules": "all-linear"}, device, dtype)
    head.linear.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": params, "lr": s.lora_learning_rate},
                            {"params": list(head.linear.parameters()), "lr": s.learning_rate}])
    rng = torch.Generator().manual_seed(s.seed)
    model.train()
    for _ in range(s.epochs):
        for batch in torch.randperm(len(gen_seqs), generator=rng).split(s.batch_sequences):
            seqs = [gen_seqs[i] for i in batch]
            x, mask = right_padded([p + t for p, t in seqs])
            res = model(input_ids=x.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            logp = torch.log_softmax(res.logits.float(), -1)
            losses = []
            for i, (p, t) in enumerate(seqs):
                idx = torch.arange(len(p) - 1, len(p) + len(t) - 1, device=device)
                lp_g = logp[i, idx].gather(1, torch.tensor(t, device=device)[:, None])[:, 0]
                z = head.logit(res.hidden_states[-1][i, idx])
                losses.append(marginal_nll(z, lp_g, m_stats[int(batch[i])]["lp"].to(device)))
            loss = torch.cat(losses).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            log["losses"].append(float(loss.detach()))
    head.linear.to("cpu")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "adapter")
    return tmp / "adapter"
