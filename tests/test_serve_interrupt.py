"""Ctrl-C / SIGTERM while `moco serve` is still in its start-up run: one line, the right exit code, and no
promise of a resume the server cannot keep (it does not cache unless `--cache`)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultkit import default_sigint

MOCO = shutil.which("moco", path=str(Path(sys.executable).parent))
# one scripted model whose warm-up answer takes 8 paced words x 2 s: the start-up run is still going when stopped
SLOW = {"method": "single_model", "models": [{"model": "scripted:slow",
                                               "script": {"default": "a b c d e f g h", "seconds_per_token": 2.0}}]}


@pytest.mark.parametrize("sig, code, how", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_stopped_during_start_up_is_one_line_and_says_nothing_was_cached(tmp_path, sig, code, how):
    assert MOCO, "the `moco` executable is not installed beside this Python"
    cfg = tmp_path / "slow.json"
    cfg.write_text(json.dumps(SLOW))
    p = subprocess.Popen([MOCO, "serve", str(cfg), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "MOCO_CACHE_DIR": str(tmp_path / "cache")},
                         preexec_fn=default_sigint)
    first = p.stderr.readline()  # "starting ...": the start-up run has begun
    assert first.startswith("starting"), first
    time.sleep(0.5)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    lines = [x for x in err.splitlines() if x.strip()]
    assert p.returncode == code, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"interrupted ({how})") and "nothing was cached" in lines[0], lines
    assert "serving" not in out + err  # the port never opened


def test_a_port_out_of_range_is_a_usage_error(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**SLOW, "models": ["scripted:a"]}))
    r = subprocess.run([MOCO, "serve", str(cfg), "--port", "99999"], capture_output=True, text=True, timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--port" in lines[0], r.stderr


def test_a_busy_port_is_refused_before_the_start_up_run(tmp_path):
    cfg = tmp_path / "slow.json"
    cfg.write_text(json.dumps(SLOW))  # its start-up run would take 16 s
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.time()
        r = subprocess.run([MOCO, "serve", str(cfg), "--port", str(port)], capture_output=True, text=True,
                           timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}") and "in use" in lines[0], lines
    assert time.time() - t0 < 15  # refused before the start-up run, not after it
