"""Serving pieces without a server: micro-batcher, request parsing, stop strings, batch grouping."""
from __future__ import annotations

import json
import threading
import time

import pytest

from moco.serve.batcher import MicroBatcher
from moco.serve.protocol import ApiError, parse_chat_request
from moco.serve.served_task import example_of, prompt_of
from moco.serve.streaming import cut_stream


def test_batcher_collects_concurrent_items_into_one_batch():
    seen = []

    def handler(items):
        seen.append(list(items))
        return [x * 10 for x in items]

    b = MicroBatcher(handler, window_s=0.2, max_batch=8)
    try:
        futs = [b.submit(i) for i in range(10)]
        assert [f.result(timeout=5) for f in futs] == [i * 10 for i in range(10)]
        assert [len(s) for s in seen] == [8, 2]  # max_batch caps a batch; the rest forms the next
        assert b.stats.items == 10 and b.stats.largest == 8
    finally:
        b.close()


def test_batcher_items_arriving_during_a_batch_form_the_next():
    gate = threading.Event()
    sizes = []

    def handler(items):
        sizes.append(len(items))
        gate.wait(5)
        return items

    b = MicroBatcher(handler, window_s=0.0, max_batch=32)
    try:
        first = b.submit("a")
        time.sleep(0.1)  # 'a' is running alone
        rest = [b.submit(i) for i in range(5)]
        gate.set()
        assert first.result(5) == "a" and [f.result(5) for f in rest] == list(range(5))
        assert sizes == [1, 5]
    finally:
        b.close()


def test_batcher_failure_is_isolated_to_the_item_that_fails_alone():
    calls = []

    def handler(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("boom")
        return items

    b = MicroBatcher(handler, window_s=0.1)
    try:
        futs = [b.submit("bad"), b.submit("x")]
        with pytest.raises(ValueError, match="boom"):
            futs[0].result(5)
        assert futs[1].result(5) == "x"  # its neighbour is answered
        assert calls == [["bad", "x"], ["bad"], ["x"]]  # the batch, then each item alone
        assert b.submit("ok").result(5) == "ok"  # the worker survived
    finally:
        b.close()


def test_batcher_bounds_its_queue_and_drops_cancelled_items():
    from moco.serve.batcher import QueueFull

    gate = threading.Event()
    ran = []

    def handler(items):
        gate.wait(5)
        ran.extend(items)
        return items

    b = MicroBatcher(handler, window_s=0.0, max_pending=2)
    try:
        first = b.submit("first")
        time.sleep(0.1)  # the worker holds "first"
        second = b.submit("second")
        with pytest.raises(QueueFull, match="the limit is 2"):
            b.submit("third")
        assert second.cancel()  # its caller gave up before its batch started
        gate.set()
        assert first.result(5) == "first"
        assert b.submit("fourth").result(5) == "fourth" and ran == ["first", "fourth"] and b.pending == 0
    finally:
        b.close()


def _req(**kw):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    return json.dumps(body).encode()


def test_request_parsing_accepts_openai_shapes_and_names_bad_fields():
    r = parse_chat_request(_req(max_completion_tokens=7, stop="x", presence_penalty=0.5, user="u",
                                stream_options={"include_usage": True}))
    assert r.max_new_tokens == 7 and r.stops == ("x",)
    r = parse_chat_request(json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}).encode())
    ex = example_of(r.messages, 0)
    assert ex.prompt == "What is it?" and ex.images == ("data:image/png;base64,AAAA",) and ex.answer is None
    for body, param in [(_req(top_logprobs=3), "top_logprobs"), (_req(top_p=0), "top_p"), (_req(stop=["a"] * 5), "stop"),
                        (_req(messages=[{"role": "user", "content": [{"type": "audio"}]}]), "messages.0.content")]:
        with pytest.raises(ApiError) as e:
            parse_chat_request(body)
        assert e.value.status == 400 and e.value.param.startswith(param), e.value.message


def test_conversations_become_a_transcript_prompt():
    r = parse_chat_request(json.dumps({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital of France?"}]}).encode())
    p = prompt_of(r.messages)
    assert p.endswith("System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Capital of France?")


def test_cut_stream_never_shows_a_partial_stop_string():
    pieces = ["Hel", "lo EN", "D and more"]
    assert "".join(cut_stream(pieces, ("END",))) == "Hello "
    assert list(cut_stream(["a", "b"], ())) == ["a", "b"]
    assert "".join(cut_stream(["abc", "def"], ("zz",))) == "abcdef"


def test_service_groups_a_batch_by_sampling_and_shares_usage(tmp_path):
    """One batch with two sampling settings runs the method twice; each request gets its own answer."""
    import yaml

    from moco.models.scripted import ScriptedBackend
    from moco.serve import build_service

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"method": "single_model", "models": ["scripted:e"],
                                   "decoding": {"max_new_tokens": 50, "temperature": 0.0}}))
    echo = ScriptedBackend("e", fn=lambda req: f"{req.messages[-1][1]} t={req.sampling.temperature}")
    svc = build_service(cfg, backends={"scripted:e": echo}, window_ms=100)
    try:
        reqs = [parse_chat_request(_req(messages=[{"role": "user", "content": f"q{i}"}], temperature=t))
                for i, t in enumerate([0.0, 0.5, 0.0])]
        futs = [svc.batcher.submit(svc.pending(r)) for r in reqs]
        done = [f.result(10) for f in futs]
        assert [d.text for d in done] == ["q0 t=0.0", "q1 t=0.5", "q2 t=0.0"]
        assert [d.batch_size for d in done] == [2, 1, 2] and svc.batcher.stats.batches == 1
        assert all(d.completion_tokens > 0 for d in done)
        with pytest.raises(ApiError, match="exceeds"):
            svc.pending(parse_chat_request(_req(max_tokens=51)))
    finally:
        svc.close()
