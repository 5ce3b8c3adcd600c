"""OpenAI-compatible backend, driven through httpx.MockTransport: no live server needed."""
from __future__ import annotations

import asyncio
import email.utils
import json
import time

import httpx
import pytest

from moco.errors import ModelError
from moco.models.base import GenRequest, SamplingParams
from moco.models.openai import OpenAIBackend, retry_after
from moco import aio


def _ok(text: str, prompt_tokens: int = 5, completion_tokens: int = 3) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})


def _req(text="hi", temp=0.7, seed=3) -> GenRequest:
    return GenRequest((("system", "be brief"), ("user", text)), SamplingParams(16, temp, 0.9), seed)


def _backend(handler, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.001)
    return OpenAIBackend("http://test/v1", "m", transport=httpx.MockTransport(handler), **kw)


def test_request_body_and_result():
    seen = []

    def handler(request: httpx.Request):
        seen.append(json.loads(request.content))
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sekret"
        return _ok("hello there", 7, 2)

    r = _backend(handler, api_key="sekret").generate([_req()])[0]
    assert r.text == "hello there" and r.tokens_in == 7 and r.tokens_out == 2 and not r.failed
    body = seen[0]
    assert body["model"] == "m" and body["max_tokens"] == 16 and body["temperature"] == 0.7
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert body["seed"] == 3 and body["top_p"] == 0.9


def test_retries_on_5xx_and_429_then_succeeds():
    statuses = iter([500, 429, 503])

    def handler(request):
        code = next(statuses, 200)
        return _ok("fine") if code == 200 else httpx.Response(code, text="busy")

    b = _backend(handler, max_retries=4)
    r = b.generate([_req()])[0]
    assert r.text == "fine" and b.retries_done == 3


def test_gives_up_after_retries_and_records_failure():
    b = _backend(lambda request: httpx.Response(500, text="down"), max_retries=2)
    r = b.generate([_req()])[0]
    assert r.failed and r.text == "" and "failed after 3 attempts: HTTP 500" in r.error


def test_timeouts_and_connection_errors_fail_cleanly():
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    r = _backend(timeout, max_retries=1).generate([_req()])[0]
    assert r.failed and "timeout" in r.error

    def refused(request):
        raise httpx.ConnectError("refused", request=request)

    r = _backend(refused, max_retries=0).generate([_req()])[0]
    assert r.failed and "ConnectError" in r.error


@pytest.mark.parametrize("payload", [b"not json", json.dumps({"choices": []}).encode(),
                                     json.dumps({"choices": [{"message": {"content": 5}}]}).encode()])
def test_garbage_responses_are_failures_not_answers(payload):
    b = _backend(lambda request: httpx.Response(200, content=payload), max_retries=1)
    r = b.generate([_req()])[0]
    assert r.failed and "malformed response" in r.error


def test_client_errors_are_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, text="bad request")

    r = _backend(handler, max_retries=3).generate([_req()])[0]
    assert r.failed and r.error.startswith("HTTP 400") and len(calls) == 1


def test_concurrency_is_bounded():
    state = {"now": 0, "peak": 0}

    async def handler(request):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return _ok(json.loads(request.content)["messages"][-1]["content"].upper())

    b = _backend(handler, concurrency=3)
    out = b.generate([_req(f"q{i}") for i in range(12)])
    assert [r.text for r in out] == [f"Q{i}" for i in range(12)]  # order kept
    assert state["peak"] == 3


def test_greedy_requests_send_no_seed_and_prefix_continues():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return _ok("x")

    b = _backend(handler)
    b.generate([GenRequest((("user", "hi"),), SamplingParams(8, 0.0), 1, assistant_prefix="Sure")])
    assert "seed" not in seen[0] and "top_p" not in seen[0]
    assert seen[0]["messages"][-1] == {"role": "assistant", "content": "Sure"}
    assert seen[0]["continue_final_message"] is True


def test_check_reports_unreachable_and_auth():
    def refused(request):
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(ModelError, match="endpoint http://test/v1 unreachable: ConnectError"):
        _backend(refused).check()
    with pytest.raises(ModelError, match="refused the API key"):
        _backend(lambda r: httpx.Response(401)).check()
    _backend(lambda r: httpx.Response(200, json={"data": []})).check()


def _server(chat):
    """GET /models lists "served"; POST /chat/completions goes to `chat` (counted)."""
    posts = []

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served", "object": "model"}]})
        posts.append(json.loads(request.content))
        return chat(request)

    return handler, posts


def test_check_refuses_a_model_name_the_server_rejects():
    # vLLM's answer to an unknown served-model name (measured against vLLM CPU 0.32.0): every call would fail
    handler, posts = _server(lambda r: httpx.Response(404, json={"error": {
        "message": "The model `m` does not exist. Valid aliases: served.", "type": "NotFoundError", "code": 404}}))
    with pytest.raises(ModelError, match=r"does not serve model 'm' \(it lists: served\): HTTP 404.*does not exist"):
        _backend(handler).check()
    assert len(posts) == 1 and posts[0]["max_tokens"] == 1  # one 1-token probe, no retries on 404


def test_check_accepts_a_listed_name_without_a_probe():
    handler, posts = _server(lambda r: _ok("x"))
    OpenAIBackend("http://test/v1", "served", transport=httpx.MockTransport(handler)).check()
    assert posts == []


def test_check_accepts_an_unlisted_name_the_server_answers_under():
    # llama.cpp lists its model file but answers under any name; Ollama accepts "name" for "name:latest"
    handler, posts = _server(lambda r: _ok("Hello", 3, 1))
    _backend(handler).check()
    assert len(posts) == 1
    # a probe that fails for another reason (here the server is overloaded) is not read as a wrong name
    handler, posts = _server(lambda r: httpx.Response(503, text="busy"))
    _backend(handler, max_retries=1).check()
    assert len(posts) == 2


def test_works_inside_a_running_event_loop():
    b = _backend(lambda request: _ok("in loop"))

    async def main():
        return b.generate([_req()])

    assert asyncio.run(main())[0].text == "in loop"


def test_logprobs_are_requested_and_parsed():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ab"}, "logprobs": {"content": [
            {"token": "a", "logprob": -0.5, "top_logprobs": [{"token": "a", "logprob": -0.5}]},
            {"token": "b", "logprob": -2.0, "top_logprobs": [{"token": "c", "logprob": -0.1}]}]}}]})

    r = _backend(handler).generate([GenRequest((("user", "x"),), SamplingParams(4, 0.7, logprobs=True), 1)])[0]
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 1
    assert r.token_logprobs == [-0.5, -2.0] and r.top_logprobs == [-0.5, -0.1]


def _run_ctx(backends: dict, prompts_per_model: int = 6):
    """One ctx.generate over every model of a scripted-config pool whose models are replaced by `backends`."""
    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.context import Call, RunContext
    from moco.runner import plan
    from moco.trace import CallRecorder

    cfg = parse_config({"method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 2},
                        "models": [{"model": n} for n in backends]})
    p = plan(cfg, backends=backends)
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=NullCache(), recorder=CallRecorder(None),
                     decoding=cfg.decoding)
    calls = [Call(n, f"{n} q{i}") for n in backends for i in range(prompts_per_model)]
    return aio.run(ctx.generate(calls)), calls


def _slow_server(state: dict, shared: dict | None = None, delay: float = 0.05):
    """A mock server that records its peak of requests in flight, and in `shared` (common to several servers)
    the peak number of distinct models with a request in flight at the same moment."""
    shared = shared if shared is not None else state

    async def handler(request):
        body = json.loads(request.content)
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        flying = shared.setdefault("flying", {})
        flying[body["model"]] = flying.get(body["model"], 0) + 1
        shared["overlap"] = max(shared.get("overlap", 0), sum(1 for v in flying.values() if v))
        await asyncio.sleep(delay)
        flying[body["model"]] -= 1
        state["now"] -= 1
        return _ok(body["messages"][-1]["content"].upper())

    return handler


def test_different_endpoints_decode_at_the_same_time_in_one_generate_call():
    states, shared = [{"now": 0, "peak": 0} for _ in range(3)], {}
    backends = {f"m{i}": OpenAIBackend(f"http://server{i}/v1", f"m{i}", concurrency=2,
                                       transport=httpx.MockTransport(_slow_server(states[i], shared)))
                for i in range(3)}
    out, calls = _run_ctx(backends, prompts_per_model=6)
    assert [r.text for r in out] == [str(c.prompt).upper() for c in calls]  # aligned with the calls
    assert [r.model for r in out] == [c.model for c in calls]
    assert all(s["peak"] == 2 for s in states)  # each endpoint at its own limit
    assert shared["overlap"] == 3  # all three servers worked at the same time (sequential dispatch gives 1)


def test_models_of_one_server_share_its_concurrency():
    state = {"now": 0, "peak": 0}
    server = httpx.MockTransport(_slow_server(state, delay=0.02))  # one vLLM serving two LoRA adapters
    backends = {n: OpenAIBackend("http://vllm/v1", n, concurrency=3, transport=server) for n in ("lora-a", "lora-b")}
    out, calls = _run_ctx(backends, prompts_per_model=9)
    assert [r.text for r in out] == [str(c.prompt).upper() for c in calls]
    assert state["peak"] == 3  # two backends of 3 each ran concurrently, yet never more than the server's limit


def test_retry_after_is_honoured_when_longer_than_the_backoff():
    stamps = []

    def handler(request):
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return httpx.Response(429, headers={"retry-after-ms": "400"}, text="slow down")
        return _ok("now")

    b = _backend(handler, max_retries=2)  # backoff 1 ms: only the server's 0.4 s can explain the wait
    assert b.generate([_req()])[0].text == "now" and b.retries_done == 1
    assert stamps[1] - stamps[0] >= 0.39
    assert retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after(httpx.Headers({"retry-after": when})) <= 30
    assert retry_after(httpx.Headers({})) is None and retry_after(httpx.Headers({"retry-after": "soon"})) is None


def test_a_dead_server_is_marked_down_and_fails_fast_until_it_answers_again():
    state = {"alive": False, "posts": 0, "probes": 0}

    def handler(request):
        if request.method == "GET":
            state["probes"] += 1
        else:
            state["posts"] += 1
        if not state["alive"]:
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(200, json={"data": []}) if request.method == "GET" else _ok("back")

    b = _backend(handler, max_retries=4, concurrency=1)
    t0 = time.monotonic()
    res = b.generate([_req(str(i)) for i in range(20)])
    assert time.monotonic() - t0 < 2  # not 20 calls x 5 attempts of backoff
    assert b.down and "3 connection failures in a row" in b.down and "GET /models does not answer" in b.down
    # the first call's third attempt marked it down: its own retries and the 19 other calls never reached the wire
    assert state["posts"] == 3 and all(r.failed and r.error.startswith("backend down") for r in res)
    state["alive"] = True  # restarted: the next batch probes it and goes on
    assert [r.text for r in b.generate([_req("x")])] == ["back"] and b.down is None


def test_timeouts_of_a_server_whose_health_endpoint_answers_are_not_a_dead_server():
    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"data": []})
        raise httpx.ReadTimeout("busy", request=request)

    b = _backend(handler, max_retries=1, concurrency=2)
    res = b.generate([_req(str(i)) for i in range(4)])
    assert all(r.failed and "timeout" in r.error for r in res) and b.down is None
