"""The linear layers' inference-time forms, swapped in after loading (and after merging adapters):

* packed (the default on CPU): each weight reordered once for oneDNN (cascadener.kernels.packed_linear), same
  numbers up to summation order (and one rounding fewer in the MLP, cascadener.kernels.swiglu), and GEMVs
  that stream weights near the memory bandwidth;
* int8 (opt-in, `--int8`): weight-only per-channel int8 (cascadener.kernels.int8_linear), half the bytes of
  bfloat16 for batch-1 decode, at the cost of the weights' rounding (BENCHMARKS.md reports the F1);
* plain (CUDA): nn.Linear as loaded.

In every form each block's q, k and v projections are first stacked into one layer (`fuse_qkv`).

Batch-1 decode streams every weight once per token, so the form of the weights is what sets its
speed. The embedding table stays as it is: a decode step gathers one row of it. With a tied head
the head's packed or int8 form is an extra copy of that matrix, not a replacement. Neither form
trains: LoRA wraps plain nn.Linear layers only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cascadener.kernels import packed_linear, swiglu
from cascadener.kernels.int8_linear import Int8Linear, fast as int8_matmul
from cascadener.kernels.packed_linear import PackedLinear
from cascadener.kernels.swiglu import PackedSwiGLU

from cascadener.qwen2.model import Qwen2


def _swap_linears(model: Qwen2, make) -> None:
    for block in model.layers:
        for parent in (block.self_attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, make(child))


def quantize_int8(model: Qwen2, head: bool = True) -> Qwen2:
    """Swap the blocks' nn.Linear layers (and, with `head`, the LM head) for Int8Linear, in place."""
    _swap_linears(model, Int8Linear.from_linear)
    if head:
        model.lm_head = Int8Linear.from_linear(model.lm_head)
    return model


def pack_linears(model: Qwen2) -> Qwen2:
    """Swap every nn.Linear (blocks and head) for a oneDNN-packed PackedLinear, in place, and each
    MLP for a PackedSwiGLU (its silu and product fused into the GEMMs); layers already in another
    form stay. The head keeps its plain weight too (rows of it feed the restricted head
    of constrained steps)."""
    if swiglu.available():
        for block in model.layers:
            if all(isinstance(m, nn.Linear) for m in block.mlp.children()):
                block.mlp = PackedSwiGLU.from_mlp(block.mlp)
    _swap_linears(model, PackedLinear.from_linear)
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = PackedLinear.from_linear(model.lm_head, keep_weight=True)
    return model


def fuse_qkv(model: Qwen2) -> Qwen2:
    """Stack each block's q, k and v projections into one linear, `qkv_proj` (Attention.project),
    in place. At batch-1 decode a call that streams a small weight costs mostly its fixed setup,
    and k and v have 128 outputs each: one call for the three saves two setups a block. The rows
    are the same dot products. Blocks whose three are not plain nn.Linear (an adapter left
    unmerged, a form taken already) stay as they are."""
    for block in model.layers:
        attn = block.self_attn
        if attn.qkv_proj is not None:
            continue
        parts = [attn.q_proj, attn.k_proj, attn.v_proj]
        if not all(isinstance(p, nn.Linear) for p in parts):
            continue
        fused = nn.Linear(attn.q_proj.in_features, sum(p.out_features for p in parts),
                          bias=attn.q_proj.bias is not None, device="meta")
        fused.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]), requires_grad=False)
        if fused.bias is not None:
            fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
        attn.qkv_proj = fused
        del attn.q_proj, attn.k_proj, attn.v_proj
    return model


def prepare_for_inference(model: Qwen2, int8: bool = False) -> Qwen2:
    """The fastest form this machine offers, after `fuse_qkv`: int8 when asked (CPU only), else
    packed on a CPU with oneDNN, else plain linears (on CUDA)."""
    if int8 and model.device.type != "cpu":
        raise ValueError(f"int8 linears are a CPU form; the model is on {model.device}")
    fuse_qkv(model)
    if int8:
        return quantize_int8(model)
    if model.device.type == "cpu" and packed_linear.available():
        return pack_linears(model)
    return model


def linear_rows(layer: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for the output features `rows` only: a restricted LM head (constrained steps) reads a
    handful of the 151,936 rows, whichever form the head is stored in."""
    bias = None if layer.bias is None else layer.bias[rows]
    if isinstance(layer, Int8Linear):
        return int8_matmul(x, layer.weight_int8[rows], layer.scale[rows], bias)
    return F.linear(x, layer.weight[rows], bias)
