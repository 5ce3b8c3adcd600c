"""Every method of `moco list methods` through `moco serve` on scripted models, without a task and with a task
that has a dev split: each either answers 200 (twice) or is refused at start with one line — never a server
that starts and then answers 500 — and `moco validate` gives the same verdict on the same config.

The bulk runs in process (the service `moco serve` builds, its start-up run, the ASGI app through a test
client); a few real `moco validate`/`moco serve` subprocesses cover the command line (exit 2, one line).
"""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from moco.errors import MocoError
from moco.methods.registry import all_methods
from moco.serve import build_service, load_serve_config, serve_plan
from moco.serve.app import create_app
from serve_util import moco_env, served

# Replies that let every text method finish: BBMAS agents terminate and vote, everything else answers (A).
SCRIPT = {"rules": [{"match": "Conclusions proposed by the agents", "reply": "I vote for Conclusion #1"},
                    {"match": "choose your next action", "reply": "I choose to terminate and finalize the solution."},
                    {"match": "Write the complete final solution", "reply": "FINAL: The answer is (A)"}],
          "default": "The answer is (A)."}
# the GNN's 500 reference epochs are not what this walk tests; text_structure has a required param
PARAMS = {"api_graph_routing": {"epochs": 3}, "text_structure": {"structure": "chain"}}
TASK = {"name": "moco_demo", "dev_limit": 4, "test_limit": 2}
METHODS = sorted(m for m in all_methods() if not m.startswith("_"))  # "_test_*": registered by other test files


def config(tmp_path, method: str, with_task: bool):
    info = all_methods()[method]
    names = ["a", "b", "c"][:info.max_models or 3]
    raw = {"method": method, "models": [{"model": f"scripted:{n}", "script": SCRIPT} for n in names],
           "decoding": {"max_new_tokens": 16, "temperature": 0.0}, "params": PARAMS.get(method, {})}
    if with_task:
        raw["task"] = TASK
    path = tmp_path / f"{method}-{'task' if with_task else 'notask'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def validate_verdict(path) -> str | None:
    """What `moco validate` says (the function its command calls): None for OK, else the one-line error."""
    try:
        serve_plan(*load_serve_config(path))
    except MocoError as e:
        return str(e)
    return None


def fresh_dev_calls(svc) -> int:
    """Model calls outside the test phase that were not answered from memory or cache (dev work)."""
    return sum(s.calls - s.cache_hits for name, s in svc.recorder.phases.items() if name != "test")


def walk(path):
    """(verdict at start, [statuses of two chat requests]); the service goes through what `moco serve` does."""
    try:
        svc = build_service(path)
    except MocoError as e:
        return str(e), [], 0
    try:
        try:
            svc.warm_up()
        except MocoError as e:
            return str(e), [], 0
        after_start = fresh_dev_calls(svc)
        body = {"model": svc.name, "messages": [{"role": "user", "content": "What is 2+2? (A) 4 (B) 5"}]}
        with TestClient(create_app(svc)) as client:
            assert client.get("/health").json()["status"] == "ready"
            statuses = [client.post("/v1/chat/completions", json=body) for _ in range(2)]
        return None, statuses, fresh_dev_calls(svc) - after_start
    finally:
        svc.close()


@pytest.mark.parametrize("with_task", [False, True], ids=["no-task", "dev-task"])
def test_every_method_answers_or_is_refused_at_start_as_validate_says(tmp_path, with_task):
    refused, answered = {}, []
    for method in METHODS:
        path = config(tmp_path, method, with_task)
        said = validate_verdict(path)
        verdict, responses, dev_after = walk(path)
        assert verdict == said, f"{method}: validate says {said!r}, serve {verdict!r}"
        if verdict is not None:
            assert "\n" not in verdict and verdict.strip(), f"{method}: refusal is not one line: {verdict!r}"
            refused[method] = verdict
            continue
        for r in responses:
            assert r.status_code == 200, f"{method}: started, then {r.status_code} {r.text[:300]}"
            assert r.json()["choices"][0]["message"]["role"] == "assistant"
            assert r.json()["choices"][0]["message"]["content"].strip(), f"{method}: answered 200 with no text"
        assert dev_after == 0, f"{method}: {dev_after} dev-phase model calls after start-up (not done at start)"
        answered.append(method)
    # both outcomes occur: the walk is not vacuous (scripted models cannot give weights, logits or training)
    assert answered and refused
    assert "text_multiagent_refine" in answered  # the docs' example serves with and without a task
    if not with_task:
        assert "single_model" in answered and "api_prompt_routing" in refused
        assert "no dev split" in refused["api_prompt_routing"]


def test_default_instead_of_dev_is_said_at_start_and_by_validate(tmp_path):
    path = config(tmp_path, "text_multiagent_refine", with_task=False)
    p = serve_plan(*load_serve_config(path))
    assert p.roles["summarizer"].name == "a" and len(p.notes) == 1
    assert "first model 'a' is its summarizer" in p.notes[0] and "roles.summarizer" in p.notes[0]
    # the same config with a task that has no dev split is refused (a run's number never rests on the default)
    raw = yaml.safe_load(path.read_text())
    raw["task"] = {"name": "moco_demo", "dev_limit": 0}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(MocoError, match="picks its summarizer by dev score: task moco_demo has no dev split "
                                        r"\(set params.summarizer or bind roles.summarizer\)"):
        serve_plan(*load_serve_config(path))


def test_start_up_run_keeps_dev_work_out_of_requests(tmp_path):
    """refine with a task: the dev selection of its summarizer happens at start; requests with other sampling
    settings do no dev work either (dev calls sample with the config's settings)."""
    svc = build_service(config(tmp_path, "text_multiagent_refine", with_task=True))
    try:
        assert "dev" not in svc.recorder.phases
        svc.warm_up()
        dev = svc.recorder.phases["dev"]
        assert dev.calls == 3 * TASK["dev_limit"] and fresh_dev_calls(svc) == dev.calls
        body = {"model": svc.name, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.9,
                "max_tokens": 8}
        assert svc.ctx.runs == 1
        app = create_app(svc)
        assert svc.ctx.runs == 1  # the app's streaming probe does not run the method a second time
        with TestClient(app) as client:
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert fresh_dev_calls(svc) == 3 * TASK["dev_limit"] and svc.recorder.phases["test"].calls > 0
    finally:
        svc.close()


def test_health_is_503_while_starting(tmp_path):
    svc = build_service(config(tmp_path, "single_model", with_task=False))
    try:
        with TestClient(create_app(svc)) as client:
            svc.starting = True
            r = client.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "starting"
            svc.starting = False
            assert client.get("/health").json()["status"] == "ready"
    finally:
        svc.close()


def _moco(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "moco", *args], env=moco_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_cli_serve_refuses_with_one_line_and_exit_2_like_validate(tmp_path):
    path = config(tmp_path, "api_prompt_routing", with_task=False)
    v, s = _moco("validate", str(path)), _moco("serve", str(path), "--port", "1")
    assert v.returncode == 2 and s.returncode == 2
    line = v.stderr.strip()
    assert len(line.splitlines()) == 1 and "no dev split" in line
    assert s.stderr.strip().splitlines()[-1] == line and s.stdout == ""


def test_cli_serve_says_its_default_and_answers(tmp_path):
    path = config(tmp_path, "text_multiagent_refine", with_task=False)
    v = _moco("validate", str(path))
    assert v.returncode == 0 and "default  text_multiagent_refine picks its summarizer" in v.stdout
    with served(path, timeout=90) as url:
        assert httpx.get(url.replace("/v1", "/health")).json()["status"] == "ready"
        r = httpx.post(f"{url}/chat/completions", timeout=30,
                       json={"model": "moco-text_multiagent_refine", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_a_method_that_fails_its_start_up_run_is_refused_at_start(tmp_path):
    from moco.models.scripted import ScriptedBackend

    def broken(req):
        raise ValueError("this model is broken\nsecond line")

    path = config(tmp_path, "single_model", with_task=False)
    raw = yaml.safe_load(path.read_text())
    raw["models"] = ["scripted:e"]
    path.write_text(yaml.safe_dump(raw))
    svc = build_service(path, backends={"scripted:e": ScriptedBackend("e", fn=broken)})
    try:
        with pytest.raises(MocoError, match="^single_model failed its start-up run: ") as e:
            svc.warm_up()
        assert "\n" not in str(e.value) and not svc.starting
    finally:
        svc.close()


def test_a_vote_on_a_multiple_choice_task_reads_the_requests_options(tmp_path):
    """A served request has no `choices` field: its listed options are read from its text, so answers are
    voted on by option; a request that lists none gets 422 saying so, never an empty 200."""
    svc = build_service(config(tmp_path, "text_majority_vote", with_task=True))
    try:
        svc.warm_up()
        ask = lambda text: client.post("/v1/chat/completions", json={  # noqa: E731
            "model": svc.name, "messages": [{"role": "user", "content": text}]})
        with TestClient(create_app(svc)) as client:
            inline, lines = ask("What is 2+2? (A) 4 (B) 5"), ask("What is 2+2?\nA) 4\nB) 5\nC) 6")
            bare = ask("Which language is mainly spoken in Brazil?")
        for r in (inline, lines):
            assert r.status_code == 200 and "(A)" in r.json()["choices"][0]["message"]["content"]
        assert bare.status_code == 422
        err = bare.json()["error"]
        assert err["code"] == "options_missing" and "multiple choice" in err["message"] and "A) ..." in err["message"]
    finally:
        svc.close()


@pytest.mark.parametrize("prompt, options", [
    ("Which? (A) x (B) y", {"A": "x", "B": "y"}),
    ("Q1\nA) a\nB) b\n\nQ2\nA) c\nB) d\nC) e\nAnswer with the letter", {"A": "c", "B": "d", "C": "e"}),
    ("A. 12\nB. 15\nC. 18", {"A": "12", "B": "15", "C": "18"}),
    ("(A) red\n(B) blue", {"A": "red", "B": "blue"}),
    ("Which language is spoken in Brazil? Answer in one short sentence.", None),
    ("I think A: no", None),  # one lettered phrase is not a list of options
    ("A) x\nC) y", None),  # not lettered A, B, ...
])
def test_options_in_request_text(prompt, options):
    from moco.serve.served_task import options_in

    assert options_in(prompt) == options
