"""`moco serve` under hostile and careless clients, over real HTTP on 127.0.0.1 (uvicorn in a thread, so the
models can be scripted to fail or stall): bad JSON of any shape is 400, oversized bodies 413 however sent,
prompts over a model's context 400 with the limit, one bad request never fails its batch neighbours, a
request over the time limit 504, a full queue 429, and every /v1 route needs the token."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import yaml

from moco.models.scripted import ScriptedBackend
from moco.serve import build_service
from moco.serve.app import create_app
from reliability import tally
from serve_util import free_port

TOKEN = "s3cret-token"
MSG = [{"role": "user", "content": "hi"}]


def _echo(req):
    text = next(c for r, c in reversed(req.messages) if r == "user")
    if "poison" in text:
        raise ValueError("this prompt breaks the model")
    if "slow" in text:
        time.sleep(2.5)
    return text


@contextmanager
def serving(tmp_path, models=("scripted:e",), backends=None, window_ms=5.0, **app_kw):
    """A real uvicorn server on a free loopback port, serving a single_model collaboration."""
    import uvicorn

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({"method": "single_model", "models": list(models), "name": "m",
                                   "decoding": {"max_new_tokens": 8, "temperature": 0.0}}))
    if backends is None:
        backends = {"scripted:e": ScriptedBackend("e", fn=_echo)}
    svc = build_service(cfg, backends=backends, window_ms=window_ms, max_queue=app_kw.pop("max_queue", 256))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc, **app_kw), host="127.0.0.1", port=port,
                                           log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", svc
    finally:
        server.should_exit = True
        thread.join(10)
        svc.close()


def _post(url, body, **kw):
    content = body if isinstance(body, bytes) else json.dumps(body)
    return httpx.post(f"{url}/chat/completions", content=content, timeout=kw.pop("timeout", 30), **kw)


DEEP = 100_000
BAD_JSON = {  # name -> raw body
    "100k-deep array": b"[" * DEEP + b"]" * DEEP,
    "100k-deep object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "100k-deep messages": json.dumps({"model": "m", "messages": "X"}).encode().replace(b'"X"', b"[" * DEEP + b"]" * DEEP),
    "lone high surrogate in a message": b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
    "lone low surrogate in the model name": b'{"model": "m\\udfff", "messages": [{"role": "user", "content": "hi"}]}',
    "lone surrogate as a key": b'{"model": "m", "\\ud800": 1, "messages": [{"role": "user", "content": "hi"}]}',
    "invalid UTF-8 bytes": b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "empty body": b"",
    "a bare string": b'"hello"',
    "null": b"null",
    "NaN temperature": b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "Infinity max_tokens": b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
    "trailing garbage": b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]} x',
}
NO_COERCION = {  # field -> a value of the wrong type that lax validation would coerce
    "max_tokens": "10", "stream": "yes", "temperature": "0.5", "top_p": "0.9", "seed": "1", "n": "1",
    "max_completion_tokens": 10.0, "stop": 5, "metadata": {"k": 1},
}
NO_COERCION_TOO = [("stream", 1), ("stream", "true"), ("max_tokens", True), ("model", 5), ("messages", "hi"),
                   ("messages", [{"role": "user", "content": 5}]), ("messages", [{"role": "user", "content": None}]),
                   ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}])]


def test_bad_json_of_any_shape_and_wrong_types_are_400(tmp_path):
    with serving(tmp_path) as (url, _svc):
        for name, body in BAD_JSON.items():
            r = _post(url, body)
            assert r.status_code == 400, (name, r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "invalid_request_error"
        wrong = [(k, v) for k, v in NO_COERCION.items()] + NO_COERCION_TOO
        for field, value in wrong:
            body = {"model": "m", "messages": MSG, field: value}
            r = _post(url, body)
            assert r.status_code == 400, (field, value, r.text)
            assert field in (r.json()["error"]["param"] or r.json()["error"]["message"]), r.json()
        # what is right still works: a valid surrogate pair (an emoji), ints for floats, the real types
        ok = _post(url, b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}], '
                        b'"temperature": 0, "max_tokens": 5, "stream": false}')
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "hi \U0001F600"
    tally("server probes", len(BAD_JSON) + len(wrong))


def test_oversized_bodies_are_413_however_sent(tmp_path):
    with serving(tmp_path, max_body_bytes=64 * 1024) as (url, _svc):
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()
        assert _post(url, big).status_code == 413  # declared Content-Length

        def chunks(total, size=1 << 16):
            sent = 0
            while sent < total:
                yield b" " * size
                sent += size

        for total in (200_000, 50 * 2**20):  # chunked, no declared length: 200 kB and 50 MB
            try:
                r = httpx.post(f"{url}/chat/completions", content=chunks(total), timeout=60)
                assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text
            except httpx.TransportError:  # the server answered 413 and closed while the client still sent:
                pass  # some clients see the reset before the answer; either way nothing was processed
        # a lying Content-Length (larger than the body; no client library sends one): 413 at once, no hang
        host, port = url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 10485760\r\n\r\n{}")
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        assert _post(url, {"model": "m", "messages": MSG}).status_code == 200  # the server is fine
    tally("server probes", 4)


def test_one_bad_request_never_fails_its_batch_neighbours(tmp_path):
    backend = ScriptedBackend("e", fn=_echo)
    with serving(tmp_path, backends={"scripted:e": backend}, window_ms=300) as (url, svc):
        prompts = [f"good {i}" for i in range(6)] + ["poison pill"]
        with ThreadPoolExecutor(len(prompts)) as pool:
            rs = list(pool.map(lambda p: _post(url, {"model": "m", "messages": [{"role": "user", "content": p}]}),
                               prompts))
        assert [r.status_code for r in rs] == [200] * 6 + [500]
        assert [r.json()["choices"][0]["message"]["content"] for r in rs[:6]] == prompts[:6]
        assert "this prompt breaks the model" in rs[6].json()["error"]["message"]
        assert svc.batcher.stats.largest >= 2  # they did share a batch
    tally("server probes")


def test_a_prompt_over_a_models_context_is_400_with_the_limit_and_spares_its_neighbours(tmp_path, tiny_models):
    with serving(tmp_path, models=(str(tiny_models[0]),), backends={}, window_ms=300) as (url, _svc):
        long = "a" * 5000  # a char-level tokenizer: about 5000 tokens, the tiny model takes 4096
        with ThreadPoolExecutor(3) as pool:
            rs = list(pool.map(lambda c: _post(url, {"model": "m", "messages": [{"role": "user", "content": c}]},
                                               timeout=120), ["Say hi.", long, "Say yes."]))
        assert [r.status_code for r in rs] == [200, 400, 200], [r.text[:200] for r in rs]
        err = rs[1].json()["error"]
        assert err["code"] == "context_length_exceeded" and "maximum context length is 4096 tokens" in err["message"]
        r = _post(url, {"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]})
        assert r.status_code == 400 and "characters" in r.json()["error"]["message"]  # too long for any model
    tally("server probes", 2)


def test_a_request_over_the_time_limit_is_504_and_a_waiting_one_is_dropped(tmp_path):
    backend = ScriptedBackend("e", fn=_echo)
    with serving(tmp_path, backends={"scripted:e": backend}, request_timeout_s=1.0) as (url, _svc):
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(_post, url, {"model": "m", "messages": [{"role": "user", "content": "slow one"}]})
            time.sleep(0.3)  # queued behind the slow batch: its time runs out before its batch starts
            queued = pool.submit(_post, url, {"model": "m", "messages": [{"role": "user", "content": "queued"}]})
            t0 = time.time()
            r_slow, r_queued = slow.result(), queued.result()
        assert r_slow.status_code == 504 and r_slow.json()["error"]["code"] == "timeout"
        assert r_queued.status_code == 504 and time.time() - t0 < 2.0
        time.sleep(2.5)  # the slow batch ends; the queued request was never run
        assert not backend.received("queued")
        assert _post(url, {"model": "m", "messages": MSG}).status_code == 200
    tally("server probes", 2)


def test_a_full_queue_is_429_with_retry_after(tmp_path):
    with serving(tmp_path, max_queue=2, window_ms=50) as (url, _svc):
        body = {"model": "m", "messages": [{"role": "user", "content": "slow"}]}
        with ThreadPoolExecutor(6) as pool:
            rs = list(pool.map(lambda _: _post(url, body), range(6)))
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 1 and 429 in codes and set(codes) <= {200, 429}, codes
        busy = next(r for r in rs if r.status_code == 429)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "server_busy"
        assert _post(url, {"model": "m", "messages": MSG}).status_code == 200  # room again
    tally("server probes")


def test_every_v1_route_needs_the_token_through_the_dependency(tmp_path):
    with serving(tmp_path, token=TOKEN) as (url, _svc):
        routes = [("GET", "/models", None), ("GET", "/models/m", None), ("GET", "/moco/info", None),
                  ("POST", "/chat/completions", {"model": "m", "messages": MSG})]
        bad_headers = [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"},
                       {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                       {"Authorization": "Bearer \u00e9"}]
        for method, path, body in routes:
            for h in bad_headers:
                h = {k: v.encode("utf-8") for k, v in h.items()}
                r = httpx.request(method, url + path, json=body, headers=h)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, h, r.text)
            ok = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, (path, ok.text)
        assert httpx.get(url.replace("/v1", "/health")).status_code == 200
    tally("server probes", 4 * 6)


def test_the_colm_server_bounds_its_waiting_clients_with_429(tmp_path):
    """`--role colm-server --max-queue 2`: two clients wait for their partners; a third that would wait gets
    429 with Retry-After, a request that completes a waiting session is always taken, and room comes back."""
    from serve_util import served

    cfg = tmp_path / "colm.yaml"
    cfg.write_text(yaml.safe_dump({"method": "client_server_colm_vlm"}))  # concatenation: no model

    def ask(url, session, client):
        meta = {"colm_session": session, "colm_client": client, "colm_expected": "2"}
        return httpx.post(f"{url}/chat/completions", timeout=60, json={
            "model": "colm-server", "metadata": meta,
            "messages": [{"role": "user", "content": f"Q {session}?"}, {"role": "assistant", "content": client}]})

    def waiting(url):
        return httpx.get(f"{url}/moco/info").json()["requests_waiting"]

    with served(cfg, "--role", "colm-server", "--max-queue", "2", "--gather-timeout", "20") as url:
        with ThreadPoolExecutor(4) as pool:
            held = [pool.submit(ask, url, s, "a") for s in ("s1", "s2")]
            deadline = time.time() + 20
            while waiting(url) < 2:
                assert time.time() < deadline and not any(h.done() for h in held)
                time.sleep(0.05)
            busy = ask(url, "s3", "a")  # would wait as a third: refused at once
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1", busy.text
            assert busy.json()["error"]["code"] == "server_busy" and "the limit is 2" in busy.json()["error"]["message"]
            done = ask(url, "s1", "b")  # completes s1: taken although the queue is full
            assert done.status_code == 200 and done.json()["choices"][0]["message"]["content"] == "[Model 1] a\n[Model 2] b"
            assert held[0].result(10).status_code == 200
            third = pool.submit(ask, url, "s3", "a")  # room for one again
            while waiting(url) < 2:
                assert time.time() < deadline and not third.done()
                time.sleep(0.05)
            assert ask(url, "s4", "a").status_code == 429
            assert ask(url, "s2", "b").status_code == 200 and ask(url, "s3", "b").status_code == 200
            assert held[1].result(10).status_code == 200 and third.result(10).status_code == 200
        info = httpx.get(f"{url}/moco/info").json()
        assert info["requests_waiting"] == 0 and info["sessions_completed"] == 3 and info["max_queue"] == 2
    tally("server probes", 2)
