"""The label constraint: a classification answer must be one of the offered labels.

Rather than generating free text and hoping it matches, the answer is decoded greedily with every
step restricted to the tokens that continue some candidate: a trie over the candidates' token ids,
handed to the engine as a request's constraint (cascadener.engine.constraint). Each candidate
ends with the end-of-turn token, so "art" cannot win by being a prefix of "artist". Two
consequences:

* whenever free greedy decoding would have produced one of the candidates, this produces the same
  one: at every step the free argmax is an allowed token, so it is also the restricted argmax;
* the answer's probability is that of the constrained model (the engine's `Generation.logprob`):
  the product, over the steps, of the chosen token's probability renormalised over the allowed ones.

Decoding stops as soon as one candidate is left (`done`), so labels that differ in their first
token (person / location / organization / miscellaneous) are decided by the prompt's last hidden
state, which the prefill computes anyway: no decoding step at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from cascadener.engine.constraint import Allowed


@dataclass(eq=False)
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    candidates: list[int] = field(default_factory=list)       # the candidates whose path runs through here
    allowed: Allowed | None = None

    @property
    def decided(self) -> bool:
        return len(self.candidates) == 1 or not self.children   # (a leaf shared by repeated candidates)


class LabelChoice:
    """A trie over candidate token sequences; its states are the trie's nodes."""

    def __init__(self, candidates: Sequence[Sequence[int]]):
        if not candidates or any(len(c) == 0 for c in candidates):
            raise ValueError("a label choice needs at least one candidate, none of them empty")
        self.candidates = [list(c) for c in candidates]
        self.start = _Node()
        for i, c in enumerate(candidates):
            node = self.start
            node.candidates.append(i)
            for token in c:
                node = node.children.setdefault(token, _Node())
                node.candidates.append(i)

    def allowed(self, node: _Node) -> Allowed:
        if node.allowed is None:
            node.allowed = Allowed(torch.tensor(sorted(node.children), dtype=torch.long), node.children)
        return node.allowed

    def done(self, node: _Node) -> bool:
        return node.decided

    def draft(self, node: _Node, n: int) -> list[int]:
        return []

    def chosen(self, tokens: Sequence[int]) -> int:
        """The index of the candidate that the decoded `tokens` decided."""
        node = self.start
        for t in tokens:
            node = node.children[t]
        return node.candidates[0]
