"""Weight-only int8 inference (cascadener.quantize): which layers change, how far the numbers move,
and that every decoding path (full head, restricted copy head, scoring) runs on the int8 model.

The tiny model's hidden size (64) is a multiple of 16, so decode goes through the fused
_weight_int8pack_mm kernel as it does for the real model (kernels/int8_linear.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cascadener import SamplingParams, generate, load_model, load_tokenizer
from cascadener.copydecode import copy_mark
from cascadener.engine import ChatEngine
from cascadener.prompts import get_format
from cascadener.quantize import is_quantized, linear_rows, quantize_int8
from kernels.int8_linear import Int8Linear


@pytest.fixture(scope="module")
def pair(tiny_ckpt):
    plain = load_model(tiny_ckpt, torch.bfloat16)
    return plain, quantize_int8(load_model(tiny_ckpt, torch.bfloat16))


def test_every_block_linear_and_the_head_become_int8_and_the_embedding_stays(pair):
    plain, q = pair
    assert not is_quantized(plain) and is_quantized(q)
    names = {n for n, m in q.named_modules() if isinstance(m, Int8Linear)}
    assert names == {n for n, m in plain.named_modules() if isinstance(m, nn.Linear)}
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    assert torch.equal(q.embed_tokens.weight, plain.embed_tokens.weight)


def test_int8_logits_stay_close_to_the_bfloat16_model(pair, tiny_tokenizer):
    plain, q = pair
    ids = torch.tensor([tiny_tokenizer.encode("Kobe Bryant played for the Los Angeles Lakers in the NBA.")])
    with torch.no_grad():
        a, b = plain(ids), q(ids)
    # int8 rounds each weight by at most half a step of max|row|/127: a few percent of the logit scale
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.8


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_linear_rows_is_the_full_layer_at_those_rows(pair, rows):
    plain, q = pair
    x = torch.randn(rows, plain.config.hidden_size).to(torch.bfloat16)
    pick = torch.tensor([3, 0, 511, 17])
    for head in (plain.lm_head, q.lm_head):
        with torch.no_grad():
            assert torch.equal(linear_rows(head, x, pick), head(x)[:, pick])


def test_generation_copy_marking_and_scoring_run_on_the_int8_model(tiny_ckpt, tiny_tokenizer):
    engine = ChatEngine.load(tiny_ckpt, dtype=torch.bfloat16, int8=True)
    assert is_quantized(engine.model)
    fmt = get_format("paper")
    text = "Kobe was in NBA"
    out = generate(engine.model, [engine.prompt_ids(fmt.extraction(text))], SamplingParams(max_new_tokens=6))
    assert 1 <= len(out[0].tokens) <= 6
    marked = engine.copy_mark([fmt.extraction(text)], [text], SamplingParams())[0]
    assert marked.finished
    choice = engine.choose([fmt.extraction(text)], [["person", "location"]])[0]
    assert choice.answer in ("person", "location") and 0 < choice.probability <= 1


def test_int8_copy_marking_equals_its_one_token_at_a_time_decode(pair, tiny_tokenizer):
    _, q = pair
    tok = tiny_tokenizer
    source = "Angela Merkel visited Paris and Berlin in June."
    p = tok.encode(tok.apply_chat_template(get_format("paper").extraction(source)))
    plain = copy_mark(q, tok, [p], [source], speculate=False)[0]
    fast = copy_mark(q, tok, [p], [source], n_draft=4)[0]
    assert plain.faithful and fast.tokens == plain.tokens
