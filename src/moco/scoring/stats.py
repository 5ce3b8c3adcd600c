"""Intervals and paired tests over items, built on `scipy.stats` (BCa bootstrap, exact binomial test).

- `mean_ci`: the 95% BCa bootstrap interval of a mean over items (seeded, so reproducible). No interval when
  it cannot mean anything: fewer than two items, or every item scored the same (a bootstrap of identical
  values is a point, not an interval) — the `note` says which.
- `paired_test`: method vs baseline on the same items. Each stratum (a task) is resampled on its own, so a
  domain's macro-average over tasks keeps its weights; the difference gets a BCa interval and a two-sided
  bootstrap p-value; for 0/1 scores McNemar's exact test on the discordant pairs is computed too.
- `holm` / `benjamini_hochberg`: adjusted p-values for a family of tests (one Table 1).
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

N_RESAMPLES = 2000
TOO_FEW = "n too small"
ALL_EQUAL = "all scores equal"


@dataclass
class Interval:
    lo: float | None
    hi: float | None
    note: str | None = None  # why there is no interval

    @property
    def ok(self) -> bool:
        return self.lo is not None and self.hi is not None

    def as_list(self) -> list[float] | None:
        return [self.lo, self.hi] if self.ok else None

    def text(self, digits: int = 3) -> str:
        return f"{self.lo:.{digits}f}–{self.hi:.{digits}f}" if self.ok else f"({self.note})"


def _bootstrap(samples: Sequence[np.ndarray], statistic, level: float, seed: int, n_resamples: int):
    """scipy's BCa bootstrap; each sample resampled on its own (paired=False = stratified over samples)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate cases are caught before; BCa's edge warnings are not news
        return sps.bootstrap(tuple(samples), statistic, n_resamples=n_resamples, confidence_level=level,
                             method="BCa", vectorized=True, rng=np.random.default_rng(seed))


def _weighted_means(weights: Sequence[float]):
    w = np.asarray(weights, dtype=float)

    def stat(*samples, axis=-1):
        return sum(wi * np.mean(s, axis=axis) for wi, s in zip(w, samples))
    return stat


def _degenerate(samples: Sequence[np.ndarray]) -> str | None:
    if sum(len(s) for s in samples) < 2 or any(len(s) < 2 for s in samples):
        return TOO_FEW
    if all(np.ptp(s) == 0 for s in samples):
        return ALL_EQUAL
    return None


def _interval(res, note_if_nan: str = "bootstrap interval undefined") -> Interval:
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    if dist.size and np.all(np.isfinite(dist)) and np.ptp(dist) == 0:  # e.g. a ratio whose numerator is always 0
        return Interval(None, None, "every resample gives the same value")
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Interval(None, None, note_if_nan)
    return Interval(lo, hi)


def mean_ci(scores: Sequence[float], level: float = 0.95, seed: int = 0, n_resamples: int = N_RESAMPLES) -> Interval:
    """BCa bootstrap interval of the mean over items."""
    x = np.asarray(list(scores), dtype=float)
    note = _degenerate([x])
    if note:
        return Interval(None, None, note)
    return _interval(_bootstrap([x], _weighted_means([1.0]), level, seed, n_resamples))


def strata_mean_ci(groups: Sequence[Sequence[float]], level: float = 0.95, seed: int = 0,
                   n_resamples: int = N_RESAMPLES, weights: Sequence[float] | None = None) -> Interval:
    """Interval of the macro-average of several groups' means (a domain over its tasks; or the
    `weights`-weighted sum of their means), each group resampled within itself."""
    keep = [k for k, g in enumerate(groups) if len(g)]
    xs = [np.asarray(list(groups[k]), dtype=float) for k in keep]
    if not xs:
        return Interval(None, None, TOO_FEW)
    note = _degenerate(xs)
    if note:
        return Interval(None, None, note)
    w = [1.0] * len(xs) if weights is None else [float(weights[k]) for k in keep]
    w = [x / sum(w) for x in w]
    return _interval(_bootstrap(xs, _weighted_means(w), level, seed, n_resamples))


def paired_stat_ci(columns: Sequence[Sequence[float]], statistic, level: float = 0.95, seed: int = 0,
                   n_resamples: int = N_RESAMPLES) -> Interval:
    """Interval of `statistic(means)` where means[j] is the mean of column j, the columns being scores of the
    same items (e.g. one column per leave-one-out pool): items resampled together (scipy, paired=True), so
    the statistic (the mean over pools, their standard deviation) keeps the items' correlation."""
    cols = [np.asarray(list(c), dtype=float) for c in columns]
    if not cols or len({len(c) for c in cols}) != 1:
        raise ValueError("paired_stat_ci: columns of the same items, as many in each")
    if len(cols[0]) < 2:
        return Interval(None, None, TOO_FEW)
    if all(np.ptp(c) == 0 for c in cols):
        return Interval(None, None, ALL_EQUAL)

    def stat(*xs, axis=-1):
        return statistic(np.stack([np.mean(x, axis=axis) for x in xs], axis=-1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap(tuple(cols), stat, paired=True, n_resamples=n_resamples, confidence_level=level,
                            method="BCa", vectorized=True, rng=np.random.default_rng(seed))
    return _interval(res)


def ratio_ci(num: Sequence[float], den: Sequence[float], level: float = 0.95, seed: int = 0,
             n_resamples: int = N_RESAMPLES) -> Interval:
    """Interval of sum(num) / sum(den) over paired items (e.g. a relative drop), items resampled together."""
    a, b = np.asarray(list(num), dtype=float), np.asarray(list(den), dtype=float)
    if len(a) < 2:
        return Interval(None, None, TOO_FEW)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Interval(None, None, ALL_EQUAL)
    if b.sum() == 0:
        return Interval(None, None, "denominator is 0")

    def stat(x, y, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(x, axis=axis) / np.sum(y, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap((a, b), stat, paired=True, n_resamples=n_resamples, confidence_level=level,
                            method="BCa", vectorized=True, rng=np.random.default_rng(seed))
    if not np.all(np.isfinite(res.bootstrap_distribution)):  # a bound of ±inf is no interval
        return Interval(None, None, "undefined: some resamples have a zero denominator")
    return _interval(res)


def bootstrap_ci(scores: list[float], n_resamples: int = N_RESAMPLES, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | None:
    """(lo, hi) of the mean, or None when there is no honest interval (see `mean_ci`)."""
    iv = mean_ci(scores, level, seed, n_resamples)
    return (iv.lo, iv.hi) if iv.ok else None


def summarize(scores: list[float], unparsed: int, failed: int = 0, seed: int = 0) -> dict:
    """Mean, 95% BCa bootstrap interval (None, with `ci_note`, when there is none), and how many items were
    scored / unparsed / failed."""
    iv = mean_ci(scores, seed=seed)
    out = {
        "score": float(np.mean(scores)) if scores else float("nan"),
        "ci95": iv.as_list(),
        "n": len(scores),
        "unparsed": unparsed,
        "failed": failed,
    }
    if not iv.ok:
        out["ci_note"] = iv.note
    return out


# ----------------------------------------------------------------------------------------------- paired tests
@dataclass
class McNemar:
    better: int  # items the method gets right and the baseline wrong
    worse: int  # items the baseline gets right and the method wrong
    p: float  # two-sided exact binomial test on the discordant pairs


@dataclass
class PairedResult:
    n: int  # paired items (summed over strata)
    diff: float  # method - baseline (macro-average over strata)
    ci: Interval
    p_bootstrap: float | None
    mcnemar: McNemar | None  # when every paired score is 0 or 1
    test: str  # which p decides: "mcnemar" | "bootstrap" | "sign" | "none"
    note: str | None = None

    @property
    def p(self) -> float | None:
        if self.test == "mcnemar":
            return self.mcnemar.p
        return self.p_bootstrap


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """McNemar's exact test for paired 0/1 outcomes: under H0 a discordant pair goes either way with
    probability 1/2, so the count `better` is Binomial(better + worse, 1/2)."""
    better = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
    worse = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
    n = better + worse
    p = 1.0 if n == 0 else float(sps.binomtest(better, n, 0.5, alternative="two-sided").pvalue)
    return McNemar(better, worse, p)


def _binary(xs: Sequence[float]) -> bool:
    return all(x in (0.0, 1.0) for x in xs)


def paired_test(method: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]], level: float = 0.95,
                seed: int = 0, n_resamples: int = N_RESAMPLES, prefer_mcnemar: bool = True,
                weights: Sequence[float] | None = None) -> PairedResult:
    """Method vs baseline, item by item. `method[k][i]` and `baseline[k][i]` are the two scores of item i of
    stratum k (a task; with seeds, each score is the item's mean over seeds). The statistic is the
    macro-average over strata of the mean difference (or the `weights`-weighted sum of the strata's mean
    differences); its bootstrap resamples items within each stratum.

    p-values: the bootstrap's is two-sided against a distribution shifted to the null,
    (1 + #|d* - d| >= |d|) / (B + 1). McNemar's exact test is computed when all scores are 0/1 and decides
    when there is one stratum (the statistic is then exactly the one McNemar tests). When every difference
    of every stratum is the same value the bootstrap has no spread: the exact sign test on the items decides.
    """
    if len(method) != len(baseline) or any(len(a) != len(b) for a, b in zip(method, baseline)):
        raise ValueError("paired_test: method and baseline must have the same items in the same strata")
    if weights is not None and len(weights) != len(method):
        raise ValueError("paired_test: one weight per stratum")
    keep = [k for k, a in enumerate(method) if len(a)]
    diffs = [np.asarray(method[k], dtype=float) - np.asarray(baseline[k], dtype=float) for k in keep]
    n = sum(len(d) for d in diffs)
    if n == 0:
        return PairedResult(0, float("nan"), Interval(None, None, TOO_FEW), None, None, "none", "no paired items")
    w = [1 / len(diffs)] * len(diffs) if weights is None else [weights[k] for k in keep]
    w = [x / sum(w) for x in w]
    diff = float(sum(wi * d.mean() for wi, d in zip(w, diffs)))
    flat_a = [x for a in method for x in a]
    flat_b = [x for b in baseline for x in b]
    mc = mcnemar_exact(flat_a, flat_b) if _binary(flat_a) and _binary(flat_b) else None
    single = len(diffs) == 1
    note = _degenerate(diffs)
    if note == TOO_FEW:
        return PairedResult(n, diff, Interval(None, None, TOO_FEW), None, mc,
                            "mcnemar" if mc and single and prefer_mcnemar else "none", TOO_FEW)
    if note == ALL_EQUAL:
        ci = Interval(None, None, "all differences equal")
        if diff == 0:
            return PairedResult(n, diff, ci, 1.0, mc, "mcnemar" if mc and single and prefer_mcnemar else "bootstrap")
        pos = sum(int((d > 0).sum()) for d in diffs)
        nz = sum(int((d != 0).sum()) for d in diffs)
        p_sign = float(sps.binomtest(pos, nz, 0.5).pvalue) if nz else 1.0
        return PairedResult(n, diff, ci, p_sign, mc, "mcnemar" if mc and single and prefer_mcnemar else "sign",
                            "all differences equal: exact sign test")
    # The resampling and the BCa interval are scipy's (each stratum one sample: resampled within itself). What
    # scipy.stats.bootstrap cannot give is a p-value (it returns an interval and the resampled statistics), so
    # the two-sided p is read off its bootstrap_distribution shifted to the null (mean 0); a permutation test
    # (scipy.stats.permutation_test, sign flips) would test exchangeability instead, a different hypothesis.
    res = _bootstrap(diffs, _weighted_means(w), level, seed, n_resamples)
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    p_boot = float((1 + np.sum(np.abs(dist - diff) >= abs(diff) - 1e-12)) / (len(dist) + 1))
    test = "mcnemar" if mc is not None and single and prefer_mcnemar else "bootstrap"
    return PairedResult(n, diff, _interval(res), min(1.0, p_boot), mc, test)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate, valid under any dependence). Written here:
    scipy has no Holm adjustment (only false_discovery_control), and statsmodels is not a dependency."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate): scipy.stats.false_discovery_control."""
    if not len(pvalues):
        return []
    return [float(x) for x in sps.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")]


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg, "none": lambda ps: list(ps)}


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    if method not in CORRECTIONS:
        raise ValueError(f"unknown multiple-comparison correction '{method}' (choose from {', '.join(CORRECTIONS)})")
    return CORRECTIONS[method](pvalues)


def mean_std(xs: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for fewer than two values."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)
