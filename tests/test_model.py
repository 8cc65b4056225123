"""The decoder's math: against Hugging Face transformers (optional oracle) and golden numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascadener import load_model
from cascadener.engine.kv import KVStore

GOLDEN = Path(__file__).parent / "fixtures" / "tiny_golden.json"
GOLDEN_IDS = [1, 17, 250, 33, 399, 5, 88, 120, 7, 301, 42, 2]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_model(tiny_ckpt, torch.float32)


def hf_model(path, dtype=torch.float32):
    transformers = pytest.importorskip("transformers", reason="transformers is the optional parity oracle")
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def test_tiny_logits_match_golden(tiny):
    """Golden logits recorded once with HF transformers (tests/fixtures/make_golden.py)."""
    golden = json.loads(GOLDEN.read_text())
    assert golden["ids"] == GOLDEN_IDS
    ours = tiny(torch.tensor([GOLDEN_IDS]))[0]
    assert (ours - torch.tensor(golden["logits"])).abs().max() <= 1e-4


@pytest.mark.parametrize("which", ["tiny_ckpt", "tiny_untied_ckpt"])
def test_tiny_logits_match_hf(which, request):
    path = request.getfixturevalue(which)
    ref = hf_model(path)
    ours = load_model(path, torch.float32)
    ids = torch.randint(0, 400, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (ours(ids) - ref(ids).logits).abs().max() <= 1e-4


def test_left_padded_batch_matches_hf(tiny_ckpt, tiny):
    ref = hf_model(tiny_ckpt)
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7]).bool()
    with torch.inference_mode():
        theirs = ref(ids, attention_mask=mask.long()).logits
        ours = tiny(ids, pad_mask=mask)
    assert (ours[mask] - theirs[mask]).abs().max() <= 1e-4


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 399), min_size=2, max_size=24), st.integers(1, 5))
def test_incremental_decoding_equals_full_forward(tiny, ids, chunk):
    """Feeding the sequence in chunks through the cache gives the logits of one full pass."""
    x = torch.tensor([ids])
    full = tiny(x)
    cache = KVStore.for_model(tiny, 1, len(ids))
    parts = [tiny(x[:, i:i + chunk], cache=cache) for i in range(0, len(ids), chunk)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(3, 399), min_size=1, max_size=12), min_size=1, max_size=4))
def test_padded_batch_equals_each_alone(tiny, rows):
    """A left-padded batch, prefilled and then decoded through the cache, equals each row alone."""
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    cache = KVStore.for_model(tiny, len(rows), width + 1)
    batch = tiny(ids, cache=cache, pad_mask=mask)
    step = tiny(torch.full((len(rows), 1), 7), cache=cache)[:, 0]
    for i, r in enumerate(rows):
        alone = tiny(torch.tensor([r + [7]]))[0]
        assert torch.allclose(batch[i, width - len(r):], alone[:-1], atol=1e-4, rtol=1e-4)
        assert torch.allclose(step[i], alone[-1], atol=1e-4, rtol=1e-4)
        assert torch.isfinite(batch[i]).all()


def test_padding_never_reaches_a_linear_layer(tiny):
    """Ragged rows: every linear (attention projections, MLP, LM head aside) sees the real tokens
    only, and their results are those of the rows run alone."""
    rows = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
             for m in tiny.modules() if isinstance(m, torch.nn.Linear) and m is not tiny.lm_head]
    try:
        hidden = tiny.hidden_states(ids, pad_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    assert seen and set(seen) == {int(mask.sum())}
    for i, r in enumerate(rows):
        alone = tiny.hidden_states(torch.tensor([r]))[0]
        assert torch.allclose(hidden[i, width - len(r):], alone, atol=1e-5, rtol=1e-5)


def test_bfloat16_tracks_float32(tiny_ckpt, tiny):
    bf = load_model(tiny_ckpt, torch.bfloat16)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    a, b = tiny(ids), bf(ids)
    assert b.dtype == torch.float32 and bf.dtype == torch.bfloat16
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.75
    assert (a - b).abs().max() < 0.5


@pytest.mark.real
def test_real_logits_match_hf(real_ckpt, real_model_fp32):
    from cascadener import load_tokenizer
    tok = load_tokenizer(real_ckpt)
    ref = hf_model(real_ckpt)
    texts = ["The capital of France is", "北京是中国的首都，", "東京は日本の首都です。", "##Kobe## was in ##NBA##"]
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([tok.encode(t)])
            assert (real_model_fp32(ids) - ref(ids).logits).abs().max() <= 1e-4, t
