"""`moco serve` end to end: a subprocess on 127.0.0.1 driven with the `openai` client and raw HTTP."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import yaml

from serve_util import moco_env, served

TOKEN = "test-token-123"


def write(tmp_path, name, cfg) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture
def debate_config(tmp_path):
    """Debate of two scripted models, summarised by a third: only the full pipeline writes 'SUMMARY'."""
    return write(tmp_path, "debate.yaml", {
        "method": "text_multiagent_refine", "params": {"rounds": 1},
        "models": [{"model": "scripted:a", "script": {"rules": [{"match": "Your previous answer", "reply": "a revised"}],
                                                      "default": "a first"}},
                   {"model": "scripted:b", "script": {"rules": [{"match": "Your previous answer", "reply": "b revised"}],
                                                      "default": "b first"}},
                   {"model": "scripted:judge", "script": {
                       "rules": [{"match": "(?s)a revised.*b revised", "reply": "SUMMARY of a and b"}],
                       "default": "judge alone"}}],
        "roles": {"summarizer": "judge"},
        "decoding": {"max_new_tokens": 64, "temperature": 0.0},
    })


@pytest.fixture
def echo_config(tmp_path):
    return write(tmp_path, "echo.yaml", {"method": "single_model", "models": ["scripted:echo"], "name": "echo-model",
                                         "decoding": {"max_new_tokens": 256, "temperature": 0.0}})


def test_any_collaboration_is_one_model_for_the_openai_client(debate_config):
    with served(debate_config, "--token", TOKEN) as url:
        client = openai.OpenAI(base_url=url, api_key=TOKEN)
        assert [m.id for m in client.models.list().data] == ["moco-text_multiagent_refine"]
        r = client.chat.completions.create(model="moco-text_multiagent_refine",
                                           messages=[{"role": "user", "content": "Is the sky blue?"}])
        assert r.choices[0].message.content == "SUMMARY of a and b"
        assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason == "stop"
        # the last stage (the summarizer writing) streams word by word; the debate before it ran batched
        chunks = list(client.chat.completions.create(model="moco-text_multiagent_refine", stream=True,
                                                     messages=[{"role": "user", "content": "Is the sky blue?"}]))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert pieces == ["SUMMARY", " of", " a", " and", " b"] and chunks[-1].choices[0].finish_reason == "stop"
        assert "".join(pieces) == r.choices[0].message.content
        info = httpx.get(f"{url}/moco/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert info["method"] == "text_multiagent_refine" and info["streaming"] == "tokens"
        assert info["final_stage"]["model"] == "judge" and info["logprobs"] is False


def test_auth_failures(echo_config):
    with served(echo_config, "--token", TOKEN) as url:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong").chat.completions.create(
                model="echo-model", messages=[{"role": "user", "content": "hi"}])
        r = httpx.get(f"{url}/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url.replace("/v1", "/health")).status_code == 200  # health needs no token
        ok = openai.OpenAI(base_url=url, api_key=TOKEN).chat.completions.create(
            model="echo-model", messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content == "hi"


def test_malformed_requests_get_clear_4xx(echo_config):
    with served(echo_config, "--max-body-kb", "2") as url:
        def post(body, **kw):
            return httpx.post(f"{url}/chat/completions", content=body if isinstance(body, bytes) else json.dumps(body),
                              **kw)
        msgs = [{"role": "user", "content": "hi"}]
        cases = [
            (b"{not json", 400, "not valid JSON"),
            (b"[1, 2]", 400, "JSON object"),
            ({"model": "echo-model"}, 400, "messages"),
            ({"model": "echo-model", "messages": []}, 400, "messages"),
            ({"model": "echo-model", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
            ({"model": "echo-model", "messages": [{"role": "user"}]}, 400, "messages.0.content"),
            ({"model": "echo-model", "messages": msgs, "n": 3}, 400, "n=1"),
            ({"model": "echo-model", "messages": msgs, "temperature": 9}, 400, "temperature"),
            ({"model": "echo-model", "messages": msgs, "max_tokens": 100000}, 400, "exceeds"),
            ({"model": "echo-model", "messages": msgs, "tools": [{"type": "function"}]}, 400, "tools"),
            ({"model": "echo-model", "messages": msgs, "temprature": 0.1}, 400, "unknown field 'temprature'"),
            ({"model": "echo-model", "messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
            ({"model": "echo-model", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
             400, "last message"),
            ({"model": "gpt-4o", "messages": msgs}, 404, "not found"),
            ({"model": "echo-model", "messages": [{"role": "user", "content": "x" * 5000}]}, 413, "larger than"),
        ]
        for body, status, words in cases:
            r = post(body)
            assert r.status_code == status, (body, r.text)
            err = r.json()["error"]
            assert words in err["message"], (words, err)
        r = post(b"x" * 5000, headers={"transfer-encoding": "chunked"})  # no declared length: still refused
        assert r.status_code in (400, 413)
        assert httpx.get(f"{url}/nowhere").status_code == 404
        # the server survived all of it
        r = post({"model": "echo-model", "messages": msgs, "stop": ["i"]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "h"


def test_32_concurrent_requests_are_batched_without_error(echo_config):
    with served(echo_config, "--batch-window-ms", "50") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)

        def ask(i: int) -> str:
            r = client.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": f"request {i}"}])
            return r.choices[0].message.content

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, range(32)))
        assert answers == [f"request {i}" for i in range(32)]  # each client got its own answer
        stats = httpx.get(f"{url}/moco/info").json()["batching"]
        assert stats["items"] == 32 and stats["batches"] < 32 and stats["largest_batch"] > 1


def test_single_model_streams_tokens_and_gives_logprobs(tmp_path, tiny_models):
    """A local transformers model writes the answer: it streams token by token, and chat and completions
    logprobs come back OpenAI-shaped."""
    cfg = write(tmp_path, "tiny.yaml", {"method": "single_model", "models": [str(tiny_models[0])], "name": "tiny",
                                        "decoding": {"max_new_tokens": 12, "temperature": 0.0}})
    with served(cfg) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        msgs = [{"role": "user", "content": "Say something."}]
        chunks = list(client.chat.completions.create(model="tiny", messages=msgs, stream=True))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert len(pieces) >= 3  # token by token, not one chunk
        plain = client.chat.completions.create(model="tiny", messages=msgs).choices[0].message.content
        assert "".join(pieces) == plain  # greedy: the same answer
        info = httpx.get(f"{url}/moco/info").json()
        assert info["streaming"] == "tokens" and info["logprobs"] is True

        r = client.chat.completions.create(model="tiny", messages=msgs, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert r.choices[0].message.content == plain  # the watched call decodes what the batched one does
        assert "".join(t.token for t in content).strip() == plain
        for t in content:
            assert t.logprob <= 0 and len(t.top_logprobs) == 3
            assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the most likely one
            assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
            assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        c = client.completions.create(model="tiny", prompt="Say something.", logprobs=2)
        lp = c.choices[0].logprobs
        assert c.choices[0].text == plain and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
        assert lp.token_logprobs == pytest.approx([t.logprob for t in content])
        assert lp.text_offset[0] == 0 and all(len(d) == 2 for d in lp.top_logprobs)
        with pytest.raises(openai.BadRequestError, match="not supported with stream"):
            client.chat.completions.create(model="tiny", messages=msgs, logprobs=True, stream=True)


@pytest.mark.smollm
def test_embedded_model_served_and_batched(tmp_path, smollm_dir):
    """The real SmolLM2 behind `moco serve`: right answers, concurrent requests share batches."""
    cfg = write(tmp_path, "smol.yaml", {"method": "single_model", "models": ["smollm2-135m-instruct"], "name": "smol",
                                        "decoding": {"max_new_tokens": 16, "temperature": 0.0}})
    env = moco_env(MOCO_CACHE_DIR=str(smollm_dir.parent.parent))  # where the fixture converted the model
    with served(cfg, "--batch-window-ms", "100", env=env) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", timeout=300)
        qs = ["What is the capital of France?", "What is the capital of Italy?", "What is the capital of Spain?"]

        def ask(q):
            return client.chat.completions.create(model="smol", messages=[{"role": "user", "content": q}])

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, qs))
        assert "Paris" in answers[0].choices[0].message.content  # a 135M model: only this one is reliable
        assert all(a.choices[0].message.content and a.usage.completion_tokens > 0 for a in answers)
        stats = httpx.get(f"{url}/moco/info").json()
        assert stats["batching"]["largest_batch"] >= 2 and stats["streaming"] == "tokens"
