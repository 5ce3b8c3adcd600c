"""How much a sweep saves by sharing model outputs between its cells, measured, not estimated.

Runs a sweep into a temporary directory with an empty response cache, then runs every finished cell again
ALONE, each with its own empty response cache and empty prefix (KV) stores, as in a process of its own (the
weights stay loaded, which favours the cells alone), and prints:
  (a) tokens the sweep decoded (cache misses over all cells),
  (b) tokens the cells decoded when each ran alone (their sum),
  (c) the ratios a/b of tokens and wall time, each cell's figures, and the figure `moco compare` predicts
      for b from the call records (exact with scripted models; within a few percent with real sampled
      models, whose floats round differently in other batches).
By default the sweep runs its cells together (lockstep, their calls merged into shared batches): a cell's
"sweep s" then includes the time the other cells ran, and only the total compares with the cells alone.

    python benchmarks/sweep_sharing.py [SWEEP.yaml] [--alone N] [--test-limit N] [--parallel-cells N]   # default: examples/sweeps/scripted_quick.yaml

With the embedded-model sweeps this costs the sweep plus every cell again: use --alone N to re-run only the
first N cells (the printed sum then covers those cells).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", nargs="?", default=str(Path(__file__).resolve().parent.parent / "examples" / "sweeps"
                                                    / "scripted_quick.yaml"))
    ap.add_argument("--alone", type=int, default=None, help="re-run only the first N cells alone")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--test-limit", type=int, default=None, help="override every task's test_limit")
    ap.add_argument("--parallel-cells", type=int, default=None,
                    help="override the sweep's parallel_cells (1: cells one by one, no merged batches)")
    args = ap.parse_args()

    from moco.analysis import load_sweep, run_sweep
    from moco.analysis.sharing import distinct, read_calls
    from moco.analysis.sweep import cell_backends
    from moco.cache import ResponseCache
    from moco.models.prefix_cache import clear_all
    from moco.runner import run_experiment

    sweep = load_sweep(args.sweep)
    if args.test_limit is not None:
        for t in sweep.tasks:
            t.test_limit = args.test_limit
    if args.parallel_cells is not None:
        sweep.parallel_cells = args.parallel_cells
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = ResponseCache(root / "sweep.sqlite")
        t0 = time.time()
        res = run_sweep(sweep, root / "sweep", data_dir=args.data_dir, cache=cache)
        t_sweep = time.time() - t0
        cache.close()
        done = [s for s in res.states if s.status == "finished"][: args.alone]
        decoded_sweep = res.sharing["generated_tokens_measured"]
        alone = predicted = 0
        rows = []
        t0 = time.time()
        for i, st in enumerate(done):
            c = ResponseCache(root / f"alone{i}.sqlite")
            clear_all()  # as in its own process: no KV from the sweep or the cells before (weights stay loaded)
            t1 = time.time()
            m = run_experiment(st.cell.config, root / f"alone{i}", data_dir=args.data_dir, cache=c,
                               backends=cell_backends(st.cell, args.data_dir)).metrics
            c.close()
            alone += m["total"]["generated_tokens"]
            cell_dir = root / "sweep" / "cells" / st.cell.dir_name
            predicted += sum(v[1] for v in distinct(read_calls(cell_dir)).values())
            shared = json.loads((cell_dir / "metrics.json").read_text())["total"]["generated_tokens"]
            rows.append((st.cell.dir_name, st.seconds or 0.0, shared, time.time() - t1, m["total"]["generated_tokens"]))
        t_alone = time.time() - t0
    print(f"{'cell':44s} {'sweep s':>8s} {'tokens':>7s} {'alone s':>8s} {'tokens':>7s}")
    for name, s_sweep, tok_sweep, s_alone, tok_alone in rows:
        print(f"{name[:44]:44s} {s_sweep:8.1f} {tok_sweep:7d} {s_alone:8.1f} {tok_alone:7d}")
    print(f"sweep {sweep.name}: {len(res.states)} cells, {res.count('finished')} finished, "
          f"{res.count('incompatible')} incompatible")
    print(f"(a) sweep, shared cache     : {decoded_sweep:8d} tokens decoded in {t_sweep:7.1f} s")
    print(f"(b) {len(done):3d} cells run alone   : {alone:8d} tokens decoded in {t_alone:7.1f} s")
    gap = abs(predicted - alone) / max(alone, 1)
    # exact with scripted models; real models sampled in other batch neighbourhoods round floats differently,
    # so an alone run may write a few other tokens
    print(f"    predicted from calls    : {predicted:8d} tokens "
          f"({'agrees' if predicted == alone else f'differs by {100 * gap:.1f}%'})")
    if args.alone is None and alone:
        print(f"ratio a/b = {decoded_sweep / alone:.3f} tokens, {t_sweep / t_alone:.3f} wall time (target <= 0.6)")
    sys.exit(0 if gap <= 0.05 else 1)


if __name__ == "__main__":
    main()
