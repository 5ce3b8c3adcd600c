"""CoLM over HTTP: a colm-server subprocess, three client processes with their own models, guidance back."""
from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml

from moco.config import parse_config
from moco.errors import ModelError
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from serve_util import moco, moco_env, served

CLIENTS = {"alice": "A", "bob": "B", "carol": "A"}


def client_config(tmp_path, name: str, letter: str, url: str, task, session: str, rounds: int = 1):
    cfg = {"method": "client_server_colm_client", "task": {"name": str(task), "test_limit": 3},
           "models": [{"model": f"scripted:{name}", "description": f"{name}'s speciality",
                       "script": {"rules": [{"match": "Guidance from the server", "reply": f"{name} revised: The answer is (A)"}],
                                  "default": f"{name} alone: The answer is ({letter})"}}],
           "params": {"server_url": url, "clients": 3, "session": session, "rounds": rounds},
           "decoding": {"max_new_tokens": 64, "temperature": 0.0}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_colm_round_with_three_client_processes(tmp_path, tiny_task):
    server_cfg = tmp_path / "server.yaml"
    server_cfg.write_text(yaml.safe_dump({  # the server model echoes its prompt: the guidance shows what it saw
        "method": "client_server_colm", "models": ["scripted:echo"], "params": {"top_k": "all"},
        "decoding": {"max_new_tokens": 2000, "temperature": 0.0}}))
    token = "colm-secret"
    with served(server_cfg, "--role", "colm-server", "--token", token, "--gather-timeout", "60") as url:
        procs = {n: moco("run", str(client_config(tmp_path, n, letter, url, tiny_task, "s1", rounds=2)),
                         "--out", str(tmp_path / f"run-{n}"), env=moco_env(MOCO_SERVE_TOKEN=token))
                 for n, letter in CLIENTS.items()}
        logs = {n: p.communicate(timeout=300)[0] for n, p in procs.items()}
        assert all(p.returncode == 0 for p in procs.values()), logs
        info = httpx.get(f"{url}/moco/info", headers={"Authorization": f"Bearer {token}"}).json()
    assert info["role"] == "colm-server" and info["aggregation"] == "synthesize" and info["server"] == "echo"
    assert info["sessions_completed"] == 3 * 2  # 3 questions x 2 rounds, each with all three clients
    for name in CLIENTS:
        rows = [json.loads(x) for x in (tmp_path / f"run-{name}" / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 3
        for row in rows:
            tr = row["trace"][name]
            assert tr["alone"].startswith(f"{name} alone")
            r1, r2 = tr["rounds"]
            # round 1: the server saw the three clients' own answers (anonymously) and the question
            answers = re.findall(r"\[Answer \d+\]\n(.*)", r1["guidance"])
            assert sorted(answers) == sorted(f"{n} alone: The answer is ({letter})" for n, letter in CLIENTS.items())
            assert row["prompt"] in r1["guidance"] and r1["own_answer_used"] and not r1["partial"]
            assert r1["revised"] == f"{name} revised: The answer is (A)"  # revised locally with the guidance
            assert sorted(re.findall(r"\[Answer \d+\]\n(.*)", r2["guidance"])) == sorted(
                f"{n} revised: The answer is (A)" for n in CLIENTS)
        m = json.loads((tmp_path / f"run-{name}" / "metrics.json").read_text())
        assert m["colm_client"]["exchange_failures"] == 0
        tags = [json.loads(x)["tag"] for x in (tmp_path / f"run-{name}" / "calls.jsonl").read_text().splitlines()]
        assert tags.count("colm exchange r1") == 3 and tags.count("colm refine r2") == 3


def test_client_refuses_a_wrong_token_and_server_rejects_bad_sessions(tmp_path, tiny_task, cache):
    server_cfg = tmp_path / "server.yaml"
    server_cfg.write_text(yaml.safe_dump({"method": "client_server_colm_vlm"}))  # concatenation: no model
    with served(server_cfg, "--role", "colm-server", "--token", "right") as url:
        cfg = parse_config(yaml.safe_load(client_config(tmp_path, "alice", "A", url, tiny_task, "x").read_text()))
        with pytest.raises(ModelError, match="refused the API key"):
            run_experiment(cfg, tmp_path / "r", cache=cache)
        h = {"Authorization": "Bearer right"}
        base = {"model": "colm-server", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]}
        r = httpx.post(f"{url}/chat/completions", json=base, headers=h)
        assert r.status_code == 400 and "colm_session" in r.json()["error"]["message"]
        meta = {"colm_session": "s", "colm_client": "c1", "colm_expected": "1"}
        r = httpx.post(f"{url}/chat/completions", json={**base, "metadata": meta}, headers=h)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "[Model 1] A"
        assert r.json()["moco"]["aggregation"] == "concat"
        r = httpx.post(f"{url}/chat/completions", json={**base, "metadata": meta}, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_closed"
        r = httpx.post(f"{url}/chat/completions", json={**base, "metadata": {**meta, "colm_expected": "many"}}, headers=h)
        assert r.status_code == 400
        r = httpx.post(f"{url}/chat/completions", json={**base, "messages": base["messages"][:1], "metadata": meta},
                       headers=h)
        assert r.status_code == 400 and "question (user) followed by your answer" in r.json()["error"]["message"]


def test_vlm_clients_over_http_concatenate_and_keep_images_local(tmp_path, cache):
    """Two VLM clients (in this process, scripted stand-ins that read images) and a concatenating server."""
    server_cfg = tmp_path / "server.yaml"
    server_cfg.write_text(yaml.safe_dump({"method": "client_server_colm_vlm"}))
    with served(server_cfg, "--role", "colm-server", "--expect", "2", "--gather-timeout", "60") as url:
        seen = {}

        def vlm(name):
            def reply(req):
                assert len(req.images) == 1  # the image stays with the client, in every local call
                p = req.messages[-1][1]
                seen.setdefault(name, []).append(p)
                return f"{name} refined" if "[Model 1]" in p else f"{name} says red"
            return ScriptedBackend(name, fn=reply, images=True)

        bs = {"scripted:v1": vlm("v1"), "scripted:v2": vlm("v2")}
        cfg = parse_config({"method": "client_server_colm_client", "task": {"name": "shapes_vqa", "test_limit": 2},
                            "models": list(bs), "params": {"server_url": url, "clients": 2, "session": "vlm"},
                            "decoding": {"max_new_tokens": 16, "temperature": 0.0}})
        res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bs)
    refine = [p for p in seen["v1"] if "[Model 1]" in p]
    assert len(refine) == 2 and all("[Model 1] v1 says red\n[Model 2] v2 says red" in p for p in refine)
    assert all("Look at the image again" in p for p in refine)
    assert res.predictions[0]["output"] == "v1 refined"


def test_server_keeps_the_top_k_relevant_answers(tmp_path):
    """With params.top_k the server synthesises only the answers of the k clients most relevant to the
    question (here rated by a scripted selector), in one batched call for all sessions."""
    from moco.serve import build_service
    from moco.serve.colm_server import Snapshot

    cfg = tmp_path / "server.yaml"
    cfg.write_text(yaml.safe_dump({"method": "client_server_colm", "params": {"top_k": 1, "selection": "llm"},
                                   "models": ["scripted:srv"], "roles": {"selector": {"model": "scripted:rater"}}}))

    def rate(req):
        p = req.messages[-1][1]
        return "9" if ("geography" in p and "river" in p) or ("maths" in p and "sum" in p) else "1"

    srv = ScriptedBackend("srv", fn=lambda req: "saw " + ",".join(re.findall(r"\[Answer \d+\]\n(\w+)", req.messages[-1][1])))
    service = build_service(cfg, role="colm-server", backends={"scripted:srv": srv,
                                                               "scripted:rater": ScriptedBackend("rater", fn=rate)})
    try:
        snaps = [Snapshot("Which river flows through Cairo?", ["g", "m"], ["geo-answer", "math-answer"],
                          ["geography", "maths"]),
                 Snapshot("What is the sum of 2 and 3?", ["g", "m"], ["geo-answer", "math-answer"],
                          ["geography", "maths"])]
        out = service.batcher.run_now(snaps)  # one batch of two closed sessions
    finally:
        service.close()
    assert [g.text for g in out] == ["saw geo", "saw math"] and [g.used for g in out] == [["g"], ["m"]]
    assert len(srv.calls) == 2


def test_http_server_picks_the_same_server_as_the_in_process_method(tmp_path, tiny_task, cache):
    """Several models and no `server` role: the HTTP server takes the dev-best model on the config's task, as
    `client_server_colm` does in process (not the first model); without a task it refuses in one line."""
    from moco.errors import ConfigError
    from moco.serve import build_service
    from text_agents import agent

    def bk():
        return {"scripted:weak": agent("weak", False), "scripted:strong": agent("strong", True)}

    raw = {"method": "client_server_colm", "task": {"name": str(tiny_task)},
           "models": ["scripted:weak", "scripted:strong"], "decoding": {"max_new_tokens": 32}}
    inproc = run_experiment(parse_config({**raw, "params": {"top_k": "all"}}), tmp_path / "run", cache=cache,
                            backends=bk())
    assert inproc.metrics["colm"]["server"] == "strong"
    cfg = tmp_path / "server.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    service = build_service(cfg, role="colm-server", backends=bk())
    try:
        info = service.describe()
    finally:
        service.close()
    assert info["server"] == "strong" and info["server_chosen_by"] == "the dev-best model (no server role bound)"
    assert info["top_k"] == "half" and info["selection"] == "llm"
    cfg.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "task"}))
    with pytest.raises(ConfigError, match="no `server` role, so the server is the dev-best model") as refused:
        build_service(cfg, role="colm-server", backends=bk())
    assert str(refused.value).endswith("bind roles.server (the config has no task)")  # not "unknown task 'served'"
    cfg.write_text(yaml.safe_dump({**raw, "roles": {"server": "weak"}}))
    service = build_service(cfg, role="colm-server", backends=bk())
    try:
        assert service.describe()["server_chosen_by"] == "the server role" and service.server.name == "weak"
    finally:
        service.close()
