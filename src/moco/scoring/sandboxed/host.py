"""Runs inside the sandbox: loads the solution, then answers the checker's calls over two pipes.

Started as `python -I -S host.py CONFIG.json`. It sets its rlimits, drops to the sandbox uid when started as
root, loads the solution as module `solution` (so an `if __name__ == "__main__":` block does not run), and
serves `get NAME` / `call REF ARGS` requests until the channel closes. It never sees the tests or the expected
values: only the arguments the tests pass. Modes `program` (run a whole program, exit status is the result) and
`fallback` (the tests run here, beside the solution in their own namespace: the verdict is NOT protected from
the solution; used only where the tests pass objects that cannot cross the wire) serve the rest.
Standard library only.
"""
import builtins
import json
import os
import resource
import sys

_RLIMITS = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")


def _confine(cfg):
    for name in _RLIMITS:
        if name in cfg["rlimits"]:
            v = cfg["rlimits"][name]
            resource.setrlimit(getattr(resource, name), (v, v))
    if cfg.get("uid") is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])  # from root to another uid: every capability is gone
    if cfg.get("nproc") is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
    if cfg.get("audit"):
        sys.addaudithook(_audit_hook(os.getcwd()))


def _audit_hook(scratch):
    """An extra layer only (the OS sandbox is the boundary): refuse the obvious escapes early and clearly."""
    blocked = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.system", "os.kill",
               "os.killpg", "ctypes.", "pty.", "os.setuid", "resource.setrlimit", "sys.addaudithook")
    root = os.path.realpath(scratch).rstrip("/") + "/"
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and type(args[0]) is str:
            mode, flags = args[1], args[2]
            writing = (type(mode) is str and any(c in mode for c in "wax+")) or (
                type(flags) is int and flags & write_flags)
            if writing and not (os.path.realpath(args[0]) + "/").startswith(root):
                raise PermissionError("sandbox: writing outside the scratch directory is not allowed")

    return hook


def _load(path, name):
    """Run the file as module `name`, registered in sys.modules (dataclasses, enum, typing look it up there)."""
    module = type(sys)(name)
    module.__dict__["__builtins__"] = builtins
    sys.modules[name] = module
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), f"{name}.py", "exec"), module.__dict__)
    return module.__dict__


class _Server:
    def __init__(self, ns, wire, rfd, wfd):
        self.ns, self.wire = ns, wire
        self.refs = []
        self.rin = os.fdopen(rfd, "rb")
        self.out = os.fdopen(wfd, "wb")

    def keep(self, obj):
        """A handle for a value that stays here: its index, and its type's name for messages."""
        self.refs.append(obj)
        label = getattr(type(obj), "__name__", "object")
        return {"ref": [len(self.refs) - 1, label[:60] if type(label) is str else "object"]}

    def encode(self, value):
        return self.wire.encode(value, self.keep)

    def resolve(self, v):
        return self.refs[int(v if type(v) is int else v[0])]

    def handle(self, msg):
        if msg.get("op") == "get":
            name = msg["name"]
            if name not in self.ns:
                return {"missing": True}
            value = self.ns[name]
            return {"ok": self.keep(value) if callable(value) else self.encode(value)}
        if msg.get("op") == "call":
            fn = self.refs[msg["ref"]]
            args = self.wire.decode(msg["args"], self.resolve)
            kwargs = {k: v for k, v in self.wire.decode(msg["kwargs"], self.resolve)}
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                return {"raised": [type(e).__name__, str(e)[:500]]}
            return {"ok": self.encode(result)}
        return {"raised": ["ValueError", "unknown request"]}

    def serve(self):
        while True:
            try:
                msg = self.wire.read_message(self.rin)
            except EOFError:
                return
            try:
                reply = self.handle(msg)
            except Exception as e:  # an answer that cannot be encoded is an error of the solution
                reply = {"raised": [type(e).__name__, str(e)[:500]]}
            self.out.write(self.wire.dumps(reply))
            self.out.flush()


def _fallback(cfg, ns, wire, wfd):
    """The tests run here, in their own namespace; only the names they use come from the solution."""
    tns = {"__name__": "checker", "__builtins__": builtins}
    exec(compile(cfg["prompt_code"], "prompt.py", "exec"), tns)
    from names import free_names

    for name in free_names(cfg["test_code"], tns) + [cfg["entry"]]:
        if name in ns:
            tns[name] = ns[name]
    candidate = ns[cfg["entry"]] if cfg["entry"] in ns else None
    exec(compile(cfg["test_code"], "tests.py", "exec"), tns)
    check = tns.get("check")
    if callable(check) and check is not candidate:
        check(candidate)
    os.write(wfd, b'{"passed": true}\n')


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    sys.path[:0] = [cfg["lib"]]
    import wire  # noqa: E402 - from the bound read-only directory

    _confine(cfg)
    if cfg["mode"] == "program":
        _load(cfg["solution"], "__main__")
        sys.stdout.flush()
        os._exit(0)
    wfd = cfg["fds"][1]
    try:
        ns = _load(cfg["solution"], "solution")
    except BaseException as e:
        import traceback

        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        traceback.print_exc()
        sys.stderr.flush()
        msg = {"raised": ["SolutionError", f"the solution failed to load: {tb}"[:500]]}
        os.write(wfd, wire.dumps(msg))
        os._exit(1)
    sys.stdout.flush()
    if cfg["mode"] == "fallback":
        _fallback(cfg, ns, wire, wfd)
        os._exit(0)
    _Server(ns, wire, cfg["fds"][0], wfd).serve()
    os._exit(0)


main()
