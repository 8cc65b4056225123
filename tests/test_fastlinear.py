"""Inference forms of the linears (cascadener.engine.fastlinear): packed and int8. Which layers change, how
far the numbers move, and that every policy (free, the copy constraint, the label choice) runs on
them.

The tiny model's hidden size (64) is a multiple of 16, so decode goes through the fused
_weight_int8pack_mm kernel as it does for the real model (kernels/int8_linear.py).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from cascadener import SamplingParams, generate, load_model
from cascadener.engine.chat import ChatEngine
from cascadener.engine.fastlinear import fuse_qkv, linear_rows, pack_linears, prepare_for_inference, quantize_int8
from cascadener.ner.copy import CopyConstraint
from cascadener.ner.labels import LabelChoice
from cascadener.ner.prompts import get_format
from cascadener.kernels import packed_linear
from cascadener.kernels.int8_linear import Int8Linear
from cascadener.kernels.packed_linear import PackedLinear
from cascadener.qwen2.lora import LoRAConfig, inject
from cascadener.qwen2.model import Qwen2, Qwen2Config


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


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


def test_every_policy_runs_on_the_int8_model(tiny_ckpt, tiny_tokenizer):
    engine = ChatEngine.load(tiny_ckpt, dtype=torch.bfloat16, int8=True, device="cpu")
    assert is_quantized(engine.model)
    conv = get_format("paper").extraction("Kobe was in NBA")
    tok = engine.tokenizer
    copy = CopyConstraint.for_tokenizer(tok).for_source("Kobe was in NBA")
    labels = LabelChoice([tok.encode(a) + tok.stop_ids[:1] for a in ("person", "location")])
    free, marked, choice = engine.complete([conv] * 3, [SamplingParams(max_new_tokens=6),
                                                        SamplingParams(max_new_tokens=copy.max_tokens),
                                                        SamplingParams(max_new_tokens=4)], [None, copy, labels])
    assert 1 <= len(free.tokens) <= 6
    assert marked.finished and copy.accepts(marked.tokens)
    assert labels.chosen(choice.tokens) in (0, 1) and choice.logprob <= 0


def test_int8_copy_marking_equals_its_one_token_at_a_time_decode(pair, tiny_tokenizer):
    _, q = pair
    tok = tiny_tokenizer
    source = "Angela Merkel visited Paris and Berlin in June."
    p = tok.encode(tok.apply_chat_template(get_format("paper").extraction(source)))
    copy = CopyConstraint.for_tokenizer(tok).for_source(source)
    params = SamplingParams(max_new_tokens=copy.max_tokens)
    plain = generate(q, [p], params, [copy], n_draft=0)[0]
    fast = generate(q, [p], params, [copy], n_draft=4)[0]
    assert plain.finish_reason == "stop" and fast.tokens == plain.tokens


# --- packed (oneDNN) -------------------------------------------------------------------------------

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_model_gives_the_plain_models_numbers_and_greedy_tokens(tiny_ckpt, tiny_tokenizer, dtype):
    plain, packed = load_model(tiny_ckpt, dtype), pack_linears(load_model(tiny_ckpt, dtype))
    assert not any(isinstance(m, nn.Linear) for m in packed.modules())
    assert packed.lm_head.weight.data_ptr() == packed.embed_tokens.weight.data_ptr()   # kept, tied: no copy
    ids = torch.tensor([tiny_tokenizer.encode("Angela Merkel visited Paris and Berlin in June.")])
    with torch.no_grad():
        a, b = plain(ids), packed(ids)
    tol = 1e-4 if dtype == torch.float32 else 0.05                      # summation order, then bf16 rounding
    assert (a - b).abs().max() <= tol * a.abs().max()
    params = SamplingParams(max_new_tokens=12, vocab_limit=tiny_tokenizer.vocab_size)
    if dtype == torch.float32:
        assert generate(plain, [ids[0].tolist()], params)[0].tokens == generate(packed, [ids[0].tolist()], params)[0].tokens


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 64), (0, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_is_the_reference_linear(shape, dtype):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 48).to(dtype)
    x = torch.randn(*shape, generator=g).to(dtype)
    want = packed_linear.reference(x, lin.weight, lin.bias)
    got = PackedLinear.from_linear(lin)(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    ulp = 1e-5 if dtype == torch.float32 else 2 ** -7
    assert torch.allclose(got.float(), want.float(), rtol=ulp, atol=ulp * 8)


def test_prepare_for_inference_picks_int8_when_asked(tiny_ckpt):
    assert is_quantized(prepare_for_inference(load_model(tiny_ckpt, torch.bfloat16), int8=True))
    model = prepare_for_inference(load_model(tiny_ckpt, torch.bfloat16))
    assert not is_quantized(model)
    assert isinstance(model.lm_head, PackedLinear) == packed_linear.available()


# --- q, k and v in one layer -----------------------------------------------------------------------

def test_fused_qkv_stacks_the_three_weights_and_gives_the_plain_models_tokens(tiny_ckpt, tiny_tokenizer):
    plain, fused = load_model(tiny_ckpt, torch.float32), fuse_qkv(load_model(tiny_ckpt, torch.float32))
    for a, b in zip(plain.layers, fused.layers):
        parts = (a.self_attn.q_proj, a.self_attn.k_proj, a.self_attn.v_proj)
        assert torch.equal(b.self_attn.qkv_proj.weight, torch.cat([p.weight for p in parts]))
        assert torch.equal(b.self_attn.qkv_proj.bias, torch.cat([p.bias for p in parts]))
        assert not hasattr(b.self_attn, "q_proj")
    ids = [tiny_tokenizer.encode("Angela Merkel visited Paris and Berlin in June.")]
    with torch.no_grad():
        a, b = plain(torch.tensor(ids)), fused(torch.tensor(ids))
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()                 # a GEMM's summation order at most
    params = SamplingParams(max_new_tokens=12, vocab_limit=tiny_tokenizer.vocab_size)
    assert generate(plain, ids, params)[0].tokens == generate(fused, ids, params)[0].tokens


@pytest.mark.parametrize("int8", [False, True])
def test_every_inference_form_takes_the_fused_layer(tiny_ckpt, int8):
    model = prepare_for_inference(load_model(tiny_ckpt, torch.bfloat16), int8=int8)
    form = Int8Linear if int8 else PackedLinear if packed_linear.available() else nn.Linear
    assert all(isinstance(b.self_attn.qkv_proj, form) for b in model.layers)


def test_fused_qkv_of_llama_style_layers_has_no_bias():
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attention_bias=False)
    torch.manual_seed(0)
    plain = Qwen2(cfg)
    fused = fuse_qkv(copy.deepcopy(plain))
    assert all(b.self_attn.qkv_proj.bias is None for b in fused.layers)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert torch.allclose(plain(ids), fused(ids), rtol=1e-5, atol=1e-6)


def test_a_block_with_an_unmerged_adapter_keeps_its_three_layers(tiny_ckpt):
    model = load_model(tiny_ckpt, torch.float32)
    inject(model, LoRAConfig(r=2, target_modules=["k_proj"]))
    fuse_qkv(model)
    assert all(b.self_attn.qkv_proj is None and hasattr(b.self_attn, "k_proj") for b in model.layers)


def test_packing_an_int8_model_leaves_its_int8_layers(tiny_ckpt):
    model = pack_linears(quantize_int8(load_model(tiny_ckpt, torch.bfloat16)))
    assert isinstance(model.lm_head, Int8Linear) and is_quantized(model)
