"""`moco zoo build`: every specialist trains on dev data only, in the answer form the task's scorer reads
(a specialist that learned to answer in another form would be scored 0), and the CLI lists the specialists."""
from __future__ import annotations

import pytest

from moco.errors import ConfigError
from moco.scoring import scorer_for
from moco.tasks.registry import resolve_task
from moco.zoo import SPECIALISTS, ZooSettings, build_zoo, training_data


@pytest.mark.parametrize("name", ["math", "knowledge", "safety", "code"])
def test_training_data_is_dev_only_and_scores_full_marks(name, sample_data):
    spec = SPECIALISTS[name]
    data = training_data(spec, 6, seed=0, data_dir=str(sample_data))
    assert len(data) == 6
    tasks = [resolve_task(d, str(sample_data)).loader() for d in spec.datasets]
    dev = {ex.prompt: (t, ex) for t in tasks for ex in t.dev}
    test_prompts = {ex.prompt for t in tasks for ex in t.test}
    for messages, completion in data:
        prompt = messages[-1][1]
        assert prompt in dev and prompt not in test_prompts  # never a test item
        task, ex = dev[prompt]
        scorer = scorer_for(task.task_type, task.name)
        assert scorer.score(ex, completion).score == 1.0, (name, ex.id, completion[:80])


def test_training_data_sample_is_seeded(sample_data):
    a = training_data(SPECIALISTS["knowledge"], 5, seed=1, data_dir=str(sample_data))
    assert a == training_data(SPECIALISTS["knowledge"], 5, seed=1, data_dir=str(sample_data))
    assert a != training_data(SPECIALISTS["knowledge"], 5, seed=2, data_dir=str(sample_data))


def test_unknown_specialist_is_named(tmp_path, sample_data):
    with pytest.raises(ConfigError, match="unknown specialist 'mathh'.*did you mean 'math'"):
        build_zoo(tmp_path, ZooSettings(specialists=("mathh",)), str(sample_data))


def test_zoo_list_cli():
    from typer.testing import CliRunner

    from moco.cli import app

    out = CliRunner().invoke(app, ["zoo", "list"])
    assert out.exit_code == 0, out.output
    for name in SPECIALISTS:
        assert name in out.output
    assert "humaneval" in out.output


def test_merged_zoo_folders_hold_base_plus_the_adapter(tiny_models, tmp_path, sample_data):
    """`--merged`: each specialist is a full Hugging Face folder equal to base + s·B·A, listed without adapter."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM

    from moco.merging import LoraAdapter, LoraSource, Source
    from moco.zoo import with_steps

    s = with_steps(ZooSettings(base=str(tiny_models[0]), specialists=("science",), max_examples=4, merged=True),
                   max_steps=2, learning_rate=5e-2, max_length=96)
    (built,) = build_zoo(tmp_path, s, str(sample_data))
    assert built.path == tmp_path / "science-merged" and built.steps == 2
    models = yaml.safe_load((tmp_path / "models.yaml").read_text())["models"]
    assert models == [{"model": str(built.path), "name": "science", "description": built.description}]
    base = AutoModelForCausalLM.from_pretrained(tiny_models[0]).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(built.path).state_dict()
    expected = LoraSource("science", "f", Source("base", "b", base), LoraAdapter.load(tmp_path / "science"))
    moved = 0
    for name, t in merged.items():
        assert torch.allclose(t, expected.tensor(name), atol=1e-6), name
        moved += int(not torch.equal(t, base[name]))
    assert moved >= 7  # the fine-tune changed the adapted layers
    again = build_zoo(tmp_path, s, str(sample_data))[0]
    assert again.reused  # same data and settings: not trained twice
