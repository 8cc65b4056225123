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
    """One process on `device` (auto: CUDA when there is one), or torchrun's processes (see
    `process_device`): nccl between GPUs, gloo between CPU processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return World(device=resolve_device(device))
    local = int(os.environ["LOCAL_RANK"])
    dev = process_device(device, local, int(os.environ.get("LOCAL_WORLD_SIZE", local + 1)),
                         torch.cuda.device_count())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), dev)


def process_device(device: str, local_rank: int, local_world: int, gpus: int) -> torch.device:
    """The device of torchrun's process `local_rank` of the `local_world` on this machine: a GPU
    each, or the CPU for all. auto takes the GPUs only when there is one for every process."""
    if str(device) == "auto":
        return torch.device("cuda", local_rank) if 0 < local_world <= gpus else torch.device("cpu")
    dev = resolve_device(device)
    if dev.type == "cpu":
        return dev
    if local_world > gpus:
        raise ValueError(f"device {device!r}: {local_world} processes on this machine need a GPU each, "
                         f"torch sees {gpus} (use --device cpu, or fewer processes)")
    return torch.device("cuda", local_rank)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
