"""The scorer regression corpus (tests/scorer_corpus.py) as a table: per dataset and per response family, the
share of responses MoCo's scorers judge the way a careful grader does (correct families recognised, wrong
and undecided ones rejected), beside two public baselines on the same responses:

- lm-evaluation-harness's "flexible-extract" filters, as its CoT task configs use them: MultiChoiceRegexFilter
  (regex `(\\([A-Z]\\))`, last match, ignore case and punctuation, then option text and "X:" fallbacks) for
  multiple choice and BBH option items, RegexFilter (`(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match) for GSM8K,
  TabMWP free text and BBH numbers. The filter classes are called directly; nothing is re-implemented.
- math-verify 0.9.0's `parse` / `verify` with its default extraction (LaTeX and plain expressions) for
  GSM8K, TabMWP free text, MATH and TheoremQA.

A baseline's response counts as recognised when its extraction equals the gold, as rejected when it does not
(for the "unparsed" families: when it extracts nothing). The baselines run in a scratch virtualenv (they
are not MoCo dependencies):

    python3 -m venv /tmp/scorer-bench-venv
    /tmp/scorer-bench-venv/bin/pip install math-verify==0.9.0
    /tmp/scorer-bench-venv/bin/pip install --no-deps lm-eval   # only its filter classes are imported
    PYTHONPATH=src python benchmarks/scorer_corpus.py --baseline-python /tmp/scorer-bench-venv/bin/python

Without --baseline-python only MoCo's columns are printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MC_NUMERIC_BBH = "bbh"
LM_EVAL_NUMERIC = {"gsm8k", "tablemwp_free_text"}
MATH_VERIFY = {"gsm8k", "tablemwp_free_text", "math", "theoremqa"}


# ----------------------------------------------------------------------------- baselines (scratch venv)
def run_baselines(rows: list[dict]) -> list[dict]:
    """In the scratch venv: each row {kind, response, gold, choices?} -> {lm_eval, math_verify}: 'correct',
    'other' (extracted something else) or 'none' (extracted nothing), or None when not applicable."""
    from lm_eval.filters.extraction import MultiChoiceRegexFilter, RegexFilter
    from math_verify import parse, verify

    mc = MultiChoiceRegexFilter(regex_pattern=r"(\([A-Z]\))", group_select=-1, ignore_case=True,
                                ignore_punctuation=True)
    num = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)

    def plain(x: str) -> str:
        return x.replace("$", "").replace(",", "").rstrip(".").strip()

    def same_number(a: str, b: str) -> bool:
        try:
            return abs(float(plain(a)) - float(plain(b))) <= 1e-6 * max(1.0, abs(float(plain(b))))
        except ValueError:
            return plain(a) == plain(b)

    # one apply call per filter (MultiChoiceRegexFilter builds its punctuation table per call)
    mc_idx = [i for i, r in enumerate(rows) if r["lm_eval"] == "mc"]
    num_idx = [i for i, r in enumerate(rows) if r["lm_eval"] == "number"]
    mc_got = dict(zip(mc_idx, mc.apply([[rows[i]["response"]] for i in mc_idx],
                                       [{"choices": rows[i]["choices"]} for i in mc_idx]))) if mc_idx else {}
    num_got = dict(zip(num_idx, num.apply([[rows[i]["response"]] for i in num_idx], [{}] * len(num_idx)))) if num_idx else {}
    out = []
    for i, r in enumerate(rows):
        res: dict = {"lm_eval": None, "math_verify": None}
        if i in mc_got:
            got = mc_got[i][0]
            res["lm_eval"] = "none" if got in ("[invalid]", "") else ("correct" if got == f"({r['gold']})" else "other")
        elif i in num_got:
            got = num_got[i][0]
            res["lm_eval"] = "none" if got in ("[invalid]", "") else ("correct" if same_number(got, r["gold"]) else "other")
        if r["math_verify"]:
            try:
                parsed = parse(r["response"], parsing_timeout=5)
                gold = parse(f"${r['gold']}$" if "\\" in r["gold"] else r["gold"], parsing_timeout=5)
                res["math_verify"] = "none" if not parsed else ("correct" if verify(gold, parsed, timeout_seconds=5) else "other")
            except Exception:
                res["math_verify"] = "none"
        out.append(res)
    return out


# ----------------------------------------------------------------------------- MoCo side
def judge_rate(expect: str, outcome: str) -> bool:
    if expect == "correct":
        return outcome == "correct"
    if expect == "wrong":
        return outcome != "correct"
    return outcome == "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-python", help="python of a venv with lm-eval and math-verify installed")
    ap.add_argument("--datasets", nargs="*", help="only these datasets")
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args()

    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from scorer_corpus import DATASETS, FAMILIES, cases

    from moco.scoring import scorer_for
    from moco.scoring.short_answer import options_in
    from moco.tasks.registry import DATASETS as KNOWN

    names = args.datasets or DATASETS
    all_cases, moco_ok, rows = [], [], []
    for name in names:
        cs = cases(name)
        ttype = "multiple_choice" if cs[0].example.choices else ("f1_match" if KNOWN[name].scorer == "token_f1" else "exact_match")
        scorer = scorer_for(ttype, name)
        for c in cs:
            r = scorer.score(c.example, c.response)
            outcome = "correct" if r.score == 1.0 else ("none" if r.extracted is None else "other")
            all_cases.append(c)
            moco_ok.append(judge_rate(c.expect, outcome))
            ex = c.example
            gold = str(ex.answer)
            row = {"response": c.response, "gold": gold, "lm_eval": None, "math_verify": name in MATH_VERIFY}
            if ex.choices:
                row.update(lm_eval="mc", choices=list(ex.choices.values()))
            elif name == "bbh" and options_in(ex.input) and len(gold) == 1:
                row.update(lm_eval="mc", choices=list(options_in(ex.input).values()))
            elif name in LM_EVAL_NUMERIC or (name == "bbh" and gold.lstrip("-").isdigit()):
                row.update(lm_eval="number")
            if name == "theoremqa" and ex.meta.get("answer_type") in ("bool", "option"):
                row["math_verify"] = False
            rows.append(row)

    base: list[dict] = [{"lm_eval": None, "math_verify": None}] * len(rows)
    if args.baseline_python:
        with tempfile.TemporaryDirectory() as tmp:
            inp, outp = Path(tmp) / "in.json", Path(tmp) / "out.json"
            inp.write_text(json.dumps(rows))
            code = (f"import json,sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import scorer_corpus as b; "
                    f"json.dump(b.run_baselines(json.load(open({str(inp)!r}))), open({str(outp)!r}, 'w'))")
            subprocess.run([args.baseline_python, "-c", code], check=True)
            base = json.loads(outp.read_text())

    # per dataset x family: [n, moco ok, lm-eval ok, lm-eval n, math-verify ok, math-verify n]
    table: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 6)
    for c, ok, b in zip(all_cases, moco_ok, base):
        t = table[(c.dataset, c.family)]
        t[0] += 1
        t[1] += ok
        for j, key in ((2, "lm_eval"), (4, "math_verify")):
            if b[key] is not None:
                t[j] += judge_rate(c.expect, b[key])
                t[j + 1] += 1

    def pct(a: int, n: int) -> str:
        return f"{100 * a / n:5.1f}" if n else "    -"

    fams = list(FAMILIES)
    print("MoCo scorers on the corpus: % of responses judged as a careful grader does (per dataset x family)")
    print(f"{'family':24} {'expect':9} {'n':>5} {'moco':>6} {'min ds':>7} {'lm-eval':>8} {'math-verify':>11}")
    summary = {}
    for fam in fams:
        cells = [(ds, table[(ds, fam)]) for ds in names if table[(ds, fam)][0]]
        tot = [sum(t[i] for _, t in cells) for i in range(6)]
        worst = min((t[1] / t[0], ds) for ds, t in cells)
        summary[fam] = {"n": tot[0], "moco": tot[1] / tot[0], "min_dataset": worst[1], "min": worst[0],
                        "lm_eval": tot[2] / tot[3] if tot[3] else None, "math_verify": tot[4] / tot[5] if tot[5] else None}
        print(f"{fam:24} {FAMILIES[fam][0]:9} {tot[0]:5d} {pct(tot[1], tot[0]):>6} {pct(round(worst[0] * 1000), 1000):>7} "
              f"{pct(tot[2], tot[3]):>8} {pct(tot[4], tot[5]):>11}")
    print()
    print("Per dataset (all families): moco / lm-eval / math-verify %")
    per_ds = {}
    for ds in names:
        cells = [table[(ds, f)] for f in fams]
        tot = [sum(t[i] for t in cells) for i in range(6)]
        correct = [table[(ds, f)] for f in fams if FAMILIES[f][0] == "correct"]
        refuse = [table[(ds, f)] for f in fams if FAMILIES[f][0] != "correct"]
        rec = [sum(t[i] for t in correct) for i in range(6)]
        rej = [sum(t[i] for t in refuse) for i in range(6)]
        per_ds[ds] = {"n": tot[0], "moco_recognised": rec[1] / rec[0], "moco_rejected": rej[1] / rej[0],
                      "lm_eval_recognised": rec[2] / rec[3] if rec[3] else None,
                      "lm_eval_rejected": rej[2] / rej[3] if rej[3] else None,
                      "math_verify_recognised": rec[4] / rec[5] if rec[5] else None,
                      "math_verify_rejected": rej[4] / rej[5] if rej[5] else None}
        print(f"{ds:26} n={tot[0]:4d}  recognised {pct(rec[1], rec[0])} / {pct(rec[2], rec[3])} / {pct(rec[4], rec[5])}"
              f"   rejected {pct(rej[1], rej[0])} / {pct(rej[2], rej[3])} / {pct(rej[4], rej[5])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"families": summary, "datasets": per_ds,
                                               "cells": {f"{d}/{f}": v for (d, f), v in table.items()}}, indent=1))


if __name__ == "__main__":
    main()
