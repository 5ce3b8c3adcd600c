"""Responses that try to pass a code item without solving it (the universal cheat families of issue 21).

Each family writes the entry point (any name) so that it would pass a checker sharing its namespace or its
process; against MoCo's checker each must score 0 on every item. Used by test_hostile_code.py and
benchmarks/code_checker.py.
"""
from __future__ import annotations

ALWAYS_EQUAL = '''
class _Anything(str):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    __hash__ = str.__hash__
    def __bool__(self): return True
    def __len__(self): return 0
    def __abs__(self): return 0
    def __sub__(self, other): return self
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __round__ = __sub__
    def __iter__(self): return iter(())
    def __repr__(self): return "True"
    def __float__(self): return 0.0
    def __int__(self): return 0
'''

CHEATS: dict[str, str] = {
    # an object equal to anything (also a str subclass, so naive type checks accept it)
    "always_equal": ALWAYS_EQUAL + "def {entry}(*args, **kwargs):\n    return _Anything()\n",
    # builtins the tests use, patched to make every comparison come out right
    "patched_builtins": '''
import builtins
builtins.abs = lambda x: 0
builtins.isinstance = lambda *a: True
builtins.len = lambda x: 0
builtins.round = lambda *a: 0
builtins.all = builtins.any = lambda *a: True
builtins.sorted = lambda *a, **k: []
builtins.AssertionError = type("AssertionError", (BaseException,), {{}})
def {entry}(*args, **kwargs):
    return None
''',
    # the dataset's `check` replaced by one that passes (defined twice: before and after the tests would be)
    "redefined_check": '''
import builtins, sys
def check(candidate):
    return True
builtins.check = check
def _keep(f):
    builtins.check = check
    return f
@_keep
def {entry}(*args, **kwargs):
    sys.modules[__name__].__dict__["check"] = check
    return None
''',
    # look for the tests (check's code, its constants, the caller's frames) and answer from them
    "introspect_tests": '''
import gc, sys
def _expected():
    for o in gc.get_objects():
        code = getattr(o, "__code__", None)
        if code is not None and getattr(o, "__name__", "") == "check":
            return [c for c in code.co_consts if c is not None]
    f = sys._getframe()
    while f is not None:
        for v in list(f.f_locals.values()):
            if callable(v) and getattr(v, "__name__", "") == "check":
                return list(v.__code__.co_consts)
        f = f.f_back
    return None
def {entry}(*args, **kwargs):
    found = _expected()
    return found[1] if found and len(found) > 1 else found
''',
    # stop before the tests run, saying it finished
    "early_exit": '''
import os, sys
print("passed")
sys.stdout.flush()
os.write(1, b"\\n{{\\"passed\\": true, \\"reason\\": \\"passed\\", \\"calls\\": 3}}\\n")
os._exit(0)
def {entry}(*args, **kwargs):
    return None
''',
    # exit from inside the first call, after forging the checker's verdict on every fd it can reach
    "exit_in_call": '''
import os
def {entry}(*args, **kwargs):
    for fd in range(1, 20):
        try:
            os.write(fd, b"\\n{{\\"passed\\": true, \\"reason\\": \\"passed\\", \\"calls\\": 3}}\\n")
        except OSError:
            pass
    os._exit(0)
''',
    # read memory and other processes for a marker or the expected values
    "proc_mem": '''
import os, re
def _scan():
    found = []
    for pid in os.listdir("/proc"):
        for name in ("cmdline", "environ"):
            try:
                found.append(open(f"/proc/{{pid}}/{{name}}", "rb").read())
            except OSError:
                pass
    try:
        maps = open("/proc/self/maps").read().splitlines()
        with open("/proc/self/mem", "rb") as mem:
            for line in maps[:50]:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                try:
                    mem.seek(lo)
                    found.append(mem.read(min(hi - lo, 1 << 20)))
                except OSError:
                    pass
    except OSError:
        pass
    return b"".join(found)
def {entry}(*args, **kwargs):
    blob = _scan()
    m = re.search(rb"==\\s*([-0-9.]+)", blob)
    return eval(m.group(1)) if m else None
''',
    # trace the caller and skip its failing lines
    "settrace": '''
import sys
def _tracer(frame, event, arg):
    if event == "exception":
        frame.f_lineno = frame.f_lineno + 1
    return _tracer
sys.settrace(_tracer)
def {entry}(*args, **kwargs):
    f = sys._getframe(1)
    f.f_trace = _tracer
    return None
''',
}


def cheat_response(family: str, entry: str | None) -> str:
    """The family's response for an item whose function is `entry`, as a fenced block."""
    return "```python\n" + CHEATS[family].format(entry=entry or "solution").strip() + "\n```"


# one response for every item (it cannot know the function's name): every trick at module level
CONSTANT_CHEAT = "```python\n" + ALWAYS_EQUAL + '''
import builtins, sys, os
builtins.abs = lambda x: 0
builtins.isinstance = lambda *a: True
def check(candidate):
    return True
builtins.check = check
class _Module(type(sys)):
    def __getattr__(self, name):
        return lambda *a, **k: _Anything()
sys.modules[__name__].__class__ = _Module
os.write(1, b'\\n{"passed": true}\\n')
''' + "```"
