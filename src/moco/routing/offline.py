"""Offline router evaluation (the RouteLLM way): with every model's answer to every query computed once, any
routing rule is evaluated without a model call, as quality vs. the share of calls to the most expensive model.

A rule is, per query, the list of models it calls (in order) and the one whose answer it keeps. Its point:
quality = mean score of the kept answers; strong_share = share of queries that call the most expensive model;
cost = mean summed cost of the calls; calls = mean number of calls. Families evaluated here:

- single: each model alone;
- random: the cheapest model, or with probability p the most expensive one (expected values, exact);
- oracle: the cheapest model with the query's best score (right answers: the cheapest right model; all wrong:
  the cheapest; reward scores, which may all be negative: the highest reward) — an upper bound no router reaches;
- cascade: all models cheapest first, each level's threshold the p-quantile of its model's dev confidences
  (the api_cascade rule); p sweeps a grid;
- cascade_2: the cheapest then the most expensive model only (a binary confidence router), when M > 2;
- decisions: routes recorded by other runs (their predictions' `routed_to`, or a cascade's visited levels),
  re-scored on these answers (the routers' own calls are not counted).

APGR (RouteLLM): the area under the performance-gap-recovered curve, PGR = (quality - q_cheapest) /
(q_strongest - q_cheapest), over strong_share in [0, 1] (the curve is closed by the two single models).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from moco.errors import DataError
from moco.routing.thresholds import calibrate, stop_level


@dataclass
class Table:
    """scores[m][i] and confidences[m][i] of model m on query i of one split (models in pool order)."""

    names: list[str]
    ids: list[str]
    scores: list[list[float]]
    confidences: list[list[float | None]]


@dataclass
class Route:
    """One rule applied to a split: the models called per query (pool positions, in order) and the answerer."""

    calls: list[list[int]]
    answerer: list[int]


@dataclass
class Point:
    router: str
    setting: str
    split: str
    quality: float
    strong_share: float
    cost: float
    calls: float
    param: float | None = None


def order_by_cost(costs: Sequence[float]) -> list[int]:
    return sorted(range(len(costs)), key=lambda i: (costs[i], i))


def point(table: Table, route: Route, costs: Sequence[float], router: str, setting: str, split: str,
          param: float | None = None) -> Point:
    n = max(1, len(table.ids))
    strong = order_by_cost(costs)[-1]
    quality = sum(table.scores[a][i] for i, a in enumerate(route.answerer)) / n
    return Point(router, setting, split, round(quality, 6),
                 round(sum(strong in c for c in route.calls) / n, 6),
                 round(sum(sum(costs[m] for m in c) for c in route.calls) / n, 6),
                 round(sum(len(c) for c in route.calls) / n, 6), param)


def cascade_route(table: Table, order: Sequence[int], thresholds: Sequence[float]) -> Route:
    calls, answerer = [], []
    for i in range(len(table.ids)):
        level = stop_level([table.confidences[m][i] for m in order], thresholds)
        calls.append(list(order[: level + 1]))
        answerer.append(order[level])
    return Route(calls, answerer)


def cascade_thresholds(dev: Table, order: Sequence[int], percentage: float) -> list[float]:
    return calibrate([dev.confidences[m] for m in order[:-1]], percentage)


def oracle_pick(table: Table, order: Sequence[int], i: int) -> int:
    """The cheapest model (in cost `order`) whose score on query i is the best of all models. "Right" is the
    best score, not a positive one: with reward scores below zero the best (least negative) model still wins."""
    best = max(table.scores[k][i] for k in range(len(table.names)))
    return next(m for m in order if table.scores[m][i] >= best)


def sweep(dev: Table, test: Table, costs: Sequence[float], percentages: Sequence[float],
          decisions: dict[str, Route] | None = None) -> list[Point]:
    """Every family's points on dev and on test (decisions: test only)."""
    order = order_by_cost(costs)
    cheap, strong = order[0], order[-1]
    points: list[Point] = []
    cascades = [("cascade", order)] + ([("cascade_2", [cheap, strong])] if len(order) > 2 else [])
    for split, table in (("dev", dev), ("test", test)):
        n = len(table.ids)
        for m, name in enumerate(table.names):
            points.append(point(table, Route([[m]] * n, [m] * n), costs, "single", name, split))
        qc, qs = (sum(table.scores[m]) / max(1, n) for m in (cheap, strong))
        for p in percentages:
            points.append(Point("random", f"p={p:.2f}", split, round((1 - p) * qc + p * qs, 6), round(p, 6),
                                round((1 - p) * costs[cheap] + p * costs[strong], 6), 1.0, p))
        oracle = [oracle_pick(table, order, i) for i in range(n)]
        points.append(point(table, Route([[a] for a in oracle], oracle), costs, "oracle", "best per query", split))
        for family, levels in cascades:
            for p in percentages:
                th = cascade_thresholds(dev, levels, p)
                points.append(point(table, cascade_route(table, levels, th), costs, family,
                                    f"p={p:.2f} thresholds={[round(t, 4) for t in th]}", split, p))
    for label, route in (decisions or {}).items():
        points.append(point(test, route, costs, "decisions", label, "test"))
    return points


def apgr(points: Sequence[Point], family: str, split: str, q_cheap: float, q_strong: float) -> float | None:
    """Area under PGR vs. strong_share for one family, closed by (0, q_cheap) and (1, q_strong)."""
    gap = q_strong - q_cheap
    if abs(gap) < 1e-12:
        return None
    curve = sorted({(p.strong_share, p.quality) for p in points if p.router == family and p.split == split})
    if not curve:
        return None
    xs = [0.0] + [s for s, _ in curve] + [1.0]
    ys = [q_cheap] + [q for _, q in curve] + [q_strong]
    area = sum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2 for k in range(len(xs) - 1))
    return round((area - q_cheap) / gap, 6)


def decisions_from_run(run_dir: str | Path, test: Table) -> Route:
    """The routes another run took on the same test queries (by example id)."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.exists():
        raise DataError(f"decisions: {path} not found (give a run directory of a routing method)")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    by_id = {str(r["id"]): r.get("trace") or {} for r in rows}
    pos = {name: m for m, name in enumerate(test.names)}
    calls, answerer = [], []
    for qid in test.ids:
        tr = by_id.get(str(qid))
        if tr is None:
            raise DataError(f"decisions: {path} has no prediction for test item '{qid}' (another task or slice?)")
        routed = tr.get("routed_to") or tr.get("answered_by")
        if routed not in pos:
            raise DataError(f"decisions: {path}, item '{qid}': routed to '{routed}', not a model of this pool "
                            f"({', '.join(test.names)})")
        visited = [v["model"] for v in tr.get("levels", [])] or [routed]
        calls.append([pos[v] for v in visited if v in pos])
        answerer.append(pos[routed])
    return Route(calls, answerer)


def write_report(points: Sequence[Point], out_dir: Path, title: str, plot: bool = True) -> list[Path]:
    """router_eval.csv (every point), router_eval.md (test points), router_eval.png (test curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "router_eval.csv", out_dir / "router_eval.md"]
    with open(files[0], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(points[0])))
        w.writeheader()
        for p in points:
            w.writerow(asdict(p))
    lines = [f"# {title}", "", "| router | setting | quality | share to most expensive | cost/query | calls/query |",
             "|---|---|---|---|---|---|"]
    for p in points:
        if p.split == "test":
            lines.append(f"| {p.router} | {p.setting} | {p.quality:.3f} | {p.strong_share:.3f} | {p.cost:.3f} | {p.calls:.2f} |")
    files[1].write_text("\n".join(lines) + "\n")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        test = [p for p in points if p.split == "test"]
        for family, style in (("random", "k--"), ("cascade", "o-"), ("cascade_2", "s-")):
            curve = [(p.strong_share, p.quality) for p in sorted(
                (p for p in test if p.router == family), key=lambda p: p.param or 0.0)]  # along the threshold
            if curve:
                ax.plot([c[0] for c in curve], [c[1] for c in curve], style, label=family, alpha=0.8)
        for p in test:
            if p.router in ("single", "oracle", "decisions"):
                marker = {"single": "D", "oracle": "*", "decisions": "^"}[p.router]
                ax.scatter([p.strong_share], [p.quality], marker=marker, s=70, zorder=3)
                label = {"oracle": "oracle", "decisions": Path(p.setting).name}.get(p.router, p.setting)
                ax.annotate(label, (p.strong_share, p.quality),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("share of queries calling the most expensive model")
        ax.set_ylabel("quality (test)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(out_dir / "router_eval.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files
