"""Linear layers whose weight is reordered once, at load time, for oneDNN (PyTorch's CPU GEMM library).

`F.linear` on CPU hands the plain row-major (N, K) weight to the GEMM on every call. For one row of
activations (batch-1 decode) in bfloat16 that path streams the weight at about a quarter to a third
of the memory bandwidth (BENCHMARKS.md, "Where the time goes"), and decode is nothing but streaming
weights. oneDNN can instead reorder a weight once into its own blocked layout, after which its
cascadener.kernels stream it close to the bandwidth limit, for one row and for many. The pair of ops is

    packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_size_hint)
    y      = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

which is what PyTorch's own compiler (inductor, with weight freezing) emits for CPU linears. They
are private ops, so `available()` checks for them and callers fall back to plain layers.

Accuracy: the same products summed in another order. bfloat16 results round to the same
bfloat16 grid (within an ulp of `reference`); float32 ones differ by float32 rounding (~1e-6
relative). Inference only: the packed op has no autograd formula, and LoRA training needs the
plain `nn.Linear` anyway; pack a model after its adapters are merged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DECODE_ROWS = 1   # the batch-size hint the reorder is tuned for: batch-1 decode, the bandwidth-bound case


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) float weight -> an opaque oneDNN tensor of the same shape and dtype."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), DECODE_ROWS)


def fast(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., N), the same contract as `reference` on the unpacked weight."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """Drop-in replacement for an `nn.Linear` at inference, CPU only.

    keep_weight keeps a reference to the plain weight too, for code that reads rows of it (a
    restricted LM head); for a head tied to the embedding that costs nothing extra.
    """

    def __init__(self, packed: torch.Tensor, bias: torch.Tensor | None, weight: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = packed.shape
        self.packed = packed                                   # not a buffer: state_dict cannot hold it
        self.bias = None if bias is None else bias.detach()
        self.weight = weight

    @classmethod
    def from_linear(cls, linear: nn.Linear, keep_weight: bool = False) -> PackedLinear:
        return cls(pack(linear.weight), linear.bias, linear.weight.detach() if keep_weight else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
