"""LoRA DPO and GRPO on tiny Llamas: the weights change, the loss/margin/reward move, resumed runs reuse the
adapter, a later iteration continues from the previous adapter, and the adapter loads as a model."""
from __future__ import annotations

import string

import pytest

from moco.config import ModelSpec
from moco.models.base import GenRequest, SamplingParams
from moco.models.pool import ModelPool
from moco.training import DPOSettings, GRPOSettings, train_lora_dpo, train_lora_grpo
from moco.training.adapters import adapter_delta

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dpo_prefers_chosen_and_continues_from_a_previous_adapter(tiny_models, tmp_path):
    base = tiny_models[1]
    data = [([("user", f"Say a code {i}")], "XYZ", "abc") for i in range(8)]
    s = DPOSettings(max_steps=6, learning_rate=5e-3, batch_size=4, grad_accum=1, lora_r=8)
    res = train_lora_dpo(base, data, tmp_path / "it0", s)
    assert not res.reused and res.steps == 6
    assert res.margins[-1] > res.margins[0] + 0.3 and res.losses[-1] < res.losses[0] - 0.1
    delta0 = adapter_delta(res.adapter_dir)
    assert delta0 > 0  # LoRA B starts at zero: a positive delta means the weights changed
    again = train_lora_dpo(base, data, tmp_path / "it0", s)
    assert again.reused and again.losses == res.losses
    # next iteration: starts from it0 and its reference policy is it0 (margin 0 at the first step), ends elsewhere
    nxt = train_lora_dpo(base, data, tmp_path / "it1", DPOSettings(max_steps=3, learning_rate=5e-3, batch_size=4,
                                                                   grad_accum=1, lora_r=8), init_adapter=res.adapter_dir)
    assert nxt.margins[0] == 0.0 and nxt.margins[-1] > 0
    assert not (tmp_path / "it1" / "ref").exists()  # trl's frozen reference copy is not saved
    assert abs(adapter_delta(nxt.adapter_dir) - delta0) > 1e-4
    pool = ModelPool([ModelSpec(model=str(base)), ModelSpec(model=str(base), adapter=str(nxt.adapter_dir))])
    req = GenRequest((("user", "Say a code 3"),), SamplingParams(3, 0.0))
    assert pool.backend(0).generate([req])[0].text != pool.backend(1).generate([req])[0].text


def test_grpo_raises_a_verifiable_reward(tiny_models, tmp_path):
    base = tiny_models[2]
    prompts = [[("user", f"Write letters {i}")] for i in range(4)]
    seen_rows: list[int] = []

    def share(t: str) -> float:
        return sum(c in string.ascii_lowercase for c in t) / max(1, len(t))

    def reward(rows, texts):  # share of lower-case letters: a reward the random model can climb
        seen_rows.extend(rows)
        return [share(t) for t in texts]

    s = GRPOSettings(max_steps=24, learning_rate=2e-2, batch_size=8, num_generations=4, max_completion_length=12,
                     lora_r=8)
    res = train_lora_grpo(base, prompts, reward, "share-lower", tmp_path / "agg", s)
    assert not res.reused and res.steps == 24 and len(res.rewards) == 24
    first, last = sum(res.rewards[:5]) / 5, sum(res.rewards[-5:]) / 5
    assert last > first + 0.1, res.rewards
    assert adapter_delta(res.adapter_dir) > 0
    assert set(seen_rows) == {0, 1, 2, 3} and len(res.samples) == 24 * 8
    assert all(sm["reward"] == share(sm["text"]) for sm in res.samples)
    again = train_lora_grpo(base, prompts, reward, "share-lower", tmp_path / "agg", s)
    assert again.reused and again.rewards == res.rewards
    one_step = GRPOSettings(**{**s.__dict__, "max_steps": 1})
    assert not train_lora_grpo(base, prompts, reward, "other-reward", tmp_path / "agg", one_step).reused
