"""client_server_colm on scripted clients and a scripted server: selection, who saw what, rounds, ablations."""
from __future__ import annotations

import json
import re

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment

QUESTIONS = [  # (question, domain, gold letter)
    ("What is 12 multiplied by 3?", "math", "A"),
    ("Which river flows through Cairo?", "geo", "B"),
    ("Which gas do plants absorb for photosynthesis?", "sci", "C"),
    ("What is the square root of 81?", "math", "D"),
    ("What is the capital city of Peru?", "geo", "A"),
    ("What is the chemical symbol of sodium?", "sci", "B"),
]
DESCRIPTIONS = {
    "mathy": "an expert mathematician: arithmetic, algebra, numbers and calculations",
    "geo": "an expert in world geography: countries, capital cities, rivers and mountains",
    "sci": "an expert scientist: chemistry, biology, physics and the natural world",
}


@pytest.fixture
def domain_task(tmp_path):
    rows = [{"id": f"q{i}", "question": q, "choices": {k: f"option {k}" for k in "ABCD"}, "answer": a, "domain": d}
            for i, (q, d, a) in enumerate(QUESTIONS)]
    p = tmp_path / "domains.json"
    p.write_text(json.dumps({"name": "domains", "task_type": "multiple_choice", "dev": rows[:2], "test": rows}))
    return p


def gold(prompt: str) -> str:
    return next(a for q, _, a in QUESTIONS if q in prompt)


def wrong(letter: str) -> str:
    return "ABCD"[("ABCD".index(letter) + 1) % 4]


def client(name: str, right_alone: bool) -> ScriptedBackend:
    """Alone: '<name>:r0 The answer is (X)' (right or wrong); when revising its answer '<name>:rK' it writes
    r(K+1) and follows the server's letter."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        m = re.search(rf"Your previous answer:\n{name}:r(\d+)", prompt)
        if m:
            letter = re.search(r"Guidance from the server.*?The answer is \((\w)\)", prompt, re.S).group(1)
            return f"{name}:r{int(m.group(1)) + 1} The answer is ({letter})"
        g = gold(prompt)
        return f"{name}:r0 The answer is ({g if right_alone else wrong(g)})"

    return ScriptedBackend(name, fn=reply)


def server() -> ScriptedBackend:
    """Lists whose answers it saw, and answers right whenever it saw at least one answer."""

    def reply(req) -> str:
        prompt = req.messages[-1][1]
        if "how relevant is this expert" in prompt:
            return "7"
        saw = re.findall(r"\[Answer \d+\]\n(\w+:r\d+)", prompt)
        return f"server saw {','.join(saw)} The answer is ({gold(prompt)})"

    return ScriptedBackend("server", fn=reply)


def colm_config(task, params=None, **extra):
    raw = {"method": "client_server_colm", "task": {"name": str(task)},
           "models": [{"model": f"scripted:{n}", "description": d} for n, d in DESCRIPTIONS.items()],
           "roles": {"server": {"model": "scripted:server"}}, "params": params or {},
           "decoding": {"max_new_tokens": 32, "temperature": 0.0}}
    raw.update(extra)
    return parse_config(raw)


def backends(right=("sci",)):
    out = {f"scripted:{n}": client(n, n in right) for n in DESCRIPTIONS}
    out["scripted:server"] = server()
    return out


def calls_by_tag(run_dir):
    tags: dict[str, int] = {}
    batches: dict[str, set] = {}
    for line in (run_dir / "calls.jsonl").read_text().splitlines():
        c = json.loads(line)
        tags[c["tag"]] = tags.get(c["tag"], 0) + 1
        batches.setdefault(c["tag"], set()).add(c["batch"])
    return tags, batches


def test_colm_rounds_who_saw_what(domain_task, cache, tmp_path):
    bs = backends()
    res = run_experiment(colm_config(domain_task, {"rounds": 2, "top_k": "all"}), tmp_path / "run", cache=cache,
                         backends=bs)
    n = len(QUESTIONS)
    srv = bs["scripted:server"].calls
    assert len(srv) == 2 * n
    for k in (1, 2):  # round k: the server saw every client's round k-1 answer, anonymously
        got = [c for c in srv if f"mathy:r{k - 1}" in c.prompt]
        assert len(got) == n
        assert all(f"geo:r{k - 1}" in c.prompt and f"sci:r{k - 1}" in c.prompt for c in got)
        assert all("mathy" not in c.prompt.split("Client answers:")[0] for c in got)
    for name in DESCRIPTIONS:  # every client revised its own answer with that round's server output
        calls = bs[f"scripted:{name}"].calls
        assert len(calls) == 3 * n
        for k in (1, 2):
            rev = [c for c in calls if f"Your previous answer:\n{name}:r{k - 1}" in c.prompt]
            assert len(rev) == n
            assert all(f"server saw mathy:r{k - 1},geo:r{k - 1},sci:r{k - 1}" in c.prompt for c in rev)
    colm = res.metrics["colm"]
    rows = {r["system"]: r["score"] for r in colm["table"]}
    assert rows == {"mathy": 0.0, "mathy*": 1.0, "geo": 0.0, "geo*": 1.0, "sci": 1.0, "sci*": 1.0,
                    "server output": 1.0}
    assert colm["per_round"]["mathy"] == [0.0, 1.0, 1.0] and colm["per_round"]["server output"] == [1.0, 1.0]
    assert res.metrics["score"] == 1.0  # the run's output: the first client's (mathy's) refined answers
    assert colm["headline"] == {"output": "client", "client": "mathy",
                                "why": "the first pool client that is not the server"}
    assert all(r["output"].startswith("mathy:r2") for r in res.predictions)
    tr = res.predictions[0]["trace"]
    assert tr["selected"] == ["mathy", "geo", "sci"] and tr["alone"]["mathy"].startswith("mathy:r0")
    assert tr["rounds"][1]["refined"]["geo"].startswith("geo:r2") and tr["rounds"][0]["saw"] == ["mathy", "geo", "sci"]
    tags, batches = calls_by_tag(res.run_dir)
    assert tags == {"colm client answer": 3 * n, "colm server r1": n, "colm refine r1": 3 * n,
                    "colm server r2": n, "colm refine r2": 3 * n}
    assert res.metrics["phases"]["test"]["calls"] == 3 * n + 2 * (n + 3 * n) and "dev" not in res.metrics["phases"]


def test_embedding_selection_sends_only_the_relevant_client(domain_task, cache, tmp_path):
    bs = backends()
    res = run_experiment(colm_config(domain_task, {"top_k": 1, "selection": "embedding", "output": "server"}),
                         tmp_path / "run", cache=cache, backends=bs)
    expect = {"math": "mathy", "geo": "geo", "sci": "sci"}
    for row, (q, dom, _) in zip(res.predictions, QUESTIONS):
        tr = row["trace"]
        assert tr["selected"] == [expect[dom]], (q, tr["relevance"])
        assert max(tr["relevance"], key=tr["relevance"].get) == expect[dom]
        assert row["output"].startswith(f"server saw {expect[dom]}:r0 ")  # the server saw only that answer
        assert set(tr["rounds"][0]["refined"]) == set(DESCRIPTIONS)  # refine: all -> everyone revises
    assert res.metrics["colm"]["contributions"] == {"mathy": 2, "geo": 2, "sci": 2}


def test_llm_selection_rates_every_client_with_the_selector(domain_task, cache, tmp_path):
    bs = backends()

    def rate(req):
        p = req.messages[-1][1]
        if "geography" in p:
            return "9"
        return "no idea" if "mathematician" in p else "3"

    bs["scripted:judge"] = ScriptedBackend("judge", fn=rate)
    cfg = colm_config(domain_task, {"top_k": 2, "selection": "llm", "refine": "selected", "output": "server"},
                      roles={"server": {"model": "scripted:server"}, "selector": {"model": "scripted:judge"}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bs)
    n = len(QUESTIONS)
    assert len(bs["scripted:judge"].calls) == 3 * n and not bs["scripted:server"].received("how relevant")
    assert res.metrics["colm"]["selection_unparsed"] == n  # the mathematician's ratings were not numbers
    assert all(r["trace"]["selected"] == ["geo", "sci"] for r in res.predictions)
    assert not bs["scripted:mathy"].calls  # refine: selected -> an unselected client does nothing at all
    assert {r["system"]: r["n"] for r in res.metrics["colm"]["table"]}["geo*"] == n


def test_ablations_in_one_run_share_first_answers(domain_task, cache, tmp_path):
    bs = backends(right=("geo",))
    params = {"top_k": 2, "selection": "embedding", "ablate_only_each": True, "ablate_client_counts": [1, 3]}
    res = run_experiment(colm_config(domain_task, params), tmp_path / "run", cache=cache, backends=bs)
    n = len(QUESTIONS)
    abl = res.metrics["colm"]["ablations"]
    assert set(abl) == {"only mathy", "only geo", "only sci", "top-1", "top-3"}
    srv = bs["scripted:server"].calls
    only_geo = [c for c in srv if re.search(r"Client answers:\n\n\[Answer 1\]\ngeo:r0[^\[]*Write", c.prompt, re.S)]
    assert len(only_geo) >= n  # the 'only geo' variant (and top-1 on geography questions)
    tags, batches = calls_by_tag(res.run_dir)
    assert tags["colm client answer"] == 3 * n  # first answers are shared by every variant
    # identical server prompts across variants are generated once (e.g. top-3 for 3 clients), and all
    # variants' server calls share full batches (the scripted backend takes 16 per batch)
    assert len(srv) < (1 + 3 + 2) * n
    assert len(batches["colm server r1"]) == -(-len(srv) // 16)
    assert abl["top-3"]["server output"] == 1.0 and abl["only mathy"]["geo*"] == 1.0


def test_only_and_client_output(domain_task, cache, tmp_path):
    bs = backends(right=())
    res = run_experiment(colm_config(domain_task, {"only": ["geo"], "output": "mathy"}), tmp_path / "run",
                         cache=cache, backends=bs)
    assert all(re.findall(r"\[Answer \d+\]\n(\w+):", c.prompt) == ["geo"] for c in bs["scripted:server"].calls)
    assert all(r["output"].startswith("mathy:r1") for r in res.predictions)
    assert res.metrics["score"] == 1.0


def test_paper_defaults_select_clients_and_report_a_clients_refined_answers(domain_task, cache, tmp_path):
    """With no params: the server role (apart from the clients) rates every client's relevance (selection
    llm), the top half (2 of 3) answer to it, every client revises, and the headline score is the first
    client's refined answers — not the server's synthesis, which stays a separate row."""
    bs = backends(right=("sci",))

    def rate_or_synthesise(req):
        p = req.messages[-1][1]
        if "how relevant is this expert" in p:
            q = p.split("Expert model:")[0]
            dom = next(d for qq, d, _ in QUESTIONS if qq in q)
            mine = {"mathematician": "math", "geography": "geo", "scientist": "sci"}
            return "9" if any(w in p.split("Expert model:")[1] and dom == d for w, d in mine.items()) else "2"
        saw = re.findall(r"\[Answer \d+\]\n(\w+:r\d+)", p)
        return f"server saw {','.join(saw)} The answer is ({wrong(gold(p)) if 'sci:r0' not in saw else gold(p)})"

    bs["scripted:server"] = ScriptedBackend("server", fn=rate_or_synthesise)
    res = run_experiment(colm_config(domain_task), tmp_path / "run", cache=cache, backends=bs)
    colm, n = res.metrics["colm"], len(QUESTIONS)
    assert colm["top_k"] == 2 and colm["selection"] == "llm" and colm["server"] == "server"
    assert colm["server_is_client"] is None and "warnings" not in res.metrics
    assert len(bs["scripted:server"].received("how relevant is this expert")) == 3 * n
    for row, (_, dom, _) in zip(res.predictions, QUESTIONS):
        tr = row["trace"]
        best = {"math": "mathy", "geo": "geo", "sci": "sci"}[dom]
        assert tr["selected"][0] == best and len(tr["selected"]) == 2  # the 9-rated client, then pool order
        assert set(tr["rounds"][0]["refined"]) == set(DESCRIPTIONS)  # every client revises
        assert row["output"] == tr["rounds"][0]["refined"]["mathy"]  # the headline: mathy's refined answer
    assert colm["headline"]["client"] == "mathy"
    rows = {r["system"]: r["score"] for r in colm["table"]}
    assert set(rows) == {"mathy", "mathy*", "geo", "geo*", "sci", "sci*", "server output"}
    # the server saw sci's (right) answer only on the 2 science questions; mathy (wrong alone) follows it
    assert rows["server output"] == rows["mathy*"] == pytest.approx(1 / 3, abs=1e-4) and rows["mathy"] == 0.0
    assert res.metrics["score"] == pytest.approx(rows["mathy*"], abs=1e-4)


def test_server_defaults_to_dev_best_and_bad_params(domain_task, cache, tmp_path):
    """No server role: the dev-best client serves, and the run warns that a client doubles as server; the
    headline client is then the first client that is not the server."""
    bs = backends(right=("sci",))
    cfg = colm_config(domain_task, {"top_k": "all"}, roles={})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bs)
    assert res.metrics["colm"]["server"] == "sci" and res.metrics["phases"]["dev"]["calls"] == 3 * 2
    assert res.metrics["colm"]["server_is_client"] == "sci"
    assert res.metrics["colm"]["server_chosen_by"] == "the dev-best model (no server role bound)"
    assert res.metrics["warnings"] == ["client_server_colm: client 'sci' doubles as the server (the dev-best model "
                                       "(no server role bound)); bind a separate model to the 'server' role for the "
                                       "paper's setting (a server apart from its clients)"]
    assert res.metrics["colm"]["headline"]["client"] == "mathy"
    sel = res.metrics["dev_selection"]["dev_best"]  # the server choice: every client's dev score, sci's margin
    assert sel["chosen"] == "sci" and sel["chosen_dev_score"] == 1.0 and sel["margin"] == 1.0
    with pytest.raises(ConfigError, match="refine: all"):
        run_experiment(colm_config(domain_task, {"output": "geo", "refine": "selected"}), tmp_path / "r2",
                       cache=cache, backends=bs)
    with pytest.raises(ConfigError, match="selction"):
        run_experiment(colm_config(domain_task, {"selction": "llm"}), tmp_path / "r3", cache=cache, backends=bs)
