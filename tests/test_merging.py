"""Merge arithmetic against hand-computed tensors: average, velocities, TIES, DARE, extrapolation, LoRA mixes,
dtypes; and the workbench (candidates written in place, saved folder loads with the Auto classes)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from moco.merging import Extrapolate, Linear, LoraAdapter, LoraMix, LoraSource, Source, TaskArithmetic, Workbench, average
from moco.merging import tensors as T


def src(name, **tensors):
    return Source(name, f"fp-{name}", {k: torch.tensor(v) for k, v in tensors.items()})


def test_linear_average_and_unnormalised_velocity():
    a = src("a", w=[[1.0, 2.0], [3.0, 4.0]])
    b = src("b", w=[[5.0, 6.0], [7.0, 8.0]])
    assert torch.equal(Linear([a, b], [0.25, 0.75]).tensor("w"), torch.tensor([[4.0, 5.0], [6.0, 7.0]]))
    assert torch.equal(average([a, b]).tensor("w"), torch.tensor([[3.0, 4.0], [5.0, 6.0]]))
    # a velocity (weights summing to 0) is the plain difference: no renormalisation by the weight sum
    assert torch.equal(Linear([a, b], [-1.0, 1.0]).tensor("w"), torch.full((2, 2), 4.0))
    assert torch.equal(Linear([a, b], [2.0, 2.0]).tensor("w"), torch.tensor([[12.0, 16.0], [20.0, 24.0]]))
    assert torch.equal(Linear([a, b], [2.0, 2.0], normalize=True).tensor("w"), torch.tensor([[3.0, 4.0], [5.0, 6.0]]))
    with pytest.raises(ValueError, match="sum to zero"):
        Linear([a, b], [-1.0, 1.0], normalize=True).tensor("w")
    assert average([a]) is a


def test_dtypes_compute_in_fp32_and_round_once():
    vals = [1.0, 1.0, 1.03125]  # exactly representable in bf16
    bf = [Source(f"m{i}", f"f{i}", {"w": torch.tensor([v], dtype=torch.bfloat16), "n": torch.tensor([7])})
          for i, v in enumerate(vals)]
    out = Linear(bf, [1 / 3] * 3).tensor("w")
    assert out.dtype == torch.float32
    expected32 = torch.tensor([sum(vals) / 3], dtype=torch.float32)
    assert torch.allclose(out, expected32, atol=1e-7)
    third = torch.tensor(1 / 3, dtype=torch.bfloat16)
    naive = sum(torch.tensor([v], dtype=torch.bfloat16) * third for v in vals)  # bf16 at every step
    assert naive.item() == 1.015625 and expected32.to(torch.bfloat16).item() == 1.0078125  # why we upcast
    assert torch.equal(Linear(bf, [0.5, 0.25, 0.25]).tensor("n"), torch.tensor([7]))  # integer buffers pass through
    f64 = Source("d", "fd", {"w": torch.tensor([1.0], dtype=torch.float64)})
    assert Linear([f64, f64], [0.5, 0.5]).tensor("w").dtype == torch.float64


def test_ties_sign_election_and_disjoint_mean_by_hand():
    base = [1.0, 1.0, 1.0, 1.0]
    taus = [[2.0, -1.0, 3.0, 0.0], [-1.0, -2.0, 1.0, 0.0], [-2.0, 4.0, -1.0, 0.0]]
    b = src("base", w=base)
    kids = [src(f"m{i}", w=[x + y for x, y in zip(base, t)]) for i, t in enumerate(taus)]
    # masses [-1, 1, 3, 0] -> signs [-, +, +, + (0 counts as +)]; agreeing entries averaged
    ties = TaskArithmetic(kids, b, [1, 1, 1], consensus="sign").tensor("w")
    assert torch.allclose(ties, torch.tensor([-1.5, 4.0, 2.0, 0.0]) + 1.0)
    summed = TaskArithmetic(kids, b, [1, 1, 1], consensus="sign", normalize=False).tensor("w")
    assert torch.allclose(summed, torch.tensor([-3.0, 4.0, 4.0, 0.0]) + 1.0)
    assert torch.allclose(T.elect_sign(torch.tensor(taus)), torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    # TIES with magnitude trimming (keep the top half of each task vector)
    taus2 = [[2.0, -1.0, 3.0, 0.0], [-1.0, -2.0, 1.5, 0.0], [-2.0, 4.0, -1.0, 0.0]]
    kids2 = [src(f"n{i}", w=[x + y for x, y in zip(base, t)]) for i, t in enumerate(taus2)]
    # trimmed: [2,0,3,0], [0,-2,1.5,0], [-2,4,0,0]; masses [0, 2, 4.5, 0] -> all +
    trimmed = TaskArithmetic(kids2, b, [1, 1, 1], sparsify="magnitude", density=0.5, consensus="sign").tensor("w")
    assert torch.allclose(trimmed, torch.tensor([2.0, 4.0, 2.25, 0.0]) + 1.0)
    # plain task arithmetic: base + λ Σ w τ
    ta = TaskArithmetic(kids, b, [0.5, 0.5, 1.0], normalize=False, scale=2.0).tensor("w")
    assert torch.allclose(ta, torch.tensor(base) + 2 * (0.5 * torch.tensor(taus[0]) + 0.5 * torch.tensor(taus[1]) + torch.tensor(taus[2])))


def test_weighted_ties_uses_weights_in_election_and_mean():
    b = src("base", w=[0.0])
    kids = [src("p", w=[1.0]), src("q", w=[-1.0])]
    # weights 3 and 1: weighted mass 3 - 1 > 0, only p agrees; disjoint mean = 3*1/3 = 1
    assert torch.allclose(TaskArithmetic(kids, b, [3, 1], consensus="sign").tensor("w"), torch.tensor([1.0]))
    assert torch.allclose(TaskArithmetic(kids, b, [1, 3], consensus="sign").tensor("w"), torch.tensor([-1.0]))


def test_dare_drop_rate_rescale_and_seed():
    delta = torch.full((200_000,), 0.5)
    g = lambda s: T.seeded_generator(s, "layer.weight", "m0")  # noqa: E731
    out = T.dare(delta, 0.3, g(7))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.005  # the density is applied
    assert torch.allclose(out[kept], torch.tensor(0.5 / 0.3))  # survivors rescaled by 1/density exactly
    assert torch.equal(out, T.dare(delta, 0.3, g(7)))  # same seed, same mask
    assert not torch.equal(out, T.dare(delta, 0.3, g(8)))
    assert abs(out.mean().item() - 0.5) < 0.01  # the expected task vector is preserved
    assert torch.equal(T.dare(delta, 1.0, g(7)), delta)
    with pytest.raises(ValueError):
        T.dare(delta, 0.0, g(7))
    # inside DARE-TIES: the mask depends on (seed, tensor, model), not on the model's position
    base = Source("base", "fb", {"w": torch.zeros(5000)})
    m1 = Source("m1", "f1", {"w": torch.full((5000,), 1.0)})
    m2 = Source("m2", "f2", {"w": torch.full((5000,), 2.0)})
    one = TaskArithmetic([m1, m2], base, [0.5, 0.5], sparsify="dare", density=0.5, consensus="sign", seed=3)
    swapped = TaskArithmetic([m2, m1], base, [0.5, 0.5], sparsify="dare", density=0.5, consensus="sign", seed=3)
    assert torch.equal(one.tensor("w"), swapped.tensor("w"))
    w = one.tensor("w")
    # entries: both kept -> mean(2, 4) = 3; only m1 -> 2; only m2 -> 4; none -> 0 (rescaled by 1/0.5)
    assert set(torch.unique(w).tolist()) == {0.0, 2.0, 3.0, 4.0}
    assert abs((w == 0).float().mean().item() - 0.25) < 0.03
    assert one.digest() != TaskArithmetic([m1, m2], base, [0.5, 0.5], sparsify="dare", density=0.5,
                                          consensus="sign", seed=4).digest()


def test_extrapolation_by_hand():
    strong, weak = src("s", w=[1.0, 2.0]), src("w", w=[0.0, 4.0])
    assert torch.allclose(Extrapolate(strong, weak, 0.5).tensor("w"), torch.tensor([1.5, 1.0]))
    assert torch.allclose(Extrapolate(strong, weak, 0.0).tensor("w"), torch.tensor([1.0, 2.0]))
    top = average([src("a", w=[2.0]), src("b", w=[4.0])])
    bottom = average([src("c", w=[0.0]), src("d", w=[1.0])])
    assert torch.allclose(Extrapolate(top, bottom, 0.3).tensor("w"), torch.tensor([3.0 + 0.3 * (3.0 - 0.5)]))


def _adapter(path, a, b, r=2, alpha=4):
    path.mkdir(parents=True, exist_ok=True)
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{key}.lora_A.weight": torch.tensor(a), f"{key}.lora_B.weight": torch.tensor(b)},
              str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                                                          "base_model_name_or_path": "base"}))
    return LoraAdapter.load(path)


def test_lora_delta_and_factor_mixes_by_hand(tmp_path):
    a1 = _adapter(tmp_path / "a1", [[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]])
    a2 = _adapter(tmp_path / "a2", [[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    key = "model.layers.0.self_attn.q_proj.weight"
    assert a1.scaling == 2.0
    assert torch.equal(a1.delta(key), torch.tensor([[2.0, 4.0], [6.0, 8.0]]))
    assert a1.delta("model.layers.0.mlp.up_proj.weight") is None
    base = Source("base", "fb", {key: torch.ones(2, 2), "other": torch.tensor([5.0])})
    delta = LoraMix(base, [a1, a2], ["a1", "a2"], ["f1", "f2"], [0.5, 2.0], mode="delta")
    assert torch.equal(delta.tensor(key), 1.0 + torch.tensor([[1.0, 6.0], [7.0, 4.0]]))  # 0.5·Δ1 + 2·Δ2
    factors = LoraMix(base, [a1, a2], ["a1", "a2"], ["f1", "f2"], [0.5, 2.0], mode="factors")
    # (0.5 B1 + 2 B2)(0.5 A1 + 2 A2)·2 = [[2.5,1],[1.5,4]] @ [[0.5,2],[2,0.5]] · 2
    assert torch.equal(factors.tensor(key), 1.0 + torch.tensor([[6.5, 11.0], [17.5, 10.0]]))
    assert torch.equal(delta.tensor("other"), torch.tensor([5.0]))
    assert delta.digest() != factors.digest()
    # a LoRA source is base + its own delta; a delta mix with one-hot weights is that source
    s1 = LoraSource("a1", "f1", base, a1)
    one_hot = LoraMix(base, [a1, a2], ["a1", "a2"], ["f1", "f2"], [1.0, 0.0])
    assert torch.equal(s1.tensor(key), one_hot.tensor(key))
    assert torch.equal(s1.tensor(key), 1.0 + torch.tensor([[2.0, 4.0], [6.0, 8.0]]))


def test_lora_adapter_rejects_what_it_cannot_represent(tmp_path):
    from moco.errors import ModelError

    p = tmp_path / "dora"
    _adapter(p, [[1.0]], [[1.0]], r=1, alpha=1)
    cfg = json.loads((p / "adapter_config.json").read_text())
    (p / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ModelError, match="DoRA"):
        LoraAdapter.load(p)
    q = tmp_path / "emb"
    q.mkdir()
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": torch.ones(1, 2)}, str(q / "adapter_model.safetensors"))
    (q / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1, "lora_alpha": 1}))
    with pytest.raises(ModelError, match="not supported"):
        LoraAdapter.load(q)


def test_lora_source_equals_peft_merge(tiny_models, tmp_path):
    """Our base + s·B·A equals what peft's merge_and_unload produces (how the pool loads an adapter)."""
    from moco.models.hf import HFBackend
    from moco.training.sft import SFTSettings, train_lora_sft

    data = [([("user", f"say {i}")], f"ok {i}") for i in range(8)]
    ad = train_lora_sft(tiny_models[0], data, tmp_path / "ad", SFTSettings(max_steps=3, batch_size=4, learning_rate=5e-2)).adapter_dir
    base = HFBackend(str(tiny_models[0]), fingerprint="b")
    merged = HFBackend(str(tiny_models[0]), fingerprint="m", adapter=str(ad))
    src_lora = LoraSource("ad", "fa", Source("base", "fb", base.model.state_dict()), LoraAdapter.load(ad))
    changed = 0
    for name, p in merged.model.named_parameters():
        ours = src_lora.tensor(name)
        assert torch.allclose(ours, p, atol=1e-6), name
        changed += int(not torch.equal(p, base.model.state_dict()[name]))
    assert changed >= 7  # every adapted linear layer moved


def test_workbench_writes_candidates_in_place_and_saves_an_auto_loadable_folder(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    from moco.models.base import GenRequest, SamplingParams
    from moco.models.hf import HFBackend

    b0 = HFBackend(str(tiny_models[0]), fingerprint="t0")
    b1 = HFBackend(str(tiny_models[1]), fingerprint="t1")
    s0 = Source("t0", "t0", b0.model.state_dict())
    s1 = Source("t1", "t1", b1.model.state_dict())
    bench = Workbench(b0)
    assert bench.backend.model is not b0.model
    mix = Linear([s0, s1], [0.3, 0.7])
    c0, cmix = bench.candidate(s0), bench.candidate(mix)
    assert c0.fingerprint != cmix.fingerprint
    req = [GenRequest((("user", "hello there"),), SamplingParams(10, 0.0), 1)]
    assert c0.generate(req)[0].text == b0.generate(req)[0].text  # a candidate of one source is that model
    mixed_text = cmix.generate(req)[0].text
    assert bench.merges == 2
    cmix.generate(req)
    assert bench.merges == 2  # already loaded: not merged again
    for name, p in b0.model.named_parameters():  # the source model was not touched
        assert torch.equal(p, s0.state[name])
    out = bench.save(mix, tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for name, p in loaded.named_parameters():
        expected = 0.3 * b0.model.state_dict()[name] + 0.7 * b1.model.state_dict()[name]
        assert torch.allclose(p, expected, atol=1e-6), name
    again = HFBackend(str(out), fingerprint="saved")
    assert again.generate(req)[0].text == mixed_text
    assert json.loads((out / "merge_recipe.json").read_text())["digest"] == mix.digest()


def test_workbench_in_bf16_rounds_the_fp32_result_once(tiny_models):
    from moco.models.hf import HFBackend

    b0 = HFBackend(str(tiny_models[0]), fingerprint="t0")
    b1 = HFBackend(str(tiny_models[1]), fingerprint="t1")
    bench = Workbench(HFBackend(str(tiny_models[0]), fingerprint="bf", dtype="bfloat16"))
    assert bench.dtype == "bfloat16"
    mix = Linear([Source("a", "a", b0.model.state_dict()), Source("b", "b", b1.model.state_dict())], [0.5, 0.5])
    bench.load(mix)
    for name, p in bench.params.items():
        exact = 0.5 * b0.model.state_dict()[name] + 0.5 * b1.model.state_dict()[name]
        assert p.dtype == torch.bfloat16 and torch.equal(p, exact.to(torch.bfloat16)), name
