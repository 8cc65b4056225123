"""Free generation: the sampler's rules, stops, shared prefill, and greedy continuations equal to the
reference. (Batched == alone and cache == no cache: tests/test_engine.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from cascadener import SamplingParams, generate, load_model, load_tokenizer
from cascadener.engine.sampling import apply_repetition_penalty, distribution, sample
from cascadener.engine.scheduler import PrefillCounter, shared_prefixes

REAL_GOLDEN = Path(__file__).parent / "fixtures" / "real_golden.json"
REAL_PROMPTS = [
    "Describe Paris in three sentences.",
    "Write a Python function that reverses a string.",
    "请详细介绍一下北京的历史和文化。",
    "東京について三つの文で説明してください。",
    "Name three rivers in Europe and describe each one.",
    "Explain what named entity recognition is, with an example about Kobe Bryant and the Lakers.",
]


def real_prompt_ids(tok) -> list[list[int]]:
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}])) for p in REAL_PROMPTS]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_model(tiny_ckpt, torch.float32), load_tokenizer(tiny_ckpt)


def test_greedy_matches_a_plain_full_recompute_loop(tiny):
    """The cached loop against nanoGPT's reference: recompute the whole sequence every step."""
    model, tok = tiny
    ids = tok.encode("Berlin in June")
    seq = list(ids)
    for _ in range(10):
        seq.append(int(model(torch.tensor([seq]))[0, -1, :tok.vocab_size].argmax()))
    got = generate(model, [ids], SamplingParams(max_new_tokens=10, vocab_limit=tok.vocab_size))[0]
    assert got.tokens == seq[len(ids):]


def test_stop_tokens_end_rows_independently(tiny):
    model, tok = tiny
    prompts = [tok.encode("Kobe"), tok.encode("Paris and Berlin")]
    free = generate(model, prompts, SamplingParams(max_new_tokens=8))
    stop = free[0].tokens[2]
    got = generate(model, prompts, SamplingParams(max_new_tokens=8, stop_ids=[stop]))
    assert got[0].tokens == free[0].tokens[:free[0].tokens.index(stop)] and got[0].finish_reason == "stop"
    expect1 = free[1].tokens[:free[1].tokens.index(stop)] if stop in free[1].tokens else free[1].tokens
    assert got[1].tokens == expect1


def test_sampling_is_seeded_and_respects_vocab_limit(tiny):
    model, tok = tiny
    p = SamplingParams(max_new_tokens=16, temperature=1.5, seed=7, vocab_limit=100)
    a = generate(model, [tok.encode("Kobe")] * 3, p)
    b = generate(model, [tok.encode("Kobe")] * 3, p)
    assert [g.tokens for g in a] == [g.tokens for g in b]
    assert all(t < 100 for g in a for t in g.tokens)
    assert len({tuple(g.tokens) for g in a}) > 1          # rows sample independently


def test_top_k_one_is_greedy():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    p = SamplingParams(temperature=0.9, top_k=1, seed=0)
    g = torch.Generator().manual_seed(0)
    assert [sample(row, p, g) for row in logits] == logits.argmax(-1).tolist()


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = SamplingParams(temperature=1.0, top_p=0.7)
    g = torch.Generator().manual_seed(0)
    drawn = {sample(logits, p, g) for _ in range(300)}
    assert drawn == {0, 1}


def test_top_k_then_top_p_on_what_top_k_left():
    p = SamplingParams(temperature=1.0, top_k=3, top_p=0.7)
    probs = distribution(torch.tensor([0.0, 3.0, 2.0, 1.0]), p)
    top3 = torch.softmax(torch.tensor([3.0, 2.0, 1.0]), -1)      # 0.665, 0.245, 0.090
    assert torch.allclose(probs, torch.tensor([0.0, top3[0] / top3[:2].sum(), top3[1] / top3[:2].sum(), 0.0]))


def test_a_draft_is_kept_with_its_probability():
    """The rejection rule with a deterministic draft: the emitted token is distributed as p."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    p = SamplingParams(temperature=1.0)
    g = torch.Generator().manual_seed(0)
    n = 4000
    drawn = [sample(logits, p, g, draft=1) for _ in range(n)]
    assert all(abs(drawn.count(t) / n - q) < 0.03 for t, q in enumerate([0.5, 0.3, 0.2]))


def test_repetition_penalty_follows_hf_semantics():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0]]))
    hf = pytest.importorskip("transformers")
    proc = hf.RepetitionPenaltyLogitsProcessor(1.3)
    x = torch.randn(2, 30, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 5, 5, 9], [0, 2, 29, 3]])
    seen = torch.zeros(2, 30, dtype=torch.bool).scatter(1, ids, True)
    assert torch.allclose(apply_repetition_penalty(x, seen, 1.3), proc(ids, x.clone()))


@pytest.mark.real
def test_real_greedy_continuations_match_reference(real_ckpt, real_model_fp32):
    """32 greedy tokens, float32, batched with left padding, against HF's own greedy generate()."""
    tok = load_tokenizer(real_ckpt)
    golden = json.loads(REAL_GOLDEN.read_text())
    assert [g["prompt"] for g in golden] == REAL_PROMPTS
    got = generate(real_model_fp32, real_prompt_ids(tok),
                   SamplingParams(max_new_tokens=32, stop_ids=tok.stop_ids, vocab_limit=tok.vocab_size))
    for g, ref in zip(got, golden):
        expected = [t for t in ref["continuation"] if t not in tok.stop_ids]
        assert g.tokens == expected, (ref["prompt"], tok.decode(g.tokens), tok.decode(expected))


def test_shared_prefix_is_computed_once(tiny):
    model, tok = tiny
    head = tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    prompts = [head + tok.encode(t) for t in ("Kobe", "Angela Merkel visited", "Paris")]
    params = SamplingParams(max_new_tokens=8, vocab_limit=tok.vocab_size)
    counter = PrefillCounter()
    generate(model, prompts, params, counter=counter)
    assert counter.requested == sum(map(len, prompts))
    assert counter.computed == len(head) + sum(len(p) - len(head) for p in prompts)


def test_prefixes_shared_by_some_rows_are_computed_once_each(tiny):
    """Two sentences under one system turn, several mentions each: the system turn once, each
    sentence once, then only what is each prompt's own."""
    model, tok = tiny
    head = tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    sentences = [tok.encode(" Angela Merkel visited Paris and Berlin in June."),
                 tok.encode(" The European Union signed a deal with Japan.")]
    tails = [tok.encode(t) for t in (" Angela", " Paris", " Berlin")]
    prompts = [head + s + t for s in sentences for t in tails]
    params = SamplingParams(max_new_tokens=4, vocab_limit=tok.vocab_size)
    counter = PrefillCounter()
    generate(model, prompts, params, counter=counter)
    common = [len(head) + len(s) + _common_len(tails) for s in sentences]
    assert counter.computed == len(head) + sum(c - len(head) for c in common) + sum(
        len(p) - c for p, c in zip(prompts, [c for c in common for _ in tails]))


def _common_len(seqs):
    n = min(map(len, seqs))
    return next((i for i in range(n) if len({tuple(s[:i + 1]) for s in seqs}) > 1), n)


@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=8), st.integers(1, 4))
def test_shared_prefixes_are_maximal_strict_and_shared(prompts, min_shared):
    found = shared_prefixes(prompts, min_shared)
    for p in found:
        assert len(p) >= min_shared
        users = [q for q in prompts if len(q) > len(p) and q[:len(p)] == p]
        assert len(users) >= 2                                      # shared, and strictly shorter
        assert not any(q != p and q[:len(p)] == p for q in found)   # maximal
    for i, a in enumerate(prompts):                                 # complete
        for b in prompts[i + 1:]:
            n = _common_len([a, b])
            n = min(n, len(a) - 1, len(b) - 1)
            if n >= min_shared:
                assert any(len(p) >= n and p[:n] == a[:n] for p in found)
