"""Hostile model output in code scoring: completions that solve the task AND attack the host, completions that
try to pass without solving it (the universal cheat families of tests/code_cheats.py), and programs that
outlive their scorer. Each fails its item within the limits; the host, a run directory next to it and the
scoring (parent) process are untouched; a killed scorer takes its sandboxed programs with it and its item
folder is swept by the next one. Skipped, with the reason, where no OS sandbox can be had (test_sandbox.py
then checks that code is refused)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from code_cheats import CHEATS, CONSTANT_CHEAT, cheat_response
from faultkit import sigkill
from moco.scoring.code_execution import CodeExecutionScorer, entry_point
from moco.scoring.sandbox import SandboxLimits, find_bwrap, sweep_stale
from moco.tasks.base import Example
from reliability import tally

_WHY = find_bwrap()[1]
needs_sandbox = pytest.mark.skipif(bool(_WHY), reason=f"no OS sandbox here: {_WHY}")

TIGHT = SandboxLimits(timeout_s=4, memory_mb=256, max_processes=4, max_file_mb=2)
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


def completion(attack: str) -> str:
    """A correct `add` whose body first runs `attack`: without the attack the item would pass."""
    body = textwrap.indent(textwrap.dedent(attack).strip(), "    ")
    return f"```python\ndef add(a, b):\n{body}\n    return a + b\n```"


def attacks(run_dir: Path, secret_file: Path, port: int) -> dict[str, str]:
    rd, sf, me = str(run_dir), str(secret_file), os.getpid()
    return {
        "infinite loop": "while True:\n    pass",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "thread bomb": "import threading, time\nfor _ in range(10000):\n"
                       "    threading.Thread(target=time.sleep, args=(60,)).start()",
        "memory exhaustion": "x = [bytearray(10 ** 8) for _ in range(100)]",
        "huge output": "while True:\n    print('y' * 100000)",
        "huge file": "open('big', 'wb').write(b'x' * (50 * 1024 * 1024))",
        "write into the run dir": f"open({rd + '/metrics.json'!r}, 'w').write('{{\"score\": 1}}')",
        "delete a run file": f"import os\nos.remove({rd + '/predictions.jsonl'!r})",
        "rmtree the run dir": f"import shutil\nshutil.rmtree({rd!r})",
        "rename out of the run dir": f"import os\nos.rename({rd + '/config.yaml'!r}, 'stolen.yaml')",
        "symlink escape": f"import os\nos.symlink({rd!r}, 'link')\nopen('link/pwned', 'w').write('x')",
        "shell rm": f"import os\nos.system('rm -rf {rd}')",
        "subprocess": f"import subprocess\nsubprocess.run(['rm', '-rf', {rd!r}])",
        "exec a shell": "import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])",
        "network socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')",
        "network urllib": f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
        "env secret": "import os\nassert os.environ['MOCO_TEST_SECRET'] == 's3cret-value'",
        "secret file": f"assert 's3cret' in open({sf!r}).read()",
        "parent environ": "import os\nassert 's3cret' in open('/proc/%d/environ' % os.getppid()).read()",
        "kill the parent": "import os\nos.kill(os.getppid(), 9)",
        "kill the scorer by pid": f"import os\nos.kill({me}, 9)",
        "killpg": "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)",
        "ctypes kill": f"import ctypes\nctypes.CDLL(None).kill({me}, 9)",
        "exit before the tests": "import sys\nsys.exit(0)",
        "os._exit before the tests": "import os\nos._exit(0)",
        "forge the nonce via frames": "import sys, os\nf = sys._getframe()\nwhile f.f_back:\n    f = f.f_back\n"
                                      "    if 'nonce' in f.f_locals:\n"
                                      "        os.write(1, ('\\n' + f.f_locals['nonce'] + '\\n').encode())\n"
                                      "        os._exit(0)\nraise SystemExit(0)",
        "forge the nonce via gc": "import gc, os\nfor o in gc.get_objects():\n    pass\nos._exit(0)",
        "forge via a refusal's traceback": "import os\ntry:\n    open('/etc/hostname')\nexcept PermissionError as e:\n"
                                           "    tb = e.__traceback__\n    while tb.tb_next:\n        tb = tb.tb_next\n"
                                           "    f = tb.tb_frame\n    while f:\n"
                                           "        for v in f.f_locals.values():\n"
                                           "            if isinstance(v, dict) and v.get('nonce'):\n"
                                           "                os.write(1, ('\\n' + v['nonce'] + '\\n').encode())\n"
                                           "                os._exit(0)\n        f = f.f_back\nos._exit(0)",
        "call the launcher's finish": "import sys, os\nsys.audit('moco.begin')\nsys.audit('moco.finish')\nos._exit(0)",
        "re-run the launcher": "import sys, io\nsys.stdin = io.StringIO('x\\n')\nsys.modules['__main__']._main()",
        "raise the recursion limit": "import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n):\n    return f(n + 1)\nf(0)",
    }


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@needs_sandbox
def test_hostile_completions_fail_and_touch_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_TEST_SECRET", "s3cret-value")
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    for name in ("metrics.json", "predictions.jsonl", "config.yaml"):
        (run_dir / name).write_text(f"{name} keep\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret-value")
    before = _digest(tmp_path)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections: list = []

    def accept() -> None:
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    stop = threading.Event()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    hostile = attacks(run_dir, secret, port)
    ex = Example("1", 0, "test", PROMPT, PROMPT, None, None, {"test": TEST, "entry_point": "add"})
    scorer = CodeExecutionScorer(limits=TIGHT, workers=2)
    names = ["control", *hostile]
    t0 = time.time()
    results = scorer.score_all([ex] * len(names), [completion("pass")] + [completion(a) for a in hostile.values()])
    elapsed = time.time() - t0
    stop.set()
    t.join()
    server.close()
    tally("hostile completions tried", len(hostile))
    assert results[0].score == 1.0, results[0].detail  # the same completion without an attack passes
    passed = [n for n, r in zip(names[1:], results[1:]) if r.score != 0.0]
    assert not passed, f"hostile completions scored as correct: {passed}"
    for n, r in zip(names[1:], results[1:]):  # each failed within the limits
        assert r.detail["seconds"] < TIGHT.timeout_s + 5, (n, r.detail)
    assert elapsed < len(names) * (TIGHT.timeout_s + 5) / 2
    assert _digest(tmp_path) == before  # the run directory and the secret file are untouched
    assert not connections, "a sandboxed program reached the network"
    assert not any("s3cret" in (r.detail.get("reason", "") + str(r.detail)) for r in results)
    tally("items lost", 0)


KILLED_SCORER = """
import sys
from moco.scoring.sandbox import SandboxLimits, run_python
run_python("while True:\\n    pass\\n", SandboxLimits(timeout_s=120), base_dir=sys.argv[1])
"""


def _procs_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _descendants(root: int) -> set[int]:
    """Every live process below `root` (children of children included)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


@pytest.fixture
def scratch_base():
    """A directory `nobody` can traverse (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="moco-test-scratch-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@needs_sandbox
def test_a_killed_scorer_takes_its_programs_along_and_its_scratch_is_swept(scratch_base):
    """SIGKILL of the scoring process (no cleanup code runs): the sandboxed program dies with it (parent-death
    signal), and the next scorer removes the scratch directory the dead one left."""
    base = scratch_base
    p = subprocess.Popen([sys.executable, "-c", KILLED_SCORER, str(base)], env={**os.environ})
    try:
        deadline = time.time() + 60
        while not [pid for pid in _procs_mentioning(str(base)) if pid != p.pid]:
            assert time.time() < deadline and p.poll() is None, "the sandboxed program never started"
            time.sleep(0.1)
        time.sleep(1.5)  # the program runs (past the launcher's set-up)
        below = _descendants(p.pid)
        assert p.poll() is None and len(below) >= 3  # setpriv/bwrap, bwrap's init, the program
    finally:
        sigkill(p)
    deadline = time.time() + 15
    while _alive(below) and time.time() < deadline:
        time.sleep(0.1)
    orphans = _alive(below)
    for pid in orphans:  # never leave a spinning program behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "a sandboxed program outlived its scorer"
    left = [d.name for d in base.iterdir()]
    assert len(left) == 1 and left[0].startswith(f"moco-sandbox-{p.pid}-")
    live = base / f"moco-sandbox-{os.getpid()}-keep"  # a live process's directory stays
    live.mkdir()
    assert sweep_stale(str(base)) == 1
    assert [d.name for d in base.iterdir()] == [live.name]


CHEAT_TEST = ("def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n"
              "    assert abs(candidate([2.5]) [0] - 2.5) < 1e-9\n    assert isinstance(candidate([]), list)\n"
              "    assert len(candidate([5, 4])) == 2\n")


def test_every_cheat_family_scores_zero(monkeypatch):
    """Objects equal to anything, patched builtins, a redefined `check`, reading the tests, exiting early with
    a forged verdict, /proc/self/mem, a tracer that skips failing lines, one constant response for all. The
    checker does not rely on the OS sandbox for this: without one, the test runs opted in (unsandboxed)."""
    if _WHY:
        monkeypatch.setenv("MOCO_UNSAFE_CODE_EXECUTION", "1")
    item = Example("1", 0, "test", "def sort_list(xs):\n    pass\n", "", None, None,
                   {"test": CHEAT_TEST, "entry_point": "sort_list"})
    scorer = CodeExecutionScorer(limits=TIGHT, workers=2)
    names = ["honest", "constant", *CHEATS]
    responses = ["```python\ndef sort_list(xs):\n    return sorted(xs)\n```", CONSTANT_CHEAT,
                 *[cheat_response(f, "sort_list") for f in CHEATS]]
    res = scorer.score_all([item] * len(names), responses)
    tally("hostile completions tried", len(names) - 1)
    assert res[0].score == 1.0, res[0].detail
    passed = [n for n, r in zip(names[1:], res[1:]) if r.score != 0.0]
    assert not passed, f"cheats scored as correct: {passed}"


@needs_sandbox
@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_cheats_score_zero_on_real_items(dataset, data_dir):
    """A sample of the real test items (the full figures: benchmarks/code_checker.py)."""
    from moco.tasks.registry import resolve_task

    items = [e for e in resolve_task(dataset, str(data_dir)).loader().test if entry_point(e)][:4]
    scorer = CodeExecutionScorer(limits=SandboxLimits(timeout_s=10, memory_mb=512), workers=2)
    pairs = [(e, CONSTANT_CHEAT) for e in items] + [(e, cheat_response(f, entry_point(e))) for e in items
                                                     for f in CHEATS]
    res = scorer.score_all([e for e, _ in pairs], [r for _, r in pairs])
    tally("hostile completions tried", len(pairs))
    assert sum(r.score for r in res) == 0, [(e.id, r.detail) for (e, _), r in zip(pairs, res) if r.score]


def _moco(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moco", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=300)


def _code_task_and_configs(tmp_path: Path) -> tuple[Path, Path]:
    """A MoCo JSON coding task from the real rows in tests/data, a model that always sends the constant cheat,
    and one that answers each row with its reference solution."""
    import json

    import yaml

    rows = json.loads((Path(__file__).parent / "data" / "code_rows.json").read_text())
    task = {"name": "code_rows", "task_type": "coding", "dev": [],
            "test": [{k: r[k] for k in ("id", "input", "test", "language")} for r in rows]}
    (tmp_path / "code_rows.json").write_text(json.dumps(task))
    honest_rules = []
    for r in rows:
        code = r["solution"]
        if r["dataset"] == "humaneval":  # the reference is the body of the prompt's stub
            from moco.scoring.code_execution import prompt_code

            code = prompt_code(r["input"]) + code
        entry = entry_point(Example("", 0, "test", r["input"], r["input"], None, None, {}))
        where = "def" if r["dataset"] == "humaneval" else "assert"
        honest_rules.append({"match": rf"{where} {re.escape(entry)}\(", "reply": f"```python\n{code}```"})
    paths = []
    for name, script in (("cheater", {"default": CONSTANT_CHEAT}), ("honest", {"rules": honest_rules})):
        cfg = {"method": "single_model", "task": {"name": str(tmp_path / "code_rows.json")},
               "models": [{"model": f"scripted:{name}", "script": script}]}
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg))
    return paths[0], paths[1]


def test_moco_run_refuses_code_without_a_sandbox_in_one_line(tmp_path):
    cheater, _ = _code_task_and_configs(tmp_path)
    r = _moco(["run", str(cheater), "--out", str(tmp_path / "run")], tmp_path, MOCO_BWRAP="none",
              MOCO_UNSAFE_CODE_EXECUTION="")
    assert r.returncode == 2 and not (tmp_path / "run").exists()
    assert r.stderr.strip().count("\n") == 0 and "refusing to run model-written code" in r.stderr
    assert "--unsafe-code-execution" in r.stderr


def test_the_cli_opt_in_runs_code_without_a_sandbox(tmp_path):
    """`moco --unsafe-code-execution run` is the explicit opt-in the refusal names: the honest model's code runs."""
    import json

    _, honest = _code_task_and_configs(tmp_path)
    r = _moco(["--unsafe-code-execution", "run", str(honest), "--out", str(tmp_path / "run")], tmp_path,
              MOCO_BWRAP="none", MOCO_UNSAFE_CODE_EXECUTION="")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["score"] == 1.0


@needs_sandbox
def test_moco_run_with_a_model_that_always_cheats_scores_zero(tmp_path):
    """Through the real CLI, as a user runs it: the cheating model scores 0, the honest one 1."""
    import json

    cheater, honest = _code_task_and_configs(tmp_path)
    scores = {}
    for cfg in (cheater, honest):
        r = _moco(["run", str(cfg), "--out", str(tmp_path / cfg.stem)], tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        scores[cfg.stem] = json.loads((tmp_path / cfg.stem / "metrics.json").read_text())["score"]
    tally("hostile completions tried", 6)
    assert scores == {"cheater": 0.0, "honest": 1.0}
