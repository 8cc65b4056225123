"""Which examples each optimizer step trains on, and how a micro-batch becomes tensors.

The order is a pure function of (seed, epoch, step): resuming at step s needs no saved sampler
state, and every process of a data-parallel run computes the same plan and takes its own share.

A step's *global batch* holds batch_size * grad_accum * world_size examples. It is sorted by length
and cut into micro-batches of batch_size, and process r runs micro-batches r, r + W, r + 2W, ...
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
    examples: Sequence[TokenizedExample]
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

    def micro_batches(self, step: int, rank: int, world: int) -> list[list[TokenizedExample]]:
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


@dataclass
class Batch:
    inputs: torch.Tensor        # (B, T) token ids, right-padded
    pad_mask: torch.Tensor      # (B, T) True on real tokens
    targets: torch.Tensor       # (B, T) the next token at each position
    loss_mask: torch.Tensor     # (B, T) True where the target is an answer token

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.inputs, self.pad_mask, self.targets, self.loss_mask)))


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Right padding: positions count real tokens from the left (model.uncached_positions_and_mask),
    so each row sees exactly the positions and keys it would see alone."""
    B, T = len(examples), max(len(e) for e in examples) - 1
    inputs = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), pad_id, dtype=torch.long)
    pad_mask = torch.zeros(B, T, dtype=torch.bool)
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    for row, e in enumerate(examples):
        n = len(e) - 1
        inputs[row, :n] = torch.tensor(e.ids[:-1])
        targets[row, :n] = torch.tensor(e.ids[1:])
        pad_mask[row, :n] = True
        loss_mask[row, :n] = torch.tensor(e.loss_mask[1:])
    return Batch(inputs, pad_mask, targets, loss_mask)
