"""Weight-only int8 for inference: every linear layer of the blocks, and the LM head, as
kernels.int8_linear.Int8Linear (per-output-channel symmetric int8, activations untouched).

Batch-1 decode streams every weight once per token, so halving the bytes of the weights is what
moves it (BENCHMARKS.md: Engine). The embedding table stays in the model dtype: a decode step
gathers one row of it, so it costs no bandwidth, and with a tied head the int8 head is a copy
(136 MB), not a replacement. Quantize *after* merging LoRA adapters: the int8 layers hold no
trainable weight and `lora.inject` does not see them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.int8_linear import Int8Linear, fast as int8_matmul

from .model import Qwen2


def quantize_int8(model: Qwen2, head: bool = True) -> Qwen2:
    """Swap the model's nn.Linear layers (and, with `head`, the LM head) for Int8Linear, in place."""
    for block in model.layers:
        for parent in (block.self_attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear.from_linear(child))
    if head:
        model.lm_head = Int8Linear.from_linear(model.lm_head)
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def linear_rows(layer: nn.Linear | Int8Linear, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for the output features `rows` only: a restricted LM head (copydecode) reads a
    handful of the 151,936 rows, whichever form the head is stored in."""
    bias = None if layer.bias is None else layer.bias[rows]
    if isinstance(layer, Int8Linear):
        return int8_matmul(x, layer.weight_int8[rows], layer.scale[rows], bias)
    return F.linear(x, layer.weight[rows], bias)
