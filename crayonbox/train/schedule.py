"""Learning-rate schedule and run length, shared by the VQGAN and transformer trainers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crayonbox.train.runtime import Dist


@dataclass
class WarmupCosine:
    """LR multiplier: linear warmup to 1, then cosine down to `floor` at `total` steps (nanoGPT's get_lr);
    `total` 0 = not known yet (see `StepPlan`): hold the peak. A callable object rather than a function, so
    LambdaLR's state_dict (and so the checkpoint) keeps its fields."""

    warmup: int
    total: int
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.total == 0:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepPlan:
    """The run's length: `--steps N`, or with `--steps 0` as many steps as fit in `--max-minutes`.

    The speed is measured over this process's first min(warmup, 50) steps (the warmup's LR does not depend on
    the total), then the total goes into the schedule, so the cosine ends exactly at the budget and a resumed
    run keeps the same total (it is in the scheduler's state). All processes take rank 0's number.
    """

    shape: WarmupCosine
    max_minutes: float
    first_step: int  # where this process started (0, or the checkpoint's step)
    reserve: float = 0.1  # share of the remaining time kept for evaluations, sample grids and the export

    def update(self, done: int, seconds_here: float, elapsed: float, dist: Dist) -> None:
        """Fix the total once enough steps were timed (no-op when it is known)."""
        measured = done - self.first_step
        if self.shape.total or measured < max(1, min(self.shape.warmup, 50)):
            return
        left = max(0.0, self.max_minutes * 60 - elapsed) * (1 - self.reserve)
        total = torch.tensor([done + max(1, int(left / (seconds_here / measured)))], device=dist.device)
        if dist.world > 1:
            torch.distributed.broadcast(total, src=0)
        self.shape.total = int(total)
