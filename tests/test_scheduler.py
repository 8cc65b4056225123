"""Continuous batching (cascadener.engine.scheduler) and the cache moves it relies on (place, release).

In float32 a row's numbers do not depend on its neighbours beyond ~1e-6, so greedy outputs under
the scheduler must equal each prompt generated alone, whatever the batch size and however rows
change hands. The stop token and budget are varied per request so rows leave at different steps.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascadener import SamplingParams, generate, load_model, load_tokenizer
from cascadener.qwen2.cache import StaticKVCache
from cascadener.engine.generation import PrefillCounter, prefill
from cascadener.engine.prefix_cache import PrefixCache, row_kv
from cascadener.engine.scheduler import generate_continuous

TEXTS = ["Kobe Bryant played", "Angela", "The European Union signed a deal with Japan.", "東京は", "person, location",
         "## marks ## entities", "Berlin in June"]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_model(tiny_ckpt, torch.float32), load_tokenizer(tiny_ckpt)


def alone(model, prompts, params):
    return [generate(model, [p], q)[0] for p, q in zip(prompts, params)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 4), budgets=st.lists(st.integers(1, 14), min_size=len(TEXTS), max_size=len(TEXTS)),
       stop=st.sampled_from([(), (5,), (17, 40)]))
def test_greedy_equals_each_prompt_alone(tiny, batch, budgets, stop):
    model, tok = tiny
    prompts = [tok.encode(t) for t in TEXTS]
    params = [SamplingParams(max_new_tokens=b, stop_ids=stop, vocab_limit=tok.vocab_size) for b in budgets]
    got = generate_continuous(model, prompts, params, batch_size=batch)
    want = alone(model, prompts, params)
    assert [g.tokens for g in got] == [w.tokens for w in want]
    assert [g.finish_reason for g in got] == [w.finish_reason for w in want]


def test_long_runs_compact_the_dead_slots_and_stay_exact(tiny, monkeypatch):
    """Sequences outlive the first buffer (prompt + 64 slots): compaction must kick in, and
    change nothing."""
    model, tok = tiny
    compactions = []
    original = StaticKVCache.compact
    monkeypatch.setattr(StaticKVCache, "compact", lambda self: (compactions.append(self.length), original(self)))
    prompts = [tok.encode(t) for t in TEXTS]
    params = [SamplingParams(max_new_tokens=30 + 7 * i, vocab_limit=tok.vocab_size) for i in range(len(prompts))]
    got = generate_continuous(model, prompts, params, batch_size=2)
    assert compactions
    assert [g.tokens for g in got] == [w.tokens for w in alone(model, prompts, params)]


def test_a_seeded_request_samples_the_same_whatever_the_batch(tiny):
    model, tok = tiny
    prompts = [tok.encode(t) for t in TEXTS]
    params = [SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=100 + i, repetition_penalty=1.3,
                             vocab_limit=tok.vocab_size) for i in range(len(prompts))]
    runs = [[g.tokens for g in generate_continuous(model, prompts, params, batch_size=b)] for b in (1, 3, 8)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0] == [g.tokens for g in alone(model, prompts, params)]


def test_rows_are_reused_and_repeated_prompts_hit_the_prefix_cache(tiny):
    model, tok = tiny
    prompts = [tok.encode(TEXTS[2])] * 3 + [tok.encode(TEXTS[0])] * 3
    counter, tree = PrefillCounter(), PrefixCache()
    params = SamplingParams(max_new_tokens=6, vocab_limit=tok.vocab_size)
    out = generate_continuous(model, prompts, params, batch_size=2, counter=counter, prefix_cache=tree)
    assert counter.requested == sum(map(len, prompts))
    assert counter.computed <= len(prompts[0]) + len(prompts[3]) + 4     # one token per repeat at most
    assert out[0].tokens == out[1].tokens == out[2].tokens


def test_place_right_aligns_a_sequence_and_keeps_its_numbers(tiny):
    model, tok = tiny
    a, b = tok.encode(TEXTS[2]), tok.encode(TEXTS[1])
    src, _ = prefill(model, [a, b], 0)
    dst = StaticKVCache.for_model(model, 2, 4)
    dst.place(1, [row_kv(src, 1)])                    # short one first: length = len(b)
    head, tail = row_kv(src, 0).split([3, len(a) - 3], dim=3)
    dst.place(0, [head, tail])                        # a longer one, in two pieces, pads every row on the left
    assert dst.length == len(a)
    assert dst.valid[0].sum() == len(a) and dst.valid[1, len(a) - len(b):len(a)].all()
    assert dst.valid[1].sum() == len(b)
    assert dst.next_pos.tolist() == [len(a), len(b)]
    assert torch.equal(dst.k[:, 0, :, :len(a)], src.k[:, 0, :, :len(a)])
    assert torch.equal(dst.v[:, 1, :, len(a) - len(b):len(a)], src.v[:, 1, :, src.length - len(b):src.length])
    dst.release(1)
    assert not dst.valid[1].any() and dst.next_pos[1] == 0


def test_bad_requests_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_continuous(model, [[1, 2], []], SamplingParams())
    with pytest.raises(ValueError, match="2 sampling parameters for 1 prompts"):
        generate_continuous(model, [[1, 2]], [SamplingParams()] * 2)
    assert generate_continuous(model, [], SamplingParams()) == []
