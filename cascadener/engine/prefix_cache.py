"""A radix tree over token prefixes whose nodes own their keys and values (SGLang's RadixAttention idea).

CascadeNER sends many prompts that start alike: the system turn, the instruction and the type list
are the same for a whole corpus; the sentence is the same for all its mentions. Every prompt that
has been run leaves its keys/values in the tree; a new prompt starts from the longest prefix
already there and only its remainder goes through the model.

    root ─ "<|im_start|>system ... Types: person, location ..." ─┬─ "Sentence: Kobe ... Entity: Kobe"
                                                                  └─ "Sentence: Kobe ... Entity: NBA"

Each edge holds a run of tokens and their KV (layers, 2, kv_heads, n, head_dim). A match that ends
inside an edge splits it. Least recently used leaves are evicted when the tree holds more than
`budget_tokens`. Keys carry their rotary position, so a prefix's KV is only valid at the positions
where it was computed: always 0..n-1 here, because every prompt starts at position 0.

Sharing with running sequences. A matched prefix is copied into the batch's own cache when the
batch starts (`KVStore.place`), so evicting a node can never change a
sequence in flight, and the tensors a batch is still copying from stay alive through Python's
reference counts; the tree needs no pin counts of its own. Forks work the same way: the k samples
of one prompt share its prefill (computed once) and each of their rows receives a copy. Paged
blocks with copy-on-write would save those copies' memory (about 25 KB per token of a row in
float32), not arithmetic; the contiguous rows keep attention one batched matmul.
"""
from __future__ import annotations

import heapq
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch

from cascadener.engine.kv import KVStore

_clock = itertools.count()


@dataclass(eq=False)
class Node:
    tokens: tuple[int, ...] = ()
    kv: torch.Tensor | None = None                 # (layers, 2, kv_heads, len(tokens), head_dim)
    children: dict[int, Node] = field(default_factory=dict)
    parent: Node | None = None
    last_used: int = 0

    def split(self, at: int) -> Node:
        """Cut this edge after `at` tokens; the head becomes a new parent node, returned."""
        head = Node(self.tokens[:at], self.kv[:, :, :, :at].clone(), {self.tokens[at]: self}, self.parent,
                    self.last_used)
        self.parent.children[self.tokens[0]] = head
        self.tokens, self.kv, self.parent = self.tokens[at:], self.kv[:, :, :, at:].clone(), head
        return head


class PrefixCache:
    def __init__(self, budget_tokens: int = 32768):   # ~400 MB of bf16 KV for the 0.5B model
        self.root = Node()
        self.budget = budget_tokens
        self.size = 0                               # tokens held
        self._owner: weakref.ref | None = None      # whose keys and values these are
        self._adapters: list[weakref.ref] = []      # activated adapters on that base (see bind)
        self.dtype: torch.dtype | None = None       # the model's: a float32 CPU cache's values are bf16 ones

    def bind(self, model, base=None) -> int:
        """Tie the tree to the model that fills it: the KV of one model (or of the same base with
        another adapter) is garbage to any other, and reusing it would fail silently. A model is
        known by its config object, which a separately loaded model never shares.

        With `base`, `model` is an activated adapter merged into a copy of it: the tree belongs to
        the base, and the tokens that `model` computes are keyed apart (token + vocab * tag, the
        tag returned here, one per such model), so several adapters on one base share the keys
        and values the base computed and never each other's. Without: tag 0, plain token keys."""
        owner = self._owner() if self._owner is not None else None
        reader = base if base is not None else model
        if owner is None:
            self._owner, self.dtype = weakref.ref(reader.config), reader.dtype
        elif owner is not reader.config:
            raise ValueError("this prefix cache holds keys and values computed by another model; "
                             "give every model its own PrefixCache")
        if base is None:
            return 0
        # tags are never reused, not even a dead adapter's: its keys may still be in the tree
        tag = next((i for i, a in enumerate(self._adapters) if a() is model.config), None)
        if tag is None:
            tag = len(self._adapters)
            self._adapters.append(weakref.ref(model.config))
        return 1 + tag

    def match(self, ids: Sequence[int]) -> tuple[int, list[torch.Tensor]]:
        """Length of the longest cached prefix of ids, and its KV pieces in order."""
        node, n, pieces = self.root, 0, []
        while n < len(ids) and ids[n] in node.children:
            child = node.children[ids[n]]
            common = _common(child.tokens, ids[n:])
            child.last_used = next(_clock)
            pieces.append(child.kv[:, :, :, :common])
            n += common
            if common < len(child.tokens):
                break
            node = child
        return n, pieces

    def insert(self, ids: Sequence[int], kv: torch.Tensor) -> None:
        """Remember the KV (layers, 2, kv_heads, len(ids), head_dim) of a whole prompt."""
        node, n = self.root, 0
        while n < len(ids):
            child = node.children.get(ids[n])
            if child is None:
                leaf = Node(tuple(ids[n:]), kv[:, :, :, n:].to(self.dtype or kv.dtype, copy=True), parent=node,
                            last_used=next(_clock))
                node.children[ids[n]] = leaf
                self.size += len(leaf.tokens)
                break
            common = _common(child.tokens, ids[n:])
            if common < len(child.tokens):
                child = child.split(common)
            child.last_used = next(_clock)
            node, n = child, n + common
        self.evict()

    def evict(self) -> None:
        """Least recently used leaves first (a parent left childless becomes a leaf in its turn),
        down to 1/16 below the budget: finding the leaves walks the whole tree, and with that
        slack a full tree is walked once per ~2,000 tokens inserted instead of at every insert."""
        if self.size <= self.budget:
            return
        target = self.budget - self.budget // 16
        leaves = [(n.last_used, id(n), n) for n in self._nodes() if not n.children]
        heapq.heapify(leaves)
        while self.size > target:
            *_, victim = heapq.heappop(leaves)
            parent = victim.parent
            del parent.children[victim.tokens[0]]
            self.size -= len(victim.tokens)
            if parent is not self.root and not parent.children:
                heapq.heappush(leaves, (parent.last_used, id(parent), parent))

    def _nodes(self) -> list[Node]:
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def store_from_prefixes(model, pieces: list[list[torch.Tensor]], extra: int) -> KVStore:
    """A store whose row r starts with the concatenated KV pieces of its cached prefix, right-aligned
    (the holes before a short one are padding), with room for `extra` more slots, so the uncached
    remainders can follow, left-padded, as in any batch. The longest prefix is placed first: the
    others then fit without shifting anything."""
    lengths = [sum(p.shape[3] for p in ps) for ps in pieces]
    store = KVStore.for_model(model, len(pieces), max(lengths, default=0) + extra)
    for r in sorted(range(len(pieces)), key=lambda r: -lengths[r]):
        store.place(r, pieces[r])
    return store
