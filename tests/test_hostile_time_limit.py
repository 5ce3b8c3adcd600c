"""The per-request time limit of `moco serve` frees the worker: decoding stops between steps at the limit,
the slow request gets 504, and the requests batched with it or queued behind it get their answers.

Driven through the real `moco serve` on 127.0.0.1 with a paced scripted model (it decodes one word per step,
like a slow model, and honours the limit between steps) and with a tiny real transformers model."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from moco.models import time_limit
from moco.models.base import GenRequest, SamplingParams
from moco.serve.batcher import MicroBatcher, TimeLimitReached
from reliability import tally
from serve_util import served

LIMIT = 1.5
LONG_WORDS = 400
STEP = 0.025  # the long reply would take LONG_WORDS * STEP = 10 s


def _post(url: str, content: str, **extra) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": content}],
                                                     **extra}, timeout=60)
    return r, time.monotonic() - t0


def _paced_config(tmp_path):
    p = tmp_path / "paced.yaml"
    p.write_text(yaml.safe_dump({
        "method": "single_model", "name": "m",
        "models": [{"model": "scripted:slow", "script": {
            "rules": [{"match": "short", "reply": "ok"}], "default": " ".join(["word"] * LONG_WORDS),
            "seconds_per_token": STEP}}],
        "decoding": {"max_new_tokens": 512, "temperature": 0.0}}))
    return p


def test_batcher_drops_an_item_whose_time_ran_out_in_the_queue_and_runs_a_batch_under_its_deadline():
    seen = []

    def handler(items):
        seen.append(list(items))
        if items == ["hold"]:
            time.sleep(0.6)
        return [(x, time_limit.passed()) for x in items]

    b = MicroBatcher(handler, window_s=0.0, time_limit_s=0.4)
    try:
        held = b.submit("hold")
        time.sleep(0.1)
        late = b.submit("late")  # waits behind "hold" for 0.5 s: past its 0.4 s
        assert held.result(5) == ("hold", True)  # the handler saw its deadline pass
        with pytest.raises(TimeLimitReached, match="0.4 s"):
            late.result(5)
        assert seen == [["hold"]]  # "late" never ran
        assert b.submit("fresh").result(5) == ("fresh", False)
    finally:
        b.close()
    assert not time_limit.passed()  # outside the worker's block nothing is limited


def test_local_decoding_stops_at_the_deadline_and_the_row_is_no_answer(tiny_backends):
    backend = tiny_backends[0]
    req = GenRequest((("user", "Tell me everything."),), SamplingParams(max_new_tokens=3000, temperature=0.0))
    [free] = backend.generate([GenRequest(req.messages, SamplingParams(max_new_tokens=5, temperature=0.0))])
    assert not free.failed and free.tokens_out == 5  # no deadline: decodes as before
    t0 = time.monotonic()
    with time_limit.deadline(time.monotonic() + 1.0):
        [res] = backend.generate([req])
    took = time.monotonic() - t0
    assert res.failed and res.error == time_limit.ERROR and res.finish_reason == "time_limit" and res.text == ""
    assert 0 < res.tokens_out < 3000 and took < 4.0, (res.tokens_out, took)  # stopped mid-answer
    tally("server probes")


def test_serve_a_slow_request_is_504_at_its_limit_and_its_batch_neighbour_and_a_queued_one_answer(tmp_path):
    with served(_paced_config(tmp_path), "--timeout-s", str(LIMIT), "--batch-window-ms", "300") as url:
        with ThreadPoolExecutor(4) as pool:
            long = pool.submit(_post, url, "tell me everything")
            time.sleep(0.05)
            neighbour = pool.submit(_post, url, "a short one")  # same batch window: decoded with the long one
            quick = pool.submit(_post, url, "short and quick", max_tokens=4)  # same batch, a group of its own
            time.sleep(0.6)
            queued = pool.submit(_post, url, "short, asked later", max_tokens=4)  # waits behind that batch
            (r_long, t_long), (r_nb, t_nb), (r_q, t_q) = long.result(), neighbour.result(), queued.result()
            r_quick, t_quick = quick.result()
        assert r_long.status_code == 504 and r_long.json()["error"]["code"] == "timeout", r_long.text
        assert r_nb.status_code == 200 and r_nb.json()["choices"][0]["message"]["content"] == "ok", r_nb.text
        assert r_q.status_code == 200 and r_q.json()["choices"][0]["message"]["content"] == "ok", r_q.text
        # the shorter group of the batch ran first and was answered at once, not at the long one's limit
        assert r_quick.status_code == 200 and r_quick.json()["moco"]["batch_size"] == 1 and t_quick < 1.0, (
            r_quick.text, t_quick)
        natural = LONG_WORDS * STEP
        # the worker was held until the limit, never for the 10 s the long answer takes
        assert t_long < LIMIT + 1.5 and t_nb < LIMIT + 1.5 and t_q < LIMIT + 1.5 < natural, (t_long, t_nb, t_q)
        r, t = _post(url, "short again")
        assert r.status_code == 200 and t < 1.0, t  # the worker is free at once
        info = httpx.get(f"{url}/moco/info").json()["batching"]
        assert info["largest_batch"] >= 2  # the long request and its neighbour did share a batch
    tally("server probes", 4)


@pytest.mark.slow  # ~20-50 s: a subprocess that loads transformers; the paced test above is the fast coverage
def test_serve_a_real_model_decoding_past_the_limit_frees_the_worker(tmp_path, tiny_models):
    limit = 2.5
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"method": "single_model", "name": "m", "models": [str(tiny_models[0])],
                                   "decoding": {"max_new_tokens": 4000, "temperature": 0.0}}))
    with served(cfg, "--timeout-s", str(limit), "--batch-window-ms", "200") as url:
        _post(url, "warm up", max_tokens=2)
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(_post, url, "tell me everything", max_tokens=4000)  # a random model rarely stops
            time.sleep(0.05)
            short = pool.submit(_post, url, "say hi", max_tokens=4)
            (r_long, t_long), (r_short, t_short) = long.result(), short.result()
        assert r_long.status_code == 504 and r_long.json()["error"]["code"] == "timeout", r_long.text
        assert r_short.status_code == 200 and r_short.json()["usage"]["completion_tokens"] == 4, r_short.text
        # the short request ran first and was answered without waiting for the long one's limit
        assert t_long < limit + 1.5 and t_short < min(2.0, t_long), (t_long, t_short)
        print(f"real model: long 504 after {t_long:.2f} s, short 200 after {t_short:.2f} s")
        r, t = _post(url, "again", max_tokens=4)
        assert r.status_code == 200 and t < 2.0, t
    tally("server probes", 2)
