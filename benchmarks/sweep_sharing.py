"""How much a sweep saves by sharing model outputs between its cells, measured, not estimated.

Runs a sweep into a temporary directory with an empty response cache, then runs every finished cell again
ALONE, each with its own empty cache, and prints:
  (a) tokens the sweep decoded (cache misses over all cells),
  (b) tokens the cells decoded when each ran alone (their sum),
  (c) the ratio a/b, and the figure `moco compare` predicts for b from the call records (they must agree).

    python benchmarks/sweep_sharing.py [SWEEP.yaml] [--alone N]   # default: examples/sweeps/scripted_quick.yaml

With the embedded-model sweeps this costs the sweep plus every cell again: use --alone N to re-run only the
first N cells (the printed sum then covers those cells).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", nargs="?", default=str(Path(__file__).resolve().parent.parent / "examples" / "sweeps"
                                                    / "scripted_quick.yaml"))
    ap.add_argument("--alone", type=int, default=None, help="re-run only the first N cells alone")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    from moco.analysis import load_sweep, run_sweep
    from moco.analysis.sharing import distinct, read_calls
    from moco.analysis.sweep import cell_backends
    from moco.cache import ResponseCache
    from moco.runner import run_experiment

    sweep = load_sweep(args.sweep)
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
        t0 = time.time()
        for i, st in enumerate(done):
            c = ResponseCache(root / f"alone{i}.sqlite")
            m = run_experiment(st.cell.config, root / f"alone{i}", data_dir=args.data_dir, cache=c,
                               backends=cell_backends(st.cell, args.data_dir)).metrics
            c.close()
            alone += m["total"]["generated_tokens"]
            predicted += sum(v[1] for v in distinct(read_calls(root / "sweep" / "cells" / st.cell.dir_name)).values())
        t_alone = time.time() - t0
    print(f"sweep {sweep.name}: {len(res.states)} cells, {res.count('finished')} finished, "
          f"{res.count('incompatible')} incompatible")
    print(f"(a) sweep, shared cache     : {decoded_sweep:8d} tokens decoded in {t_sweep:7.1f} s")
    print(f"(b) {len(done):3d} cells run alone   : {alone:8d} tokens decoded in {t_alone:7.1f} s")
    print(f"    predicted from calls    : {predicted:8d} tokens ({'agrees' if predicted == alone else 'DIFFERS'})")
    if args.alone is None and alone:
        print(f"ratio a/b = {decoded_sweep / alone:.3f} tokens, {t_sweep / t_alone:.3f} wall time (target <= 0.6)")
    sys.exit(0 if predicted == alone else 1)


if __name__ == "__main__":
    main()
