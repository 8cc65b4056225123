"""The radix prefix cache: LRU order, prefill through it, and the model it belongs to. (Its tree
invariants are a state machine in tests/test_engine_kv.py; cache == no cache for every policy is
in tests/test_engine.py.)"""
from __future__ import annotations

import pytest
import torch

from cascadener import load_model
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.scheduler import PrefillCounter, prefill


def fake_kv(ids) -> torch.Tensor:
    """KV whose values encode (token, position), so a wrong piece is visible."""
    t = torch.tensor([[tok * 1000 + pos for pos, tok in enumerate(ids)]], dtype=torch.float32)
    return t.expand(2, 2, -1)[None, :, :, :, None].expand(1, 2, 2, len(ids), 1).clone()


def test_lru_eviction_keeps_the_budget():
    tree = PrefixCache(budget_tokens=6)
    tree.insert([1, 2, 3], fake_kv([1, 2, 3]))
    tree.insert([1, 2, 4], fake_kv([1, 2, 4]))
    tree.match([1, 2, 3])                                  # make [.., 3] recent
    tree.insert([5, 6, 7], fake_kv([5, 6, 7]))
    assert tree.size <= 6
    assert tree.match([1, 2, 3])[0] == 3 and tree.match([1, 2, 4])[0] == 2 and tree.match([5, 6, 7])[0] == 3


def test_warm_prefill_equals_cold_and_computes_only_the_rest(tiny_ckpt):
    model = load_model(tiny_ckpt)
    head = list(range(3, 40))
    prompts = [head + [50, 51], head + [60], head + [70, 71, 72]]
    _, cold = prefill(model, prompts)
    tree, counter = PrefixCache(), PrefillCounter()
    prefill(model, [head + [99]], prefix_cache=tree)
    _, warm = prefill(model, prompts, counter=counter, prefix_cache=tree)
    assert torch.allclose(cold, warm, atol=1e-4)
    assert counter.computed == 2 + 1 + 3 and counter.requested == sum(map(len, prompts))


def test_a_prefix_cache_refuses_a_second_model(tiny_ckpt):
    """Two engines on one tree would copy one model's keys into the other's prompts."""
    from cascadener import SamplingParams, generate, load_model
    a, b = load_model(tiny_ckpt), load_model(tiny_ckpt)
    tree = PrefixCache()
    generate(a, [[1, 2, 3, 4]], SamplingParams(max_new_tokens=2), prefix_cache=tree)
    generate(a, [[1, 2, 3, 5]], SamplingParams(max_new_tokens=2), prefix_cache=tree)
    with pytest.raises(ValueError, match="another model"):
        generate(b, [[1, 2, 3, 4]], SamplingParams(max_new_tokens=2), prefix_cache=tree)


def test_a_bfloat16_model_keeps_a_float32_cache_and_a_bfloat16_tree_exactly(tiny_ckpt):
    """The CPU cache holds float32 (attention computes in it) and the tree the model's dtype; the
    values are the model's bfloat16 ones either way, so the round trip loses nothing."""
    model = load_model(tiny_ckpt, torch.bfloat16)
    prompt = list(range(3, 30))
    tree = PrefixCache()
    cache, cold = prefill(model, [prompt], prefix_cache=tree)
    assert cache.k.dtype == torch.float32 and torch.equal(cache.k, cache.k.bfloat16().float())
    n, pieces = tree.match(prompt)
    assert n == len(prompt) and all(p.dtype == torch.bfloat16 for p in pieces)
    _, warm = prefill(model, [prompt + [40]], prefix_cache=tree)
    _, fresh = prefill(model, [prompt + [40]])
    assert (warm - fresh).abs().max() <= 0.02 * fresh.abs().max()     # bf16 GEMMs of another shape
