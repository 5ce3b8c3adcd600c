"""config -> validate -> pool -> method(dev, test) -> score -> run directory.

`plan()` does every check that needs no model (method, params, task, scorer, models, requirements);
`run_experiment()` executes a plan. Model calls are cached as they finish, so an interrupted run
re-run with the same config recomputes nothing that finished.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moco.cache import ResponseCache
from moco.config import ExperimentConfig, ModelSpec, dump_config
from moco.context import Output, RunContext
from moco.errors import ConfigError, MocoError
from moco.methods.registry import MethodInfo, MethodParams, get_method
from moco.models.base import Backend, Capabilities
from moco.models.pool import ModelHandle, ModelPool
from moco.progress import Progress
from moco.rundir import default_run_dir, manifest, write_json, write_jsonl
from moco.scoring import scorer_for
from moco.scoring.base import Scorer
from moco.scoring.stats import summarize
from moco.tasks.base import Task
from moco.tasks.registry import resolve_task
from moco.trace import CallRecorder

log = logging.getLogger(__name__)

KIND_CAPABILITIES = {
    "hf": Capabilities(chat=True, logprobs=True, logits=True, weights=True, lora=True, seeded=True),
    "scripted": Capabilities(chat=True, seeded=True),
}


@dataclass
class Plan:
    config: ExperimentConfig
    method: MethodInfo
    params: MethodParams
    task: Task
    scorer: Scorer
    pool: ModelPool
    roles: dict[str, ModelHandle] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _capabilities(spec: ModelSpec) -> Capabilities:
    if spec.kind == "openai":
        return Capabilities(chat=True, logprobs=True, seeded=bool(spec.endpoint and spec.endpoint.seeded))
    return KIND_CAPABILITIES[spec.kind]


def plan(cfg: ExperimentConfig, data_dir: str | None = None, backends: dict[str, Backend] | None = None) -> Plan:
    """Validate everything that can be checked without loading a model."""
    info = get_method(cfg.method)
    params = info.parse_params(cfg.params)
    tinfo = resolve_task(cfg.task.name, data_dir or cfg.task.data_dir)
    task = tinfo.loader()
    if cfg.task.task_type:
        task.task_type = cfg.task.task_type
    if cfg.task.dev_limit is not None:
        task.dev = task.dev[: cfg.task.dev_limit]
    if cfg.task.test_limit is not None:
        task.test = task.test[: cfg.task.test_limit]
    scorer = scorer_for(task.task_type, task.name)
    n = len(cfg.models)
    if n < info.min_models:
        raise ConfigError(f"method {info.name} needs at least {info.min_models} models, the config has {n}")
    if info.max_models is not None and n > info.max_models:
        raise ConfigError(f"method {info.name} takes at most {info.max_models} models, the config has {n}")
    if info.objective_task_only and not task.objective:
        raise ConfigError(f"method {info.name} needs a task with definite answers; "
                          f"task '{task.name}' is {task.task_type}")
    pool = ModelPool(cfg.models, cfg.hardware, cfg.generation, overrides=dict(backends or {}))
    roles: dict[str, ModelHandle] = {}
    for role, ref in cfg.roles.items():
        if info.roles and role not in info.roles:
            raise ConfigError(f"roles: method {info.name} has no role '{role}' (its roles: {', '.join(info.roles)})")
        if isinstance(ref, ModelSpec):
            roles[role] = pool.add_extra(role, ref)
        else:
            roles[role] = pool.handle(ref)
    if not info.roles and cfg.roles:
        raise ConfigError(f"roles: method {info.name} uses no roles")
    for h in [*pool.handles, *roles.values()]:
        if h.spec.model in pool.overrides:
            caps = pool.overrides[h.spec.model].capabilities
        else:
            caps = _capabilities(h.spec)
        missing = caps.missing(info.needs)
        if missing:
            raise ConfigError(f"method {info.name} needs {', '.join(missing)} from every model; "
                              f"model '{h.name}' ({h.spec.kind} backend) cannot provide it")
    if cfg.hardware.gpu_ids:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware.gpu_ids {cfg.hardware.gpu_ids} given but no CUDA GPU is visible "
                              "(use an empty gpu_ids list, or --cpu, to run on the CPU)")
        bad = [i for i in cfg.hardware.gpu_ids if i >= torch.cuda.device_count()]
        if bad:
            raise ConfigError(f"hardware.gpu_ids {bad} do not exist (this machine has {torch.cuda.device_count()} GPUs)")
    pool.check()
    if info.same_tokenizer:
        from moco.models.vocab import vocabulary_mismatch

        why = vocabulary_mismatch(pool, pool.handles)
        if why:
            raise ConfigError(f"method {info.name} needs one shared vocabulary: {why}")
    p = Plan(cfg, info, params, task, scorer, pool, roles)
    if task.problems:
        p.warnings.append(f"task {task.name}: {len(task.problems)} data problem(s), e.g. {task.problems[0].line()}")
    return p


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, *, data_dir: str | None = None,
                   cache: ResponseCache | None = None, progress: Progress | None = None,
                   backends: dict[str, Backend] | None = None, runs_root: Path | None = None) -> RunResult:
    """Run one experiment end to end and write its run directory."""
    p = plan(cfg, data_dir, backends)
    run_dir = Path(out) if out else default_run_dir(p.method.name, p.task.name, runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "artifacts").mkdir(exist_ok=True)
    resolved = cfg.model_copy(update={"params": p.params.model_dump(mode="json")})
    (run_dir / "config.yaml").write_text(dump_config(resolved))
    own_cache = cache is None
    cache = ResponseCache() if cache is None else cache
    man = manifest(cfg.seed, {"method": p.method.name, "task": p.task.name, "task_type": p.task.task_type,
                              "cache": str(getattr(cache, "path", "")), "status": "running",
                              "n_dev": len(p.task.dev), "n_test": len(p.task.test)})
    write_json(run_dir / "manifest.json", man)
    if p.task.problems:
        write_json(run_dir / "data_problems.json", [pr.__dict__ for pr in p.task.problems])
    recorder = CallRecorder(run_dir / "calls.jsonl")
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=recorder,
                     generation=cfg.generation, seed=cfg.seed, artifacts_dir=run_dir / "artifacts",
                     progress=progress, roles=p.roles)
    t0 = time.time()
    try:
        outputs = p.method.run(ctx, p.params)
        if len(outputs) != len(p.task.test):
            raise RuntimeError(f"method {p.method.name} returned {len(outputs)} outputs for {len(p.task.test)} examples")
        predictions, metrics = score_outputs(ctx, outputs, p, time.time() - t0)
        write_jsonl(run_dir / "predictions.jsonl", predictions)
        write_json(run_dir / "metrics.json", metrics)
        man.update(status="finished", fingerprints={h.name: p.pool.fingerprint(h) for h in p.pool.handles},
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json(run_dir / "manifest.json", man)
    except BaseException as e:
        man.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                   error=f"{type(e).__name__}: {e}")
        write_json(run_dir / "manifest.json", man)
        raise
    finally:
        recorder.close()
        if own_cache:
            cache.close()
    return RunResult(run_dir, metrics, predictions)


def score_outputs(ctx: RunContext, outputs: list[Output], p: Plan, wall: float) -> tuple[list[dict], dict]:
    rows, scores, strict, unparsed, failed = [], [], [], 0, 0
    for ex, o in zip(p.task.test, outputs):
        row: dict[str, Any] = {"id": ex.id, "index": ex.index, "prompt": ex.prompt, "gold": ex.answer,
                               "output": o.text, "failed": o.failed}
        if ex.answer is not None:
            res = p.scorer.score_answer(ex, o.answer) if o.use_answer else p.scorer.score(ex, o.text)
            if o.failed:
                res.score = 0.0
            row.update(extracted=res.extracted, score=res.score, strict_score=res.strict)
            scores.append(res.score)
            if res.strict is not None:
                strict.append(res.strict)
            unparsed += int(res.extracted is None and not o.failed)
        failed += int(o.failed)
        row["trace"] = o.trace
        rows.append(row)
    summary = summarize(scores, unparsed, failed, seed=ctx.seed)
    phases = {k: v.to_dict() for k, v in ctx.recorder.phases.items()}
    total = {key: sum(ph[key] for ph in phases.values())
             for key in ("calls", "cache_hits", "failed", "tokens_in", "tokens_out", "generated_tokens", "compute_s")}
    metrics = {
        "method": p.method.name, "task": p.task.name, "task_type": p.task.task_type, "metric": p.scorer.metric,
        **summary,
        "strict_score": (sum(strict) / len(strict)) if strict else None,
        "n_test": len(p.task.test), "models": [h.name for h in p.pool.handles],
        "wall_s": round(wall, 3), "total": total, "phases": phases, **ctx.extra_metrics,
    }
    return rows, metrics


def describe_plan(p: Plan) -> list[str]:
    """Human-readable summary for `moco validate`."""
    lines = [
        f"method   {p.method.name} ({p.method.level}): {p.method.summary}",
        f"task     {p.task.name}: {p.task.task_type}, {len(p.task.dev)} dev / {len(p.task.test)} test, "
        f"scorer {p.scorer.name}",
        "models   " + ", ".join(f"{h.name} [{h.spec.kind}]" + (" (role prompt)" if h.role_prompt else "")
                               for h in p.pool.handles),
        "params   " + (", ".join(f"{k}={v!r}" for k, v in p.params.model_dump().items()) or "(none)"),
        f"device   {'cuda:' + ','.join(map(str, p.config.hardware.gpu_ids)) if p.config.hardware.gpu_ids else 'cpu'}",
    ]
    for role, h in p.roles.items():
        lines.append(f"role     {role} -> {h.name}")
    return lines + [f"warning  {w}" for w in p.warnings]


__all__ = ["MocoError", "Plan", "RunResult", "describe_plan", "plan", "run_experiment"]
