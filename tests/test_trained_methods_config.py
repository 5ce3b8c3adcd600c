"""The reference implementation's JSON configs of the three trained text methods, with every key its notes list,
are read unchanged: each key lands in our Params (or in the decoding / hardware settings), none is rejected."""
from __future__ import annotations

import pytest

from moco.config import parse_config
from moco.runner import plan

GEN = {"max_response_length": 48, "temperature": 0.7, "top_p": 0.9, "batch_size": 4}
REFERENCE = {
    "text_multiagent_finetuning": {"iterations": 2, "rounds": 3, "w": 0.25, "training_ratio": 0.5, "sft_epochs": 2,
                                   "sft_learning_rate": 2e-5, "sft_batch_size": 2, "sft_grad_accum": 8},
    "text_sparta": {"num_iterations": 2, "current_iteration": 0, "base_dir": "model_collaboration/logs/text_sparta",
                    "judge_batch_size": 8, "judge_rounds": 2, "num_instructions": 50, "random_match_prob": 0.3,
                    "num_opponents": 2, "initial_k": 12, "min_k": 4, "window_size": 5, "min_deviation": 0.2,
                    "epsilon": 0.02, "decay_rate": 0.8, "decay_steps": 5, "scaling_factor": 10,
                    "score_type": "normal", "freeze_ratings": False, "debug": True},
    "text_agglm": {"agg_model": 1, "agglm_log_path": "model_collaboration/logs/agglm", "reuse_log": True,
                   "learning_rate": 5e-5, "weight_decay": 1e-4, "lr_scheduler": "linear", "max_epochs": 2,
                   "train_batch_size": 8, "sample_size": 3},
}


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_reference_config_of_trained_method_plans(method):
    hp = REFERENCE[method]
    cfg = parse_config({"method": method, "task": "moco_demo", "task_type": "multiple_choice", "gpu_ids": [],
                        "model_names": ["smollm2-135m-instruct"] * 3, "hyperparameters": {**GEN, **hp}})
    p = plan(cfg)
    assert cfg.decoding.max_new_tokens == 48 and cfg.decoding.temperature == 0.7
    got = p.params.model_dump(by_alias=True)
    for key, value in hp.items():
        assert got[key] == value, key


def test_sparta_rejects_reference_score_schedules_it_does_not_implement():
    from moco.errors import ConfigError

    cfg = parse_config({"method": "text_sparta", "task": "moco_demo", "model_names": ["smollm2-135m-instruct"] * 3,
                        "hyperparameters": {"score_type": "dynamic"}})
    with pytest.raises(ConfigError, match="score_type"):
        plan(cfg)
