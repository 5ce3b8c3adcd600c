"""Time per candidate of a weight-space search: in-memory merging vs writing and reloading a checkpoint.

A search loop (greedy soup, Model Swarms, LoraHub, ExPO's α, DARE-TIES weights) evaluates many merged models
on dev. For each of K random candidates (affine combinations of the zoo's specialists), measured in one
process on the same dev prompts:
  (a) moco: the candidate's recipe is written tensor by tensor into one resident model (Workbench), then the
      dev prompts are answered;
  (b) checkpoint per candidate (the reference's strategy, done in-process, which flatters it: no subprocess,
      no mergekit start-up): the same merge into a fresh state dict, `save_pretrained` to disk, a fresh
      `from_pretrained` load, then the same dev prompts.
Both produce the same answers (checked). Prints seconds per candidate with the merge / I/O / generation split
and the ratio b/a.

    moco zoo build --out zoo                       # once: the specialists (LoRA adapters of SmolLM2)
    python benchmarks/merge_search_speed.py [--zoo zoo] [--candidates 4] [--dev 8] [--max-new-tokens 16]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="zoo", help="folder written by `moco zoo build` (adapters)")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--dev", type=int, default=8, help="dev prompts answered per candidate")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--task", default="mmlu_redux")
    args = ap.parse_args()

    import json

    import numpy as np
    import torch

    torch.set_num_threads(2)
    from moco.merging import Linear, LoraAdapter, LoraSource, Source, Workbench
    from moco.models import builtin
    from moco.models.base import GenRequest, SamplingParams
    from moco.models.hf import HFBackend
    from moco.tasks.registry import resolve_task

    zoo = Path(args.zoo)
    if not (zoo / "zoo.json").exists():
        sys.exit(f"no zoo at {zoo}: run `moco zoo build --out {zoo}` first")
    meta = json.loads((zoo / "zoo.json").read_text())
    if meta["merged"]:
        sys.exit("this benchmark reads adapter zoos (built without --merged)")
    base_name = meta["base"]
    base_dir = builtin.ensure_converted(base_name) if builtin.is_embedded(base_name) else Path(base_name)
    base_backend = HFBackend(str(base_dir), fingerprint="base", batch_size=args.dev)
    base = Source("base", "base", base_backend.model.state_dict())
    experts = [LoraSource(s["name"], s["name"], base, LoraAdapter.load(s["path"])) for s in meta["specialists"]]
    rng = np.random.default_rng(0)
    recipes = []
    for _ in range(args.candidates):
        c = rng.dirichlet(np.ones(len(experts)))
        recipes.append(Linear(experts, c.tolist()))
    dev = resolve_task(args.task).loader().dev[: args.dev]
    reqs = [GenRequest((("user", ex.prompt),), SamplingParams(args.max_new_tokens, 0.0)) for ex in dev]
    n_params = sum(p.numel() for p in base_backend.model.parameters())
    print(f"workload: {len(experts)} specialists of {base_name} ({n_params / 1e6:.0f}M parameters, LoRA), "
          f"{args.candidates} candidates, {len(reqs)} dev prompts x {args.max_new_tokens} new tokens (greedy)")

    # ---------------------------------------------------------------- (a) in memory
    t_setup = time.time()
    bench = Workbench(base_backend)
    setup = time.time() - t_setup
    a_merge = a_gen = 0.0
    a_texts = []
    for r in recipes:
        t0 = time.time()
        bench.load(r)
        t1 = time.time()
        a_texts.append([x.text for x in bench.backend.generate(reqs)])
        a_merge += t1 - t0
        a_gen += time.time() - t1

    # ---------------------------------------------------------------- (b) checkpoint per candidate
    b_merge = b_save = b_load = b_gen = 0.0
    b_texts = []
    tmp_root = Path(tempfile.mkdtemp(prefix="moco-bench-"))
    try:
        for i, r in enumerate(recipes):
            out = tmp_root / f"cand{i}"
            t0 = time.time()
            state = {name: r.tensor(name) for name, _ in base_backend.model.named_parameters()}
            t1 = time.time()
            model = bench.backend.model  # any module of the architecture: load the state, save it
            model.load_state_dict(state, strict=False)
            del state
            model.save_pretrained(out)
            base_backend.tokenizer.save_pretrained(out)
            t2 = time.time()
            fresh = HFBackend(str(out), fingerprint=f"cand{i}", batch_size=args.dev)
            t3 = time.time()
            b_texts.append([x.text for x in fresh.generate(reqs)])
            t4 = time.time()
            fresh.close()
            shutil.rmtree(out)
            b_merge += t1 - t0
            b_save += t2 - t1
            b_load += t3 - t2
            b_gen += t4 - t3
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    k = len(recipes)
    a_total = (a_merge + a_gen) / k
    b_total = (b_merge + b_save + b_load + b_gen) / k
    same = "identical" if a_texts == b_texts else "DIFFERENT"
    print(f"(a) in memory (workbench)  : {a_total:6.2f} s/candidate = merge {a_merge / k:5.2f} + generate {a_gen / k:5.2f}"
          f"   (one-time copy of the model: {setup:.2f} s)")
    print(f"(b) checkpoint + reload    : {b_total:6.2f} s/candidate = merge {b_merge / k:5.2f} + save {b_save / k:5.2f}"
          f" + load {b_load / k:5.2f} + generate {b_gen / k:5.2f}")
    print(f"ratio b/a = {b_total / a_total:.2f}  (answers of the two paths: {same})")
    print(f"disk written by (b): {k} checkpoints x {sum(p.numel() * p.element_size() for p in base_backend.model.parameters()) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
