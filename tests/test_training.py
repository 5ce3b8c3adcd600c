"""LoRA SFT: the loss goes down, the adapter changes what the model says, and a resumed run reuses it."""
from __future__ import annotations

from moco.config import ModelSpec
from moco.models.base import GenRequest, SamplingParams
from moco.models.pool import ModelPool
from moco.training import SFTSettings, train_lora_sft


def test_lora_sft_learns_a_reply_and_is_reused(tiny_models, tmp_path):
    base = tiny_models[0]
    data = [([("user", f"Say the code {i}")], "XYZ") for i in range(8)]
    settings = SFTSettings(max_steps=60, learning_rate=1e-2, batch_size=8, lora_r=8, seed=0)
    res = train_lora_sft(base, data, tmp_path / "adapter", settings)
    assert not res.reused and res.steps == 60
    assert res.losses[-1] < res.losses[0] * 0.4
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    again = train_lora_sft(base, data, tmp_path / "adapter", settings)
    assert again.reused and again.losses == res.losses
    retrained = train_lora_sft(base, data[:4], tmp_path / "adapter", settings)
    assert not retrained.reused
    # the trained adapter is the model used afterwards: loaded through the pool like any model
    pool = ModelPool([ModelSpec(model=str(base)), ModelSpec(model=str(base), adapter=str(tmp_path / "adapter"))])
    req = GenRequest((("user", "Say the code 3"),), SamplingParams(4, 0.0))
    before = pool.backend(0).generate([req])[0].text
    after = pool.backend(1).generate([req])[0].text
    assert after.startswith("XYZ") and not before.startswith("XYZ")  # tiny models never emit EOS
    assert pool.fingerprint(pool.handles[0]) != pool.fingerprint(pool.handles[1])
