"""The radix prefix cache: tree operations, and reuse that never changes what the model computes."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascadener import load_model
from cascadener.engine.generation import PrefillCounter, prefill
from cascadener.engine.prefix_cache import PrefixCache


def fake_kv(ids) -> torch.Tensor:
    """KV whose values encode (token, position), so a wrong piece is visible."""
    t = torch.tensor([[tok * 1000 + pos for pos, tok in enumerate(ids)]], dtype=torch.float32)
    return t.expand(2, 2, -1)[None, :, :, :, None].expand(1, 2, 2, len(ids), 1).clone()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=8), st.lists(st.integers(0, 3), max_size=8))
def test_match_returns_the_longest_inserted_prefix_and_its_kv(prompts, query):
    tree = PrefixCache(budget_tokens=10_000)
    for p in prompts:
        tree.insert(p, fake_kv(p))
    n, pieces = tree.match(query)
    best = max((next((i for i in range(min(len(p), len(query))) if p[i] != query[i]), min(len(p), len(query)))
                for p in prompts), default=0)
    assert n == best
    got = torch.cat(pieces, dim=3) if pieces else torch.empty(1, 2, 2, 0, 1)
    assert torch.equal(got, fake_kv(query[:n])) if n else got.shape[3] == 0


def test_lru_eviction_keeps_the_budget():
    tree = PrefixCache(budget_tokens=6)
    tree.insert([1, 2, 3], fake_kv([1, 2, 3]))
    tree.insert([1, 2, 4], fake_kv([1, 2, 4]))
    tree.match([1, 2, 3])                                  # make [.., 3] recent
    tree.insert([5, 6, 7], fake_kv([5, 6, 7]))
    assert tree.size <= 6
    assert tree.match([1, 2, 3])[0] == 3 and tree.match([1, 2, 4])[0] == 2 and tree.match([5, 6, 7])[0] == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=12), min_size=1, max_size=40))
def test_eviction_keeps_the_budget_the_newest_prompt_and_what_is_left_exact(prompts):
    """With the slack (the tree is trimmed to 15/16 of the budget) it still never exceeds the
    budget, the prompt just inserted survives whole, and every match returns the right KV."""
    tree = PrefixCache(budget_tokens=32)
    for p in prompts:
        tree.insert(p, fake_kv(p))
        assert tree.size <= 32 and tree.size == sum(len(n.tokens) for n in tree._nodes())
        assert tree.match(p)[0] == len(p)
    for p in prompts:
        n, pieces = tree.match(p)
        assert torch.equal(torch.cat(pieces, dim=3), fake_kv(p[:n])) if n else not pieces


def test_warm_prefill_equals_cold_and_computes_only_the_rest(tiny_ckpt):
    model = load_model(tiny_ckpt)
    head = list(range(3, 40))
    prompts = [head + [50, 51], head + [60], head + [70, 71, 72]]
    _, cold = prefill(model, prompts, 4)
    tree, counter = PrefixCache(), PrefillCounter()
    prefill(model, [head + [99]], 4, prefix_cache=tree)
    _, warm = prefill(model, prompts, 4, counter=counter, prefix_cache=tree)
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
    cache, cold = prefill(model, [prompt], 0, prefix_cache=tree)
    assert cache.k.dtype == torch.float32 and torch.equal(cache.k, cache.k.bfloat16().float())
    n, pieces = tree.match(prompt)
    assert n == len(prompt) and all(p.dtype == torch.bfloat16 for p in pieces)
    _, warm = prefill(model, [prompt + [40]], 0, prefix_cache=tree)
    _, fresh = prefill(model, [prompt + [40]], 0)
    assert (warm - fresh).abs().max() <= 0.02 * fresh.abs().max()     # bf16 GEMMs of another shape
