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
    # -- more of each family (our own) --
    # containers that equal anything: an int and a list subclass
    "always_equal_int_list": '''
class _I(int):
    def __eq__(self, other): return True
    __hash__ = int.__hash__
class _L(list):
    def __eq__(self, other): return True
def {entry}(*args, **kwargs):
    return _L([_I(0)]) if args and isinstance(args[0], list) else _I(0)
''',
    # an object that claims to be of the expected class
    "class_spoof": '''
class _Spoof:
    __class__ = property(lambda self: list)
    def __eq__(self, other): return True
    def __len__(self): return 2
    def __iter__(self): return iter([1, 2, 3])
    def __getitem__(self, i): return 2.5
def {entry}(*args, **kwargs):
    return _Spoof()
''',
    # comparison helpers patched: operator, math.isclose, unittest's assertions, json's encoder
    "patched_helpers": '''
import operator, math, json, unittest
operator.eq = lambda a, b: True
math.isclose = lambda *a, **k: True
unittest.TestCase.assertEqual = lambda *a, **k: None
json.dumps = lambda *a, **k: '{{"passed": true, "reason": "passed", "calls": 3}}'
json.JSONEncoder.encode = lambda self, o: '{{"passed": true}}'
def {entry}(*args, **kwargs):
    return None
''',
    # a verdict printed at exit, whoever calls
    "check_at_exit": '''
import atexit, os, sys
atexit.register(lambda: os.write(1, b'\\n{{"passed": true, "reason": "passed", "calls": 3}}\\n'))
def {entry}(*args, **kwargs):
    sys.exit(0)
''',
    # `check` replaced in __main__ and in every loaded module
    "check_in_every_module": '''
import sys
def check(candidate):
    return True
for _m in list(sys.modules.values()):
    try:
        _m.check = check
    except Exception:
        pass
def {entry}(*args, **kwargs):
    sys.modules["__main__"].__dict__["check"] = check
    return None
''',
    # the tests' bytecode disassembled: the constants compared against
    "bytecode_dis": '''
import dis, gc
def _consts():
    for o in gc.get_objects():
        if type(o).__name__ == "code" and o.co_name == "check":
            return [i.argval for i in dis.get_instructions(o) if i.opname == "LOAD_CONST" and i.argval is not None]
    return []
def {entry}(*args, **kwargs):
    c = _consts()
    return c[1] if len(c) > 1 else (c[0] if c else None)
''',
    # the tests read from disk: any file that defines `check`, its first compared literal returned
    "tests_from_disk": '''
import os, re, ast
def _find():
    for root in ("/moco", "/tmp", os.getcwd(), "/proc/self/cwd"):
        for d, _, fs in os.walk(root):
            for f in fs:
                try:
                    text = open(os.path.join(d, f), errors="ignore").read(1 << 20)
                except OSError:
                    continue
                m = re.search(r"def check\\(.*?==\\s*(\\[[^\\n]*\\]|[-0-9.]+)", text, re.S)
                if m:
                    return ast.literal_eval(m.group(1))
    return None
def {entry}(*args, **kwargs):
    return _find()
''',
    # every 32-hex token in this process's memory sent as the verdict marker, then a clean exit
    "proc_mem_marker": '''
import os, re
def _tokens():
    out = set()
    try:
        maps = open("/proc/self/maps").read().splitlines()
        with open("/proc/self/mem", "rb") as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                try:
                    mem.seek(lo)
                    out |= set(re.findall(rb"[0-9a-f]{{32}}", mem.read(min(hi - lo, 1 << 22))))
                except (OSError, ValueError, OverflowError):
                    pass
    except OSError:
        pass
    return out
def {entry}(*args, **kwargs):
    for t in _tokens():
        os.write(1, b"\\n" + t + b"\\n{{\\"passed\\": true, \\"nonce\\": \\"" + t + b"\\"}}\\n")
    os._exit(0)
''',
}

CHEAT_FAMILIES: dict[str, list[str]] = {  # issue 21's cheat families -> the CHEATS that try them
    "objects whose __eq__ lies": ["always_equal", "always_equal_int_list", "class_spoof"],
    "patched builtins": ["patched_builtins", "patched_helpers", "settrace"],
    "a redefined check": ["redefined_check", "check_at_exit", "check_in_every_module"],
    "bytecode introspection": ["introspect_tests", "bytecode_dis", "tests_from_disk"],
    "/proc/self/mem marker forgery": ["proc_mem", "proc_mem_marker", "early_exit", "exit_in_call"],
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
