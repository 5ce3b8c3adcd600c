"""Cost of every run: measured calls, tokens and seconds (from metrics.json phases), FLOPs estimated from
model sizes (2 · parameters · tokens processed, per model), and the paper's complexity formulas (Table 4).

Parameter counts come from safetensors headers (shapes only: nothing is loaded), so a 70B checkpoint costs
a few kilobytes of reading. Endpoint models have no local weights: give their size in the sweep's
`param_counts`. Training FLOPs of trained methods are not measured (their tokens are not traced); the
Table 4 training formula is shown beside them.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moco.analysis.records import Collection, Run
from moco.scoring.stats import Interval


# ------------------------------------------------------------------------------------- parameter counts
def safetensors_params(path: Path) -> int:
    """Number of parameters in one .safetensors file, from its JSON header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def folder_params(folder: Path) -> int | None:
    """Parameters of a Hugging Face model (or adapter) folder; None without safetensors files."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    return sum(safetensors_params(f) for f in files)


def _model_folder(model: str, revision: str | None = None) -> Path | None:
    from moco.models import builtin

    if builtin.is_embedded(model):
        d = builtin.model_dir(model)
        return d if (d / ".complete").exists() else None
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if model.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(model, revision=revision, local_files_only=True))
        except Exception:
            return None
    return None


def spec_params(spec: dict[str, Any], overrides: dict[str, float] | None = None) -> float | None:
    """Parameters of a model spec (config dict), or None when unknown (scripted, endpoint, not on disk)."""
    overrides = overrides or {}
    for key in (spec.get("name"), spec.get("model")):
        if key and key in overrides:
            return float(overrides[key])
    kind = spec.get("backend", "auto")
    model = str(spec.get("model", ""))
    if kind in ("scripted", "openai") or spec.get("endpoint") or model.startswith("scripted"):
        return None
    folder = _model_folder(model, spec.get("revision"))
    n = folder_params(folder) if folder else None
    if n is not None and spec.get("adapter"):
        a = folder_params(Path(spec["adapter"]).expanduser())
        n += a or 0
    return float(n) if n is not None else None


# ------------------------------------------------------------------------------------- Table 4 formulas
@dataclass(frozen=True)
class Complexity:
    paper_name: str
    training: str
    inference: str
    notes: str = ""
    # (n, D, m, k sizes, params) -> inference FLOPs, when every quantity is known
    estimate: Callable[[int, int, int, list[float], dict], float | None] | None = None


def _r(p: dict) -> float | None:
    r = p.get("rounds", p.get("round"))
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else None


TABLE4: dict[str, Complexity] = {c.paper_name.lower().replace(" ", "").replace("-", ""): c for c in [
    Complexity("Cascade", "/", "2Dm·Σᵢ kᵢ/2^(i−1)", "each level defers 50%",
               lambda n, D, m, k, p: 2 * D * m * sum(x / 2 ** i for i, x in enumerate(k))),
    Complexity("Graph Router", "2nDm·max(kᵢ)", "2Dm·max(kᵢ)", "GNN training omitted",
               lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("Prompt Router", "/", "2Dm·(k_r + max(kᵢ))", "router k_r"),
    Complexity("LLM Router", "2nDm·max(kᵢ) + 6rDM·k_r", "2Dm·(k_r + max(kᵢ))", "router k_r"),
    Complexity("Switch Generate", "6rDm·k_s", "2Dm·(k_s/patch + max(kᵢ))", "switcher k_s, rounds r, patch size"),
    Complexity("Mentor Collab", "2nDm·max(kᵢ)", "2Dm·mean(kᵢ)", "MLP training omitted",
               lambda n, D, m, k, p: 2 * D * m * sum(k) / len(k)),
    Complexity("Co-LLM", "2nDm·max(kᵢ)", "2Dm·mean(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * sum(k) / len(k)),
    Complexity("Nudging", "/", "2Dm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("Heterogeneous Swarms", "2nDm·max(kᵢ)", "2GrDm·max(kᵢ)", "graph generation G, rounds r"),
    Complexity("Knowledge Card", "2nDm·max(kᵢ)", "2nDm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * n * D * m * max(k)),
    Complexity("LLM Blender", "2nDm·max(kᵢ) + 6rDM·(n²k_r + k_f)", "2nDm·max(kᵢ) + 2DM·(k_r + k_f)",
               "ranker k_r, fuser k_f, rounds r"),
    Complexity("Majority Vote", "/", "2nDm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * n * D * m * max(k)),
    Complexity("Multiagent Refine", "2nDm·max(kᵢ)", "2nrDm·max(kᵢ)", "rounds r",
               lambda n, D, m, k, p: 2 * n * _r(p) * D * m * max(k) if _r(p) else None),
    Complexity("Multiagent Feedback", "2nDm·max(kᵢ)", "2nrfDm·max(kᵢ)", "feedback f, rounds r"),
    Complexity("Multiagent Finetuning", "2nDm·max(kᵢ) + 6nrDM·2max(kᵢ)", "2nrDm·max(kᵢ)", "rounds r",
               lambda n, D, m, k, p: 2 * n * _r(p) * D * m * max(k) if _r(p) else None),
    Complexity("Structure", "2nDm·max(kᵢ)", "2GrDm·max(kᵢ)", "structure G, rounds r"),
    Complexity("AggLM", "2nsDM·max(kᵢ) + 6rDM·min(kᵢ)", "2Dm·(n·max(kᵢ) + min(kᵢ))", "sample size s, rounds r",
               lambda n, D, m, k, p: 2 * D * m * (n * max(k) + min(k))),
    Complexity("Sparta", "2nDm·max(kᵢ) + 6nrDM·max(kᵢ)", "2nDm·max(kᵢ)", "training rounds r",
               lambda n, D, m, k, p: 2 * n * D * m * max(k)),
    Complexity("Logit Fusion", "/", "2nDm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * n * D * m * max(k)),
    Complexity("Logit Contrastive", "2nDm·max(kᵢ)", "2nDm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * n * D * m * max(k)),
    Complexity("Dare Ties", "/", "2Dm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("Greedy Soup", "2(2n−1)Dm·max(kᵢ)", "2Dm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("LoraHub", "2nDm·max(kᵢ)", "2Dm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("Model Swarms", "2nrDm·max(kᵢ)", "2Dm·max(kᵢ)", "training rounds r",
               lambda n, D, m, k, p: 2 * D * m * max(k)),
    Complexity("Weight Expo", "2nDm·max(kᵢ)", "2Dm·max(kᵢ)", "", lambda n, D, m, k, p: 2 * D * m * max(k)),
]}
SYNONYMS = {"graphrouting": "graphrouter", "promptrouting": "promptrouter", "trainedrouter": "llmrouter",
            "switchgeneration": "switchgenerate", "collm": "collm", "fusion": "logitfusion",
            "contrastive": "logitcontrastive", "expo": "weightexpo", "swarms": "modelswarms",
            "heterogeneousswarm": "heterogeneousswarms", "blender": "llmblender", "vote": "majorityvote",
            "debate": "multiagentrefine", "feedback": "multiagentfeedback"}
SINGLE = Complexity("single model (every model answers)", "/", "2nDm·max(kᵢ)", "all n models answer; one is output",
                    lambda n, D, m, k, p: 2 * n * D * m * max(k))


def complexity_for(method: str) -> Complexity | None:
    """The Table 4 row of a registered method name (api_/text_/logit_/weight_ prefixes and aliases allowed)."""
    if method == "single_model":
        return SINGLE
    names = [method]
    try:
        from moco.methods.registry import get_method

        names += list(get_method(method).aliases)
    except Exception:
        pass
    for name in names:
        key = name.lower()
        for prefix in ("api_", "text_", "logit_", "weight_", "client_server_"):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        key = key.replace("_", "").replace("-", "")
        key = SYNONYMS.get(key, key)
        if key in TABLE4:
            return TABLE4[key]
        if "logit" + key in TABLE4:
            return TABLE4["logit" + key]
    return None


# ------------------------------------------------------------------------------------------- per run cost
@dataclass
class Cost:
    dir: str
    label: str
    method: str
    task: str
    pool: str
    score: float
    n_test: int
    calls: int
    tokens_in: int
    tokens_out: int
    generated_tokens: int
    wall_s: float
    phase_wall: dict[str, float]
    compute_s: float
    flops: float | None
    unknown_size: list[str] = field(default_factory=list)
    paper_training: str = ""
    paper_inference: str = ""
    paper_estimate: float | None = None
    seed: int | None = None  # the run's seed (a sweep with seeds has one run per seed)
    ci: Interval | None = None  # the run's score interval (or why there is none)


def _model_specs(run: Run) -> dict[str, dict[str, Any]]:
    """name -> spec dict for the pool models and role models of a run (names as the pool gives them)."""
    from moco.analysis.sweep_cells import model_names
    from moco.config import ModelSpec

    specs = run.config.get("models") or []
    out: dict[str, dict[str, Any]] = {}
    try:
        names = model_names([ModelSpec(**s) if isinstance(s, dict) else ModelSpec(model=s) for s in specs])
    except Exception:
        names = run.models
    for name, s in zip(names, specs):
        out[name] = s if isinstance(s, dict) else {"model": s}
    for role, ref in (run.config.get("roles") or {}).items():
        if isinstance(ref, dict):
            out[role] = ref
    return out


def run_cost(run: Run, label: str, pool: str, overrides: dict[str, float] | None = None,
             _sizes: dict[str, float | None] | None = None) -> Cost:
    m = run.record  # the typed metrics (moco.records_schema.MetricsRecord)
    total = m.total
    specs = _model_specs(run)
    sizes = _sizes if _sizes is not None else {}
    per_model: dict[str, list[int]] = {}
    for ph in m.phases.values():
        for name, pm in ph.per_model.items():
            acc = per_model.setdefault(name, [0, 0])
            acc[0] += int(pm.get("tokens_in", 0))
            acc[1] += int(pm.get("tokens_out", 0))
    def size(name: str) -> float | None:
        spec = specs.get(name)
        key = json.dumps(spec, sort_keys=True) if spec else f"name:{name}"
        if key not in sizes:
            sizes[key] = spec_params(spec, overrides) if spec else (overrides or {}).get(name)
        return sizes[key]

    flops, unknown = 0.0, []
    for name, (tin, tout) in per_model.items():
        k = size(name)
        if k is None:
            unknown.append(name)
        else:
            flops += 2 * k * (tin + tout)
    cx = complexity_for(m.method)
    estimate = None
    pool_sizes = [size(name) for name in list(specs)[: len(run.models)]]
    if cx and cx.estimate and pool_sizes and all(x is not None for x in pool_sizes):
        gen = run.config.get("decoding") or run.config.get("generation") or {}  # run dirs before the split
        mtok = int(gen.get("max_new_tokens", gen.get("max_response_length", 512)))
        try:
            estimate = cx.estimate(len(pool_sizes), m.n_test or 0, mtok, pool_sizes,
                                   run.config.get("params") or {})
        except (TypeError, ValueError, ZeroDivisionError):
            estimate = None
    return Cost(str(run.dir), label, m.method, m.task, pool, run.score, m.n_test or 0,
                total.calls, total.tokens_in, total.tokens_out, total.generated_tokens, float(m.wall_s or 0.0),
                {k: v.wall_s for k, v in m.phases.items()}, total.compute_s,
                None if unknown or not per_model else flops, unknown,
                cx.training if cx else "", cx.inference if cx else "", estimate)


def costs(col: Collection, overrides: dict[str, float] | None = None) -> list[Cost]:
    """One row per distinct run (the first use names it)."""
    sizes: dict[str, float | None] = {}
    seen: set[str] = set()
    out = []
    for e in col.entries:
        if not e.ok or str(e.run.dir.resolve()) in seen:
            continue
        seen.add(str(e.run.dir.resolve()))
        c = run_cost(e.run, e["label"], e["pool"], overrides, sizes)
        c.seed = e.get("seed")
        ci = e.run.record.ci95
        c.ci = Interval(ci[0], ci[1]) if ci else Interval(None, None, e.run.record.ci_note or "no interval")
        out.append(c)
    return out


def human(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:.0f}{unit}"

