"""Token-level API methods vs plain generation of the same length, on the embedded SmolLM2 pseudo-experts.

For each method, on the same moco_demo questions (greedy, max N new tokens), in one process:
  plain      : HFBackend.generate (our batched KV-cache decoding loop), one model alone;
  method+kv  : the method's decoding with a KV cache per model (what the methods run);
  method-kv  : the same decoding recomputing every sequence at every step (kv_cache=False), the
               reference implementation's strategy for Co-LLM and MentorCollab;
and prints seconds per output token and the ratios (method+kv / plain: the price of collaborating;
method-kv / method+kv: what the cache saves). Switch generation has no token loop of its own: each patch is
a `ctx.generate` call continuing the assistant prefix, so it is compared with plain generation through the
runner. Models are loaded before timing.

    python benchmarks/token_level_speed.py [--questions 8] [--max-new-tokens 32] [--methods nudging,collm,...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE = "Continue the text."
EXPERT = "You are an expert in geography, history, science and arithmetic. Answer carefully and briefly."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--methods", default="nudging,collm,mentor_collab,switch_generation")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from moco.methods.api.collm import decode_collm
    from moco.methods.api.mentor_collab import decode_mentor_collab
    from moco.methods.api.nudging import decode_nudging
    from moco.models import builtin
    from moco.models.base import GenRequest, SamplingParams
    from moco.models.hf import HFBackend
    from moco.tasks.registry import resolve_task
    from moco.training.deferral import DeferralHead

    folder = builtin.ensure_converted("smollm2-135m-instruct")
    backend = HFBackend(str(folder), fingerprint="bench", batch_size=args.questions)
    task = resolve_task("moco_demo", None).loader()
    questions = [ex.prompt for ex in task.test[: args.questions]]
    sp = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    base_reqs = [GenRequest((("system", BASE), ("user", q)), sp) for q in questions]
    expert_reqs = [GenRequest((("system", EXPERT), ("user", q)), sp) for q in questions]
    backend.generate(base_reqs[:1])  # warm up

    t0 = time.perf_counter()
    plain = backend.generate(base_reqs)
    t_plain = time.perf_counter() - t0
    tok_plain = sum(r.tokens_out for r in plain)
    per_plain = t_plain / tok_plain
    print(f"{args.questions} questions of moco_demo, greedy, max {args.max_new_tokens} new tokens, "
          f"SmolLM2-135M pseudo-experts, {torch.get_num_threads()} threads")
    print(f"{'':16s} {'tokens':>7s} {'seconds':>8s} {'s/token':>8s}  ratio")
    print(f"{'plain (kv)':16s} {tok_plain:7d} {t_plain:8.2f} {per_plain:8.4f}  1.00")

    head = DeferralHead(backend.model.config.hidden_size)
    with torch.no_grad():  # a fixed random head that defers on roughly half of the tokens
        g = torch.Generator().manual_seed(0)
        head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=g) * 0.05)
        head.linear.bias.zero_()
    runs = {
        "nudging": lambda kv: decode_nudging(backend, backend, base_reqs, expert_reqs, gamma=0.4, sampling=sp,
                                             kv_cache=kv),
        "collm": lambda kv: decode_collm(backend, backend, head, base_reqs, expert_reqs, sampling=sp,
                                         threshold=0.5, kv_cache=kv),
        "mentor_collab": lambda kv: decode_mentor_collab(backend, backend, base_reqs, expert_reqs, sampling=sp,
                                                         proportion=0.25, patch=16, kv_cache=kv),
    }
    for name in args.methods.split(","):
        if name == "switch_generation":
            _switch(args, per_plain)
            continue
        timings = {}
        for kv in (True, False):
            t0 = time.perf_counter()
            outs = runs[name](kv)
            timings[kv] = (time.perf_counter() - t0, sum(o.trace["tokens"] if "tokens" in o.trace
                                                         else o.trace["base_tokens"] for o in outs), outs)
        (t_kv, n_kv, outs_kv), (t_no, n_no, outs_no) = timings[True], timings[False]
        same = sum(a.text == b.text for a, b in zip(outs_kv, outs_no))
        print(f"{name + ' +kv':16s} {n_kv:7d} {t_kv:8.2f} {t_kv / n_kv:8.4f}  {t_kv / n_kv / per_plain:.2f} x plain")
        print(f"{name + ' -kv':16s} {n_no:7d} {t_no:8.2f} {t_no / n_no:8.4f}  {t_no / n_no / per_plain:.2f} x plain, "
              f"{(t_no / n_no) / (t_kv / n_kv):.2f} x with cache ({same}/{len(outs_kv)} identical outputs)")


def _switch(args, per_plain: float) -> None:
    """Switch generation (random selector: no training) and single_model through the runner, no response cache."""
    import tempfile
    from pathlib import Path

    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.runner import run_experiment

    def run(method: str, params: dict) -> tuple[float, int]:
        cfg = parse_config({
            "method": method, "task": {"name": "moco_demo", "test_limit": args.questions},
            "models": [{"model": "smollm2-135m-instruct", "name": "base", "role_prompt": BASE},
                       {"model": "smollm2-135m-instruct", "name": "expert", "role_prompt": EXPERT}],
            "params": params, "decoding": {"max_new_tokens": args.max_new_tokens, "temperature": 0.0},
        })
        res = run_experiment(cfg, cache=NullCache(), runs_root=Path(tempfile.mkdtemp(prefix="moco-bench-")))
        test = res.metrics["phases"]["test"]
        return test["wall_s"], test["tokens_out"]

    t_s, n_s = run("api_switch_generation", {"selector_mode": "random", "patch_size": 8})
    t_p, n_p = run("single_model", {"model": 0})
    print(f"{'single (runner)':16s} {n_p:7d} {t_p:8.2f} {t_p / n_p:8.4f}  {t_p / n_p / per_plain:.2f} x plain")
    print(f"{'switch patch=8':16s} {n_s:7d} {t_s:8.2f} {t_s / n_s:8.4f}  {t_s / n_s / per_plain:.2f} x plain, "
          f"{(t_s / n_s) / (t_p / n_p):.2f} x single model through the runner")


if __name__ == "__main__":
    sys.exit(main())
