"""`moco report`: one self-contained HTML file (figures inline as SVG, no external resource) and a markdown
twin (figures as PNG files beside it) from run and sweep directories.

Sections appear when their data exists: Table 1, per-task scores with intervals, collaborative emergence,
scaling, diversity, model selection, leave-one-out, robustness, cost against quality, cells that could not run.
"""
from __future__ import annotations

import html
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moco.analysis import cost as costmod
from moco.analysis import emergence as emer
from moco.analysis import plots, studies, table1
from moco.analysis.records import Collection
from moco.analysis.sharing import sharing_line
from moco.scoring.stats import Interval


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
    raw_html: str = ""
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
                  "second per column; * some tasks or seeds missing; / cannot run (reasons below). The paired "
                  "tests are listed in the next table.")
    s.raw_md = table1.to_markdown(t)
    s.raw_html = _table1_html(t)
    s.tables.append(Table(["pool", "column", "method", "Δ vs best single", "95% CI of Δ", "test", "p",
                           f"p adjusted ({t.correction})", f"verdict at α = {t.alpha:g}"], table1.test_rows(t)))
    return s


def _table1_html(t: table1.Table1) -> str:
    h = ['<table class="t1"><thead><tr><th rowspan="2">method</th>']
    for p in t.pools:
        h.append(f'<th colspan="{len(t.columns[p])}">{html.escape(p)}</th>')
    h.append("</tr><tr>")
    for p in t.pools:
        h += [f"<th>{html.escape(c)}</th>" for c in t.columns[p]]
    h.append("</tr></thead><tbody>")
    for r in t.rows:
        cells = []
        for p in t.pools:
            for c in t.columns[p]:
                v = t.get(r, p, c)
                cls = []
                if v.improved:
                    cls.append("up")
                elif v.point:
                    cls.append("up-ns")
                elif v.worse:
                    cls.append("down")
                if v.rank == 1:
                    cls.append("best")
                elif v.rank == 2:
                    cls.append("second")
                if v.value is None and v.reasons:
                    notes = ",".join(str(t.footnote(x)) for x in sorted(set(v.reasons), key=t.footnote)[:3])
                    title = html.escape(" | ".join(sorted(set(v.reasons))))
                    cells.append(f'<td class="na" title="{title}">/<sup>{notes}</sup></td>')
                else:
                    text = table1.cell_text(t, v, markdown=False)
                    cells.append(f'<td class="{" ".join(cls)}">{text}</td>')
        if any("<td class=\"\"></td>" != c for c in cells):
            h.append(f"<tr><th>{html.escape(r)}</th>{''.join(cells)}</tr>")
    h.append("</tbody></table>")
    if t.reasons:
        h.append("<ol class='notes'>" + "".join(f"<li>{html.escape(x)}</li>" for x in t.reasons) + "</ol>")
    h.append(f"<p class='share'>{html.escape(table1.share_line(t))}</p>")
    return "".join(h)


def _scores_section(col: Collection) -> Section | None:
    entries = [e for e in col.where("table") if e.ok]
    if not entries:
        return None
    s = Section("Scores per task, with 95% bootstrap intervals")
    rows = []
    groups: dict[str, list] = defaultdict(list)
    best = table1.best_single(entries)
    best_by_group = {}
    for e in sorted(entries, key=lambda e: (e["pool"], e["task"], e.get("seed", 0))):
        m = e.run.metrics
        ci = e.run.ci
        rows.append([e["pool"], e["task"], e["label"], str(e.get("seed", "")), f3(m["score"]),
                     f"{f3(ci[0])}–{f3(ci[1])}" if ci else f"({m.get('ci_note') or 'no interval'})",
                     str(m.get("n", "")), str(m.get("unparsed", "")), str(m.get("failed", "")),
                     f3(m.get("best_single_test")) if e["method"] == "single_model" else ""])
        g = f"{e['task']} ({e['pool']})"
        groups[g].append((e["label"], float(m["score"]), ci))
        if (e["pool"], e["task"]) in best:
            best_by_group[g] = best[(e["pool"], e["task"])]
    s.tables.append(Table(["pool", "task", "method", "seed", "score", "95% CI", "n", "unparsed", "failed", "best single"],
                          rows))
    s.figures.append(("Score per method with 95% bootstrap interval; dashed: best single model",
                      plots.score_bars(dict(groups), best_by_group)))
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
    s.tables.append(Table(["pool", "task", "domain", "method", *(["seed"] if seeded else []), "items",
                           "no single model solves", "system solves", "emergence", "95% CI", "lost"],
                          [[r.pool, r.task, r.domain, r.label, *([str(r.seed)] if seeded else []), str(r.n),
                            str(r.impossible), str(r.rescued), pct(r.share), pct_ci(r.share_ci()), str(r.lost)]
                           for r in rows + (dom if len(dom) < len(rows) else [])]))
    if seeded:
        dom = [r for r in dom if r.seed == min(x.seed for x in dom)]
        s.text.append(f"The figure shows seed {dom[0].seed}; the table lists every seed.")
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
    s.tables.append(Table(["task", "method", x_label, "score", "95% CI", "best single", "status"],
                          [[r["task"], r["label"], str(r[x_key]), with_std(r["score"], r.get("std")),
                            ci_text(r.get("ci")), f3(r.get("best_single")),
                            r["status"] if not r.get("reason") else f"{r['status']}: {r['reason']}"] for r in rows]))
    s.figures.append((title, plots.curves(rows, x_key, x_label, title.split(" (")[0], categorical)))
    return s


def _selection_section(col: Collection) -> Section | None:
    rows = studies.selection(col)
    if not rows:
        return None
    s = Section("Model selection (paper Figure 5)")
    s.text.append("k of the candidate models chosen by prompting an LLM with the model descriptions, by the most "
                  "mutually distant description embeddings, or at random (mean ± std over repeats); "
                  "no collaboration = the best single model of all candidates.")
    strategies = [x for x in ("prompt", "embedding", "random") if any(x in r for r in rows)]
    s.tables.append(Table(["task", "method", "no collaboration", *strategies, "chosen (prompt / embedding)"],
                          [[r["task"], r["label"], f3(r.get("no_collaboration"))]
                           + [with_std(r.get(x), r.get(x + "_std"))
                              + (f" [{r[x + '_ci'].text()}]" if r.get(x + "_ci") is not None else "")
                              for x in strategies]
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
    s.text.append("The score without each model of the pool [95% interval]; mean and sample standard deviation "
                  "over the leave-one-out pools per dataset.")
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["label"] == label]
        names = list(dict.fromkeys(w for r in rs for w, _ in r["without"]))
        body = [[f"w/o {n}"] + [f3(dict(r["without"]).get(n)) + (f" [{r['ci'][n].text()}]" if n in r["ci"] else "")
                                for r in rs] for n in names]
        body.append(["avg"] + [f3(r["mean"]) for r in rs])
        body.append(["std"] + [f3(r["std"]) for r in rs])
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
                  + "). Drop = clean score − score with the adversary.")
    s.tables.append(Table(["task", "method", "clean", "95% CI", "with adversary", "95% CI", "drop", "95% CI (paired)",
                           "relative drop", "95% CI", "note"],
                          [[r["task"], r["label"], f3(r["clean"]), ci_text(r.get("clean_ci")), f3(r["attacked"]),
                            ci_text(r.get("attacked_ci")), f3(r["drop"]), ci_text(r.get("drop_ci")),
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
                  "kᵢ = model sizes (an upper bound: m is the length limit, and the formulas ignore prompts).")
    s.tables.append(Table(
        ["method", "task", "pool", "score", "calls", "tokens in", "tokens out", "decoded here", "wall s (dev/test)",
         "FLOPs", "Table 4 inference", "Table 4 estimate", "Table 4 training"],
        [[c.label, c.task, c.pool, f3(c.score), str(c.calls), str(c.tokens_in), str(c.tokens_out),
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
             alpha: float = table1.ALPHA, correction: str = table1.CORRECTION) -> list[Section]:
    out = [
        _table1_section(col, alpha, correction), _scores_section(col), _emergence_section(col, threshold),
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
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
table.t1 td.up{background:#ffd8a8} table.t1 td.up-ns{outline:1px dashed #e8590c;outline-offset:-3px}
table.t1 td.down{background:#d0ebff} table.t1 td.best{font-weight:bold} table.t1 td.second{text-decoration:underline}
table.t1 td.na{color:#888;text-align:center} .notes{font-size:12px;color:#555} .share{font-weight:bold}
figure{margin:8px 0 20px} figcaption{font-size:12px;color:#555} .meta{color:#666;font-size:13px}
svg{max-width:100%;height:auto}
"""


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
          correction: str = table1.CORRECTION) -> list[Section]:
    """Render every section to a self-contained HTML file and, optionally, markdown with PNG figures."""
    secs = sections(col, threshold, overrides, alpha, correction)
    meta, _ = _header(col, paths or [])
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='meta'>{html.escape(x)}</p>" for x in meta]
    md = [f"# {title}", ""] + [x + "\n" for x in meta]
    fig_dir = None
    if out_md is not None:
        fig_dir = out_md.with_name(out_md.stem + "_files")
        fig_dir.mkdir(parents=True, exist_ok=True)
    n_fig = 0
    for s in secs:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        md += [f"## {s.title}", ""]
        for x in s.text:
            parts.append(f"<p>{html.escape(x)}</p>")
            md += [x, ""]
        if s.raw_html:
            parts.append(s.raw_html)
            md += [s.raw_md, ""]
        for t in s.tables:
            parts.append(_table_html(t))
            md += [_table_md(t), ""]
        for caption, fig in s.figures:
            if fig is None:
                continue
            n_fig += 1
            if fig_dir is not None:
                name = f"figure{n_fig}.png"
                fig.savefig(fig_dir / name, format="png", bbox_inches="tight", dpi=110)
                md += [f"![{caption}]({fig_dir.name}/{name})", ""]
            parts.append(f"<figure>{plots.svg(fig)}<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text("".join(parts))
    if out_md is not None:
        out_md.write_text("\n".join(md))
    return secs
