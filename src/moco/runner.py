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

from moco import aio, scheduler
from moco.cache import ResponseCache
from moco.config import ExperimentConfig, HardwareSettings, ModelSpec, dump_config
from moco.context import Output, RunContext
from moco.engines.process import startups_since
from moco.errors import CallsFailed, ConfigError, MocoError
from moco.failures import Failures
from moco.gateway import Gateway
from moco.methods.registry import MethodInfo, MethodParams, get_method
from moco.models import compat
from moco.models.base import Backend, Capabilities
from moco.models.backends import capabilities_of, kind_info
from moco.models.pool import ModelHandle, ModelPool, backend_kind
from moco.progress import Progress
from moco.records_schema import MetricsRecord, PredictionRecord, write_record
from moco.requirements import check_needs
from moco.rundir import (atomic_write, default_run_dir, hardware, manifest, start_attempt, storage_error, write_failure,
                          write_json, write_jsonl)
from moco.scoring import scorer_for
from moco.scoring.base import Scorer, missing_role_message
from moco.scoring.evaluate import prediction_row, score_items_async, summarize_results, unparsed_breakdown
from moco.tasks.base import Task
from moco.tasks.registry import load_task
from moco.trace import CallRecorder

log = logging.getLogger(__name__)

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
    checks: list[str] = field(default_factory=list)  # compatibility checks that passed (tokenizer, architecture)
    notes: list[str] = field(default_factory=list)  # defaults applied for `moco serve` without a task (said at start)
    backends: list[str] = field(default_factory=list)  # which backend each model uses and why (managed engines)


def _capabilities(spec: ModelSpec, hardware: HardwareSettings) -> tuple[Capabilities, str]:
    """What a model's backend will be able to do, and what to call that backend in a message: declared by its
    kind's registry entry (models/backends.py), nothing loaded."""
    kind = backend_kind(spec, hardware)
    return capabilities_of(kind, spec), kind_info(kind).describe


def _resolve_engines(specs: list[ModelSpec], hardware: HardwareSettings, needs: Capabilities,
                     overrides: dict[str, Backend], name: str | None = None) -> tuple[list[ModelSpec], list[str]]:
    """Each spec with its managed engine decided (moco.engines.resolve), and the lines `moco validate` prints;
    lines only when some model could use an engine (Hugging Face weights)."""
    from moco import engines

    out, lines = [], []
    for spec in specs:
        if spec.model in overrides:
            out.append(spec)
            continue
        spec, line = engines.resolve(spec, hardware, needs, name or spec.name or spec.model)
        out.append(spec)
        lines.append(line)
    wanted = any(s.kind == "hf" for s in specs if s.model not in overrides)  # weights an engine could serve
    return out, lines if wanted else []


def plan(cfg: ExperimentConfig, data_dir: str | None = None, backends: dict[str, Backend] | None = None, *,
         task: Task | None = None, scorer: Scorer | None = None, served: bool = False, needs: bool = True) -> Plan:
    """Validate everything that can be checked without loading a model. `task`/`scorer` replace the config's
    task (e.g. `moco serve`, whose test items are the requests it receives); `served` (serving without a task)
    lets a method that would pick a model by dev score use its documented default (`moco.requirements`);
    `needs=False` skips the method's declared needs (a caller that serves only part of a method and checks
    what that part needs itself: the CoLM server role)."""
    info = get_method(cfg.method)
    params = info.parse_params(cfg.params)
    if task is None:
        task = load_task(cfg.task, data_dir)
    if scorer is None:
        scorer = scorer_for("generation", task.name) if task.generation_only else \
            scorer_for(task.task_type, task.name, cfg.task.scorer)
    scorer_role = getattr(scorer, "role", None)
    n = len(cfg.models)
    if n < info.min_models:
        raise ConfigError(f"method {info.name} needs at least {info.min_models} models, the config has {n}")
    if info.max_models is not None and n > info.max_models:
        raise ConfigError(f"method {info.name} takes at most {info.max_models} models, the config has {n}")
    if info.objective_task_only and not task.objective:
        raise ConfigError(f"method {info.name} needs a task with definite answers; "
                          f"task '{task.name}' is {task.task_type}" + (" (generation only)" if task.generation_only else ""))
    if scorer_role and scorer_role not in cfg.roles:
        raise ConfigError(missing_role_message(scorer.name, scorer_role))
    overrides = dict(backends or {})
    models, backend_lines = _resolve_engines(cfg.models, cfg.hardware, info.needs, overrides)
    pool = ModelPool(models, cfg.hardware, overrides=overrides)
    extra = set(cfg.roles) - {scorer_role}
    if not info.roles and extra:
        raise ConfigError(f"roles: method {info.name} uses no roles" +
                          (f" (the scorer {scorer.name} uses '{scorer_role}')" if scorer_role else
                           f"; '{sorted(extra)[0]}' is not used by the scorer {scorer.name} either"))
    roles: dict[str, ModelHandle] = {}
    for role, ref in cfg.roles.items():
        if role != scorer_role and info.roles and role not in info.roles:
            raise ConfigError(f"roles: method {info.name} has no role '{role}' (its roles: {', '.join(info.roles)})"
                              + (f"; the scorer {scorer.name} uses '{scorer_role}'" if scorer_role else ""))
        if isinstance(ref, ModelSpec):
            (ref,), lines = _resolve_engines([ref], cfg.hardware, Capabilities(chat=True), overrides, role)
            backend_lines += lines
            roles[role] = pool.add_extra(role, ref)
        else:
            roles[role] = pool.handle(ref)
    method_roles = [h for r, h in roles.items() if r != scorer_role]
    pool.check()  # models exist (before asking what they can do)

    def capabilities(h: ModelHandle) -> tuple[Capabilities, str]:
        if h.spec.model in pool.overrides:
            return pool.overrides[h.spec.model].capabilities, "in-memory backend"
        return _capabilities(h.spec, cfg.hardware)

    for h in [*pool.handles, *method_roles]:
        caps, where = capabilities(h)
        missing = caps.missing(info.needs)
        if missing:
            raise ConfigError(f"method {info.name} needs {', '.join(missing)} from every model; "
                              f"model '{h.name}' ({where}) cannot provide it")
    if cfg.hardware.gpu_ids:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware.gpu_ids {cfg.hardware.gpu_ids} given but no CUDA GPU is visible "
                              "(use an empty gpu_ids list, or --cpu, to run on the CPU)")
        bad = [i for i in cfg.hardware.gpu_ids if i >= torch.cuda.device_count()]
        if bad:
            raise ConfigError(f"hardware.gpu_ids {bad} do not exist (this machine has {torch.cuda.device_count()} GPUs)")
    met = check_needs(info, params, task, pool.handles, roles, capabilities, served=served, skip=not needs)
    params, roles = met.params, met.roles
    checks: list[str] = []
    entries = compat.entries_for(pool.handles, pool.overrides)
    if info.same_tokenizer:
        checks.append(compat.check_same_tokenizer(entries, info.name))
    if info.same_architecture:
        checks.append(compat.check_same_architecture(entries, info.name))
    if info.validate is not None:
        checks.extend(info.validate(params, pool))
    p = Plan(cfg, info, params, task, scorer, pool, roles, checks=checks, notes=met.notes, backends=backend_lines)
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
    return aio.run(run_experiment_async(cfg, out, data_dir=data_dir, cache=cache, progress=progress,
                                        backends=backends, runs_root=runs_root))


async def run_experiment_async(cfg: ExperimentConfig, out: str | Path | None = None, *, data_dir: str | None = None,
                               cache: ResponseCache | None = None, progress: Progress | None = None,
                               backends: dict[str, Backend] | None = None,
                               runs_root: Path | None = None) -> RunResult:
    """`run_experiment` on the running loop, as one participant of its scheduler (a sweep runs cells so)."""
    p = plan(cfg, data_dir, backends)
    run_dir = Path(out) if out else default_run_dir(p.method.name, p.task.name, runs_root)
    own_cache = cache is None
    cache = ResponseCache() if cache is None else cache  # an unusable cache fails before the run directory exists
    attempt = start_attempt(run_dir)
    (run_dir / "artifacts").mkdir(exist_ok=True)
    resolved = cfg.model_copy(update={"params": p.params.model_dump(mode="json")})
    atomic_write(run_dir / "config.yaml", dump_config(resolved))
    man = manifest(cfg.seed, {"method": p.method.name, "task": p.task.name, "task_type": p.task.task_type,
                              "cache": str(getattr(cache, "path", "")), "status": "running", "attempt": attempt,
                              "n_dev": len(p.task.dev), "n_test": len(p.task.test)})
    write_json(run_dir / "manifest.json", man)
    if p.task.problems:
        write_json(run_dir / "data_problems.json", [pr.__dict__ for pr in p.task.problems])
    recorder = CallRecorder(run_dir / "calls.jsonl", attempt)
    gw = Gateway(p.pool, cache, recorder, cfg.seed, progress or Progress())
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=recorder,
                     decoding=cfg.decoding, seed=cfg.seed, artifacts_dir=run_dir / "artifacts",
                     roles=p.roles, gateway=gw)
    t0 = time.time()
    finished = finished_scoring = False
    try:
        predictions, metrics, failures = await scheduler.current_participant(execute(ctx, gw, p, t0))
        if started := startups_since(t0):  # engines this run started: in wall_s, and shown apart
            metrics["engine_startup_s"] = started
        write_jsonl(run_dir / "predictions.jsonl", [write_record(PredictionRecord, r, stamp=False) for r in predictions])
        write_json(run_dir / "metrics.json", write_record(MetricsRecord, metrics))
        finished_scoring = True  # predictions and metrics (score null, failed items listed) stay on failure
        if not failures.accepted:  # no score: the run failed (its answered calls are cached for a re-run)
            raise CallsFailed(f"{failures.headline()}; the run has no score (--max-failed tolerates some); answered "
                              "calls are cached: re-running the same command redoes only the failed ones")
        man.update(status="finished", fingerprints={h.name: p.pool.fingerprint(h) for h in p.pool.handles},
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), hardware=hardware())
        write_json(run_dir / "manifest.json", man)
        finished = True
    except BaseException as e:
        fault = storage_error(e, run_dir)  # disk full / read-only: one line naming the file; the manifest says so
        stop = aio.interrupted(e)
        man.update(status="interrupted" if stop else "failed",
                   error="KeyboardInterrupt: interrupted" if stop else f"{type(fault or e).__name__}: {fault or e}")
        write_failure(run_dir / "manifest.json", man, keep_results=isinstance(e, CallsFailed) and finished_scoring)
        if fault is not None and fault is not e:
            raise fault from e
        raise
    finally:
        try:
            recorder.close()  # on a full disk its last flush fails again: the first error is the one to tell
        except OSError as e:
            if finished:
                raise storage_error(e, run_dir / "calls.jsonl") or e from None
        if own_cache:
            cache.close()
    return RunResult(run_dir, metrics, predictions)


async def execute(ctx: RunContext, gw: Gateway, p: Plan, t0: float) -> tuple[list[dict], dict, Failures]:
    """The method's outputs for the test set, scored."""
    outputs = await p.method.run(ctx, p.params)
    if len(outputs) != len(p.task.test):
        raise RuntimeError(f"method {p.method.name} returned {len(outputs)} outputs for {len(p.task.test)} examples")
    return await score_outputs(ctx, gw, outputs, p, time.time() - t0)


async def score_outputs(ctx: RunContext, gw: Gateway, outputs: list[Output], p: Plan,
                        wall: float) -> tuple[list[dict], dict, Failures]:
    """Score the test outputs (batched; model-based scorers call their role through ctx in phase "score").
    Items whose output failed or whose collaboration lost a member (a failed call traced to them, the scorer's
    own calls included) are not scored: they are listed as failed, and the score is over the others."""
    exs = p.task.test
    tolerance = p.config.max_failed
    own = [o.failed for o in outputs]
    before = gw.failures(p.task, own, tolerance)
    results = await score_items_async(p.scorer, ctx, exs, [o.text for o in outputs], [o.answer for o in outputs],
                          [o.use_answer for o in outputs], [i in before.test_items for i in range(len(exs))])
    failures = gw.failures(p.task, own, tolerance)  # now with the scorer's failed calls (a judge that did not answer)
    failed = [i in failures.test_items for i in range(len(exs))]
    results = [None if f else r for r, f in zip(results, failed)]
    rows = []
    for ex, o, res, f in zip(exs, outputs, results, failed):
        row = prediction_row(ex, o.text, res, f)
        if f:
            row["failure"] = failures.test_items[ex.index]
        row["trace"] = o.trace
        rows.append(row)
    summary = summarize_results(p.scorer, exs, results, failed, seed=ctx.seed)
    summary["failed"] = failures.failed("test")  # items that matched no failed call's text count too
    if not failures.accepted:
        summary.update(score=None, ci95=None, strict_score=None, score_note=f"no score: {failures.headline()}")
        summary.pop("groups", None)
    elif failures.any and summary.get("score") is not None:
        summary["score_note"] = f"over {summary['n']} of {len(exs)} items, {failures.failed('test')} failed"
    if (by := unparsed_breakdown(p.scorer, exs, [o.trace for o in outputs])) is not None:
        summary["unparsed_by"] = by  # per model (final round) and per round of the method's own outputs
    phases = {k: v.to_dict() for k, v in gw.recorder.phases.items()}
    keys = ("calls", "cache_hits", "failed", "tokens_in", "tokens_out", "generated_tokens", "tokens_reused", "compute_s")
    # the method's cost; the scorer's own model calls (judge, reward model) are reported under phases.score
    total = {key: sum(ph[key] for name, ph in phases.items() if name != "score") for key in keys}
    metrics = {
        "method": p.method.name, "task": p.task.name, "task_type": p.task.task_type, **summary,
        "n_test": len(exs), "models": [h.name for h in p.pool.handles],
        "wall_s": round(wall, 3), "total": total, "phases": phases, **ctx.metrics,
    }
    if failures.any:
        metrics["failures"] = failures.to_dict()
    return rows, metrics, failures


def _kind_label(spec: ModelSpec) -> str:
    """'hf', or 'hf on vllm' for a model a managed engine serves (the plan has decided `engine`)."""
    return f"{spec.kind} on {spec.engine}" if spec.engine not in (None, "none") else spec.kind


def describe_plan(p: Plan) -> list[str]:
    """Human-readable summary for `moco validate`."""
    lines = [
        f"method   {p.method.name} ({p.method.level}): {p.method.summary}",
        f"task     {p.task.name}: {p.task.task_type}, {len(p.task.dev)} dev / {len(p.task.test)} test, "
        f"scorer {p.scorer.name}" + (f" (role {p.scorer.role})" if getattr(p.scorer, "role", None) else ""),
        "models   " + ", ".join(f"{h.name} [{_kind_label(h.spec)}]" + (" (role prompt)" if h.role_prompt else "")
                               for h in p.pool.handles),
        "params   " + (", ".join(f"{k}={v!r}" for k, v in p.params.model_dump().items()) or "(none)"),
        f"device   {'cuda:' + ','.join(map(str, p.config.hardware.gpu_ids)) if p.config.hardware.gpu_ids else 'cpu'}",
    ]
    for role, h in p.roles.items():
        lines.append(f"role     {role} -> {h.name}")
    lines += [f"check    {c}" for c in p.checks]
    lines += [f"default  {n}" for n in p.notes]
    lines += [f"backend  {b}" for b in p.backends]
    return lines + [f"warning  {w}" for w in p.warnings]


__all__ = ["MocoError", "Plan", "RunResult", "describe_plan", "plan", "run_experiment"]
