"""The OpenAI surface of `moco serve` beyond chat: the last stage streamed, /v1/completions, logprobs, /metrics.

In-process tests drive the service's worker (scripted models); the end-to-end ones start `moco serve` on
loopback and talk to it with the official `openai` client (sync, async, streaming) and plain HTTP.
"""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import yaml

from moco.serve import build_service
from moco.serve.final_stage import StageRequest, learn_final_stage
from moco.serve.protocol import ApiError, parse_chat_request
from serve_util import served
from moco import aio


def scripted(name: str, default: str, **rules: str) -> dict:
    return {"model": f"scripted:{name}", "script": {"default": default,
                                                    "rules": [{"match": k, "reply": v} for k, v in rules.items()]}}


REFINE = {"method": "text_multiagent_refine", "params": {"rounds": 1},
          "models": [scripted("a", "a first", **{"Your previous answer": "a revised"}),
                     scripted("b", "b first", **{"Your previous answer": "b revised"}),
                     scripted("judge", "judge alone", **{"(?s)a revised.*b revised": "SUMMARY of a and b, both revised"})],
          "roles": {"summarizer": "judge"}, "decoding": {"max_new_tokens": 64, "temperature": 0.0}}
MOA = {"method": "text_mixture_of_agents", "params": {"layers": 2, "proposers": ["p1", "p2"]},
       "models": [scripted("p1", "p1 proposal"), scripted("p2", "p2 proposal"),
                  scripted("agg", "the aggregated answer from both drafts")],
       "roles": {"aggregator": "agg"}, "decoding": {"max_new_tokens": 64, "temperature": 0.0}}
COLM = {"method": "client_server_colm", "params": {"top_k": "all", "rounds": 1},
        "models": [scripted("c1", "c1 first answer", Guidance="c1 revised with the server guidance"),
                   scripted("c2", "c2 first answer", Guidance="c2 revised, never the output"),
                   scripted("server", "server guidance: combine c1 and c2")],
        "roles": {"server": "server"}, "decoding": {"max_new_tokens": 64, "temperature": 0.0}}
SINGLE = {"method": "single_model", "params": {"model": "y"},
          "models": [scripted("x", "x answers alone"), scripted("y", "y is the chosen model here")],
          "decoding": {"max_new_tokens": 64, "temperature": 0.0}}


def service(tmp_path, cfg: dict):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return build_service(path, window_ms=1)


def ask(svc, prompt: str, want: StageRequest | None = None):
    p = svc.pending(parse_chat_request(json.dumps({"model": svc.name, "messages": [
        {"role": "user", "content": prompt}]}).encode()))
    p.want = want
    return svc.batcher.submit(p).result(60)


@pytest.mark.parametrize("cfg,final_model,tag", [(REFINE, "judge", "summary"), (MOA, "agg", "aggregate"),
                                                 (COLM, "c1", "colm refine r1"), (SINGLE, "y", "answer")],
                         ids=["refine", "moa", "colm", "single_model"])
def test_the_last_stage_streams_word_by_word_and_adds_up_to_the_answer(tmp_path, cfg, final_model, tag):
    svc = service(tmp_path, cfg)
    try:
        stage = learn_final_stage(svc)  # the start-up probe
        assert stage is not None and stage.model == final_model and stage.phase == "test"
        assert tag in stage.tag
        whole = ask(svc, "What is two plus two?")
        pieces: list[str] = []
        want = StageRequest(on_piece=pieces.append)
        streamed = ask(svc, "What is two plus two?", want)
        assert want.watched and not streamed.error
        assert len(pieces) >= 4 and "".join(pieces) == whole.text == streamed.text  # many pieces, same answer
        # only the last stage streamed: no earlier stage's words reached the client
        assert not any(w in "".join(pieces) for w in ("first", "proposal", "alone"))
        watched_calls = [c for c in svc.recorder.phases["test"].per_model]  # every stage ran and was recorded
        assert final_model in watched_calls and len(watched_calls) == len(cfg["models"])
    finally:
        svc.close()


def test_an_answer_cut_by_max_tokens_finishes_with_length(tmp_path):
    """finish_reason is that of the call that wrote the answer: 'length' when it reached max_tokens."""
    svc = service(tmp_path, REFINE)
    try:
        learn_final_stage(svc)
        full = ask(svc, "Is the sky blue?")
        p = svc.pending(parse_chat_request(json.dumps({"model": svc.name, "max_tokens": 2, "messages": [
            {"role": "user", "content": "Is the sky blue?"}]}).encode()))
        short = svc.batcher.submit(p).result(60)
        assert (full.text, full.finish) == ("SUMMARY of a and b, both revised", "stop")
        assert (short.text, short.finish) == ("SUMMARY of", "length")
    finally:
        svc.close()


def test_streamed_requests_share_a_batch_and_each_gets_its_own_answer(tmp_path):
    """Three streams and one plain request arriving together run as ONE method call (every earlier stage
    batched across them); each stream gets the summary of its own question, word by word."""
    path = tmp_path / "echo_debate.yaml"
    path.write_text(yaml.safe_dump({**REFINE, "models": [*REFINE["models"][:2], {"model": "scripted:echo",
                                                                                 "name": "judge"}]}))
    svc = build_service(path, window_ms=300)
    try:
        learn_final_stage(svc)
        questions = [f"Question number {i}: how many moons has planet {i}?" for i in range(4)]
        pieces: list[list[str]] = [[] for _ in questions]
        pending = []
        for i, q in enumerate(questions):
            p = svc.pending(parse_chat_request(json.dumps({"model": svc.name, "messages": [
                {"role": "user", "content": q}]}).encode()))
            p.want = StageRequest(on_piece=pieces[i].append) if i < 3 else None
            pending.append(p)
        done = [f.result(60) for f in [svc.batcher.submit(p) for p in pending]]
        assert svc.batcher.stats.batches == 1 and [d.batch_size for d in done] == [4, 4, 4, 4]
        for i, (q, d) in enumerate(zip(questions, done)):
            assert q in d.text and all(other not in d.text for other in questions if other != q)
            if i < 3:
                assert len(pieces[i]) >= 4 and "".join(pieces[i]) == d.text
    finally:
        svc.close()


def test_colm_other_clients_still_refine_in_the_watched_stage(tmp_path):
    """The output client's refinement streams; the other client's refinement of the same stage still runs."""
    svc = service(tmp_path, COLM)
    try:
        learn_final_stage(svc)
        c2 = svc.plan.pool.backend(svc.plan.pool.handle("c2"))
        before = len(c2.received("Guidance"))
        ask(svc, "Name a prime.", StageRequest())
        assert len(c2.received("Guidance")) == before + 1
    finally:
        svc.close()


def test_a_method_that_picks_a_different_model_per_request_is_sent_whole(tmp_path):
    """When a run's answer comes from another call than the learned one (a per-request choice, as a vote or a
    router makes), streaming stops for good: answers are sent whole, never a wrong stream."""
    import dataclasses

    from moco.context import Call, Output

    class PickNamed:  # answers with the model named in the question
        async def run(self, ctx, params):
            flat = await ctx.generate([Call(m, ctx.task.test[0].prompt) for m in ctx.models], tag="answer")
            return [Output(next(r.text for r in flat if r.model in ctx.task.test[0].prompt))]

    svc = service(tmp_path, SINGLE)
    try:
        ctx = svc.ctx

        async def run(question: str, want: StageRequest | None = None):
            ctx.task = dataclasses.replace(svc.base_task, test=[ask_example(question)])
            return await ctx.run_method(PickNamed(), None, [want])

        aio.run(run("ask x"))
        assert ctx.final.model == "x" and svc.describe()["streaming"] == "tokens"
        want = StageRequest()
        assert aio.run(run("ask x again", want))[0].text == "x answers alone" and want.streamed == "x answers alone"
        aio.run(run("now ask y"))  # the answer came from y: the learned stage was not the answer's writer
        assert ctx.final is None and ctx.unstable
        info = svc.describe()
        assert info["streaming"] == "one chunk" and "different calls" in info["why_whole"]
        want = StageRequest()
        aio.run(run("ask x", want))
        assert not want.watched and want.streamed == ""
    finally:
        svc.close()


def ask_example(prompt: str):
    from moco.serve.served_task import example_of
    from moco.serve.protocol import ChatMessage

    return example_of([ChatMessage(role="user", content=prompt)], 0)


def test_a_stream_that_was_not_the_answer_ends_with_an_error():
    """If a run ends differently from what was learned, the client is told instead of keeping a wrong text."""
    from moco.serve.live import LiveAnswer

    async def main():
        async def run(want):
            want.piece("not the")
            await asyncio.sleep(0.01)
            want.output = "the real answer"
            return {"choices": [{"message": {"content": "the real answer"}, "finish_reason": "stop"}]}

        one = LiveAnswer(run, watch=True)
        await one.started()
        got = []
        with pytest.raises(ApiError, match="not the collaboration's answer"):
            async for piece in one.pieces():
                got.append(piece)
        return got

    assert asyncio.run(main()) == ["not the"]


# ---------------------------------------------------------------------------------------- end to end, over HTTP
@pytest.fixture
def refine_config(tmp_path):
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump({**REFINE, "name": "debate"}))
    return path


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def test_openai_client_sync_async_streaming_completions_and_metrics(refine_config):
    msgs = [{"role": "user", "content": "Is the sky blue?"}]
    with served(refine_config, "--batch-window-ms", "50") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        sync = client.chat.completions.create(model="debate", messages=msgs)
        answer = sync.choices[0].message.content
        assert answer == "SUMMARY of a and b, both revised"

        async def concurrent():
            aclient = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            rs = await asyncio.gather(*(aclient.chat.completions.create(
                model="debate", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(6)))
            stream = await aclient.chat.completions.create(model="debate", messages=msgs, stream=True)
            pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
            await aclient.close()
            return rs, pieces

        rs, apieces = asyncio.run(concurrent())
        assert all(r.choices[0].message.content == answer for r in rs)
        assert len(apieces) >= 4 and "".join(apieces) == answer
        chunks = list(client.chat.completions.create(model="debate", messages=msgs, stream=True, stop=[" both"],
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "SUMMARY of a and b,"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sync.usage.completion_tokens

        # legacy completions: one prompt, a list, streamed
        one = client.completions.create(model="debate", prompt="Is the sky blue?")
        assert one.object == "text_completion" and one.choices[0].text == answer and one.usage.completion_tokens > 0
        two = client.completions.create(model="debate", prompt=["first?", "second?"])
        assert [c.index for c in two.choices] == [0, 1] and {c.text for c in two.choices} == {answer}
        parts = list(client.completions.create(model="debate", prompt="Is the sky blue?", stream=True))
        texts = [p.choices[0].text for p in parts if p.choices[0].text]
        assert len(texts) >= 4 and "".join(texts) == answer and parts[-1].choices[0].finish_reason == "stop"

        # logprobs: scripted models have none, and the server says so
        with pytest.raises(openai.BadRequestError, match="gives no token log-probabilities"):
            client.chat.completions.create(model="debate", messages=msgs, logprobs=True, top_logprobs=2)
        with pytest.raises(openai.BadRequestError, match="gives no token log-probabilities"):
            client.completions.create(model="debate", prompt="x", logprobs=2)
        with pytest.raises(openai.BadRequestError, match="echo is not supported"):
            client.completions.create(model="debate", prompt="x", echo=True)
        with pytest.raises(openai.BadRequestError, match="token ids are not supported"):
            client.completions.create(model="debate", prompt=[1, 2, 3])

        text = httpx.get(url.replace("/v1", "/metrics")).text
        assert metric(text, "moco_requests_total", route="/v1/chat/completions", status="200") == 9
        assert metric(text, "moco_requests_total", route="/v1/completions", status="200") == 3
        assert metric(text, "moco_requests_total", route="/v1/completions", status="400") == 3
        assert metric(text, "moco_request_duration_seconds_count", route="/v1/chat/completions") == 10
        assert metric(text, "moco_tokens_total", direction="out") > 0
        assert metric(text, "moco_batch_size_count") >= 1
        assert metric(text, "moco_batch_size_sum") == 13  # every collaboration request, the probe excluded
        assert metric(text, "moco_requests_in_flight") == 0


def test_metrics_count_failures_and_need_the_token(refine_config):
    """A request past the server's time limit answers 504, counted under moco_failures_total; with a token
    set, /metrics needs it too."""
    with served(refine_config, "--token", "tok", "--timeout-s", "0.001", "--batch-window-ms", "50") as url:
        auth = {"Authorization": "Bearer tok"}
        assert httpx.get(url.replace("/v1", "/metrics")).status_code == 401
        r = httpx.post(f"{url}/chat/completions", headers=auth,
                       json={"model": "debate", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 504
        text = httpx.get(url.replace("/v1", "/metrics"), headers=auth).text
        assert metric(text, "moco_failures_total", route="/v1/chat/completions", reason="504") == 1
        assert metric(text, "moco_requests_total", route="/v1/chat/completions", status="504") == 1


def test_a_debate_of_local_models_streams_its_summary_token_by_token(tmp_path, tiny_models):
    """Transformers models debating: the summarizer's call is decoded alone, token by token; its pieces add up
    to the answer the batched run gives, and its tokens' log-probabilities are available."""
    cfg = {"method": "text_multiagent_refine", "params": {"rounds": 1},
           "models": [{"model": str(p), "name": f"tiny{i}"} for i, p in enumerate(tiny_models)],
           "roles": {"summarizer": "tiny2"}, "decoding": {"max_new_tokens": 8, "temperature": 0.0}}
    svc = service(tmp_path, cfg)
    try:
        stage = learn_final_stage(svc)
        assert (stage.model, stage.tag, stage.logprobs) == ("tiny2", "summary", True)
        whole = ask(svc, "Name a colour.")
        pieces: list[str] = []
        want = StageRequest(on_piece=pieces.append, top_logprobs=1)
        streamed = ask(svc, "Name a colour.", want)
        assert len(pieces) >= 3 and "".join(pieces) == whole.text == streamed.text
        assert len(want.logprobs) >= len(pieces) and all(t.logprob <= 0 for t in want.logprobs)
    finally:
        svc.close()


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=0.9, top_p=0.95)], ids=["greedy", "sampled"])
def test_a_watched_local_call_decodes_what_generate_decodes(tiny_backends, sampling):
    """decode_one runs the backend's own decoding loop on one row: same seed, same text, piece by piece; a stop
    string ends it where generate ends."""
    from moco.models.base import GenRequest, SamplingParams
    from moco.serve.streaming import decode_one

    backend = tiny_backends[0]
    req = GenRequest((("user", "Tell me a story."),), SamplingParams(max_new_tokens=12, **sampling), seed=1234)
    pieces: list[str] = []
    res, lps = decode_one(backend, req, pieces.append, top_k=2)
    assert res.text == backend.generate([req])[0].text and res.tokens_out > 0
    assert "".join(pieces) == res.text and len(pieces) >= 2
    assert len(lps) >= len(pieces) and all(t.logprob <= 0 and len(t.top) == 2 for t in lps)
    stop = res.text[len(res.text) // 2:][:2]
    cut = GenRequest(req.messages, SamplingParams(max_new_tokens=12, stop=(stop,), **sampling), seed=1234)
    pieces = []
    res_cut, _ = decode_one(backend, cut, pieces.append)
    assert res_cut.text == backend.generate([cut])[0].text == res.text[:res.text.index(stop)].strip()
    assert "".join(pieces) == res_cut.text


def test_an_endpoint_writing_the_answer_streams_it_through(tmp_path):
    """The summarizer is an OpenAI-compatible endpoint (itself a `moco serve`): the collaboration asks it with
    `stream: true` and passes its pieces on to the client as they arrive."""
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({"method": "single_model", "name": "judge-engine",
                                     "models": [scripted("judge", "the endpoint's summary of the debate")]}))
    with served(judge) as engine:
        debate = tmp_path / "debate.yaml"
        debate.write_text(yaml.safe_dump({
            "method": "text_multiagent_refine", "params": {"rounds": 1}, "name": "debate",
            "models": [scripted("a", "a first"), scripted("b", "b first"),
                       {"model": "judge-engine", "name": "remote", "endpoint": {"base_url": engine}}],
            "roles": {"summarizer": "remote"}, "decoding": {"max_new_tokens": 64, "temperature": 0.0}}))
        with served(debate) as url:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            msgs = [{"role": "user", "content": "Who won?"}]
            whole = client.chat.completions.create(model="debate", messages=msgs).choices[0].message.content
            chunks = list(client.chat.completions.create(model="debate", messages=msgs, stream=True))
            pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
            assert whole == "the endpoint's summary of the debate"
            # word by word: the engine streamed (a whole answer from it would arrive as one piece)
            assert len(pieces) >= 4 and "".join(pieces) == whole
            assert httpx.get(f"{url}/moco/info").json()["final_stage"]["model"] == "remote"
