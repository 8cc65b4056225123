"""kernels/: every fast path against its reference, and each reference against the model's module
where the model has one (RMSNorm, MLP); the model itself calls the rmsnorm, rope and
attention fast paths.

Bit-identical paths are checked with torch.equal; the others against documented tolerances, in
float32 and bfloat16. Shapes are small (the real ones are in bench/bench_kernels.py).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascadener.qwen2.cache import causal_pad_mask
from cascadener.qwen2.model import MLP, Qwen2Config, RMSNorm, rope_cos_sin
from cascadener.kernels import attention, int8_linear, rmsnorm, rope, swiglu

DTYPES = [torch.float32, torch.bfloat16]
dtypes = st.sampled_from(DTYPES)
FEW = settings(max_examples=15, deadline=None)


def randn(*shape: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


# --- RMSNorm -------------------------------------------------------------------------------------

@FEW
@given(dtypes, st.integers(1, 3), st.integers(1, 9), st.sampled_from([8, 64, 96]), st.integers(0, 99))
def test_rmsnorm_fast_is_reference_is_model(dtype, b, t, c, seed):
    x = randn(b, t, c, dtype=dtype, seed=seed, scale=4.0)
    norm = RMSNorm(c, 1e-6).to(dtype)
    norm.weight.data = randn(c, dtype=dtype, seed=seed + 1) + 1
    with torch.no_grad():
        expected = norm(x)
    ref = rmsnorm.reference(x, norm.weight, norm.eps)
    assert torch.equal(ref, expected)
    assert torch.equal(rmsnorm.fast(x, norm.weight, norm.eps), ref)


# --- RoPE ----------------------------------------------------------------------------------------

@FEW
@given(dtypes, st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.sampled_from([8, 64]),
       st.integers(0, 5000), st.integers(0, 99))
def test_rope_fast_is_reference(dtype, b, h, t, d, start, seed):
    x = randn(b, t, h, d, dtype=dtype, seed=seed).transpose(1, 2)       # strided, as in the model
    positions = torch.arange(start, start + t).expand(b, t)
    cos, sin = rope_cos_sin(positions, d, 1_000_000.0, dtype)
    ref = rope.reference(x, cos, sin)
    assert torch.equal(rope.fast(x, rope.tables(cos, sin)), ref)


# --- SwiGLU --------------------------------------------------------------------------------------

@FEW
@given(dtypes, st.sampled_from([1, 3, 8, 16, 40]), st.sampled_from([(16, 48), (64, 176), (16, 64), (96, 256)]),
       st.integers(0, 99))
def test_swiglu_reference_is_model_and_fast_is_within_a_rounding(dtype, m, dims, seed):
    c, i = dims
    mlp = MLP(Qwen2Config(hidden_size=c, intermediate_size=i, num_attention_heads=1, num_key_value_heads=1,
                          vocab_size=8, num_hidden_layers=1)).to(dtype)
    for j, lin in enumerate((mlp.gate_proj, mlp.up_proj, mlp.down_proj)):
        lin.weight.data = randn(*lin.weight.shape, dtype=dtype, seed=seed + j, scale=0.2)
    x = randn(1, m, c, dtype=dtype, seed=seed + 7)
    with torch.no_grad():
        expected = mlp(x)
    ref = swiglu.reference(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    assert torch.equal(ref, expected)
    if not swiglu.available():
        return
    out = swiglu.PackedSwiGLU.from_mlp(mlp)(x)
    exact = swiglu.reference(*(t.double() for t in (x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)))
    # fast rounds fewer intermediates than the reference, so it is at least as close to exact math
    err_fast, err_ref = (out.double() - exact).abs().max(), (ref.double() - exact).abs().max()
    scale = exact.abs().max()
    assert err_fast <= err_ref + (1e-6 if dtype == torch.float32 else 2 ** -8) * scale


# --- attention -----------------------------------------------------------------------------------

# Against the float32 attention of the same (rounded) inputs, relative to max|v| (which bounds
# |output|): float32 summation order; in bfloat16 the one rounding of the output, with some room
# for SDPA's blockwise softmax.
ATTN_TOL = {torch.float32: 1e-5, torch.bfloat16: 2 ** -7}


def attention_inputs(dtype: torch.dtype, b: int, n_kv: int, n_rep: int, t: int, past: int,
                     pads: list[int], seed: int):
    """q (B, H, T, D) and a cache view k, v (B, Hkv, S, D) of a longer buffer, plus the mask the
    cache would build for left-padded rows (pads[i] pad tokens at the start of row i)."""
    d, s = 16, past + t
    q = randn(b, t, n_kv * n_rep, d, dtype=dtype, seed=seed).transpose(1, 2)
    k = randn(b, n_kv, s + 5, d, dtype=dtype, seed=seed + 1)[:, :, :s]
    v = randn(b, n_kv, s + 5, d, dtype=dtype, seed=seed + 2)[:, :, :s]
    valid = torch.ones(b, s, dtype=torch.bool)
    for row, p in enumerate(pads):
        valid[row, :min(p, s)] = False
    return q, k, v, causal_pad_mask(valid[:, past:], valid, offset=past)


def float32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return attention.reference(q.float(), k.float(), v.float(), mask)


@settings(max_examples=25, deadline=None)
@given(dtypes, st.integers(1, 3), st.sampled_from([1, 2]), st.sampled_from([1, 2, 7]),
       st.sampled_from([1, 1, 4, 12]), st.integers(0, 40), st.lists(st.integers(0, 12), min_size=3, max_size=3),
       st.booleans(), st.integers(0, 99))
def test_attention_paths_agree(dtype, b, n_kv, n_rep, t, past, pads, unmasked, seed):
    q, k, v, mask = attention_inputs(dtype, b, n_kv, n_rep, t, past, pads[:b], seed)
    if unmasked and t == 1:
        mask = None          # what the cache returns for one query seeing every key
    truth = float32_attention(q, k, v, mask)
    tol = ATTN_TOL[dtype] * v.float().abs().max()
    for impl in (attention.reference, attention.sdpa, attention.grouped, attention.fast):
        out = impl(q, k, v, mask)
        assert out.shape == q.shape and out.dtype == dtype
        assert (out.float() - truth).abs().max() <= tol, impl.__name__


def test_attention_mask_hides_padding():
    """Keys in a row's left padding get no weight: changing them changes nothing."""
    q, k, v, mask = attention_inputs(torch.float32, 2, 2, 7, 1, 9, [4, 0], seed=0)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, :4], v2[0, :, :4] = 1e3, -1e3
    for impl in (attention.reference, attention.sdpa, attention.grouped, attention.fast):
        assert torch.allclose(impl(q, k, v, mask), impl(q, k2, v2, mask), atol=1e-6)


def test_grouped_reads_kv_head_h_div_n_rep():
    """Query head h must read kv head h // n_rep (repeat_interleave), not h % Hkv (tiling)."""
    q, k, v, _ = attention_inputs(torch.float32, 1, 2, 3, 1, 5, [0], seed=1)
    v = v.clone()
    v[:, 1] += 100.0                                        # kv head 1 is unmistakable
    out = attention.grouped(q, k, v, None)
    assert (out[:, :3] < 50).all() and (out[:, 3:] > 50).all()


# --- int8 linear ---------------------------------------------------------------------------------

@FEW
@given(st.integers(1, 40), st.sampled_from([16, 24, 64, 100]), st.floats(1e-4, 10.0), st.integers(0, 99))
def test_quantize_round_trip_within_half_a_step(n, k, scale, seed):
    w = randn(n, k, dtype=torch.float32, seed=seed, scale=scale)
    w[0] = 0.0                                              # an all-zero row must not divide by zero
    q, s = int8_linear.quantize(w)
    assert q.dtype == torch.int8 and q.shape == (n, k) and s.shape == (n,)
    assert q.abs().max() <= 127
    assert torch.equal(s, s.bfloat16().float())            # exact in bfloat16 as well
    err = (int8_linear.dequantize(q, s) - w).abs()
    assert (err <= s[:, None] / 2 * (1 + 1e-6)).all()
    assert (q[0] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [16, 24, 64, 100])           # 24, 100: the fused kernel's unsafe K in bf16
@pytest.mark.parametrize("m", [1, 3, 8, 20])                # 2*20 rows: past FUSED_MAX_ROWS in bf16
def test_int8_fast_matches_reference(dtype, k, m):
    n = 37
    q, s = int8_linear.quantize(randn(n, k, dtype=torch.float32, seed=k, scale=0.05))
    x = randn(2, m, k, dtype=dtype, seed=m)
    bias = randn(n, dtype=dtype, seed=5)
    ref = int8_linear.reference(x, q, s, bias)
    out = int8_linear.fast(x, q, s, bias)
    assert out.shape == (2, m, n) and out.dtype == dtype
    # relative to sum_k |x||w| + |b|: float32 summation, or a few bfloat16 roundings
    mag = x.float().abs() @ int8_linear.dequantize(q, s).abs().t() + bias.float().abs()
    assert ((out.float() - ref.float()).abs() <= rounding(dtype, 2 * m, k) * mag).all()


def rounding(dtype: torch.dtype, rows: int, k: int) -> float:
    """int8_linear.fast's tolerance: bfloat16 on the fused kernel (whatever x's dtype) or in bf16."""
    return 2 ** -7 if dtype == torch.bfloat16 or int8_linear.uses_fused_kernel(rows, k, dtype) else 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5])
def test_int8_linear_error_against_unquantized_layer(dtype, rows):
    """y_int8 - y = x @ (W_q - W)^T, and |W_q - W| <= scale/2 per row, plus the kernel's rounding."""
    lin = torch.nn.Linear(64, 48, bias=True)
    x = randn(rows, 64, dtype=torch.float32, seed=3)
    layer = int8_linear.Int8Linear.from_linear(lin).to(dtype)
    with torch.no_grad():
        exact = lin(x)
        ours = layer(x.to(dtype)).float()
        mag = x.abs() @ lin.weight.abs().t() + lin.bias.abs()
    bound = x.abs().sum(-1, keepdim=True) * layer.scale.float() / 2
    assert ((ours - exact).abs() <= bound * (1 + 1e-5) + rounding(dtype, rows, 64) * mag).all()


def test_int8_linear_module_round_trips_state_dict():
    lin = torch.nn.Linear(32, 8, bias=False)
    layer = int8_linear.Int8Linear.from_linear(lin)
    again = int8_linear.Int8Linear(torch.zeros(8, 32, dtype=torch.int8), torch.ones(8))
    again.load_state_dict(layer.state_dict())
    x = randn(3, 32, dtype=torch.float32, seed=0)
    assert torch.equal(again(x), layer(x))
    assert "weight_int8" in layer.state_dict() and layer.weight_int8.dtype == torch.int8
