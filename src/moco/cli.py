"""`moco` command line: run, validate, list, demo. Errors are one line with exit code 2 (--debug for tracebacks)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from moco.errors import MocoError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MoCo: run, evaluate and compare model-collaboration methods from one config.")
console = Console()
err = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    STATE["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment config (YAML/JSON, ours or the reference's JSON)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default: runs/<time>-<method>-<task>)"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder of MoCo JSON datasets (default: $MOCO_DATA_DIR)"),
    cpu: bool = typer.Option(False, "--cpu", help="ignore gpu_ids and run on the CPU"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="progress bar (default: on a terminal)"),
) -> None:
    """Run one experiment and write its run directory."""
    from moco.cache import NullCache
    from moco.config import load_config
    from moco.progress import make_progress
    from moco.runner import run_experiment

    cfg = load_config(config)
    if cpu:
        cfg.hardware.gpu_ids = []
    bar = make_progress(progress)
    try:
        res = run_experiment(cfg, out, data_dir=data_dir, cache=NullCache() if no_cache else None, progress=bar)
    finally:
        bar.close()
    m = res.metrics
    lo, hi = m["ci95"]
    console.print(f"[bold]{m['method']}[/] on {m['task']}: {m['metric']} {m['score']:.3f} "
                  f"(95% CI {lo:.3f}-{hi:.3f}, n={m['n']}, unparsed {m['unparsed']}, failed {m['failed']}); "
                  f"{m['total']['calls']} calls, {m['total']['tokens_out']} tokens out, {m['wall_s']:.1f}s")
    console.print(f"run directory: {res.run_dir}")


@app.command()
def validate(
    config: Path = typer.Argument(..., help="experiment config to check"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
) -> None:
    """Check a config (keys, method, params, task, models, requirements) without loading any model."""
    from moco.config import load_config
    from moco.runner import describe_plan, plan

    p = plan(load_config(config), data_dir)
    for line in describe_plan(p):
        console.print(line, highlight=False, markup=False)
    console.print("[green]OK[/]")


@app.command("list")
def list_(
    what: str = typer.Argument(..., help="methods | tasks | models"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    verbose: bool = typer.Option(True, "--params/--no-params", help="show each method's hyperparameters"),
) -> None:
    """Show what exists, with one-line descriptions."""
    from moco import listing

    if what == "methods":
        listing.methods(console, verbose)
    elif what == "tasks":
        listing.tasks(console, data_dir)
    elif what == "models":
        listing.models(console)
    else:
        raise MocoError(f"unknown list '{what}': use methods, tasks or models")


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for the three run directories"),
    limit: Optional[int] = typer.Option(None, "--limit", help="use only the first N test questions"),
    progress: Optional[bool] = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Three pseudo-experts of the embedded SmolLM2 on the built-in task: single models vs vote vs refine."""
    from moco.demo import run_demo

    run_demo(console, out, limit, progress)


@app.command()
def serve(
    config: Path = typer.Argument(..., help="experiment config of the collaboration to serve (task optional)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    token: Optional[str] = typer.Option(None, "--token", envvar="MOCO_SERVE_TOKEN",
                                        help="require 'Authorization: Bearer TOKEN' (or set MOCO_SERVE_TOKEN)"),
    role: str = typer.Option("collaboration", "--role", help="collaboration (the config's method as one model) "
                             "or colm-server (gather CoLM client answers, return guidance)"),
    name: Optional[str] = typer.Option(None, "--name", help="served model name (default: config name, "
                                       "moco-<method>, or colm-server)"),
    batch_window_ms: float = typer.Option(5.0, "--batch-window-ms", help="collect concurrent requests this long"),
    max_batch: int = typer.Option(32, "--max-batch", help="most requests per batch"),
    max_body_kb: int = typer.Option(4096, "--max-body-kb", help="largest request body accepted"),
    expect: int = typer.Option(1, "--expect", help="colm-server: clients per question when a client does not say"),
    gather_timeout_s: float = typer.Option(120.0, "--gather-timeout", help="colm-server: seconds to wait for all "
                                           "clients of a question before aggregating what arrived"),
    cache: bool = typer.Option(False, "--cache/--no-cache", help="answer repeated identical requests from the "
                               "response cache"),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="write calls.jsonl of every model call here"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
) -> None:
    """Serve a collaboration as one OpenAI-compatible model (/v1/chat/completions, /v1/models)."""
    from moco.serve import build_service, is_loopback
    from moco.serve import serve as run_server

    if not is_loopback(host) and not token:
        err.print(f"[yellow]warning:[/] serving on {host} without --token: anyone who can reach it can use it")
    service = build_service(config, role=role, name=name, cache=cache, data_dir=data_dir,
                            window_ms=batch_window_ms, max_batch=max_batch, gather_timeout_s=gather_timeout_s,
                            expect=expect, log_dir=log_dir)
    err.print(f"serving '{service.name}' ({role}) on http://{host}:{port}/v1" + (" with token auth" if token else ""))
    run_server(service, host=host, port=port, token=token, max_body_bytes=max_body_kb * 1024)


def main() -> None:
    try:
        app(standalone_mode=False)
    except MocoError as e:
        if STATE["debug"]:
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted. Finished model calls are cached: run the same command again to resume.")
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            err.print("aborted.")
            sys.exit(130)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
