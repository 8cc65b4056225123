"""Rotary position embedding, Qwen2's "rotate half" convention.

Dimension i of a head is rotated together with dimension i + D/2 (not with its neighbour, as in
Meta's complex-number Llama code). With x = [x1 | x2] split into halves and the angle table
duplicated across the halves (cos = [c | c], sin = [s | s]):

    rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1 | x2]) = [-x2 | x1]
            = [x1*c - x2*s | x2*c + x1*s]

cos/sin come from `cascadener.qwen2.model.rope_cos_sin`: shape (B, T, D), already in the activation dtype.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


def reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D), cos/sin (B, T, D) -> (B, H, T, D); Hugging Face's apply_rotary_pos_emb."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]           # [:, None]: broadcast over heads


class Tables(NamedTuple):
    """Per-forward rotary tables in the layout `fast` wants; build once, share across all layers."""
    cos: torch.Tensor          # (B, 1, T, D)
    sin_signed: torch.Tensor   # (B, 1, T, D): [-s | s], the minus sign of rotate_half folded in


def tables(cos: torch.Tensor, sin: torch.Tensor) -> Tables:
    """From the (B, T, D) cos/sin of `rope_cos_sin`."""
    half = sin.shape[-1] // 2
    sin_signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return Tables(cos[:, None], sin_signed[:, None])


def fast(x: torch.Tensor, t: Tables) -> torch.Tensor:
    """Bit-identical to `reference` in float32 and bfloat16 (tested).

    Negating a float is exact, so moving the sign from x2 into the (shared) sine table changes no
    rounding; swapping the halves is a copy either way. What is saved per call: the negation, the
    [:, None] views and one temporary (the sum is accumulated in place). Each product is still
    rounded on its own before the add: a fused multiply-add (``addcmul_``) would round once and
    drift from the reference by an ulp.
    """
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)   # [x2 | x1]
    out = x * t.cos
    out += swapped * t.sin_signed
    return out
