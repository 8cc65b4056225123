"""What the forward pass needs from a key/value cache, and nothing more. Two calls:

    positions, mask = cache.begin(pad_mask)   # once per forward, before the layers
    k, v = cache.update(layer, k, v)          # in each layer: store the new keys, return all to attend

Where the keys live and how rows change hands (placement, release, compaction, growth) is the
engine's business: cascadener.engine.kv.KVStore implements this protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from cascadener.kernels.rope import Tables


@dataclass
class AttentionMeta:
    """Per-forward data every layer shares: rotary tables (cascadener.kernels.rope.Tables), the boolean mask
    (B, 1, T, S), and where the real tokens sit in the (B, T) grid of slots.

    Between attentions the model carries only the real tokens, (N, C): a batch of ragged rows is
    padded to a grid for attention and the cache, but padding never goes through a linear layer,
    which is where the time goes (a pipeline batch was half padding). `to_grid` and `from_grid`
    move between the two layouts.
    """
    rope: Tables
    mask: torch.Tensor | None
    grid: tuple[int, int]                  # (B, T)
    real: torch.Tensor | None = None       # flat indices (into B*T) of the real tokens; None = all
    pad: torch.Tensor | None = None        # flat indices of the padding slots (the rest)

    @classmethod
    def for_pad_mask(cls, rope: Tables, mask: torch.Tensor | None, pad_mask: torch.Tensor | None,
                     grid: tuple[int, int]) -> AttentionMeta:
        """pad_mask None: every token is real, known without reading the device (a CUDA graph
        cannot wait for it: cascadener.engine.graphs)."""
        if pad_mask is None or bool(pad_mask.all()):
            return cls(rope, mask, grid)
        flat = pad_mask.flatten()
        return cls(rope, mask, tuple(pad_mask.shape), flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1))

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """(N, F) rows of real tokens -> (B*T, F), zeros at padding.

        Only the padding slots are zeroed (values there must be finite: a masked key still
        multiplies its value by a zero probability); the real rows are written once."""
        if self.real is None:
            return t
        grid = t.new_empty(self.grid[0] * self.grid[1], t.shape[-1]).index_fill_(0, self.pad, 0)
        return grid.index_copy_(0, self.real, t)

    def from_grid(self, t: torch.Tensor) -> torch.Tensor:
        """(B*T, F) -> (N, F): the real tokens' rows."""
        return t if self.real is None else t.index_select(0, self.real)


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
