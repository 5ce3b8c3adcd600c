"""Methods and tasks from a separate package, registered through entry points, appear and run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent('''
    """A third-party package adding one method and one task."""
    import json, pathlib
    from pydantic import Field
    from moco.context import Output
    from moco.methods.registry import MethodParams, method
    from moco.tasks.registry import TaskInfo
    from moco.tasks.moco_json import load_moco_json

    class Params(MethodParams):
        shout: bool = Field(False, description="upper-case the answer")

    @method("text_loudest", params=Params, level="text", summary="the first model, optionally shouting", min_models=1)
    async def run(ctx, params):
        with ctx.phase("test"):
            out = await ctx.ask(ctx.models[0], [ex.prompt for ex in ctx.task.test], tag="answer")
        return [Output(r.text.upper() if params.shout else r.text) for r in out]

    HERE = pathlib.Path(__file__).parent
    TASK = TaskInfo("plugin_task", lambda: load_moco_json(HERE / "plugin_task.json", name="plugin_task"),
                    "plugin", "testing", "a task from a plug-in", "multiple_choice")
''')


def _install(site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    (site / "moco_plugin_demo.py").write_text(PLUGIN)
    (site / "plugin_task.json").write_text(json.dumps({"task_type": "multiple_choice", "dev": [], "test": [
        {"id": "1", "question": "Capital of France?", "choices": {"A": "Paris", "B": "Rome"}, "answer": "A"}]}))
    dist = site / "moco_plugin_demo-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: moco-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[moco.methods]\nloudest = moco_plugin_demo\n\n[moco.tasks]\nplugin_task = moco_plugin_demo:TASK\n")


def test_entry_point_method_and_task_are_listed_and_run(tmp_path):
    site = tmp_path / "site"
    _install(site)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "moco", "list", "methods"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "text_loudest" in r.stdout
    r = subprocess.run([sys.executable, "-m", "moco", "list", "methods", "text_loudest"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "shout" in r.stdout and "upper-case the answer" in r.stdout
    r = subprocess.run([sys.executable, "-m", "moco", "list", "tasks"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "plugin_task" in r.stdout
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"method": "text_loudest", "task": "plugin_task", "params": {"shout": True},
                               "models": [{"model": "scripted:x", "script": {"default": "The answer is (a) paris"}}]}))
    r = subprocess.run([sys.executable, "-m", "moco", "run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pred = json.loads((tmp_path / "run" / "predictions.jsonl").read_text())
    assert pred["output"] == "THE ANSWER IS (A) PARIS" and pred["score"] == 1.0
