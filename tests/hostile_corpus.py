"""Hostile programs by family (issue 21's list, plus cases of our own), for tests/test_hostile_families.py.

Each program *proves* its attack or fails: it ends normally only when the attack visibly worked from inside
(it read the secret, reached the host's server, found the run's files); where success cannot be seen from
inside (an orphan that should die, a signal to the scorer) it fails on purpose and the test checks the host
side. So a program that passes is an escape, and every one must fail, within the limits, host untouched.

The programs start after a prelude naming the host's things (see `prelude`): RD the run directory (files a
completion would overwrite), SF a file holding the secret (it starts with 'hunter2'), TCP/UDP ports of
servers on the host's loopback, ABSTRACT an abstract unix socket the host listens on, ME the scorer's pid,
TOKEN_PID a host process with a secret in its command line, MARKER a tag for processes that must not
outlive their item, HOST_INIT the host's /proc/1/cmdline. The cheat families (objects equal to anything, patched builtins, a redefined check,
introspection of the tests, /proc/self/mem) are in code_cheats.py (CHEAT_FAMILIES maps them).
"""
from __future__ import annotations

ISSUE_FAMILIES = [  # the families issue 21 names, each of which must have cases here or in code_cheats.py
    "path escapes with dir_fd", "listdir and scandir", "pidfd", "disk use per item", "/proc/self/mem marker forgery",
    "objects whose __eq__ lies", "patched builtins", "a redefined check", "bytecode introspection",
    "other processes' command lines", "writing outside the scratch folder", "fork bombs", "memory hogs", "network",
]


def prelude(rd: str, sf: str, tcp: int, udp: int, abstract: str, me: int, token_pid: int, marker: str,
            host_init: bytes) -> str:
    return (f"RD = {rd!r}\nSF = {sf!r}\nTCP = {tcp}\nUDP = {udp}\nABSTRACT = {abstract!r}\nME = {me}\n"
            f"TOKEN_PID = {token_pid}\nMARKER = {marker!r}\nHOST_INIT = {host_init!r}\n")


FAMILIES: dict[str, dict[str, str]] = {
    "path escapes with dir_fd": {
        "openat the secret after a deep chdir": (
            "import os\nd = os.open('/', os.O_RDONLY)\nos.makedirs('a/b/c/d/e', exist_ok=True)\nos.chdir('a/b/c/d/e')\n"
            "fd = os.open('../../../../../../../..' + SF, os.O_RDONLY, dir_fd=d)\nassert b'hunter2' in os.read(fd, 100)"),
        "openat a run file for writing": (
            "import os\nd = os.open('/', os.O_RDONLY)\n"
            "fd = os.open(RD[1:] + '/metrics.json', os.O_WRONLY | os.O_TRUNC, dir_fd=d)\nos.write(fd, b'{\"score\": 1}')"),
        "unlinkat a run file": "import os\nos.unlink(RD[1:] + '/predictions.jsonl', dir_fd=os.open('/', os.O_RDONLY))",
        "renameat out of the run": ("import os\nd = os.open('/', os.O_RDONLY)\n"
                                    "os.rename(RD[1:] + '/config.yaml', 'stolen', src_dir_fd=d)"),
        "mkdirat in the run": "import os\nos.mkdir(RD[1:] + '/evil', dir_fd=os.open('/', os.O_RDONLY))",
        "O_PATH handle then /proc/self/fd": (
            "import os\nd = os.open('/', os.O_PATH)\nopen(f'/proc/self/fd/{d}' + RD + '/metrics.json', 'w').write('x')"),
        "symlinkat into the run": ("import os\nos.symlink(RD, 'run')\nopen('run/pwned', 'w').write('x')\n"
                                   "assert os.path.exists(RD + '/pwned')"),
    },
    "listdir and scandir": {
        "scandir the run": "import os\nassert 'metrics.json' in [e.name for e in os.scandir(RD)]",
        "listdir the run's parent": "import os\nassert os.listdir(os.path.dirname(RD))",
        "listdir through a dir_fd": "import os\nassert 'metrics.json' in os.listdir(os.open(RD, os.O_RDONLY))",
        "os.walk for the secret": ("import os\nassert any(os.path.basename(SF) in fs for _, _, fs in "
                                   "os.walk(os.path.dirname(SF)))"),
        "fwalk the run": "import os\nassert any('metrics.json' in fs for _, _, fs, _ in os.fwalk(RD))",
        "glob the home folders": "import glob\nassert glob.glob('/root/*') or glob.glob('/home/*/*')",
    },
    "pidfd": {
        "pidfd_send_signal to the scorer": ("import os, signal\nfd = os.pidfd_open(ME)\n"
                                            "signal.pidfd_send_signal(fd, signal.SIGKILL)\nraise SystemExit(1)"),
        "pidfd of the parent, SIGKILL": ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), "
                                         "signal.SIGKILL)\nraise SystemExit(1)"),
        "pidfd_getfd steals the parent's pipes": (
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\npfd = os.pidfd_open(os.getppid())\n"
            "got = [libc.syscall(438, pfd, n, 0) for n in range(3, 12)]\n"
            "for fd in got:\n    if fd >= 0:\n        os.write(fd, b'\\n{\"passed\": true}\\n')\n"
            "assert any(fd >= 0 for fd in got)"),
        "pidfd of the token holder": ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(TOKEN_PID), "
                                      "signal.SIGKILL)\nraise SystemExit(1)"),
        "kill every pid": ("import os\nfor pid in range(2, 4 * 10 ** 5):\n    if pid != os.getpid():\n        try:\n"
                           "            os.kill(pid, 9)\n        except OSError:\n            pass\nraise SystemExit(1)"),
    },
    "disk use per item": {
        "100 files of 4 MiB in /tmp": "for i in range(100):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (4 << 20))",
        "100 files of 4 MiB in the working folder": "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * (4 << 20))",
        "a sparse file of 1 TB": "f = open('sparse', 'wb')\nf.seek(10 ** 12)\nf.write(b'x')\nf.close()",
        "a 1 GiB memfd": "import os\nfd = os.memfd_create('x')\nfor _ in range(1024):\n    os.write(fd, b'x' * (1 << 20))",
        "many small files": "for i in range(20000):\n    open(f'/tmp/s{i}', 'wb').write(b'x' * 1024)",
        "a million empty files": ("import os\nfor i in range(10 ** 6):\n"
                                  "    os.close(os.open(f'/tmp/e{i}', os.O_CREAT | os.O_WRONLY))"),
        "a million empty folders": "import os\nfor i in range(10 ** 6):\n    os.mkdir(f'/tmp/d{i}')",
        "/dev/shm": "open('/dev/shm/moco-fill', 'wb').write(b'x' * (64 << 20))",
    },
    "other processes' command lines": {
        "every /proc/*/cmdline": (
            "import os\nfound = b''\nfor p in os.listdir('/proc'):\n    try:\n"
            "        found += open(f'/proc/{p}/cmdline', 'rb').read()\n    except OSError:\n        pass\n"
            "assert b'hunter2' in found"),
        "the token holder by pid": "assert b'hunter2' in open(f'/proc/{TOKEN_PID}/cmdline', 'rb').read()",
        "the scorer's environ": "assert b'hunter2' in open(f'/proc/{ME}/environ', 'rb').read()",
        "ps": "import subprocess\nassert b'hunter2' in subprocess.run(['ps', 'auxww'], capture_output=True).stdout",
        "/proc/1 is the host's init": "assert open('/proc/1/cmdline', 'rb').read() == HOST_INIT",
        "the parent's environ": "import os\nassert b'hunter2' in open(f'/proc/{os.getppid()}/environ', 'rb').read()",
    },
    "writing outside the scratch folder": {
        "overwrite metrics.json": "open(RD + '/metrics.json', 'w').write('{\"score\": 1}')",
        "truncate predictions.jsonl": "import os\nos.truncate(RD + '/predictions.jsonl', 0)",
        "chmod the run": "import os\nos.chmod(RD, 0o777)",
        "utime a run file": "import os\nos.utime(RD + '/metrics.json', (0, 0))",
        "hard link a run file": "import os\nos.link(RD + '/metrics.json', 'm')",
        "through /proc/self/root": "open('/proc/self/root' + RD + '/metrics.json', 'w').write('x')",
        "through the parent's root": "import os\nopen(f'/proc/{os.getppid()}/root' + RD + '/pwned', 'w').write('x')",
        "a file in the host's /tmp": ("open('/tmp/moco-family-pwned', 'w').write('x')\n"
                                      "import os\nassert os.path.exists(RD)"),
        "a shell with a redirect": ("import subprocess\nsubprocess.run(['sh', '-c', f'echo x > {RD}/metrics.json'], "
                                    "check=True)"),
    },
    "fork bombs": {
        "os.fork loop": "import os\nwhile True:\n    os.fork()",
        "a multiprocessing pool of 64": ("import multiprocessing as mp\nwith mp.Pool(64) as p:\n"
                                         "    assert sum(p.map(abs, range(64))) > 0"),
        "Popen loop": "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '100'])",
        "posix_spawn loop": "import os\nwhile True:\n    os.posix_spawn('/bin/sleep', ['sleep', '100'], {})",
        "a double-forked orphan": ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                                   "        os.execv('/bin/sleep', ['sleep', MARKER])\n    os._exit(0)\n"
                                   "import time\ntime.sleep(0.5)\nraise SystemExit(1)"),
        "threads of 1000": ("import threading, time\nfor _ in range(1000):\n"
                            "    threading.Thread(target=time.sleep, args=(30,)).start()"),
    },
    "memory hogs": {
        "an 8 GiB bytearray": "x = bytearray(8 << 30)",
        "an 8 GiB anonymous mmap, touched": "import mmap\nm = mmap.mmap(-1, 8 << 30)\nm[::4096] = b'x' * (2 << 20)",
        "a string doubling forever": "s = 'x'\nwhile True:\n    s += s",
        "a list of lists": "x = []\nwhile True:\n    x.append([0] * 10 ** 6)",
        "deep recursion": "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
    },
    "network": {
        "TCP to the host's loopback": "import socket\nsocket.create_connection(('127.0.0.1', TCP), timeout=2).sendall(b'hi')",
        "UDP echo from the host": ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\n"
                                   "s.sendto(b'ping', ('127.0.0.1', UDP))\nassert s.recvfrom(16)[0] == b'pong'"),
        "an abstract unix socket": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(ABSTRACT)",
        "DNS": "import socket\nsocket.getaddrinfo('pypi.org', 443)",
        "HTTP to the internet": "import urllib.request\nurllib.request.urlopen('http://1.1.1.1/', timeout=2)",
        "any port of the host's loopback": (
            "import socket\nok = []\nfor p in range(TCP - 3, TCP + 4):\n    try:\n"
            "        ok.append(socket.create_connection(('127.0.0.1', p), timeout=1))\n    except OSError:\n"
            "        pass\nassert ok"),
        "a raw socket": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    },
}
