"""Key/value caches. The model talks to a cache through two calls only:

    positions, mask = cache.begin(pad_mask)   # once per forward, before the layers
    k, v = cache.update(layer, k, v)          # in each layer: store the new keys, return all to attend

so a different storage (paged blocks shared between sequences, a radix prefix tree) can replace
the contiguous one below without touching the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class AttentionMeta:
    """Per-forward data every layer shares: rotary tables (B, T, D) and the boolean mask (B, 1, T, S)."""
    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor | None


def causal_pad_mask(query_valid: torch.Tensor, key_valid: torch.Tensor, offset: int) -> torch.Tensor:
    """Boolean (B, 1, T, S) mask: query t (at slot offset+t) may see key slot s <= offset+t if s is real.

    A padding query would see no key at all, and softmax over an all -inf row is NaN, which then
    poisons real rows through 0 * NaN. Letting every query see its own slot keeps it finite; pad
    outputs are garbage but never read.
    """
    T, S = query_valid.shape[1], key_valid.shape[1]
    q_slot = torch.arange(T, device=key_valid.device)[:, None] + offset
    k_slot = torch.arange(S, device=key_valid.device)[None, :]
    mask = (k_slot <= q_slot)[None] & key_valid[:, None, :]
    mask |= (k_slot == q_slot)[None]
    return mask[:, None]


class KVCache(Protocol):
    def begin(self, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class StaticKVCache:
    """Preallocated (layers, B, kv_heads, max_len, head_dim) buffers, written slot by slot.

    All rows share the slot index (a left-padded batch keeps its padding in the cache), while each
    row keeps its own next position and its own record of which slots hold real tokens. Pad slots
    are never attended to by real tokens, so their contents do not matter.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0          # slots filled (the same for every row)
        self._start = 0          # first slot of the forward in progress

    @classmethod
    def for_model(cls, model, batch: int, max_len: int) -> StaticKVCache:
        c = model.config
        return cls(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, max_len, model.dtype, model.device)

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    def begin(self, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = pad_mask.shape
        if B != self.batch:
            raise ValueError(f"cache holds {self.batch} rows, input has {B}")
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"cache overflow: {end} slots needed, {self.max_len} allocated")
        self.valid[:, start:end] = pad_mask
        positions = self.next_pos[:, None] + (pad_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.next_pos += pad_mask.sum(-1)
        self._start, self.length = start, end
        keys_valid = self.valid[:, :end]
        if T == 1 and bool(keys_valid.all()):
            return positions, None           # one query seeing every key: no mask needed
        return positions, causal_pad_mask(pad_mask, keys_valid, offset=start)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, e = self._start, self.length
        self.k[layer, :, :, s:e] = k
        self.v[layer, :, :, s:e] = v
        return self.k[layer, :, :, :e], self.v[layer, :, :, :e]

    def crop(self, length: int) -> None:
        """Forget every slot from `length` on (rejected speculative tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.next_pos -= self.valid[:, length:self.length].sum(-1)
        self.valid[:, length:] = False
        self.length = length

    def select(self, rows: torch.Tensor | list[int]) -> StaticKVCache:
        """A new cache holding the given rows (repeats allowed: fork one prompt into k samples)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.valid.device)
        new = object.__new__(StaticKVCache)
        new.k, new.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        new.valid, new.next_pos = self.valid.index_select(0, rows), self.next_pos.index_select(0, rows)
        new.length, new._start = self.length, self._start
        return new
