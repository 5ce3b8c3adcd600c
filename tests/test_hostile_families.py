"""Every family of attack issue 21 names, with cases of our own, contained by the OS sandbox alone (the audit
hook off): each program fails within the limits and the host is as it was (tests/hostile_corpus.py says how
the programs prove an escape). The cheat families run through the scorer in test_hostile_code.py."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from code_cheats import CHEAT_FAMILIES, CHEATS
from hostile_corpus import FAMILIES, ISSUE_FAMILIES, prelude
from moco.scoring import sandbox
from moco.scoring.sandbox import SandboxLimits, find_bwrap, run_many
from reliability import tally

_WHY = find_bwrap()[1]
TIGHT = SandboxLimits(timeout_s=4, memory_mb=256, max_processes=4, max_file_mb=2, disk_mb=4, max_files=2000)


def test_every_family_of_the_issue_has_several_cases():
    covered = {f: list(FAMILIES.get(f, {})) + CHEAT_FAMILIES.get(f, []) for f in ISSUE_FAMILIES}
    assert set(FAMILIES) | set(CHEAT_FAMILIES) == set(ISSUE_FAMILIES)
    assert all(len(cases) >= 3 for cases in covered.values()), {f: len(c) for f, c in covered.items()}
    assert all(c in CHEATS for cs in CHEAT_FAMILIES.values() for c in cs)


def _snapshot(d: Path) -> dict[str, tuple]:
    """Content, mode and times of everything under `d` (a chmod or utime counts as a change)."""
    out = {}
    for p in sorted([d, *d.rglob("*")]):
        st = p.lstat()
        out[str(p)] = (st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


class _Servers:
    """A TCP listener, a UDP echo and an abstract unix socket on the host, counting who reached them."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract = f"\0moco-test-{secrets.token_hex(6)}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.abstract)
        self.unix.listen(8)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True)
                        for s in (self.tcp, self.udp, self.unix)]
        for s in (self.tcp, self.udp, self.unix):
            s.settimeout(0.2)
        for t in self.threads:
            t.start()

    def _serve(self, s: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                if s.type == socket.SOCK_DGRAM:
                    data, addr = s.recvfrom(64)
                    self.hits.append(f"udp {data!r}")
                    s.sendto(b"pong", addr)
                else:
                    conn, _ = s.accept()
                    self.hits.append(f"{s.family.name} connection")
                    conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        for s in (self.tcp, self.udp, self.unix):
            s.close()


def _marked(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(bool(_WHY), reason=f"no OS sandbox here: {_WHY}")
def test_every_attack_family_is_contained_by_the_os_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "AUDIT_LAYER", False)
    secret = f"hunter2-{secrets.token_hex(8)}"
    monkeypatch.setenv("MOCO_TEST_SECRET", secret)
    host = Path(tempfile.mkdtemp(prefix="moco-test-families-"))
    base = Path(tempfile.mkdtemp(prefix="moco-test-families-base-"))
    base.chmod(0o711)
    run_dir = host / "runs" / "r1"
    run_dir.mkdir(parents=True)
    for name in ("metrics.json", "predictions.jsonl", "config.yaml"):
        (run_dir / name).write_text(f"{name} keep\n")
    (host / "secret.txt").write_text(secret)
    host.chmod(0o755)
    before = _snapshot(host)
    servers = _Servers()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "--token", secret])
    marker = f"777.{secrets.randbelow(10 ** 6)}"
    head = prelude(str(run_dir), str(host / "secret.txt"), servers.tcp.getsockname()[1],
                   servers.udp.getsockname()[1], servers.abstract, os.getpid(), holder.pid, marker,
                   Path("/proc/1/cmdline").read_bytes())
    cases = [(f, name, head + code) for f, progs in FAMILIES.items() for name, code in progs.items()]
    try:
        t0 = time.time()
        outs = run_many([c for _, _, c in cases], TIGHT, workers=2, base_dir=str(base))
        took = time.time() - t0
        assert holder.poll() is None, "a sandboxed program killed a host process"
        time.sleep(0.3)
        orphans = _marked(marker)
    finally:
        servers.close()
        holder.kill()
        holder.wait()
        for pid in _marked(marker):
            os.kill(pid, 9)
    tally("hostile completions tried", len(cases))
    escaped = [(f, n, o.stdout[-200:]) for (f, n, _), o in zip(cases, outs) if o.passed]
    assert not escaped, escaped
    by_name = {n: o for (_, n, _), o in zip(cases, outs)}
    for name in ("a million empty files", "a million empty folders"):  # no bytes, but stopped at the file quota
        assert by_name[name].reason.startswith("disk quota: more than 2000 files"), by_name[name]
    slow = [(n, o.seconds) for (_, n, _), o in zip(cases, outs) if o.seconds > TIGHT.timeout_s + 5]
    assert not slow, slow
    assert not orphans, "a double-forked program outlived its item"
    assert not servers.hits, servers.hits
    assert _snapshot(host) == before
    assert not Path("/tmp/moco-family-pwned").exists() and not Path("/dev/shm/moco-fill").exists()
    printed = "".join(o.stdout + o.stderr for o in outs)
    assert secret not in printed
    assert list(base.iterdir()) == []  # every item folder was removed
    shutil.rmtree(host)
    shutil.rmtree(base)
    print(f"{len(cases)} hostile programs in {len(FAMILIES)} families: all contained in {took:.1f}s")
