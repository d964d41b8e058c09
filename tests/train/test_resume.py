"""kill -9 in the middle of training, then --resume: the losses equal an uninterrupted run's, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from crayonbox.train.checkpoint import read_metrics
from crayonbox.train.model import TrainConfig, train


def run_config(toy_tokens, toy_tokenizer, toy_vqgan, out) -> TrainConfig:
    return TrainConfig(tokens=str(toy_tokens), tokenizer=str(toy_tokenizer), vqgan=str(toy_vqgan),
                       out=str(out), preset="tiny", steps=120, batch_size=8, learning_rate=3e-3,
                       warmup_steps=5, blank_caption_prob=0.2, eval_every=25, eval_fraction=0.15,
                       sample_every=0, sample_prompts=1, checkpoint_every=10, precision="float32", threads=1,
                       progress=False)


def losses(out) -> list[tuple[int, float, str]]:
    rows = read_metrics(out / "train" / "metrics.csv")
    return [(int(r["step"]), float(r["loss"]), r["eval_loss"]) for r in rows]


def test_sigkill_then_resume_repeats_the_uninterrupted_loss_sequence(toy_tokens, toy_tokenizer, toy_vqgan,
                                                                    tmp_path):
    from crayonbox.train.options import config_to_argv

    reference = tmp_path / "reference"
    train(run_config(toy_tokens, toy_tokenizer, toy_vqgan, reference))

    interrupted = tmp_path / "interrupted"
    cfg = run_config(toy_tokens, toy_tokenizer, toy_vqgan, interrupted)
    process = subprocess.Popen([sys.executable, "-m", "crayonbox.train.model", *config_to_argv(cfg)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = interrupted / "train" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        # Row 13 is written after the step-10 checkpoint: kill between two checkpoints.
        if metrics.exists() and len(metrics.read_text().splitlines()) > 13:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = len(losses(interrupted))
    assert 12 < killed_at < cfg.steps and not (interrupted / "pipeline.json").exists()

    cfg.resume = True
    train(cfg)
    assert losses(interrupted) == losses(reference)  # every step once, bit for bit (fp32, one thread)
    assert len(losses(reference)) == cfg.steps
