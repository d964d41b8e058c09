"""Where a training process runs: its place among DDP processes, its threads and its autocast precision. Shared
by the training loop (loop.py) and the step plan (schedule.py), so none of them imports a trainer."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from crayonbox.model.hardware import resolve_device, training_precision


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def autocast_for(precision: str, device: torch.device) -> AbstractContextManager:
    """The forward pass's autocast context: none for float32, bf16 autocast for bfloat16; `auto` is what the
    device computes natively (crayonbox.model.hardware.training_precision)."""
    if training_precision(precision, device) == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def setup_distributed(device: str = "auto", threads: int = 0) -> Dist:
    """One process, or DDP when launched by torchrun (WORLD_SIZE, RANK, LOCAL_RANK in the environment).

    `device`: auto | cpu | cuda; `threads`: torch threads per process, 0 = this machine's cores / processes.
    """
    use_cuda = resolve_device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    where = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(where)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // per_node))
    return Dist(rank, world, where)


def single_process(threads: int = 0, device: str = "cpu") -> Dist:
    """One process (the VQGAN trainer) on `device` (auto | cpu | cuda[:N] | mps); `threads` 0 keeps torch's
    own default."""
    if threads:
        torch.set_num_threads(threads)
    return Dist(0, 1, resolve_device(device))


def finish_distributed(dist: Dist) -> None:
    """Wait for every process, then leave the process group (no-op for one process)."""
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
