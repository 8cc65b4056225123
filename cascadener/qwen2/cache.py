"""Key/value caches. The model talks to a cache through two calls only:

    positions, mask = cache.begin(pad_mask)   # once per forward, before the layers
    k, v = cache.update(layer, k, v)          # in each layer: store the new keys, return all to attend

so a different storage (paged blocks shared between sequences, a radix prefix tree) can replace
the contiguous one below without touching the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

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
    def for_pad_mask(cls, rope: Tables, mask: torch.Tensor | None, pad_mask: torch.Tensor) -> AttentionMeta:
        if bool(pad_mask.all()):
            return cls(rope, mask, tuple(pad_mask.shape))
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


def kv_dtype(model) -> torch.dtype:
    """float32 on a CPU, whatever the model's dtype: attention computes in float32 there
    (cascadener.kernels.attention), and a bfloat16 cache would be converted again by every later forward, in
    every layer (it was the largest single cost of batched decoding). The values stored are the
    model's own bfloat16 keys and values, exactly, so nothing changes but where the conversion
    happens. Other devices keep the model's dtype for their fused cascadener.kernels."""
    return torch.float32 if model.device.type == "cpu" else model.dtype


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
        return cls(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, max_len, kv_dtype(model),
                   model.device)

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

    # --- Speculative decoding: forget rejected tokens row by row -----------------------------------

    def crop_rows(self, lengths: torch.Tensor | list[int]) -> None:
        """Forget, in each row r, every slot from `lengths[r]` on (rejected draft tokens).

        Rows of a batch accept drafts of different lengths, so one shared `crop` cannot serve them:
        a row's forgotten slots become holes that its later tokens never attend to and that do not
        count towards its positions. The shared length shrinks to the longest row, so slots past
        every row's end are reused; `crop_rows([n] * batch)` is `crop(n)`.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.valid.device)
        if lengths.shape != (self.batch,) or bool((lengths < 0).any() | (lengths > self.length).any()):
            raise ValueError(f"cannot crop a cache of length {self.length} to {lengths.tolist()}")
        slot = torch.arange(self.length, device=self.valid.device)
        drop = (slot[None, :] >= lengths[:, None]) & self.valid[:, :self.length]
        self.next_pos -= drop.sum(-1)
        self.valid[:, :self.length] &= ~drop
        self.length = int(lengths.max())

    def compact(self) -> None:
        """Close the holes `crop_rows` leaves: move each row's real slots, in order, to the right
        end of the first n slots (n = the most any row holds), like a left-padded prompt.

        Keys carry their rotary positions with them, and the causal mask only compares slot order,
        which the move keeps, so attention sees exactly what it saw before.
        """
        n = int(self.valid[:, :self.length].sum(-1).max())
        # A stable sort of the 0/1 validity puts each row's holes first and its real slots after
        # them, in their original order; the last n columns are therefore every real slot.
        order = torch.sort(self.valid[:, :self.length].to(torch.uint8), dim=-1, stable=True).indices
        keep = order[:, self.length - n:]
        index = keep[None, :, None, :, None].expand(self.k.shape[0], -1, self.k.shape[2], -1, self.k.shape[4])
        self.k[:, :, :, :n] = self.k[:, :, :, :self.length].gather(3, index)
        self.v[:, :, :, :n] = self.v[:, :, :, :self.length].gather(3, index)
        self.valid[:, :n] = self.valid.gather(1, keep)
        self.valid[:, n:] = False
        self.length = n

    def grow(self, max_len: int) -> None:
        """Reallocate the buffers for `max_len` slots, keeping every slot's contents and state.

        Copy-marking cannot know its output length in advance (it is bounded, but the bound is
        several times the usual length), so it starts small and grows on demand instead.
        """
        if max_len <= self.max_len:
            return
        more = max_len - self.max_len
        self.k = torch.cat([self.k, self.k.new_zeros(*self.k.shape[:3], more, self.k.shape[4])], dim=3)
        self.v = torch.cat([self.v, self.v.new_zeros(*self.v.shape[:3], more, self.v.shape[4])], dim=3)
        self.valid = torch.cat([self.valid, self.valid.new_zeros(self.batch, more)], dim=1)

    def make_room(self, width: int) -> None:
        """Room for `width` more slots: squeeze out dead slots first, and only when real tokens
        fill the cache, double it."""
        if self.length + width > self.max_len:
            self.compact()
        if self.length + width > self.max_len:
            self.grow(max(2 * self.max_len, self.length + width))

    # --- Continuous batching: rows change hands between sequences ------------------------------------

    def release(self, row: int) -> None:
        """Forget everything `row` holds; its slots become dead (and reclaimable by `compact`)."""
        self.valid[row] = False
        self.next_pos[row] = 0

    def place(self, row: int, pieces: Sequence[torch.Tensor]) -> None:
        """Give `row` a sequence that starts at position 0 and whose keys and values are the
        concatenated `pieces`, each (layers, 2, kv_heads, n_i, head_dim) (a prefix from the radix
        tree, or a row of a fresh prefill), replacing whatever the row held. They are copied in
        order so that they end at this cache's shared length, right-aligned like a left-padded
        prompt: the row's next token then goes in the next shared slot, and the causal mask, which
        compares slot order only, stays right. No pieces: an empty row, starting at position 0."""
        n = sum(p.shape[3] for p in pieces)
        if n > self.length:
            self._pad_left(n - self.length)
        at = self.length - n
        for p in pieces:
            m = p.shape[3]
            self.k[:, row, :, at:at + m] = p[:, 0]
            self.v[:, row, :, at:at + m] = p[:, 1]
            at += m
        self.valid[row] = False
        self.valid[row, self.length - n:self.length] = True
        self.next_pos[row] = n

    def _pad_left(self, n: int) -> None:
        """Shift every row's slots `n` to the right (more left padding), growing if needed."""
        self.grow(max(self.max_len, self.length + n))
        length = self.length
        self.k[:, :, :, n:length + n] = self.k[:, :, :, :length].clone()
        self.v[:, :, :, n:length + n] = self.v[:, :, :, :length].clone()
        self.valid[:, n:length + n] = self.valid[:, :length].clone()
        self.valid[:, :n] = False
        self.length = length + n
