"""The report of a small scripted sweep with two seeds: every score, difference and ratio it prints carries a 95%
interval (or says why it has none), and settings run with several seeds show mean ± std over seeds."""
from __future__ import annotations

import json
import re

import pytest

from moco.analysis import load, parse_sweep, run_sweep
from moco.analysis.report import write
from moco.cache import ResponseCache
from moco.testing import mc_dataset

NUMBER = re.compile(r"^[+-]?\d+\.\d{3}(?!\d)")  # a score / difference (p-values have 4 decimals, counts none)
INTERVAL = re.compile(r"^-?\d+\.\d+(%)?–-?\d+\.\d+%?$|^\(.+\)$")  # "0.250–0.750", "25.0–75.0%" or "(reason)"


def scripted(name: str, replies: list[str], desc: str = "") -> dict:
    return {"model": f"scripted:{name}", "script": {"default": replies}, "description": desc or f"model {name}"}


TRIO = [scripted("a", ["The answer is (A)", "The answer is (B)"]),
        scripted("b", ["The answer is (B)", "The answer is (A)", "The answer is (C)"]),
        scripted("c", ["The answer is (C)", "The answer is (D)", "The answer is (A)", "The answer is (B)"])]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeded")
    task = tmp / "mc.json"
    task.write_text(json.dumps(mc_dataset(n_dev=4, n_test=12, name="mc")))
    cands = TRIO + [scripted("judge", ["Models: 1, 3"], "a neutral judge")]
    raw = {"name": "seeded", "methods": ["text_majority_vote"],
           "pools": {"trio": TRIO, "cands": {"models": cands, "in_table": False}},
           "tasks": [{"name": str(task)}], "decoding": {"max_new_tokens": 16, "temperature": 0.7},
           "seeds": [0, 1],
           "analyses": {"scaling": {"pool": "trio", "sizes": [2, 3]},
                        "diversity": {"pool": "trio", "total": 3, "unique": [1, 3]},
                        "leave_one_out": {"pool": "trio"},
                        "adversarial": {"pool": "trio", "kind": "liar", "replace": 1},
                        "selection": {"pool": "cands", "k": 2, "selector": "judge", "strategies": ["prompt", "random"],
                                      "random_repeats": 2}}}
    res = run_sweep(parse_sweep(raw), tmp / "sw", cache=ResponseCache(tmp / "c.sqlite"))
    assert res.count("failed") == 0
    col = load([tmp / "sw"])
    secs = write(col, tmp / "report.html", tmp / "report.md", paths=[str(tmp / "sw")])
    return {s.title.split(" (")[0].split(":")[0]: s for s in secs}, (tmp / "report.html").read_text(), col


def _interval_of(cell: str) -> str:
    """The interval text inside '0.500 ± 0.050 [0.250–0.750]'."""
    return cell[cell.index("[") + 1:cell.rindex("]")]


def check_every_number_has_an_interval(table) -> int:
    """Each score-like cell (3 decimals) carries '[interval]' itself, or the nearest '... CI ...' column to its
    right holds an interval or the reason there is none. Returns how many numbers were checked."""
    checked = 0
    ci_cols = [k for k, h in enumerate(table.headers) if "CI" in h and "[" not in h]
    for row in table.rows:
        for j, cell in enumerate(row):
            if not NUMBER.match(cell) or j in ci_cols:  # an interval column itself
                continue
            checked += 1
            if "[" in cell:
                assert INTERVAL.match(_interval_of(cell)), (table.headers[j], cell)
                continue
            right = [k for k in ci_cols if k > j]
            assert right, f"no interval for {table.headers[j]} = {cell} in {table.headers}"
            assert INTERVAL.match(row[right[0]]), (table.headers[j], cell, table.headers[right[0]], row[right[0]])
    return checked


def test_every_section_prints_intervals_and_seed_spread(report):
    secs, html, _ = report
    assert set(secs) >= {"Comparison", "Scores per task, with 95% bootstrap intervals", "Collaborative emergence",
                         "Scaling the number of models", "Model diversity", "Model selection",
                         "Sensitivity to model choice", "Robustness to a malicious member", "Cost against quality"}
    for title, s in secs.items():
        if title == "Cells that did not run":
            continue
        n = sum(check_every_number_has_an_interval(t) for t in s.tables)
        if title != "Collaborative emergence":  # shares are percentages, checked below
            assert n > 0, title
    # Table 1: every cell has its interval (tooltip) and the values table lists mean ± std, per seed and the CI
    t1 = secs["Comparison"]
    cells = [c for r in t1.table1["rows"] for c in r["cells"] if not c["na"]]
    assert cells and all("95% CI" in c["title"] for c in cells)
    assert all(" ± " in c["text"] for c in cells)  # two seeds: mean ± std in every cell
    values, tests = t1.tables
    assert values.headers[3:7] == ["value", "± std over seeds", "per seed", "95% CI"]
    assert {r[2] for r in values.rows} >= {"Best single", "text_majority_vote", "Self-MoA (compute-matched)"}
    assert all(r[5].startswith("0: ") and ", 1: " in r[5] for r in values.rows)
    assert tests.headers[4] == "95% CI of Δ" and all(r[6] for r in tests.rows)  # p-values printed
    assert "no interval" in t1.table1["share"]  # the share says why it has none
    # scores: one row per seed, then the setting over seeds
    scores = secs["Scores per task, with 95% bootstrap intervals"].tables[0]
    means = [r for r in scores.rows if r[3] == "mean ± std"]
    assert len(means) == 3 and all(" ± " in r[4] for r in means)
    best = next(r for r in means if r[2] == "single_model")[9]
    assert " ± " in best and "[" in best
    # emergence: per seed and pooled over seeds, each share with its interval and the pooled ones with ± std
    em = secs["Collaborative emergence"].tables[0]
    ci = em.headers.index("95% CI")
    assert all(INTERVAL.match(r[ci]) for r in em.rows if r[em.headers.index("emergence")] != "–")
    pooled = [r for r in em.rows if r[em.headers.index("seed")] == "all"]
    assert pooled and all(r[em.headers.index("± std over seeds")] for r in pooled if r[8] != "–")
    # curves, leave-one-out, robustness, selection: ± std over seeds beside the score
    assert all(" ± " in r[3] for r in secs["Scaling the number of models"].tables[0].rows if r[3])
    assert all(" ± " in r[5] for r in secs["Scaling the number of models"].tables[0].rows)  # best single
    loo = secs["Sensitivity to model choice"].tables[0]
    assert [r[0] for r in loo.rows] == ["w/o a", "w/o b", "w/o c", "avg", "std"]
    assert all(" ± " in r[1] and "[" in r[1] for r in loo.rows[:3]) and all("[" in r[1] for r in loo.rows[3:])
    rob = secs["Robustness to a malicious member"].tables[0]
    assert " ± " in rob.rows[0][2] and " ± " in rob.rows[0][4] and INTERVAL.match(rob.rows[0][7])
    assert INTERVAL.match(rob.rows[0][9])  # relative drop (a ratio)
    sel = secs["Model selection"].tables[0]
    assert all("[" in c for r in sel.rows for c in r[2:-1])
    cost = secs["Cost against quality"].tables[0]
    assert cost.headers[3:6] == ["seed", "score", "95% CI"] and {r[3] for r in cost.rows} == {"0", "1"}
    assert "95% CI" in html and "± std over seeds" in html


def test_leave_one_out_mean_and_std_intervals_resample_items_across_pools():
    """The avg and std rows' intervals: items resampled together across the leave-one-out pools (paired)."""
    import numpy as np

    from moco.scoring.stats import ALL_EQUAL, paired_stat_ci

    a, b = [1, 0, 1, 1, 0, 1, 0, 1] * 5, [1, 1, 0, 1, 0, 0, 0, 1] * 5
    mean = paired_stat_ci([a, b], lambda m: np.mean(m, axis=-1))
    assert mean.ok and mean.lo < (25 / 40 + 20 / 40) / 2 < mean.hi
    # identical pools: the std over pools is 0 in every resample, the interval a point: none, with the reason
    same = paired_stat_ci([a, a], lambda m: np.std(m, axis=-1, ddof=1))
    assert not same.ok and same.note == "every resample gives the same value"
    assert paired_stat_ci([[1, 1], [1, 1]], lambda m: np.mean(m, axis=-1)).note == ALL_EQUAL
    with pytest.raises(ValueError):
        paired_stat_ci([[1, 0], [1]], lambda m: m)


def test_table1_markdown_lists_each_value_with_its_interval(report):
    """table1.md (what `moco compare` writes) carries the intervals too, one row per value."""
    from moco.analysis import table1

    *_, col = report
    md = table1.to_markdown(table1.build(col))
    head = "| pool | column | method | value | ± std over seeds | per seed | 95% CI | tasks |"
    assert head in md
    block, tests = md.split(head, 1)[1].split("\n\n", 1)
    rows = [ln.split(" | ") for ln in block.splitlines()[2:]]
    assert len(rows) == 8 and all(INTERVAL.match(r[6]) for r in rows)  # 4 rows x (domain, avg)
    # then the paired tests: Δ, its interval, the test, p and adjusted p of each tested cell
    assert "| pool | column | method | Δ vs best single | 95% CI of Δ | test | p | p adjusted | verdict |" in tests
    trows = [ln.split(" | ") for ln in tests.splitlines() if ln.startswith("| trio")]
    assert len(trows) == 2 and all(INTERVAL.match(r[4]) and re.match(r"^\d\.\d{4}$", r[6]) for r in trows)
