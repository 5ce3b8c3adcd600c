"""KV reuse across calls on the embedded model: each method run twice through the runner, once with the
prefix store off (`hardware.prefix_cache_mb: 0`) and once on, with an empty response cache both times.

Prints per method: wall time off/on and their ratio, prompt tokens the model computed vs took from the store,
rows whose prompt repeated another row's in the same batch, and how many predictions are identical (outputs
are seeded per row, so they match unless float rounding flips a sampled token).

    python benchmarks/prefix_reuse.py [--questions 16] [--max-new-tokens 48] [--temperature 0.7] [--methods refine,refine_hist,self_moa,switch]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORKLOADS = {
    # debate: later rounds repeat the system prompt and question of the round before
    "refine": ("text_multiagent_refine", {"rounds": 2}),
    # the paper's debate: each model's conversation grows, so every round extends the one before
    "refine_hist": ("text_multiagent_refine", {"rounds": 2, "context": "history"}),
    # one model samples k answers to the same prompt, then aggregates
    "self_moa": ("text_self_moa", {"samples": 4}),
    # models take turns writing 8-token patches: every call continues the answer so far
    "switch": ("api_switch_generation", {"patch_size": 8, "selector_mode": "random"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--methods", default=",".join(WORKLOADS))
    args = ap.parse_args()

    import torch

    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.demo import EXPERTS
    from moco.models.pool import ModelPool
    from moco.models.prefix_cache import forget
    from moco.runner import run_experiment

    print(f"smollm2-135m-instruct as 3 pseudo-experts, moco_demo x {args.questions}, max {args.max_new_tokens} "
          f"new tokens, temperature {args.temperature}, {torch.get_num_threads()} threads")
    print(f"{'method':10s} {'off s':>7s} {'on s':>7s} {'ratio':>6s} {'computed':>9s} {'reused':>8s} "
          f"{'repeats':>7s} {'same':>6s}")
    for key in args.methods.split(","):
        name, params = WORKLOADS[key]
        cfg = parse_config({
            "method": name, "task": {"name": "moco_demo", "test_limit": args.questions},
            "models": [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in EXPERTS],
            "params": params, "seed": 0,
            "decoding": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": 0.9},
            "hardware": {"batch_size": 16},
        })
        backend = ModelPool(cfg.models, cfg.hardware).backend(0)  # resident, shared by the runs
        budget = backend.prefix_cache_bytes
        runs = {}
        for mode in ("off", "on"):
            forget(backend.model)
            backend.prefix_cache_bytes = 0 if mode == "off" else budget
            before = dict(backend.prefix_stats) if mode == "on" else {}
            t0 = time.perf_counter()
            res = run_experiment(cfg, out=None, cache=NullCache(), runs_root=Path(tempfile.mkdtemp(prefix="moco-bench-")))
            runs[mode] = (time.perf_counter() - t0, [p.get("output") for p in res.predictions],
                          {k: v - before.get(k, 0) for k, v in backend.prefix_stats.items()})
        (t_off, out_off, _), (t_on, out_on, st) = runs["off"], runs["on"]
        same = sum(a == b for a, b in zip(out_off, out_on))
        print(f"{key:10s} {t_off:7.1f} {t_on:7.1f} {t_off / t_on:6.2f} {st['computed_tokens']:9d} "
              f"{st['reused_tokens']:8d} {st['shared_rows']:7d} {same:3d}/{len(out_on):<3d}")
    print("ratio = time off / time on; computed/reused = prompt tokens with the store on")


if __name__ == "__main__":
    sys.exit(main())
