"""DDP: two processes (torchrun, gloo on CPU) follow one process's loss curve at the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crayonbox.train.checkpoint import read_metrics
from crayonbox.train.model import TrainConfig, train

# Measured: the largest relative difference is 1.3e-7 over 12 steps and 1.9e-7 over 40 (summation order: each
# process reduces its half of the batch, then gloo averages the gradients). 1e-5 leaves room without hiding a
# real divergence (a wrong data split or unsynchronised gradients differ by 1e-2 and more within a few steps).
TOLERANCE = 1e-5


def test_two_processes_match_one_process(toy_tokens, toy_tokenizer, toy_vqgan, tmp_path):
    from crayonbox.train.options import config_to_argv

    def config(out) -> TrainConfig:
        return TrainConfig(tokens=str(toy_tokens), tokenizer=str(toy_tokenizer), vqgan=str(toy_vqgan),
                           out=str(out), preset="tiny", steps=12, batch_size=16, learning_rate=3e-3,
                           warmup_steps=2, blank_caption_prob=0.2, eval_every=6, eval_fraction=0.15,
                           sample_every=0, sample_prompts=1, checkpoint_every=6, precision="float32",
                           threads=1, progress=False)

    train(config(tmp_path / "one"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "crayonbox.train.model", *config_to_argv(config(tmp_path / "two"))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    one = read_metrics(tmp_path / "one" / "train" / "metrics.csv")
    two = read_metrics(tmp_path / "two" / "train" / "metrics.csv")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for column in ("loss", "grad_norm"):
        a, b = [float(r[column]) for r in one], [float(r[column]) for r in two]
        assert b == pytest.approx(a, rel=TOLERANCE), column
    evals = [(float(x["eval_loss"]), float(y["eval_loss"]))
             for x, y in zip(one, two, strict=True) if x["eval_loss"]]
    assert len(evals) == 2 and all(y == pytest.approx(x, rel=TOLERANCE) for x, y in evals)
    assert float(one[-1]["loss"]) < float(one[0]["loss"])  # the curve being compared actually moves
    import json

    provenance = json.loads((tmp_path / "two" / "pipeline.json").read_text())["provenance"]
    assert provenance["rows"]["processes"] == 2
