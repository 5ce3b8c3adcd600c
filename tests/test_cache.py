"""Response cache keys: everything that changes the output, nothing that does not."""
from __future__ import annotations

from moco.cache import NullCache, ResponseCache, request_key
from moco.models.base import GenRequest, GenResult, SamplingParams

REQ = GenRequest((("system", "be brief"), ("user", "hi")), SamplingParams(32, 0.7, 0.9))


def test_key_changes_with_each_input():
    base = request_key("fp", REQ, 0, 0)
    assert request_key("fp2", REQ, 0, 0) != base
    assert request_key("fp", REQ, 1, 0) != base
    assert request_key("fp", REQ, 0, 1) != base
    assert request_key("fp", GenRequest((("user", "hi"),), REQ.sampling), 0, 0) != base
    assert request_key("fp", GenRequest(REQ.messages, SamplingParams(33, 0.7, 0.9)), 0, 0) != base
    assert request_key("fp", GenRequest(REQ.messages, SamplingParams(32, 0.8, 0.9)), 0, 0) != base
    assert request_key("fp", GenRequest(REQ.messages, SamplingParams(32, 0.7, 0.95)), 0, 0) != base
    assert request_key("fp", GenRequest(REQ.messages, REQ.sampling, assistant_prefix="x"), 0, 0) != base
    assert request_key("fp", REQ, 0, 0) == base


def test_greedy_keys_ignore_seed_and_top_p():
    g = GenRequest(REQ.messages, SamplingParams(32, 0.0, 0.9))
    g2 = GenRequest(REQ.messages, SamplingParams(32, 0.0, 0.5))
    assert request_key("fp", g, 0) == request_key("fp", g, 99) == request_key("fp", g2, 5)


def test_write_through_persists_across_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    c = ResponseCache(path)
    c.put_many([("k1", "fp", GenResult("hello", 3, 2, "stop", 0.5)),
                ("k2", "fp", GenResult("", finish_reason="error", error="boom"))])
    c.close()
    c2 = ResponseCache(path)
    got = c2.get_many(["k1", "k2", "k3"])
    assert set(got) == {"k1"}  # failed calls are not cached: a re-run retries them
    assert got["k1"].text == "hello" and got["k1"].tokens_out == 2 and got["k1"].latency_s == 0.5
    assert len(c2) == 1


def test_env_var_sets_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_RESPONSE_CACHE", str(tmp_path / "x.sqlite"))
    c = ResponseCache()
    assert c.path == tmp_path / "x.sqlite"
    c.close()


def test_null_cache_stores_nothing():
    n = NullCache()
    n.put_many([("k", "fp", GenResult("x"))])
    assert n.get_many(["k"]) == {} and len(n) == 0


def test_logprobs_round_trip_and_old_files_migrate(tmp_path):
    import sqlite3

    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, fingerprint TEXT, text TEXT, tokens_in INTEGER,"
               " tokens_out INTEGER, finish_reason TEXT, latency_s REAL, created REAL)")
    db.execute("INSERT INTO responses VALUES ('k0', 'fp', 'old', 1, 1, 'stop', 0.1, 0)")
    db.commit()
    db.close()
    c = ResponseCache(old)
    assert c.get_many(["k0"])["k0"].to_result().text == "old"
    c.put_many([("k1", "fp", GenResult("x", 1, 2, token_logprobs=[-0.1, -0.2], top_logprobs=[-0.1, -0.05]))])
    r = c.get_many(["k1"])["k1"].to_result()
    assert r.token_logprobs == [-0.1, -0.2] and r.top_logprobs == [-0.1, -0.05]
    assert SamplingParams(8, logprobs=True).key() == SamplingParams(8).key()  # same call, same cache entry
