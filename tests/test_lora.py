"""Hand-written LoRA: exact start, merge == unmerged forward, PEFT-layout save/load."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cascadener import load_model
from cascadener.engine.kv import KVStore
from cascadener.qwen2.lora import (AdapterError, LoRAConfig, gated, inject, load_adapter, lora_layers, merge_all,
                                   merged, save_adapter, strip_adapters)


def randomise(model) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)


def test_fresh_adapter_changes_nothing_and_only_adapters_train(tiny_ckpt):
    base, model = load_model(tiny_ckpt), load_model(tiny_ckpt)
    inject(model, LoRAConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(model(ids), base(ids))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A" in n or ".lora_B" in n for n in trainable)
    assert len(trainable) == 2 * 7 * model.config.num_hidden_layers


def test_merge_equals_unmerged_and_unmerge_restores(tiny_ckpt):
    model = load_model(tiny_ckpt)
    base_w = model.layers[0].mlp.up_proj.weight.clone()
    inject(model, LoRAConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    randomise(model)
    ids = torch.tensor([[7, 8, 9, 10]])
    unmerged = model(ids)
    merge_all(model)
    assert torch.allclose(model(ids), unmerged, atol=1e-5)
    for m in lora_layers(model).values():
        m.unmerge()
    assert torch.allclose(model.layers[0].mlp.up_proj.base.weight, base_w, atol=1e-6)


def test_merged_runs_as_unmerged_and_leaves_a_bf16_base_bit_identical(tiny_ckpt):
    model = load_model(tiny_ckpt, torch.bfloat16)
    inject(model, LoRAConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    randomise(model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unmerged = model(ids)
    for _ in range(3):                                # as a training run evaluates again and again
        with torch.no_grad(), merged(model):
            assert all(m.merged for m in lora_layers(model).values())
            fast = model(ids)
    assert (fast - unmerged).abs().max() < 0.05 * unmerged.abs().max()     # bf16 rounding apart
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not any(m.merged for m in lora_layers(model).values())
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())


def test_peft_layout_round_trip(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    cfg = LoRAConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    inject(model, cfg)
    randomise(model)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    want = model(ids)
    save_adapter(model, cfg, tmp_path / "adapter", base=str(tiny_ckpt))
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert keys["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == (32, 4)
    peft_cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 4 and peft_cfg["lora_alpha"] == 16
    fresh = load_model(tiny_ckpt)
    load_adapter(fresh, tmp_path / "adapter", merge=True)
    assert not lora_layers(fresh)                      # merged and unwrapped: plain-speed inference
    assert torch.allclose(fresh(ids), want, atol=1e-5)


def test_bad_adapters_are_named(tiny_ckpt, tmp_path):
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_adapter(load_model(tiny_ckpt), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 4}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(AdapterError, match="not LORA"):
        load_adapter(load_model(tiny_ckpt), tmp_path)


@pytest.mark.parametrize("activation", [0, 1, 3, 5])
def test_a_gated_forward_is_the_base_reading_the_head_and_the_adapter_the_rest(tiny_ckpt, activation):
    """What training computes (one forward, the adapter gated off before the activation index) is
    what inference computes (the head through the base into the cache, the rest through the
    merged model): the logits after the head agree, so an activated adapter is served as trained."""
    base, model = load_model(tiny_ckpt), load_model(tiny_ckpt)
    inject(model, LoRAConfig(r=4, lora_alpha=8, lora_dropout=0.0, activated=True))
    randomise(model)
    ids = torch.tensor([[7, 8, 9, 10, 11, 12, 13]])
    gate = torch.arange(ids.shape[1]) >= activation
    with torch.no_grad(), gated(model, gate):
        trained = model(ids)
    with torch.no_grad():
        merge_all(model)
        strip_adapters(model)
        store = KVStore.for_model(base, 1, ids.shape[1])
        if activation:
            base.hidden_states(ids[:, :activation], store)
        served = model(ids[:, activation:], cache=store)
    torch.testing.assert_close(trained[:, activation:], served, atol=1e-4, rtol=1e-4)
    if activation:
        assert not torch.allclose(trained[:, activation:], model(ids)[:, activation:], atol=1e-3)   # the head matters
