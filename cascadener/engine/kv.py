"""The engine's key/value store: B rows of preallocated slots, and the moves a scheduler makes on them.

The model sees only the cache protocol of cascadener.qwen2.cache (`begin`, `update`); everything
else here is storage policy, owned by the engine:

    place(row, pieces)   a sequence joins: its prompt's keys/values go into a free row
    release(row)         a sequence is done: its slots are dead
    crop_rows(lengths)   each row forgets its rejected draft tokens
    compact()            dead slots and holes are squeezed out
    grow(max_len)        more slots, contents kept
    select(rows)         a smaller (or forked) store of some rows

Invariant (tests/test_engine_kv.py checks it against a list-of-lists reference under random
sequences of these moves): each row holds its sequence's keys/values in order, at slots that only
increase, and a row's next position is the number of tokens it holds. Slots are shared by all rows
(one write slot per forward, as in a left-padded batch); a per-row `valid` mask makes attention
ragged, and the causal mask compares slot order only, so moving a row's slots while keeping their
order changes nothing the model computes.
"""
from __future__ import annotations

from typing import Sequence

import torch

from cascadener.qwen2.cache import causal_pad_mask


def kv_dtype(model) -> torch.dtype:
    """float32 on a CPU, whatever the model's dtype: attention computes in float32 there
    (cascadener.kernels.attention), and a bfloat16 store would be converted again by every later
    forward, in every layer. The values stored are the model's own bfloat16 keys and values,
    exactly, so nothing changes but where the conversion happens. Other devices keep the model's
    dtype for their fused kernels."""
    return torch.float32 if model.device.type == "cpu" else model.dtype


class KVStore:
    """(layers, B, kv_heads, max_len, head_dim) key and value buffers, written slot by slot."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0          # slots in use (the same for every row)
        self._start = 0          # first slot of the forward in progress

    @classmethod
    def for_model(cls, model, batch: int, max_len: int) -> KVStore:
        c = model.config
        return cls(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, max_len, kv_dtype(model),
                   model.device)

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    @property
    def device(self) -> torch.device:
        return self.valid.device

    # --- the model's protocol (cascadener.qwen2.cache.KVCache) ---------------------------------------

    def begin(self, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = pad_mask.shape
        if B != self.batch:
            raise ValueError(f"store holds {self.batch} rows, input has {B}")
        positions = self.next_pos[:, None] + (pad_mask.long().cumsum(-1) - 1).clamp(min=0)
        start = self.take_slots(pad_mask)
        keys_valid = self.valid[:, :self.length]
        if T == 1 and bool(keys_valid.all()):
            return positions, None           # one query seeing every key: no mask needed
        return positions, causal_pad_mask(pad_mask, keys_valid, offset=start)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, e = self._start, self.length
        self.k[layer, :, :, s:e] = k
        self.v[layer, :, :, s:e] = v
        return self.k[layer, :, :, :e], self.v[layer, :, :, :e]

    def take_slots(self, pad_mask: torch.Tensor) -> int:
        """`begin`'s bookkeeping alone: the next pad_mask.shape[1] slots, held by the real tokens
        of pad_mask (B, T). Returns the first slot. A static step (engine/graphs.py) calls it
        directly: it writes its keys at a device-held slot and must not read the device back."""
        start, end = self.length, self.length + pad_mask.shape[1]
        if end > self.max_len:
            raise ValueError(f"store overflow: {end} slots needed, {self.max_len} allocated")
        self.valid[:, start:end] = pad_mask
        self.next_pos += pad_mask.sum(-1)
        self._start, self.length = start, end
        return start

    # --- reading -------------------------------------------------------------------------------------

    def row_kv(self, row: int) -> torch.Tensor:
        """The KV (layers, 2, kv_heads, n, head_dim) of a row's real tokens, in order."""
        slots = self.valid[row, :self.length].nonzero().flatten()
        return torch.stack((self.k[:, row][:, :, slots], self.v[:, row][:, :, slots]), dim=1)

    # --- continuous batching: rows change hands between sequences ------------------------------------

    def place(self, row: int, pieces: Sequence[torch.Tensor]) -> None:
        """Give `row` a sequence that starts at position 0 and whose keys and values are the
        concatenated `pieces`, each (layers, 2, kv_heads, n_i, head_dim) (a prefix from the radix
        tree, or a row of a fresh prefill), replacing whatever the row held. They end at the shared
        length, right-aligned like a left-padded prompt, so the row's next token goes in the next
        shared slot. No pieces: an empty row, starting at position 0."""
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

    def release(self, row: int) -> None:
        """Forget everything `row` holds; its slots become dead (and reclaimable by `compact`)."""
        self.valid[row] = False
        self.next_pos[row] = 0

    def crop_rows(self, lengths: torch.Tensor | Sequence[int]) -> None:
        """Forget, in each row r, every slot from `lengths[r]` on (rejected draft tokens).

        Rows accept drafts of different lengths: a row's forgotten slots become holes that its later
        tokens never attend to and that do not count towards its positions. The shared length
        shrinks to the longest row, so slots past every row's end are reused."""
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        if lengths.shape != (self.batch,) or bool((lengths < 0).any() | (lengths > self.length).any()):
            raise ValueError(f"cannot crop a store of length {self.length} to {lengths.tolist()}")
        slot = torch.arange(self.length, device=self.device)
        drop = (slot[None, :] >= lengths[:, None]) & self.valid[:, :self.length]
        self.next_pos -= drop.sum(-1)
        self.valid[:, :self.length] &= ~drop
        self.length = int(lengths.max())

    def compact(self) -> None:
        """Move each row's real slots, in order, to the right end of the first n slots (n = the
        most any row holds), like a left-padded prompt: holes and dead rows are squeezed out."""
        n = int(self.valid[:, :self.length].sum(-1).max()) if self.length else 0
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
        Output lengths are not known in advance, so stores start small and grow on demand."""
        if max_len <= self.max_len:
            return
        more = max_len - self.max_len
        self.k = torch.cat([self.k, self.k.new_zeros(*self.k.shape[:3], more, self.k.shape[4])], dim=3)
        self.v = torch.cat([self.v, self.v.new_zeros(*self.v.shape[:3], more, self.v.shape[4])], dim=3)
        self.valid = torch.cat([self.valid, self.valid.new_zeros(self.batch, more)], dim=1)

    def make_room(self, width: int) -> None:
        """Room for `width` more slots: squeeze out dead slots first, and only when real tokens
        fill the store, double it."""
        if self.length + width > self.max_len:
            self.compact()
        if self.length + width > self.max_len:
            self.grow(max(2 * self.max_len, self.length + width))

    def select(self, rows: torch.Tensor | Sequence[int]) -> KVStore:
        """A new store holding the given rows (repeats allowed: fork one prompt into k samples)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        new = object.__new__(KVStore)
        new.k, new.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        new.valid, new.next_pos = self.valid.index_select(0, rows), self.next_pos.index_select(0, rows)
        new.length, new._start = self.length, self._start
        return new

    def _pad_left(self, n: int) -> None:
        """Shift every row's slots `n` to the right (more left padding), growing if needed."""
        self.grow(max(self.max_len, self.length + n))
        length = self.length
        self.k[:, :, :, n:length + n] = self.k[:, :, :, :length].clone()
        self.v[:, :, :, n:length + n] = self.v[:, :, :, :length].clone()
        self.valid[:, n:length + n] = self.valid[:, :length].clone()
        self.valid[:, :n] = False
        self.length = length + n
