"""Generation efficiency on the embedded model: the workload of a 3-model, 1-round multi-agent refine
(or, with --method text_majority_vote, of a 3-model majority vote; with --method logit_logit_fusion, of
logit fusion of the 3 models, see `fusion_workload`).

Prints, measured in one process on the same prompts:
  (a) moco: the refine method run through the runner (pool, batching, cache writes, traces), fresh cache;
  (b) raw limit: one persistent model, transformers `generate`, length-sorted batches of the same size;
  (c) reference strategy: the model reloaded from disk for every generation call (one call per model
      per round, as the reference implementation's `distributed_generation` does), fixed-order batches.
and the ratios a/b (target >= 0.85) and a/c.

    python benchmarks/generation_speed.py [--questions 40] [--max-new-tokens 64] [--temperature 0.7]
                                          [--method text_multiagent_refine|text_majority_vote]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import OrderedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--method", default="text_multiagent_refine",
                    choices=["text_multiagent_refine", "text_majority_vote", "logit_logit_fusion"])
    args = ap.parse_args()

    import torch
    torch.set_num_threads(min(os.cpu_count() or 1, 2) if os.cpu_count() and os.cpu_count() <= 2 else torch.get_num_threads())
    from moco.cache import NullCache
    from moco.gateway import Gateway
    from moco.demo import EXPERTS
    from moco.models import builtin
    from moco.models.hf import HFBackend
    from moco.models.pool import ModelPool
    from moco.config import parse_config
    from moco.runner import run_experiment

    folder = builtin.ensure_converted("smollm2-135m-instruct")
    cfg = parse_config({
        "method": args.method,
        "task": {"name": "moco_demo", "test_limit": args.questions},
        "models": [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in EXPERTS],
        "params": {"rounds": 1, "summarizer": 0} if args.method == "text_multiagent_refine" else {},
        "decoding": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": 0.9},
        "hardware": {"batch_size": args.batch_size},
    })
    # load once before timing (a persistent pool is the point; loading is not generation)
    ModelPool(cfg.models, cfg.hardware).backend(0)
    if args.method == "logit_logit_fusion":
        return fusion_workload(cfg, args)

    # ---------------------------------------------------------------- (a) moco, recording every call
    calls_log: list[tuple[str, str, object]] = []  # (tag, model name, GenRequest)
    real_generate = Gateway.generate  # every model call of the run goes through it

    def recording(self, calls, default, tag=""):
        for c in calls:
            h = self.pool.handle(c.model)
            calls_log.append((tag, h.name, self.request(h, c, default)[1]))
        return real_generate(self, calls, default, tag)

    Gateway.generate = recording
    t0 = time.perf_counter()
    res = run_experiment(cfg, out=None, cache=NullCache(), runs_root=_tmp_root())
    t_a = time.perf_counter() - t0
    Gateway.generate = real_generate
    tok_a = res.metrics["total"]["generated_tokens"]
    n_calls = len(calls_log)

    backend: HFBackend = ModelPool(cfg.models, cfg.hardware).backend(0)  # resident
    tok = backend.tokenizer
    eos = backend.eos_ids

    encoded = [backend.encode(req) for _, _, req in calls_log]

    # ---------------------------------------------------------------- (b) raw limit: persistent model, ideal batches
    groups: "OrderedDict[str, list[int]]" = OrderedDict()  # the same dependency order: round by round
    for i, (tag, _name, _req) in enumerate(calls_log):
        groups.setdefault(tag, []).append(i)
    t0 = time.perf_counter()
    tok_b = 0
    for idx in groups.values():
        order = sorted(idx, key=lambda i: -len(encoded[i]))
        tok_b += raw_generate(backend.model, [encoded[i] for i in order], args.batch_size, args.max_new_tokens,
                              args.temperature, tok.pad_token_id, eos)
    t_b = time.perf_counter() - t0

    # ---------------------------------------------------------------- (c) reference: reload per call
    # as the reference's distributed_generation: a new process per call that loads the model, generates
    # fixed-order batches, and exits (its multiprocessing.Pool uses the spawn start method)
    import multiprocessing as mp

    per_call: "OrderedDict[tuple[str, str], list[int]]" = OrderedDict()
    for i, (tag, name, _req) in enumerate(calls_log):
        per_call.setdefault((tag, name), []).append(i)
    ctx = mp.get_context("spawn")
    job = dict(folder=str(folder), batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
               temperature=args.temperature, eos=sorted(eos), pad=tok.pad_token_id)
    t0 = time.perf_counter()
    tok_c = 0
    for idx in per_call.values():
        pool = ctx.Pool(1)
        tok_c += pool.apply(_reference_call, (job, [encoded[i] for i in idx]))
        pool.close()
        pool.join()
    t_c = time.perf_counter() - t0

    a, b, c = tok_a / t_a, tok_b / t_b, tok_c / t_c
    shape = "refine 1 round + summary" if args.method == "text_multiagent_refine" else "majority vote"
    print(f"workload: 3 pseudo-experts of smollm2-135m-instruct, {args.questions} questions, {shape} "
          f"= {n_calls} generations, max {args.max_new_tokens} new tokens, temperature {args.temperature}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"(a) moco runner           : {tok_a:6d} tokens in {t_a:7.1f} s = {a:6.1f} tok/s")
    print(f"(b) raw limit (generate)  : {tok_b:6d} tokens in {t_b:7.1f} s = {b:6.1f} tok/s")
    print(f"(c) reload per call (ref) : {tok_c:6d} tokens in {t_c:7.1f} s = {c:6.1f} tok/s  "
          f"({len(per_call)} calls, each a new process loading the model)")
    print(f"ratio a/b = {a / b:.2f}  (target >= 0.85)")
    print(f"ratio a/c = {a / c:.2f}  (moco vs reload-per-call)")


def fusion_workload(cfg, args) -> None:
    """Logit fusion needs every member's forward pass for every token, so its raw limit is the members'
    own decoding speeds combined: with t_i seconds per token for member i decoding its prompts alone (one
    persistent model, transformers `generate`, length-sorted batches of the same size), an ideal fusion
    spends sum(t_i) per token. Prints (a) fused tokens/s through the runner and (b) that limit."""
    import time

    import torch

    from moco.cache import NullCache
    from moco.models.base import GenRequest
    from moco.models.pool import ModelPool
    from moco.runner import run_experiment
    from moco.tasks.registry import load_task

    pool = ModelPool(cfg.models, cfg.hardware)
    backend = pool.backend(0)
    t0 = time.perf_counter()
    res = run_experiment(cfg, out=None, cache=NullCache(), runs_root=_tmp_root())
    t_a = time.perf_counter() - t0
    tok_a = res.metrics["total"]["generated_tokens"]

    tok = backend.tokenizer
    eos = sorted(backend.eos_ids)
    test = load_task(cfg.task).test
    per_token = []
    for h in pool.handles:
        msgs = ((("system", h.role_prompt),) if h.role_prompt else ()) + (("user", "{q}"),)
        prompts = [backend.encode(GenRequest(tuple((r, c.format(q=ex.prompt)) for r, c in msgs))) for ex in test]
        prompts.sort(key=len, reverse=True)
        t0 = time.perf_counter()
        n = raw_generate(backend.model, prompts, args.batch_size, args.max_new_tokens, args.temperature,
                         tok.pad_token_id, eos)
        per_token.append((time.perf_counter() - t0) / max(n, 1))
    a, b = tok_a / t_a, 1.0 / sum(per_token)
    print(f"workload: logit fusion of 3 pseudo-experts of smollm2-135m-instruct, {len(test)} questions, max "
          f"{args.max_new_tokens} new tokens, temperature {args.temperature}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"(a) moco fusion runner    : {tok_a:6d} tokens in {t_a:7.1f} s = {a:6.1f} tok/s")
    print("(b) raw limit             : members alone with generate: "
          + ", ".join(f"{1 / t:.1f}" for t in per_token) + f" tok/s -> fused {b:6.1f} tok/s")
    print(f"ratio a/b = {a / b:.2f}  (target >= 0.85)")


def raw_generate(model, prompts: list[list[int]], batch_size: int, max_new_tokens: int, temperature: float,
                 pad: int, eos) -> int:
    """transformers `generate` over `prompts` in order, `batch_size` left-padded rows at a time: the baseline
    decoding every raw-limit and reference figure is measured with. Returns the tokens generated, each row
    counted up to and including its first EOS."""
    import torch

    eos = sorted(eos)
    kw = dict(do_sample=True, temperature=temperature, top_p=0.9) if temperature > 0 else dict(do_sample=False)
    total = 0
    for s in range(0, len(prompts), batch_size):
        batch = prompts[s:s + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])
        am = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=eos, **kw)
        for row in out[:, width:].tolist():
            total += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
    return total


def _reference_call(job: dict, prompts: list[list[int]]) -> int:
    """One reference-style generation call in a fresh process: load, generate in given order, exit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(job["folder"], dtype=torch.float32).eval()
    AutoTokenizer.from_pretrained(job["folder"])
    return raw_generate(model, prompts, job["batch_size"], job["max_new_tokens"], job["temperature"], job["pad"],
                        job["eos"])


def _tmp_root():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="moco-bench-"))


if __name__ == "__main__":
    sys.exit(main())
