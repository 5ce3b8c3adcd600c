"""OpenAI-compatible backend, driven through httpx.MockTransport: no live server needed."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from moco.errors import ModelError
from moco.models.base import GenRequest, SamplingParams
from moco.models.openai import OpenAIBackend


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
