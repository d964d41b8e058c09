"""The training loop the transformer (model.py) and VQGAN (vqgan.py) trainers share: everything about a run that
is not its model, its batches or its loss.

    claim_run_folder(out, kind, resume, "a VQGAN run")              # before any work: never into someone's folder
    check_run_options(precision, steps, max_minutes)
    task = MyTask(...)                                              # model, batches, loss, evaluation, extras
    result = TrainingLoop(settings, dist, task, optimizer).run()   # resume … train … final checkpoint
    export(task.model, result.evaluation)

`TrainingLoop` owns the LR schedule (warmup, then cosine to `min_lr_ratio`, schedule.py), the run length
(`steps`, or with `steps` 0 as many as fit in `max_minutes`: StepPlan), resuming from OUT/train/checkpoint.pt
(model, optimizer, scheduler, every RNG state, the task's extras), the checkpoint, evaluation and time-budget
cadence, DDP (wrapping the model, rank 0 logs and checkpoints, every process stops together), gradient
clipping, the metrics log (OUT/train/metrics.csv) and the progress bar. A `Task` supplies the rest.

A killed run resumes to byte-identical weights (tests/train/test_resume.py) because every step is a pure
function of (seed, step) and of the state the checkpoint holds, and because the order of the calls below, and so
of every random draw, is fixed: forward_backward, clip, optimizer step, after_update, evaluate, after_log,
checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from crayonbox.config import remove_stale_temporaries
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import claim_output_folder
from crayonbox.train import checkpoint as ckpt
from crayonbox.train.runtime import Dist, autocast_for
from crayonbox.train.schedule import StepPlan, WarmupCosine

CHECKPOINT = "train/checkpoint.pt"  # relative to the output folder


def claim_run_folder(out: str | Path, kind: str, resume: bool, noun: str, dist: Dist | None = None) -> None:
    """Claim `out` for a run of `kind`, and refuse to start over a run there unless it is resumed.

    `noun` names the run in the error ("a training run", "a VQGAN run"). Under DDP rank 0 claims first and the
    other processes check after it: looking at the same time, they could see the folder with rank 0's marker
    still a temporary file, i.e. someone else's folder. (If rank 0 refuses, torchrun stops the others.)
    """
    shared = dist is not None and dist.world > 1
    if shared and not dist.main:
        torch.distributed.barrier()
    claim_output_folder(out, kind, CHECKPOINT)  # never into someone's folder
    if (Path(out) / CHECKPOINT).exists() and not resume:
        raise CrayonboxError(f"{out} already holds {noun}: pass --resume to continue it, or choose another --out")
    if shared and dist.main:
        torch.distributed.barrier()


def check_run_options(precision: str, steps: int, max_minutes: float) -> None:
    """Reject a bad --precision, and --steps 0 without a time budget, before any work."""
    autocast_for(precision, torch.device("cpu"))
    if steps == 0 and max_minutes <= 0:
        raise CrayonboxError("--steps 0 means 'as many as fit in the time budget': give --max-minutes too")


def time_is_up(max_minutes: float, elapsed: float, dist: Dist) -> bool:
    """Whether the `max_minutes` budget is spent; every process gets rank 0's answer (all stop together)."""
    if max_minutes <= 0:
        return False
    flag = torch.tensor([float(elapsed >= max_minutes * 60)], device=dist.device)
    if dist.world > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


@dataclass
class LoopSettings:
    """What the loop needs from a trainer's config."""

    out: Path  # the output folder; the loop writes OUT/train/checkpoint.pt and OUT/train/metrics.csv
    name: str  # the progress bar's label
    steps: int  # optimizer steps in all; 0 = as many as fit in max_minutes
    warmup_steps: int
    min_lr_ratio: float  # the cosine ends at the peak LR × this
    batch_size: int  # global rows per step (for samples/s and the data position)
    max_minutes: float  # 0 = no time budget
    eval_every: int  # 0 = only at the end
    checkpoint_every: int
    metrics: list[str]  # the metrics.csv columns; none = no log
    identity: dict[str, Any]  # what a resumed run must share with its checkpoint (data, batch size, seed)
    resume: bool
    progress: bool
    grad_clip: float | None = None  # None: no clipping and no grad_norm column; 0: measure the norm only
    checkpoint: str = CHECKPOINT  # its path in the output folder
    lr_shape: Callable[[int], float] | None = None  # an LR multiplier with a `total` in place of WarmupCosine

    @property
    def work(self) -> Path:
        return self.out / "train"


@dataclass
class LoopResult:
    steps: int  # steps done in all (a resumed run counts the steps before it)
    planned: int  # the schedule's total
    evaluation: dict[str, float] = field(default_factory=dict)  # the last evaluation (at the end of the run)

    @property
    def stopped_early(self) -> bool:
        return self.steps < self.planned


class Task:
    """What a trainer supplies to `TrainingLoop`: its model, its batches and loss, its evaluation, its extras.

    `model` is the module whose weights are trained, clipped and checkpointed. The methods that get `model` get
    the module to call, which is `self.model` wrapped in DistributedDataParallel when DDP is on.
    """

    model: nn.Module
    loop: TrainingLoop | None = None  # set by the loop: its planned total (shape.total) and DDP no_sync

    def forward_backward(self, step: int, model: nn.Module) -> dict[str, Any]:
        """Read step `step`'s batch, compute its loss and call backward (every micro-batch of the step); return
        this step's metrics (tensors are turned into floats after `after_update`)."""
        raise NotImplementedError

    def after_update(self, step: int, row: dict[str, Any]) -> None:
        """After the optimizer step: anything outside the optimizer (EMA codebooks), cross-process averages."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out metrics (columns of the metrics log); run on every process."""
        return {}

    def after_log(self, done: int, finished: bool) -> None:
        """On rank 0, after the step's row is logged (sample grids)."""

    def postfix(self, row: dict[str, Any], evaluation: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows after each step."""
        return {}

    def check_checkpoint(self, state: dict[str, Any]) -> None:
        """Refuse, with a clear error, a checkpoint this run cannot continue (beyond `LoopSettings.identity`)."""

    def extra_state(self) -> dict[str, Any]:
        """Checkpoint entries beyond model, optimizer, scheduler and RNG states (tensors and plain values)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Put back what `extra_state` saved."""


class TrainingLoop:
    """Runs a `Task` from step 0 or from its checkpoint to the end of its plan (see the module docstring)."""

    def __init__(self, settings: LoopSettings, dist: Dist, task: Task, optimizer: torch.optim.Optimizer):
        self.settings, self.dist, self.task, self.optimizer = settings, dist, task, optimizer
        task.loop = self
        self.shape = settings.lr_shape or WarmupCosine(settings.warmup_steps, settings.steps, settings.min_lr_ratio)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.shape)
        self.checkpoint_path = settings.out / settings.checkpoint
        self.start, self.elapsed_before = 0, 0.0
        if settings.resume and self.checkpoint_path.exists():
            self._resume()
        self.plan = StepPlan(self.shape, settings.max_minutes, self.start)
        # Wrapped after the resume: DDP broadcasts rank 0's weights when it is built.
        self.model: nn.Module = task.model
        if dist.world > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(task.model, device_ids=ids)
        self.log: ckpt.MetricsLog | None = None
        if dist.main:
            remove_stale_temporaries(self.checkpoint_path.parent)
        if dist.main and settings.metrics:
            self.log = ckpt.MetricsLog(settings.work / "metrics.csv", settings.metrics,
                                       resume_step=self.start if settings.resume else None)

    def _resume(self) -> None:
        state = ckpt.load_checkpoint(self.checkpoint_path)
        self.task.check_checkpoint(state)
        ckpt.check_same_run(state, self.settings.identity)
        self.task.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])  # also restores shape.total
        self.task.load_extra_state(state)
        ckpt.restore_rng(state["rng"])  # last: nothing above may draw from the restored generators
        self.start, self.elapsed_before = int(state["step"]), float(state["elapsed_s"])

    def no_sync(self, last_micro_batch: bool) -> Any:
        """The context for one micro-batch's backward: DDP averages gradients only on the step's last one."""
        if self.dist.world > 1 and not last_micro_batch:
            return self.model.no_sync()
        return nullcontext()

    def save(self, step: int, elapsed: float) -> None:
        """Checkpoint (rank 0) and wait for every process, so none runs ahead of a checkpoint it may resume."""
        s = self.settings
        if self.dist.main:
            ckpt.save_checkpoint(self.checkpoint_path, {
                "step": step, "elapsed_s": elapsed, "model": self.task.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "rng": ckpt.capture_rng(), "data": {**s.identity, "samples_seen": step * s.batch_size},
                **self.task.extra_state()})
        if self.dist.world > 1:
            torch.distributed.barrier()

    def run(self) -> LoopResult:
        """Train to the end of the plan (or of the time budget), checkpoint, close the log; evaluate once more
        when nothing was evaluated (resuming a finished run), since the export needs the numbers."""
        s, dist, task, shape = self.settings, self.dist, self.task, self.shape
        bar = tqdm(initial=self.start, total=shape.total or None, desc=s.name, unit="step",
                   disable=not (s.progress and dist.main))
        started, done, evaluation = time.perf_counter(), self.start, {}
        while shape.total == 0 or done < shape.total:
            step, tick = done, time.perf_counter()
            row = task.forward_backward(step, self.model)
            if s.grad_clip is not None:
                row["grad_norm"] = nn.utils.clip_grad_norm_(task.model.parameters(), s.grad_clip or math.inf)
            lr = self.schedule.get_last_lr()[0]
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            task.after_update(step, row)
            done = step + 1
            elapsed = self.elapsed_before + time.perf_counter() - started
            row = {"step": done, "lr": lr, **{k: v.item() if isinstance(v, torch.Tensor) else v
                                              for k, v in row.items()},
                   "samples_per_s": s.batch_size / (time.perf_counter() - tick), "elapsed_s": round(elapsed, 3)}
            self.plan.update(done, time.perf_counter() - started, elapsed, dist)
            bar.total = shape.total or None
            bar.update(1)
            out_of_time = time_is_up(s.max_minutes, elapsed, dist)
            finished = done == shape.total or out_of_time
            if (s.eval_every and done % s.eval_every == 0) or finished:
                evaluation = task.evaluate(self.model)
                row.update(evaluation)
            if dist.main:
                if self.log is not None:
                    self.log.write(row)
                bar.set_postfix(task.postfix(row, evaluation))
                task.after_log(done, finished)
            if done % s.checkpoint_every == 0 or finished:
                self.save(done, elapsed)
            if out_of_time:
                break
        bar.close()
        if self.log is not None:
            self.log.close()
        return LoopResult(done, shape.total, evaluation or task.evaluate(self.model))
