"""Choosing among known answers by constrained greedy decoding over their token trie.

For a classification prompt the answer must be one of the candidate labels. Rather than
generating free text and hoping it matches, the answer is decoded greedily with every step
restricted to the tokens that continue some candidate (each candidate ends with the end-of-turn
token, so "art" cannot win by being a prefix of "artist"). Two consequences:

* whenever free greedy decoding would have produced one of the candidates, this produces the same
  one: at every step the free argmax is an allowed token, so it is also the restricted argmax;
* the answer's probability is that of the constrained model: the product, over the steps, of the
  chosen token's probability renormalised over the allowed ones.

Steps cost little. The first one reads the prompt's last hidden state, which the prefill computes
anyway, through the LM head rows of the allowed tokens only; decoding stops as soon as one
candidate is left, so labels that differ in their first token (person / location / organization
/ miscellaneous) take no decoding step at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from cascadener.engine.generation import PrefillCounter, prefill
from cascadener.qwen2.model import Qwen2
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.restricted_head import restricted_logits


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    candidates: list[int] = field(default_factory=list)       # the candidates whose path runs through here

    @property
    def decided(self) -> bool:
        return len(self.candidates) == 1 or not self.children   # (a leaf shared by repeated candidates)


def _trie(candidates: Sequence[Sequence[int]]) -> _Node:
    root = _Node()
    for i, c in enumerate(candidates):
        node = root
        node.candidates.append(i)
        for token in c:
            node = node.children.setdefault(token, _Node())
            node.candidates.append(i)
    return root


@torch.inference_mode()
def choose_greedy(model: Qwen2, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]],
                  pad_id: int = 0, counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None
                  ) -> list[tuple[int, float]]:
    """For each prompt, (index of the chosen candidate, its probability under the constrained
    model); candidates[i] are token sequences for prompts[i], each ending with the end token."""
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts for {len(candidates)} candidate lists")
    if any(not cands or any(not c for c in cands) for cands in candidates):
        raise ValueError("every prompt needs at least one non-empty candidate")
    device = model.device
    width = max(len(c) for cands in candidates for c in cands)
    cache, hidden = prefill(model, prompts, width, pad_id, counter, prefix_cache, logits=False)
    nodes = [_trie(cands) for cands in candidates]
    probability = [1.0] * len(prompts)
    undecided = [r for r, node in enumerate(nodes) if not node.decided]
    while undecided:
        allowed = [torch.tensor(sorted(nodes[r].children)) for r in undecided]
        logits, ids = restricted_logits(hidden[undecided], model.lm_head, allowed)
        probs = torch.softmax(logits, -1)
        best = probs.argmax(-1).tolist()
        feed = torch.full((len(prompts), 1), pad_id, dtype=torch.long)
        for n, r in enumerate(undecided):
            token = ids[best[n]]
            probability[r] *= float(probs[n, best[n]])
            nodes[r] = nodes[r].children[token]
            feed[r, 0] = token
        undecided = [r for r in undecided if not nodes[r].decided]
        if undecided:
            alive = torch.zeros(len(prompts), 1, dtype=torch.bool)
            alive[undecided] = True
            hidden = model.hidden_states(feed.to(device), cache, alive.to(device))[:, -1]
    return [(node.candidates[0], p) for node, p in zip(nodes, probability)]
