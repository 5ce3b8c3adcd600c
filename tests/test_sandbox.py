"""The code sandbox and the code scorer: correct code passes, wrong code fails, hostile code is contained.

Tests marked by `needs_sandbox` run only where bubblewrap works (they skip with the reason otherwise, e.g.
"bubblewrap (bwrap) is not installed"); the refusal and opt-in tests run everywhere. Every sandboxed run here
uses a private base directory, so other processes' sandbox folders in /tmp never matter.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from moco.errors import ConfigError
from moco.scoring import sandbox
from moco.scoring.code_execution import CodeExecutionScorer, build_item, entry_point, extract_code, prompt_code
from moco.scoring.sandbox import (CodeItem, SandboxLimits, SandboxUnavailable, check_solution, describe_isolation,
                                  find_bwrap, run_many, run_python)
from moco.tasks.base import Example

TIGHT = SandboxLimits(timeout_s=4, memory_mb=256, max_processes=4, max_file_mb=2, disk_mb=4)
ROWS = json.loads((Path(__file__).parent / "data" / "code_rows.json").read_text())


def _why_no_sandbox() -> str:
    exe, why = find_bwrap()
    return "" if exe else why


needs_sandbox = pytest.mark.skipif(bool(_why_no_sandbox()), reason=f"no OS sandbox here: {_why_no_sandbox()}")
if _why_no_sandbox():  # printed in the warnings summary of a plain `pytest -q`, not only with -rs
    warnings.warn(f"code sandbox tests skipped (code execution is refused here): {_why_no_sandbox()}", stacklevel=1)


@pytest.fixture
def base(tmp_path_factory):
    """A private base directory for item folders that the sandbox's fresh uid can traverse."""
    d = Path(tempfile.mkdtemp(prefix="moco-test-sandbox-base-"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ex(input_text, test, **meta):
    return Example("1", 0, "test", input_text, input_text, None, None, {"test": test, **meta})


ADD_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
STUB = 'Complete the following code\n\nfrom typing import List\n\n\ndef helper(x):\n    return x\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'


# -- refusal and opt-in: run everywhere ---------------------------------------------------------------------

def test_without_a_sandbox_code_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("MOCO_BWRAP", "none")
    monkeypatch.delenv("MOCO_UNSAFE_CODE_EXECUTION", raising=False)
    with pytest.raises(ConfigError) as e:
        CodeExecutionScorer()
    msg = str(e.value)
    assert "\n" not in msg and "refusing to run model-written code without an OS sandbox" in msg
    assert "MOCO_UNSAFE_CODE_EXECUTION=1" in msg
    with pytest.raises(SandboxUnavailable):
        run_python("print(1)\n")
    with pytest.raises(SandboxUnavailable):
        check_solution(CodeItem("def f():\n    return 1\n", "", "def check(c):\n    assert c() == 1\n", "f"))


def test_bwrap_without_namespaces_is_refused_with_its_own_words(monkeypatch, tmp_path):
    """bwrap installed but namespaces forbidden (a container without CAP_SYS_ADMIN, a kernel that disallows
    unprivileged user namespaces): the probe fails and the refusal quotes bwrap's message."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MOCO_BWRAP", str(fake))
    monkeypatch.delenv("MOCO_UNSAFE_CODE_EXECUTION", raising=False)
    with pytest.raises(ConfigError, match="cannot create namespaces here: bwrap: No permissions"):
        CodeExecutionScorer()


def test_explicit_opt_in_runs_unsandboxed_with_the_same_checker(monkeypatch, base):
    monkeypatch.setenv("MOCO_BWRAP", "none")
    monkeypatch.setenv("MOCO_UNSAFE_CODE_EXECUTION", "1")
    assert describe_isolation()["sandbox"] == "none" and describe_isolation()["unsafe_opt_in"]
    scorer = CodeExecutionScorer(limits=TIGHT, workers=2)
    e = ex(STUB, ADD_TEST)
    responses = ["```python\ndef add(a, b):\n    return a + b\n```", "    return a - b\n",
                 "```python\nclass T:\n    def __eq__(self, o):\n        return True\n\ndef add(a, b):\n    return T()\n```"]
    assert [r.score for r in scorer.score_all([e] * 3, responses)] == [1.0, 0.0, 0.0]
    monkeypatch.delenv("MOCO_UNSAFE_CODE_EXECUTION")
    assert CodeExecutionScorer(limits=TIGHT, unsafe_code_execution=True).score(e, responses[0]).score == 1.0


# -- the OS sandbox ------------------------------------------------------------------------------------------

@needs_sandbox
def test_isolation_is_described():
    info = describe_isolation()
    assert info["sandbox"] == "bubblewrap" and info["why_not"] == ""
    assert info["runs_as"] == ("fresh uid" if os.geteuid() == 0 else "user namespace")


@needs_sandbox
def test_hostile_programs_are_contained_and_leave_the_host_untouched(tmp_path, monkeypatch, base):
    """With the audit hook off: the OS sandbox alone is the boundary."""
    monkeypatch.setattr(sandbox, "AUDIT_LAYER", False)
    monkeypatch.setenv("MOCO_TEST_SECRET", "s3cret-value")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    tmp_path.chmod(0o755)
    outside = tmp_path / "outside.txt"
    secret_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "token=s3cret-cmdline"])
    probe = "import os, sys\nfound = []\n"  # each program prints what it managed; the test reads the host side
    programs = {
        "passes": "def f(x):\n    return x + 1\nassert f(1) == 2\nopen('scratch.txt', 'w').write('ok')\n",
        "fails": "assert 1 == 2\n",
        "infinite loop": "while True:\n    pass\n",
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "thread bomb": "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(30,)).start()\n",
        "memory hog": "x = bytearray(8 * 1024 ** 3)\n",
        "disk quota": "for i in range(100):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (1024 * 1024))\n",
        "huge file": "open('big', 'wb').write(b'x' * (20 * 1024 * 1024))\n",
        "print flood": "while True:\n    print('x' * 10000)\n",
        "write outside": f"open({str(outside)!r}, 'w').write('pwned')\n",
        "os.open with dir_fd": "import os\nd = os.open('/', os.O_RDONLY)\nos.chdir('/tmp')\n"
                               f"os.open({str(outside)[1:]!r}, os.O_WRONLY | os.O_CREAT, dir_fd=d)\n",
        "delete outside": f"import os\nos.remove({str(victim)!r})\n",
        "read host files": "print(open('/etc/passwd').read())\n",
        "list host dirs": "import os\nprint(os.listdir('/root'), os.listdir('/home'))\n",
        "env secret": "import os\nassert os.environ.get('MOCO_TEST_SECRET') == 's3cret-value'\n",
        "other processes": probe + "for p in os.listdir('/proc'):\n    try:\n        found.append(open(f'/proc/{p}/cmdline', 'rb').read())\n"
                           "    except OSError:\n        pass\nassert any(b's3cret' in f for f in found)\n",
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
        "raw socket": "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.connect(('1.1.1.1', 80))\n",
        "subprocess writes outside": f"import subprocess\nsubprocess.run(['touch', {str(outside)!r}], check=True)\n",
        "ctypes kill": f"import ctypes\nassert ctypes.CDLL(None).kill({secret_proc.pid}, 9) == 0\n",
        "dev shm": "open('/dev/shm/moco-pwned', 'w').write('x')\n",
    }
    try:
        outcomes = dict(zip(programs, run_many(list(programs.values()), TIGHT, workers=2, base_dir=str(base))))
        assert secret_proc.poll() is None, "a sandboxed program killed a host process"
    finally:
        secret_proc.kill()
        secret_proc.wait()
    assert outcomes["passes"].passed, outcomes["passes"].stderr
    for name, out in outcomes.items():
        if name != "passes":
            assert not out.passed, (name, out.stdout[-300:], out.stderr[-300:])
    assert outcomes["infinite loop"].timed_out and outcomes["infinite loop"].seconds < TIGHT.timeout_s + 3
    assert "No space left on device" in outcomes["disk quota"].stderr
    assert not outside.exists() and victim.read_text() == "keep me"
    assert not Path("/dev/shm/moco-pwned").exists()
    everything = "".join(o.stdout + o.stderr for o in outcomes.values())
    assert "s3cret" not in everything and "root:x:0" not in everything
    assert list(base.iterdir()) == []  # every item folder was removed


@needs_sandbox
def test_the_sandbox_works_as_an_ordinary_user(tmp_path):
    """As `nobody` (setpriv), with the system Python and only this module: bubblewrap builds the same sandbox in
    a user namespace, and the checker still refuses a cheat."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to switch to the user nobody")
    src = Path(__file__).resolve().parents[1] / "src" / "moco" / "scoring"
    work = Path(tempfile.mkdtemp(prefix="moco-test-nobody-"))
    try:
        shutil.copy(src / "sandbox.py", work / "sandbox.py")
        shutil.copytree(src / "sandboxed", work / "sandboxed")
        for p in [work, *work.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        script = (
            "import importlib.util, json, os, sys\n"
            f"spec = importlib.util.spec_from_file_location('sandbox', {str(work / 'sandbox.py')!r})\n"
            "sb = importlib.util.module_from_spec(spec); sys.modules['sandbox'] = sb; spec.loader.exec_module(sb)\n"
            "L = sb.SandboxLimits(timeout_s=5, memory_mb=256)\n"
            "t = 'def check(candidate):\\n    assert candidate(2) == 4\\n'\n"
            "good = sb.check_solution(sb.CodeItem('def sq(x):\\n    return x * x\\n', '', t, 'sq'), L)\n"
            "cheat = sb.check_solution(sb.CodeItem('class A:\\n    def __eq__(s, o):\\n        return True\\n"
            "def sq(x):\\n    return A()\\n', '', t, 'sq'), L)\n"
            "home = sb.run_python('import os\\nprint(os.getuid(), len([p for p in os.listdir(\"/proc\") if p.isdigit()]))\\n"
            "open(\"/etc/passwd\")\\n', L)\n"
            "print(json.dumps([os.getuid(), good.passed, cheat.passed, home.passed, home.stdout]))\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I",
                            "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr[-2000:]
        uid, good, cheat, reads_etc, out = json.loads(r.stdout.strip().splitlines()[-1])
        assert uid == 65534 and good is True and cheat is False
        assert reads_etc is False  # /etc is not in the sandbox
        assert int(out.split()[1]) <= 3  # its own /proc: bwrap's init and itself, no host process
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- code extraction (no sandbox needed) ---------------------------------------------------------------------

def test_extract_picks_the_block_that_defines_the_entry_point():
    two = "```python\ndef add(a, b):\n    return a + b\n```\nExample usage:\n```python\nprint(add(1, 2))\n```"
    assert extract_code(two, "add").startswith("def add(a, b):")
    fixed = "First try:\n```python\ndef add(a, b): return 1\n```\nBetter:\n```python\ndef add(a, b): return a + b\n```"
    assert "a + b" in extract_code(fixed, "add")
    helper = "```python\ndef _sq(x):\n    return x * x\n```\n```python\ndef f(x):\n    return _sq(x) + 1\n```"
    assert extract_code(helper, "f").index("def _sq") < extract_code(helper, "f").index("def f")
    assert extract_code("```\nx = 1\n```").strip() == "x = 1"  # no entry point given: the last block
    assert extract_code("") == ""


def test_extract_unfenced_code_after_prose():
    text = ("Sure! Here is my solution.\n\ndef add(a, b):\n    # add them\n    return a + b\n\n"
            "This returns the sum of the two numbers.")
    assert extract_code(text, "add") == "def add(a, b):\n    # add them\n    return a + b\n"
    imports = "We need math.\nimport math\n\ndef area(r):\n    return math.pi * r ** 2\nDone."
    assert extract_code(imports, "area").startswith("import math")
    assert extract_code("    return a + b\n", "add") == "    return a + b\n"  # a body stays as it is
    between = ("First a helper:\ndef _sq(x):\n    return x * x\n\nNow the function itself:\n\n"
               "def f(x):\n    return _sq(x) + 1\nThat's it.")
    assert extract_code(between, "f") == "def _sq(x):\n    return x * x\n\ndef f(x):\n    return _sq(x) + 1\n"


def test_entry_point_humaneval_stub_and_mbpp_assert():
    assert entry_point(ex(STUB, ADD_TEST)) == "add"  # the last def, not the helper
    mbpp = ex("Write a function.\nYour code should pass this test case: assert (Diff([1, 2], [2])) == [1]", ADD_TEST)
    assert entry_point(mbpp) == "Diff"
    assert entry_point(ex(STUB, ADD_TEST, entry_point="helper")) == "helper"


def test_item_puts_prompt_code_first_and_keeps_the_tests_out_of_the_solution():
    item = build_item(ex(STUB, ADD_TEST), "```python\ndef add(a, b):\n    return a + b\n```")
    assert item.solution.index("def helper") < item.solution.index("return a + b")
    assert "def check" not in item.solution and item.test_code == ADD_TEST and item.entry == "add"
    assert item.prompt_code == prompt_code(STUB)


@pytest.mark.parametrize("missing", ["test", "entry"])
def test_items_without_tests_or_entry_point_fail_clearly(missing, monkeypatch):
    monkeypatch.setenv("MOCO_UNSAFE_CODE_EXECUTION", "1")  # nothing runs: the item is refused before
    e = ex("Write something.", "" if missing == "test" else ADD_TEST)
    r = CodeExecutionScorer(limits=TIGHT).score(e, "```python\ndef f():\n    pass\n```")
    assert r.score == 0.0 and "no entry point or tests" in r.note


# -- the checker on the wire: values, handles, exceptions, fallback -------------------------------------------

@needs_sandbox
def test_values_cross_the_wire_as_plain_data(base):
    tests = ("def check(candidate):\n"
             "    assert candidate('t') == (1, 2)\n"  # a tuple stays a tuple
             "    assert candidate('nt') == (1, 2)\n"  # a namedtuple is a tuple
             "    assert candidate('l') != (1, 2)\n"  # a list is not
             "    assert candidate('big') == 10 ** 5000\n"
             "    assert candidate('nan') != candidate('nan')\n"
             "    assert candidate('d') == {(1, 2): {3}, 'x': frozenset([b'a'])}\n"
             "    assert list(candidate('gen')) == [0, 1, 2] and candidate('gen') != [0, 1, 2]\n"
             "    assert abs(candidate('f') - 0.3) < 1e-9\n"
             "    assert candidate('type') is int\n"
             "    try:\n        candidate('raise')\n        assert False\n    except ValueError:\n        pass\n")
    sol = ("import collections\nP = collections.namedtuple('P', 'a b')\n"
           "def f(k):\n"
           "    return {'t': (1, 2), 'nt': P(1, 2), 'l': [1, 2], 'big': 10 ** 5000, 'nan': float('nan'),\n"
           "            'd': {(1, 2): {3}, 'x': frozenset([b'a'])}, 'gen': (i for i in range(3)), 'f': 0.1 + 0.2,\n"
           "            'type': int, 'raise': None}[k] if k != 'raise' else int('x')\n")
    out = check_solution(CodeItem(sol, "", tests, "f"), TIGHT, base_dir=str(base))
    assert out.passed, out.reason
    assert out.calls == 12 and not out.fallback


@needs_sandbox
def test_objects_stay_in_the_sandbox_as_handles(base):
    """MBPP dev 601's tests build `Pair`s (a class the solution defines) and pass them back."""
    row = next(r for r in ROWS if r["id"] == 601)
    item = CodeItem(row["solution"], "", row["test"], "max_chain_length")
    assert check_solution(item, TIGHT, base_dir=str(base)).passed
    noisy = CodeItem('def f():\n    raise ValueError("a\\x1b[31mb\\nc")\n', "", "def check(c):\n    c()\n", "f")
    assert check_solution(noisy, TIGHT, base_dir=str(base)).reason == "ValueError: a?[31mb?c"  # one printable line
    truthy = CodeItem("class Yes:\n    pass\ndef f():\n    return Yes()\n", "", "def check(c):\n    assert c()\n", "f")
    out = check_solution(truthy, TIGHT, base_dir=str(base))
    assert not out.passed and "no truth value" in out.reason


@needs_sandbox
def test_tests_that_pass_functions_fall_back_and_say_so(base):
    types = "def check(candidate):\n    assert candidate((4, 7.7, 'a'), int) == [7.7, 'a']\n"  # MBPP dev 533: types cross
    drop = "def remove_type(t, ty):\n    return [x for x in t if not isinstance(x, ty)]\n"
    out = check_solution(CodeItem(drop, "", types, "remove_type"), TIGHT, base_dir=str(base))
    assert out.passed and not out.fallback
    tests = "def check(candidate):\n    assert candidate(lambda x: x + 1, 2) == 3\n"
    good = check_solution(CodeItem("def apply(f, x):\n    return f(x)\n", "", tests, "apply"), TIGHT, base_dir=str(base))
    bad = check_solution(CodeItem("def apply(f, x):\n    return 0\n", "", tests, "apply"), TIGHT, base_dir=str(base))
    assert good.passed and good.fallback
    assert not bad.passed and bad.fallback


# -- a corpus of real rows (tests/data/code_rows.json: HumanEval 32, 38, 103; MBPP 601, 872, 967) ---------

def _row_example(r) -> Example:
    return Example(str(r["id"]), 0, r["split"], r["input"], r["input"], None, None,
                   {"test": r["test"], "language": "python"})


def _full_function(r) -> str:
    stub = prompt_code(r["input"])
    return (stub + r["solution"]) if r["dataset"] == "humaneval" else r["solution"]


def _families(r) -> dict[str, tuple[str, float]]:
    entry = entry_point(_row_example(r))
    full = _full_function(r).strip("\n")
    wrong = f"def {entry}(*args, **kwargs):\n    return None"
    fam = {
        "fenced": (f"Here you go:\n```python\n{full}\n```", 1.0),
        "solution then example usage": (f"```python\n{full}\n```\n\nExample usage:\n```python\n"
                                        f"print({entry}(1))\nprint({entry}('x'))\n```", 1.0),
        "prose then unfenced code": (f"Here is a solution to the task.\n\n{full}\n\nIt runs in linear time.", 1.0),
        "__main__ guard": (f"```python\n{full}\n\nif __name__ == '__main__':\n    print({entry}(input()))\n```", 1.0),
        "example usage in the same block": (f"```python\n{full}\n\n# Example usage\nx = 1\n```", 1.0),
        "wrong, then corrected": (f"```python\n{wrong}\n```\nOops, that is wrong. Corrected:\n```python\n{full}\n```",
                                  1.0),
        "correct, then a wrong rewrite": (f"```python\n{full}\n```\nSimpler:\n```python\n{wrong}\n```", 0.0),
        "wrong": (f"```python\n{wrong}\n```", 0.0),
        "wrong name": (f"```python\n{full.replace(f'def {entry}(', f'def {entry}_v2(')}\n```", 0.0),
        "prose only": (f"The function {entry} should loop over the input and return the result.", 0.0),
    }
    if r["dataset"] == "humaneval":
        fam["body only"] = (r["solution"], 1.0)
    return fam


@needs_sandbox
def test_code_response_corpus_on_real_rows():
    scorer = CodeExecutionScorer(limits=SandboxLimits(timeout_s=10, memory_mb=512), workers=2)
    exs, responses, expected, names = [], [], [], []
    for r in ROWS:
        for name, (text, want) in _families(r).items():
            exs.append(_row_example(r))
            responses.append(text)
            expected.append(want)
            names.append(f"{r['dataset']} {r['id']}: {name}")
    got = scorer.score_all(exs, responses)
    wrong = [(n, res.note) for n, res, want in zip(names, got, expected) if res.score != want]
    assert not wrong, wrong
    assert len(responses) >= 6 * 10  # every family on every row
