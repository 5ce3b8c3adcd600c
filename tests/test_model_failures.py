"""Model failures over real sockets and in whole runs: an endpoint that never answers, one that trickles its
answer byte by byte (each read within httpx's timeout, the whole never ending), one that returns garbage,
a model that emits nothing and one that never stops — each call ends within its timeout, is retried where
sensible, recorded as failed or unparsed, and never scored as correct."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from moco.config import parse_config
from moco.errors import CallsFailed
from moco.models.base import GenRequest, SamplingParams
from moco.models.openai import OpenAIBackend
from moco.runner import run_experiment
from moco.testing import mc_dataset
from reliability import tally


class BadServer:
    """A TCP server on 127.0.0.1 that misbehaves in one way: `silent`, `trickle`, `garbage` or `flaky`."""

    def __init__(self, mode: str):
        self.mode, self.requests = mode, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                head = conn.recv(65536)
                if head.startswith(b"GET") and b"/models" in head:  # the pre-flight check gets an answer
                    body = b'{"data": [{"id": "m"}]}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    return
                self.requests += 1
                if self.mode == "silent":
                    self.stop.wait(30)
                elif self.mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                    while not self.stop.is_set():
                        conn.sendall(b" ")
                        time.sleep(0.2)
                elif self.mode == "garbage":
                    body = b"<html>502 Bad Gateway</html>"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                elif self.mode == "flaky":  # a 500 for the first try of each request, then a good answer
                    if self.requests % 2:
                        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\ndown")
                    else:
                        body = json.dumps({"choices": [{"message": {"content": "The answer is (A)"},
                                                        "finish_reason": "stop"}]}).encode()
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                     b"Connection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(request):
    s = BadServer(request.param)
    yield s
    s.close()


def _req() -> GenRequest:
    return GenRequest((("user", "hi"),), SamplingParams(max_new_tokens=8, temperature=0.0), 0)


@pytest.mark.parametrize("server", ["silent", "trickle"], indirect=True)
def test_a_hanging_endpoint_fails_within_its_timeout(server):
    b = OpenAIBackend(server.url, "m", timeout_s=1.0, max_retries=1, backoff_s=0.05)
    t0 = time.time()
    res = b.generate([_req(), _req()])
    took = time.time() - t0
    assert all(r.failed and "timeout after 1s" in r.error for r in res), [r.error for r in res]
    assert took < 2 * 1.0 + 2.0, took  # two attempts of 1 s each (the requests run concurrently), no hang
    assert server.requests >= 2
    tally("faults injected", 2)


@pytest.mark.parametrize("server", ["garbage"], indirect=True)
def test_garbage_over_a_real_socket_is_a_failure(server):
    r = OpenAIBackend(server.url, "m", timeout_s=2.0, max_retries=1, backoff_s=0.01).generate([_req()])[0]
    assert r.failed and "malformed response" in r.error and server.requests == 2  # retried once
    tally("faults injected")


@pytest.mark.parametrize("server", ["flaky"], indirect=True)
def test_a_flaky_endpoint_is_retried_with_backoff(server):
    b = OpenAIBackend(server.url, "m", timeout_s=5.0, max_retries=2, backoff_s=0.05, concurrency=1)
    res = b.generate([_req(), _req(), _req()])
    assert [r.text for r in res] == ["The answer is (A)"] * 3 and b.retries_done == 3
    tally("faults injected", 3)


def test_runs_with_silent_mute_and_endless_models_score_nothing_as_correct(tmp_path):
    """A run whose models (1) hang on a real socket, (2) say nothing, (3) never stop: the hanging calls fail
    the run (no score: a failure is not a wrong answer), the empty and cut answers are unparsed and score 0,
    and no item counts as correct."""
    task = tmp_path / "t.json"
    task.write_text(json.dumps(mc_dataset(n_dev=0, n_test=4)))
    srv = BadServer("silent")
    try:
        models = {
            "hang": [{"model": "m", "endpoint": {"base_url": srv.url, "timeout_s": 1, "max_retries": 0}}],
            "mute": [{"model": "scripted:mute", "script": {"default": ""}}],
            "endless": [{"model": "scripted:endless", "script": {"default": "and so on " * 500}}],
        }
        for name, ms in models.items():
            cfg = parse_config({"method": "single_model", "task": {"name": str(task)}, "models": ms,
                                "decoding": {"max_new_tokens": 16, "temperature": 0.0}})
            t0 = time.time()
            if name == "hang":
                with pytest.raises(CallsFailed, match="model 'm' 4 failed calls.*timeout after 1s"):
                    run_experiment(cfg, tmp_path / name)
                assert time.time() - t0 < 30
                m = json.loads((tmp_path / name / "metrics.json").read_text())
                preds = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
                assert m["score"] is None and m["failed"] == 4 and m["n"] == 0, m
                assert all(p["failed"] and "score" not in p for p in preds)
                assert json.loads((tmp_path / name / "manifest.json").read_text())["status"] == "failed"
                tally("faults injected", 4)
                continue
            res = run_experiment(cfg, tmp_path / name)
            assert time.time() - t0 < 30
            m = res.metrics
            assert m["score"] == 0.0 and m["n_test"] == 4, (name, m)
            assert all(p["score"] == 0.0 for p in res.predictions)
            assert m["unparsed"] == 4 and m["failed"] == 0 and "failures" not in m
            if name == "endless":
                calls = [json.loads(x) for x in (tmp_path / name / "calls.jsonl").read_text().splitlines()]
                assert all(c["finish"] == "length" and c["tokens_out"] == 16 for c in calls)
            tally("faults injected", 4)
    finally:
        srv.close()
