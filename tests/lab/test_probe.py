"""The probe: one row per image, reproducible seeds, resume after kill -9, and refusal of bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab.families import UNCONDITIONAL_IDS
from crayonbox.lab.probe import ProbeConfig, model_hash, run_probe
from crayonbox.lab.store import DB_NAME, RunStore
from tests.lab.conftest import PROBE_N


def test_probe_stores_one_row_per_image_with_its_inputs(probed_run, tiny_model_dir):
    with RunStore.open(probed_run) as store:
        rows = store.images()
        assert len(rows) == (10 + 5) * 2 * PROBE_N  # (null + neutral prompts) × 2 scales × n
        assert Counter((r.prompt_key, r.condition_scale) for r in rows).most_common(1)[0][1] == PROBE_N
        assert {r.seed for r in rows} == set(range(PROBE_N)) and all(r.seed == r.image_index for r in rows)
        assert {r.model_hash for r in rows} == {model_hash(tiny_model_dir)}
        blank = next(r for r in rows if r.prompt == "" and r.input_mode == "normalised")
        uncond = next(r for r in rows if r.input_mode == UNCONDITIONAL_IDS)
        assert blank.normalized == " " and len(blank.token_ids) == 3 and blank.uncond_ids == uncond.token_ids
        assert uncond.token_ids == uncond.uncond_ids and len(uncond.token_ids) == 2
        assert all((store.folder / r.path).exists() for r in rows)
        # Same ids + same seed + same settings = same picture: "" and "." share every image.
        dot = {(r.seed, r.condition_scale): r.sha256 for r in rows if r.prompt == "."}
        same = [r for r in rows if r.prompt == "" and r.input_mode == "normalised"]
        assert len(same) == 2 * PROBE_N and all(dot[(r.seed, r.condition_scale)] == r.sha256 for r in same)
        record = store.get_record("prompt:normalised:")
        assert record["tokens"][0] == "<s>" and any("blank prompt" in n for n in record["notes"])


def test_every_image_is_redrawn_from_its_seed(probed_run, tiny_model_dir):
    from crayonbox.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with RunStore.open(probed_run) as store:
        rows = [r for r in store.images() if r.prompt in ("a woman", "!") and r.seed in (0, 4)]
    for r in rows:
        out = pipe(r.prompt, num_images=1, seed=r.seed, **r.sampler)
        assert out.tokens[0].tolist() == r.image_tokens
        assert out.encodings[0].ids[:len(r.token_ids)] == r.token_ids


def test_probe_resumes_without_redrawing(probed_run, tiny_model_dir):
    summary = run_probe(ProbeConfig(model=tiny_model_dir, prompts=["null", "neutral"], n=PROBE_N,
                                    condition_scales=(1, 3)), probed_run, progress=False)
    assert summary.generated == 0 and summary.already_stored == summary.planned == 15 * 2 * PROBE_N


def test_bad_input_is_refused_and_nothing_stored_changes(probed_run, tiny_model_dir, tmp_path):
    from tests.conftest import build_tiny_model

    with RunStore.open(probed_run) as store:
        before = store.count_images()
    with pytest.raises(CrayonboxError, match="-n must be at least 1"):
        run_probe(ProbeConfig(model=tiny_model_dir, n=0), probed_run, progress=False)
    with pytest.raises(CrayonboxError, match="unknown prompt family"):
        run_probe(ProbeConfig(model=tiny_model_dir, prompts=["nul"], n=2), probed_run, progress=False)
    with pytest.raises(CrayonboxError, match="--condition-scale must be a number from 0 to 100"):
        run_probe(ProbeConfig(model=tiny_model_dir, n=2, condition_scales=(-1,)), probed_run, progress=False)
    other = build_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(CrayonboxError, match="another model"):
        run_probe(ProbeConfig(model=other, prompts=["neutral"], n=2, condition_scales=(1,)), probed_run,
                  progress=False)
    with RunStore.open(probed_run) as store:
        assert store.count_images() == before
    with pytest.raises(CrayonboxError, match="model folder not found"):
        run_probe(ProbeConfig(model=tmp_path / "nope", n=2), tmp_path / "run", progress=False)


def _key_to_sha(folder: Path) -> dict[tuple, str]:
    with RunStore.open(folder) as store:
        return {(r.prompt, r.input_mode, r.settings, r.seed): r.sha256 for r in store.images()}


def test_kill_9_then_resume_loses_nothing_and_duplicates_nothing(tiny_model_dir, tmp_path):
    run = tmp_path / "killed"
    n, scales = 40, "1,3"
    command = [sys.executable, "-m", "crayonbox.cli", "lab", "probe", "--model", str(tiny_model_dir),
               "--prompts", "null", "-n", str(n), "--condition-scale", scales, "--out", str(run),
               "--batch-images", "8", "--workers", "1", "--threads", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / DB_NAME).exists():
            try:
                with sqlite3.connect(run / DB_NAME, timeout=1) as db:
                    rows = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0  # schema not created yet
        if rows >= 60:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"probe ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    planned = 10 * 2 * n
    assert 60 <= rows < planned

    summary = run_probe(ProbeConfig(model=tiny_model_dir, prompts=["null"], n=n, condition_scales=(1, 3),
                                    workers=1, threads=1), run, progress=False)
    assert summary.already_stored >= 60 and summary.already_stored + summary.generated == planned
    with RunStore.open(run) as store:
        records = store.images()
        assert len(records) == planned == len({(r.prompt, r.input_mode, r.settings, r.seed) for r in records})
        assert all((run / r.path).exists() for r in records)
    # The interrupted run holds exactly what an uninterrupted one makes, image for image.
    clean = tmp_path / "clean"
    run_probe(ProbeConfig(model=tiny_model_dir, prompts=["null"], n=n, condition_scales=(1, 3), workers=1,
                          threads=1), clean, progress=False)
    assert _key_to_sha(run) == _key_to_sha(clean)


def test_two_worker_processes_make_the_same_images(tiny_model_dir, probed_run, tmp_path):
    run = tmp_path / "workers"
    summary = run_probe(ProbeConfig(model=tiny_model_dir, prompts=["neutral"], n=PROBE_N,
                                    condition_scales=(1, 3), workers=2, batch_images=8), run, progress=False)
    assert summary.generated == 5 * 2 * PROBE_N
    mine = _key_to_sha(run)
    shared = {k: v for k, v in _key_to_sha(probed_run).items() if k in mine}
    assert mine == shared
