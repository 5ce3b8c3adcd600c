"""Data-parallel Ray workers on the embedded model: the same generation with 2 actors vs 1, and Ray's cost per call.

Starts a local Ray with `--actors` CPUs and measures, on the same prompts (moco_demo questions, greedy, so
every configuration must produce the same texts), every decoder using `--threads` threads:
  (a) in process: one HFBackend (no Ray),
  (b) Ray, 1 actor,
  (c) Ray, `--actors` actors (rows dealt round-robin, decoded concurrently),
and prints tokens/s, the ratios c/b (what more workers add; ideal: the number of actors when each has free
cores) and b/a (what going through Ray costs), plus the overhead of one tiny call (1 row, 1 new token)
through Ray vs in process, and of a bare round trip to the actors (no model work), in milliseconds.

    python benchmarks/ray_scaling.py [--questions 32] [--max-new-tokens 32] [--actors 2] [--threads 1] [--calls 20]

Each decoder gets the same threads, so c/b measures data parallelism only. On a machine shared with other
jobs the actors compete for cores: the load average is printed, compare runs with similar load. On a
cluster each actor gets its own GPU or node and the ratio approaches the number of actors.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads of every decoder (in process and per actor)")
    ap.add_argument("--calls", type=int, default=20, help="tiny calls for the per-call overhead")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import torch

    from moco.config import HardwareSettings, ModelSpec, RaySettings, TaskSettings
    from moco.models.base import GenRequest, SamplingParams
    from moco.models.pool import ModelPool, unload_all
    from moco.models.ray_backend import connect
    from moco.tasks.registry import load_task

    print(f"load average before: {os.getloadavg()[0]:.1f}")
    task = load_task(TaskSettings(name="moco_demo", test_limit=args.questions))
    greedy = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    reqs = [GenRequest((("user", ex.prompt),), greedy, seed=i) for i, ex in enumerate(task.test)]
    tiny = [GenRequest((("user", "Say yes."),), SamplingParams(max_new_tokens=1, temperature=0.0), seed=0)]
    spec = [ModelSpec(model="smollm2-135m-instruct")]
    def measure(hw: HardwareSettings) -> tuple[float, int, list[str], float]:
        backend = ModelPool(spec, hw.model_copy(update={"batch_size": args.batch_size})).backend(0)  # loaded (and warmed) before timing
        run(backend, tiny)
        t0 = time.perf_counter()
        out = run(backend, reqs)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.calls):
            run(backend, tiny)
        per_call = (time.perf_counter() - t0) / args.calls
        if hasattr(backend, "actors"):  # Ray's own cost: a round trip to every actor with no model work
            t0 = time.perf_counter()
            for _ in range(args.calls):
                backend.info()
            trips.append((time.perf_counter() - t0) / args.calls)
        return wall, sum(r.tokens_out for r in out), [r.text for r in out], per_call

    trips: list[float] = []

    torch.set_num_threads(args.threads)
    a = measure(HardwareSettings())
    unload_all()  # free the in-process copy before the actors start
    connect(None, num_cpus=args.actors * args.threads)
    b = measure(HardwareSettings(ray=RaySettings(replicas=1, num_cpus=args.threads)))
    c = measure(HardwareSettings(ray=RaySettings(replicas=args.actors, num_cpus=args.threads)))  # evicts (b)
    unload_all()

    print(f"workload: smollm2-135m-instruct, {len(reqs)} moco_demo questions, greedy, max {args.max_new_tokens} "
          f"new tokens, batch {args.batch_size}, {args.threads} thread(s) per decoder, local Ray")
    for label, (wall, toks, _t, per_call) in (("(a) in process, 1 backend  ", a),
                                              ("(b) Ray, 1 actor           ", b),
                                              (f"(c) Ray, {args.actors} actors          ", c)):
        print(f"{label}: {toks:6d} tokens in {wall:6.1f} s = {toks / wall:6.1f} tok/s; tiny call {per_call * 1e3:6.1f} ms")
    tps = [x[1] / x[0] for x in (a, b, c)]
    print(f"ratio c/b = {tps[2] / tps[1]:.2f}  ({args.actors} actors vs 1)")
    print(f"ratio b/a = {tps[1] / tps[0]:.2f}  (1 Ray actor vs in process)")
    print(f"Ray overhead per call: {(b[3] - a[3]) * 1e3:.1f} ms (1 actor), {(c[3] - a[3]) * 1e3:.1f} ms "
          f"({args.actors} actors)")
    print(f"Ray round trip with no model work: {trips[0] * 1e3:.1f} ms (1 actor), {trips[1] * 1e3:.1f} ms "
          f"({args.actors} actors in parallel)")
    print(f"same texts in all three: {a[2] == b[2] == c[2]}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    import ray

    ray.shutdown()


def run(backend, reqs):
    """Every request through the backend's own batch plan; results in request order."""
    out = [None] * len(reqs)
    for batch in backend.plan_batches(reqs):
        for i, r in zip(batch, backend.generate([reqs[i] for i in batch])):
            out[i] = r
    return out


if __name__ == "__main__":
    sys.exit(main())
