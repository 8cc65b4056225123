"""Which examples each optimizer step trains on, and how a micro-batch becomes tensors.

The order is a pure function of (seed, epoch, step): resuming at step s needs no saved sampler
state, and every process of a data-parallel run computes the same plan and takes its own share.

The unit is a sequence: a sentence's examples packed into a token tree (Packed, below), a long
sentence's into a few. A step's *global batch* holds batch_size * grad_accum * world_size of them. It is sorted by length and cut
into micro-batches of batch_size, and process r runs micro-batches r, r + W, r + 2W, ...
So what a step trains on depends only on the global batch size: one process with grad_accum 4
sees exactly what two processes with grad_accum 2 see.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from cascadener.training.examples import TokenizedExample

# Global batches per length-sorting window (as in HF's group_by_length): a batch holds similar
# lengths, so little padding, while the shuffle across windows keeps the epoch random.
BUCKET_WINDOW = 50


def epoch_order(lengths: Sequence[int], global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches (lists of example indices), length-bucketed, in shuffled order."""
    rng = random.Random(f"order-{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = global_batch * BUCKET_WINDOW
    for i in range(0, len(order), window):
        order[i:i + window] = sorted(order[i:i + window], key=lengths.__getitem__)
    batches = [order[i:i + global_batch] for i in range(0, len(order), global_batch)]
    rng.shuffle(batches)
    return batches


@dataclass
class Plan:
    examples: Sequence[Packed]
    batch_size: int
    global_batch: int
    seed: int
    _epoch: tuple[int, list[list[int]]] = field(default=(-1, []), init=False, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / self.global_batch)

    def global_batch_at(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_order([len(e) for e in self.examples], self.global_batch, self.seed, epoch))
        return self._epoch[1][k]

    def micro_batches(self, step: int, rank: int, world: int) -> list[list[Packed]]:
        """This process's micro-batches of the step (a short last batch may leave some with none)."""
        ordered = sorted((self.examples[i] for i in self.global_batch_at(step)), key=len)
        chunks = [ordered[i:i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        return chunks[rank::world]

    def targets_at(self, step: int) -> int:
        """Loss tokens in the whole global batch: each process scales its loss by this, so the summed
        gradients are the gradient of the global token mean."""
        return sum(self.examples[i].n_targets for i in self.global_batch_at(step))

    def tokens_at(self, step: int) -> int:
        return sum(len(self.examples[i]) for i in self.global_batch_at(step))


# A packed sequence holds at most this many tokens: sharing saves the most on a sentence's first
# few examples (the head they share), while attention over a row grows with its length squared; a
# sentence with dozens of questions (DynamicNER) becomes several sequences.
PACK_TOKENS = 384


@dataclass(frozen=True)
class Packed:
    """A sentence's training examples as one token tree, trained as one sequence.

    The examples of a sentence begin alike: the joint format's extraction prompt is the head of
    every classification prompt of its mentions, and a level's conversation extends the one before.
    Stored as a trie, each shared prefix is computed once. A token sits at its depth (its position
    in every example through it) and attends to its ancestors only, so each example sees exactly
    the keys and positions it would see alone: the loss and gradients are those of the examples
    trained one by one, with a (context, next token) pair that two examples share counted once.
    Nodes are in insertion order, so a parent always comes before its children. Under an
    activated adapter a token is also known by whether the adapter reads it (TokenizedExample.
    adapt_from): two examples share a node only if they read it alike."""
    ids: list[int]
    parent: list[int]       # the index of the token before this one; -1 at the root
    learn: list[bool]       # this token is a target, predicted at its parent
    adapted: list[bool]     # the adapter acts on this token

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        return sum(learn and p >= 0 for learn, p in zip(self.learn, self.parent))

    @property
    def depth(self) -> list[int]:
        out: list[int] = []
        for p in self.parent:
            out.append(0 if p < 0 else out[p] + 1)
        return out


def pack(examples: Sequence[TokenizedExample]) -> Packed:
    """The examples' token trie (see Packed); a token is learned if any example through it learns it."""
    ids: list[int] = []
    parent: list[int] = []
    learn: list[bool] = []
    adapted: list[bool] = []
    children: dict[tuple[int, int, bool], int] = {}     # (parent node, token, adapted) -> node
    for e in examples:
        node = -1
        for i, (token, wanted) in enumerate(zip(e.ids, e.loss_mask)):
            key = (node, token, i >= e.adapt_from)
            child = children.get(key)
            if child is None:
                child = children[key] = len(ids)
                ids.append(token)
                parent.append(node)
                learn.append(False)
                adapted.append(key[2])
            learn[child] = learn[child] or wanted
            node = child
    return Packed(ids, parent, learn, adapted)


def pack_sentence(examples: Sequence[TokenizedExample], max_tokens: int = PACK_TOKENS) -> list[Packed]:
    """A sentence's examples as few tries of at most max_tokens tokens each (an example longer
    than that alone is a trie of its own), filled in order."""
    out: list[Packed] = []
    current: list[TokenizedExample] = []
    for e in examples:
        if current and len(pack([*current, e])) > max_tokens:
            out.append(pack(current))
            current = []
        current.append(e)
    return out + [pack(current)] if current else out


@dataclass
class Batch:
    inputs: torch.Tensor        # (B, T) token ids of the trees' nodes, right-padded
    pad_mask: torch.Tensor      # (B, T) True on real tokens
    positions: torch.Tensor     # (B, T) each token's depth in its tree
    mask: torch.Tensor          # (B, 1, T, T) query token may see key token: its ancestors and itself
    predict_at: torch.Tensor    # (N,) flat index (into B*T) of the token that predicts each target
    targets: torch.Tensor       # (N,) the learned tokens
    adapted: torch.Tensor       # (B, T) the adapter acts on this token (Packed.adapted)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.inputs, self.pad_mask, self.positions, self.mask,
                                              self.predict_at, self.targets, self.adapted)))


def collate(packs: Sequence[Packed], pad_id: int) -> Batch:
    """Right padding; a padding query sees only itself (an all-masked row would be NaN in softmax,
    and NaN poisons the real rows through 0 * NaN in the backward pass)."""
    B, T = len(packs), max(len(p) for p in packs)
    inputs = torch.full((B, T), pad_id, dtype=torch.long)
    positions = torch.zeros(B, T, dtype=torch.long)
    pad_mask = torch.zeros(B, T, dtype=torch.bool)
    adapted = torch.zeros(B, T, dtype=torch.bool)
    mask = torch.eye(T, dtype=torch.bool).repeat(B, 1, 1)
    predict_at, targets = [], []
    for row, p in enumerate(packs):
        n = len(p)
        inputs[row, :n] = torch.tensor(p.ids)
        positions[row, :n] = torch.tensor(p.depth)
        pad_mask[row, :n] = True
        adapted[row, :n] = torch.tensor(p.adapted)
        see = mask[row]
        for i, up in enumerate(p.parent):           # parents first: a node sees what its parent sees
            if up >= 0:
                see[i] |= see[up]
                if p.learn[i]:
                    predict_at.append(row * T + up)
                    targets.append(p.ids[i])
    return Batch(inputs, pad_mask, positions, mask[:, None], torch.tensor(predict_at, dtype=torch.long),
                 torch.tensor(targets, dtype=torch.long), adapted)
