"""Where a training process runs: its place among DDP processes and its autocast precision. Shared by the
transformer and VQGAN trainers and the step plan (schedule.py), so none of them imports another trainer."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from crayonbox.errors import CrayonboxError


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def autocast_for(precision: str, device: torch.device) -> AbstractContextManager:
    """The forward pass's autocast context (none for float32)."""
    if precision not in ("bfloat16", "float32"):
        raise CrayonboxError(f"--precision must be bfloat16 or float32, not {precision!r}")
    return nullcontext() if precision == "float32" else torch.autocast(device.type, dtype=torch.bfloat16)
