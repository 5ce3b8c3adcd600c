"""One setting (a method on a pool and task, for one analysis) run with several seeds: its score is the mean
over seeds, its spread the standard deviation over seeds, and its interval the BCa bootstrap over items of
each item's mean over seeds (items are the sampling unit; seeds are repeated measurements of an item)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from moco.analysis.records import Entry, item_scores, seed_groups, setting_key
from moco.scoring.stats import Interval, mean_ci, mean_std


@dataclass
class Setting:
    entry: Entry  # the first seed's entry (its use names the setting)
    runs: list[Entry] = field(default_factory=list)  # finished seeds

    @property
    def ok(self) -> bool:
        return bool(self.runs)

    @property
    def per_seed(self) -> dict[int, float]:
        return {int(e.get("seed", 0) or 0): e.run.score for e in self.runs}

    @property
    def score(self) -> float | None:
        return mean_std(list(self.per_seed.values()))[0]

    @property
    def std(self) -> float | None:
        return mean_std(list(self.per_seed.values()))[1]

    def item_means(self) -> dict[int, float]:
        """index -> the item's score averaged over the finished seeds (items every seed scored)."""
        acc: dict[int, list[float]] = defaultdict(list)
        for e in self.runs:
            for idx, (_id, p) in item_scores(e.run).items():
                if p.score is not None:
                    acc[idx].append(p.score)
        return {i: sum(v) / len(v) for i, v in acc.items() if len(v) == len(self.runs)}

    def ci(self) -> Interval:
        if not self.runs:
            return Interval(None, None, "not run")
        if len(self.runs) == 1:  # the run's own interval, as the runner wrote it
            m = self.runs[0].run.record
            return Interval(m.ci95[0], m.ci95[1]) if m.ci95 else Interval(None, None, m.ci_note or "no interval")
        return mean_ci(list(self.item_means().values()))

    def text(self) -> str:
        """'0.512 ± 0.020 [0.430–0.590]': mean (± std over seeds) and the 95% interval."""
        if self.score is None:
            return ""
        s = f"{self.score:.3f}" + (f" ± {self.std:.3f}" if self.std is not None else "")
        return f"{s} [{self.ci().text()}]"


def settings(entries: list[Entry]) -> list[Setting]:
    """Entries grouped into settings (the same use but for the seed), in their first order."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(setting_key(e), []).append(e)
    return [Setting(es[0], [e for e in seed_groups(es) if e.ok]) for es in groups.values()]
