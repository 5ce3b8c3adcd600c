"""The checker: runs the dataset's tests in its own process, the solution's functions are remote calls.

Started as `python -I -S checker.py CONFIG.json`, in a sandbox of its own. It runs the prompt's code (the
helpers the tests use, e.g. HumanEval's `poly`) and the dataset's tests, which are trusted; every name the
tests take from the solution (the entry point, and any other name the tests use but do not define) is a handle
whose calls go to the sandboxed solution over a pipe, and whose results come back as plain values. The tests
therefore compare values this process built itself, with builtins nobody patched, and the solution never sees
the tests, the expected values or this process. The verdict is the last line on stdout (the tests' own prints
go to stderr). Standard library only.
"""
import builtins
import json
import os
import resource
import sys
import traceback


class _Client:
    def __init__(self, wire, wfd, rfd):
        self.wire = wire
        self.out = os.fdopen(wfd, "wb")
        self.rin = os.fdopen(rfd, "rb")
        self.calls = 0

    def _ask(self, msg):
        try:
            self.out.write(self.wire.dumps(msg))
            self.out.flush()
        except BrokenPipeError:  # the solution is gone; it may have left a last word (why it failed to load)
            pass
        reply = self.wire.read_message(self.rin)
        if type(reply) is not dict:
            raise ValueError("malformed reply from the sandbox")
        if "raised" in reply:
            raise _exception(reply["raised"])
        return reply

    def resolve(self, v):
        ref_id, label = (v, "object") if type(v) is int else (int(v[0]), str(v[1])[:60])
        return self.wire.Ref(ref_id, self, label)

    def get(self, name):
        reply = self._ask({"op": "get", "name": name})
        return None if reply.get("missing") else (self.wire.decode(reply["ok"], self.resolve),)

    def call(self, ref, args, kwargs):
        enc_args = self.wire.encode(list(args))
        enc_kwargs = self.wire.encode([[k, v] for k, v in kwargs.items()])
        self.calls += 1
        reply = self._ask({"op": "call", "ref": ref.ref_id, "args": enc_args, "kwargs": enc_kwargs})
        return self.wire.decode(reply["ok"], self.resolve)


class SolutionError(Exception):
    """An exception the solution raised whose type is not a builtin exception."""


def _exception(raised):
    """The solution's exception, re-raised here as the builtin type of the same name (tests may expect one)."""
    name, msg = str(raised[0])[:100], str(raised[1])[:500]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(msg)
    return SolutionError(msg if name == "SolutionError" else f"{name}: {msg}")


def _verdict(**kw):
    if "reason" in kw:  # text from the solution (an exception's message) stays one printable line
        kw["reason"] = "".join(c if c.isprintable() else "?" for c in str(kw["reason"]))[:300]
    os.write(1, ("\n" + json.dumps(kw) + "\n").encode())
    os._exit(0)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    for name, v in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (v, v))
    if cfg.get("uid") is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    sys.path[:0] = [cfg["lib"]]
    import wire  # noqa: E402 - from the bound read-only directory
    from names import free_names  # noqa: E402

    client = _Client(wire, *cfg["fds"])
    sys.stdout = sys.stderr  # the tests' prints must not look like a verdict
    entry = cfg["entry"]
    try:
        ns = {"__name__": "checker", "__builtins__": builtins}
        exec(compile(cfg["prompt_code"], "prompt.py", "exec"), ns)
        ns.pop(entry, None)  # the prompt's stub of the function to write is not the solution
        for name in free_names(cfg["test_code"], ns) + [entry]:
            if name in sys.stdlib_module_names and name != entry:
                ns[name] = __import__(name)  # e.g. a test using `sys` the solution imported
                continue
            got = client.get(name)
            if got is not None:
                ns[name] = got[0]
            elif name == entry and isinstance(getattr(builtins, name, None), type):
                ns[name] = getattr(builtins, name)  # e.g. MBPP dev 912, whose tests check `int(lobb_num(...))`
        if entry not in ns:
            _verdict(passed=False, reason=f"the solution does not define {entry}", calls=client.calls)
        candidate = ns[entry]
        exec(compile(cfg["test_code"], "tests.py", "exec"), ns)
        check = ns.get("check")
        if callable(check) and check is not candidate:
            check(candidate)
    except wire.Unencodable as e:
        _verdict(fallback=True, reason=f"the tests pass a value that cannot cross the wire: {e}"[:300])
    except BaseException as e:
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        _verdict(passed=False, reason=last[:300], calls=client.calls)
    _verdict(passed=True, reason="passed", calls=client.calls)


main()
