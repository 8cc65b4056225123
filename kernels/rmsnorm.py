"""RMSNorm as Qwen2 computes it.

    y = weight * to_dtype( x / sqrt(mean(x^2) + eps) )       (the normalisation in float32)

The order matters in bfloat16: Hugging Face normalises in float32, rounds the result to the
activation dtype, and only *then* multiplies by the weight (a second bfloat16 rounding). Folding the
weight in before the cast (what ``F.rms_norm(x, shape, weight)`` does in bfloat16) is more accurate,
but it is not the model that was trained and evaluated, so neither path here does it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., C), weight (C,) -> (..., C) in x's dtype; line for line the model's RMSNorm."""
    h = x.float()                                             # a bf16 sum of C squares keeps ~3 digits
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)                             # cast first, then scale


def fast(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Bit-identical to `reference` (float32 and bfloat16; tested), 10-20% faster at decode.

    ``F.rms_norm`` without a weight does the float32 normalisation and the cast back in one call
    (it computes in float32 for reduced-precision inputs); the weight is applied afterwards to keep
    the model's rounding. The saving is Python/dispatch overhead: at decode a norm is only 896
    numbers, and each of the reference's seven small ops costs more than its arithmetic.
    """
    return weight * F.rms_norm(x, (x.shape[-1],), eps=eps)
