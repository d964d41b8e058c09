"""Checkpoints load with weights_only=True and restore every RNG; the metrics log drops rows past a resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.train import checkpoint as ckpt


def draw_all() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"rng": ckpt.capture_rng(), "step": 7})
    expected = draw_all()
    draw_all()  # move every generator on
    state = ckpt.load_checkpoint(path)  # weights_only=True inside
    ckpt.restore_rng(state["rng"])
    assert draw_all() == expected
    assert state["step"] == 7


def test_optimizer_and_scheduler_states_load_with_weights_only(tmp_path):
    from crayonbox.train.model import WarmupCosine

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10, 0.1))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    ckpt.save_checkpoint(tmp_path / "c.pt", {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, WarmupCosine(2, 10, 0.1))
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"a": torch.arange(3)})
    ckpt.save_checkpoint(path, {"a": torch.arange(5)})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert ckpt.load_checkpoint(path)["a"].tolist() == [0, 1, 2, 3, 4]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"a": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CrayonboxError, match="cannot read checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(CrayonboxError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_metrics_log_keeps_exact_floats_and_drops_rows_after_the_resume_step(tmp_path):
    path = tmp_path / "metrics.csv"
    log = ckpt.MetricsLog(path, ["step", "loss"], tensorboard=False)
    values = [1 / 3, 2 / 7, 0.1 + 0.2, 1e-17]
    for step, loss in enumerate(values, start=1):
        log.write({"step": step, "loss": loss})
    log.close()
    assert [float(r["loss"]) for r in ckpt.read_metrics(path)] == values

    log = ckpt.MetricsLog(path, ["step", "loss"], resume_step=2, tensorboard=False)
    log.write({"step": 3, "loss": 9.5})
    log.close()
    rows = ckpt.read_metrics(path)
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(1, 1 / 3), (2, 2 / 7), (3, 9.5)]

    ckpt.MetricsLog(path, ["step", "loss"], tensorboard=False).close()  # a fresh run starts empty
    assert ckpt.read_metrics(path) == []
