"""The engine's storage invariants, as state machines against plain references.

KVStore (cascadener.engine.kv): whatever sequence of forwards, placements, releases, crops,
compactions, growths and selections, each row holds exactly its sequence's keys and values, in
order, and its next position is their count. PrefixCache (cascadener.engine.prefix_cache):
whatever sequence of inserts and matches, a match is a prefix some inserted prompt shares with the
query, carrying that prompt's own keys and values; the newest prompt survives eviction whole; the
tree never holds more than its budget.
"""
from __future__ import annotations

import itertools

import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cascadener.engine.kv import KVStore
from cascadener.engine.prefix_cache import PrefixCache

LAYERS = 2


def kv_of(ids: list[int]) -> torch.Tensor:
    """(layers, 2, 1, n, 1): key id*10+layer, value -(id*10+layer), so a wrong slot is visible."""
    t = torch.tensor(ids, dtype=torch.float32)
    keys = torch.stack([t * 10 + layer for layer in range(LAYERS)])             # (layers, n)
    return torch.stack((keys, -keys), dim=1)[:, :, None, :, None]


class KVStoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.store = KVStore(LAYERS, 3, 1, 1, 4, torch.float32)
        self.rows: list[list[int]] = [[], [], []]         # the reference: each row's token ids, in order
        self.fresh = itertools.count(1)
        self.last_block: tuple[int, list[int]] | None = None   # (start slot, tokens each row fed) of the last forward

    @rule(data=st.data())
    def forward(self, data):
        """A right-padded block, as a decoding step feeds it (the pending token and a draft)."""
        B = self.store.batch
        fed = data.draw(st.lists(st.integers(0, 3), min_size=B, max_size=B))
        T = max(max(fed), 1)
        self.store.make_room(T)
        start = self.store.length
        mask = torch.tensor([[t < f for t in range(T)] for f in fed])
        ids = [[next(self.fresh) for _ in range(T)] for _ in range(B)]
        positions, _ = self.store.begin(mask)
        for r in range(B):
            assert positions[r, :fed[r]].tolist() == list(range(len(self.rows[r]), len(self.rows[r]) + fed[r]))
        for layer in range(LAYERS):
            k = torch.stack([kv_of(row)[layer, 0] for row in ids])                 # (B, 1, T, 1)
            self.store.update(layer, k, -k)
        for r in range(B):
            self.rows[r] += ids[r][:fed[r]]
        self.last_block = (start, fed)

    @precondition(lambda self: self.last_block is not None)
    @rule(data=st.data())
    def crop_rows(self, data):
        """Each row keeps a prefix of what it fed in the last forward (its accepted draft)."""
        start, fed = self.last_block
        keep = [data.draw(st.integers(0, f)) for f in fed]
        self.store.crop_rows([start + k for k in keep])
        for r, (f, k) in enumerate(zip(fed, keep)):
            del self.rows[r][len(self.rows[r]) - (f - k):]
        self.last_block = None

    @rule(row=st.integers(0, 2), n=st.integers(0, 6), cut=st.integers(0, 6))
    def place(self, row, n, cut):
        row %= self.store.batch
        ids = [next(self.fresh) for _ in range(n)]
        kv = kv_of(ids)
        pieces = [kv[:, :, :, :min(cut, n)], kv[:, :, :, min(cut, n):]]          # a prefix and the rest
        self.store.place(row, [p for p in pieces if p.shape[3]])
        self.rows[row] = ids
        self.last_block = None

    @rule(row=st.integers(0, 2))
    def release(self, row):
        row %= self.store.batch
        self.store.release(row)
        self.rows[row] = []
        self.last_block = None

    @rule()
    def compact(self):
        self.store.compact()
        self.last_block = None

    @rule(more=st.integers(0, 5))
    def grow(self, more):
        self.store.grow(self.store.max_len + more)

    @rule(rows=st.lists(st.integers(0, 2), min_size=1, max_size=3))
    def select(self, rows):
        rows = [r % self.store.batch for r in rows]
        self.store = self.store.select(rows)
        self.rows = [list(self.rows[r]) for r in rows]
        self.last_block = None

    @invariant()
    def rows_hold_their_sequences(self):
        s = self.store
        assert 0 <= s.length <= s.max_len and not s.valid[:, s.length:].any()
        for r, ids in enumerate(self.rows):
            assert torch.equal(s.row_kv(r), kv_of(ids)), (r, ids)
            assert int(s.next_pos[r]) == len(ids)


TestKVStore = KVStoreMachine.TestCase
TestKVStore.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


def common(a, b) -> int:
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


def positional_kv(ids: list[int]) -> torch.Tensor:
    """KV whose values encode (token, position): a prefix's KV is the same in every prompt."""
    t = torch.tensor([tok * 1000 + pos for pos, tok in enumerate(ids)], dtype=torch.float32)
    return t[None, None, None, :, None].expand(1, 2, 1, len(ids), 1).clone()


class PrefixCacheMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tree: PrefixCache | None = None
        self.inserted: list[list[int]] = []

    @precondition(lambda self: self.tree is None)
    @rule(budget=st.sampled_from([10, 24, 10_000]))   # each >= 15/16 of it holds a prompt
    def start(self, budget):
        self.tree = PrefixCache(budget_tokens=budget)

    @precondition(lambda self: self.tree is not None)
    @rule(ids=st.lists(st.integers(0, 3), min_size=1, max_size=10))
    def insert(self, ids):
        self.tree.insert(ids, positional_kv(ids))
        self.inserted.append(ids)
        assert self.tree.match(ids)[0] == len(ids)               # the newest prompt survives whole

    @precondition(lambda self: self.tree is not None)
    @rule(query=st.lists(st.integers(0, 3), max_size=10))
    def match(self, query):
        n, pieces = self.tree.match(query)
        best = max((common(p, query) for p in self.inserted), default=0)
        assert n <= best
        if self.tree.budget >= sum(map(len, self.inserted)):    # nothing can have been evicted
            assert n == best
        got = torch.cat(pieces, dim=3) if pieces else positional_kv([])
        assert torch.equal(got, positional_kv(query[:n]))

    @invariant()
    def within_budget(self):
        if self.tree is not None:
            assert self.tree.size <= self.tree.budget
            assert self.tree.size == sum(len(n.tokens) for n in self.tree._nodes())


TestPrefixCache = PrefixCacheMachine.TestCase
TestPrefixCache.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
