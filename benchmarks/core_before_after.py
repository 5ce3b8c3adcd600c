"""The same benchmarks on two source trees (e.g. before and after a core change), interleaved, in one run.

Why: on a shared machine, two benchmark runs minutes apart differ by more than most code changes do. This runs
each benchmark script of each tree (its own copy, so each tree reads its own config format) as a subprocess
with PYTHONPATH=<tree>/src in the same interpreter, alternating the trees (A B B A A B ...) for `--repeats`
rounds, parses the figures each script prints, and reports per figure the median on each tree and the ratio
after / before (a ratio > 1 is better when the figure is "higher is better", < 1 when "lower is better").

    python benchmarks/core_before_after.py --before /work/wt/before [--after .] [--repeats 3]
        [--cases gen_refine,gen_vote,sweep,remote,serve,tokens] [--threads 1] [--json out.json]

The cases use small sizes; the arguments of each case are in CASES below. One run of one tree took, on 2 cores
shared with other jobs (load average ~8): sweep ~30 s, remote ~25 s, tokens 60-120 s, serve 4-5 minutes,
gen_vote 4-5 minutes, gen_refine over 5 minutes (its reference strategy loads the model 7 times), so choose
`--cases` and `--repeats` for the time you have. A case that fails on either tree is reported with its exit code and stderr tail,
not skipped silently.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NUM = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class Figure:
    """One number a benchmark prints: its label, the regex that captures it, and which direction is better."""

    label: str
    pattern: str
    higher_is_better: bool


@dataclass(frozen=True)
class Case:
    """One benchmark script with its arguments and the figures read from its output."""

    script: str
    args: tuple[str, ...]
    figures: tuple[Figure, ...]
    timeout_s: int = 900


CASES: dict[str, Case] = {
    "gen_refine": Case("generation_speed.py", ("--questions", "8", "--max-new-tokens", "16", "--batch-size", "32"), (
        Figure("moco tok/s", r"\(a\) moco runner .*= *" + NUM + " tok/s", True),
        Figure("raw generate tok/s", r"\(b\) raw limit .*= *" + NUM + " tok/s", True),
        Figure("ratio a/b", r"ratio a/b = " + NUM, True),
    )),
    "gen_vote": Case("generation_speed.py", ("--questions", "8", "--max-new-tokens", "16", "--batch-size", "32",
                                             "--method", "text_majority_vote"), (
        Figure("moco tok/s", r"\(a\) moco runner .*= *" + NUM + " tok/s", True),
        Figure("raw generate tok/s", r"\(b\) raw limit .*= *" + NUM + " tok/s", True),
        Figure("ratio a/b", r"ratio a/b = " + NUM, True),
    )),
    "sweep": Case("sweep_sharing.py", (), (
        Figure("sweep tokens", r"\(a\) sweep, shared cache *: *" + NUM + " tokens", False),
        Figure("alone tokens", r"cells run alone *: *" + NUM + " tokens", False),
        Figure("sharing ratio (tokens)", r"ratio a/b = " + NUM + " tokens", False),
        Figure("sweep wall s", r"\(a\) sweep, shared cache .* in *" + NUM + " s", False),
    )),
    "remote": Case("remote_overlap.py", ("--questions", "16"), (
        Figure("concurrent wall s", r"\(a\) concurrent servers *: .* in *" + NUM + " s", False),
        Figure("one-at-a-time wall s", r"\(b\) one server at a time: .* in *" + NUM + " s", False),
        Figure("ratio b/a", r"ratio b/a = " + NUM, True),
    )),
    "serve": Case("serve_throughput.py", ("--unbatched", "--max-tokens", "16", "--requests-per-client", "2"), (
        Figure("1 client tok/s", r"^ +1 +\d+ +\d+ +[0-9.]+ +[0-9.]+ +" + NUM + "$", True),
        Figure("16 clients tok/s", r"^ +16 +\d+ +\d+ +[0-9.]+ +[0-9.]+ +" + NUM + "$", True),
        Figure("16 vs 1 (req/s)", r"ratio 16 vs 1 clients: " + NUM + "x", True),
        Figure("batched vs max-batch 1", r"ratio batched vs max-batch 1 at 16 clients: " + NUM + "x", True),
    )),
    "tokens": Case("token_level_speed.py", ("--questions", "4", "--max-new-tokens", "16", "--methods", "nudging"), (
        Figure("plain s/token", r"^plain \(kv\) +\d+ +[0-9.]+ +" + NUM, False),
        Figure("nudging+kv s/token", r"^nudging \+kv +\d+ +[0-9.]+ +" + NUM, False),
        Figure("nudging+kv x plain", r"^nudging \+kv .* " + NUM + " x plain", False),
        Figure("nudging -kv / +kv", r"^nudging -kv .*, " + NUM + " x with cache", True),
    )),
}


@dataclass
class Runs:
    """The figures of every repeat of one case on one tree (None where the script did not print it)."""

    values: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


# Pins torch's CPU threads before the script runs (the scripts set 2 themselves; on an oversubscribed machine
# multi-threaded kernels that wait on each other's threads collapse, and they collapse unequally run to run).
BOOT = """import runpy, sys
n = int(sys.argv[1])
if n:
    import torch
    torch.set_num_threads(n)
    torch.set_num_threads = lambda k: None
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_once(tree: Path, case: Case, threads: int) -> tuple[dict[str, float], str | None, float]:
    """Run the tree's copy of the script with the tree's sources first on the path; parse its figures."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if threads:  # also for the processes a script starts (`moco serve`)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", BOOT, str(threads), str(tree / "benchmarks" / case.script),
                               *case.args], env=env, cwd=tree, capture_output=True, text=True,
                              timeout=case.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {}, f"timed out after {case.timeout_s} s", time.perf_counter() - t0
    took = time.perf_counter() - t0
    found: dict[str, float] = {}
    for fig in case.figures:
        m = re.search(fig.pattern, proc.stdout, re.MULTILINE)
        if m:
            found[fig.label] = float(m.group(1))
    error = None
    if proc.returncode != 0 or len(found) < len(case.figures):
        missing = [f.label for f in case.figures if f.label not in found]
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        error = f"exit {proc.returncode}, missing {missing}: {' | '.join(tail)}"
    return found, error, took


def compare(name: str, case: Case, trees: dict[str, Path], repeats: int, threads: int) -> dict[str, Runs]:
    """Alternate the trees (ABBA...) so drift in the machine's load hits both alike."""
    runs = {label: Runs() for label in trees}
    labels = list(trees)
    for r in range(repeats):
        order = labels if r % 2 == 0 else labels[::-1]
        for label in order:
            found, error, took = run_once(trees[label], case, threads)
            runs[label].seconds.append(took)
            for k, v in found.items():
                runs[label].values.setdefault(k, []).append(v)
            if error:
                runs[label].failures.append(error)
            print(f"  [{name} {label} #{r + 1}] {took:.0f} s " + ", ".join(f"{k}={v:g}" for k, v in found.items())
                  + (f"  FAILED: {error}" if error else ""), flush=True)
    return runs


def report(name: str, case: Case, runs: dict[str, Runs]) -> list[dict]:
    """Median per figure on each tree and the ratio after/before; prints one table per case."""
    b, a = runs["before"], runs["after"]
    print(f"\n{name}: benchmarks/{case.script} {' '.join(case.args)}  ({len(b.seconds)} runs per tree, medians)")
    print(f"  {'figure':26s} {'before':>10s} {'after':>10s} {'after/before':>13s}  better")
    rows = []
    for fig in case.figures:
        vb, va = b.values.get(fig.label, []), a.values.get(fig.label, [])
        mb = statistics.median(vb) if vb else None
        ma = statistics.median(va) if va else None
        ratio = ma / mb if mb and ma is not None else None
        better = "higher" if fig.higher_is_better else "lower"
        print(f"  {fig.label:26s} {_fmt(mb):>10s} {_fmt(ma):>10s} {_fmt(ratio):>13s}  {better}"
              f"   (before {vb}, after {va})")
        rows.append({"case": name, "figure": fig.label, "before": vb, "after": va, "median_before": mb,
                     "median_after": ma, "ratio": ratio, "higher_is_better": fig.higher_is_better})
    for label, r in runs.items():
        for f in r.failures:
            print(f"  {label} FAILED: {f}")
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="source tree of the old code (has src/ and benchmarks/)")
    ap.add_argument("--after", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads in every benchmark process, both trees alike (0: the scripts' own)")
    ap.add_argument("--json", default=None, help="also write every figure of every run here")
    args = ap.parse_args()
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    for label, tree in trees.items():
        if not (tree / "src" / "moco").is_dir():
            raise SystemExit(f"--{label}: {tree} has no src/moco")
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    threads = args.threads or "the scripts' own"
    print(f"before: {trees['before']}\nafter:  {trees['after']}\n{os.cpu_count()} cores, {threads} torch threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows: list[dict] = []
    for name in names:
        rows += report(name, CASES[name], compare(name, CASES[name], trees, args.repeats, args.threads))
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
