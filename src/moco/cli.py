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


zoo_app = typer.Typer(no_args_is_help=True, help="Pools of specialists fine-tuned from one base model.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(Path("zoo"), "--out", "-o", help="zoo folder (adapters, zoo.json, models.yaml)"),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="embedded model name or local model folder"),
    only: Optional[str] = typer.Option(None, "--only", help="comma-separated specialists (default: math,knowledge,safety)"),
    steps: int = typer.Option(60, "--steps", min=1, help="optimizer steps per specialist"),
    examples: int = typer.Option(200, "--examples", min=1, help="dev examples per specialist (seeded sample)"),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    lr: float = typer.Option(2e-4, "--lr"),
    max_length: int = typer.Option(384, "--max-length", min=16, help="tokens per training sequence"),
    merged: bool = typer.Option(False, "--merged/--adapters", help="save full merged folders instead of adapters"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
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
