"""Weight-only int8 linear layers for decode.

Batch-1 decode is memory-bound: every token streams every weight once, so halving the bytes per
weight (bfloat16 -> int8) is the one change that can nearly halve the time of a matmul. Only the
weights are quantized; activations stay in floating point, so the error is the weights' rounding
(plus bfloat16 rounding, see `fast`).

Scheme: per-output-channel symmetric int8. Row n of the (N, K) weight gets one scale,

    scale[n] = max_k |W[n, k]| / 127,    Q[n, k] = round(W[n, k] / scale[n]) in [-127, 127],

and W ~= Q * scale[:, None]. Per-channel (not per-tensor) scales keep one outlier row from
flattening the resolution of all the others; symmetric (no zero point) because the weights are
centred on zero, and it keeps the kernel a plain dot product followed by one multiply per output:

    y[m, n] = scale[n] * sum_k x[m, k] * Q[n, k]   (+ bias[n])

The scales are kept in bfloat16, the dtype the fused kernel computes in. Rounding a scale to
bfloat16 can push max|W|/scale slightly past 127; that element is clamped, and its error, at most
127 * 2^-9 of a step, stays within the half-step bound |W - Q*scale| <= scale/2 of all the others.

Kernels (bench/bench_kernels.py measures them on this CPU):

* ``torch.ops.aten._weight_int8pack_mm(x, Q, scale)``: PyTorch's CPU kernel for exactly this
  scheme (x 2-D with contiguous rows, Q (N, K) int8, scale (N,) in x's dtype). It reads the int8
  weights directly, so at one row it streams half the bytes of a bfloat16 ``F.linear``. But it is
  a matrix-vector kernel: its time grows about linearly with the rows of x, and past ~16 rows it
  loses to the bfloat16 GEMM (AVX512-BF16). Its float32 version is scalar code, slower than the
  float32 GEMM at any size, so float32 activations go through it in bfloat16 (where it beats the
  float32 GEMM at every size measured, up to 256 rows). In bfloat16 it needs
  K % 16 == 0: with other K it returns wrong numbers or crashes (torch 2.13).
* dequantize-on-the-fly ``F.linear(x, Q.to(x.dtype)) * scale``: any shape and dtype, but converts
  the whole weight every call: the path for many rows of bfloat16 (prefill), where the GEMM
  dominates; there int8 is ~10% slower than bfloat16 weights and saves only memory.
* ``torch.ao`` dynamic quantization (fbgemm) quantizes the activations too (2-3x the error) and its
  quantized-tensor API is deprecated; it is measured in the benchmark but not used.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_INT8_MAX = 127
_HAS_INT8PACK = hasattr(torch.ops.aten, "_weight_int8pack_mm")
FUSED_MAX_ROWS = 16  # bfloat16: above this many rows of x the dequantize + GEMM path wins (bench_kernels.py)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (Q (N, K) int8, scale (N,) bfloat16)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / _INT8_MAX).clamp(min=torch.finfo(torch.bfloat16).tiny)  # zero rows: no 0/0
    scale = scale.to(torch.bfloat16)
    q = torch.round(w / scale.float()[:, None]).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight the int8 pair stands for."""
    return q.float() * scale.float()[:, None]


def reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., N): the linear layer of the dequantized weight, computed in float32."""
    b = None if bias is None else bias.float()
    return F.linear(x.float(), dequantize(q, scale), b).to(x.dtype)


def uses_fused_kernel(rows: int, in_features: int, dtype: torch.dtype) -> bool:
    """Whether `fast` calls `fused_matmul` for x of this many rows and dtype (see the module doc).

    In float32 always: the float32 GEMM is slower than the fused kernel even at 256 rows. In
    bfloat16 up to FUSED_MAX_ROWS rows: past that the bfloat16 GEMM wins despite the conversion.
    """
    if not _HAS_INT8PACK or in_features % 16:
        return False
    return dtype == torch.float32 or rows <= FUSED_MAX_ROWS


def fused_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> (M, N) with _weight_int8pack_mm, computed in bfloat16 whatever x's dtype.

    Only for K % 16 == 0 (`uses_fused_kernel`): the kernel gives wrong results otherwise.
    """
    xb = x.to(torch.bfloat16).contiguous()
    return torch.ops.aten._weight_int8pack_mm(xb, q, scale.to(torch.bfloat16)).to(x.dtype)


def dequant_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> (M, N) by the GEMM of x's dtype on the weight converted for this call."""
    return F.linear(x, q.to(x.dtype)) * scale.to(x.dtype)


def fast(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `reference`, not bit-identical: `fused_matmul` where `uses_fused_kernel`
    says so (decode; float32 throughout), else `dequant_matmul` (bfloat16 prefill).

    Tolerance against `reference`: on the fused path two bfloat16 roundings, 2^-8 relative to
    sum_k |x_k W_nk| + |b_n| (float32 activations too: they are rounded to bfloat16 on the way in,
    an error small next to the weights' own int8 rounding); otherwise the GEMM's rounding in x's
    dtype.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    matmul = fused_matmul if uses_fused_kernel(x2.shape[0], shape[-1], x.dtype) else dequant_matmul
    y = matmul(x2, q, scale)
    if bias is not None:
        y = y + bias
    return y.view(*shape[:-1], -1)


class Int8Linear(nn.Module):
    """Drop-in replacement for an ``nn.Linear`` at inference: int8 weight, per-row scale, optional bias."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        q, scale = quantize(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast(x, self.weight_int8, self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
