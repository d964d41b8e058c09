"""The shared training loop (crayonbox/train/loop.py) on a toy task: cadence, log, and a resume that repeats an
uninterrupted run bit for bit, global RNG draws included."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from crayonbox.errors import CrayonboxError
from crayonbox.train.checkpoint import read_metrics
from crayonbox.train.configs import JudgeTrainConfig, TrainConfig, VQGANTrainConfig
from crayonbox.train.loop import LoopSettings, Task, TrainingLoop, check_run_options
from crayonbox.train.options import config_spec
from crayonbox.train.runtime import Dist

SINGLE = Dist(0, 1, torch.device("cpu"))


class Regression(Task):
    """Fit y = x·w on batches that are a function of the step, plus noise from the global RNG (which only a
    restored RNG state repeats); `dies_at` simulates a kill."""

    def __init__(self, dies_at: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.dies_at, self.evaluations, self.updates = dies_at, [], 0

    def forward_backward(self, step: int, model: nn.Module) -> dict[str, Any]:
        if step == self.dies_at:
            raise KeyboardInterrupt
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=gen)
        y = x @ torch.tensor([1.0, -2.0, 3.0, 0.5]) + 0.1 * torch.randn(8)
        loss = (model(x)[:, 0] - y).pow(2).mean()
        loss.backward()
        return {"loss": loss}

    def after_update(self, step: int, row: dict[str, Any]) -> None:
        self.updates += 1

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.evaluations.append(self.updates)
        return {"eval_loss": float(model.weight.detach().sum())}

    def extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]


def run(out: Path, task: Regression, **overrides) -> Any:
    values = dict(out=out, name="toy", steps=10, warmup_steps=2, min_lr_ratio=0.1, batch_size=8, max_minutes=0.0,
                  eval_every=4, checkpoint_every=3, metrics=["step", "lr", "loss", "eval_loss"],
                  identity={"seed": 0}, resume=False, progress=False, grad_clip=1.0)
    settings = LoopSettings(**(values | overrides))
    return TrainingLoop(settings, SINGLE, task, torch.optim.AdamW(task.model.parameters(), lr=0.1)).run()


def test_cadence_log_and_result(tmp_path):
    task = Regression()
    result = run(tmp_path, task)
    assert (result.steps, result.planned, result.stopped_early) == (10, 10, False)
    assert task.evaluations == [4, 8, 10]  # every eval_every steps and at the end
    rows = read_metrics(tmp_path / "train" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert [r["step"] for r in rows if r["eval_loss"]] == ["4", "8", "10"]
    assert result.evaluation == {"eval_loss": float(rows[-1]["eval_loss"])}
    assert (tmp_path / "train" / "checkpoint.pt").exists()


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = Regression()
    run(tmp_path / "a", reference)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", Regression(dies_at=7))  # the last checkpoint is step 6
    resumed = Regression()
    result = run(tmp_path / "b", resumed, resume=True)
    assert result.steps == 10 and resumed.updates == 10
    assert torch.equal(resumed.model.weight, reference.model.weight)
    assert read_metrics(tmp_path / "b" / "train" / "metrics.csv") == read_metrics(tmp_path / "a" / "train" /
                                                                                   "metrics.csv")
    with pytest.raises(CrayonboxError, match="cannot resume"):
        run(tmp_path / "b", Regression(), resume=True, identity={"seed": 1})


def test_time_budget_stops_early_and_checkpoints(tmp_path):
    result = run(tmp_path, Regression(), max_minutes=1e-9)
    assert (result.steps, result.stopped_early) == (1, True)
    assert [r["step"] for r in read_metrics(tmp_path / "train" / "metrics.csv")] == ["1"]
    with pytest.raises(CrayonboxError, match="--max-minutes"):
        check_run_options("float32", 0, 0.0)
    with pytest.raises(CrayonboxError, match="precision"):
        check_run_options("fp8", 10, 0.0)


@pytest.mark.parametrize("cls", [TrainConfig, VQGANTrainConfig, JudgeTrainConfig])
def test_help_text_is_field_metadata(cls):
    spec = config_spec("crayonbox.train.configs", cls.__name__)
    assert [(name, text) for name, _, text in spec] == [(f.name, f.metadata["help"])
                                                        for f in dataclasses.fields(cls)]
    assert all(text and "#" not in text for _, _, text in spec)


@pytest.mark.parametrize("rank", [0, 1])
def test_under_ddp_rank_0_claims_the_run_folder_before_the_others_look(tmp_path, monkeypatch, rank):
    """Looking at once, rank 1 could find rank 0's marker still a temporary file: someone else's folder."""
    from crayonbox.train import loop

    events = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(loop, "claim_output_folder", lambda *args: events.append("claim"))
    loop.claim_run_folder(tmp_path / "run", "model", False, "a run", Dist(rank, 2, torch.device("cpu")))
    assert events == (["claim", "barrier"] if rank == 0 else ["barrier", "claim"])
    events.clear()
    loop.claim_run_folder(tmp_path / "run", "model", False, "a run", SINGLE)
    assert events == ["claim"]  # one process: nothing to wait for
