"""`moco report`: one self-contained HTML file (figures inline as SVG, no external resource) and a markdown
twin (figures as PNG files beside it) from run and sweep directories.

Sections appear when their data exists: Table 1, per-task scores with intervals, collaborative emergence,
scaling, diversity, model selection, leave-one-out, robustness, cost against quality, cells that could not run.
The HTML comes from the Jinja2 templates moco/templates/report.html.j2 and report_table1.html.j2 (autoescaped);
this module computes what they show.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from moco.analysis import cost as costmod
from moco.analysis import emergence as emer
from moco.analysis import plots, studies, table1
from moco.analysis.records import Collection
from moco.analysis.seeds import settings
from moco.analysis.sharing import sharing_line
from moco.errors import ConfigError
from moco.scoring.stats import Interval, mean_ci, mean_std


def f3(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def pct_ci(iv: Interval | None) -> str:
    if iv is None:
        return ""
    return f"{100 * iv.lo:.1f}–{100 * iv.hi:.1f}%" if iv.ok else f"({iv.note})"


def ci_text(iv: Interval | None) -> str:
    return "" if iv is None else iv.text()


def with_std(x: float | None, std: float | None) -> str:
    return f3(x) + (f" ± {f3(std)}" if std is not None else "")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (caption, matplotlib figure)
    table1: dict[str, Any] | None = None  # Table 1 as templates/report_table1.html.j2 renders it
    raw_md: str = ""


# ----------------------------------------------------------------------------------------------- sections
def _table1_section(col: Collection, alpha: float = table1.ALPHA, correction: str = table1.CORRECTION) -> Section | None:
    if not col.where("table"):
        return None
    t = table1.build(col, alpha=alpha, correction=correction)
    s = Section("Comparison (paper Table 1 layout)")
    s.text.append("Per model pool: one column per domain (macro-average of its tasks) and the average over "
                  "domains. Best single = the best single model of the pool on each task (oracle). Orange (↑): "
                  "beats the best single model on the same tasks and the paired test confirms it; dashed (↑): a "
                  "point improvement the test does not confirm; ↓ significantly worse; bold best and underlined "
                  "second per column; * some tasks or seeds missing; / cannot run (reasons below). The first table "
                  "below gives every value with its 95% interval (and per-seed values), the second the paired tests: "
                  "the interval of Δ is per cell (not adjusted for the table's many tests), the verdict uses the "
                  "adjusted p, so a Δ whose interval excludes 0 can still be (↑).")
    s.raw_md = table1.to_markdown(t, intervals=False)  # the intervals are the table below
    s.table1 = table1_view(t)
    s.tables.append(Table(table1.VALUE_HEADERS, table1.value_rows(t)))
    s.tables.append(Table(["pool", "column", "method", "Δ vs best single", "95% CI of Δ", "test", "p",
                           f"p adjusted ({t.correction})", f"verdict at α = {t.alpha:g}"], table1.test_rows(t)))
    return s


def table1_view(t: table1.Table1) -> dict[str, Any]:
    """What templates/report_table1.html.j2 renders: header spans, cells with their classes and tooltips."""
    rows = []
    for r in t.rows:
        cells = []
        for p in t.pools:
            for c in t.columns[p]:
                v = t.get(r, p, c)
                if v.value is None and v.reasons:
                    reasons = sorted(set(v.reasons), key=t.footnote)
                    cells.append({"na": True, "notes": ",".join(str(t.footnote(x)) for x in reasons[:3]),
                                  "title": " | ".join(sorted(set(v.reasons)))})
                    continue
                cls = ["up" if v.improved else "up-ns" if v.point else "down" if v.worse else "",
                       {1: "best", 2: "second"}.get(v.rank, "")]
                tips = [f"95% CI {v.ci.text()}"] if v.ci is not None else []
                if v.test is not None and v.test.p is not None and v.p_adj is not None:
                    tips.append(f"Δ {v.test.diff:+.3f} vs best single, 95% CI {v.test.ci.text()}, {v.test.test} "
                                f"p = {v.test.p:.4f}, adjusted p = {v.p_adj:.4f}")
                title = "; ".join(tips)
                cells.append({"na": False, "cls": " ".join(x for x in cls if x), "title": title,
                              "text": table1.cell_text(t, v, markdown=False)})
        if any(c.get("na") or c.get("text") for c in cells):
            rows.append({"label": r, "cells": cells})
    return {"pools": [{"name": p, "span": len(t.columns[p])} for p in t.pools],
            "columns": [c for p in t.pools for c in t.columns[p]], "rows": rows, "reasons": t.reasons,
            "legend": table1.legend(t).replace("\\*", "*").replace("**best**", "bold: best").replace(
                "_second_", "underlined: second"), "share": table1.share_line(t)}


def _pairs_section(col: Collection, pairs: list[tuple[str, str]]) -> Section | None:
    """Paired tests of row pairs the user asked for (`moco report --pair "A vs B"`), in every pool with both."""
    if not pairs:
        return None
    entries = col.where("table")
    labels = set(e["label"] for e in entries) | {table1.BEST}
    rows = []
    for a, b in pairs:
        for lab in (a, b):
            if lab not in labels:
                raise ConfigError(f"--pair: no row '{lab}' (rows: {', '.join(sorted(labels))})")
        for pool in dict.fromkeys(e["pool"] for e in entries):
            r = table1.compare_rows(col, a, b, pool)
            if r is None:
                rows.append([pool, a, b, "", "", "", "", "no common finished items"])
                continue
            test = r.test + (f" ({r.mcnemar.better}:{r.mcnemar.worse} discordant)" if r.test == "mcnemar" else "")
            rows.append([pool, a, b, str(r.n), f"{r.diff:+.3f}", r.ci.text(), test,
                         "" if r.p is None else f"{r.p:.4f}"])
    s = Section("Requested paired comparisons")
    s.text.append("A − B on the items both rows scored, over the tasks both ran (each item averaged over seeds); "
                  "p is not corrected for multiple comparisons.")
    s.tables.append(Table(["pool", "A", "B", "items", "Δ (A − B)", "95% CI", "test", "p"], rows))
    return s


def run_best_single_ci(run) -> Interval:
    """Interval of a single_model run's best single model (its per-model test scores' argmax), over items."""
    pm = run.record.per_model_test
    if not pm:
        return Interval(None, None, "no per-model scores")
    if not (run.dir / "predictions.jsonl").exists():
        return Interval(None, None, "no per-item predictions")
    best = max(pm, key=lambda m: (pm[m], m))
    xs = [((p.trace or {}).get("scores") or {}).get(best) for p in run.predictions()]
    xs = [float(x) for x in xs if x is not None]
    return mean_ci(xs) if xs else Interval(None, None, "no per-item scores of each model")


def baseline_ci(b: table1.Baseline) -> Interval:
    """Interval of the best single model of a (pool, task): its items' seed-means."""
    return mean_ci([x for _, x in b.items.values()]) if b.items else Interval(None, None, "no per-item scores")


def with_ci(x: float | None, std: float | None, iv: Interval | None) -> str:
    """'0.512 ± 0.020 [0.430–0.590]' (± only with seeds; '[(reason)]' when there is no interval)."""
    if x is None:
        return ""
    return with_std(x, std) + (f" [{iv.text()}]" if iv is not None else "")


def _scores_section(col: Collection) -> Section | None:
    entries = [e for e in col.where("table") if e.ok]
    if not entries:
        return None
    s = Section("Scores per task, with 95% bootstrap intervals")
    rows = []
    groups: dict[str, list] = defaultdict(list)
    base = table1.baselines(entries)
    best_by_group = {}
    seeded = False
    for st in sorted(settings(entries), key=lambda st: (st.entry["pool"], st.entry["task"])):
        e0 = st.entry
        for e in sorted(st.runs, key=lambda e: e.get("seed", 0)):
            m = e.run.record
            ci = e.run.ci
            note = f" ({m.score_note})" if m.score_note else ""  # a run accepted under --max-failed
            best = with_ci(e.run.record.best_single_test, None, run_best_single_ci(e.run)) \
                if e["method"] == table1.BASELINE else ""
            rows.append([e["pool"], e["task"], e["label"], str(e.get("seed", "")), f3(m.score) + note,
                         f"{f3(ci[0])}–{f3(ci[1])}" if ci else f"({m.ci_note or 'no interval'})",
                         str(m.n), str(m.unparsed), str(m.failed), best])
        if len(st.runs) > 1:  # the setting over its seeds
            seeded = True
            b = base.get((e0["pool"], e0["task"]))
            best = with_ci(b.score, mean_std(list(b.per_seed.values()))[1], baseline_ci(b)) \
                if e0["method"] == table1.BASELINE and b is not None else ""
            rows.append([e0["pool"], e0["task"], e0["label"], "mean ± std", with_std(st.score, st.std), st.ci().text(),
                         "", "", "", best])
        g = f"{e0['task']} ({e0['pool']})"
        iv = st.ci()
        groups[g].append((e0["label"], float(st.score), (iv.lo, iv.hi) if iv.ok else None))
        if (e0["pool"], e0["task"]) in base:
            best_by_group[g] = base[(e0["pool"], e0["task"])].score
    if seeded:
        s.text.append("One row per seed (the run's own interval over its items), then the setting over its seeds: "
                      "mean ± standard deviation over seeds, the interval over the items' seed-means.")
    s.tables.append(Table(["pool", "task", "method", "seed", "score", "95% CI", "n", "unparsed", "failed",
                           "best single [95% CI]"], rows))
    s.figures.append(("Score per method with 95% bootstrap interval" + (" (mean over seeds)" if seeded else "")
                      + "; dashed: best single model", plots.score_bars(dict(groups), best_by_group)))
    return s


def _emergence_section(col: Collection, threshold: float) -> Section | None:
    rows = emer.emergence(col, threshold=threshold)
    if not rows:
        return None
    s = Section("Collaborative emergence (paper Figure 4)")
    s.text.append("Of the test items that no single model of the pool solves, the share the collaborative "
                  "system solves (pooled over the tasks of a domain). 'lost' counts items some single model "
                  "solves but the system does not.")
    dom = emer.by_domain(rows)
    seeded = len({r.seed for r in rows}) > 1
    shown = rows + (dom if len(dom) < len(rows) else [])
    if seeded:  # per seed, then each setting pooled over seeds (± std of the per-seed shares)
        shown += emer.over_seeds(shown)
        s.text.append("With seeds: the 'all' rows pool the seeds (Σ system solves / Σ no single model solves, ± the "
                      "standard deviation of the per-seed shares; their counts are item × seed pairs); their interval "
                      "resamples items, each with its counts over seeds.")
    s.tables.append(Table(["pool", "task", "domain", "method", *(["seed"] if seeded else []), "items",
                           "no single model solves", "system solves", "emergence",
                           *(["± std over seeds"] if seeded else []), "95% CI", "lost"],
                          [[r.pool, r.task, r.domain, r.label, *([str(r.seed)] if seeded else []), str(r.n),
                            str(r.impossible), str(r.rescued), pct(r.share),
                            *([pct(r.std) if r.std is not None else ""] if seeded else []), pct_ci(r.share_ci()),
                            str(r.lost)] for r in shown]))
    if seeded:
        dom = emer.over_seeds(dom)
        s.text.append("The figure shows each domain pooled over seeds.")
    groups = list(dict.fromkeys(f"{r.domain} ({r.pool})" for r in dom))
    labels = list(dict.fromkeys(r.label for r in dom))
    series = {lab: [next((r.share for r in dom if r.label == lab and f"{r.domain} ({r.pool})" == g), None)
                    for g in groups] for lab in labels}
    s.figures.append(("Share of 'impossible' items solved by collaboration, per domain",
                      plots.grouped_bars(groups, series, "emergence (%)", "collaborative emergence", percent=True)))
    return s


def _curve_section(title: str, rows: list[dict], x_key: str, x_label: str, categorical: bool, text: str) -> Section | None:
    if not rows:
        return None
    s = Section(title)
    s.text.append(text)
    s.tables.append(Table(["task", "method", x_label, "score", "95% CI", "best single [95% CI]", "status"],
                          [[r["task"], r["label"], str(r[x_key]), with_std(r["score"], r.get("std")),
                            ci_text(r.get("ci")),
                            with_ci(r.get("best_single"), r.get("best_single_std"), r.get("best_single_ci")),
                            r["status"] if not r.get("reason") else f"{r['status']}: {r['reason']}"] for r in rows]))
    s.figures.append((title, plots.curves(rows, x_key, x_label, title.split(" (")[0], categorical)))
    return s


def _selection_section(col: Collection) -> Section | None:
    rows = studies.selection(col)
    if not rows:
        return None
    s = Section("Model selection (paper Figure 5)")
    s.text.append("k of the candidate models chosen by prompting an LLM with the model descriptions, by the most "
                  "mutually distant description embeddings, or at random (mean ± std over the random repeats; "
                  "one subset: ± std over seeds) [95% interval over items; random: of the mean over repeats]; "
                  "no collaboration = the best single model of all candidates.")
    strategies = [x for x in ("prompt", "embedding", "random") if any(x in r for r in rows)]
    s.tables.append(Table(["task", "method", "no collaboration", *strategies, "chosen (prompt / embedding)"],
                          [[r["task"], r["label"], with_ci(r.get("no_collaboration"), r.get("no_collaboration_std"),
                                                           r.get("no_collaboration_ci"))]
                           + [with_ci(r.get(x), r.get(x + "_std"), r.get(x + "_ci")) for x in strategies]
                           + [" / ".join(", ".join(c[0] or []) for c in (r.get("prompt_chosen") or [[]],
                                                                         r.get("embedding_chosen") or [[]]))]
                           for r in rows]))
    groups = [f"{r['task']}: {r['label']}" for r in rows]
    series = {"no collaboration": [r.get("no_collaboration") for r in rows]}
    errors = {}
    for x in strategies:
        series[x] = [r.get(x) for r in rows]
        errors[x] = [r.get(x + "_std") for r in rows]
    s.figures.append(("Model selection strategies", plots.grouped_bars(groups, series, "score", "choosing models",
                                                                        errors=errors)))
    return s


def _loo_section(col: Collection) -> Section | None:
    rows = studies.leave_one_out(col)
    if not rows:
        return None
    s = Section("Sensitivity to model choice: leave-one-out (paper Table 2)")
    s.text.append("The score without each model of the pool (± std over seeds) [95% interval]; mean and sample "
                  "standard deviation over the leave-one-out pools per dataset, each [95% interval: the items "
                  "resampled together across the pools].")
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["label"] == label]
        names = list(dict.fromkeys(w for r in rs for w, _ in r["without"]))
        body = [[f"w/o {n}"] + [with_ci(dict(r["without"]).get(n), r["seed_std"].get(n), r["ci"].get(n)) for r in rs]
                for n in names]
        body.append(["avg"] + [with_ci(r["mean"], None, r["mean_ci"]) for r in rs])
        body.append(["std"] + [with_ci(r["std"], None, r["std_ci"]) for r in rs])
        s.tables.append(Table([label] + [r["task"] for r in rs], body))
        for r in rs:
            s.text += [f"{label} on {r['task']}: {m}" for m in r["missing"]]
    return s


def _robustness_section(col: Collection) -> Section | None:
    rows = studies.robustness(col)
    if not rows:
        return None
    s = Section("Robustness to a malicious member")
    r0 = rows[0]
    s.text.append(f"Model '{r0['replaced']}' of the pool replaced by an adversary ({r0['kind']}: "
                  + ("a scripted liar that knows the gold answer and confidently gives a wrong one" if r0["kind"] == "liar"
                     else "the same model with a system prompt that argues confidently for wrong answers")
                  + "). Drop = clean score − score with the adversary (± std over seeds when there are several; the "
                  "intervals are over items, each item's score averaged over seeds).")
    s.tables.append(Table(["task", "method", "clean", "95% CI", "with adversary", "95% CI", "drop", "95% CI (paired)",
                           "relative drop", "95% CI", "note"],
                          [[r["task"], r["label"], with_std(r["clean"], r.get("clean_std")), ci_text(r.get("clean_ci")),
                            with_std(r["attacked"], r.get("attacked_std")), ci_text(r.get("attacked_ci")),
                            with_std(r["drop"], r.get("drop_std")), ci_text(r.get("drop_ci")),
                            pct(r["relative_drop"]), pct_ci(r.get("relative_drop_ci")), r["reason"] or ""]
                           for r in rows]))
    groups = [f"{r['task']}: {r['label']}" for r in rows]
    s.figures.append(("Clean pool vs pool with one malicious member",
                      plots.grouped_bars(groups, {"clean": [r["clean"] for r in rows],
                                                  "with adversary": [r["attacked"] for r in rows]},
                                         "score", "robustness")))
    return s


def _cost_section(col: Collection, overrides: dict[str, float]) -> Section | None:
    rows = costmod.costs(col, overrides)
    if not rows:
        return None
    s = Section("Cost against quality (with the paper's Table 4 complexity)")
    s.text.append("Measured per run: model calls, tokens in/out (cached calls counted at their cost: what the run "
                  "alone would use), tokens decoded by this run (cache misses), wall time per phase. FLOPs = "
                  "Σ over models 2 · parameters · (tokens in + out), parameters read from safetensors headers. "
                  "Table 4 estimate: the paper's inference formula with D = test items, m = max_new_tokens, "
                  "kᵢ = model sizes (an upper bound: m is the length limit, and the formulas ignore prompts). One row "
                  "per run (per seed); calls, tokens and time are measured counts, not estimates (no interval).")
    s.tables.append(Table(
        ["method", "task", "pool", "seed", "score", "95% CI", "calls", "tokens in", "tokens out", "decoded here",
         "wall s (dev/test)", "FLOPs", "Table 4 inference", "Table 4 estimate", "Table 4 training"],
        [[c.label, c.task, c.pool, "" if c.seed is None else str(c.seed), f3(c.score), ci_text(c.ci), str(c.calls), str(c.tokens_in), str(c.tokens_out),
          str(c.generated_tokens), f"{c.wall_s:.1f} ({c.phase_wall.get('dev', 0):.1f}/{c.phase_wall.get('test', 0):.1f})",
          costmod.human(c.flops) + (f" (size unknown: {_names(c.unknown_size)})" if c.unknown_size else ""),
          c.paper_inference, costmod.human(c.paper_estimate), c.paper_training] for c in rows]))
    # tokens on the x axis (what every backend reports), so a method that wins only by spending more shows
    pts = [(c.label, float(c.tokens_in + c.tokens_out), c.score) for c in rows]
    s.figures.append(("Score against tokens spent (in + out): up and to the left is better",
                      plots.cost_scatter(pts, "tokens in + out (log)")))
    return s


def _names(names: list[str], limit: int = 2) -> str:
    return ", ".join(names[:limit]) + (f" +{len(names) - limit}" if len(names) > limit else "")


def _problems_section(col: Collection) -> Section | None:
    bad = [e for e in col.entries if e.status != "finished"]
    if not bad:
        return None
    seen, rows = set(), []
    for e in bad:
        k = (e["pool"], e["task"], e["label"], e.reason)
        if k not in seen:
            seen.add(k)
            rows.append([e.get("analysis", ""), e["pool"], e["task"], e["label"], e.status, e.reason or ""])
    s = Section("Cells that did not run")
    s.tables.append(Table(["analysis", "pool", "task", "method", "status", "reason"], rows))
    return s


def sections(col: Collection, threshold: float = 0.5, overrides: dict[str, float] | None = None,
             alpha: float = table1.ALPHA, correction: str = table1.CORRECTION,
             pairs: list[tuple[str, str]] | None = None) -> list[Section]:
    out = [
        _table1_section(col, alpha, correction), _pairs_section(col, pairs or []), _scores_section(col), _emergence_section(col, threshold),
        _curve_section("Scaling the number of models (paper Figure 2)", studies.scaling(col), "n_models", "models",
                       False, "The first n models of the pool collaborate; dashed: the best single of those n."),
        _curve_section("Model diversity (paper Figure 3)", studies.diversity(col), "setting", "unique × copies", True,
                       "a unique models each repeated b times (copies sample independently); the pool size a·b "
                       "is fixed."),
        _selection_section(col), _loo_section(col), _robustness_section(col), _cost_section(col, overrides or {}),
        _problems_section(col),
    ]
    return [s for s in out if s is not None]


# ----------------------------------------------------------------------------------------------- rendering
def environment() -> jinja2.Environment:
    """Templates ship with the package (moco/templates); autoescaping is on for every value."""
    return jinja2.Environment(loader=jinja2.PackageLoader("moco", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _table_md(t: Table) -> str:
    def esc(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(esc, t.headers)) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines) + "\n"


def _header(col: Collection, paths: list[str]) -> tuple[list[str], list[str]]:
    runs = col.runs()
    lines = [f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {', '.join(paths)}: {len(runs)} runs, "
             f"{sum(e.status == 'incompatible' for e in col.entries)} incompatible and "
             f"{sum(e.status == 'failed' for e in col.entries)} failed cell uses."]
    for sw in col.sweeps:
        if sw.get("sharing"):
            lines.append(f"Sweep {sw.get('name')}: " + sharing_line(sw["sharing"]))
    return lines, lines


def write(col: Collection, out_html: Path, out_md: Path | None = None, title: str = "MoCo report",
          paths: list[str] | None = None, threshold: float = 0.5,
          overrides: dict[str, float] | None = None, alpha: float = table1.ALPHA,
          correction: str = table1.CORRECTION, pairs: list[tuple[str, str]] | None = None) -> list[Section]:
    """Render every section to a self-contained HTML file and, optionally, markdown with PNG figures."""
    secs = sections(col, threshold, overrides, alpha, correction, pairs)
    meta, _ = _header(col, paths or [])
    md = [f"# {title}", ""] + [x + "\n" for x in meta]
    fig_dir = None
    if out_md is not None:
        fig_dir = out_md.with_name(out_md.stem + "_files")
        fig_dir.mkdir(parents=True, exist_ok=True)
    n_fig = 0
    views = []
    for s in secs:
        md += [f"## {s.title}", ""]
        for x in s.text:
            md += [x, ""]
        if s.raw_md:
            md += [s.raw_md, ""]
        for t in s.tables:
            md += [_table_md(t), ""]
        figures = []
        for caption, fig in s.figures:
            if fig is None:
                continue
            n_fig += 1
            if fig_dir is not None:
                name = f"figure{n_fig}.png"
                fig.savefig(fig_dir / name, format="png", bbox_inches="tight", dpi=110)
                md += [f"![{caption}]({fig_dir.name}/{name})", ""]
            figures.append({"svg": plots.svg(fig), "caption": caption})
        views.append({"title": s.title, "text": s.text, "table1": s.table1, "tables": s.tables, "figures": figures})
    page = environment().get_template("report.html.j2").render(title=title, meta=meta, sections=views)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page)
    if out_md is not None:
        out_md.write_text("\n".join(md))
    return secs
