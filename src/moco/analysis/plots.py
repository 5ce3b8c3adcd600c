"""Figures of the report (matplotlib, Agg): each function returns a Figure, or None when there is no data.

`svg()` and `png()` turn a figure into text/bytes that the report embeds inline, so the HTML is one file
readable offline.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none",
                     "figure.dpi": 100})
COLORS = plt.get_cmap("tab10").colors


def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, width: float = 4.2, height: float = 3.0):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat[:n]


def score_bars(groups: dict[str, list[tuple[str, float, tuple[float, float] | None]]],
               best: dict[str, float] | None = None):
    """One panel per group (task, pool): a bar per method with its 95% bootstrap interval; the dashed line
    is the best single model."""
    if not groups:
        return None
    fig, axes = _grid(len(groups), width=max(4.2, 0.5 * max(len(v) for v in groups.values()) + 1.5))
    for ax, (title, bars) in zip(axes, groups.items()):
        labels = [b[0] for b in bars]
        ys = [b[1] for b in bars]
        err = [[max(0.0, y - b[2][0]) if b[2] else 0 for y, b in zip(ys, bars)],
               [max(0.0, b[2][1] - y) if b[2] else 0 for y, b in zip(ys, bars)]]
        ax.bar(range(len(bars)), ys, yerr=err, capsize=3, color=[COLORS[i % 10] for i in range(len(bars))])
        if best and title in best:
            ax.axhline(best[title], ls="--", color="0.3", lw=1, label="best single")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xticks(range(len(bars)), labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("score")
        ax.set_ylim(bottom=0, top=max(1.0, max(ys) * 1.05) if max(ys) > 1 else 1.0)
    fig.tight_layout()
    return fig


def curves(rows: list[dict[str, Any]], x_key: str, x_label: str, title: str, categorical: bool = False):
    """Score against x (number of models, or a×b diversity setting), one line per method with its 95% interval
    shaded, one panel per task; the dashed line is the best single model at each x."""
    rows = [r for r in rows if r.get("score") is not None]
    if not rows:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        tr = [r for r in rows if r["task"] == task]
        xs_all = list(dict.fromkeys(r[x_key] for r in sorted(tr, key=lambda r: r.get("unique", r.get(x_key)))))
        pos = {x: i for i, x in enumerate(xs_all)} if categorical else {x: x for x in xs_all}
        by_label: dict[str, list[dict]] = defaultdict(list)
        for r in tr:
            by_label[r["label"]].append(r)
        for i, (label, rs) in enumerate(by_label.items()):
            rs = sorted(rs, key=lambda r: pos[r[x_key]])
            ax.plot([pos[r[x_key]] for r in rs], [r["score"] for r in rs], marker="o", color=COLORS[i % 10],
                    label=label)
            band = [r for r in rs if r.get("ci") is not None and r["ci"].ok]  # the 95% intervals, shaded
            if band:
                ax.fill_between([pos[r[x_key]] for r in band], [r["ci"].lo for r in band], [r["ci"].hi for r in band],
                                color=COLORS[i % 10], alpha=0.15, linewidth=0)
        bs = sorted({(pos[r[x_key]], r["best_single"]) for r in tr if r.get("best_single") is not None})
        if bs:
            ax.plot([b[0] for b in bs], [b[1] for b in bs], ls="--", color="0.3", marker="x", label="best single")
        if categorical:
            ax.set_xticks(range(len(xs_all)), xs_all)
        else:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs_all, [str(x) for x in xs_all])
        ax.set_xlabel(x_label)
        ax.set_ylabel("score")
        ax.set_title(f"{title}: {task}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def grouped_bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
                 errors: dict[str, list[float | None]] | None = None, percent: bool = False):
    """Bars grouped by `groups` (x), one colour per series."""
    if not groups or not series:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) * max(1, len(series)) / 2 + 2), 3.2))
    width = 0.8 / len(series)
    for i, (name, ys) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        vals = [(100 * y if percent else y) if y is not None else 0.0 for y in ys]
        err = None
        if errors and name in errors:
            err = [(100 * e if percent else e) if e is not None else 0.0 for e in errors[name]]
        ax.bar(xs, vals, width, yerr=err, capsize=2 if err else 0, label=name, color=COLORS[i % 10])
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=min([0.0, *[(100 * y if percent else y) for ys in series.values() for y in ys if y is not None]]))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cost_scatter(points: list[tuple[str, float, float]], xlabel: str):
    """Quality against price: one point per run (label, cost, score), log-scaled cost."""
    points = [p for p in points if p[1] and p[1] > 0]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    labels = list(dict.fromkeys(p[0] for p in points))
    for i, label in enumerate(labels):
        ps = [p for p in points if p[0] == label]
        ax.scatter([p[1] for p in ps], [p[2] for p in ps], color=COLORS[i % 10], label=label, s=28)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score")
    ax.set_title("price against quality (one point per run)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
