"""How much a sweep saves by sharing model outputs between its cells, measured, not estimated.

Runs a sweep into a temporary directory with an empty response cache, then runs every finished cell again
ALONE, each with its own empty response cache, and prints:
  (a) tokens the sweep decoded (cache misses over all cells),
  (b) tokens the cells decoded when each ran alone (their sum),
  (c) the ratios a/b of tokens and wall time, each cell's figures, and the figure `moco compare` predicts
      for b from the call records (exact with scripted models; within a few percent with real sampled
      models, whose floats round differently in other batches).
By default the sweep runs its cells together (lockstep, their calls merged into shared batches): a cell's
"sweep s" then includes the time the other cells ran, and only the total compares with the cells alone.

Two ways to run "alone":
  in this process (default): the sweep and then each cell through the Python API, each cell with empty prefix
      (KV) stores; the weights stay loaded, so the cells alone pay no start-up or model loading;
  --as-processes: what a user types, timed end to end: `moco compare SWEEP --no-report` once, then
      `moco run CELL/config.yaml` for every cell, each a process of its own (Python start, imports, model
      loading included on both sides).

    python benchmarks/sweep_sharing.py [SWEEP.yaml] [--alone N] [--test-limit N] [--parallel-cells N] [--as-processes]
    # default SWEEP: examples/sweeps/scripted_quick.yaml

With the embedded-model sweeps this costs the sweep plus every cell again: use --alone N to re-run only the
first N cells (the printed sum then covers those cells).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


Row = tuple[str, float, int, float, int]  # cell, seconds in the sweep, tokens there, seconds alone, tokens alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", nargs="?", default=str(Path(__file__).resolve().parent.parent / "examples" / "sweeps"
                                                    / "scripted_quick.yaml"))
    ap.add_argument("--alone", type=int, default=None, help="re-run only the first N cells alone")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--test-limit", type=int, default=None, help="override every task's test_limit")
    ap.add_argument("--parallel-cells", type=int, default=None,
                    help="override the sweep's parallel_cells (1: cells one by one, no merged batches)")
    ap.add_argument("--as-processes", action="store_true",
                    help="time `moco compare` and one `moco run` per cell as processes of their own")
    args = ap.parse_args()

    from moco.analysis import load_sweep
    from moco.analysis.sharing import distinct, read_calls

    sweep = load_sweep(args.sweep)
    if args.test_limit is not None:
        for t in sweep.tasks:
            t.test_limit = args.test_limit
    if args.parallel_cells is not None:
        sweep.parallel_cells = args.parallel_cells
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = _as_processes if args.as_processes else _in_process
        t_sweep, decoded_sweep, cells, n_states, t_alone, rows = run(sweep, root, args)
        predicted = sum(sum(v[1] for v in distinct(read_calls(c)).values()) for c in cells)
    alone = sum(r[4] for r in rows)
    print(f"{'cell':44s} {'sweep s':>8s} {'tokens':>7s} {'alone s':>8s} {'tokens':>7s}")
    for name, s_sweep, tok_sweep, s_alone, tok_alone in rows:
        print(f"{name[:44]:44s} {s_sweep:8.1f} {tok_sweep:7d} {s_alone:8.1f} {tok_alone:7d}")
    how = "each `moco run` a process of its own" if args.as_processes else "in this process, weights loaded"
    print(f"sweep {sweep.name}: {n_states} cells, {len(cells)} finished and run alone ({how})")
    print(f"(a) sweep, shared cache     : {decoded_sweep:8d} tokens decoded in {t_sweep:7.1f} s")
    print(f"(b) {len(rows):3d} cells run alone   : {alone:8d} tokens decoded in {t_alone:7.1f} s")
    gap = abs(predicted - alone) / max(alone, 1)
    # exact with scripted models; real models sampled in other batch neighbourhoods round floats differently,
    # so an alone run may write a few other tokens
    print(f"    predicted from calls    : {predicted:8d} tokens "
          f"({'agrees' if predicted == alone else f'differs by {100 * gap:.1f}%'})")
    if args.alone is None and alone:
        print(f"ratio a/b = {decoded_sweep / alone:.3f} tokens, {t_sweep / t_alone:.3f} wall time (target <= 0.6)")
    sys.exit(0 if gap <= 0.05 else 1)


def _in_process(sweep, root: Path, args) -> tuple[float, int, list[Path], int, float, list[Row]]:
    """The sweep and then each finished cell through the Python API in this process."""
    from moco.analysis import run_sweep
    from moco.analysis.sweep import cell_backends
    from moco.cache import ResponseCache
    from moco.models.prefix_cache import clear_all
    from moco.runner import run_experiment

    cache = ResponseCache(root / "sweep.sqlite")
    t0 = time.time()
    res = run_sweep(sweep, root / "sweep", data_dir=args.data_dir, cache=cache)
    t_sweep = time.time() - t0
    cache.close()
    done = [s for s in res.states if s.status == "finished"][: args.alone]
    rows: list[Row] = []
    cells = []
    t0 = time.time()
    for i, st in enumerate(done):
        c = ResponseCache(root / f"alone{i}.sqlite")
        clear_all()  # as in its own process: no KV from the sweep or the cells before (weights stay loaded)
        t1 = time.time()
        m = run_experiment(st.cell.config, root / f"alone{i}", data_dir=args.data_dir, cache=c,
                           backends=cell_backends(st.cell, args.data_dir)).metrics
        c.close()
        cells.append(root / "sweep" / "cells" / st.cell.dir_name)
        rows.append((st.cell.dir_name, st.seconds or 0.0, _generated(cells[-1]), time.time() - t1,
                     m["total"]["generated_tokens"]))
    return t_sweep, res.sharing["generated_tokens_measured"], cells, len(res.states), time.time() - t0, rows


def _as_processes(sweep, root: Path, args) -> tuple[float, int, list[Path], int, float, list[Row]]:
    """`moco compare` once and `moco run` per finished cell, each a new process with an empty response cache."""
    from moco.analysis.sweep import sweep_dump

    adv = sweep.analyses.adversarial
    if adv is not None and adv.kind == "liar":
        raise SystemExit("--as-processes: the scripted liar lives in memory; its cells cannot run by `moco run`")
    (root / "sweep.yaml").write_text(sweep_dump(sweep))
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    t_sweep = _moco(["compare", str(root / "sweep.yaml"), "--out", str(root / "sweep"), "--no-report", *data],
                    root / "sweep.sqlite")
    index = json.loads((root / "sweep" / "index.json").read_text())
    done = [c for c in index["cells"] if c["status"] == "finished"][: args.alone]
    rows: list[Row] = []
    cells = []
    t_alone = 0.0
    for i, c in enumerate(done):
        cell = root / "sweep" / c["dir"]
        dt = _moco(["run", str(cell / "config.yaml"), "--out", str(root / f"alone{i}"), *data],
                   root / f"alone{i}.sqlite")
        t_alone += dt
        cells.append(cell)
        rows.append((cell.name, float(c.get("seconds", 0.0)), _generated(cell), dt, _generated(root / f"alone{i}")))
    return t_sweep, index["sharing"]["generated_tokens_measured"], cells, len(index["cells"]), t_alone, rows


def _moco(argv: list[str], response_cache: Path) -> float:
    """Wall time of one `moco` command in a new process, with its own response cache."""
    env = {**os.environ, "MOCO_RESPONSE_CACHE": str(response_cache)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "moco", *argv, "--no-progress"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"moco {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.time() - t0


def _generated(run_dir: Path) -> int:
    return int(json.loads((run_dir / "metrics.json").read_text())["total"]["generated_tokens"])


if __name__ == "__main__":
    main()
