"""`moco data fetch`: hub-shaped rows (small local fixtures written here) -> MoCo JSON, pinned and seeded."""
from __future__ import annotations

import json

import pytest

from moco.errors import ConfigError
from moco.scoring import scorer_for
from moco.tasks import fetch
from moco.tasks.moco_json import load_moco_json

HUB = {  # a few rows per source, shaped like the hub datasets
    "gsm8k": {"train": [{"question": f"Q{i}?", "answer": f"Work... #### {i * 1000:,}"} for i in range(5)],
              "test": [{"question": "How many?", "answer": "3 + 4 = 7\n#### 1,234"}]},
    "math": {"train": [{"problem": "P?", "solution": r"So $\boxed{\frac{1}{2}}$.", "subject": "Algebra", "level": 2,
                        "unique_id": "a"}],
             "test": [{"problem": "Q?", "solution": r"Thus \boxed{\{1,2\}}.", "answer": r"\{1,2\}", "unique_id": "b"}]},
    "arc_challenge": {"validation": [{"id": "v1", "question": "Which?", "answerKey": "2",
                                      "choices": {"label": ["1", "2", "3", "4"], "text": ["a", "b", "c", "d"]}}],
                      "test": [{"id": "t1", "question": "Which?", "answerKey": "C",
                                "choices": {"label": ["A", "B", "C"], "text": ["x", "y", "z"]}}]},
    "popqa": {"test": [{"id": i, "question": f"Who {i}?", "possible_answers": json.dumps(["Washington, D.C.", "DC"]),
                        "s_pop": 1, "o_pop": 2} for i in range(4)]},
    "culturebench": {"test": [{"data_idx": q * 4 + k, "question_idx": q, "prompt_question": f"Q{q}?",
                               "prompt_option": f"opt{k}", "answer": k == 0, "country": "X"}
                              for q in range(6) for k in range(4)]},
    "truthfulqa": {"validation": [{"question": f"Q{i}?", "mc1_targets": {"choices": ["right", "w1", "w2"],
                                                                         "labels": [1, 0, 0]}} for i in range(10)]},
    "bbh": {"hyperbaton": [{"input": "Which order?\n(A) x\n(B) y", "target": "(A)"}],
            "dyck_languages": [{"input": "Close: ( [", "target": "] )"}]},
    "pubmedqa": {"train": [{"pubid": 1, "question": "Does it?", "context": {"contexts": ["A.", "B."]},
                            "final_decision": "yes"}]},
    "medmcqa": {"validation": [{"id": "m", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2}] * 2},
}


@pytest.mark.parametrize("name", sorted(HUB))
def test_converters_build_loadable_scorable_files(name, tmp_path):
    data = fetch.build(name, HUB[name])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    task = load_moco_json(path, name=name, group_key="question_id" if name == "culturebench" else None)
    assert not [p for p in task.problems if p.action == "skipped"]
    assert task.task_type == fetch.SOURCES[name].task_type
    scorer = scorer_for(task.task_type, name)
    for ex in task.dev + task.test:
        if ex.choices:
            resp = f"The answer is ({ex.answer})"
        else:
            from moco.scoring.short_answer import aliases

            resp = f"The answer is \\boxed{{{aliases(ex.answer)[0]}}}"
        assert scorer.score(ex, resp).score == 1.0, (ex.answer, resp)


def test_specific_conversions():
    g = fetch.build("gsm8k", HUB["gsm8k"])
    assert g["test"][0]["output"] == "1234" and len(g["dev"]) == 5
    m = fetch.build("math", HUB["math"])
    assert m["dev"][0]["output"] == r"\frac{1}{2}" and m["test"][0]["output"] == r"\{1,2\}"  # nested braces kept
    arc = fetch.build("arc_challenge", HUB["arc_challenge"])
    assert arc["dev"][0]["choices"] == {"A": "a", "B": "b", "C": "c", "D": "d"} and arc["dev"][0]["answer"] == "B"
    assert json.loads(fetch.build("popqa", HUB["popqa"])["test"][0]["output"]) == ["Washington, D.C.", "DC"]
    bbh = fetch.build("bbh", HUB["bbh"])
    assert sorted(r["output"] for r in bbh["dev"] + bbh["test"]) == ["A", "] )"]
    cb = fetch.build("culturebench", HUB["culturebench"])
    dev_q = {r["question_id"] for r in cb["dev"]}
    assert not dev_q & {r["question_id"] for r in cb["test"]}  # groups never split between dev and test
    assert all(len([r for r in cb["dev"] if r["question_id"] == q]) == 4 for q in dev_q)
    tq = fetch.build("truthfulqa", HUB["truthfulqa"])
    letters = {r["answer"] for r in tq["dev"] + tq["test"]}
    assert len(letters) > 1  # the right answer is no longer always the first option


def test_downsampling_is_seeded_and_bounded():
    rows = {"train": [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(500)],
            "test": [{"question": f"T{i}", "answer": f"#### {i}"} for i in range(3000)]}
    a, b = fetch.build("gsm8k", rows), fetch.build("gsm8k", rows)
    assert a == b and len(a["dev"]) == 200 and len(a["test"]) == 1000
    assert fetch.build("gsm8k", rows, seed=1)["test"] != a["test"]


def test_fetch_writes_file_records_commit_and_reuses_it(tmp_path):
    seen = []

    def loader(src, revision):
        seen.append(revision)
        return HUB["gsm8k"], "abc123"

    path = fetch.fetch_dataset("gsm8k", tmp_path, loader=loader)
    prov = json.loads((tmp_path / "gsm8k.source.json").read_text())
    assert prov["repo"] == "openai/gsm8k" and prov["commit"] == "abc123" and prov["seed"] == 0
    assert json.loads(path.read_text())["task_type"] == "exact_match"
    assert fetch.fetch_dataset("gsm8k", tmp_path, loader=loader) == path and seen == ["main"]  # exists: no refetch
    fetch.fetch_dataset("gsm8k", tmp_path, loader=loader, force=True)
    assert seen == ["main", "abc123"]  # a rebuild uses the recorded commit


def test_first_use_fetches_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MOCO_DATA_DIR", raising=False)
    monkeypatch.setattr(fetch, "hub_rows", lambda src, rev: (HUB["popqa"], "def456"))
    from moco.tasks.registry import resolve_task

    task = resolve_task("popqa").loader()
    assert len(task.dev) + len(task.test) == 4 and (tmp_path / "data" / "popqa.json").exists()


def test_unknown_source_and_offline_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no hub source known for 'gsm9k' \\(did you mean 'gsm8k'\\?\\)"):
        fetch.fetch_dataset("gsm9k", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="cannot fetch openai/gsm8k"):
        fetch.fetch_dataset("gsm8k", tmp_path)


class FakeGitHub:
    """Answers like api.github.com / raw.githubusercontent.com for the paper repo; records every URL."""

    def __init__(self, files: dict[str, bytes], head: str = "a" * 40):
        self.files, self.head, self.urls = files, head, []

    def __call__(self, url: str, headers: dict[str, str]):
        import httpx

        self.urls.append(url)
        if url.startswith("https://api.github.com/"):
            return httpx.Response(200, text=self.head)
        name = url.rsplit("/", 1)[-1]
        commit = url.split("/")[5]
        if name in self.files and commit == self.head:
            return httpx.Response(200, content=self.files[name])
        return httpx.Response(404)


def test_paper_files_fetched_from_github_pinned_and_checked(tmp_path, monkeypatch, data_dir):
    from moco.errors import DataError
    from moco.tasks import fetch_reference
    shipped = (data_dir / "agieval_tiny.json").read_bytes()
    gh = FakeGitHub({"agieval_tiny.json": shipped})
    monkeypatch.setattr(fetch_reference, "_get", gh)
    assert set(fetch_reference.NAMES) | set(fetch.SOURCES) == {p.stem for p in data_dir.glob("*.json")}
    path = fetch.fetch_dataset("agieval_tiny", tmp_path)
    assert path.read_bytes() and json.loads(path.read_text())["test"] == json.loads(shipped)["test"]
    prov = json.loads((tmp_path / "agieval_tiny.source.json").read_text())
    assert prov["commit"] == "a" * 40 and len(prov["sha256"]) == 64
    assert gh.urls[1] == f"https://raw.githubusercontent.com/BunsenFeng/model_collaboration/{'a' * 40}/" \
                         "model_collaboration/data/agieval_tiny.json"
    task = load_moco_json(path, name="agieval_tiny")
    assert task.test and task.task_type == json.loads(shipped)["task_type"]

    # the file was deleted: the refetch uses the recorded commit (no branch lookup) and gets the same bytes
    gh.urls.clear()
    path.unlink()
    fetch.fetch_dataset("agieval_tiny", tmp_path)
    assert json.loads(path.read_text())["test"] == json.loads(shipped)["test"]
    assert not any("api.github.com" in u for u in gh.urls)
    # ... and refuses a file whose digest changed under the same name
    path.unlink()
    gh.files["agieval_tiny.json"] = shipped.replace(b'"test"', b'"test" ', 1)
    with pytest.raises(DataError, match="changed"):
        fetch.fetch_dataset("agieval_tiny", tmp_path)
    gh.files["agieval_tiny.json"] = shipped
    fetch.fetch_dataset("agieval_tiny", tmp_path)
    # the branch moved and the file is gone: a one-line error, the old file is kept
    gh.head = "b" * 40
    del gh.files["agieval_tiny.json"]
    (tmp_path / "agieval_tiny.source.json").unlink()
    with pytest.raises(DataError, match="HTTP 404"):
        fetch.fetch_dataset("agieval_tiny", tmp_path, force=True)
    assert json.loads(path.read_text())["test"] == json.loads(shipped)["test"]
    with pytest.raises(ConfigError, match="did you mean 'agieval_tiny'"):
        fetch.fetch_dataset("agieval_tny", tmp_path)


def test_a_missing_paper_dataset_is_fetched_on_first_use(tmp_path, monkeypatch, data_dir):
    from moco.tasks import fetch_reference
    from moco.tasks.registry import resolve_task

    monkeypatch.delenv("MOCO_DATA_DIR", raising=False)
    monkeypatch.setenv("MOCO_CACHE_DIR", str(tmp_path))
    gh = FakeGitHub({"wikidyk.json": (data_dir / "wikidyk.json").read_bytes()})
    monkeypatch.setattr(fetch_reference, "_get", gh)
    info = resolve_task("wikidyk")
    assert (tmp_path / "data" / "wikidyk.json").exists() and len(gh.urls) == 2
    assert resolve_task("wikidyk") is not None and len(gh.urls) == 2  # fetched once, then read from the cache
    assert info is not None
