"""Grouped-query attention over a KV cache.

Shapes (the model's): q (B, H, T, D); k, v (B, Hkv, S, D) with H = n_rep * Hkv (14 = 7 * 2 in the
0.5B model); mask None or boolean (B, 1, T, S), True = may attend. Query head h reads kv head
h // n_rep: kv heads are repeated *contiguously* (repeat_interleave), never tiled.

At decode T = 1 and S is the whole cache, so the work is reading K and V once; at prefill T = S and
it is two (T x S) matmuls per head. Three implementations:

* `reference`: the textbook formula, written out: repeat K/V to H heads, matmul, scale, mask,
  softmax, matmul, all in float32.
* `sdpa`: ``F.scaled_dot_product_attention(..., enable_gqa=True)`` (on CPU a flash-style kernel
  that accumulates in float32; on CUDA the fused kernels).
* `grouped`: the reference without the repeat. The n_rep query heads that share a kv head are
  stacked into the rows of one matrix, (B, Hkv, n_rep*T, D), and multiplied by the *un-repeated*
  K and V: the same dot products, no copy of the cache, and at decode one (7 x 64) @ (64 x S)
  matmul per kv head instead of seven (1 x 64) @ (64 x S) ones.

Precision. All three keep scores and probabilities in float32 and round once, at the output.
Hugging Face's *eager* path does not: in bfloat16 its q @ k^T comes out rounded to bfloat16 before
the softmax, and the probabilities are rounded again before the second matmul. With logits of a
few units that costs about 10x the error of rounding the output alone (q, k ~ N(0, 9), v ~ N(0, 1):
max error 0.07-0.12 against 0.008), so it is not reproduced; in float32 `reference` *is* the eager
path, op for op.

`fast` is what the model calls. On a CPU it picks `grouped` for up to 128 queries per row (one
query, as in decoding, is where SDPA's CPU kernel is slowest; BENCHMARKS.md has the measurements)
and `sdpa` above, for a long prompt, where the (n_rep*T, S) float32 scores of `grouped` would grow
large. On CUDA it always picks `sdpa`.

On a CPU the engine stores keys and values in float32 (cascadener.engine.kv.kv_dtype), so `grouped`
finds them already in the dtype it computes in; `sdpa` then runs in float32 too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GROUPED_MAX_QUERIES = 128   # `fast` uses `grouped` up to this many queries per row (T), `sdpa` above


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, H, T, D) attention output in q's dtype, computed in float32."""
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)                     # (B, H, S, D): kv head h // n_rep
    v = v.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5      # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))    # every row keeps >= 1 key (qwen2/cache.py)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).to(dtype)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """PyTorch's fused attention, in the dtype of the keys (a float32 cache), output in q's."""
    y = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
    return y.to(q.dtype)


def grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`reference` without repeating K/V (same float32 math; the BLAS may sum in another order).

    Heads h = g*n_rep .. g*n_rep + n_rep-1 all read kv head g, so viewing q as
    (B, Hkv, n_rep, T, D) and flattening (n_rep, T) gives one row block per kv head. For T = 1
    that is a view; for T > 1 a copy of q (small next to K and V). In bfloat16 the float32 copies
    of K and V cost about as much as the matmuls, and buy the accuracy described in the module doc.
    """
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    n_rep = H // Hkv
    qg = q.reshape(B, Hkv, n_rep * T, D).float()
    scores = torch.matmul(qg, k.float().transpose(-1, -2))   # (B, Hkv, n_rep*T, S)
    scores *= D ** -0.5                                       # in place: same rounding, no temporary
    if mask is not None:
        # the mask is per (row, query, key); broadcast it over the n_rep heads of the group
        scores.view(B, Hkv, n_rep, T, S).masked_fill_(~mask[:, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.float()).to(q.dtype).view(B, H, T, D)


def fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """On a CPU `grouped` up to GROUPED_MAX_QUERIES queries per row, `sdpa` above; `sdpa` elsewhere."""
    if q.device.type == "cpu" and q.shape[2] <= GROUPED_MAX_QUERIES:
        return grouped(q, k, v, mask)
    return sdpa(q, k, v, mask)
