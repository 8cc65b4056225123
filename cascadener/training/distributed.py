"""Data parallelism without DistributedDataParallel: every process holds the whole model, trains on
its own micro-batches, and the trainable (LoRA) gradients are summed with one all_reduce per step.

Started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment): gloo on CPU, nccl on GPU.
Without torchrun it is a world of one and every call is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from cascadener.engine.device import resolve_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    def sum_grads(self, params: Sequence[torch.nn.Parameter], loss_sum: float) -> float:
        """Sum the gradients (and the loss) over processes, in one flat buffer. Each process has
        already divided its loss by the global batch's token count, so the sum is exactly the
        gradient one process would get for the whole global batch."""
        if self.size == 1:
            return loss_sum
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads] + [torch.tensor([loss_sum], device=self.device)])
        dist.all_reduce(flat)
        for p, g in zip(params, flat[:-1].split([p.numel() for p in params])):
            p.grad = g.view_as(p)
        return flat[-1].item()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's list, concatenated in rank order, on every process."""
        if self.size == 1:
            return items
        parts: list[list[Any]] = [[] for _ in range(self.size)]
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init(device: str = "auto") -> World:
    """One process on `device` (auto: CUDA when there is one), or torchrun's processes, one GPU each."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return World(device=resolve_device(device))
    local = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
