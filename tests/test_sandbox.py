"""The code sandbox: passing code passes, and hostile code fails its item and leaves the host untouched."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from moco.scoring.code_execution import CodeExecutionScorer, build_program, entry_point, extract_code
from moco.scoring.sandbox import SandboxLimits, describe_isolation, run_many
from moco.tasks.base import Example

TIGHT = SandboxLimits(timeout_s=3, memory_mb=256, max_processes=4, max_file_mb=2)


def test_hostile_programs_fail_and_leave_the_host_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_TEST_SECRET", "s3cret-value")
    scratch_base = Path(tempfile.gettempdir())
    before = set(scratch_base.glob("moco-sandbox-*"))  # other runs' leftovers don't count
    outside = tmp_path / "outside.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    programs = {
        "passes": "def f(x):\n    return x + 1\nassert f(1) == 2\nopen('scratch.txt', 'w').write('ok')\n",
        "fails": "assert 1 == 2\n",
        "infinite loop": "while True:\n    pass\n",
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "memory hog": "x = bytearray(8 * 1024 ** 3)\n",
        "write outside": f"open({str(outside)!r}, 'w').write('pwned')\n",
        "os.open outside": f"import os\nos.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT)\n",
        "delete outside": f"import os\nos.remove({str(victim)!r})\n",
        "reads env secret": "import os\nassert os.environ.get('MOCO_TEST_SECRET') == 's3cret-value'\n",
        "reads parent env": "print(open('/proc/%d/environ' % __import__('os').getppid()).read())\n",
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
        "subprocess": "import subprocess\nsubprocess.run(['touch', %r])\n" % str(outside),
        "ctypes": "import ctypes\nctypes.CDLL(None)\n",
        "early exit": "import sys\nsys.exit(0)\nassert False\n",
        "os._exit": "import os\nos._exit(0)\n",
        "huge file": "open('big', 'wb').write(b'x' * (20 * 1024 * 1024))\n",
        "print flood": "while True:\n    print('x' * 10000)\n",
    }
    outcomes = dict(zip(programs, run_many(list(programs.values()), TIGHT, workers=2)))
    assert outcomes["passes"].passed, outcomes["passes"].stderr
    for name, out in outcomes.items():
        if name != "passes":
            assert not out.passed, name
    assert outcomes["infinite loop"].timed_out
    assert outcomes["infinite loop"].seconds < TIGHT.timeout_s + 3
    assert not outside.exists()
    assert victim.read_text() == "keep me"
    assert "s3cret" not in outcomes["reads env secret"].stderr + outcomes["reads env secret"].stdout
    assert "s3cret" not in outcomes["reads parent env"].stdout
    assert set(scratch_base.glob("moco-sandbox-*")) <= before  # every scratch directory was removed


def test_isolation_is_described():
    info = describe_isolation()
    assert set(info) == {"namespaces", "drops_to_nobody", "limits"}


def ex(input_text, test, **meta):
    return Example("1", 0, "test", input_text, input_text, None, None, {"test": test, **meta})


ADD_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
STUB = 'Complete the following code\n\nfrom typing import List\n\n\ndef helper(x):\n    return x\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'


def test_extract_code_prefers_the_last_python_block():
    text = "First try:\n```python\ndef f(): return 1\n```\nBetter:\n```python\ndef f(): return 2\n```\n```text\nout\n```"
    assert extract_code(text).strip() == "def f(): return 2"
    assert extract_code("```\nx = 1\n```").strip() == "x = 1"
    assert extract_code("") == ""


def test_entry_point_humaneval_stub_and_mbpp_assert():
    assert entry_point(ex(STUB, ADD_TEST)) == "add"  # the last def, not the helper
    mbpp = ex("Write a function.\nYour code should pass this test case: assert (Diff([1, 2], [2])) == [1]", ADD_TEST)
    assert entry_point(mbpp) == "Diff"
    assert entry_point(ex(STUB, ADD_TEST, entry_point="helper")) == "helper"


def test_completion_forms_and_parallel_scoring():
    scorer = CodeExecutionScorer(limits=TIGHT, workers=2)
    e = ex(STUB, ADD_TEST)
    responses = [
        "```python\ndef add(a, b):\n    return helper(a) + b\n```",  # full function using the prompt's helper
        "    return a + b\n",  # body continuing the stub
        "```python\ndef add(a, b):\n    return a - b\n```",  # wrong
        "I cannot write code.",  # no code at all: runs as Python, fails
        "",
    ]
    res = scorer.score_batch(None, [e] * len(responses), responses)
    assert [r.score for r in res] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert res[-1].extracted is None and res[-1].detail["reason"] == "no code in the response"
    assert "AssertionError" in res[2].detail["reason"]


def test_program_runs_prompt_code_first():
    prog = build_program(ex(STUB, ADD_TEST), "```python\ndef add(a, b):\n    return a + b\n```")
    assert prog.index("def helper") < prog.index("return a + b") < prog.index("def check") < prog.index("check(add)")


@pytest.mark.parametrize("missing", ["test", "entry"])
def test_items_without_tests_or_entry_point_fail_clearly(missing):
    e = ex("Write something.", "" if missing == "test" else ADD_TEST)
    r = CodeExecutionScorer(limits=TIGHT).score(e, "```python\ndef f():\n    pass\n```")
    assert r.score == 0.0 and "no entry point or tests" in r.note
