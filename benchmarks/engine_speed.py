"""Engines side by side: MoCo's in-process backend vs a managed vLLM vs a managed llama.cpp server, on the
workloads of `generation_speed.py` (3 pseudo-experts of the embedded SmolLM2; a majority vote, and a 1-round
refine with its summary), run through `moco`'s runner exactly as a user's `moco run` would.

Prints, per engine and workload, in one run and one process: tokens generated, wall seconds, tokens/s, the
CPU-seconds spent (this process + the engine's whole process tree, measured with psutil over the workload
only), tokens per CPU-second, and the engine's start-up apart (spawn to health check; for in-process: loading
the weights). Then the ratios of each engine to the in-process backend. Nothing is asserted: this machine is
noisy, so compare rows of one run.

    python benchmarks/engine_speed.py [--engines none,vllm,llamacpp] [--workloads vote,refine]
        [--questions 24] [--max-new-tokens 64] [--temperature 0.7]

An engine may carry extra arguments for its command (hardware.engine_args) after `+`:
`--engines none,vllm+--enforce-eager` (vLLM without torch.compile: a faster start-up); and a GGUF file other
than the one the embedded model ships (Q4_1) after `=`: `llamacpp=/m/smollm2-135m-instruct-f32.gguf` (made from
the same weights with llama.cpp's convert_hf_to_gguf.py, see docs/engines.md).

vLLM runs from the interpreter in MOCO_ENGINE_PYTHON (its own venv, docs/engines.md); llama.cpp is
`llama-server` on PATH (or llama-cpp-python's server) serving the GGUF file the embedded model ships.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402

WORKLOADS = {
    "vote": ("text_majority_vote", {}),
    "refine": ("text_multiagent_refine", {"rounds": 1, "summarizer": 0}),
}


@dataclass
class Row:
    engine: str
    workload: str
    tokens: int
    wall_s: float
    cpu_s: float
    startup_s: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def tok_cpu_s(self) -> float:
        return self.tokens / self.cpu_s


def _config(engine: str, workload: str, args: argparse.Namespace):  # -> ExperimentConfig
    from moco.config import parse_config
    from moco.demo import EXPERTS

    method, params = WORKLOADS[workload]
    engine, *extra = engine.split("+")  # "vllm+--enforce-eager": an engine with hardware.engine_args
    engine, _, model = engine.partition("=")  # "llamacpp=/m/smollm2-f32.gguf": another file of the same model
    return parse_config({
        "method": method,
        "task": {"name": "moco_demo", "test_limit": args.questions},
        "models": [{"model": model or "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in EXPERTS],
        "params": params,
        "decoding": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": 0.9},
        "hardware": {"engine": engine, "batch_size": args.batch_size, "engine_args": extra},
    })


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system seconds of this process and the engine's processes (those still alive)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _engine_tree(backend: object) -> list[psutil.Process]:
    """The engine's watchdog and every process under it (vLLM's API server and engine core, llama-server)."""
    server = getattr(backend, "server", None)
    if server is None or server.proc is None:
        return []
    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


def bench_engine(engine: str, args: argparse.Namespace) -> list[Row]:
    from moco.cache import NullCache
    from moco.models.pool import ModelPool, unload_all
    from moco.runner import run_experiment

    first = _config(engine, args.workloads[0], args)
    t0 = time.perf_counter()
    backend = ModelPool(first.models, first.hardware).backend(0)  # starts the engine (or loads the weights)
    startup = time.perf_counter() - t0
    procs = [psutil.Process(), *_engine_tree(backend)]
    rows = []
    try:
        for workload in args.workloads:
            cfg = _config(engine, workload, args)
            cpu0, w0 = _cpu_seconds(procs), time.perf_counter()
            res = run_experiment(cfg, out=None, cache=NullCache(), runs_root=Path(tempfile.mkdtemp()))
            wall, cpu = time.perf_counter() - w0, _cpu_seconds(procs) - cpu0
            rows.append(Row(engine, workload, int(res.metrics["total"]["generated_tokens"]), wall, cpu, startup))
            print(_line(rows[-1]), flush=True)
    finally:
        unload_all()  # stops the engine
    return rows


def _line(r: Row) -> str:
    name = "in-process" if r.engine == "none" else r.engine.replace("+--enforce-eager", " eager")
    if "=" in name:
        name = name.split("=")[0] + " " + name.rsplit("-", 1)[-1].removesuffix(".gguf")
    return (f"{name:11s} {r.workload:7s} {r.tokens:7d} tok {r.wall_s:7.1f} s {r.tok_s:7.1f} tok/s "
            f"{r.cpu_s:8.1f} CPU-s {r.tok_cpu_s:6.2f} tok/CPU-s   start-up {r.startup_s:6.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="none,vllm,llamacpp")
    ap.add_argument("--workloads", default="vote,refine")
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    engines = [e for e in args.engines.split(",") if e]
    print(f"workload: 3 pseudo-experts of smollm2-135m-instruct, {args.questions} questions, max "
          f"{args.max_new_tokens} new tokens, temperature {args.temperature}; {psutil.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    rows = [r for e in engines for r in bench_engine(e, args)]
    print("\nsummary (same run):")
    for r in rows:
        print(_line(r))
    base = {r.workload: r for r in rows if r.engine == "none"}
    for r in rows:
        if r.engine != "none" and r.workload in base:
            b = base[r.workload]
            print(f"{r.engine} / in-process, {r.workload}: tokens/s {r.tok_s / b.tok_s:.2f}x, "
                  f"tokens per CPU-second {r.tok_cpu_s / b.tok_cpu_s:.2f}x, start-up {r.startup_s:.1f} s vs "
                  f"{b.startup_s:.1f} s")


if __name__ == "__main__":
    main()
