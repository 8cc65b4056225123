"""Qwen2's gated MLP ("SwiGLU"):  down( silu(gate(x)) * up(x) ),  silu(z) = z * sigmoid(z).

The 0.5B model has C = 896 and I = 4864, so the three matrices are 80% of each block's weights.
At decode this op is a weight-streaming problem; at prefill and in batches, where the GEMMs run
near the CPU's peak, the two element-wise steps on the (M, I) intermediate start to cost as much
as a GEMM. `fast` folds them into the GEMMs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import packed_linear


def reference(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """x (..., C); w_gate, w_up (I, C); w_down (C, I) -> (..., C). Hugging Face's Qwen2MLP."""
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


FUSE_MIN_ROWS = 16   # fewer rows than this take the separate element-wise ops (the reference's rounding)


def available() -> bool:
    return packed_linear.available() and hasattr(torch.ops.mkldnn._linear_pointwise, "binary")


def fast(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """`reference` on oneDNN-packed weights (cascadener.kernels.packed_linear.pack), silu and the product
    done as post-ops of the GEMMs: silu on the gate GEMM's float32 accumulator, the product on the
    up GEMM's. Three calls and no pass over the (M, I) intermediate of its own.

    Why it matters: with 64-256 rows the separate ``F.silu`` and ``*`` took as long as the GEMMs
    around them (a 0.5B forward over 64-128 tokens ran at ~560 tokens/s; fused, ~1,050-1,100;
    BENCHMARKS.md). Rounding: the reference rounds the gate and up outputs to the activation
    dtype before silu and before the product; here silu(gate) is rounded once and the product once,
    so in bfloat16 an intermediate differs from the reference's by about one rounding (in float32,
    by summation order only). Below FUSE_MIN_ROWS rows the element-wise ops run separately, as in
    the reference: at batch-1 decode the post-ops made the step ~3 % slower.
    """
    if x.numel() < FUSE_MIN_ROWS * x.shape[-1]:
        h = F.silu(packed_linear.fast(x, gate))
        h *= packed_linear.fast(x, up)
    else:
        g = torch.ops.mkldnn._linear_pointwise(x, gate, None, "swish", [], "")
        h = torch.ops.mkldnn._linear_pointwise.binary(x, g, up, None, "mul")
    return packed_linear.fast(h, down)


class PackedSwiGLU(nn.Module):
    """Drop-in replacement for the model's MLP at inference on CPU (see cascadener.kernels.packed_linear)."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        self.gate, self.up, self.down = gate, up, down        # packed: not buffers

    @classmethod
    def from_mlp(cls, mlp: nn.Module) -> PackedSwiGLU:
        return cls(*(packed_linear.pack(lin.weight) for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast(x, self.gate, self.up, self.down)
