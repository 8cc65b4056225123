"""The one-token decode step with static shapes, captured once as a CUDA graph and replayed.

On a GPU a 0.5B model's decode step is several hundred small kernels, each launched from Python
in microseconds, and the launches, not memory bandwidth, set the pace. gpt-fast's answer, taken
here: record the step once as a CUDA graph over tensors that keep their addresses, then replay
the recording with a single launch. That needs a step with static shapes that never waits for
the device, so `StepGraph` changes how the step reads the KV store, not what it computes:

* attention reads the store's whole buffer (every slot), with the slots no row has written
  masked by `valid`, instead of slicing it to the current length;
* the slot the step writes is a device tensor, and the new keys go in with `index_copy_`;
* positions and the slot are copied into the graph's own device tensors, the mask comes from
  the store's `valid` and the slot.

The step's bookkeeping on the store (`KVStore.take_slots`: the fed rows' `valid` bit, `next_pos`,
`length`) stays in Python, before the replay; the graph itself only writes the step's keys and
values at the slot, so a replay (or a warm-up run) leaves nothing behind that the next step would
not overwrite. A graph is bound to one store buffer: when the store grows, is replaced by
`select`, or a step is wider than one token (a constraint's draft), the scheduler runs the
ordinary step or captures anew.

On a CPU the same static step runs eagerly: the arithmetic of the captured graph, which is how
the tests check it on machines without a GPU (tests/test_engine.py).
"""
from __future__ import annotations

import torch

from cascadener.engine.kv import KVStore
from cascadener.qwen2.model import Qwen2

# Recording a graph costs a few forwards (the warm-up and the capture), so a graph is recorded
# only for a buffer that has already served this many steps eagerly: a label's few tokens would
# not repay it, a generated sentence does.
EAGER_STEPS = 4


class SlotCache:
    """The model's cache protocol (cascadener.qwen2.cache) over a whole KVStore: one token per
    row, written at the slot held in the device tensor `slot`."""

    def __init__(self, store: KVStore):
        self.store = store
        self.slot = torch.zeros(1, dtype=torch.long, device=store.device)
        self.positions = torch.zeros(store.batch, 1, dtype=torch.long, device=store.device)
        self.slots = torch.arange(store.max_len, device=store.device)

    def begin(self, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Which rows are fed is already in `valid` at the slot (KVStore.take_slots); a row that
        # feeds nothing still sees its own slot, so its softmax stays finite (qwen2/cache.py).
        seen = (self.store.valid & (self.slots <= self.slot)) | (self.slots == self.slot)
        return self.positions, seen[:, None, None, :]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.store
        s.k[layer].index_copy_(2, self.slot, k.to(s.k.dtype))
        s.v[layer].index_copy_(2, self.slot, v.to(s.v.dtype))
        return s.k[layer], s.v[layer]


class StepGraph:
    """`model.hidden_states` for one token per row of `store`: a CUDA graph on a GPU (recorded
    after EAGER_STEPS eager calls), eager elsewhere. The result of `model.hidden_states(ids,
    store, fed)` for ids and fed of shape (B, 1), up to the order of float sums over masked slots."""

    def __init__(self, model: Qwen2, store: KVStore):
        self.model, self.store = model, store
        self.cache = SlotCache(store)
        self.ids = torch.zeros(store.batch, 1, dtype=torch.long, device=store.device)
        self.buffer = store.k.data_ptr()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self.hidden: torch.Tensor | None = None          # the graph's output, overwritten by each replay

    def serves(self, store: KVStore) -> bool:
        """Whether this graph still reads and writes `store`'s buffers."""
        return store is self.store and store.k.data_ptr() == self.buffer and store.max_len == len(self.cache.slots)

    def _forward(self) -> torch.Tensor:
        return self.model.hidden_states(self.ids, self.cache)

    def _capture(self) -> None:
        # Warm-up on a side stream first (cuBLAS workspaces and the allocator settle), as
        # torch.cuda.graphs documents; then record. Recording launches nothing.
        side = torch.cuda.Stream(self.store.device)
        side.wait_stream(torch.cuda.current_stream(self.store.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream(self.store.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.hidden = self._forward()

    def __call__(self, ids: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, 1, C) of the step; the store advances by one slot as with `begin`."""
        s = self.store
        self.cache.positions.copy_(s.next_pos[:, None])
        self.cache.slot.fill_(s.take_slots(fed))
        self.ids.copy_(ids)
        self.calls += 1
        if s.device.type != "cuda" or self.calls <= EAGER_STEPS:
            return self._forward()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.hidden
