"""Expand a sweep into cells: one experiment config per (method, pool, task), deduplicated across analyses.

A cell is identified by the hash of its resolved config (method defaults written out), so the same
experiment asked for by two analyses (the full pool of a scaling curve is also the Table 1 pool) runs once
and serves both: each cell keeps the list of its `uses`. Combinations that cannot exist before any model
is loaded (a scaling size larger than the pool) become cells with a `skip_reason`.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from moco.analysis.sweep_config import MethodEntry, SweepConfig
from moco.config import ExperimentConfig, ModelSpec
from moco.errors import ConfigError
from moco.methods.registry import get_method
from moco.models.pool import ModelPool
from moco.tasks.registry import resolve_task

BASELINE = "single_model"
LIAR_MODEL = "scripted:liar"
# compute-matched baselines added to Table 1 (sweep `matched_baselines`) unless the sweep has the method already
MATCHED = {"text_majority_vote": "majority vote (same samples)", "text_self_moa": "Self-MoA (compute-matched)"}
MOA = "text_mixture_of_agents"


@dataclass
class Method:
    label: str
    name: str  # registry name
    params: dict[str, Any]  # resolved: defaults written out
    roles: dict[str, Any]
    matched: bool = False  # a compute-matched baseline added by the sweep (Table 1 only, not the analyses)
    # matched Self-MoA: (proposer layers L-1, proposers or None = the pool) of the MoA row it matches; its
    # `samples` is set per pool to (L-1) x proposers, MoA's proposals per question
    match_moa: tuple[int, int | None] | None = None

    @property
    def baseline(self) -> bool:
        return self.name == BASELINE


@dataclass
class Cell:
    key: str
    config: ExperimentConfig | None
    uses: list[dict[str, Any]] = field(default_factory=list)
    adversary: str | None = None  # "liar": the scripted liar backend is built from the task at run time
    skip_reason: str | None = None

    @property
    def dir_name(self) -> str:
        u = self.uses[0]
        seed = f"__seed{u['seed']}" if u.get("multi_seed") else ""
        return "__".join(slug(x) for x in (u["task"], u["pool"], u["label"])) + f"{seed}__{self.key[:8]}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-")[:48] or "x"


def config_key(cfg: ExperimentConfig, adversary: str | None = None) -> str:
    blob = json.dumps({"cfg": cfg.model_dump(mode="json", exclude_none=True, exclude={"max_failed"}),  # a tolerance
                       "adversary": adversary}, sort_keys=True)  # is not another experiment: same cell, same folder
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve_methods(sweep: SweepConfig) -> list[Method]:
    """Registry names, resolved params and unique labels; the baseline added when asked for."""
    entries = list(sweep.methods)
    if sweep.baseline and not any(get_method(e.method).name == BASELINE for e in entries):
        entries.insert(0, MethodEntry(method=BASELINE))
    resolved: list[Method] = []
    counts: dict[str, int] = {}
    for e in entries:
        info = get_method(e.method)
        counts[info.name] = counts.get(info.name, 0) + 1
    for e in entries:
        info = get_method(e.method)
        p = info.parse_params(e.params)
        params = p.model_dump(mode="json")
        label = e.label
        if label is None:
            label = info.name
            if counts[info.name] > 1:
                defaults = info.params().model_dump(mode="json")
                diff = {k: v for k, v in params.items() if defaults.get(k) != v}
                if diff:
                    label += "(" + ",".join(f"{k}={v}" for k, v in diff.items()) + ")"
        resolved.append(Method(label, info.name, params, dict(e.roles)))
    if sweep.matched_baselines:
        resolved += matched_baselines(resolved)
    labels = [m.label for m in resolved]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"sweep methods: two rows are both labelled '{dup[0]}': give each a distinct `label`")
    return resolved


def matched_baselines(methods: list[Method]) -> list[Method]:
    """The compute-matched rows the sweep lacks: majority vote over the same first-round samples, and Self-MoA
    with the calls of a Mixture-of-Agents. With MoA rows in the sweep, one Self-MoA per distinct MoA budget
    ((L-1) x proposers samples + 1 aggregation = that MoA's calls per question); without, Self-MoA's own
    default, which is compute-matched to MoA at its default layers (moco.methods.text.self_moa)."""
    have = {m.name for m in methods}
    out = []
    for name, label in MATCHED.items():
        if name in have:
            continue
        info = get_method(name)
        params = info.parse_params({}).model_dump(mode="json")
        budgets: dict[tuple[int, int | None], str] = {}
        for m in methods:
            if name == "text_self_moa" and m.name == MOA:
                props = m.params.get("proposers")
                budgets.setdefault((int(m.params["layers"]) - 1, len(props) if props else None), m.label)
        if not budgets:
            out.append(Method(label, name, params, {}, matched=True))
        for budget, moa_label in budgets.items():
            lab = label if len(budgets) == 1 else f"Self-MoA (compute-matched to {moa_label})"
            out.append(Method(lab, name, params, {}, matched=True, match_moa=budget))
    return out


def model_names(specs: list[ModelSpec]) -> list[str]:
    """The names the pool gives these models (computed without loading anything)."""
    return [h.name for h in ModelPool(list(specs)).handles]


def _copy_spec(spec: ModelSpec, copy: int) -> ModelSpec:
    if copy == 0 or spec.name is None:
        return spec
    return spec.model_copy(update={"name": f"{spec.name}#{copy + 1}"})


class _Builder:
    def __init__(self, sweep: SweepConfig, data_dir: str | None):
        self.sweep = sweep
        self.methods = resolve_methods(sweep)
        self.by_label = {m.label: m for m in self.methods}
        self.cells: dict[str, Cell] = {}
        self.tasks = {}
        for t in sweep.tasks:
            info = resolve_task(t.name, data_dir or t.data_dir)  # unknown task: one-line error now, not later
            self.tasks[t.name] = (t, t.domain or info.domain, info.name)

    def pick_methods(self, labels: list[str] | None, with_baseline: bool) -> list[Method]:
        if labels is None:
            chosen = [m for m in self.methods if not m.baseline and not m.matched]
        else:
            chosen = []
            for lab in labels:
                if lab in self.by_label:
                    chosen.append(self.by_label[lab])
                else:
                    hits = [m for m in self.methods if m.name == get_method(lab).name]
                    if not hits:
                        raise ConfigError(f"sweep analyses: method '{lab}' is not a row of `methods` "
                                          f"(labels: {', '.join(self.by_label)})")
                    chosen.extend(hits)
        if with_baseline:
            chosen = [m for m in self.methods if m.baseline][:1] + [m for m in chosen if not m.baseline]
        return chosen

    def task_names(self, names: list[str] | None) -> list[str]:
        return list(names) if names is not None else list(self.tasks)

    def add(self, method: Method, task: str, pool_label: str, specs: list[ModelSpec], use: dict[str, Any],
            adversary: str | None = None, skip_reason: str | None = None) -> list[Cell]:
        """One cell per seed of the sweep (each use records its seed; `multi_seed` marks a sweep with `seeds`)."""
        seeded = self.sweep.seeds is not None
        return [self._add(method, task, pool_label, specs, {**use, "seed": s, **({"multi_seed": True} if seeded else {})},
                          adversary, skip_reason, s) for s in self.sweep.seed_list]

    def _add(self, method: Method, task: str, pool_label: str, specs: list[ModelSpec], use: dict[str, Any],
             adversary: str | None, skip_reason: str | None, seed: int) -> Cell:
        tset, domain, shown = self.tasks[task]
        use = {"pool": pool_label, "label": method.label, "method": method.name, "task": shown, "domain": domain,
               **use}
        if skip_reason:
            key = hashlib.sha256(json.dumps(use, sort_keys=True).encode()).hexdigest()
            cell = self.cells.setdefault(key, Cell(key, None, [], skip_reason=skip_reason))
        else:
            s = self.sweep
            params = method.params
            if method.match_moa is not None:  # the MoA's proposals on this pool
                layers, proposers = method.match_moa
                params = {**params, "samples": layers * (proposers or len(specs))}
            cfg = ExperimentConfig(method=method.name, task=tset.settings(), models=list(specs), params=params,
                                   decoding=s.decoding, hardware=s.hardware, roles=method.roles, seed=seed,
                                   max_failed=s.max_failed)
            key = config_key(cfg, adversary)
            cell = self.cells.setdefault(key, Cell(key, cfg, [], adversary))
        cell.uses.append(use)
        return cell


def expand(sweep: SweepConfig, data_dir: str | None = None) -> list[Cell]:
    """Every cell of the sweep except model-selection cells (their pools are chosen at run time)."""
    b = _Builder(sweep, data_dir)
    for pname, pool in sweep.pools.items():
        if not pool.in_table:
            continue
        for task in b.task_names(None):
            for m in b.methods:
                b.add(m, task, pname, pool.models, {"analysis": "table", "base_pool": pname})
    a = sweep.analyses
    if a.scaling:
        models = sweep.pools[a.scaling.pool].models
        for n in a.scaling.sizes:
            for task in b.task_names(a.scaling.tasks):
                for m in b.pick_methods(a.scaling.methods, with_baseline=sweep.baseline):
                    reason = (f"scaling to {n} models needs a pool of at least {n}; pool '{a.scaling.pool}' has "
                              f"{len(models)}") if n > len(models) else None
                    b.add(m, task, f"{a.scaling.pool}[:{n}]", models[:n],
                          {"analysis": "scaling", "base_pool": a.scaling.pool, "n_models": n}, skip_reason=reason)
    if a.diversity:
        d = a.diversity
        models = sweep.pools[d.pool].models
        for u in sorted(d.unique):
            copies = d.total // u
            specs = [_copy_spec(models[i], c) for c in range(copies) for i in range(min(u, len(models)))]
            reason = (f"{u} unique models needed; pool '{d.pool}' has {len(models)}") if u > len(models) else None
            for task in b.task_names(d.tasks):
                for m in b.pick_methods(d.methods, with_baseline=sweep.baseline):
                    b.add(m, task, f"{d.pool} {u}x{copies}", specs,
                          {"analysis": "diversity", "base_pool": d.pool, "unique": u, "copies": copies},
                          skip_reason=reason)
    if a.leave_one_out:
        lo = a.leave_one_out
        models = sweep.pools[lo.pool].models
        names = model_names(models)
        for i, name in enumerate(names):
            rest = models[:i] + models[i + 1:]
            for task in b.task_names(lo.tasks):
                for m in b.pick_methods(lo.methods, with_baseline=False):
                    b.add(m, task, f"{lo.pool} w/o {name}", rest,
                          {"analysis": "leave_one_out", "base_pool": lo.pool, "without": name, "without_index": i})
    if a.adversarial:
        ad = a.adversarial
        models = sweep.pools[ad.pool].models
        idx = ad.replace if ad.replace >= 0 else len(models) + ad.replace
        if not 0 <= idx < len(models):
            raise ConfigError(f"sweep analyses.adversarial.replace: index {ad.replace} is outside pool "
                              f"'{ad.pool}' ({len(models)} models)")
        replaced = model_names(models)[idx]
        if ad.kind == "liar":
            bad = ModelSpec(model=LIAR_MODEL, name="liar", description="scripted liar: confidently wrong")
        else:
            bad = models[idx].model_copy(update={"role_prompt": ad.role_prompt, "name": f"adversary({replaced})"})
        attacked = models[:idx] + [bad] + models[idx + 1:]
        for task in b.task_names(ad.tasks):
            for m in b.pick_methods(ad.methods, with_baseline=sweep.baseline):
                common = {"analysis": "adversarial", "base_pool": ad.pool, "replaced": replaced, "kind": ad.kind}
                b.add(m, task, ad.pool, models, {**common, "variant": "clean"})
                b.add(m, task, f"{ad.pool} adv:{replaced}", attacked, {**common, "variant": "attacked"},
                      adversary="liar" if ad.kind == "liar" else None)
    return list(b.cells.values())


def selection_cells(sweep: SweepConfig, choices: dict[str, dict[str, list[list[int]]]],
                    data_dir: str | None = None) -> list[Cell]:
    """Cells of the model-selection analysis, given the chosen subsets: task -> strategy -> [indices, ...]
    (several subsets for `random`). The full pool's best single model is the no-collaboration baseline."""
    sel = sweep.analyses.selection
    if sel is None:
        return []
    b = _Builder(sweep, data_dir)
    models = sweep.pools[sel.pool].models
    names = model_names(models)
    for task, by_strategy in choices.items():
        base = b.pick_methods([], with_baseline=True)
        for m in base:
            b.add(m, task, sel.pool, models, {"analysis": "selection", "base_pool": sel.pool, "strategy": "none"})
        for strategy, subsets in by_strategy.items():
            for r, idx in enumerate(subsets):
                specs = [models[i] for i in idx]
                label = f"{sel.pool} {strategy}" + (f"#{r + 1}" if strategy == "random" else "")
                for m in b.pick_methods(sel.methods, with_baseline=False):
                    b.add(m, task, label, specs, {"analysis": "selection", "base_pool": sel.pool, "strategy": strategy,
                                                  "repeat": r, "chosen": [names[i] for i in idx]})
    return list(b.cells.values())
